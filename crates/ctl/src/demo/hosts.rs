//! What the demo creates — namespaces, `vxnet run` processes, a temporary directory — and its
//! removal. Everything made is registered here as soon as it exists, so the same cleanup
//! runs on success, on error and panic ([`CleanOnDrop`]) and on Ctrl-C/SIGTERM (the handler).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::DemoError;

/// How long a `vxnet run` gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
pub struct Resources {
    children: Vec<(String, Child)>,
    namespaces: Vec<String>,
    dir: Option<PathBuf>,
}

impl Resources {
    /// Stops our processes (by PID), deletes our namespaces and files. Idempotent.
    pub fn clean(&mut self) {
        for (_, child) in &mut self.children {
            if let Ok(None) = child.try_wait() {
                // SIGTERM first: vxnet removes its TAP and control socket on a clean exit.
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (_, mut child) in self.children.drain(..) {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Shared between the demo and the signal handler.
#[derive(Debug, Clone, Default)]
pub struct Cleanup(Arc<Mutex<Resources>>);

impl Cleanup {
    pub fn lock(&self) -> MutexGuard<'_, Resources> {
        // A panic while holding the lock must not stop the cleanup.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the cleanup and exits on SIGINT/SIGTERM (and SIGHUP), so nothing outlives the demo.
    pub fn install_signal_handler(&self) -> Result<(), DemoError> {
        let cleanup = self.clone();
        ctrlc::set_handler(move || {
            eprintln!("vxnet demo: interrupted, removing what it made");
            cleanup.lock().clean();
            std::process::exit(130);
        })
        .map_err(|e| DemoError::Setup(format!("cannot install the signal handler: {e}")))
    }

    /// A directory only this demo uses, removed by the cleanup.
    pub fn make_dir(&self, path: &Path) -> Result<(), DemoError> {
        let mut res = self.lock();
        std::fs::create_dir_all(path)
            .map_err(|e| DemoError::Setup(format!("cannot create {}: {e}", path.display())))?;
        res.dir = Some(path.to_path_buf());
        Ok(())
    }

    /// `ip netns add NAME`, registered for deletion.
    pub fn add_namespace(&self, name: &str) -> Result<(), DemoError> {
        let mut res = self.lock();
        ip(&["netns", "add", name])?;
        res.namespaces.push(name.to_string());
        Ok(())
    }

    /// Starts `cmd` (already `ip netns exec …`), output to `log`, registered under `name`.
    pub fn spawn(&self, name: &str, mut cmd: Command, log: &Path) -> Result<u32, DemoError> {
        let file = std::fs::File::create(log)
            .map_err(|e| DemoError::Setup(format!("cannot create {}: {e}", log.display())))?;
        let err_file = file
            .try_clone()
            .map_err(|e| DemoError::Setup(format!("cannot create {}: {e}", log.display())))?;
        let mut res = self.lock();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| DemoError::Setup(format!("cannot start vxnet for {name}: {e}")))?;
        let pid = child.id();
        res.children.push((name.to_string(), child));
        Ok(pid)
    }

    /// Whether the process registered as `name` has exited.
    pub fn exited(&self, name: &str) -> bool {
        self.lock()
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, c)| !matches!(c.try_wait(), Ok(None)))
    }

    pub fn clean(&self) {
        self.lock().clean();
    }
}

/// Cleans up when dropped: on every return path of the demo, and on a panic.
#[derive(Debug)]
pub struct CleanOnDrop<'a>(pub &'a Cleanup);

impl Drop for CleanOnDrop<'_> {
    fn drop(&mut self) {
        self.0.clean();
    }
}

/// Runs `ip ARGS`, turning a failure into one line naming the command and ip's message.
pub fn ip(args: &[&str]) -> Result<Output, DemoError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| DemoError::Setup(format!("cannot run ip: {e}")))?;
    if !out.status.success() {
        return Err(DemoError::Setup(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// `ip netns exec NS CMD ARGS…` as a command to run or spawn.
pub fn in_namespace(ns: &str, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program).args(args);
    cmd
}

/// Effective uid 0, read from /proc so that the demo needs no libc of its own.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
