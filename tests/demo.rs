//! `vxnet demo`: two runs side by side (own prefixes and subnets) on a machine whose `PATH` is
//! empty, so the demo needs no `ip` or `ping`; each pings, moves data, shows its fdb and a
//! captured packet, and leaves nothing behind, also when interrupted with SIGINT mid-transfer
//! (its namespaces meanwhile real named ones that `ip netns` sees and enters). A `--subnet` that
//! overlaps a route of the host is refused before anything is created.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vxnet_tests::{interrupt, privileged, run, run_leftovers, vxnet_bin, wait_for, SweepRun};

/// A prefix unique to this test process and `tag` (at most 13 bytes: `vxd` + tag + PID).
fn prefix(tag: char) -> String {
    format!("vxd{tag}{}", std::process::id())
}

fn demo(args: &[&str]) -> Child {
    Command::new(vxnet_bin())
        .arg("demo")
        .args(args)
        // A bare machine: no iproute2, no ping, nothing on PATH at all.
        .env_clear()
        .env("PATH", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_demos_run_side_by_side_with_an_empty_path_and_clean_up() {
    if !privileged("demo") {
        return;
    }
    let runs = [
        (prefix('1'), "10.213.0.0/24"),
        (prefix('2'), "10.214.0.0/29"),
    ];
    let _sweeps: Vec<SweepRun> = runs.iter().map(|(p, _)| SweepRun(p.clone())).collect();
    let children: Vec<Child> = runs
        .iter()
        .map(|(p, subnet)| {
            demo(&[
                "--json",
                "--megabytes",
                "20",
                "--prefix",
                p,
                "--subnet",
                subnet,
            ])
        })
        .collect();
    // host a, host b on the underlay; host b on the overlay (the ping target).
    let expected = [
        ("10.213.0.1", "10.213.0.2", "10.213.0.130"),
        ("10.214.0.1", "10.214.0.2", "10.214.0.6"),
    ];
    for ((child, (p, subnet)), (under_a, under_b, over_b)) in
        children.into_iter().zip(&runs).zip(expected)
    {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "demo {p} failed:\n{stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["vni"], 42);
        assert_eq!(report["subnet"], *subnet);
        assert_eq!(report["namespaces"][0], format!("{p}-a"));
        assert_eq!(report["underlay"][0], under_a);
        assert_eq!(report["overlay"][1], over_b);
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
        assert!(entries.iter().any(|e| e["dst"] == under_b), "{report}");
        assert!(
            stderr.contains("[7/7]"),
            "progress lines go to stderr with --json"
        );
        assert!(!stderr.contains("error"), "{stderr}");
        assert!(
            run_leftovers(p).is_empty(),
            "left behind: {:?}",
            run_leftovers(p)
        );
    }
}

#[test]
fn interrupted_demo_cleans_up() {
    if !privileged("demo") {
        return;
    }
    let p = prefix('i');
    let _sweep = SweepRun(p.clone());
    let mut child = demo(&[
        "--megabytes",
        "100000",
        "--prefix",
        &p,
        "--subnet",
        "10.215.0.0/24",
    ]);
    // Interrupt once both hosts and the run's folder exist and the transfer is under way.
    let started = wait_for(Duration::from_secs(20), || run_leftovers(&p).len() == 3);
    assert!(started, "the demo never built its hosts");
    // Real named namespaces: iproute2 enters them while the demo runs.
    let addrs = run(&format!("ip netns exec {p}-a ip -o -4 addr show dev {p}-a"));
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert!(addrs.contains("10.215.0.1/25"), "{addrs}");
    std::thread::sleep(Duration::from_secs(2));
    let status = interrupt(&mut child, Duration::from_secs(10));
    let status = status.expect("the demo did not exit after SIGINT");
    assert!(
        !status.success(),
        "an interrupted demo must not report success"
    );
    assert!(
        run_leftovers(&p).is_empty(),
        "left behind: {:?}",
        run_leftovers(&p)
    );
}

/// Deletes the test's own namespace, also when an assertion fails.
struct TestNetns(String);

impl Drop for TestNetns {
    fn drop(&mut self) {
        run(&format!("ip netns del {}", self.0));
    }
}

#[test]
fn a_subnet_over_a_host_route_is_refused_before_anything_is_created() {
    if !privileged("demo") {
        return;
    }
    // A host of its own whose routing table has 10.216.0.0/24 (the address of a veth end).
    let host = TestNetns(format!("vxdh{}", std::process::id()));
    let ns = &host.0;
    for cmd in [
        format!("ip netns add {ns}"),
        format!("ip -n {ns} link add d0 type veth peer name d1"),
        format!("ip -n {ns} addr add 10.216.0.1/24 dev d0"),
        format!("ip -n {ns} link set d0 up"),
    ] {
        assert!(run(&cmd).status.success(), "{cmd}");
    }
    let p = prefix('r');
    let _sweep = SweepRun(p.clone());
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(vxnet_bin())
        .args(["demo", "--prefix", &p, "--subnet", "10.216.0.64/26"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "error: --subnet 10.216.0.64/26 overlaps this host's route to 10.216.0.0/24"
        ),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing was started");
    assert!(
        run_leftovers(&p).is_empty(),
        "created: {:?}",
        run_leftovers(&p)
    );
}
