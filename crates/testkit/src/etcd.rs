//! A real etcd server for tests, stopped by PID on drop (also when the test panics): on loopback
//! for the `vxnet` crate's cluster tests, inside a test namespace (started through a launcher
//! such as `ip netns exec NS`) for the root netns tests.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Logged by etcd 3.4 once its client listener serves.
const READY_LINE: &str = "serving insecure client requests on";

pub struct EtcdServer {
    child: Option<Child>,
    dir: PathBuf,
    launcher: Vec<String>,
    host: IpAddr,
    pub client_port: u16,
    pub peer_port: u16,
}

impl EtcdServer {
    /// Starts etcd with its data and log in `dir`, listening on `host`, and waits until it serves.
    /// `launcher` prefixes the command (empty: run directly).
    pub fn start(
        dir: &Path,
        launcher: &[&str],
        host: IpAddr,
        client_port: u16,
        peer_port: u16,
    ) -> EtcdServer {
        std::fs::create_dir_all(dir).unwrap();
        let mut e = EtcdServer {
            child: None,
            dir: dir.to_path_buf(),
            launcher: launcher.iter().map(|s| s.to_string()).collect(),
            host,
            client_port,
            peer_port,
        };
        e.spawn();
        e
    }

    fn host_port(&self, port: u16) -> String {
        match self.host {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let client = format!("http://{}", self.host_port(self.client_port));
        let peer = format!("http://{}", self.host_port(self.peer_port));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let offset = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let (program, prefix) = match self.launcher.split_first() {
            Some((p, rest)) => (p.clone(), rest.to_vec()),
            None => ("etcd".to_string(), Vec::new()),
        };
        let mut cmd = Command::new(program);
        cmd.args(prefix);
        if !self.launcher.is_empty() {
            cmd.arg("etcd");
        }
        let child = cmd
            .arg("--name=t")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        self.wait_ready(offset);
    }

    fn wait_ready(&mut self, offset: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self
                .log()
                .get(offset..)
                .is_some_and(|l| l.contains(READY_LINE))
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "etcd exited ({status}) before serving; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not start serving; log:\n{}", self.log());
    }

    pub fn url(&self) -> String {
        format!("etcd://{}", self.host_port(self.client_port))
    }

    pub fn endpoints(&self) -> Vec<String> {
        vec![self.host_port(self.client_port)]
    }

    /// SIGKILL, like a crashed store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same data dir and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
