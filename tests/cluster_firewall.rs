//! Cluster mode and the host firewall: an nftables table applied by `vxnet firewall apply` or
//! asked for with `vxnet run --firewall` drops VXLAN from non-members and follows hosts that
//! join and leave the cluster (its sets change, the table and its counters stay).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_lab;

use std::time::{Duration, Instant};

use cluster_lab::{ping_until, stderr, stdout, ClusterLab};
use serde_json::Value;
use vxnet_tests::{have_tool, in_netns, wait_for};

/// The elements of vxnet's `peers4` set in host i's namespace, sorted; empty without the table.
fn fw_peers4(c: &ClusterLab, i: usize) -> Vec<String> {
    let out = c.lab.host(i).sh("nft -j list set inet vxnet peers4");
    if !out.status.success() {
        return Vec::new();
    }
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut elems: Vec<String> = doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["set"]["elem"].as_array())
        .flatten()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    elems.sort();
    elems
}

/// Packets counted by the rules of vxnet's input chain in host i (only the drop rule counts).
fn fw_drops(c: &ClusterLab, i: usize) -> u64 {
    let out = c.lab.host(i).must("nft -j list chain inet vxnet input");
    let doc: Value = serde_json::from_str(&out).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["rule"]["expr"].as_array())
        .flatten()
        .filter_map(|e| e["counter"]["packets"].as_u64())
        .sum()
}

/// Waits until host i's `peers4` holds exactly the underlays of `hosts`.
fn wait_fw_peers(c: &ClusterLab, i: usize, hosts: &[usize], why: &str) {
    let mut want: Vec<String> = hosts.iter().map(|h| c.underlay(*h).to_string()).collect();
    want.sort();
    assert!(
        wait_for(Duration::from_secs(5), || fw_peers4(c, i) == want),
        "host {i} ({why}): peers4 {:?}, want {want:?}; log:\n{}",
        fw_peers4(c, i),
        c.engine(i).proc.log_text()
    );
}

#[test]
fn firewall_follows_hosts_joining_and_leaving() {
    let test = "firewall_follows_hosts_joining_and_leaving";
    let Some(mut c) = ClusterLab::new(test, 10) else {
        return;
    };
    if !have_tool(test, "nft") {
        return;
    }
    c.create("blue", "--subnet 10.1.0.0/24");
    c.join(0, "");
    // Host 1 asks vxnet for the firewall; host 0 applies it by hand below.
    c.join(1, "--firewall");
    c.wait_peers(0, "blue", &[1], Duration::from_secs(5));
    c.wait_peers(1, "blue", &[0], Duration::from_secs(5));
    let out = c.cli(0, "firewall apply --backend nftables");
    assert!(out.status.success(), "{}", stderr(&out));
    wait_fw_peers(&c, 0, &[0, 1], "vxnet firewall apply");
    wait_fw_peers(&c, 1, &[0, 1], "vxnet run --firewall");

    // Host 2 is no member yet: its datagrams to host 0's VXLAN port are dropped and counted.
    let target = std::net::SocketAddr::new(c.underlay(0), 4789);
    in_netns(&c.lab.host(2).ns, move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..3 {
            sock.send_to(b"not vxlan", target).unwrap();
        }
    })
    .join()
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || fw_drops(&c, 0) >= 3),
        "host 0's table dropped {} packets from a non-member, want >= 3",
        fw_drops(&c, 0)
    );
    let drops_before = fw_drops(&c, 0);

    // Host 2 joins after the firewalls were set up: the running engines let it in.
    let t0 = Instant::now();
    c.join(2, "");
    c.wait_full_mesh("blue", Duration::from_secs(5));
    let ip0 = c.overlay_ip(0, "blue");
    let ip1 = c.overlay_ip(1, "blue");
    assert!(
        ping_until(&c.lab, 2, &ip0, Duration::from_secs(5)),
        "host 2 cannot reach host 0 through host 0's firewall; host 0's peers4 {:?}",
        fw_peers4(&c, 0)
    );
    assert!(
        ping_until(&c.lab, 2, &ip1, Duration::from_secs(5)),
        "host 2 cannot reach host 1 through host 1's firewall; host 1's peers4 {:?}",
        fw_peers4(&c, 1)
    );
    eprintln!(
        "TIMING host 2 start -> ping through both firewalls {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    wait_fw_peers(&c, 0, &[0, 1, 2], "host 2 joined");
    wait_fw_peers(&c, 1, &[0, 1, 2], "host 2 joined");
    let log0 = c.engine(0).proc.log_text();
    assert!(
        log0.contains("firewall: peers set to 3 members"),
        "host 0 log:\n{log0}"
    );
    // Only the sets changed: the table, and its drop counter, are the ones applied.
    assert!(
        fw_drops(&c, 0) >= drops_before,
        "host 0's table was re-created: drop counter {} < {drops_before}",
        fw_drops(&c, 0)
    );
    // Host 2 neither applied a firewall nor asked for one: it has none.
    let out = c.lab.host(2).sh("nft list table inet vxnet");
    assert!(
        !out.status.success(),
        "host 2 got a firewall: {}",
        stdout(&out)
    );

    // SIGTERM: host 2 leaves, and its address leaves the sets with it.
    c.terminate(2);
    wait_fw_peers(&c, 0, &[0, 1], "host 2 left");
    wait_fw_peers(&c, 1, &[0, 1], "host 2 left");
    eprintln!(
        "TIMING host 2 start -> gone from both firewalls after SIGTERM {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
}
