//! Shared by the cluster integration tests: a real etcd per test on loopback with random ports and
//! a temp data dir, killed by PID on drop (also when the test panics; see `etcd.rs`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // Each test file uses its own subset.
pub use vxnet_testkit::in_ci;

/// True when `prog` can be run. Under CI=true a missing component is a failure, not a skip.
pub fn require(prog: &str, why: &str) -> bool {
    vxnet_testkit::have_tool(why, prog)
}

/// A loopback TCP port for an etcd of this test process.
///
/// Not `bind(0)`: that hands out a port from the kernel's ephemeral range, which every outgoing
/// connection of the tests running in parallel also draws from, so between our probe and etcd's
/// bind a client socket could take it ("address in use", seen once). Ports below the ephemeral
/// range (32768 by default) are never chosen by the kernel for clients; a process-wide counter
/// keeps this process's tests apart, the pid-derived start keeps concurrent test processes apart,
/// and the probe bind skips ports someone else holds.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000; // 20000..32000, below the ephemeral range.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(997) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN);
}

#[allow(unused_imports)] // Each test file uses its own subset.
pub use vxnet_testkit::cli::{assert_cli_error, stderr, stdout};
pub use vxnet_testkit::etcd::{EtcdServer, ServerTls};

/// etcd on loopback with random ports and a temp data dir.
pub struct Etcd {
    server: EtcdServer,
    pub dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd, or returns None (skip) when it is not installed outside CI.
    pub fn start() -> Option<Etcd> {
        if !require("etcd", "the cluster tests") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let server = EtcdServer::start(
            dir.path(),
            &[],
            "127.0.0.1".parse().unwrap(),
            free_port(),
            free_port(),
        );
        Some(Etcd { server, dir })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.server.endpoints()
    }

    /// SIGKILL, like a crashed store.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts again on the same data dir and ports.
    pub fn restart(&mut self) {
        self.server.restart();
    }
}

/// A real 3-member etcd cluster on loopback (random ports, temp data dirs); members are killed
/// by PID on drop.
pub struct EtcdCluster {
    pub members: Vec<EtcdServer>,
    pub dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts three members, or returns None (skip) when etcd is not installed outside CI.
    pub fn start() -> Option<EtcdCluster> {
        if !require("etcd", "the cluster tests") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let host = "127.0.0.1".parse().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| EtcdServer::peer_entry(&format!("m{i}"), host, *peer))
            .collect();
        let mut members: Vec<EtcdServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                EtcdServer::launch_member(
                    &dir.path().join(format!("m{i}")),
                    host,
                    *client,
                    *peer,
                    &format!("m{i}"),
                    &initial.join(","),
                )
            })
            .collect();
        for m in &mut members {
            m.wait_ready();
        }
        Some(EtcdCluster { members, dir })
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().flat_map(|m| m.endpoints()).collect()
    }

    /// `etcd://H:P,H:P,H:P`
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }
}

/// A test CA with a server certificate for 127.0.0.1 and a client certificate, made with openssl.
pub struct TestPki {
    pub ca: PathBuf,
    pub server: ServerTls,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// `None` (skip) when openssl is not installed outside CI.
    pub fn make(dir: &Path) -> Option<TestPki> {
        if !require("openssl", "the TLS store tests") {
            return None;
        }
        let sh = |cmd: &str| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        sh(&format!(
            "openssl req -x509 {key} -days 2 -subj /CN=vxnet-test-ca -keyout ca.key -out ca.pem"
        ));
        for (name, cn, ext) in [
            (
                "server",
                "etcd",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
            ),
            ("client", "vxnet-client", "extendedKeyUsage=clientAuth"),
        ] {
            sh(&format!(
                "openssl req {key} -subj /CN={cn} -keyout {name}.key -out {name}.csr && \
                 printf '{ext}\n' > {name}.ext && \
                 openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                   -days 2 -extfile {name}.ext -out {name}.pem"
            ));
        }
        Some(TestPki {
            ca: dir.join("ca.pem"),
            server: ServerTls {
                cert: dir.join("server.pem"),
                key: dir.join("server.key"),
                ca: dir.join("ca.pem"),
            },
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        })
    }

