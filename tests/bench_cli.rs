//! `vxnet bench`: short real runs (iperf3, forced builtin, builtin because iperf3 is not on PATH)
//! whose JSON holds all four pairs with consistent figures and the overlay MTUs the underlay
//! implies; `--containers` reports host to host and container to container; SIGINT mid-run
//! leaves no namespace, process or link behind; bad flags and missing prerequisites give one
//! `error:` line.
//! No assertion on how fast anything is: only that every figure is there and hangs together.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use vxnet_tests::{
    have_tool, interrupt, privileged, run, run_leftovers, vxnet_bin, wait_for, SweepRun,
};

const PAIRS: [&str; 4] = ["kernel", "vxnet", "mixed", "mixed_reverse"];
const FIGURES: [&str; 4] = [
    "tcp_x1_gbit_per_s",
    "tcp_x4_gbit_per_s",
    "ping_p50_ms",
    "ping_p99_ms",
];

/// A `--prefix` no other run of these tests uses (tests run in parallel): `vxb`, a count, the PID.
fn unique_prefix() -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    format!("vxb{n}x{}", std::process::id())
}

/// Starts `vxnet bench --prefix PREFIX ARGS`; the child and its prefix.
fn bench(args: &[&str], path: Option<&Path>) -> (Child, String) {
    let prefix = unique_prefix();
    let mut cmd = Command::new(vxnet_bin());
    cmd.arg("bench")
        .args(["--prefix", &prefix])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    (cmd.spawn().unwrap(), prefix)
}

/// Runs a bench to its end; its output and the sweep that guarded it.
fn finished(args: &[&str], path: Option<&Path>) -> Output {
    let (child, prefix) = bench(args, path);
    let _sweep = SweepRun(prefix.clone());
    let out = child.wait_with_output().unwrap();
    assert!(
        run_leftovers(&prefix).is_empty(),
        "left behind: {:?}",
        run_leftovers(&prefix)
    );
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

/// Everything a run must report, whatever the tool and the machine's speed; `underlay_mtu` is the
/// veths' MTU the run was asked for.
fn check_report(out: &Output, underlay_mtu: u64) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stderr}"));
    assert_eq!(report["statistic"], "median");
    assert_eq!(report["underlay_mtu"], underlay_mtu);
    let wakeup = report["wakeup_round_trip_us"].as_f64().unwrap_or(0.0);
    assert!(wakeup > 0.0, "wake-up round trip {wakeup} µs");
    for name in PAIRS {
        let pair = &report["pairs"][name];
        assert_eq!(pair["name"], name, "{report:#}");
        for key in FIGURES {
            let v = pair[key].as_f64().unwrap_or(0.0);
            assert!(v > 0.0, "{name}.{key} = {v}: {pair:#}");
        }
        assert!(pair["ping_p99_ms"].as_f64() >= pair["ping_p50_ms"].as_f64());
        // Read back from both overlay devices: the kernel's and vxnet's take the same 50 bytes.
        let overlay = underlay_mtu - 50;
        assert_eq!(
            pair["overlay_mtu"],
            serde_json::json!([overlay, overlay]),
            "{name}"
        );
        let machine = pair["machine_cpu_s_per_gb"].as_f64();
        assert!(machine.is_some_and(|c| c >= 0.0), "{name}: {pair:#}");
        let round = &pair["rounds"][0];
        assert!(round["tcp_x1_bytes"].as_u64().unwrap() > 0);
        assert!(round["pings_received"].as_u64().unwrap() > 0);
    }
    // vxnet's own CPU: the pairs that run vxnet have it, the kernel pair has none.
    assert!(report["pairs"]["kernel"]["vxnet_cpu_s_per_gb"].is_null());
    assert_eq!(report["pairs"]["kernel"]["vxnet_processes"], 0);
    assert_eq!(report["pairs"]["vxnet"]["vxnet_processes"], 2);
    assert_eq!(report["pairs"]["mixed"]["vxnet_processes"], 1);
    assert_eq!(report["pairs"]["mixed_reverse"]["vxnet_processes"], 1);
    for name in ["vxnet", "mixed", "mixed_reverse"] {
        let cpu = report["pairs"][name]["vxnet_cpu_s_per_gb"].as_f64();
        assert!(cpu.is_some_and(|c| c >= 0.0), "{name}: {report:#}");
    }
    for name in ["vxnet", "mixed", "mixed_reverse"] {
        for key in FIGURES.into_iter().chain(["machine_cpu_s_per_gb"]) {
            let ratio = report["ratios"][name][key].as_f64();
            let num = report["pairs"][name][key].as_f64().unwrap();
            let den = report["pairs"]["kernel"][key].as_f64().unwrap();
            if den == 0.0 {
                assert_eq!(ratio, None, "{name}.{key}");
            } else {
                let ratio = ratio.unwrap_or_else(|| panic!("no ratio {name}.{key}"));
                assert!(
                    close(ratio, num / den),
                    "{name}.{key}: {ratio} vs {num}/{den}"
                );
            }
        }
    }
    for how in ["vxnet_cpu", "machine_cpu"] {
        assert!(report["method"][how].as_str().unwrap().contains("/proc/"));
    }
    report
}

