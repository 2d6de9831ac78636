//! Engines and corrupt store records: a network record that disagrees with its key or is out of
//! range (put straight into etcd) never stops an engine from starting, is not served, and costs
//! one warning in the engine's log however many views follow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_lab;

use std::time::Duration;

use cluster_lab::{ClusterLab, ETCD_HOST};
use vxnet_tests::{have_tool, wait_for};

#[test]
fn engines_start_and_serve_around_bad_records() {
    let test = "engines_start_around_bad_records";
    let Some(mut c) = ClusterLab::new(test, 5) else {
        return;
    };
    if !have_tool(test, "etcdctl") {
        return;
    }
    let blue = c.create("blue", "--subnet 10.1.0.0/24");
    let vni = blue["vni"].as_u64().unwrap();
    let id = c.cli_json(0, "cluster status")["view"]["cluster_id"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = [
        // Out of range: made every restarted engine exit 1 before.
        ("huge", r#"{"name":"huge","vni":16777216,"subnet":null}"#),
        // Names blue: tore blue down and brought it back with another VNI before.
        ("zzz", r#"{"name":"blue","vni":4242,"subnet":null}"#),
    ];
    for (name, value) in bad {
        c.lab.host(ETCD_HOST).must(&format!(
            "etcdctl --endpoints {} put /vxnet/{id}/networks/{name} '{value}'",
            c.etcd.endpoints()[0]
        ));
    }
    c.join(0, "");
    c.join(1, "");
    for i in 0..2 {
        assert!(
            wait_for(Duration::from_secs(5), || c
                .engine(i)
                .ctl("networks")
                .status
                .success()),
            "host {i}'s engine did not start; log:\n{}",
            c.engine(i).proc.log_text()
        );
    }
    c.wait_peers(0, "blue", &[1], Duration::from_secs(5));
    c.wait_peers(1, "blue", &[0], Duration::from_secs(5));
    c.create("green", "");
    for i in 0..2 {
        assert!(
            wait_for(Duration::from_secs(5), || c.served(i, "green").is_some()),
            "host {i} does not serve green; log:\n{}",
            c.engine(i).proc.log_text()
        );
        let nets = c.engine(i).json("networks");
        let served: Vec<(String, u64)> = nets
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap().to_string(),
                    n["vni"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(served.len(), 2, "host {i}: {served:?}");
        assert!(
            served.contains(&("blue".into(), vni)),
            "host {i}: {served:?}"
        );
        let log = c.engine(i).proc.log_text();
        for (name, _) in bad {
            let key = format!("/vxnet/{id}/networks/{name}");
            let n = log
                .lines()
                .filter(|l| l.contains("skipping") && l.contains(&key))
                .count();
            assert_eq!(n, 1, "host {i}: {n} warnings for {key}; log:\n{log}");
        }
    }
}
