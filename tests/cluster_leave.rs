//! Hosts leaving an etcd cluster for good: `vxnet cluster leave` on the host and `vxnet cluster rm
//! NODE_ID` on a manager delete the node record and free the node's addresses (checked in etcd
//! itself with etcdctl), are refused while the node is live, and a store outage loses nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_lab;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cluster_lab::{assert_cli_error, ClusterLab, ENGINES, ETCD_HOST};
use serde_json::Value;
use vxnet_tests::{have_tool, vxnet_bin, wait_for};

/// The address claims (`<network>/<ip>`) `node` holds: its records under `node/<id>/addrs/`.
fn addresses_of(c: &ClusterLab, node: &str) -> Vec<String> {
    c.store_keys(&format!("node/{node}/addrs/"))
        .into_keys()
        .collect()
}

/// Every node's address claims: `<node>/addrs/<network>/<ip>` → value.
fn all_claims(c: &ClusterLab) -> BTreeMap<String, String> {
    c.store_keys("node/")
        .into_iter()
        .filter(|(k, _)| k.contains("/addrs/"))
        .collect()
}

/// The cluster lab with engines on `ttl`-second leases, plus etcdctl to look into the store.
/// `None` = skip.
fn lab(test: &str, ttl: u32) -> Option<ClusterLab> {
    let c = ClusterLab::new(test, ttl)?;
    have_tool(test, "etcdctl").then_some(c)
}

