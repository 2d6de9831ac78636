//! A worker thread the kernel kills (a kernel BUG inside one of its system calls ends that task
//! alone: no signal, no unwinding) is noticed within about a second: one `error` line, the
//! `worker_restarts` counter, and the workers started again, so forwarding resumes; SIGTERM
//! still stops the engine cleanly. (Before, the engine ran on without the worker, its TAP queue
//! and socket unread, and panicked at shutdown joining the dead thread.) Workers that keep dying
//! stop the engine with an error, for the service manager to restart it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use vxnet_tests::{have_tool, wait_for, Family, Lab, Vxnet};

/// The kernel's thread id of the thread named `name` in process `pid`.
fn thread_named(pid: u32, name: &str) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(Result::ok)
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == name)
        })
        .and_then(|task| task.file_name().to_str()?.parse().ok())
}

/// Ends thread `tid` of `pid` the way the kernel's `do_exit` does: gdb makes that thread (and
/// only it) call `exit(2)` (SYS_exit, 60 on x86-64; not `exit_group`), so it ends inside a
/// system call without unwinding or running anything of the program's.
fn kill_thread(pid: u32, tid: u32) {
    let out = Command::new("timeout")
        // --readnever: the ELF symbols (libc's `syscall`) suffice; reading the debug binary's
        // DWARF took seconds.
        .args(["30", "gdb", "-nx", "-batch", "--readnever", "-p", &pid.to_string()])
        .args(["-iex", "set debuginfod enabled off"])
        // gdb numbers threads its own way: select the one whose kernel id is `tid`.
        .args([
            "-ex",
            &format!(
                "python [t.switch() for t in gdb.selected_inferior().threads() if t.ptid[1] == {tid}]"
            ),
        ])
        // Only that thread runs the call: with the others running too, the engine restarting
        // its workers meanwhile left gdb waiting for a return that never comes.
        .args(["-ex", "set scheduler-locking on"])
        .args(["-ex", "call (long)syscall(60, 0)"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running gdb");
    let gone = wait_for(Duration::from_secs(2), || {
        !std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
    });
    assert!(
        gone,
        "gdb did not end thread {tid} of {pid}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the engine's worker (`--threads 1`) and waits for the engine to notice. Returns the
/// error line naming it.
fn kill_worker(engine: &Vxnet) -> String {
    let pid = engine.pid();
    let tid = thread_named(pid, "vxnet-worker-0").expect("no thread vxnet-worker-0");
    kill_thread(pid, tid);
    let line = |log: String| {
        log.lines()
            .find(|l| l.contains(&format!("worker 0 (thread id {tid}) vanished")))
            .map(str::to_string)
    };
    wait_for(Duration::from_secs(5), || {
        line(engine.proc.log_text()).is_some()
    });
    line(engine.proc.log_text()).unwrap_or_else(|| {
        panic!(
            "no error line for the lost worker {tid}:\n{}",
            engine.proc.log_text()
        )
    })
}

/// A vxnet pair with one worker each (it owns every flow, so with it gone nothing is
/// forwarded), in a lab named `test`; `None` where the lab cannot run (it says why), or gdb is
/// missing.
fn one_worker_pair(test: &str) -> Option<(Lab, Vxnet, Vxnet)> {
    let lab = Lab::lan(test, 2, Family::V4)?;
    if !have_tool(test, "gdb") {
        return None;
    }
    let (a, b) = lab.vxnet_pair("--threads 1");
    Some((lab, a, b))
}

#[test]
fn a_worker_killed_by_the_kernel_is_replaced() {
    let Some((lab, mut a, _b)) = one_worker_pair("worker_gone") else {
        return;
    };
    let h0 = lab.host(0);
    assert!(h0.ping("10.1.0.2", 2), "no overlay connectivity");

    let pid = a.pid();
    let tid = thread_named(pid, "vxnet-worker-0").expect("no thread vxnet-worker-0");
    let line = kill_worker(&a);
    assert!(
        line.contains("ERROR")
            && line.contains("the kernel log")
            && line.ends_with("restarting the workers"),
        "{line}"
    );
    assert_eq!(a.stats().worker_restarts, 1, "{}", a.proc.log_text());
    // A new worker, and traffic through it (ARP included: the cache may have expired).
    assert!(
        thread_named(pid, "vxnet-worker-0").is_some_and(|t| t != tid),
        "no new worker thread"
    );
    assert!(
        h0.ping("10.1.0.2", 3),
        "traffic did not resume:\n{}",
        a.proc.log_text()
    );

    let status = a
        .proc
        .terminate(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", a.proc.log_text()));
    let log = a.proc.log_text();
    assert!(
        status.success(),
        "exit status {status} after SIGTERM:\n{log}"
    );
    assert!(!log.contains("panicked"), "a panic at shutdown:\n{log}");
}

/// SIGTERM right after the kernel killed a worker, before the supervisor's next look (it looks
/// once a second): the shutdown does not wait for the dead thread (joining it panicked).
#[test]
fn a_stop_right_after_a_worker_vanished_is_clean() {
    let Some((_lab, mut a, _b)) = one_worker_pair("worker_gone_stop") else {
        return;
    };
    let pid = a.pid();
    let tid = thread_named(pid, "vxnet-worker-0").expect("no thread vxnet-worker-0");
    kill_thread(pid, tid);
    let status = a
        .proc
        .terminate(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", a.proc.log_text()));
    let log = a.proc.log_text();
    assert!(
        status.success(),
        "exit status {status} after SIGTERM:\n{log}"
    );
    assert!(!log.contains("panicked"), "a panic at shutdown:\n{log}");
    assert!(
        log.contains("vanished"),
        "the lost worker went unmentioned:\n{log}"
    );
}

#[test]
fn workers_that_keep_dying_stop_the_engine() {
    let Some((lab, mut a, _b)) = one_worker_pair("worker_dying") else {
        return;
    };
    // Five restarts within a minute are allowed ...
    for restarts in 1..=5 {
        kill_worker(&a);
        let counted = wait_for(Duration::from_secs(2), || {
            a.stats().worker_restarts == restarts
                && thread_named(a.pid(), "vxnet-worker-0").is_some()
        });
        assert!(
            counted,
            "restart {restarts} not counted:\n{}",
            a.proc.log_text()
        );
    }
    // ... the sixth loss stops the engine: an error exit for the service manager, no panic,
    // nothing left behind.
    let line = kill_worker(&a);
    assert!(
        line.ends_with("too many restarts: the engine stops"),
        "{line}"
    );
    let exited = wait_for(Duration::from_secs(5), || {
        matches!(a.proc.child.try_wait(), Ok(Some(_)))
    });
    let log = a.proc.log_text();
    assert!(exited, "the engine did not stop:\n{log}");
    let status = a.proc.child.wait().unwrap();
    assert!(!status.success(), "exit status {status}:\n{log}");
    assert!(
        log.lines().any(|l| l.starts_with(
            "error: workers lost more than 5 times within 60 s: stopping, for the service manager to restart the engine"
        )),
        "{log}"
    );
    assert!(!log.contains("panicked"), "a panic:\n{log}");
    assert!(
        !lab.host(0).sh("ip link show vx42").status.success(),
        "TAP vx42 left behind"
    );
    assert!(!a.control.exists(), "control socket left behind");
}
