//! What this host's engine takes from a cluster view, worked out without touching either: the
//! networks it serves, their TAP and bridge names, the TAP MACs it publishes, the static MACs
//! of the other hosts and the names of the endpoints. The link (`engine_link`) applies them;
//! the fuzz target `store_records` checks the public ones against any view.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sha2::{Digest, Sha256};
use vxnet_cluster::{ClusterView, NetworkDef};
use vxnet_dataplane::names::HostEntry;
use vxnet_encap::MacAddr;

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// The TAP name of a cluster network: `vx-<name>` when that fits in 15 bytes, otherwise
/// `vx.<first 4>.<7 hex of SHA-256(name)>`. Network names are `[A-Za-z0-9._-]`, all valid in
/// interface names; the third byte (`-` or `.`) keeps the two forms from ever colliding.
pub fn tap_name(network: &str) -> String {
    derived_name("vx", network)
}

/// The bridge of a cluster network (bridge mode is the default there): named like the TAP
/// with `vb` for `vx`: `vb-<name>`, or `vb.<first 4>.<7 hex>`.
pub(crate) fn bridge_name(network: &str) -> String {
    derived_name("vb", network)
}

fn derived_name(prefix: &str, network: &str) -> String {
    let short = format!("{prefix}-{network}");
    if short.len() <= IFNAME_MAX {
        return short;
    }
    let hash = hex::encode(Sha256::digest(network.as_bytes()));
    let head: String = network.chars().take(4).collect();
    format!("{prefix}.{head}.{}", &hash[..7])
}

/// A TAP MAC that stays the same across restarts of this node (so peers' ARP caches and
/// static FDB entries stay right) and differs between nodes and networks: a locally
/// administered unicast address from a hash of the cluster, node and network.
pub(crate) fn stable_mac(cluster_id: &str, node_id: &str, network: &str) -> MacAddr {
    MacAddr::derived(format!("{cluster_id}/{node_id}/{network}").as_bytes())
}

/// The networks of `view` this host should serve: the `wanted` ones that exist, or all.
pub fn desired<'a>(view: &'a ClusterView, wanted: &[String]) -> Vec<&'a NetworkDef> {
    view.networks
        .iter()
        .filter(|n| wanted.is_empty() || wanted.contains(&n.name))
        .collect()
}

/// Static MAC entries for `vni`: the other members' published TAP MACs and the MACs of their
/// endpoints (so the first frame to a new container on another host is not flooded). A MAC
/// that two VTEPs would hold gets no entry: it is flooded and learned instead of trusting
/// either.
pub fn peer_macs(
    view: &ClusterView,
    vni: u32,
    self_node: &str,
    self_vtep: IpAddr,
) -> Vec<(MacAddr, IpAddr)> {
    let published = view
        .macs
        .iter()
        .filter(|m| m.vni == vni)
        .map(|m| (m.node_id.as_str(), m.mac.as_str(), Some(m.vtep)));
    let live: BTreeMap<&str, IpAddr> = view
        .alive()
        .filter_map(|m| Some((m.node_id.as_str(), m.vtep?)))
        .collect();
    let endpoints = view
        .network_by_vni(vni)
        .into_iter()
        .flat_map(|net| view.endpoints_in(&net.name))
        .map(|e| {
            (
                e.node.as_str(),
                e.mac.as_str(),
                live.get(e.node.as_str()).copied(),
            )
        });
    let mut out: Vec<(MacAddr, IpAddr)> = published
        .chain(endpoints)
        .filter(|(node, _, _)| *node != self_node)
        .filter_map(|(_, mac, vtep)| Some((mac.parse::<MacAddr>().ok()?, vtep?)))
        .filter(|(mac, vtep)| mac.is_unicast() && *vtep != self_vtep)
        .collect();
    out.sort();
    out.dedup();
    let twice: BTreeSet<MacAddr> = out
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| w[0].0)
        .collect();
    out.retain(|(mac, _)| !twice.contains(mac));
    out
}

