//! Address claims and endpoints under node-scoped keys, against a real etcd: two nodes racing
//! for one address (the earlier claim wins, the other moves on), names unique per network,
//! round-robin hand-out, withdrawal, and what every reader's view shows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::collections::BTreeSet;
use std::net::IpAddr;

use cluster_support::*;
use vxnet_cluster::claims::{self, AddressEntry};
use vxnet_cluster::{network, node, ClusterView, EndpointRecord, Error, NetworkDef, Store};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn draft(node: &str, id: &str, name: &str) -> EndpointRecord {
    EndpointRecord {
        id: id.into(),
        name: name.into(),
        aliases: vec!["svc".into()],
        network: String::new(),
        addresses: vec![],
        mac: "02:aa:00:00:00:01".into(),
        node: node.into(),
        container_id: Some(format!("c-{id}")),
        ifname: "eth0".into(),
        since: 1,
    }
}

async fn view(store: &Store) -> ClusterView {
    let (kvs, rev) = store.list("").await.unwrap();
    ClusterView::from_etcd(store.cluster_id(), &kvs, rev)
}

/// A node's store connection, id and a lease for its endpoints.
type Node = (Store, String, i64);

/// Two nodes of one cluster, and network `blue` on `subnet`.
async fn two_nodes(etcd: &Etcd, root: &std::path::Path, subnet: &str) -> (Node, Node, NetworkDef) {
    let dirs = cluster(etcd, root, 1).await;
    let (sa, a) = node::connect(&dirs[0]).await.unwrap();
    let (sb, b) = node::connect(&dirs[1]).await.unwrap();
    let def = network::create(&sa, "blue", None, Some(subnet))
        .await
        .unwrap();
    let (la, lb) = (
        sa.lease_grant(30).await.unwrap(),
        sb.lease_grant(30).await.unwrap(),
    );
    ((sa, a.node_id, la), (sb, b.node_id, lb), def)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_one_address_one_wins_the_other_moves_on() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ((sa, a, la), (sb, b, lb), def) = two_nodes(&etcd, tmp.path(), "10.77.0.0/24").await;

    // The same wanted address at once: exactly one gets it, the other is told who holds it.
    let (da, db) = (draft(&a, "ea", "alpha"), draft(&b, "eb", "beta"));
    let (ra, rb) = tokio::join!(
        claims::publish_endpoint(&sa, &def, la, &da, Some(ip("10.77.0.50"))),
        claims::publish_endpoint(&sb, &def, lb, &db, Some(ip("10.77.0.50"))),
    );
    let (won, lost) = match (&ra, &rb) {
        (Ok(w), Err(e)) | (Err(e), Ok(w)) => (w.clone(), e.to_string()),
        other => panic!("expected one winner: {other:?}"),
    };
    assert_eq!(won.addresses, ["10.77.0.50/24"]);
    assert!(
        lost.contains("10.77.0.50") && lost.contains("taken"),
        "{lost}"
    );

    // Rounds of both taking the next free address at once: never the same one twice, and
    // the loser of each race moves on to another address.
    let mut held = BTreeSet::new();
    held.insert(ip("10.77.0.50"));
    for i in 0..12 {
        let (da, db) = (
            draft(&a, &format!("a{i}"), &format!("a{i}")),
            draft(&b, &format!("b{i}"), &format!("b{i}")),
        );
        let (ra, rb) = tokio::join!(
            claims::publish_endpoint(&sa, &def, la, &da, None),
            claims::publish_endpoint(&sb, &def, lb, &db, None),
        );
        for e in [ra.unwrap(), rb.unwrap()] {
            let got = ip(e.addresses[0].split('/').next().unwrap());
            assert!(held.insert(got), "{got} handed out twice");
        }
    }
    // Every reader sees one owner per address, and every endpoint.
    let v = view(&sa).await;
    let addrs: Vec<&AddressEntry> = v.addresses_in("blue").collect();
    assert_eq!(addrs.len(), held.len(), "{addrs:?}");
    assert_eq!(v.endpoints_in("blue").count(), 25);
    let (from_store, eps) = claims::holders(&sb, &def).await.unwrap();
    assert_eq!(from_store.len(), held.len());
    assert_eq!(eps.len(), 25);

    // A race lost after the write: b's claim on an address a already claimed (written straight
    // into etcd, later) is ignored by every reader, and b's claimer moves past it.
    let p = format!("/vxnet/{}/", sa.cluster_id());
    let taken = won.addresses[0].split('/').next().unwrap().to_string();
    let later = if won.node == a { &b } else { &a };
    etcdctl(
        &etcd.endpoints(),
        &[
            "put",
            &format!("{p}node/{later}/addrs/blue/{taken}"),
            &format!(r#"{{"node":"{later}","kind":"host"}}"#),
        ],
    );
    let v = view(&sa).await;
    let owner = v
        .addresses_in("blue")
        .find(|x| x.address == ip(&taken))
        .unwrap();
    assert_eq!(owner.node, won.node, "a later claim took the address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_addresses_round_robin_and_withdrawal_frees() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ((sa, a, la), (sb, b, lb), def) = two_nodes(&etcd, tmp.path(), "10.78.0.0/29").await;
    let web = claims::publish_endpoint(&sa, &def, la, &draft(&a, "w1", "web"), None)
        .await
        .unwrap();
    assert_eq!(web.addresses, ["10.78.0.1/29"]);
    assert_eq!(
        (web.network.as_str(), web.node.as_str()),
        ("blue", a.as_str())
    );
    // The same endpoint again is the same record (idempotent).
    let again = claims::publish_endpoint(&sa, &def, la, &draft(&a, "w1", "web"), None)
        .await
        .unwrap();
    assert_eq!(again, web);
    // Another node's endpoint may not take the name (DNS is case-insensitive).
    let err = claims::publish_endpoint(&sb, &def, lb, &draft(&b, "w2", "WEB"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::EndpointNameTaken { .. }), "{err}");
    // Nothing of the refused attach is left behind.
    let (addrs, _) = claims::holders(&sa, &def).await.unwrap();
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    // Outside the subnet, or its broadcast address.
    for bad in ["10.78.1.1", "10.78.0.7"] {
        let err = claims::publish_endpoint(&sb, &def, lb, &draft(&b, "w3", "x"), Some(ip(bad)))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::AddressOutsideSubnet { .. }), "{err}");
    }

    // Round-robin: a released address is not the next one handed out.
    let two = claims::publish_endpoint(&sb, &def, lb, &draft(&b, "e2", "two"), None)
        .await
        .unwrap();
    assert_eq!(two.addresses, ["10.78.0.2/29"]);
    let gone = claims::withdraw_endpoint(&sb, &b, "blue", "e2")
        .await
        .unwrap();
    assert_eq!(gone, Some(two));
    assert_eq!(
        claims::withdraw_endpoint(&sb, &b, "blue", "e2")
            .await
            .unwrap(),
        None
    );
    let three = claims::publish_endpoint(&sa, &def, la, &draft(&a, "e3", "three"), None)
        .await
        .unwrap();
    assert_eq!(three.addresses, ["10.78.0.3/29"]);
    // The host address comes from the same pool and the same rule.
    let host = claims::host_address(&sb, &def, &b, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(host.to_string(), "10.78.0.4/29");
    assert_eq!(
        claims::host_address(&sb, &def, &b, None)
            .await
            .unwrap()
            .unwrap(),
        host
    );
    // Fill the /29 (6 host addresses; the released .2 comes round last), then the next attach
    // is told the subnet is full.
    let mut last = Vec::new();
    for n in ["e5", "e6", "e7"] {
        let e = claims::publish_endpoint(&sa, &def, la, &draft(&a, n, n), None)
            .await
            .unwrap();
        last.push(e.addresses[0].clone());
    }
    assert_eq!(last, ["10.78.0.5/29", "10.78.0.6/29", "10.78.0.2/29"]);
    let err = claims::publish_endpoint(&sa, &def, la, &draft(&a, "e9", "e9"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SubnetExhausted { .. }), "{err}");

    // Endpoints live under the publisher's lease.
    sb.lease_revoke(lb).await.unwrap();
    sa.lease_revoke(la).await.unwrap();
    let v = view(&sa).await;
    assert_eq!(v.endpoints_in("blue").count(), 0);
    assert_eq!(
        v.addresses_in("blue")
            .map(|x| x.address)
            .collect::<Vec<_>>(),
        [ip("10.78.0.4")],
        "only the persistent host address stays"
    );

    // `cluster rm` releases everything the node held, everywhere.
    let removed = vxnet_cluster::removal::remove_node(&sa, &b).await.unwrap();
    let freed: Vec<IpAddr> = removed.freed.iter().map(|f| f.address).collect();
    assert_eq!(freed, [ip("10.78.0.4")]);
    assert!(sa
        .list_keys(&format!("node/{b}/"))
        .await
        .unwrap()
        .is_empty());
    // `network rm` releases every node's claims in it: re-created, it starts afresh.
    let host_a = claims::host_address(&sa, &def, &a, None)
        .await
        .unwrap()
        .unwrap();
    network::remove(&sa, "blue", true).await.unwrap();
    assert!(sa
        .list_keys(&format!("node/{a}/addrs/"))
        .await
        .unwrap()
        .is_empty());
    let def = network::create(&sa, "blue", None, Some("10.78.0.0/29"))
        .await
        .unwrap();
    assert!(claims::holders(&sa, &def).await.unwrap().0.is_empty());
    let fresh = claims::host_address(&sa, &def, &a, None)
        .await
        .unwrap()
        .unwrap();
    // Before: the next after the last handed out (.2); after: the first.
    assert_eq!(host_a.to_string(), "10.78.0.3/29");
    assert_eq!(fresh.to_string(), "10.78.0.1/29");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_one_name_one_wins_and_nothing_of_the_other_stays() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ((sa, a, la), (sb, b, lb), def) = two_nodes(&etcd, tmp.path(), "10.79.0.0/24").await;
    for i in 0..8 {
        // Same name (case aside), different endpoints and addresses, at once.
        let name = format!("svc{i}");
        let (da, db) = (
            draft(&a, &format!("a{i}"), &name),
            draft(&b, &format!("b{i}"), &name.to_uppercase()),
        );
        let (ra, rb) = tokio::join!(
            claims::publish_endpoint(&sa, &def, la, &da, None),
            claims::publish_endpoint(&sb, &def, lb, &db, None),
        );
        let won = match (&ra, &rb) {
            (Ok(w), Err(Error::EndpointNameTaken { .. }))
            | (Err(Error::EndpointNameTaken { .. }), Ok(w)) => w.clone(),
            other => panic!("expected one winner of {name}: {other:?}"),
        };
        // Every reader agrees, and the loser left neither claim, record nor name index.
        let v = view(&sa).await;
        let holders: Vec<&EndpointRecord> = v
            .endpoints_in("blue")
            .filter(|e| e.name.eq_ignore_ascii_case(&name))
            .collect();
        assert_eq!(holders, [&won]);
        let (loser, lost_id) = if won.node == a {
            (&b, format!("b{i}"))
        } else {
            (&a, format!("a{i}"))
        };
        let left = sa.list_keys(&format!("node/{loser}/")).await.unwrap();
        assert!(
            left.iter().all(|k| !k.ends_with(&format!("/{lost_id}"))),
            "{left:?}"
        );
    }
    // Withdrawn, the name is free for the other node (its index went with the record).
    let (addrs, eps) = claims::holders(&sa, &def).await.unwrap();
    assert_eq!((addrs.len(), eps.len()), (8, 8));
    let first = eps
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case("svc0"))
        .unwrap();
    let (owner, other, lease) = if first.node == a {
        (&sa, (&sb, &b), lb)
    } else {
        (&sb, (&sa, &a), la)
    };
    claims::withdraw_endpoint(owner, &first.node, "blue", &first.id)
        .await
        .unwrap();
    let again = claims::publish_endpoint(other.0, &def, lease, &draft(other.1, "z0", "svc0"), None)
        .await
        .unwrap();
    assert_eq!(again.name, "svc0");
}

