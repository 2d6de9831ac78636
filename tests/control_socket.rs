//! Issue 13: the control socket as an attacker and an unlucky operator meet it. A request
//! without end, thousands of idle connections under a low fd limit, a permissive umask, an
//! unprivileged user, a `--control` path naming something that is not a stale socket, and
//! `fdb add` destinations that are no VTEP. The engine survives each with forwarding unaffected,
//! and refuses what it must with one clear line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vxnet_tests::{have_tool, must, run, vxnet_bin, wait_for, Family, Lab, Vxnet};

/// Two engines flooding to each other on VNI 42, overlay 10.1.0.{1,2}/24.
fn pair(lab: &Lab) -> (Vxnet, Vxnet) {
    let (h0, h1) = (lab.host(0), lab.host(1));
    let start = |i: usize, me: &vxnet_tests::Host, other: &vxnet_tests::Host| {
        lab.vxnet(
            i,
            &format!("vx{i}"),
            &format!(
                "--vni 42 --dev vx42 --threads 2 --local {} --remote {} --address 10.1.0.{}/24",
                me.underlay,
                other.underlay,
                i + 1
            ),
        )
    };
    (start(0, h0, h1), start(1, h1, h0))
}

fn status_field(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The engine's own PID (`ip netns exec … sh -c "exec vxnet …"` keeps one process).
fn engine_pid(engine: &Vxnet) -> u32 {
    let pid = engine.proc.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "vxnet", "pid {pid} is not the engine");
    pid
}

#[test]
fn endless_request_is_cut_off_at_the_cap() {
    let Some(lab) = Lab::lan("control_endless_request", 2, Family::V4) else {
        return;
    };
    let (engine, _peer) = pair(&lab);
    let pid = engine_pid(&engine);
    assert!(lab.host(0).ping("10.1.0.2", 1), "no overlay before");
    let rss_before = status_field(pid, "VmRSS:");

    // 1 GiB without a newline. Before the cap the engine buffered all of it (RSS ~1 GB).
    let mut stream = UnixStream::connect(&engine.control).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent: u64 = 0;
    while sent < 1 << 30 {
        match stream.write(&chunk) {
            Ok(n) => sent += n as u64,
            Err(_) => break,
        }
    }
    assert!(
        sent < 64 << 20,
        "the engine read {sent} bytes of one request without cutting it off"
    );
    let mut reply = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.read_to_string(&mut reply);
    assert!(
        reply.contains("larger than 65536 bytes"),
        "reply to an oversized request: {reply:?}"
    );
    let rss_after = status_field(pid, "VmRSS:");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
    assert_eq!(engine.stats().control.oversized, 1);
    assert!(lab.host(0).ping("10.1.0.2", 2), "forwarding disturbed");
}

/// Holds `count` connections to `path` open (a Python helper: one fd each, more than this test
/// process may have), printing how many it got; they close when its stdin does.
fn hold_connections(path: &Path, count: usize) -> (std::process::Child, usize) {
    let script = r#"
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]) + 100, int(sys.argv[2]) + 100))
held, deadline = [], time.time() + 20
while len(held) < int(sys.argv[2]) and time.time() < deadline:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(sys.argv[1])
        held.append(s)
    except (BlockingIOError, InterruptedError):
        s.close()
        time.sleep(0.002)
print(len(held), flush=True)
sys.stdin.read()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, path.to_str().unwrap(), &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let got = line.trim().parse().unwrap_or(0);
    (child, got)
}

