//! Encrypted networks' keys against a real etcd: created with the network, listed by epoch and
//! never shown, rotated in two phases (the switch waits for every live member's acknowledgement,
//! or for the bounded wait), one rotator at a time, automatic rotation by the managers, and
//! corrupt key records skipped without stopping a member.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::*;
use vxnet_cluster::rotation::{self, RotateOptions};
use vxnet_cluster::state::{NodeState, StateDir};
use vxnet_cluster::{network, node, ClusterView, Membership, MembershipHandle, Store};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The key record of `name` as etcd holds it.
async fn ring(store: &Store, name: &str) -> vxnet_cluster::keyring::NetworkKeys {
    rotation::read(store, name).await.unwrap().0
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A cluster on `etcd` (state dirs below `root`) of a manager, a, and a worker, b, with the
/// encrypted network "sec" rotating its key every `interval`. Returns the state dirs (a's first),
/// the store as a reaches it, a's state and b's.
async fn manager_worker_and_sec(
    etcd: &Etcd,
    root: &Path,
    interval: Duration,
) -> (Vec<StateDir>, Store, NodeState, NodeState) {
    let dirs = cluster(etcd, root, 1).await;
    let (store, a) = node::join_or_resume(&dirs[0], None, None).await.unwrap();
    let (_, b) = node::join_or_resume(&dirs[1], None, None).await.unwrap();
    network::create_with(&store, "sec", None, None, Some(interval))
        .await
        .unwrap();
    (dirs, store, a, b)
}

async fn ack(h: &MembershipHandle, name: &str, epoch: u32) {
    h.set_key_epochs(BTreeMap::from([(name.to_string(), epoch)]))
        .await
        .unwrap();
}

/// What an engine does (crates/ctl's engine link): acknowledge the newest epoch of every ring in
/// each view.
fn auto_ack(h: Arc<MembershipHandle>) -> tokio::task::JoinHandle<()> {
    let mut rx = h.view();
    tokio::spawn(async move {
        loop {
            let epochs: BTreeMap<String, u32> = rx
                .borrow_and_update()
                .keys
                .iter()
                .map(|(n, r)| (n.clone(), r.newest()))
                .collect();
            let _ = h.set_key_epochs(epochs).await;
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}

#[test]
fn create_list_and_refusals_on_the_cli() {
    let Some(etcd) = Etcd::start() else { return };
    let root = tempfile::tempdir().unwrap();
    let (m, init) = init_cluster(&etcd, root.path());
    let id = init["cluster_id"].as_str().unwrap().to_string();
    let w = state_dir(root.path(), "w");
    let token = init["worker_token"].as_str().unwrap();
    assert!(run(&w, &["cluster", "join", token]).status.success());

    let out = run(
        &m,
        &[
            "network",
            "create",
            "sec",
            "--encrypted",
            "--key-rotation",
            "1h30m",
            "--json",
        ],
    );
    let created = json(&out);
    assert_eq!(created["encrypted"], true, "{created}");
    assert_eq!(created["epoch"], 1, "{created}");
    assert!(
        stderr(&out).contains("warning:") && stderr(&out).contains("in clear"),
        "no plain-store warning: {}",
        stderr(&out)
    );
    json(&run(&m, &["network", "create", "plain", "--json"]));

    // The key is in etcd under the cluster prefix, and nowhere in what the CLI prints.
    let raw = etcdctl(
        &etcd.endpoints(),
        &[
            "get",
            "--print-value-only",
            &format!("/vxnet/{id}/keys/sec"),
        ],
    );
    let rec: serde_json::Value = serde_json::from_str(raw.trim()).unwrap();
    let key = rec["keys"][0]["key"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 64);
    assert_eq!(rec["rotation_secs"], 5400);
    let ls = run(&m, &["network", "ls", "--json"]);
    let text = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(!text.contains(&key), "ls shows the key: {text}");
    let ls = json(&ls);
    let by_name = |n: &str| {
        ls.as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("sec")["epoch"], 1);
    assert_eq!(by_name("sec")["encrypted"], true);
    assert_eq!(by_name("plain")["encrypted"], false);
    assert!(by_name("plain")["epoch"].is_null());
    let table = String::from_utf8_lossy(&run(&m, &["network", "ls"]).stdout).to_string();
    assert!(table.contains("ENCRYPTED"), "{table}");
    assert!(!table.contains(&key));

    // Refusals: one error line each, nothing changed.
    assert_cli_error(&run(&w, &["network", "rotate-key", "sec"]), "manager");
    assert_cli_error(
        &run(&m, &["network", "rotate-key", "plain"]),
        "not encrypted",
    );
    assert_cli_error(&run(&m, &["network", "rotate-key", "nope"]), "no network");
    assert_cli_error(
        &run(&m, &["network", "create", "x", "--key-rotation", "1h"]),
        "--encrypted",
    );
    assert_cli_error(
        &run(
            &m,
            &[
                "network",
                "create",
                "x",
                "--encrypted",
                "--key-rotation",
                "soon",
            ],
        ),
        "invalid duration",
    );

    // With no member serving it, a forced rotation switches at once.
    let rot = json(&run(&m, &["network", "rotate-key", "sec", "--json"]));
    assert_eq!(
        (rot["from"].as_u64(), rot["to"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(by_name_after(&m, "sec")["epoch"], 2);

    // Removing the network removes its keys.
    assert!(run(&m, &["network", "rm", "sec"]).status.success());
    let left = etcdctl(
        &etcd.endpoints(),
        &[
            "get",
            "--prefix",
            "--keys-only",
            &format!("/vxnet/{id}/keys/"),
        ],
    );
    assert!(left.trim().is_empty(), "{left}");
}

fn by_name_after(dir: &std::path::Path, name: &str) -> serde_json::Value {
    let ls = json(&run(dir, &["network", "ls", "--json"]));
    ls.as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_waits_for_every_live_member() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (_, store, a, b) =
        manager_worker_and_sec(&etcd, tmp.path(), Duration::from_secs(3600)).await;
    let ha = Membership::register(&store, &a.node_id, ip("127.0.0.31"), vec!["sec".into()])
        .await
        .unwrap();
    let hb = Membership::register(&store, &b.node_id, ip("127.0.0.32"), vec!["sec".into()])
        .await
        .unwrap();
    // The members see the ring in their views (and only there: never serialised).
    let v: ClusterView = ha.current();
    let r = v.key_ring("sec").expect("ring in the view");
    assert_eq!((r.send, r.pending()), (1, None));
    assert!(!serde_json::to_string(&v)
        .unwrap()
        .contains(&r.keys[0].key.0.to_hex()));
    ack(&ha, "sec", 1).await;
    ack(&hb, "sec", 1).await;

    let opts = RotateOptions {
        ack_timeout: Duration::from_secs(30),
        lock_wait: Duration::from_secs(1),
    };
    let (s2, id) = (store.clone(), a.node_id.clone());
    let o2 = opts.clone();
    let task = tokio::spawn(async move { rotation::rotate(&s2, "sec", &id, &o2).await });

    // Phase 1: epoch 2 is published accept-only, and stays so while anyone has not acked it.
    wait_until(Duration::from_secs(5), "epoch 2 published", || async {
        ring(&store, "sec").await.pending() == Some(2)
    })
    .await;
    let mut rx = hb.view();
    let start = Instant::now();
    while rx
        .borrow_and_update()
        .key_ring("sec")
        .and_then(|r| r.pending())
        != Some(2)
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "member never saw epoch 2"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(ring(&store, "sec").await.send, 1, "switched before any ack");
    ack(&ha, "sec", 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(ring(&store, "sec").await.send, 1, "switched before b's ack");
    assert!(!task.is_finished());

    // Phase 2 after the last ack: send 2, ring {1, 2}.
    ack(&hb, "sec", 2).await;
    let done = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("rotation finishes after the last ack")
        .unwrap()
        .unwrap();
    assert_eq!((done.from, done.to), (1, 2));
    assert_eq!(done.unacknowledged, Vec::<String>::new());
    assert_eq!(done.acknowledged.len(), 2);
    let r = ring(&store, "sec").await;
    assert_eq!(r.send, 2);
    assert_eq!(r.keys.iter().map(|k| k.epoch).collect::<Vec<_>>(), [1, 2]);

    // A live member that never answers delays the switch only for the bounded wait.
    let short = RotateOptions {
        ack_timeout: Duration::from_secs(1),
        ..opts.clone()
    };
    ack(&ha, "sec", 3).await; // a has "seen" 3 early; b stays at 2
    let start = Instant::now();
    let done = rotation::rotate(&store, "sec", &a.node_id, &short)
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert_eq!((done.from, done.to), (2, 3));
    assert_eq!(done.unacknowledged, vec![b.node_id.clone()]);
    let r = ring(&store, "sec").await;
    assert_eq!(r.keys.iter().map(|k| k.epoch).collect::<Vec<_>>(), [2, 3]);

    // A member that leaves is not waited for.
    hb.leave().await;
    ack(&ha, "sec", 4).await;
    let start = Instant::now();
    let done = rotation::rotate(&store, "sec", &a.node_id, &opts)
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(done.unacknowledged, Vec::<String>::new());
    ha.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rotator_at_a_time_and_a_dead_ones_rotation_is_finished() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (_, store, a, b) =
        manager_worker_and_sec(&etcd, tmp.path(), Duration::from_secs(3600)).await;
    // b serves the network and never acknowledges: a's rotation waits its full bound.
    let hb = Membership::register(&store, &b.node_id, ip("127.0.0.42"), vec!["sec".into()])
        .await
        .unwrap();
    let slow = RotateOptions {
        ack_timeout: Duration::from_secs(4),
        lock_wait: Duration::from_secs(0),
    };
    let (s2, id, o2) = (store.clone(), a.node_id.clone(), slow.clone());
    let first = tokio::spawn(async move { rotation::rotate(&s2, "sec", &id, &o2).await });
    wait_until(Duration::from_secs(5), "epoch 2 published", || async {
        ring(&store, "sec").await.pending() == Some(2)
    })
    .await;
    // Another rotator finds the lock taken: rotate-key says who holds it, the automatic one
    // leaves it alone.
    let err = rotation::rotate(&store, "sec", "other", &slow)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&a.node_id) && err.contains("rotating"),
        "{err}"
    );
    assert_eq!(
        rotation::rotate_if_due(&store, "sec", "other", &slow)
            .await
            .unwrap(),
        None
    );
    let done = first.await.unwrap().unwrap();
    assert_eq!((done.from, done.to), (1, 2));

    // A rotator that died after publishing (simulated: publish by hand, no lock held) leaves a
    // pending key; the next rotator finishes that rotation before anything else.
    let (r, rev) = rotation::read(&store, "sec").await.unwrap();
    let key = store.key("keys/sec");
    let next = r.published();
    etcdctl(
        &etcd.endpoints(),
        &["put", &key, &serde_json::to_string(&next).unwrap()],
    );
    assert!(rotation::read(&store, "sec").await.unwrap().1 > rev);
    ack(&hb, "sec", 3).await;
    let done = rotation::rotate_if_due(&store, "sec", &a.node_id, &slow)
        .await
        .unwrap()
        .expect("the half-done rotation is finished");
    assert_eq!((done.from, done.to), (2, 3));
    // Nothing due afterwards (rotation interval 1 h).
    assert_eq!(
        rotation::rotate_if_due(&store, "sec", &a.node_id, &slow)
            .await
            .unwrap(),
        None
    );
    hb.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_rotate_automatically_and_corrupt_rings_are_skipped() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, store, a, b) =
        manager_worker_and_sec(&etcd, tmp.path(), Duration::from_secs(2)).await;
    let ha = Membership::register(&store, &a.node_id, ip("127.0.0.51"), vec!["sec".into()])
        .await
        .unwrap();
    let hb = Membership::register(&store, &b.node_id, ip("127.0.0.52"), vec!["sec".into()])
        .await
        .unwrap();
    let (ha, hb) = (Arc::new(ha), Arc::new(hb));
    let acks = [auto_ack(Arc::clone(&ha)), auto_ack(Arc::clone(&hb))];
    // Both run the automatic rotation, as every `vxnet run` does; only the manager (a) acts.
    let autos = [
        tokio::spawn(rotation::auto(store.clone(), a.node_id.clone(), ha.view())),
        tokio::spawn(rotation::auto(store.clone(), b.node_id.clone(), hb.view())),
    ];
    wait_until(
        Duration::from_secs(20),
        "two automatic rotations",
        || async { ring(&store, "sec").await.send >= 3 },
    )
    .await;
    let r = ring(&store, "sec").await;
    assert!(r.keys.len() <= 3);

    // A corrupt key record: skipped with a warning, members keep running with the ring they had,
    // `network ls` still works, rotations refuse it.
    for a in &autos {
        a.abort();
    }
    let before = ha.current().key_ring("sec").cloned().unwrap();
    etcdctl(
        &etcd.endpoints(),
        &["put", &store.key("keys/sec"), "{not json"],
    );
    let mut rx = ha.view();
    let start = Instant::now();
    while rx.borrow_and_update().key_ring("sec").is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "corrupt ring still in the view"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    }
    assert!(ha.current().network("sec").is_some_and(|n| n.encrypted));
    assert!(ha.failure().is_none());
    assert!(
        rotation::rotate(&store, "sec", &a.node_id, &RotateOptions::default())
            .await
            .unwrap_err()
            .to_string()
            .contains("not valid JSON")
    );
    let ls = json(&run(dirs[0].path(), &["network", "ls", "--json"]));
    assert!(ls[0]["epoch"].is_null(), "{ls}");
    // Put back: the view has the ring again.
    etcdctl(
        &etcd.endpoints(),
        &[
            "put",
            &store.key("keys/sec"),
            &serde_json::to_string(&before).unwrap(),
        ],
    );
    let start = Instant::now();
    while ha.current().key_ring("sec") != Some(&before) {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in acks {
        t.abort();
        let _ = t.await;
    }
    for h in [ha, hb] {
        Arc::try_unwrap(h).unwrap().leave().await;
    }
}

/// `network rotate-key` over a lock record that holds garbage and no lease (a broken tool, a
/// hand edit): no rotator can be alive behind it, so it is taken over at once instead of
/// waiting for a holder that will never let go.
#[test]
fn rotate_key_takes_over_a_corrupt_lock_without_a_lease() {
    let Some(etcd) = Etcd::start() else { return };
    let root = tempfile::tempdir().unwrap();
    let (m, init) = init_cluster(&etcd, root.path());
    let id = init["cluster_id"].as_str().unwrap();
    json(&run(
        &m,
        &["network", "create", "sec", "--encrypted", "--json"],
    ));
    let lock = format!("/vxnet/{id}/locks/keys/sec");
    etcdctl(&etcd.endpoints(), &["put", &lock, "\u{1b}[2J\u{7f}garbage"]);

    let start = Instant::now();
    let child = vxnet()
        .args(["network", "rotate-key", "sec", "--json", "--state-dir"])
        .arg(&m)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (out, _) = output_within(child, Duration::from_secs(20));
    let took = start.elapsed();
    let rot = json(&out);
    assert_eq!(
        (rot["from"].as_u64(), rot["to"].as_u64()),
        (Some(1), Some(2)),
        "{rot}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Released afterwards, like any lock this rotator took.
    assert!(etcdctl(&etcd.endpoints(), &["get", &lock])
        .trim()
        .is_empty());
}
