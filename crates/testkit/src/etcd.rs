//! A real etcd server for tests, stopped by PID on drop (also when the test panics): on loopback
//! for the `vxnet` crate's cluster tests, inside a test namespace (started through a launcher
//! such as `ip netns exec NS`) for the root netns tests.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Logged by etcd 3.4 once its client listener serves (plain, and over TLS).
const READY_LINES: [&str; 2] = [
    "serving insecure client requests on",
    "serving client requests on",
];

/// Server certificate, key and the CA of client certificates, for an https:// client listener
/// that requires client certificates.
#[derive(Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

pub struct EtcdServer {
    child: Option<Child>,
    dir: PathBuf,
    launcher: Vec<String>,
    host: IpAddr,
    pub client_port: u16,
    pub peer_port: u16,
    /// Member name and `--initial-cluster` (a single member of its own unless started with
    /// [`EtcdServer::launch_member`]).
    name: String,
    initial_cluster: Option<String>,
    /// Where this start's log lines begin, for [`EtcdServer::wait_ready`].
    log_offset: usize,
    tls: Option<ServerTls>,
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
        let mut e = EtcdServer::new(dir, launcher, host, client_port, peer_port, "t", None);
        e.spawn();
        e
    }

    /// Starts member `name` of a multi-member cluster (`initial_cluster` as etcd's
    /// `--initial-cluster`) without waiting: a member serves only once a quorum has started, so
    /// start them all, then [`wait_ready`](Self::wait_ready) each.
    pub fn launch_member(
        dir: &Path,
        host: IpAddr,
        client_port: u16,
        peer_port: u16,
        name: &str,
        initial_cluster: &str,
    ) -> EtcdServer {
        let mut e = EtcdServer::new(
            dir,
            &[],
            host,
            client_port,
            peer_port,
            name,
            Some(initial_cluster.to_string()),
        );
        e.launch();
        e
    }

    fn new(
        dir: &Path,
        launcher: &[&str],
        host: IpAddr,
        client_port: u16,
        peer_port: u16,
        name: &str,
        initial_cluster: Option<String>,
    ) -> EtcdServer {
        std::fs::create_dir_all(dir).unwrap();
        EtcdServer {
            child: None,
            dir: dir.to_path_buf(),
            launcher: launcher.iter().map(|s| s.to_string()).collect(),
            host,
            client_port,
            peer_port,
            name: name.to_string(),
            initial_cluster,
            log_offset: 0,
            tls: None,
        }
    }

    /// A single member serving clients over TLS only (client certificates required).
    pub fn start_tls(
        dir: &Path,
        host: IpAddr,
        client_port: u16,
        peer_port: u16,
        tls: ServerTls,
    ) -> EtcdServer {
        let mut e = EtcdServer::new(dir, &[], host, client_port, peer_port, "t", None);
        e.tls = Some(tls);
        e.spawn();
        e
    }

    /// `NAME=http://HOST:PEER_PORT`, this member's part of `--initial-cluster`.
    pub fn peer_entry(name: &str, host: IpAddr, peer_port: u16) -> String {
        let host = match host {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        format!("{name}=http://{host}:{peer_port}")
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
        self.launch();
        self.wait_ready();
    }

    fn launch(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{}", self.host_port(self.client_port));
        let peer = format!("http://{}", self.host_port(self.peer_port));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        self.log_offset = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let (program, prefix) = match self.launcher.split_first() {
            Some((p, rest)) => (p.clone(), rest.to_vec()),
            None => ("etcd".to_string(), Vec::new()),
        };
        let mut cmd = Command::new(program);
        cmd.args(prefix);
        if !self.launcher.is_empty() {
            cmd.arg("etcd");
        }
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("t={peer}"));
        let child = cmd
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .args(self.tls.iter().flat_map(|t| {
                [
                    format!("--cert-file={}", t.cert.display()),
                    format!("--key-file={}", t.key.display()),
                    format!("--trusted-ca-file={}", t.ca.display()),
                    "--client-cert-auth".to_string(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
    }

    /// Waits until this start of etcd serves clients (panics with its log if it does not).
    pub fn wait_ready(&mut self) {
        let offset = self.log_offset;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self
                .log()
                .get(offset..)
                .is_some_and(|l| READY_LINES.iter().any(|r| l.contains(r)))
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
        let scheme = if self.tls.is_some() { "https" } else { "etcd" };
        format!("{scheme}://{}", self.host_port(self.client_port))
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

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