#[test]
fn idle_connections_under_a_low_fd_limit_never_lock_out_stats() {
    let Some(lab) = Lab::lan("control_idle_flood", 2, Family::V4) else {
        return;
    };
    if !have_tool("control_idle_flood", "prlimit") || !have_tool("control_idle_flood", "python3") {
        return;
    }
    let (engine, _peer) = pair(&lab);
    let pid = engine_pid(&engine);
    let limit = open_fds(pid) + 150;
    must(&format!("prlimit --pid {pid} --nofile={limit}:{limit}"));

    let (mut holder, held) = hold_connections(&engine.control, 5000);
    // Before the bounds, the engine held one fd per idle connection, hit its limit and span at
    // 100% CPU in an accept-error loop while `vxnet stats` hung.
    assert!(held >= 1000, "only {held} connections could be opened");
    let started = Instant::now();
    let out = run(&format!(
        "timeout 5 {} stats --json --control {}",
        vxnet_bin().display(),
        engine.control.display()
    ));
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "stats failed with {held} idle connections: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(2), "stats took {took:?}");
    let fds = open_fds(pid);
    assert!(fds < limit, "engine holds {fds} fds (limit {limit})");
    let ticks = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let busy = cpu_ticks(pid) - ticks;
    // Clock ticks are 1/100 s: more than a quarter of a core would be a spin.
    assert!(
        busy < 25,
        "engine used {busy} ticks of CPU in 1 s while idle"
    );
    assert!(engine.stats().control.evicted > 0);
    assert!(lab.host(0).ping("10.1.0.2", 2), "forwarding disturbed");
    drop(holder.stdin.take());
    let _ = holder.wait();
}

/// `vxnet ARGS --control PATH` as uid/gid 65534 (nobody) with the given extra setpriv flags.
fn as_nobody(groups: &str, args: &str, control: &Path) -> std::process::Output {
    run(&format!(
        "setpriv --reuid=65534 --regid=65534 {groups} {} {args} --control {}",
        vxnet_bin().display(),
        control.display()
    ))
}

/// Removes a group made by the test, however the test ends.
struct TempGroup(String);

impl Drop for TempGroup {
    fn drop(&mut self) {
        let _ = run(&format!("groupdel {}", self.0));
    }
}

#[test]
fn socket_mode_ignores_umask_and_peers_are_checked() {
    let Some(lab) = Lab::lan("control_permissions", 1, Family::V4) else {
        return;
    };
    if !have_tool("control_permissions", "setpriv") || !have_tool("control_permissions", "groupadd")
    {
        return;
    }
    let h = lab.host(0);
    let control = lab.dir.join("umask.sock");
    let log = lab.dir.join("umask.log");
    let proc = lab.spawn(
        0,
        &log,
        &format!(
            "sh -c 'umask 000 && exec {} run --control {} --vni 42 --dev vx42 --local {}'",
            vxnet_bin().display(),
            control.display(),
            h.underlay
        ),
    );
    let engine = Vxnet { proc, control };
    assert!(
        wait_for(Duration::from_secs(10), || engine
            .ctl("stats")
            .status
            .success()),
        "engine did not start: {}",
        engine.proc.log_text()
    );
    let mode = std::fs::metadata(&engine.control)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    // Before, the mode followed the umask: 0777 here.
    assert_eq!(mode, 0o600, "socket mode {mode:o} under umask 000");

    let hijack = "fdb add 02:11:22:33:44:55 --dst 10.0.0.3";
    let out = as_nobody("--clear-groups", hijack, &engine.control);
    assert!(!out.status.success(), "nobody changed the FDB");
    // The socket's mode keeps nobody out: one line saying an engine is there and what to do.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("does not let this user in (permission denied)")
            && stderr.contains("mode 0600")
            && stderr.contains("--control-group GROUP"),
        "{stderr}"
    );
    // Past the file mode (as a chmod by mistake or a bind mount would let it), the peer check
    // still refuses, with one line.
    std::fs::set_permissions(&engine.control, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody("--clear-groups", hijack, &engine.control);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody changed the FDB past 0666");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("permission denied: uid 65534"), "{stderr}");
    let fdb = String::from_utf8_lossy(&engine.ctl("fdb show").stdout).into_owned();
    assert!(!fdb.contains("02:11:22:33:44:55"), "{fdb}");
    assert_eq!(engine.stats().control.refused, 1);

    // A control group: mode 0660, its members in, others out.
    let group = TempGroup(format!("vxt{}", std::process::id()));
    must(&format!("groupadd {}", group.0));
    let gid: u32 = must(&format!("getent group {}", group.0))
        .split(':')
        .nth(2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    drop(engine);
    let grouped = lab.vxnet(
        0,
        "grouped",
        &format!(
            "--vni 42 --dev vx42 --local {} --control-group {}",
            h.underlay, group.0
        ),
    );
    let meta = std::fs::metadata(&grouped.control).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
    let member = as_nobody(&format!("--groups={gid}"), "stats", &grouped.control);
    assert!(
        member.status.success(),
        "group member refused: {}",
        String::from_utf8_lossy(&member.stderr)
    );
    let outsider = as_nobody("--clear-groups", "stats", &grouped.control);
    let stderr = String::from_utf8_lossy(&outsider.stderr);
    assert!(
        stderr.contains(&format!("join group {}", group.0)),
        "the group to join is named: {stderr}"
    );
    std::fs::set_permissions(&grouped.control, std::fs::Permissions::from_mode(0o666)).unwrap();
    let outsider = as_nobody("--clear-groups", "stats", &grouped.control);
    assert!(!outsider.status.success(), "non-member let in");
    assert!(String::from_utf8_lossy(&outsider.stderr).contains("control group"));
}

#[test]
fn control_path_that_is_no_stale_socket_is_left_alone() {
    let Some(lab) = Lab::lan("control_path_clash", 1, Family::V4) else {
        return;
    };
    let h = lab.host(0);
    let first = lab.vxnet(
        0,
        "first",
        &format!("--vni 42 --dev vx42 --local {} --port 4789", h.underlay),
    );
    let file = lab.dir.join("precious.txt");
    std::fs::write(&file, "keep me").unwrap();
    let dir = lab.dir.join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    for (case, path, word) in [
        ("regular file", &file, "a regular file"),
        ("directory", &dir, "a directory"),
        (
            "live socket",
            &first.control,
            "in use by another running vxnet",
        ),
    ] {
        let out = h.sh(&format!(
            "timeout 10 {} run --control {} --vni 43 --dev vx43 --local {} --port 4790",
            vxnet_bin().display(),
            path.display(),
            h.underlay
        ));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: started");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{case}: {stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(word),
            "{case}: {stderr}"
        );
        assert!(
            !h.sh("ip link show vx43").status.success(),
            "{case}: TAP left"
        );
    }
    // Before, the file was replaced by the socket and deleted on exit.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    assert!(dir.is_dir());
    assert!(
        first.ctl("stats").status.success(),
        "the first engine lost its socket"
    );
}

