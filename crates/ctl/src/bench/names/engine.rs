//! One engine's side of M endpoints, weighed: the store mirror and cluster view its membership
//! keeps, and the name and neighbour tables built from them. Built from the same records the
//! hosts publish (without a store, on a fresh heap), so the memory is the engine's alone.

use serde::Serialize;
use vxnet_cluster::records::MemberRecord;
use vxnet_cluster::scoped::{addr_key, endpoint_key, AddressClaim, ClaimKind};
use vxnet_cluster::token::Role;
use vxnet_cluster::view::Mirror;
use vxnet_dataplane::names::NameService;

use super::{draft, endpoint_ip, member::node_record, network, vtep, NETWORK, VNI};

#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct EngineWeight {
    /// Resident memory the mirror, the view and the name tables add, per 1000 endpoints.
    pub(super) rss_kib_per_1000: f64,
    /// Building the cluster view from the mirror: what an engine does on every burst of watch
    /// responses. On-CPU time of the thread, so other load on the machine does not count.
    pub(super) view_ms: f64,
    /// Rebuilding the name and neighbour tables from the view's endpoints (on-CPU time).
    pub(super) names_ms: f64,
    /// Keys and values of a full read of the cluster prefix (what a resync transfers).
    pub(super) full_read_bytes: usize,
}

/// Resident set size of this process, from /proc/self/status.
fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

/// Time this thread has spent on a CPU, from /proc/thread-self/schedstat (its first field, in
/// nanoseconds); 0 where that is not available.
fn cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e6)
}

pub(super) fn weigh(count: usize, hosts: usize) -> EngineWeight {
    let cluster = "weigh";
    let prefix = vxnet_cluster::store::prefix(cluster);
    let node = |k: usize| format!("h{:05}", k % hosts);
    let mut kvs: Vec<(String, Vec<u8>)> = Vec::with_capacity(2 * count + 2 * hosts + 2);
    kvs.push((format!("{prefix}networks/{NETWORK}"), json(&network())));
    kvs.push((format!("{prefix}vni/{VNI}"), NETWORK.as_bytes().to_vec()));
    for i in 0..hosts {
        let id = node(i);
        kvs.push((format!("{prefix}nodes/{id}"), node_record(&id, vtep(i))));
        let member = MemberRecord {
            node_id: id.clone(),
            vtep: vtep(i),
            networks: vec![NETWORK.into()],
            role: Role::Worker,
            updated: 0,
            key_epochs: Default::default(),
        };
        kvs.push((format!("{prefix}members/{id}"), json(&member)));
    }
    for k in 0..count {
        let id = node(k);
        let record = draft(k, &id);
        let claim = AddressClaim {
            node: id.clone(),
            kind: ClaimKind::Endpoint,
            endpoint: Some(record.id.clone()),
        };
        kvs.push((
            format!("{prefix}{}", addr_key(&id, NETWORK, endpoint_ip(k))),
            json(&claim),
        ));
        kvs.push((
            format!("{prefix}{}", endpoint_key(&id, NETWORK, &record.id)),
            json(&record),
        ));
    }
    let full_read_bytes = kvs.iter().map(|(k, v)| k.len() + v.len()).sum();
    let before = rss_kib();
    let mut mirror = Mirror::new(cluster);
    for (rev, (key, value)) in kvs.iter().enumerate() {
        mirror.put(key, value, 1, rev as i64 + 1);
    }
    let started = cpu_ms();
    let view = mirror.view(kvs.len() as i64);
    let view_ms = cpu_ms() - started;
    let names = NameService::new(None);
    names.set_network(NETWORK, "10.64.0.1/16".parse().ok(), Vec::new());
    // As a member that has none of the endpoints.
    let entries = crate::cluster::engine_view::endpoint_names(&view, NETWORK, "");
    let started = cpu_ms();
    names.set_endpoints(NETWORK, entries);
    let names_ms = cpu_ms() - started;
    let after = rss_kib();
    let weight = EngineWeight {
        rss_kib_per_1000: (after - before).max(0.0) / (count as f64 / 1000.0),
        view_ms,
        names_ms,
        full_read_bytes,
    };
    drop((view, mirror, names));
    weight
}

/// A record's JSON, as the hosts write it.
fn json<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}