#[test]
fn bench_with_iperf3_reports_all_pairs() {
    if !privileged("bench_iperf3") || !have_tool("bench_iperf3", "iperf3") {
        return;
    }
    let out = finished(&["--seconds", "1", "--pings", "20", "--json"], None);
    let report = check_report(&out, 1500);
    assert_eq!(report["tool"], "iperf3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("traffic tool: iperf3"), "{stderr}");
    assert!(
        stderr.contains(&format!("[{steps}/{steps}]", steps = PAIRS.len() * 3)),
        "progress goes to stderr: {stderr}"
    );
}

#[test]
fn encrypted_bench_keeps_its_engines_state_to_itself() {
    if !privileged("bench_encrypted") || !have_tool("bench_encrypted", "iperf3") {
        return;
    }
    // The subnet names the engines' replay-floor files (`esp-replay-<underlay address>`), so a
    // file of this run in the host's default state directory is told apart from any other's.
    let subnet = "10.231.0.0/24";
    let args = [
        "--encrypted",
        "--seconds",
        "1",
        "--pings",
        "20",
        "--json",
        "--subnet",
        subnet,
    ];
    let out = finished(&args, None);
    let report = check_report(&out, 1500);
    assert!(
        report.to_string().contains("vxnet_encrypted"),
        "the encrypted pair was measured: {report}"
    );
    // Its engines' tunnel-GSO path carries plaintext only: ESP leaves through the socket.
    assert_eq!(
        report["pairs"]["vxnet_encrypted"]["tx_paths"],
        serde_json::json!(["esp", "esp"]),
        "{report}"
    );
    let leaked: Vec<String> = std::fs::read_dir("/var/lib/vxnet")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("10.231.0."))
        .collect();
    assert!(
        leaked.is_empty(),
        "the bench left state in /var/lib/vxnet: {leaked:?}"
    );
}

#[test]
fn bench_builtin_when_asked_with_engine_settings() {
    if !privileged("bench_builtin") {
        return;
    }
    let args = [
        "--seconds",
        "1",
        "--pings",
        "10",
        "--json",
        "--tool",
        "builtin",
        "--threads",
        "1",
        "--disable-offloads",
        "gro",
        "--underlay-mtu",
        "9000",
        // The smallest range the bench takes: 8 blocks of 4 addresses.
        "--subnet",
        "10.217.0.0/27",
    ];
    let out = finished(&args, None);
    let report = check_report(&out, 9000);
    assert_eq!(report["tool"], "builtin");
    // The settings reached the engines: they say so themselves.
    assert_eq!(report["engine_workers"], 1, "{report:#}");
    let offloads = report["engine_offloads"].as_array().unwrap();
    assert!(!offloads.iter().any(|o| o == "udp-gro"), "{offloads:?}");
    assert_eq!(report["engine"]["disable_offloads"][0], "gro");
}

