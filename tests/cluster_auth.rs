//! Cluster mode on an etcd with authentication on: `cluster init` given etcd's root identity,
//! the manager engine admits the workers that `vxnet run --token` starts, and each worker then
//! serves the network (its overlay address claimed in etcd with its own, restricted etcd user),
//! forwards, and leaves cleanly — while etcd refuses it a network change whatever its state dir
//! says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_lab;

use std::time::Duration;

use cluster_lab::{assert_cli_error, ClusterLab, ENGINES};
use vxnet_tests::wait_for;

#[test]
fn workers_with_their_own_etcd_users_serve_and_leave() {
    let Some(mut c) = ClusterLab::new_authenticated("cl_auth_serve", 10) else {
        return;
    };
    // The manager engine first: it admits the workers, which wait for it.
    c.blue_mesh();
    let ips: Vec<String> = (0..ENGINES).map(|i| c.overlay_ip(i, "blue")).collect();
    let mut unique = ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ENGINES, "{ips:?}");
    for (from, to) in [(1, 2), (2, 0), (0, 1)] {
        assert!(
            wait_for(Duration::from_secs(10), || c
                .lab
                .host(from)
                .ping(&ips[to], 1)),
            "host {from} cannot ping {}",
            ips[to]
        );
    }

    // Each worker runs as its own etcd user, never root.
    for i in 1..ENGINES {
        let state = std::fs::read_to_string(c.state_dir(i).join("state.json")).unwrap();
        assert!(state.contains("-node-"), "{state}");
        assert!(!state.contains("\"root\""), "{state}");
        let pw = std::fs::read_to_string(c.state_dir(i).join("store-password")).unwrap();
        assert_ne!(pw.trim(), "rootpw");
    }

    // A worker claiming to be a manager is refused by etcd.
    let path = c.state_dir(1).join("state.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"worker\"", "\"manager\"")).unwrap();
    assert_cli_error(&c.cli(1, "network create red"), "permission denied");
    assert_cli_error(&c.cli(1, "network rm blue --force"), "permission denied");
    std::fs::write(&path, text).unwrap();

    // SIGTERM: the worker revokes its own lease, so the peers drop it at once.
    c.terminate(2);
    for i in [0, 1] {
        c.wait_peers(i, "blue", &[1 - i], Duration::from_secs(3));
    }
}