/// Writes `bulk/00000` .. `bulk/{keys-1}` with `value(k)`, 100 keys a transaction (etcd's
/// default limit of operations per transaction is 128).
async fn put_bulk(store: &Store, keys: usize, value: impl Fn(usize) -> Vec<u8>) {
    for chunk in (0..keys).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<etcd_client::TxnOp> = chunk
            .iter()
            .map(|k| etcd_client::TxnOp::put(store.key(&format!("bulk/{k:05}")), value(*k), None))
            .collect();
        store
            .txn(
                vxnet_cluster::store::Retry::Idempotent,
                etcd_client::Txn::new().and_then(ops),
            )
            .await
            .unwrap();
    }
}

/// A full read larger than gRPC's 4 MiB message limit: one unpaged range read of it fails, the
/// store's paged read returns every key, as it was, at one revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_read_beyond_the_grpc_message_limit_comes_back_whole() {
    let Some(etcd) = Etcd::start() else { return };
    let store = Store::connect(&etcd.endpoints(), "big").await.unwrap();
    const KEYS: usize = 6000;
    let value = |k: usize| format!("{k:08}").repeat(128).into_bytes();
    put_bulk(&store, KEYS, value).await;
    let whole = store
        .call(vxnet_cluster::store::Retry::Idempotent, |mut c| {
            let key = store.key("bulk/");
            async move {
                c.get(key, Some(etcd_client::GetOptions::new().with_prefix()))
                    .await
            }
        })
        .await;
    assert!(whole.is_err(), "one range read of ~6 MiB went through");
    let (kvs, revision) = store.list("bulk/").await.unwrap();
    assert_eq!(kvs.len(), KEYS);
    assert!(revision > 0);
    for (k, kv) in kvs.iter().enumerate() {
        assert_eq!(kv.key_str().unwrap(), store.key(&format!("bulk/{k:05}")));
        assert_eq!(kv.value(), value(k).as_slice());
    }
    assert_eq!(store.list_keys("bulk/").await.unwrap().len(), KEYS);
}