fn node_id(c: &ClusterLab, i: usize) -> String {
    c.cli_json(i, "cluster status")["node_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Node ids in host i's `cluster status --json`.
fn listed_nodes(c: &ClusterLab, i: usize) -> Vec<String> {
    c.cli_json(i, "cluster status")["view"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node_id"].as_str().unwrap().to_string())
        .collect()
}

/// Stops host i's engine with SIGTERM and waits until its leased member record is gone.
fn stop(c: &mut ClusterLab, i: usize, node: &str) {
    c.terminate(i);
    assert!(
        wait_for(Duration::from_secs(5), || !c
            .store_keys("members/")
            .contains_key(node)),
        "host {i} still live after SIGTERM"
    );
}

/// `vxnet run --local <host i> --state-dir DIR` with no cluster flags, bounded in case it serves.
fn run_resuming(c: &ClusterLab, i: usize, dir: &Path) -> std::process::Output {
    c.lab.host(i).sh(&format!(
        "timeout 10 {} run --local {} --state-dir {} --control {}",
        vxnet_bin().display(),
        c.underlay(i),
        dir.display(),
        c.lab.dir.join(format!("resume{i}.sock")).display()
    ))
}

fn freed(out: &Value) -> Vec<String> {
    out["freed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}/{}",
                f["network"].as_str().unwrap(),
                f["address"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn leave_is_refused_while_running_then_frees_the_node() {
    let Some(mut c) = lab("leave_is_refused_while_running", 10) else {
        return;
    };
    c.create("blue", "--subnet 10.1.0.0/24");
    c.create("green", "--subnet 10.2.0.0/24");
    for i in 0..ENGINES {
        c.join(i, "");
    }
    c.wait_full_mesh("blue", Duration::from_secs(5));
    c.wait_full_mesh("green", Duration::from_secs(5));
    let node2 = node_id(&c, 2);
    let blue2 = c.overlay_ip(2, "blue");
    let held = vec![
        format!("blue/{blue2}"),
        format!("green/{}", c.overlay_ip(2, "green")),
    ];
    assert_eq!(addresses_of(&c, &node2), held);
    let claims = all_claims(&c);
    assert_eq!(claims.len(), 6, "{claims:?}");

    // Live: refused, and neither the store nor the state dir changes.
    let state_file = c.state_dir(2).join("state.json");
    let saved = std::fs::read(&state_file).unwrap();
    assert_cli_error(&c.cli(2, "cluster leave"), "stop `vxnet run`");
    assert_eq!(all_claims(&c), claims);
    assert!(c.store_keys("nodes/").contains_key(&node2));
    assert_eq!(std::fs::read(&state_file).unwrap(), saved);

    stop(&mut c, 2, &node2);
    let out = c.cli_json(2, "cluster leave");
    assert_eq!(out["node_id"], node2.as_str());
    assert_eq!(out["node_record"], true);
    assert_eq!(freed(&out), held);
    // Gone from etcd: its record, both addresses and everything else under its prefix; the
    // others keep theirs.
    assert!(addresses_of(&c, &node2).is_empty());
    let mine = c.store_keys(&format!("node/{node2}/"));
    assert!(mine.is_empty(), "{mine:?}");
    let left = all_claims(&c);
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(
        left.iter().all(|(k, v)| claims.get(k) == Some(v)),
        "{left:?}"
    );
    assert!(!c.store_keys("nodes/").contains_key(&node2));
    let listed = listed_nodes(&c, 1);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(!listed.contains(&node2), "{listed:?}");
    assert!(!state_file.exists());

    // Its state dir no longer resumes cluster mode: `run --local` is static mode without networks.
    assert_cli_error(
        &run_resuming(&c, 2, &c.state_dir(2)),
        "no network configured",
    );
    assert_eq!(c.store_keys("nodes/").len(), 2);

    // A new host (fresh state dir, new node id) is given the freed address.
    let fresh = c.lab.dir.join("state-new");
    let args = format!(
        "--local {} --state-dir {} --lease-ttl 10 --token {}",
        c.underlay(2),
        fresh.display(),
        c.worker_token
    );
    c.engines[2] = Some(c.lab.vxnet(2, "h2-new", &args));
    c.wait_full_mesh("blue", Duration::from_secs(5));
    let new_id = std::fs::read_to_string(fresh.join("node_id")).unwrap();
    assert_ne!(new_id.trim(), node2);
    assert_eq!(c.overlay_ip(2, "blue"), blue2, "freed address not reused");
    assert_eq!(all_claims(&c).len(), 6);
}

#[test]
fn cluster_rm_frees_a_dead_host_only_from_a_manager() {
    let Some(mut c) = lab("cluster_rm_frees_a_dead_host", 10) else {
        return;
    };
    c.create("blue", "--subnet 10.1.0.0/24");
    for i in 0..ENGINES {
        c.join(i, "");
    }
    c.wait_full_mesh("blue", Duration::from_secs(5));
    let ids: Vec<String> = (0..ENGINES).map(|i| node_id(&c, i)).collect();
    let node2 = ids[2].clone();
    let held = vec![format!("blue/{}", c.overlay_ip(2, "blue"))];
    assert_eq!(addresses_of(&c, &node2), held);
    let rm2 = format!("cluster rm {node2}");

    assert_cli_error(&c.cli(0, &rm2), "is live");
    assert_eq!(addresses_of(&c, &node2), held);

    stop(&mut c, 2, &node2);
    // Down but not removed: still listed, and the firewall still opens to it.
    assert!(listed_nodes(&c, 0).contains(&node2));
    let fw = "firewall apply --dry-run --backend nftables";
    let peers = |c: &ClusterLab| c.cli_json(0, fw)["peers"].clone();
    let host2 = c.underlay(2).to_string();
    assert!(peers(&c).as_array().unwrap().iter().any(|p| *p == host2));

    assert_cli_error(&c.cli(1, &rm2), "needs a manager");
    assert_cli_error(
        &c.cli(0, "cluster rm 0123456789abcdef"),
        "no node 0123456789abcdef",
    );
    assert_cli_error(
        &c.cli(0, &format!("cluster rm {}", ids[0])),
        "cluster leave",
    );
    assert_eq!(addresses_of(&c, &node2), held);
    assert!(c.store_keys("nodes/").contains_key(&node2));

    let out = c.cli_json(0, &rm2);
    assert_eq!(freed(&out), held);
    assert!(addresses_of(&c, &node2).is_empty());
    assert_eq!(all_claims(&c).len(), 2);
    assert!(!c.store_keys("nodes/").contains_key(&node2));
    let mut remaining = ids[..2].to_vec();
    remaining.sort();
    for i in [0, 1] {
        // Status lists members sorted by node id.
        assert_eq!(listed_nodes(&c, i), remaining, "host {i}");
    }
    let now = peers(&c);
    assert!(
        !now.as_array().unwrap().iter().any(|p| *p == host2),
        "{now}"
    );

    // The removed host cannot come back from its state dir, and a second rm finds nothing.
    assert_cli_error(&run_resuming(&c, 2, &c.state_dir(2)), "not a member");
    assert!(!c.store_keys("nodes/").contains_key(&node2));
    assert_cli_error(&c.cli(0, &rm2), "no node");

    // Host 0 is the only manager: leaving would strand worker host 1, so it takes --force, unless
    // another manager joined first (as `docker swarm leave` does).
    stop(&mut c, 0, &ids[0]);
    assert_cli_error(&c.cli(0, "cluster leave"), "last manager");
    assert!(c.store_keys("nodes/").contains_key(&ids[0]));
    assert!(c.state_dir(0).join("state.json").exists());
    let manager_token = c.cli_json(0, "cluster rotate --manager")["manager_token"]
        .as_str()
        .unwrap()
        .to_string();
    let second = c.lab.dir.join("state-manager");
    let joined = c.lab.host(2).must(&format!(
        "{} cluster join {manager_token} --local {} --state-dir {} --json",
        vxnet_bin().display(),
        c.underlay(2),
        second.display()
    ));
    let second_id: Value = serde_json::from_str(&joined).unwrap();
    let out = c.cli_json(0, "cluster leave");
    assert_eq!(out["node_id"], ids[0].as_str());
    let mut nodes: Vec<String> = c.store_keys("nodes/").into_keys().collect();
    let mut expected = vec![
        ids[1].clone(),
        second_id["node_id"].as_str().unwrap().to_string(),
    ];
    nodes.sort();
    expected.sort();
    assert_eq!(nodes, expected);
}

#[test]
fn the_last_manager_leaves_only_with_force() {
    let Some(c) = lab("last_manager_leaves_with_force", 10) else {
        return;
    };
    let worker = c.cli_json(
        1,
        &format!("cluster join {} --local {}", c.worker_token, c.underlay(1)),
    );
    let manager = node_id(&c, 0);
    assert_cli_error(&c.cli(0, "cluster leave"), "last manager");
    assert!(c.store_keys("nodes/").contains_key(&manager));
    assert!(c.state_dir(0).join("state.json").exists());
    let out = c.cli_json(0, "cluster leave --force");
    assert_eq!(out["node_id"], manager.as_str());
    let nodes: Vec<String> = c.store_keys("nodes/").into_keys().collect();
    assert_eq!(nodes, [worker["node_id"].as_str().unwrap()]);
    assert!(!c.state_dir(0).join("state.json").exists());
}

#[test]
fn leave_with_the_store_unreachable_keeps_the_state() {
    let Some(mut c) = lab("leave_with_the_store_unreachable", 10) else {
        return;
    };
    let joined = c.cli_json(
        1,
        &format!("cluster join {} --local {}", c.worker_token, c.underlay(1)),
    );
    let node1 = joined["node_id"].as_str().unwrap().to_string();
    let snapshot = |c: &ClusterLab| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(c.state_dir(1))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let before = snapshot(&c);
    assert!(before.contains_key("state.json"), "{:?}", before.keys());

    c.etcd.kill();
    let t = Instant::now();
    assert_cli_error(&c.cli(1, "cluster leave"), "unreachable");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(snapshot(&c), before, "state dir changed");

    // The intact state dir still leaves once the store is back.
    c.etcd.restart();
    let out = c.cli_json(1, "cluster leave");
    assert_eq!(out["node_id"], node1.as_str());
    assert_eq!(out["node_record"], true);
    assert!(!c.store_keys("nodes/").contains_key(&node1));
    assert_cli_error(&c.cli(1, "cluster leave"), "no cluster state");
    // Joining again is the same node (the node id is kept).
    let again = c.cli_json(1, &format!("cluster join {}", c.worker_token));
    assert_eq!(again["node_id"], node1.as_str());
}

#[test]
fn a_host_removed_while_cut_off_does_not_come_back() {
    // A short lease, so host 2 stops being live soon after it loses the store.
    let Some(mut c) = lab("removed_while_cut_off", 3) else {
        return;
    };
    c.create("blue", "--subnet 10.1.0.0/24");
    for i in 0..ENGINES {
        c.join(i, "");
    }
    c.wait_full_mesh("blue", Duration::from_secs(5));
    let node2 = node_id(&c, 2);

    // Cut host 2 off from etcd only (the overlay to the other hosts stays up).
    let etcd_ip = c.lab.host(ETCD_HOST).underlay;
    c.lab
        .host(2)
        .must(&format!("ip route add blackhole {etcd_ip}/32"));
    assert!(
        wait_for(Duration::from_secs(15), || !c
            .store_keys("members/")
            .contains_key(&node2)),
        "host 2's lease never expired"
    );
    let out = c.cli_json(0, &format!("cluster rm {node2}"));
    assert_eq!(out["node_id"], node2.as_str());

    // Back in touch with the store, it must not register again: it stops with a reason.
    c.lab
        .host(2)
        .must(&format!("ip route del blackhole {etcd_ip}/32"));
    let engine = c.engines[2].as_mut().unwrap();
    let mut status = None;
    let exited = wait_for(Duration::from_secs(20), || {
        status = engine.proc.child.try_wait().unwrap();
        status.is_some()
    });
    let log = engine.proc.log_text();
    assert!(exited, "host 2 still runs after its removal:\n{log}");
    assert!(!status.unwrap().success(), "{log}");
    assert!(log.contains("removed from the cluster"), "{log}");
    assert!(!c.store_keys("members/").contains_key(&node2));
    assert!(!c.store_keys("nodes/").contains_key(&node2));
}
