//! Self-healing membership against a real etcd: a member's own records that vanish or are
//! changed behind its back come back within one lease period; a second engine with the same node
//! id and another VTEP is refused at start, and a running one whose node is taken over stops with
//! the reason; and no engine ever deletes another engine's record. Hostile writes go straight
//! into etcd with etcdctl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cluster_support::*;
use serde_json::Value;
use vxnet_cluster::{node, Membership};

const TTL: i64 = 3;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn etcdctl_json(eps: &[String], args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-w", "json"]);
    serde_json::from_str(&etcdctl(eps, &all)).unwrap()
}

/// The value (as JSON) and mod revision of `key`, if it exists.
fn get(eps: &[String], key: &str) -> Option<(Value, i64)> {
    let out = etcdctl_json(eps, &["get", key]);
    let rev = out["kvs"].as_array()?.first()?["mod_revision"].as_i64()?;
    let value = etcdctl(eps, &["get", "--print-value-only", key]);
    Some((
        serde_json::from_str(value.trim()).unwrap_or(Value::Null),
        rev,
    ))
}

/// Waits until `key` holds a value newer than `after` for which `pred` holds; returns how long.
fn wait_restored(
    eps: &[String],
    key: &str,
    after: i64,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some((v, rev)) = get(eps, key) {
            if rev > after && pred(&v) {
                return Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn revision(out: &Value) -> i64 {
    out["header"]["revision"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_records_come_back_within_a_lease_period() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = cluster(&etcd, tmp.path(), 0).await;
    let (store, a) = node::join_or_resume(&dirs[0], None, None).await.unwrap();
    let ha = Membership { ttl_secs: TTL }
        .start(&store, &a.node_id, ip("127.0.0.71"), vec![])
        .await
        .unwrap();
    ha.publish_macs(4096, &[[2, 0, 0, 0, 0, 0x71]])
        .await
        .unwrap();
    let eps = etcd.endpoints();
    let p = format!("/vxnet/{}/", a.cluster_id);
    let member = format!("{p}members/{}", a.node_id);
    let mac = format!("{p}node/{}/macs/4096/02:00:00:00:00:71", a.node_id);
    let lease_period = Duration::from_secs(TTL as u64);
    let mine = |v: &Value| v["node_id"] == a.node_id.as_str() && v["vtep"] == "127.0.0.71";

    // Deleted (an operator's etcdctl, a buggy tool): registered again.
    let del = revision(&etcdctl_json(&eps, &["del", &member]));
    let took = wait_restored(&eps, &member, del, lease_period, mine);
    assert!(
        took.is_some(),
        "member record not restored within {lease_period:?}"
    );
    eprintln!("TIMING member record restored after {took:?}");

    // Overwritten to redirect the node's traffic, then deleted: the MAC comes back each time.
    let put = revision(&etcdctl_json(
        &eps,
        &["put", &mac, r#"{"node_id":"evil","vtep":"10.66.0.1"}"#],
    ));
    let took = wait_restored(&eps, &mac, put, lease_period, mine);
    assert!(took.is_some(), "overwritten MAC record not restored");
    let del = revision(&etcdctl_json(&eps, &["del", &mac]));
    let took = wait_restored(&eps, &mac, del, lease_period, mine);
    assert!(took.is_some(), "deleted MAC record not restored");
    eprintln!("TIMING MAC record restored after {took:?}");

    // Still the same lease: the records are under it, so a crash still expires them.
    let (_, rev) = get(&eps, &member).unwrap();
    let kv = etcdctl_json(&eps, &["get", &member]);
    assert_eq!(
        kv["kvs"][0]["lease"].as_i64().unwrap(),
        ha.lease_id(),
        "{kv}"
    );
    assert!(rev > 0);
    ha.leave().await;
    assert!(
        get(&eps, &member).is_none(),
        "a clean leave removes the record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_of_one_node_is_refused() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = cluster(&etcd, tmp.path(), 0).await;
    let (store, a) = node::join_or_resume(&dirs[0], None, None).await.unwrap();
    let ha = Membership { ttl_secs: TTL }
        .start(&store, &a.node_id, ip("127.0.0.81"), vec![])
        .await
        .unwrap();
    let err = Membership { ttl_secs: TTL }
        .start(&store, &a.node_id, ip("127.0.0.82"), vec![])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("already registered by another running engine with VTEP 127.0.0.81"),
        "{err}"
    );
    // The first keeps its record, under its lease.
    let eps = etcd.endpoints();
    let member = format!("/vxnet/{}/members/{}", a.cluster_id, a.node_id);
    let (v, _) = get(&eps, &member).unwrap();
    assert_eq!(v["vtep"], "127.0.0.81");

    // A host cloned with its state dir: the CLI refuses with one error line.
    let clone = tmp.path().join("clone");
    copy_dir(dirs[0].path(), &clone);
    let mut w = WatchProc::spawn(&clone, "127.0.0.83", TTL as u32);
    let exited = wait_exit(&mut w, Duration::from_secs(5));
    assert!(
        exited.is_some_and(|s| !s.success()),
        "a second engine of node {} kept running: {:?}",
        a.node_id,
        w.latest()
    );
    let err = w.stderr();
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: ") && l.contains("already registered")),
        "{err}"
    );
    drop(w);

    // `vxnet run` from the clone refuses before it creates a device or binds a socket.
    let port = free_port().to_string();
    let sock = tmp.path().join("clone.sock");
    let run = vxnet()
        .args([
            "run",
            "--local",
            "127.0.0.84",
            "--network",
            "none-yet",
            "--port",
            &port,
        ])
        .arg("--control")
        .arg(&sock)
        .arg("--state-dir")
        .arg(&clone)
        .env_remove("VXNET_STATE_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (out, exited) = output_within(run, Duration::from_secs(5));
    assert!(
        exited,
        "vxnet run of a second engine of node {} kept running",
        a.node_id
    );
    assert_cli_error(&out, "already registered by another running engine");
    assert!(!sock.exists(), "a control socket was created");

    let (v, _) = get(&eps, &member).unwrap();
    assert_eq!(v["vtep"], "127.0.0.81");
    drop(ha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_node_is_taken_stops_and_deletes_nothing() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = cluster(&etcd, tmp.path(), 0).await;
    let a = vxnet_cluster::state::StateDir::new(dirs[0].path())
        .require()
        .unwrap();
    let eps = etcd.endpoints();
    let member = format!("/vxnet/{}/members/{}", a.cluster_id, a.node_id);
    let mut w = WatchProc::spawn(dirs[0].path(), "127.0.0.85", TTL as u32);
    assert!(w
        .wait(Duration::from_secs(5), |v| alive_members(v)
            == [a.node_id.clone()])
        .is_some());

    // Another live engine (its own lease) registers the node with another VTEP.
    let grant = etcdctl(&eps, &["lease", "grant", "30"]);
    let lease = grant.split_whitespace().nth(1).unwrap().to_string();
    let record = format!(
        r#"{{"node_id":"{}","vtep":"127.0.0.86","networks":[],"role":"manager","updated":0}}"#,
        a.node_id
    );
    etcdctl(
        &eps,
        &["put", &format!("--lease={lease}"), &member, &record],
    );
    let exited = wait_exit(&mut w, Duration::from_secs(TTL as u64 + 2));
    assert!(
        exited.is_some_and(|s| !s.success()),
        "the member kept running beside another engine of its node"
    );
    let err = w.stderr();
    assert!(
        err.lines().any(|l| l.starts_with("error: ")
            && l.contains("already registered by another running engine with VTEP 127.0.0.86")),
        "{err}"
    );
    // Stopping revoked its own lease only: the other engine's record is intact.
    let (v, _) = get(&eps, &member).expect("the other engine's record was deleted");
    assert_eq!(v["vtep"], "127.0.0.86");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawing_a_mac_leaves_another_engines_record() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = cluster(&etcd, tmp.path(), 1).await;
    let (store, a) = node::join_or_resume(&dirs[0], None, None).await.unwrap();
    let (_, b) = node::join_or_resume(&dirs[1], None, None).await.unwrap();
    let ha = Membership { ttl_secs: TTL }
        .start(&store, &a.node_id, ip("127.0.0.91"), vec![])
        .await
        .unwrap();
    let hb = Membership { ttl_secs: TTL }
        .start(&store, &b.node_id, ip("127.0.0.92"), vec![])
        .await
        .unwrap();
    let m = [2, 0, 0, 0, 0, 0x91];
    ha.publish_macs(4096, &[m]).await.unwrap();
    // The MAC moved to b (a VM migrated): b publishes it under its own lease.
    let eps = etcd.endpoints();
    let key = format!("/vxnet/{}/macs/4096/02:00:00:00:00:91", a.cluster_id);
    let record = format!(r#"{{"node_id":"{}","vtep":"127.0.0.92"}}"#, b.node_id);
    etcdctl(
        &eps,
        &[
            "put",
            &format!("--lease={:x}", hb.lease_id()),
            &key,
            &record,
        ],
    );
    ha.publish_macs(4096, &[]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(TTL as u64)).await;
    let (v, _) = get(&eps, &key).expect("a deleted b's MAC record");
    assert_eq!(v["node_id"], b.node_id.as_str());
    ha.leave().await;
    let (v, _) = get(&eps, &key).expect("a's leave deleted b's MAC record");
    assert_eq!(v["node_id"], b.node_id.as_str());
    drop(hb);
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(w: &mut WatchProc, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(s) = w.child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