/// `--containers`: both paths measured in every round, medians and the ratio consistent, the
/// containers attached with the network's MTU, on the smallest `--subnet` the bench takes.
#[test]
fn containers_mode_reports_host_and_container_paths() {
    if !privileged("bench_containers") || !have_tool("bench_containers", "iperf3") {
        return;
    }
    let args = [
        "--containers",
        "--seconds",
        "1",
        "--repeat",
        "2",
        "--pings",
        "10",
        "--threads",
        "1",
        "--subnet",
        "10.218.0.0/27",
        "--json",
    ];
    let out = finished(&args, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stderr}"));
    assert_eq!(report["tool"], "iperf3");
    assert_eq!(report["endpoint_mtu"], 1450, "{report:#}");
    assert_eq!(report["namespaces"].as_array().unwrap().len(), 4);
    for path in ["hosts", "containers"] {
        let p = &report[path];
        assert_eq!(p["rounds"].as_array().unwrap().len(), 2, "{p:#}");
        for key in ["tcp_gbit_per_s", "ping_p50_ms", "ping_p99_ms"] {
            let v = p[key].as_f64().unwrap_or(0.0);
            assert!(v > 0.0, "{path}.{key} = {v}: {p:#}");
        }
        assert!(p["rounds"][0]["tcp_bytes"].as_u64().unwrap() > 0);
        assert!(p["rounds"][1]["pings_received"].as_u64().unwrap() > 0);
    }
    // The network is the second half of --subnet (10.218.0.16/28): the gateways take its
    // first two addresses, the containers the next two.
    assert_eq!(report["hosts"]["to"], "10.218.0.18");
    assert_eq!(report["containers"]["from"], "10.218.0.19");
    assert_eq!(report["containers"]["to"], "10.218.0.20");
    let ratio = report["ratios"]["tcp_gbit_per_s"].as_f64().unwrap();
    let num = report["containers"]["tcp_gbit_per_s"].as_f64().unwrap();
    let den = report["hosts"]["tcp_gbit_per_s"].as_f64().unwrap();
    assert!(close(ratio, num / den), "{ratio} != {num}/{den}");
}

/// A directory holding only the tools the bench needs besides iperf3.
fn path_without_iperf3(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vxnet-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for tool in ["ip", "ping"] {
        let found = String::from_utf8_lossy(&run(&format!("command -v {tool}")).stdout)
            .trim()
            .to_string();
        assert!(!found.is_empty(), "{tool} is not installed");
        symlink(found, dir.join(tool)).unwrap();
    }
    dir
}

#[test]
fn bench_falls_back_to_builtin_without_iperf3() {
    if !privileged("bench_fallback") {
        return;
    }
    let path = path_without_iperf3("bench-fallback");
    let out = finished(&["--seconds", "1", "--pings", "10", "--json"], Some(&path));
    let forced = finished(&["--tool", "iperf3"], Some(&path));
    let _ = std::fs::remove_dir_all(&path);
    let report = check_report(&out, 1500);
    assert_eq!(report["tool"], "builtin");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("traffic tool: builtin") && stderr.contains("iperf3 is not on PATH"),
        "{stderr}"
    );
    // Asked for by name, a missing iperf3 is an error, not a silent fallback.
    assert_one_error_line(&forced, "iperf3");
}

