//! An `--encrypted` cluster network end to end: two engines in namespaces with a real etcd,
//! keys from the store, and `network rotate-key` run twice under continuous traffic: nothing is
//! lost, and afterwards both engines send with the newest epoch (`vxnet sa show --json`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_lab;

use std::time::Duration;

use cluster_lab::{stderr, ClusterLab};
use serde_json::Value;
use vxnet_tests::wait_for;

/// The SA rows of `vxnet sa show --json` (a list, or an object holding one).
fn sa_rows(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o
            .values()
            .filter_map(|x| x.as_array())
            .flatten()
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

/// Epochs of the outbound SAs of `network` that carried packets.
fn out_epochs(c: &ClusterLab, i: usize, network: &str) -> Vec<u64> {
    let mut e: Vec<u64> = sa_rows(&c.engine(i).json("sa show"))
        .iter()
        .filter(|r| r["network"] == network && r["direction"] == "out")
        .filter(|r| r["packets"].as_u64().unwrap_or(0) > 0)
        .filter_map(|r| r["epoch"].as_u64())
        .collect();
    e.sort();
    e.dedup();
    e
}

#[test]
fn key_rotation_under_traffic_loses_nothing() {
    let Some(mut c) = ClusterLab::new("clu_esp_rotate", 10) else {
        return;
    };
    let def = c.create("sec", "--subnet 10.77.0.0/24 --encrypted");
    assert_eq!(def["encrypted"], true, "{def}");
    assert_eq!(def["epoch"], 1, "{def}");
    c.join(0, "");
    c.join(1, "");
    c.wait_peers(0, "sec", &[1], Duration::from_secs(10));
    c.wait_peers(1, "sec", &[0], Duration::from_secs(10));
    let ip1 = c.overlay_ip(1, "sec");
    assert!(
        wait_for(Duration::from_secs(10), || c.lab.host(0).ping(&ip1, 1)),
        "no ping over the encrypted network; logs:\n{}\n{}",
        c.engine(0).proc.log_text(),
        c.engine(1).proc.log_text()
    );
    assert_eq!(out_epochs(&c, 0, "sec"), [1]);

    // 3000 echo requests 5 ms apart (15 s) while the key is rotated twice.
    let rotations = std::thread::scope(|s| {
        let lab = &c.lab;
        let ip = ip1.clone();
        let ping = s.spawn(move || {
            lab.host(0)
                .sh(&format!("ping -q -i 0.005 -c 3000 -W 2 {ip}"))
        });
        std::thread::sleep(Duration::from_secs(2));
        let mut done = Vec::new();
        for _ in 0..2 {
            done.push(c.cli_json(0, "network rotate-key sec"));
            std::thread::sleep(Duration::from_secs(2));
        }
        let out = ping.join().unwrap();
        (done, out)
    });
    let (done, ping) = rotations;
    let text = String::from_utf8_lossy(&ping.stdout).to_string();
    eprintln!(
        "PING during two rotations: {}",
        text.trim().replace('\n', " | ")
    );
    eprintln!("ROTATIONS: {done:?}");
    assert!(
        text.contains("3000 packets transmitted, 3000 received"),
        "packets lost during the rotations: {text}{}",
        stderr(&ping)
    );
    assert_eq!(
        (done[0]["from"].as_u64(), done[0]["to"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        (done[1]["from"].as_u64(), done[1]["to"].as_u64()),
        (Some(2), Some(3))
    );
    for d in &done {
        // Both engines acknowledged each new key before anyone sent with it.
        assert_eq!(d["acknowledged"].as_array().unwrap().len(), 2, "{d}");
        assert!(d["unacknowledged"].as_array().unwrap().is_empty(), "{d}");
    }
    let ls = c.cli_json(1, "network ls");
    assert_eq!(ls[0]["epoch"], 3, "{ls}");

    // Afterwards both engines send with epoch 3 (new SAs after the switch carry traffic).
    assert!(c.lab.host(0).ping(&ip1, 3));
    for i in [0, 1] {
        let epochs = out_epochs(&c, i, "sec");
        assert!(
            epochs.contains(&3),
            "host {i} sends with epochs {epochs:?}: {}",
            c.engine(i).json("sa show")
        );
    }
}
