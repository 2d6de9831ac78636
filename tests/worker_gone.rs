//! A worker thread the kernel kills (a kernel BUG inside one of its system calls ends that task
//! alone: no signal, no unwinding) is noticed within about a second: one `error` line, the
//! `worker_restarts` counter, and the workers started again, so forwarding resumes; SIGTERM
//! still stops the engine cleanly. (Before, the engine ran on without the worker, its TAP queue
//! and socket unread, and panicked at shutdown joining the dead thread.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use vxnet_tests::{have_tool, wait_for, Family, Lab};

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
        .args(["30", "gdb", "-nx", "-batch", "-p", &pid.to_string()])
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

#[test]
fn a_worker_killed_by_the_kernel_is_replaced() {
    let Some(lab) = Lab::lan("worker_gone", 2, Family::V4) else {
        return;
    };
    if !have_tool("worker_gone", "gdb") {
        return;
    }
    // One worker: it owns every flow, so with it gone nothing is forwarded.
    let (mut a, _b) = lab.vxnet_pair("--threads 1");
    let h0 = lab.host(0);
    assert!(h0.ping("10.1.0.2", 2), "no overlay connectivity");

    let pid = a.pid();
    let tid = thread_named(pid, "vxnet-worker-0").expect("no thread vxnet-worker-0");
    kill_thread(pid, tid);

    let logged = wait_for(Duration::from_secs(5), || {
        a.proc.log_text().lines().any(|l| {
            l.contains("ERROR")
                && l.contains(&format!("worker 0 (thread id {tid}) vanished"))
                && l.contains("kernel log")
        })
    });
    assert!(
        logged,
        "no error line for the lost worker:\n{}",
        a.proc.log_text()
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
