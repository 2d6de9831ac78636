//! Store records are checked against their keys and ranges: hostile or corrupt records put
//! straight into etcd are left out of every view with one warning each, the CLI keeps working,
//! and the CLI refuses what the view would refuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::collections::BTreeMap;
use std::time::Duration;

use cluster_support::*;

#[test]
fn records_that_disagree_with_their_key_or_range_are_skipped_once() {
    let Some(etcd) = Etcd::start() else { return };
    let root = tempfile::tempdir().unwrap();
    let (m, init) = init_cluster(&etcd, root.path());
    let id = init["cluster_id"].as_str().unwrap().to_string();
    json(&run(
        &m,
        &["network", "create", "blue", "--vni", "4096", "--json"],
    ));

    // Straight into etcd, as an attacker or a broken tool would.
    let p = format!("/vxnet/{id}/");
    let eps = etcd.endpoints();
    let bad: BTreeMap<&str, String> = [
        // The key is the identity: this would replace blue's VNI.
        (
            "networks/zzz",
            r#"{"name":"blue","vni":4096,"subnet":null}"#.to_string(),
        ),
        (
            "networks/huge",
            r#"{"name":"huge","vni":16777216,"subnet":null}"#.to_string(),
        ),
        (
            "networks/zero",
            r#"{"name":"zero","vni":0,"subnet":null}"#.to_string(),
        ),
        (
            "networks/wide",
            r#"{"name":"wide","vni":4100,"subnet":"10.0.0.0/0"}"#.to_string(),
        ),
        ("networks/junk", "{".to_string()),
        (
            "macs/4096/ff:ff:ff:ff:ff:ff",
            r#"{"node_id":"x","vtep":"10.66.0.1"}"#.to_string(),
        ),
    ]
    .into_iter()
    .collect();
    for (k, v) in &bad {
        etcdctl(&eps, &["put", &format!("{p}{k}"), v]);
    }
    etcdctl(&eps, &["put", &format!("{p}vni/4100"), "wide"]);

    // The CLI keeps working around them.
    let ls = json(&run(&m, &["network", "ls", "--json"]));
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["blue"], "{ls}");

    // A member (registered the way `vxnet run` does) sees only valid records, through several
    // view changes.
    let w = WatchProc::spawn(&m, "127.0.0.61", 5);
    assert!(
        w.wait(Duration::from_secs(5), |v| network_names(v) == ["blue"])
            .is_some(),
        "{:?}; stderr:\n{}",
        w.latest(),
        w.stderr()
    );
    for name in ["green", "red"] {
        json(&run(&m, &["network", "create", name, "--json"]));
    }
    assert!(
        w.wait(Duration::from_secs(5), |v| network_names(v)
            == ["blue", "green", "red"])
            .is_some(),
        "{:?}",
        w.latest()
    );
    let views = w.views.lock().unwrap().clone();
    assert!(views.len() >= 3, "expected several view changes: {views:?}");
    for v in &views {
        for n in v["networks"].as_array().unwrap() {
            if n["name"] == "blue" {
                assert_eq!(n["vni"], 4096, "blue's VNI changed: {v}");
            }
        }
        assert!(v["macs"].as_array().unwrap().is_empty(), "{v}");
    }
    drop(w);
    let log = std::fs::read_to_string(m.with_extension("watch-127.0.0.61.log")).unwrap();
    for k in bad.keys() {
        let n = log
            .lines()
            .filter(|l| l.contains("skipping") && l.contains(&format!("{p}{k}")))
            .count();
        assert_eq!(n, 1, "warnings for {k}: {n}; stderr:\n{log}");
    }

    // The CLI refuses what the view refuses.
    assert_cli_error(
        &run(&m, &["network", "create", "any", "--subnet", "10.0.0.0/0"]),
        "invalid subnet",
    );
    assert_cli_error(
        &run(&m, &["network", "create", "any", "--vni", "0"]),
        "out of range",
    );
    // And a bad record can be removed by name.
    let rm = run(&m, &["network", "rm", "zzz"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    assert!(etcdctl(&eps, &["get", &format!("{p}networks/zzz")]).is_empty());
    assert_eq!(
        etcdctl(
            &eps,
            &["get", "--print-value-only", &format!("{p}vni/4096")]
        )
        .trim(),
        "blue",
        "removing the bad record must not free blue's VNI"
    );
}