fn assert_one_error_line(out: &Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0 for an error: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(mentions), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_flags_and_missing_prerequisites_give_one_error_line() {
    let cases: [(&[&str], &str); 10] = [
        (&["--seconds", "0"], "--seconds"),
        (&["--seconds", "soon"], "--seconds"),
        (&["--repeat", "0"], "--repeat"),
        (&["--tool", "netperf"], "netperf"),
        (&["--disable-offloads", "tso"], "tso"),
        (
            &["--no-offloads", "--disable-offloads", "gro"],
            "--no-offloads",
        ),
        (&["--bogus"], "--bogus"),
        (&["--underlay-mtu", "1000"], "--underlay-mtu"),
        (&["--underlay-mtu", "65536"], "--underlay-mtu"),
        (&["--containers", "--encrypted"], "--encrypted"),
    ];
    for (args, mentions) in cases {
        let out = finished(args, None);
        assert_one_error_line(&out, mentions);
    }
    if !privileged("bench_prerequisites") {
        return;
    }
    // Root, but no `ip` on PATH.
    let empty = std::env::temp_dir().join(format!("vxnet-bench-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = finished(&["--seconds", "1"], Some(&empty));
    let _ = std::fs::remove_dir(&empty);
    assert_one_error_line(&out, "`ip`");
    // Not root: setpriv drops to nobody.
    if Command::new("setpriv").arg("--version").output().is_ok() {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(vxnet_bin())
            .args(["bench", "--seconds", "1"])
            .output()
            .unwrap();
        assert_one_error_line(&out, "root");
    }
}

/// The network namespace (as `net:[INODE]`) of a process, if it still exists.
fn netns_of(pid: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// PIDs of every process (not thread) in one of `spaces`.
fn processes_in(spaces: &[PathBuf]) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .filter(|p| netns_of(p).is_some_and(|ns| spaces.contains(&ns)))
        .collect()
}

#[test]
fn interrupted_bench_cleans_up() {
    if !privileged("bench_sigint") {
        return;
    }
    let (mut child, prefix) = bench(&["--seconds", "30", "--json", "--tool", "builtin"], None);
    let _sweep = SweepRun(prefix.clone());
    let stderr = Arc::new(Mutex::new(String::new()));
    let reader = {
        let stderr = Arc::clone(&stderr);
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = stderr.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        })
    };
    // Interrupt during the first measurement, with every pair and process up.
    let measuring = wait_for(Duration::from_secs(30), || {
        stderr.lock().unwrap().contains("[1/")
    });
    assert!(
        measuring,
        "the bench never started measuring:\n{}",
        stderr.lock().unwrap()
    );
    let names: Vec<String> = run_leftovers(&prefix)
        .into_iter()
        .filter(|n| !n.starts_with('/'))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let mut spaces = Vec::new();
    let mut pids = Vec::new();
    for name in &names {
        let listed = String::from_utf8_lossy(&run(&format!("ip netns pids {name}")).stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>();
        let space = listed.iter().find_map(|p| netns_of(p));
        spaces.push(space.unwrap_or_else(|| panic!("no process in {name}")));
        pids.extend(listed);
    }
    assert!(pids.len() >= 3, "three vxnet engines expected: {pids:?}");
    std::thread::sleep(Duration::from_millis(500));
    let status = interrupt(&mut child, Duration::from_secs(15));
    reader.join().unwrap();
    let stderr = stderr.lock().unwrap().clone();
    let status = status.unwrap_or_else(|| panic!("the bench did not exit after SIGINT:\n{stderr}"));
    assert!(!status.success(), "an interrupted bench must not succeed");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        run_leftovers(&prefix).is_empty(),
        "left behind: {:?}",
        run_leftovers(&prefix)
    );
    let gone = |p: &String| !Path::new(&format!("/proc/{p}")).exists();
    assert!(pids.iter().all(gone), "processes left: {pids:?}");
    // No process holds the namespaces and no name mounts them: the kernel frees them, with the
    // veths, vxlan links and TAPs inside.
    assert!(
        processes_in(&spaces).is_empty(),
        "{:?}",
        processes_in(&spaces)
    );
}
