//! A worker thread the kernel kills (a kernel BUG inside one of its system calls ends that task
//! alone: no signal, no unwinding) is noticed within about a second: one `error` line, the
//! `worker_restarts` counter, and the workers started again, so forwarding resumes; SIGTERM
//! still stops the engine cleanly. (Before, the engine ran on without the worker, its TAP queue
//! and socket unread, and panicked at shutdown joining the dead thread.) Workers that keep dying
//! stop the engine with an error, for the service manager to restart it. What the lost worker
//! held beyond its memory is released: its fds (a reload rebuilding a network afterwards
//! failed, the TAP held by them) and its place in the SA list.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod esp_common;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vxnet_tests::{have_tool, in_netns, wait_for, Family, Lab, Vxnet};

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

/// Kills the engine's worker `index` and waits for the engine to notice. Returns the error
/// line naming it.
fn kill_worker(engine: &Vxnet, index: usize) -> String {
    let pid = engine.pid();
    let name = format!("vxnet-worker-{index}");
    let tid = thread_named(pid, &name).unwrap_or_else(|| panic!("no thread {name}"));
    kill_thread(pid, tid);
    let line = |log: String| {
        log.lines()
            .find(|l| l.contains(&format!("worker {index} (thread id {tid}) vanished")))
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

/// SIGTERM to `engine`: it exits within 5 s, successfully and without a panic. Returns its log.
fn stops_cleanly(engine: &mut Vxnet) -> String {
    let status = engine
        .proc
        .terminate(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", engine.proc.log_text()));
    let log = engine.proc.log_text();
    assert!(
        status.success(),
        "exit status {status} after SIGTERM:\n{log}"
    );
    assert!(!log.contains("panicked"), "a panic at shutdown:\n{log}");
    log
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
    let line = kill_worker(&a, 0);
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

    stops_cleanly(&mut a);
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
    let log = stops_cleanly(&mut a);
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
        kill_worker(&a, 0);
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
    let line = kill_worker(&a, 0);
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

/// Inner UDP flows [`flows_through`] sends, each from its own source port.
const FLOWS: u16 = 256;

/// Sends datagrams on each of [`FLOWS`] inner UDP flows (source ports 20000…) from host 0
/// (10.1.0.1) to 10.1.0.2:9000 on host 1, again on those not through yet, for up to ten
/// rounds; returns how many flows got through. A multi-queue TAP spreads flows over its queues
/// by hash, so each worker carries some of them, and a queue nobody reads loses the same flows
/// in every round (the rounds only make up for a loaded machine's drops).
fn flows_through(lab: &Lab) -> usize {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let done = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = in_netns(&lab.host(1).ns, {
        let (seen, done) = (Arc::clone(&seen), Arc::clone(&done));
        move || {
            let socket = UdpSocket::bind("10.1.0.2:9000").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 64];
            while !done.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    seen.lock().unwrap().insert(from.port());
                }
            }
        }
    });
    ready_rx.recv().unwrap();
    in_netns(&lab.host(0).ns, {
        let seen = Arc::clone(&seen);
        move || {
            let sockets: Vec<(u16, UdpSocket)> = (20000..20000 + FLOWS)
                .map(|port| (port, UdpSocket::bind(("10.1.0.1", port)).unwrap()))
                .collect();
            for round in 0..10u8 {
                let missing: Vec<&UdpSocket> = {
                    let seen = seen.lock().unwrap();
                    sockets
                        .iter()
                        .filter(|(port, _)| !seen.contains(port))
                        .map(|(_, s)| s)
                        .collect()
                };
                if missing.is_empty() {
                    return;
                }
                for (i, s) in missing.iter().enumerate() {
                    s.send_to(&[round; 32], "10.1.0.2:9000").unwrap();
                    // The TAP's queue holds 500 frames: stay well below it.
                    if i % 64 == 63 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    })
    .join()
    .unwrap();
    done.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
    let through = seen.lock().unwrap().len();
    through
}

/// Host 0's config: network blue (VNI 42 on vx42, 10.1.0.1/24) with TAP MTU `mtu`, two workers.
fn write_config(lab: &Lab, path: &std::path::Path, mtu: u32) {
    let (u0, u1) = (lab.host(0).underlay, lab.host(1).underlay);
    std::fs::write(
        path,
        format!(
            "local = \"{u0}\"\nthreads = 2\n[[network]]\nname = \"blue\"\nvni = 42\n\
             dev = \"vx42\"\naddress = \"10.1.0.1/24\"\nmtu = {mtu}\nremotes = [\"{u1}\"]\n"
        ),
    )
    .unwrap();
}

/// After a worker vanished, every flow still arrives (the new worker serves the lost one's TAP
/// queue and socket), and a reload that rebuilds the network (a new MTU) works and carries
/// every flow. Before, the lost worker's fds of the TAP queue were never closed: once the
/// network was removed they kept the TAP, with one queue nobody read, and its name claimed, so
/// adding the network back failed ("in use by another vxnet engine") and it stayed down.
#[test]
fn a_network_rebuilt_after_a_worker_vanished_carries_every_flow() {
    let test = "worker_gone_rebuild";
    let Some(lab) = Lab::lan(test, 2, Family::V4) else {
        return;
    };
    if !have_tool(test, "gdb") {
        return;
    }
    let (u0, u1) = (lab.host(0).underlay, lab.host(1).underlay);
    let config = lab.dir.join("a.toml");
    write_config(&lab, &config, 1450);
    let a = lab.vxnet(0, "a", &format!("--config {}", config.display()));
    let _b = lab.vxnet(
        1,
        "b",
        &format!(
            "--vni 42 --dev vx42 --local {u1} --remote {u0} --address 10.1.0.2/24 --threads 2"
        ),
    );
    let h0 = lab.host(0);
    assert!(h0.ping("10.1.0.2", 2), "no overlay connectivity");
    assert_eq!(flows_through(&lab), usize::from(FLOWS), "before the loss");

    kill_worker(&a, 1);
    assert!(
        wait_for(Duration::from_secs(2), || a.stats().worker_restarts == 1),
        "{}",
        a.proc.log_text()
    );
    assert_eq!(
        flows_through(&lab),
        usize::from(FLOWS),
        "after the loss:\n{}",
        a.proc.log_text()
    );

    write_config(&lab, &config, 1400);
    let out = a.ctl("reload");
    assert!(
        out.status.success(),
        "reload: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.proc.log_text()
    );
    assert!(
        h0.must("ip -d link show vx42").contains("mtu 1400"),
        "vx42 not rebuilt"
    );
    assert!(h0.ping("10.1.0.2", 3), "{}", a.proc.log_text());
    assert_eq!(
        flows_through(&lab),
        usize::from(FLOWS),
        "after the rebuild:\n{}",
        a.proc.log_text()
    );
}

/// The outbound SAs of `vxnet sa show`: (worker, SPI) of each.
fn outbound_sas(engine: &Vxnet) -> Vec<(u64, String)> {
    let mut rows: Vec<(u64, String)> = engine
        .json("sa show")
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["direction"] == "out")
        .map(|r| {
            (
                r["worker"].as_u64().unwrap(),
                r["spi"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// A lost worker's outbound SA leaves `vxnet sa show` and the `outbound_sas` count when the
/// workers restart: the list shows one SA per live worker. Before, the lost one stayed listed
/// for good next to its successor's (its reference to it, which keeps an SA listed, is never
/// dropped).
#[test]
fn a_vanished_workers_sa_leaves_the_list() {
    let test = "worker_gone_sa";
    let Some(lab) = Lab::lan(test, 2, Family::V4) else {
        return;
    };
    if !have_tool(test, "gdb") {
        return;
    }
    let key = esp_common::key_file(&lab, "net.key");
    let engine = |i: usize| {
        let (local, remote) = (lab.host(i).underlay, lab.host(1 - i).underlay);
        lab.vxnet(
            i,
            ["a", "b"][i],
            &format!(
                "--vni 42 --dev vx42 --local {local} --remote {remote} --address 10.1.0.{}/24 --key-file {} --threads 2",
                i + 1,
                key.display()
            ),
        )
    };
    let (a, _b) = (engine(0), engine(1));
    assert!(lab.host(0).ping("10.1.0.2", 2), "{}", a.proc.log_text());
    // Both workers seal some of the flows, each with its own SA to host 1.
    assert_eq!(flows_through(&lab), usize::from(FLOWS));
    let before = outbound_sas(&a);
    let workers: Vec<u64> = before.iter().map(|(w, _)| *w).collect();
    assert_eq!(workers, [0, 1], "{before:?}");

    kill_worker(&a, 1);
    assert_eq!(
        flows_through(&lab),
        usize::from(FLOWS),
        "{}",
        a.proc.log_text()
    );
    let after = outbound_sas(&a);
    let workers: Vec<u64> = after.iter().map(|(w, _)| *w).collect();
    assert_eq!(workers, [0, 1], "one SA per live worker: {after:?}");
    assert!(
        !after.iter().any(|(_, spi)| *spi == before[1].1),
        "the lost worker's SA {} is still listed: {after:?}",
        before[1].1
    );
    let esp = a.network(42).esp.expect("esp counters");
    assert_eq!(esp.outbound_sas, 2, "{esp:?}");
}
