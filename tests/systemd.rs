//! Issue 13: the engine as a systemd service. `contrib/systemd/vxnet.service` is checked with
//! `systemd-analyze verify` (and started, reloaded and stopped through systemd where systemd is
//! PID 1), and the engine speaks the notify protocol: READY=1 on `$NOTIFY_SOCKET` only once its
//! workers run and its control socket answers, RELOADING=1 then READY=1 around a SIGHUP reload,
//! STOPPING=1 on SIGTERM, and nothing when it fails to start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vxnet_tests::{have_tool, must, run, vxnet_bin, Family, Lab, Vxnet};

fn unit_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/vxnet.service")
}

/// The unit with its binary path pointed at this build (verify checks the binary exists).
fn unit_for_this_build(dir: &Path, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(unit_file()).unwrap();
    let path = dir.join(name);
    std::fs::write(
        &path,
        text.replace("/usr/local/bin/vxnet", &vxnet_bin().display().to_string()),
    )
    .unwrap();
    path
}

fn systemd_is_pid1() -> bool {
    std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

#[test]
fn unit_file_is_valid() {
    if !have_tool("systemd_unit", "systemd-analyze") {
        return;
    }
    let text = std::fs::read_to_string(unit_file()).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "DeviceAllow=/dev/net/tun rw",
    ] {
        assert!(text.lines().any(|l| l == line), "unit lacks {line:?}");
    }
    let dir = std::env::temp_dir().join(format!("vxnet-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = unit_for_this_build(&dir, "vxnet-verify.service");
    let out = run(&format!("systemd-analyze verify {}", unit.display()));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    // verify exits 0 on unknown keys and bad values too; its warnings name the file.
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("vxnet-verify.service"))
        .collect();
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(about_ours.is_empty(), "systemd-analyze verify: {stderr}");
    if systemd_is_pid1() {
        start_under_systemd();
    } else {
        eprintln!("systemd is not PID 1 here: the unit was verified, not started");
    }
}

/// Where systemd runs the machine: the unit (with a config for one network on a dummy
/// underlay address) started, reloaded and stopped through systemctl.
fn start_under_systemd() {
    let id = format!("vxnet-test-{}", std::process::id());
    let dir = std::env::temp_dir().join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("vxnet.toml");
    std::fs::write(
        &config,
        "local = \"127.0.0.1\"\nport = 47891\n[[network]]\nname = \"t\"\nvni = 42\ndev = \"vxsd0\"\n",
    )
    .unwrap();
    let unit = unit_for_this_build(&dir, "unit");
    let text = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("/etc/vxnet/vxnet.toml", &config.display().to_string())
        .replace("/run/vxnet/vxnet.sock", &format!("/run/{id}.sock"));
    let installed = PathBuf::from(format!("/run/systemd/system/{id}.service"));
    std::fs::write(&installed, text).unwrap();
    struct Cleanup(String, PathBuf, PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = run(&format!("systemctl stop {}", self.0));
            let _ = std::fs::remove_file(&self.1);
            let _ = run("systemctl daemon-reload");
            let _ = std::fs::remove_dir_all(&self.2);
        }
    }
    let _cleanup = Cleanup(id.clone(), installed, dir);
    must("systemctl daemon-reload");
    // Type=notify: start returns once the engine sent READY=1.
    must(&format!("systemctl start {id}"));
    assert_eq!(
        must(&format!("systemctl show -P ActiveState {id}")).trim(),
        "active"
    );
    must(&format!("systemctl reload {id}"));
    assert_eq!(
        must(&format!("systemctl show -P ActiveState {id}")).trim(),
        "active"
    );
    must(&format!("systemctl stop {id}"));
}

/// Notify messages received within `timeout`, until one contains `until`.
fn messages_until(socket: &UnixDatagram, until: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = text.lines().any(|l| l == until);
                got.push(text);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    got
}

fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| t.ok())
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("vxnet-worker"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn engine_notifies_ready_after_its_workers_run() {
    let Some(lab) = Lab::lan("systemd_notify", 1, Family::V4) else {
        return;
    };
    let h = lab.host(0).clone();
    let notify_path = lab.dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let env = [("NOTIFY_SOCKET", notify_path.to_str().unwrap())];

    // A start that fails says nothing (systemd then sees the exit).
    let log = lab.dir.join("failing.log");
    let mut failing = lab.spawn_with_env(
        0,
        &log,
        &env,
        &format!(
            "timeout 10 {} run --control {} --vni 42 --dev vx42 --local {} --port 0",
            vxnet_bin().display(),
            lab.dir.join("failing.sock").display(),
            h.underlay
        ),
    );
    let _ = failing.child.wait();
    assert!(
        messages_until(&notify, "READY=1", Duration::from_millis(300)).is_empty(),
        "a failed start notified"
    );

    let config = lab.dir.join("notify.toml");
    std::fs::write(
        &config,
        format!(
            "local = \"{}\"\nthreads = 2\n[[network]]\nname = \"blue\"\nvni = 42\ndev = \"vx42\"\n",
            h.underlay
        ),
    )
    .unwrap();
    let control = lab.dir.join("notify-engine.sock");
    let log = lab.dir.join("notify-engine.log");
    let proc = lab.spawn_with_env(
        0,
        &log,
        &env,
        &format!(
            "{} run --control {} --config {}",
            vxnet_bin().display(),
            control.display(),
            config.display()
        ),
    );
    let pid = proc.pid();
    let mut engine = Vxnet { proc, control };
    let got = messages_until(&notify, "READY=1", Duration::from_secs(10));
    // The moment READY=1 is read: both workers exist, the TAP is up, the socket answers.
    let workers = worker_threads(pid);
    let tap_up = h.sh("ip link show vx42 up").stdout.len();
    let answers = engine.ctl("stats").status.success();
    assert!(
        got.last()
            .is_some_and(|m| m.lines().any(|l| l == "READY=1")),
        "no READY=1 (got {got:?}): {}",
        engine.proc.log_text()
    );
    assert_eq!(workers, 2, "READY=1 before the workers ran");
    assert!(tap_up > 0, "READY=1 before the TAP was up");
    assert!(answers, "READY=1 before the control socket answered");

    must(&format!("kill -HUP {pid}"));
    let got = messages_until(&notify, "READY=1", Duration::from_secs(10));
    let all = got.join("");
    assert!(
        all.contains("RELOADING=1") && all.contains("MONOTONIC_USEC="),
        "reload not announced: {got:?}"
    );
    assert!(
        all.contains("READY=1"),
        "no READY=1 after the reload: {got:?}"
    );

    let status = engine.proc.terminate(Duration::from_secs(5)).unwrap();
    assert!(status.success());
    let got = messages_until(&notify, "STOPPING=1", Duration::from_secs(2));
    assert!(
        got.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "no STOPPING=1: {got:?}"
    );
}
