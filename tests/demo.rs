//! `vxnet demo`: runs end to end (ping, TCP, fdb, a captured packet) and leaves nothing behind,
//! also when interrupted with SIGINT mid-transfer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use vxnet_tests::{interrupt, privileged, run_leftovers, vxnet_bin, wait_for, SweepRun};

fn leftovers(pid: u32) -> Vec<String> {
    run_leftovers(&format!("vxdemo-{pid}"))
}

#[test]
fn demo_runs_and_cleans_up() {
    if !privileged("demo") {
        return;
    }
    let child = Command::new(vxnet_bin())
        .args(["demo", "--json", "--megabytes", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _sweep = SweepRun(format!("vxdemo-{pid}"));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["vni"], 42);
    assert_eq!(report["ping"]["received"], 3, "{report}");
    assert!(report["ping"]["rtt_avg_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(report["tcp_bytes"], 20_000_000);
    assert!(report["tcp_gbit_per_s"].as_f64().unwrap() > 0.0);
    let layers: Vec<(u64, String)> = report["packet"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["offset"].as_u64().unwrap(),
                l["layer"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(layers.contains(&(42, "VXLAN".into())), "{layers:?}");
    assert!(
        layers.contains(&(50, "inner Ethernet".into())),
        "{layers:?}"
    );
    assert_eq!(report["packet"]["vni"], 42);
    // Host a learned host b's MAC, pointing at b's underlay address.
    let entries = report["fdb_a"][0]["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["dst"] == "192.168.205.11"),
        "{report}"
    );
    assert!(
        stderr.contains("[7/7]"),
        "progress lines go to stderr with --json"
    );
    assert!(
        leftovers(pid).is_empty(),
        "left behind: {:?}",
        leftovers(pid)
    );
}

#[test]
fn interrupted_demo_cleans_up() {
    if !privileged("demo") {
        return;
    }
    let mut child = Command::new(vxnet_bin())
        .args(["demo", "--megabytes", "1000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _sweep = SweepRun(format!("vxdemo-{pid}"));
    // Interrupt once both hosts exist and the transfer is under way.
    let started = wait_for(Duration::from_secs(20), || leftovers(pid).len() == 3);
    assert!(started, "the demo never built its hosts");
    std::thread::sleep(Duration::from_secs(2));
    let status = interrupt(&mut child, Duration::from_secs(10));
    let status = status.expect("the demo did not exit after SIGINT");
    assert!(
        !status.success(),
        "an interrupted demo must not report success"
    );
    assert!(
        leftovers(pid).is_empty(),
        "left behind: {:?}",
        leftovers(pid)
    );
}
