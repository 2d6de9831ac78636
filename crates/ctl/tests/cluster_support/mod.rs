//! Shared by the cluster integration tests: a real etcd per test on loopback with random ports and
//! a temp data dir, killed by PID on drop (also when the test panics; see `etcd.rs`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// True when `prog` can be run. Under CI=true a missing component is a failure, not a skip.
pub fn require(prog: &str, why: &str) -> bool {
    vxnet_testkit::have_tool(why, prog)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub use vxnet_testkit::cli::{assert_cli_error, stderr, stdout};
pub use vxnet_testkit::etcd::EtcdServer;

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