#[test]
fn fdb_destinations_must_be_unicast_vteps() {
    let Some(lab) = Lab::lan("control_fdb_destinations", 2, Family::V4) else {
        return;
    };
    let (engine, _peer) = pair(&lab);
    let own = lab.host(0).underlay.to_string();
    for (dst, reason) in [
        ("0.0.0.0", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.1", "multicast"),
        ("127.0.0.1", "loopback"),
        (own.as_str(), "own VTEP"),
    ] {
        for mac in ["02:11:22:33:44:55", "00:00:00:00:00:00"] {
            let out = engine.ctl(&format!("fdb add {mac} --dst {dst}"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "fdb add {mac} --dst {dst} accepted");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(
                stderr.contains(dst) && stderr.contains(reason),
                "fdb add --dst {dst}: {stderr}"
            );
        }
    }
    let fdb = engine.json("fdb show");
    let statics = fdb[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "static")
        .count();
    assert_eq!(statics, 0, "{fdb}");
    assert_eq!(
        fdb[0]["flood"],
        serde_json::json!([lab.host(1).underlay.to_string()]),
        "{fdb}"
    );
    let peers = engine.json("peers");
    assert_eq!(peers.as_array().unwrap().len(), 1, "{peers}");
    // A real VTEP is still taken; asked for JSON, a change answers with a JSON document too.
    for change in [
        "fdb add 02:11:22:33:44:55 --dst 10.0.0.9 --json",
        "fdb del 02:11:22:33:44:55 --json",
    ] {
        let out = engine.ctl(change);
        assert!(out.status.success(), "{change}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let answer: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{change}: not one JSON document ({e}): {stdout:?}"));
        assert!(answer.is_object(), "{change}: {answer}");
    }
    assert!(lab.host(0).ping("10.1.0.2", 1), "forwarding disturbed");
}
