//! `vxnet cluster watch` beside this node's running engine: without --local it only reads (no
//! lease, no member record), so the engine keeps its registration and keeps running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use cluster_support::*;
use vxnet_cluster::state::StateDir;
use vxnet_cluster::{node, ClusterView, Membership};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_without_local_registers_nothing_and_the_engine_keeps_running() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let vtep: IpAddr = "127.0.0.51".parse().unwrap();
    // The node's engine: registered from the same state dir the watch reads, with the VTEP saved
    // there (as `cluster init --local` saves it).
    let dir = StateDir::new(tmp.path().join("m"));
    node::init(&dir, &etcd.endpoints(), None, Some(vtep))
        .await
        .unwrap();
    let (store, state) = node::join_or_resume(&dir, None, None).await.unwrap();
    assert_eq!(state.local, Some(vtep));
    let engine = Membership { ttl_secs: 3 }
        .start(&store, &state.node_id, vtep, vec![])
        .await
        .unwrap();
    let lease = engine.lease_id();

    let mut child = vxnet()
        .args(["cluster", "watch", "--state-dir"])
        .arg(dir.path())
        .env_remove("VXNET_STATE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let first: ClusterView = serde_json::from_str(&line).unwrap();
    assert!(
        first
            .members
            .iter()
            .any(|m| m.alive && m.vtep == Some(vtep)),
        "{line}"
    );
    // Longer than a registering watch took to displace the engine (about 1.3 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        engine.failure().is_none(),
        "the engine lost its registration: {:?}",
        engine.failure()
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the watch exited on its own"
    );
    // Still the engine's record, under the engine's lease.
    let view = engine.current();
    let me = view
        .members
        .iter()
        .find(|m| m.node_id == state.node_id)
        .expect("member record");
    assert!(me.alive, "{view:?}");
    let key = store.key(&format!("members/{}", state.node_id));
    let (kvs, _) = store
        .list(&format!("members/{}", state.node_id))
        .await
        .unwrap();
    assert_eq!(kvs.len(), 1, "{key}");
    assert_eq!(kvs[0].lease(), lease, "{key} taken over");

    // The watch we started, by its PID.
    let _ = child.kill();
    let _ = child.wait();
    engine.leave().await;
}

/// `vxnet cluster status` shows each node's overlay address per network, and each network's
/// encryption with the key epoch senders use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_overlay_addresses_and_encryption() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = cluster(&etcd, tmp.path(), 0).await;
    let m = dirs[0].path();
    for args in [
        &["network", "create", "blue", "--subnet", "10.61.0.0/24"][..],
        &["network", "create", "vault", "--encrypted"],
    ] {
        let out = run(m, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let (store, state) = node::join_or_resume(&dirs[0], None, None).await.unwrap();
    let blue = store
        .networks()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.name == "blue")
        .unwrap();
    let address = vxnet_cluster::ipam::address_for(&store, &blue, &state.node_id)
        .await
        .unwrap()
        .expect("an address in blue");

    let out = run(m, &["cluster", "status"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let me = text
        .lines()
        .find(|l| l.starts_with(&state.node_id))
        .unwrap_or_else(|| panic!("no member line in {text}"));
    assert!(me.contains(&format!("blue ({})", address.addr())), "{text}");
    let vault = text.lines().find(|l| l.starts_with("vault ")).unwrap();
    assert!(vault.contains("esp, key epoch 1"), "{text}");
    let plain = text.lines().find(|l| l.starts_with("blue ")).unwrap();
    assert!(plain.ends_with("plain"), "{text}");

    let st = json(&run(m, &["cluster", "status", "--json"]));
    assert_eq!(st["key_epochs"]["vault"], 1, "{st}");
    let addresses = st["view"]["addresses"].as_array().unwrap();
    assert!(
        addresses.iter().any(|a| a["network"] == "blue"
            && a["node"] == state.node_id.as_str()
            && a["address"] == address.addr().to_string()),
        "{st}"
    );
}
