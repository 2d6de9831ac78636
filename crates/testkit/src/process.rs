//! Running commands and processes for the tests, and the root/tool checks that decide whether a
//! test can run (under `CI=true` a test that cannot run fails instead of skipping).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether privileged tests can run; `false` means skip. Panics under CI instead of skipping.
pub fn privileged(test: &str) -> bool {
    // SAFETY-free check: effective uid via /proc avoids libc here.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    let tun = Path::new("/dev/net/tun").exists();
    let ip = Command::new("ip").arg("-V").output().is_ok();
    if root && tun && ip {
        return true;
    }
    let why =
        format!("{test}: needs root, /dev/net/tun and iproute2 (root={root}, tun={tun}, ip={ip})");
    if in_ci() {
        panic!("{why}; CI=true, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED {why}");
    false
}

/// Fails (under CI) or skips when a tool is missing.
pub fn have_tool(test: &str, tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let why = format!("{test}: needs `{tool}` (scripts/test.sh installs it)");
        if in_ci() {
            panic!("{why}; CI=true, so this is a failure, not a skip");
        }
        eprintln!("SKIPPED {why}");
    }
    found
}

/// The `vxnet` binary of this build (next to the test executable's deps directory).
pub fn vxnet_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("vxnet");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p vxnet` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

pub fn run(cmd: &str) -> Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

/// Runs `cmd` and panics with its stderr if it fails.
pub fn must(cmd: &str) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` until it is true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// A process the lab started; stopped on drop (SIGTERM, then SIGKILL) if still running.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts a shell command in network namespace `ns` (`ip netns exec`) with extra
    /// environment variables; its output goes to `log`. A `vxnet` it starts keeps its state
    /// (replay floors, endpoints) beside the log, in `LOG.state` (`VXNET_STATE_DIR`, unless
    /// `env` or a `--state-dir` says otherwise), never in the host's `/var/lib/vxnet`: tests
    /// leave nothing behind.
    pub fn spawn_in(ns: &str, log: &Path, env: &[(&str, &str)], cmd: &str) -> Proc {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", &format!("exec {cmd}")])
            .env("VXNET_STATE_DIR", log.with_extension("state"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends SIGINT to `child` and waits up to `timeout` for it to exit, killing it after that.
/// Its exit status, or `None` when it had to be killed.
pub fn interrupt(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    run(&format!("kill -INT {}", child.id()));
    let exited = wait_for(timeout, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the child");
    exited.then_some(status)
}
