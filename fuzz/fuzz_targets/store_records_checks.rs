//! Records read from the cluster store (etcd): `vxnet_cluster::ClusterView::from_kvs` (the
//! record checks of `vxnet_cluster::records`) over arbitrary keys and values under the cluster
//! prefix, then what the engine link of the `vxnet` binary derives from a view (flood and
//! allow lists, static MACs, TAP names, subnets) and the view's round trip through the state
//! dir's JSON file (`vxnet run` restarts from it when the store is down).
//!
//! Input: records `[kind][key length][key][value length: u16 BE][value]` until the bytes run
//! out; `kind` picks the key's prefix (`nodes/`, `members/`, `networks/`, `macs/`, `vni/`,
//! `ipam/`, `meta`, or another cluster's `members/`).
//!
//! Properties: nothing panics; the view does not depend on the order the records came in (a
//! full read and a watch replay deliver them differently); lists come out sorted without
//! duplicates and without this node; every MAC installed is unicast; every network gets a TAP
//! name the kernel accepts; the view reads back from JSON unchanged.

use std::collections::BTreeMap;
use std::net::IpAddr;

use vxnet::cluster::engine_view::{desired, peer_macs, tap_name};
use vxnet_cluster::{ipam, ClusterView};

const CLUSTER: &str = "c1";
const KINDS: [&str; 8] = [
    "/vxnet/c1/nodes/",
    "/vxnet/c1/members/",
    "/vxnet/c1/networks/",
    "/vxnet/c1/macs/",
    "/vxnet/c1/vni/",
    "/vxnet/c1/ipam/",
    "/vxnet/c1/meta",
    "/vxnet/c2/members/",
];
/// IFNAMSIZ - 1.
const IFNAME_MAX: usize = 15;

/// The records of an input, in input order (a later record of the same key overrides).
pub fn records(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while let [kind, key_len, rest @ ..] = data {
        let Some((key, rest)) = rest.split_at_checked(usize::from(*key_len)) else {
            break;
        };
        let Some(([a, b], rest)) = rest.split_first_chunk::<2>().map(|(l, r)| (*l, r)) else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([a, b])).min(rest.len());
        let (value, rest) = rest.split_at(len);
        let key = format!(
            "{}{}",
            KINDS[usize::from(*kind) % KINDS.len()],
            String::from_utf8_lossy(key)
        );
        out.push((key, value.to_vec()));
        data = rest;
    }
    out
}

fn view<'a>(kvs: impl IntoIterator<Item = (&'a String, &'a Vec<u8>)>) -> ClusterView {
    ClusterView::from_kvs(
        CLUSTER,
        kvs.into_iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        7,
    )
}

pub fn check(data: &[u8]) {
    // What etcd holds: one value per key.
    let store: BTreeMap<String, Vec<u8>> = records(data).into_iter().collect();
    let forward = view(&store);
    let backward = view(store.iter().rev());
    assert_eq!(
        forward, backward,
        "the view depends on the order of records"
    );
    let v = forward;
    assert_eq!((v.cluster_id.as_str(), v.revision), (CLUSTER, 7));

    assert!(
        v.members.windows(2).all(|w| w[0].node_id < w[1].node_id),
        "members"
    );
    assert!(v.networks.windows(2).all(|w| w[0] < w[1]), "networks");
    assert!(v.alive().all(|m| m.vtep.is_some()));
    let wanted: Vec<String> = v.networks.iter().take(1).map(|n| n.name.clone()).collect();
    assert_eq!(desired(&v, &[]).len(), v.networks.len());
    assert!(desired(&v, &wanted).len() <= 1);

    for n in &v.networks {
        let dev = tap_name(&n.name);
        assert!(
            !dev.is_empty() && dev.len() <= IFNAME_MAX && !dev.contains(['/', ' ', '\0']),
            "network {:?} gets TAP name {dev:?}",
            n.name
        );
        if let Ok(Some(subnet)) = ipam::subnet(n) {
            for ip in ipam::candidates(subnet).take(3) {
                assert!(subnet.contains(&ip));
            }
        }
    }

    // As this node: the first member, or one that is not there.
    let me = v
        .members
        .first()
        .map_or("n0", |m| m.node_id.as_str())
        .to_owned();
    let my_vtep = v.members.first().and_then(|m| m.vtep);
    let allow = v.peer_allow_list(&me);
    assert!(sorted_unique(&allow));
    for n in &v.networks {
        let flood = v.flood_list(n.vni, &me);
        assert!(sorted_unique(&flood), "{flood:?}");
        assert!(
            flood.iter().all(|ip| allow.contains(ip)),
            "flood beyond allow"
        );
        let vtep = my_vtep.unwrap_or(IpAddr::from([10, 0, 0, 1]));
        let macs = peer_macs(&v, n.vni, &me, vtep);
        assert!(macs.windows(2).all(|w| w[0] < w[1]), "{macs:?}");
        assert!(macs.iter().all(|(mac, ip)| mac.is_unicast() && *ip != vtep));
    }

    let json = serde_json::to_vec(&v).expect("a view serialises");
    let back: ClusterView = serde_json::from_slice(&json).expect("a saved view reads back");
    assert_eq!(back, v, "the view changes through the state dir");
}

fn sorted_unique(ips: &[IpAddr]) -> bool {
    ips.windows(2).all(|w| w[0] < w[1])
}
