//! `vxnet run` started inside a named namespace from this very executable, registered with the
//! [`Cleanup`], and waited for until its control socket answers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vxnet_dataplane::control::client::request;
use vxnet_dataplane::control::proto::Request;

use super::{in_netns, Cleanup, NetnsError};

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// One `vxnet run` to start.
#[derive(Debug)]
pub struct Launch<'a> {
    /// Names the host in messages and files (`DIR/HOST.sock`, `DIR/HOST.log`).
    pub host: &'a str,
    pub namespace: &'a str,
    /// Arguments after `run`; `--control` is added, and `--state-dir` when absent.
    pub args: &'a [String],
    /// Extra environment for the engine (e.g. `VXNET_DISABLE_OFFLOADS`).
    pub env: &'a [(String, String)],
    pub dir: &'a Path,
}

/// A started engine.
#[derive(Debug, Clone)]
pub struct Engine {
    pub pid: u32,
    pub control: PathBuf,
}

/// Starts `exe run ARGS --control DIR/HOST.sock` in the namespace, with `--state-dir
/// DIR/HOST.state` unless ARGS name one, and waits until it answers. The state directory lives in the run's directory so that what an
/// engine keeps (ESP replay floors, endpoints) is removed with it, never left in the host's
/// `/var/lib/vxnet`.
pub fn start(cleanup: &Cleanup, exe: &Path, launch: &Launch<'_>) -> Result<Engine, NetnsError> {
    let control = launch.dir.join(format!("{}.sock", launch.host));
    let log = launch.dir.join(format!("{}.log", launch.host));
    let control_arg = control.display().to_string();
    let state_arg = launch
        .dir
        .join(format!("{}.state", launch.host))
        .display()
        .to_string();
    let mut args: Vec<&str> = vec!["run"];
    args.extend(launch.args.iter().map(String::as_str));
    args.extend(["--control", &control_arg]);
    if !launch.args.iter().any(|a| a == "--state-dir") {
        args.extend(["--state-dir", &state_arg]);
    }
    let mut cmd = Command::new(exe);
    cmd.args(&args).envs(launch.env.iter().map(|(k, v)| (k, v)));
    let name = child_name(launch.host);
    // Started from a thread inside the namespace, the engine is born there: no `ip netns exec`.
    let (spawner, spawn_log) = (cleanup.clone(), log.clone());
    let pid = in_netns(launch.namespace, move || {
        spawner.spawn(&name, cmd, &spawn_log)
    })?;
    wait_ready(cleanup, launch.host, &control, &log)?;
    Ok(Engine { pid, control })
}

fn child_name(host: &str) -> String {
    format!("vxnet on host {host}")
}

/// Waits until the engine answers on its control socket, or reports why it exited.
fn wait_ready(cleanup: &Cleanup, host: &str, control: &Path, log: &Path) -> Result<(), NetnsError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if cleanup.exited(&child_name(host)) {
            return Err(NetnsError::Engine {
                host: host.to_string(),
                message: last_error_line(log),
            });
        }
        if control.exists() && request(control, &Request::Networks).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(NetnsError::Engine {
        host: host.to_string(),
        message: format!(
            "no answer on {} within {} s",
            control.display(),
            READY_TIMEOUT.as_secs()
        ),
    })
}

fn last_error_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .or_else(|| text.lines().last())
        .unwrap_or("exited without a message")
        .trim_start_matches("error: ")
        .to_string()
}
