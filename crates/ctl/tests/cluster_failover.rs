//! etcd failover with a real 3-member cluster on loopback: with any one member killed (by PID),
//! every CLI command succeeds, and a network created meanwhile reaches every registered member
//! within a few seconds (watches resume on a live member from the last revision seen).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::*;

/// How soon a change must reach every member with one store member down.
const SERVED_WITHIN: Duration = Duration::from_secs(3);

#[test]
fn one_store_member_down_changes_nothing_for_the_cluster() {
    let Some(mut etcd) = EtcdCluster::start() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let m = state_dir(root.path(), "m");
    let w = state_dir(root.path(), "w");
    let init = json(&run(
        &m,
        &["cluster", "init", "--store", &etcd.url(), "--json"],
    ));
    let token = init["worker_token"].as_str().unwrap().to_string();
    json(&run(&w, &["cluster", "join", &token, "--json"]));
    // Two members registered the way engines do, each watching the cluster.
    let watchers = [
        WatchProc::spawn(&m, "127.0.0.101", 3),
        WatchProc::spawn(&w, "127.0.0.102", 3),
    ];
    for wp in &watchers {
        assert!(wp
            .wait(Duration::from_secs(5), |v| alive_members(v).len() == 2)
            .is_some());
    }

    // Each member in turn: whichever one a watch or a CLI call was using goes away once.
    for victim in 0..etcd.members.len() {
        let pid = etcd.members[victim].pid().unwrap();
        etcd.members[victim].kill();
        eprintln!("killed etcd member m{victim} (pid {pid})");
        let attempts = 4;
        for i in 0..attempts {
            for args in [
                &["network", "ls", "--json"][..],
                &["cluster", "status", "--json"],
            ] {
                let o = run(&m, args);
                assert!(
                    o.status.success(),
                    "m{victim} down, try {i}: vxnet {args:?}: {}",
                    stderr(&o)
                );
                let st = json(&run(&w, &["cluster", "status", "--json"]));
                assert_eq!(st["store"], "healthy", "{st}");
            }
        }
        let rot = json(&run(&m, &["cluster", "rotate", "--worker", "--json"]));
        let j = state_dir(root.path(), &format!("j{victim}"));
        let token = rot["worker_token"].as_str().unwrap();
        json(&run(&j, &["cluster", "join", token, "--json"]));
        json(&run(&j, &["cluster", "leave", "--json"]));

        let name = format!("net{victim}");
        let t0 = Instant::now();
        json(&run(&m, &["network", "create", &name, "--json"]));
        for (i, wp) in watchers.iter().enumerate() {
            let took = wp.wait(SERVED_WITHIN, |v| network_names(v).contains(&name));
            assert!(
                took.is_some(),
                "watcher {i} does not see {name} {SERVED_WITHIN:?} after its creation with m{victim} down; latest {:?}; stderr:\n{}",
                wp.latest(),
                wp.stderr()
            );
        }
        eprintln!(
            "TIMING m{victim} down: {name} seen by both members {:?} after create",
            t0.elapsed()
        );
        let o = run(&m, &["network", "rm", &name, "--force", "--json"]);
        assert!(o.status.success(), "rm: {}", stderr(&o));
        for wp in &watchers {
            assert!(wp
                .wait(SERVED_WITHIN, |v| !network_names(v).contains(&name))
                .is_some());
        }
        etcd.members[victim].restart();
    }
    for wp in &watchers {
        let v = wp.latest().unwrap();
        assert_eq!(alive_members(&v).len(), 2, "{v}");
        assert_eq!(v["store_healthy"], true, "{v}");
    }
}
