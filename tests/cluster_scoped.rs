//! Node-scoped store records under attack, and the upgrade from the old layout.
//!
//! A worker's own etcd user tries what the old layout allowed: overwriting another node's MAC
//! record with its own VTEP (the manager would send the victim's traffic to it) and deleting
//! another node's address claim to take the address; and writing or deleting the rest of what
//! the victim writes: its member record (VTEP, acknowledged key epochs), node record, endpoint
//! records (names) and cursor. etcd refuses every one, the squats it may
//! write under its own prefix are ignored by every reader, and the victim keeps its traffic
//! and its address. A cluster laid out by the old version (old roles, old `ipam/` claims) keeps
//! forwarding and its addresses keep their owners.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_lab;

use std::time::Duration;

use cluster_lab::{stderr, ClusterLab, ENGINES, ETCD_HOST};
use serde_json::Value;
use vxnet_tests::wait_for;

const ATTACKER: usize = 1;
const VICTIM: usize = 2;

fn node_id(c: &ClusterLab, i: usize) -> String {
    c.cli_json(i, "cluster status")["node_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn cluster_id(c: &ClusterLab) -> String {
    c.cli_json(0, "cluster status")["view"]["cluster_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `etcdctl ARGS` in the etcd host's namespace as `user` ("root:rootpw", or a node's
/// user:password); no shell, so values need no quoting.
fn etcdctl(c: &ClusterLab, user: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &c.lab.host(ETCD_HOST).ns, "etcdctl"])
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{}:2379", c.underlay(ETCD_HOST)));
    if let Some(u) = user {
        cmd.args(["--user", u]);
    }
    cmd.args(args).output().unwrap()
}

/// Every key and value under the cluster prefix, read as root.
fn dump(c: &ClusterLab, root: Option<&str>, prefix: &str) -> Vec<(String, String)> {
    let out = etcdctl(c, root, &["get", "--prefix", prefix]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .filter(|p| p.len() == 2)
        .map(|p| (p[0].to_string(), p[1].to_string()))
        .collect()
}

/// The owner of `ip` in network blue as the manager's `cluster status --json` shows it.
fn owner(c: &ClusterLab, ip: &str) -> Option<String> {
    let status = c.cli_json(0, "cluster status");
    status["view"]["addresses"]
        .as_array()?
        .iter()
        .find(|a: &&Value| a["network"] == "blue" && a["address"] == ip)
        .map(|a| a["node"].as_str().unwrap().to_string())
}

#[test]
fn a_worker_cannot_take_another_nodes_traffic_or_address() {
    let Some(mut c) = ClusterLab::new_authenticated("cl_scoped_attack", 10) else {
        return;
    };
    let root = Some("root:rootpw");
    let cid = cluster_id(&c);
    let p = format!("/vxnet/{cid}/");
    // The old version's roles: workers could write every node's MACs and address claims. The
    // manager engine moves them to node-scoped grants when it starts.
    for sub in ["macs/", "ipam/"] {
        let role = format!("vxnet-{cid}-worker");
        let key = format!("{p}{sub}");
        let out = etcdctl(
            &c,
            root,
            &[
                "role",
                "grant-permission",
                "--prefix=true",
                &role,
                "readwrite",
                &key,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    c.blue_mesh();
    let victim_ip = c.overlay_ip(VICTIM, "blue");
    assert!(wait_for(Duration::from_secs(10), || c
        .lab
        .host(0)
        .ping(&victim_ip, 1)));
    let (victim, attacker) = (node_id(&c, VICTIM), node_id(&c, ATTACKER));
    let user = std::fs::read_to_string(c.state_dir(ATTACKER).join("state.json")).unwrap();
    let user: Value = serde_json::from_str(&user).unwrap();
    let password = std::fs::read_to_string(c.state_dir(ATTACKER).join("store-password")).unwrap();
    let cred = format!(
        "{}:{}",
        user["store_user"].as_str().unwrap(),
        password.trim()
    );
    let me = Some(cred.as_str());

    // The victim's MAC record and address claim, wherever its version keeps them.
    let all = dump(&c, root, &p);
    let (mac_key, _) = all
        .iter()
        .find(|(k, v)| k.contains("macs/") && v.contains(&victim))
        .expect("the victim publishes its MAC")
        .clone();
    let (claim_key, _) = all
        .iter()
        .find(|(k, v)| {
            k.ends_with(&format!("/blue/{victim_ip}"))
                && (v.contains(&victim) || k.contains(&victim))
        })
        .expect("the victim's address claim")
        .clone();
    let mut tail = mac_key.rsplit('/');
    let (mac, vni) = (tail.next().unwrap(), tail.next().unwrap());
    let forged = format!(
        r#"{{"node_id":"{attacker}","vtep":"{}"}}"#,
        c.underlay(ATTACKER)
    );

    // Overwriting its MAC record (and the old layout's key for that MAC) is refused by etcd.
    for key in [mac_key.clone(), format!("{p}macs/{vni}/{mac}")] {
        let out = etcdctl(&c, me, &["put", &key, &forged]);
        assert!(
            !out.status.success() && stderr(&out).contains("permission denied"),
            "put {key}: {}",
            stderr(&out)
        );
    }
    // So is deleting its address claim, in either layout.
    for key in [claim_key.clone(), format!("{p}ipam/blue/{victim_ip}")] {
        let out = etcdctl(&c, me, &["del", &key]);
        assert!(
            !out.status.success() && stderr(&out).contains("permission denied"),
            "del {key}: {}",
            stderr(&out)
        );
    }
    // Every other record the victim writes is its alone too: its member record (its VTEP and
    // the key epochs it acknowledged: a forged acknowledgement would let a rotation switch keys
    // before the victim has the new one), its node record, and its endpoint records (the names
    // its containers are known by).
    let forged_member = format!(
        r#"{{"node_id":"{victim}","vtep":"{}","networks":["blue"],"key_epochs":{{"blue":99}}}}"#,
        c.underlay(ATTACKER)
    );
    for key in [
        format!("{p}members/{victim}"),
        format!("{p}nodes/{victim}"),
        format!("{p}node/{victim}/endpoints/blue/forged"),
        format!("{p}node/{victim}/cursors/blue"),
    ] {
        for args in [vec!["put", &key, &forged_member], vec!["del", &key]] {
            let out = etcdctl(&c, me, &args);
            assert!(
                !out.status.success() && stderr(&out).contains("permission denied"),
                "{} {key}: {}",
                args[0],
                stderr(&out)
            );
        }
    }
    // What it may write under its own prefix, every reader ignores: a later claim on the
    // victim's address, and the victim's MAC at its own VTEP.
    let own = format!("{p}node/{attacker}/");
    let squat = format!(r#"{{"node":"{attacker}","kind":"host"}}"#);
    let out = etcdctl(
        &c,
        me,
        &["put", &format!("{own}addrs/blue/{victim_ip}"), &squat],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = etcdctl(&c, me, &["put", &format!("{own}macs/{vni}/{mac}"), &forged]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The victim keeps its address and its traffic.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(owner(&c, &victim_ip), Some(victim.clone()));
    assert!(
        c.lab.host(0).ping(&victim_ip, 10),
        "ping to the victim lost; manager log:\n{}",
        c.engine(0).proc.log_text()
    );
    // A node started after the attack does not get the address either.
    let status = c.cli_json(0, "cluster status");
    let holders: Vec<&Value> = status["view"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["address"] == victim_ip.as_str())
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert!((0..ENGINES).all(|i| i == VICTIM || c.overlay_ip(i, "blue") != victim_ip));
}

#[test]
fn a_cluster_laid_out_by_the_old_version_keeps_its_addresses_and_forwards() {
    let Some(mut c) = ClusterLab::new("cl_scoped_upgrade", 10) else {
        return;
    };
    let cid = cluster_id(&c);
    let p = format!("/vxnet/{cid}/");
    c.create("blue", "--subnet 10.1.0.0/24");
    // Every host joins (the engines write nothing yet), then the old version's address claims
    // are written as it wrote them: `ipam/<network>/<ip>` → node id, in the middle of the pool
    // so the new version's round-robin would never pick them by itself.
    for i in 0..ENGINES {
        c.join(i, "");
    }
    c.wait_full_mesh("blue", Duration::from_secs(5));
    let ids: Vec<String> = (0..ENGINES).map(|i| node_id(&c, i)).collect();
    let before: Vec<String> = (0..ENGINES).map(|i| c.overlay_ip(i, "blue")).collect();
    for (i, engine) in c.engines.iter_mut().enumerate() {
        let mut e = engine.take().unwrap();
        assert!(
            e.proc
                .terminate(Duration::from_secs(10))
                .is_some_and(|s| s.success()),
            "host {i}"
        );
    }
    // Replace the new layout's host claims by old-layout ones (as a cluster that never ran the
    // new version has them), older in etcd than anything the new version writes.
    for (i, id) in ids.iter().enumerate() {
        let out = etcdctl(&c, None, &["del", "--prefix", &format!("{p}node/{id}/")]);
        assert!(out.status.success(), "{}", stderr(&out));
        let old = format!("10.1.0.{}", 100 + i);
        let out = etcdctl(&c, None, &["put", &format!("{p}ipam/blue/{old}"), id]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // The upgraded engines start again: each keeps the address the old layout gave it, and
    // they forward.
    for i in 0..ENGINES {
        c.start(i, &format!("up{i}"), "", "");
    }
    c.wait_full_mesh("blue", Duration::from_secs(10));
    for (i, id) in ids.iter().enumerate() {
        let old = format!("10.1.0.{}", 100 + i);
        assert_eq!(
            c.overlay_ip(i, "blue"),
            old,
            "host {i} (before: {})",
            before[i]
        );
        assert_eq!(owner(&c, &old), Some(id.clone()));
    }
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        let ip = format!("10.1.0.{}", 100 + to);
        assert!(
            wait_for(Duration::from_secs(10), || c.lab.host(from).ping(&ip, 1)),
            "host {from} cannot reach {ip}"
        );
    }
    // They wrote nothing in the old layout: MACs are published under their own prefixes.
    let all = dump(&c, None, &p);
    assert!(
        all.iter()
            .all(|(k, _)| !k.starts_with(&format!("{p}macs/"))),
        "{all:?}"
    );
    assert!(all.iter().any(|(k, _)| k.contains("/macs/")));
}