/// The names network `name`'s endpoint records give (every host's, those of node `me` marked
/// as this host's).
pub(crate) fn endpoint_names(view: &ClusterView, name: &str, me: &str) -> Vec<HostEntry> {
    view.endpoints_in(name)
        .map(|e| HostEntry {
            name: e.name.clone(),
            aliases: e.aliases.clone(),
            addresses: e.ips().collect(),
            mac: e.mac.parse().ok(),
            here: e.node == me,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vxnet_cluster::{MacEntry, Member};

    #[test]
    fn stable_macs_are_local_unicast_and_distinct() {
        let a = stable_mac("c1", "node-a", "blue");
        assert_eq!(a, stable_mac("c1", "node-a", "blue"));
        assert!(a.is_unicast());
        assert_eq!(a.0[0] & 0x03, 0x02, "locally administered unicast: {a}");
        for other in [
            stable_mac("c1", "node-b", "blue"),
            stable_mac("c1", "node-a", "red"),
            stable_mac("c2", "node-a", "blue"),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn tap_names_fit_and_differ() {
        assert_eq!(tap_name("blue"), "vx-blue");
        assert_eq!(tap_name("twelve-chars"), "vx-twelve-chars");
        let a = tap_name("production-frontend");
        let b = tap_name("production-backend");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("vx.prod."), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, tap_name("production-frontend"));
        for n in ["a", "x.y_z-0", "0123456789abcdef0123", &"n".repeat(64)] {
            let t = tap_name(n);
            assert!(t.len() <= 15 && !t.contains('/') && !t.contains(':') && !t.contains(' '));
        }
    }

    fn view() -> ClusterView {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        ClusterView {
            cluster_id: "c".into(),
            members: vec![
                Member {
                    node_id: "a".into(),
                    vtep: Some(ip("10.0.0.1")),
                    networks: vec!["blue".into()],
                    role: None,
                    alive: true,
                    key_epochs: Default::default(),
                },
                Member {
                    node_id: "b".into(),
                    vtep: Some(ip("10.0.0.2")),
                    networks: vec!["blue".into()],
                    role: None,
                    alive: true,
                    key_epochs: Default::default(),
                },
            ],
            networks: vec![
                NetworkDef {
                    name: "blue".into(),
                    vni: 4096,
                    subnet: None,
                    encrypted: false,
                },
                NetworkDef {
                    name: "red".into(),
                    vni: 4097,
                    subnet: None,
                    encrypted: false,
                },
            ],
            macs: vec![
                MacEntry {
                    vni: 4096,
                    mac: "02:00:00:00:00:01".into(),
                    vtep: ip("10.0.0.1"),
                    node_id: "a".into(),
                },
                MacEntry {
                    vni: 4096,
                    mac: "02:00:00:00:00:02".into(),
                    vtep: ip("10.0.0.2"),
                    node_id: "b".into(),
                },
                MacEntry {
                    vni: 4097,
                    mac: "02:00:00:00:00:03".into(),
                    vtep: ip("10.0.0.2"),
                    node_id: "b".into(),
                },
                MacEntry {
                    vni: 4096,
                    mac: "ff:ff:ff:ff:ff:ff".into(),
                    vtep: ip("10.0.0.2"),
                    node_id: "b".into(),
                },
            ],
            store_healthy: true,
            revision: 1,
            keys: Default::default(),
            ..ClusterView::default()
        }
    }

    #[test]
    fn desired_networks() {
        let v = view();
        let all: Vec<&str> = desired(&v, &[]).iter().map(|n| n.name.as_str()).collect();
        assert_eq!(all, ["blue", "red"]);
        let some: Vec<&str> = desired(&v, &["red".into(), "green".into()])
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(some, ["red"]);
    }

    fn endpoint(node: &str, name: &str, mac: &str) -> vxnet_cluster::EndpointRecord {
        vxnet_cluster::EndpointRecord {
            id: format!("{node}-{name}"),
            name: name.into(),
            aliases: vec!["api".into()],
            network: "blue".into(),
            addresses: vec!["10.1.0.9/24".into()],
            mac: mac.into(),
            node: node.into(),
            container_id: None,
            ifname: "eth0".into(),
            since: 0,
        }
    }

    #[test]
    fn endpoint_macs_point_at_their_live_hosts_and_ambiguous_ones_at_none() {
        let mut v = view();
        v.members.push(Member {
            node_id: "c".into(),
            vtep: Some("10.0.0.3".parse().unwrap()),
            networks: vec!["blue".into()],
            role: None,
            alive: true,
            key_epochs: Default::default(),
        });
        v.endpoints = vec![
            endpoint("b", "web", "02:00:00:00:00:10"),
            // This host's own endpoint: behind the local bridge.
            endpoint("a", "own", "02:00:00:00:00:11"),
            // A host that is not live: nowhere to send to.
            endpoint("gone", "old", "02:00:00:00:00:12"),
            // Host b's TAP MAC claimed by an endpoint on c: ambiguous, neither gets an entry.
            endpoint("c", "dup", "02:00:00:00:00:02"),
        ];
        let macs = peer_macs(&v, 4096, "a", "10.0.0.1".parse().unwrap());
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(macs, vec![("02:00:00:00:00:10".parse().unwrap(), b)]);
        let names = endpoint_names(&v, "blue", "a");
        assert_eq!(names.len(), 4);
        // Only this host's own endpoint answers ARP for itself.
        let here: Vec<&str> = names
            .iter()
            .filter(|n| n.here)
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(here, ["own"]);
        assert_eq!(
            names[0].addresses,
            vec!["10.1.0.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(names[0].aliases, ["api"]);
        assert!(endpoint_names(&v, "red", "a").is_empty());
    }

    #[test]
    fn peer_macs_exclude_own_other_vnis_and_group_addresses() {
        let v = view();
        let macs = peer_macs(&v, 4096, "a", "10.0.0.1".parse().unwrap());
        assert_eq!(
            macs,
            vec![(
                "02:00:00:00:00:02".parse().unwrap(),
                "10.0.0.2".parse().unwrap()
            )]
        );
    }
}
