//! The cluster view: what every engine acts on — members with their VTEPs and networks, the
//! networks, and the MACs members published — built from the raw keys under the cluster prefix.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::records::{self, MemberRecord, NetworkDef, NodeRecord, Record};
use super::store;
use super::token::Role;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: String,
    /// The VTEP (underlay) address: from the live registration, or for a node that is down, the
    /// `--local` it joined with, if any.
    pub vtep: Option<IpAddr>,
    pub networks: Vec<String>,
    pub role: Option<Role>,
    /// Registered under a live lease right now.
    pub alive: bool,
}

/// A local MAC some member published for a VNI, so peers can install a static FDB entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacEntry {
    pub vni: u32,
    pub mac: String,
    pub vtep: IpAddr,
    pub node_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub cluster_id: String,
    pub members: Vec<Member>,
    pub networks: Vec<NetworkDef>,
    pub macs: Vec<MacEntry>,
    /// False while the store is unreachable; everything else is then the last known state.
    pub store_healthy: bool,
    /// The etcd revision this view reflects.
    pub revision: i64,
}

impl ClusterView {
    pub fn network(&self, name: &str) -> Option<&NetworkDef> {
        self.networks.iter().find(|n| n.name == name)
    }

    pub fn network_by_vni(&self, vni: u32) -> Option<&NetworkDef> {
        self.networks.iter().find(|n| n.vni == vni)
    }

    /// Live members with a known VTEP.
    pub fn alive(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.alive && m.vtep.is_some())
    }

    /// Every live member's VTEP (this host's too), sorted and unique: the addresses a firewall
    /// opens the VXLAN port to.
    pub fn live_vteps(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self.alive().filter_map(|m| m.vtep).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The head-end replication list for `vni`: VTEPs of live members (other than `self_node`)
    /// serving the network that has this VNI.
    pub fn flood_list(&self, vni: u32, self_node: &str) -> Vec<IpAddr> {
        let Some(net) = self.network_by_vni(vni) else {
            return Vec::new();
        };
        let mut out: Vec<IpAddr> = self
            .alive()
            .filter(|m| m.node_id != self_node && m.networks.contains(&net.name))
            .filter_map(|m| m.vtep)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every live member's VTEP: the underlay addresses VXLAN may be accepted from.
    pub fn peer_allow_list(&self, self_node: &str) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .alive()
            .filter(|m| m.node_id != self_node)
            .filter_map(|m| m.vtep)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Builds a view from the raw keys under the cluster prefix. Records that do not decode are
    /// skipped (and logged) rather than poisoning the whole view.
    pub fn from_kvs<'a>(
        cluster_id: &str,
        kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        revision: i64,
    ) -> ClusterView {
        let prefix = store::prefix(cluster_id);
        let mut nodes: BTreeMap<String, NodeRecord> = BTreeMap::new();
        let mut live: BTreeMap<String, MemberRecord> = BTreeMap::new();
        let mut networks = Vec::new();
        let mut macs = Vec::new();
        for (key, value) in kvs {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            match records::decode(rest, value) {
                Ok(None) => {}
                Ok(Some(Record::Node { id, record })) => {
                    nodes.insert(id, record);
                }
                Ok(Some(Record::Member { id, record })) => {
                    live.insert(id, record);
                }
                Ok(Some(Record::Network(def))) => networks.push(def),
                Ok(Some(Record::Mac { vni, mac, record })) => macs.push(MacEntry {
                    vni,
                    mac,
                    vtep: record.vtep,
                    node_id: record.node_id,
                }),
                Err(e) => tracing::warn!(key, error = %e, "skipping corrupt record"),
            }
        }
        let mut members: Vec<Member> = live
            .values()
            .map(|m| Member {
                node_id: m.node_id.clone(),
                vtep: Some(m.vtep),
                networks: m.networks.clone(),
                role: Some(m.role),
                alive: true,
            })
            .collect();
        members.extend(
            nodes
                .values()
                .filter(|n| !live.contains_key(&n.node_id))
                .map(|n| Member {
                    node_id: n.node_id.clone(),
                    vtep: n.local,
                    networks: Vec::new(),
                    role: Some(n.role),
                    alive: false,
                }),
        );
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        networks.sort();
        macs.sort_by(|a, b| (a.vni, &a.mac).cmp(&(b.vni, &b.mac)));
        ClusterView {
            cluster_id: cluster_id.to_owned(),
            members,
            networks,
            macs,
            store_healthy: true,
            revision,
        }
    }
}

/// Formats a MAC the way keys and views carry it.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_from_kvs() {
        let p = store::prefix("c1");
        let node = serde_json::to_vec(&NodeRecord {
            node_id: "b".into(),
            role: Role::Worker,
            local: Some("10.0.0.2".parse().unwrap()),
            joined: 0,
        })
        .unwrap();
        let member = serde_json::to_vec(&MemberRecord {
            node_id: "a".into(),
            vtep: "10.0.0.1".parse().unwrap(),
            networks: vec!["blue".into()],
            role: Role::Manager,
            updated: 0,
        })
        .unwrap();
        let net = serde_json::to_vec(&NetworkDef {
            name: "blue".into(),
            vni: 4096,
            subnet: None,
        })
        .unwrap();
        let keys = [
            (format!("{p}nodes/b"), node),
            (format!("{p}members/a"), member),
            (format!("{p}networks/blue"), net),
            (format!("{p}networks/bad"), b"{".to_vec()),
        ];
        let v = ClusterView::from_kvs(
            "c1",
            keys.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            7,
        );
        assert_eq!(v.members.len(), 2);
        assert!(v.members[0].alive && !v.members[1].alive);
        assert_eq!(v.networks.len(), 1);
        assert_eq!(
            v.flood_list(4096, "x"),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(v.flood_list(4096, "a").is_empty());
        assert_eq!(
            format_mac(&[0, 1, 2, 0xaa, 0xbb, 0xcc]),
            "00:01:02:aa:bb:cc"
        );
    }

    fn member(id: &str, vtep: &str, alive: bool) -> Member {
        Member {
            node_id: id.into(),
            vtep: Some(vtep.parse().unwrap()),
            networks: Vec::new(),
            role: None,
            alive,
        }
    }

    #[test]
    fn live_vteps_are_live_members_with_an_address() {
        let view = ClusterView {
            members: vec![
                member("c", "10.0.0.3", true),
                member("a", "10.0.0.1", true),
                member("d", "10.0.0.4", false),
                Member {
                    vtep: None,
                    ..member("e", "10.0.0.5", true)
                },
                member("b", "fd00::2", true),
                member("f", "10.0.0.1", true),
            ],
            ..ClusterView::default()
        };
        let got: Vec<String> = view.live_vteps().iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.0.0.1", "10.0.0.3", "fd00::2"]);
        assert!(ClusterView::default().live_vteps().is_empty());
    }
}