    /// etcdctl's TLS flags with this client certificate.
    pub fn etcdctl_flags(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.ca.display()),
            format!("--cert={}", self.client_cert.display()),
            format!("--key={}", self.client_key.display()),
        ]
    }
}

/// `etcdctl` (v3 API) against `endpoints`, asserting success; returns stdout.
pub fn etcdctl(endpoints: &[String], args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `vxnet cluster watch --local IP` process: it registers the way an engine does and prints
/// every view as a JSON line, collected here; stderr goes to a file. Killed by PID on drop.
pub struct WatchProc {
    pub child: Child,
    pub views: Arc<Mutex<Vec<serde_json::Value>>>,
    pub stderr_path: PathBuf,
}

impl WatchProc {
    pub fn spawn(state_dir: &Path, local: &str, ttl: u32) -> WatchProc {
        let stderr_path = state_dir.with_extension(format!("watch-{local}.log"));
        let log = std::fs::File::create(&stderr_path).unwrap();
        let mut child = vxnet()
            .args([
                "cluster",
                "watch",
                "--local",
                local,
                "--ttl",
                &ttl.to_string(),
            ])
            .arg("--state-dir")
            .arg(state_dir)
            .env_remove("VXNET_STATE_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let views = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&views);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        WatchProc {
            child,
            views,
            stderr_path,
        }
    }

    pub fn latest(&self) -> Option<serde_json::Value> {
        self.views.lock().unwrap().last().cloned()
    }

    /// Waits until the latest view satisfies `pred`; returns how long it took, None on timeout.
    pub fn wait(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.latest().is_some_and(|v| pred(&v)) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for WatchProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The names of the networks in a view (JSON), in order.
pub fn network_names(view: &serde_json::Value) -> Vec<String> {
    view["networks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Node ids of the live members in a view (JSON).
pub fn alive_members(view: &serde_json::Value) -> Vec<String> {
    view["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| m["alive"] == true)
                .filter_map(|m| m["node_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A cluster with a manager (`m`) and `n` workers joined; returns their state dirs.
pub async fn cluster(
    etcd: &Etcd,
    root: &Path,
    workers: usize,
) -> Vec<vxnet_cluster::state::StateDir> {
    use vxnet_cluster::{node, state::StateDir};
    let m = StateDir::new(root.join("m"));
    let out = node::init(&m, &etcd.endpoints(), None, None).await.unwrap();
    let mut dirs = vec![m];
    for i in 0..workers {
        let d = StateDir::new(root.join(format!("w{i}")));
        node::join(&d, &out.worker_token, None).await.unwrap();
        dirs.push(d);
    }
    dirs
}

pub fn vxnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vxnet"))
}

/// Runs `vxnet ARGS --state-dir DIR`.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    vxnet()
        .args(args)
        .arg("--state-dir")
        .arg(dir)
        .env_remove("VXNET_STATE_DIR")
        .output()
        .unwrap()
}

pub fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "command failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

pub fn state_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

/// Waits up to `timeout` for `child` (spawned with piped output) to exit; kills it (our own
/// child, by its handle) if it has not. The output, and whether it exited by itself in time.
pub fn output_within(mut child: std::process::Child, timeout: Duration) -> (Output, bool) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(50));
    }
    let exited = child.try_wait().unwrap().is_some();
    if !exited {
        let _ = child.kill();
    }
    (child.wait_with_output().unwrap(), exited)
}

/// `vxnet cluster init` on `etcd` into state dir `root/m`: the dir and the JSON answer.
pub fn init_cluster(etcd: &Etcd, root: &Path) -> (PathBuf, serde_json::Value) {
    let m = state_dir(root, "m");
    let init = json(&run(
        &m,
        &["cluster", "init", "--store", &etcd.url(), "--json"],
    ));
    (m, init)
}
