//! A private etcd for the benchmark: the `etcd` on PATH, on loopback ports picked free, with
//! its data in a temporary directory; killed and removed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(super) struct Private {
    child: Child,
    dir: PathBuf,
    client: u16,
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

impl Private {
    pub(super) fn start() -> Result<Private, String> {
        if crate::netns::find_in_path("etcd").is_none() {
            return Err(
                "`etcd` is not on PATH (Debian: etcd-server); or give a running one with --store"
                    .into(),
            );
        }
        let dir = std::env::temp_dir().join(format!("vxnet-bench-etcd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (client, peer) = (free_port()?, free_port()?);
        let log = std::fs::File::create(dir.join("etcd.log")).map_err(|e| e.to_string())?;
        let child = Command::new("etcd")
            .arg("--name=bench")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=bench=http://127.0.0.1:{peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start etcd: {e}"))?;
        let mut etcd = Private { child, dir, client };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            if Instant::now() > deadline || matches!(etcd.child.try_wait(), Ok(Some(_))) {
                let log = std::fs::read_to_string(etcd.dir.join("etcd.log")).unwrap_or_default();
                return Err(format!("etcd did not start serving:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(etcd)
    }

    pub(super) fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client)
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
