//! Membership (the engine's interface) against a real etcd: mutual visibility, lease expiry,
//! network removal guard, MAC publishing, and surviving a store outage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cluster_support::*;
use tokio::sync::watch;
use vxnet_cluster::node;
use vxnet_cluster::{network, ClusterView, Membership, Store};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Waits until `pred` holds for the published view; returns how long it took.
async fn wait_for(
    rx: &mut watch::Receiver<ClusterView>,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&ClusterView) -> bool,
) -> Duration {
    let start = Instant::now();
    let res = tokio::time::timeout(timeout, async {
        loop {
            if pred(&rx.borrow_and_update()) {
                return;
            }
            if rx.changed().await.is_err() {
                panic!("membership task ended while waiting for {what}");
            }
        }
    })
    .await;
    assert!(
        res.is_ok(),
        "timed out waiting for {what}; last view: {:?}",
        *rx.borrow()
    );
    start.elapsed()
}

fn alive_ids(v: &ClusterView) -> Vec<String> {
    v.members
        .iter()
        .filter(|m| m.alive)
        .map(|m| m.node_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_each_other_and_networks_live() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = cluster(&etcd, tmp.path(), 1).await;
    let (store, a) = node::join_or_resume(&dirs[0], None, None).await.unwrap();
    let (_, b) = node::join_or_resume(&dirs[1], None, None).await.unwrap();
    network::create(&store, "blue", None, Some("10.5.0.0/24"))
        .await
        .unwrap();

    let ha = Membership::register(&store, &a.node_id, ip("127.0.0.11"), vec!["blue".into()])
        .await
        .unwrap();
    let hb = Membership::register(&store, &b.node_id, ip("127.0.0.12"), vec!["blue".into()])
        .await
        .unwrap();
    for h in [&ha, &hb] {
        let mut rx = h.view();
        wait_for(&mut rx, Duration::from_secs(5), "both members alive", |v| {
            alive_ids(v).len() == 2
        })
        .await;
        let v = h.current();
        assert!(v.store_healthy);
        let other = if h.node_id() == a.node_id {
            "127.0.0.12"
        } else {
            "127.0.0.11"
        };
        assert_eq!(v.flood_list(4096, h.node_id()), vec![ip(other)]);
        assert_eq!(v.peer_allow_list(h.node_id()), vec![ip(other)]);
    }

    // A network created elsewhere shows up in the views without restart.
    let mut rx = hb.view();
    let t0 = Instant::now();
    network::create(&store, "red", Some(77), None)
        .await
        .unwrap();
    wait_for(&mut rx, Duration::from_secs(5), "red network", |v| {
        v.network("red").is_some()
    })
    .await;
    eprintln!("TIMING network create -> view update: {:?}", t0.elapsed());

    // The served networks follow the engine: a's record changes, and so do the flood lists.
    ha.set_networks(vec!["red".into()]).await.unwrap();
    wait_for(&mut rx, Duration::from_secs(5), "a serves red only", |v| {
        v.flood_list(77, &b.node_id) == vec![ip("127.0.0.11")]
            && v.flood_list(4096, &b.node_id).is_empty()
    })
    .await;
    ha.set_networks(vec!["blue".into()]).await.unwrap();

    // Published MACs reach the peer.
    ha.publish_macs(4096, &[[2, 0, 0, 0, 0, 1]]).await.unwrap();
    wait_for(&mut rx, Duration::from_secs(5), "published mac", |v| {
        v.macs
            .iter()
            .any(|m| m.mac == "02:00:00:00:00:01" && m.vtep == ip("127.0.0.11") && m.vni == 4096)
    })
    .await;

    // rm is refused while a live member serves the network, allowed with force.
    let err = network::remove(&store, "blue", false).await.unwrap_err();
    assert!(err.to_string().contains("still served"), "{err}");
    let out = run(dirs[0].path(), &["network", "rm", "blue"]);
    assert_cli_error(&out, "still served");
    let out = run(dirs[0].path(), &["network", "rm", "blue", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A clean leave removes the member (and its MACs) at once.
    ha.leave().await;
    wait_for(&mut rx, Duration::from_secs(3), "a gone after leave", |v| {
        alive_ids(v) == vec![b.node_id.clone()] && v.macs.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_member_expires_with_its_lease() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = cluster(&etcd, tmp.path(), 1).await;
    let (store, a) = node::join_or_resume(&dirs[0], None, None).await.unwrap();
    let (_, b) = node::join_or_resume(&dirs[1], None, None).await.unwrap();
    let opts = Membership { ttl_secs: 3 };
    let ha = opts
        .start(&store, &a.node_id, ip("127.0.0.21"), vec![])
        .await
        .unwrap();
    let hb = opts
        .start(&store, &b.node_id, ip("127.0.0.22"), vec![])
        .await
        .unwrap();
    let mut rx = ha.view();
    wait_for(&mut rx, Duration::from_secs(5), "b alive", |v| {
        alive_ids(v).len() == 2
    })
    .await;
    // Keep-alives must hold the lease well past its TTL.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(alive_ids(&ha.current()).len(), 2);

    drop(hb); // like a crash: no revoke
    let took = wait_for(&mut rx, Duration::from_secs(10), "b expired", |v| {
        alive_ids(v) == vec![a.node_id.clone()]
    })
    .await;
    eprintln!("TIMING lease expiry detected after {took:?} (ttl 3 s)");
    assert!(
        took >= Duration::from_secs(1),
        "expired too early: {took:?}"
    );
    // The node stays known (joined), just not alive.
    assert!(ha
        .current()
        .members
        .iter()
        .any(|m| m.node_id == b.node_id && !m.alive));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_process_disappears_and_rejoins_from_state() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = cluster(&etcd, tmp.path(), 1).await;
    let (store, a) = node::join_or_resume(&dirs[0], None, None).await.unwrap();
    let ha = Membership::register(&store, &a.node_id, ip("127.0.0.31"), vec![])
        .await
        .unwrap();
    let mut rx = ha.view();

    let spawn = || {
        vxnet()
            .args([
                "cluster",
                "watch",
                "--local",
                "127.0.0.32",
                "--network",
                "blue",
                "--ttl",
                "3",
                "--state-dir",
            ])
            .arg(dirs[1].path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    // The debug subcommand prints the view as JSON lines; its first line includes itself.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let first: ClusterView = serde_json::from_str(&line).unwrap();
    assert!(first
        .members
        .iter()
        .any(|m| m.alive && m.vtep == Some(ip("127.0.0.32"))));
    wait_for(&mut rx, Duration::from_secs(5), "child alive", |v| {
        alive_ids(v).len() == 2
    })
    .await;

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let took = wait_for(&mut rx, Duration::from_secs(10), "killed child gone", |v| {
        alive_ids(v).len() == 1
    })
    .await;
    eprintln!("TIMING SIGKILLed member gone after {took:?} (ttl 3 s)");

    // Restart with the saved state only: no token needed.
    let mut child = spawn();
    wait_for(&mut rx, Duration::from_secs(5), "child back", |v| {
        alive_ids(v).len() == 2
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_node_cannot_register() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = cluster(&etcd, tmp.path(), 0).await;
    let (store, _) = node::join_or_resume(&dirs[0], None, None).await.unwrap();
    let err = Membership::register(&store, "deadbeef", ip("127.0.0.41"), vec![])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a member"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_store_outage_and_resyncs() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = cluster(&etcd, tmp.path(), 1).await;
    let (store, a) = node::join_or_resume(&dirs[0], None, None).await.unwrap();
    let (_, b) = node::join_or_resume(&dirs[1], None, None).await.unwrap();
    network::create(&store, "blue", None, None).await.unwrap();
    let ha = Membership::register(&store, &a.node_id, ip("127.0.0.51"), vec!["blue".into()])
        .await
        .unwrap();
    let hb = Membership::register(&store, &b.node_id, ip("127.0.0.52"), vec!["blue".into()])
        .await
        .unwrap();
    let mut rx = ha.view();
    wait_for(&mut rx, Duration::from_secs(5), "both alive", |v| {
        alive_ids(v).len() == 2
    })
    .await;
    // Cache a healthy status for the degraded case below.
    assert_eq!(
        json(&run(dirs[1].path(), &["cluster", "status", "--json"]))["store"],
        "healthy"
    );

    let lease = ha.lease_id();
    let t0 = Instant::now();
    etcd.kill();
    let took = wait_for(&mut rx, Duration::from_secs(10), "store unhealthy", |v| {
        !v.store_healthy
    })
    .await;
    eprintln!("TIMING store loss noticed after {took:?}");
    // The last known state is kept for forwarding.
    let v = ha.current();
    assert_eq!(alive_ids(&v).len(), 2);
    assert_eq!(v.flood_list(4096, &a.node_id), vec![ip("127.0.0.52")]);
    let st = json(&run(dirs[1].path(), &["cluster", "status", "--json"]));
    assert_eq!(st["store"], "degraded");
    assert_eq!(st["view"]["networks"][0]["name"], "blue");
    let human = stdout(&run(dirs[1].path(), &["cluster", "status"]));
    assert!(human.contains("DEGRADED"), "{human}");

    while t0.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    etcd.restart();
    let t1 = Instant::now();
    // A change made after the store came back is picked up by both members.
    let store2 = Store::connect(&etcd.endpoints(), store.cluster_id())
        .await
        .unwrap();
    network::create(&store2, "late", None, None).await.unwrap();
    for h in [&ha, &hb] {
        let mut rx = h.view();
        wait_for(
            &mut rx,
            Duration::from_secs(15),
            "resync with late network",
            |v| v.store_healthy && v.network("late").is_some() && alive_ids(v).len() == 2,
        )
        .await;
    }
    eprintln!(
        "TIMING recovered and resynchronised {:?} after etcd restart",
        t1.elapsed()
    );
    // Back before its lease expired: the member kept it, so peers never saw it leave.
    assert_eq!(ha.lease_id(), lease);
}