/// A full read that etcd compacts under it (`--auto-compaction-retention`, or an operator's
/// `etcdctl compact`) between two pages: the page at the old revision is refused ("required
/// revision has been compacted"), and the store reads the whole range again at the new one
/// rather than failing the resync that needed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_read_compacted_under_it_starts_again() {
    let Some(etcd) = Etcd::start() else { return };
    let store = Store::connect(&etcd.endpoints(), "churn").await.unwrap();
    const KEYS: usize = 5000;
    put_bulk(&store, KEYS, |_| vec![b'x'; 64]).await;
    // Another writer moves the revision on and compacts up to it, ten times a second.
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let compactions = std::sync::Arc::new(AtomicU32::new(0));
    let churn = {
        let (store, stop, compactions) = (store.clone(), stop.clone(), compactions.clone());
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let revision = store
                    .put(&store.key("other/tick"), b"t".to_vec(), None)
                    .await
                    .unwrap();
                store
                    .call(
                        vxnet_cluster::store::Retry::Idempotent,
                        |mut c| async move { c.compact(revision, None).await },
                    )
                    .await
                    .unwrap();
                compactions.fetch_add(1, Relaxed);
                // Often enough that most reads of a few pages meet one, seldom enough that a
                // read started again gets through.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    };
    // At least 20 full reads, and for as long as it takes the store to be compacted 10 times
    // under them (a fast machine reads 20 times in a few compactions).
    let mut reads = 0;
    while reads < 20 || compactions.load(Relaxed) < 10 {
        let (kvs, _) = store.list("bulk/").await.unwrap();
        assert_eq!(kvs.len(), KEYS);
        reads += 1;
        assert!(reads < 1000, "the store was hardly compacted");
    }
    stop.store(true, Relaxed);
    churn.await.unwrap();
}
