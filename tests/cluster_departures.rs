//! Engines say in their log which member left the cluster and why: a stopped engine's lease
//! ends, a removed node is gone from the cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_lab;

use std::time::Duration;

use cluster_lab::ClusterLab;
use vxnet_tests::wait_for;

#[test]
fn engines_log_who_left_and_why() {
    let Some(mut c) = ClusterLab::new("cluster_departures", 10) else {
        return;
    };
    c.create("blue", "--subnet 10.1.0.0/24");
    for i in 0..2 {
        c.join(i, "");
    }
    c.wait_peers(0, "blue", &[1], Duration::from_secs(5));
    let node1 = c.cli_json(1, "cluster status")["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    c.terminate(1);
    let says = format!("member {node1} left: lease ended");
    let log0 = || c.engines[0].as_ref().unwrap().proc.log_text();
    assert!(
        wait_for(Duration::from_secs(5), || log0().contains(&says)),
        "{says:?} not in host 0's log:\n{}",
        log0()
    );
}
