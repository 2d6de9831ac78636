//! What a demo or bench run creates — namespaces (and with them every link inside), processes,
//! a temporary directory — and its removal. Everything made is registered here as soon as it
//! exists, so the same cleanup runs on success, on error and panic ([`CleanOnDrop`]) and on
//! Ctrl-C/SIGTERM (the handler).

use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vxnet_dataplane::sys::named_netns::{self, NamedNetns, NamedNetnsError};

use super::NetnsError;

/// How long a `vxnet run` gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How often a wait for a child looks at it; the lock is free in between for the signal handler.
const POLL: Duration = Duration::from_millis(10);

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
                // SIGTERM first: vxnet removes its TAP and control socket on a clean exit. The
                // child is not reaped yet, so its PID cannot have been reused.
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
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
            let _ = named_netns::delete(&ns);
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Shared between the demo or bench and the signal handler.
#[derive(Debug, Clone, Default)]
pub struct Cleanup(Arc<Mutex<Resources>>);

impl Cleanup {
    pub fn lock(&self) -> MutexGuard<'_, Resources> {
        // A panic while holding the lock must not stop the cleanup.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the cleanup and exits non-zero on SIGINT/SIGTERM (and SIGHUP), so nothing outlives
    /// the run. `command` names it in the message ("vxnet demo").
    pub fn install_signal_handler(&self, command: &'static str) -> Result<(), NetnsError> {
        let cleanup = self.clone();
        ctrlc::set_handler(move || {
            // Start on a clean line when a progress line is being rewritten in place.
            let clear = if std::io::stderr().is_terminal() {
                "\r\x1b[2K"
            } else {
                ""
            };
            eprintln!("{clear}{command}: interrupted, removing what it made");
            cleanup.lock().clean();
            std::process::exit(130);
        })
        .map_err(|e| NetnsError::Setup(format!("cannot install the signal handler: {e}")))
    }

    /// A directory only this run uses, removed by the cleanup.
    pub fn make_dir(&self, path: &Path) -> Result<(), NetnsError> {
        let mut res = self.lock();
        std::fs::create_dir_all(path)
            .map_err(|e| NetnsError::Setup(format!("cannot create {}: {e}", path.display())))?;
        res.dir = Some(path.to_path_buf());
        Ok(())
    }

    /// A new named namespace (`ip netns add NAME`) with `lo` up, registered for deletion. A
    /// name already taken is an error and that namespace is left alone.
    pub fn add_namespace(&self, name: &str) -> Result<NamedNetns, NetnsError> {
        let mut res = self.lock();
        let ns = NamedNetns::create(name).map_err(|e| match e {
            NamedNetnsError::Exists(_) => NetnsError::Setup(format!(
                "{e} (another run, or one that was killed: `ip netns del {name}` removes it; \
                 or choose another --prefix)"
            )),
            e => NetnsError::Setup(e.to_string()),
        })?;
        res.namespaces.push(name.to_string());
        ns.links()
            .and_then(|mut links| links.up("lo"))
            .map_err(|e| NetnsError::Setup(format!("setting lo up in {name}: {e}")))?;
        Ok(ns)
    }

    /// Starts `cmd`, output to `log`, registered under `name`.
    pub fn spawn(&self, name: &str, cmd: Command, log: &Path) -> Result<u32, NetnsError> {
        let file = create(log)?;
        let err_file = file
            .try_clone()
            .map_err(|e| NetnsError::Setup(format!("cannot create {}: {e}", log.display())))?;
        self.spawn_to(name, cmd, file, err_file)
    }

    fn spawn_to(
        &self,
        name: &str,
        mut cmd: Command,
        stdout: File,
        stderr: File,
    ) -> Result<u32, NetnsError> {
        // Under the lock, so that the signal handler either sees the child or runs before it.
        let mut res = self.lock();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| NetnsError::Setup(format!("cannot start {name}: {e}")))?;
        let pid = child.id();
        res.children.push((name.to_string(), child));
        Ok(pid)
    }

    /// Runs `cmd` to completion as a registered child (so Ctrl-C stops it too), its stdout and
    /// stderr going to `STEM.out` and `STEM.err`; killed after `timeout`.
    pub fn run_captured(
        &self,
        name: &str,
        cmd: Command,
        stem: &Path,
        timeout: Duration,
    ) -> Result<Captured, NetnsError> {
        let out_path = stem.with_extension("out");
        let err_path = stem.with_extension("err");
        self.spawn_to(name, cmd, create(&out_path)?, create(&err_path)?)?;
        let status = self.wait(name, timeout)?;
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        Ok(Captured {
            status,
            stdout: read(&out_path),
            stderr: read(&err_path),
        })
    }

    /// Waits for the child registered as `name` to exit and forgets it; kills it after `timeout`.
    fn wait(&self, name: &str, timeout: Duration) -> Result<ExitStatus, NetnsError> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut res = self.lock();
                let Some(i) = res.children.iter().position(|(n, _)| n == name) else {
                    // The signal handler took it: the run is ending.
                    return Err(NetnsError::Setup(format!("{name} was stopped")));
                };
                // Reaped under the lock: the handler never signals a PID that was reused.
                let child = &mut res.children[i].1;
                let failure = match child.try_wait() {
                    Ok(Some(status)) => {
                        res.children.remove(i);
                        return Ok(status);
                    }
                    Ok(None) if Instant::now() >= deadline => {
                        format!("{name} did not finish within {} s", timeout.as_secs())
                    }
                    Ok(None) => String::new(),
                    Err(e) => format!("waiting for {name}: {e}"),
                };
                if !failure.is_empty() {
                    let _ = child.kill();
                    let _ = child.wait();
                    res.children.remove(i);
                    return Err(NetnsError::Setup(failure));
                }
            }
            std::thread::sleep(POLL);
        }
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

/// What [`Cleanup::run_captured`] collected.
#[derive(Debug)]
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

fn create(path: &Path) -> Result<File, NetnsError> {
    File::create(path)
        .map_err(|e| NetnsError::Setup(format!("cannot create {}: {e}", path.display())))
}

/// Cleans up when dropped: on every return path of the run, and on a panic.
#[derive(Debug)]
pub struct CleanOnDrop<'a>(pub &'a Cleanup);

impl Drop for CleanOnDrop<'_> {
    fn drop(&mut self) {
        self.0.clean();
    }
}

/// Runs `ip ARGS`, turning a failure into one line naming the command and ip's message.
pub fn ip(args: &[&str]) -> Result<Output, NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetnsError::Setup(format!("cannot run ip: {e}")))?;
    if !out.status.success() {
        return Err(NetnsError::Setup(format!(
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

/// The first executable file named `tool` in `$PATH`, as `Command` would find it.
pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Effective uid 0, read from /proc so that no libc call is needed.
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
