//! The cluster view: what every engine acts on — members with their VTEPs and networks, the
//! networks, and the MACs members published — built from the raw keys under the cluster prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::claims::{self, AddressEntry, Seen};
use super::records::{self, MemberRecord, NetworkDef, NetworkKeys, NodeRecord, Record};
use super::scoped::EndpointRecord;
use super::token::Role;
use super::{ipam, store};

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
    /// The newest key epoch its engine holds, per encrypted network it serves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_epochs: BTreeMap<String, u32>,
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
    /// Every claimed address of every network, with its owner (the earliest claim).
    #[serde(default)]
    pub addresses: Vec<AddressEntry>,
    /// Every endpoint whose addresses and name it holds, by network then name.
    #[serde(default)]
    pub endpoints: Vec<EndpointRecord>,
    /// False while the store is unreachable; everything else is then the last known state.
    pub store_healthy: bool,
    /// The etcd revision this view reflects.
    pub revision: i64,
    /// The key ring of each encrypted network. Never serialised: the view is printed by
    /// `cluster watch` and cached in the state dir, and the keys stay in the store.
    #[serde(skip)]
    pub keys: BTreeMap<String, NetworkKeys>,
}

impl ClusterView {
    pub fn network(&self, name: &str) -> Option<&NetworkDef> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The key ring of `name`, if it is an encrypted network with a valid key record.
    pub fn key_ring(&self, name: &str) -> Option<&NetworkKeys> {
        self.network(name).filter(|n| n.encrypted)?;
        self.keys.get(name)
    }

    /// The endpoints of network `name`, as every node sees them.
    pub fn endpoints_in<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a EndpointRecord> {
        self.endpoints.iter().filter(move |e| e.network == name)
    }

    /// The claimed addresses of network `name` and their owners.
    pub fn addresses_in<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a AddressEntry> {
        self.addresses.iter().filter(move |a| a.network == name)
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

    /// Builds a view from the raw keys under the cluster prefix. Records that do not decode or
    /// disagree with their key are skipped (and logged) rather than poisoning the whole view.
    pub fn from_kvs<'a>(
        cluster_id: &str,
        kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        revision: i64,
    ) -> ClusterView {
        let mut mirror = Mirror::new(cluster_id);
        for (key, value) in kvs {
            mirror.put(key, value, 0, 0);
        }
        mirror.view(revision)
    }

    /// [`ClusterView::from_kvs`] for key-values read from etcd, whose create revisions decide
    /// which of two claims on an address wins.
    pub fn from_etcd(
        cluster_id: &str,
        kvs: &[etcd_client::KeyValue],
        revision: i64,
    ) -> ClusterView {
        let mut mirror = Mirror::new(cluster_id);
        for kv in kvs {
            if let Ok(key) = kv.key_str() {
                mirror.put(key, kv.value(), kv.lease(), kv.create_revision());
            }
        }
        mirror.view(revision)
    }
}

/// One mirrored key: its raw value and lease (the membership compares its own records with
/// them), and the record decoded once when the value arrived.
#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    lease: i64,
    /// When the key was created: of two claims on one address, the earlier wins.
    create_revision: i64,
    /// `None`: not part of the view, or invalid (warned about when it arrived).
    record: Option<Record>,
}

/// The keys under one cluster's prefix, each decoded and checked once when it arrives, so a bad
/// record costs one warning, not one per view change.
#[derive(Debug, Clone)]
pub struct Mirror {
    cluster_id: String,
    prefix: String,
    entries: BTreeMap<String, Entry>,
    /// Valid records left out because another record contradicts them (a network whose VNI
    /// another holds, a MAC claimed for a VTEP its node does not have), already warned about.
    contradicted: BTreeSet<String>,
}

impl Mirror {
    pub fn new(cluster_id: &str) -> Mirror {
        Mirror {
            cluster_id: cluster_id.to_owned(),
            prefix: store::prefix(cluster_id),
            entries: BTreeMap::new(),
            contradicted: BTreeSet::new(),
        }
    }

    /// Stores `key` (a full key); a value already mirrored as it is is not decoded again.
    pub fn put(&mut self, key: &str, value: &[u8], lease: i64, create_revision: i64) {
        if let Some(e) = self.entries.get_mut(key) {
            if e.value == value {
                e.lease = lease;
                e.create_revision = create_revision;
                return;
            }
        }
        let record = match key.strip_prefix(&self.prefix) {
            Some(rest) => match records::decode(rest, value) {
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!(key, error = %e, "skipping invalid store record");
                    None
                }
            },
            None => None,
        };
        self.entries.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                lease,
                create_revision,
                record,
            },
        );
    }

    pub fn delete(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Replaces everything with a fresh full read (after a reconnect); unchanged values are
    /// neither decoded nor warned about again.
    pub fn replace_all(&mut self, kvs: impl IntoIterator<Item = (String, Vec<u8>, i64, i64)>) {
        let mut seen = BTreeSet::new();
        for (key, value, lease, create_revision) in kvs {
            self.put(&key, &value, lease, create_revision);
            seen.insert(key);
        }
        self.entries.retain(|k, _| seen.contains(k));
    }

    /// [`replace_all`](Self::replace_all) with the key-values of a read of the whole prefix.
    pub(crate) fn load(&mut self, kvs: Vec<etcd_client::KeyValue>) {
        self.replace_all(kvs.into_iter().filter_map(|kv| {
            Some((
                kv.key_str().ok()?.to_owned(),
                kv.value().to_vec(),
                kv.lease(),
                kv.create_revision(),
            ))
        }));
    }

    /// Applies the events of one watch response; returns the highest revision among them
    /// (0 for none).
    pub(crate) fn apply(&mut self, events: &[etcd_client::Event]) -> i64 {
        let mut revision = 0;
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            revision = revision.max(kv.mod_revision());
            let Ok(key) = kv.key_str() else { continue };
            match ev.event_type() {
                etcd_client::EventType::Put => {
                    self.put(key, kv.value(), kv.lease(), kv.create_revision())
                }
                etcd_client::EventType::Delete => self.delete(key),
            }
        }
        revision
    }

    /// The raw value and lease of `key` (a full key), if mirrored.
    pub fn raw(&self, key: &str) -> Option<(&[u8], i64)> {
        self.entries.get(key).map(|e| (e.value.as_slice(), e.lease))
    }

    /// The view of the records mirrored now.
    pub fn view(&mut self, revision: i64) -> ClusterView {
        let mut nodes: BTreeMap<&str, &NodeRecord> = BTreeMap::new();
        let mut live: BTreeMap<&str, &MemberRecord> = BTreeMap::new();
        let mut defs = Vec::new();
        let mut vni_owner: BTreeMap<u32, &str> = BTreeMap::new();
        let mut mac_records = Vec::new();
        let mut keys = BTreeMap::new();
        let mut claimed = Vec::new();
        let mut endpoint_records = Vec::new();
        for (key, entry) in &self.entries {
            let rev = entry.create_revision;
            match &entry.record {
                None => {}
                Some(Record::Node { id, record }) => {
                    nodes.insert(id, record);
                }
                Some(Record::Member { id, record }) => {
                    live.insert(id, record);
                }
                Some(Record::Network(def)) => defs.push((key, def)),
                Some(Record::VniIndex { vni, name }) => {
                    vni_owner.insert(*vni, name);
                }
                Some(Record::Mac { vni, mac, record }) => {
                    mac_records.push((key, *vni, mac, record))
                }
                Some(Record::Keys(ring)) => {
                    keys.insert(ring.network.clone(), ring.clone());
                }
                Some(Record::Claim { network, ip, claim }) => {
                    claimed.push(Seen::new(key, rev, (network.clone(), *ip, claim.clone())))
                }
                Some(Record::Endpoint(e)) => endpoint_records.push(Seen::new(key, rev, e.clone())),
            }
        }
        let mut contradicted = BTreeSet::new();
        let mut networks = Vec::new();
        for (key, def) in defs {
            // `vni/<vni>` is written with the network in one transaction and decides which
            // network a VNI belongs to; a network it does not name would be a second user.
            if vni_owner.get(&def.vni) == Some(&def.name.as_str()) {
                networks.push(def.clone());
            } else {
                if !self.contradicted.contains(key) {
                    tracing::warn!(
                        key = %key,
                        vni = def.vni,
                        owner = vni_owner.get(&def.vni).copied().unwrap_or("none"),
                        "skipping network record: vni/{} does not name it",
                        def.vni
                    );
                }
                contradicted.insert(key.clone());
            }
        }
        // A MAC every publisher of which is live at the VTEP it names; one that two nodes
        // publish is ambiguous (a squatter or a MAC given twice) and gets no static entry: the
        // engines flood and learn it instead of trusting either.
        let mut publishers: BTreeMap<(u32, &str), Vec<(&String, &records::MacRecord)>> =
            BTreeMap::new();
        for (key, vni, mac, record) in mac_records {
            match live.get(record.node_id.as_str()) {
                Some(m) if m.vtep == record.vtep => publishers
                    .entry((vni, mac.as_str()))
                    .or_default()
                    .push((key, record)),
                Some(m) => {
                    if !self.contradicted.contains(key) {
                        tracing::warn!(
                            key = %key,
                            claimed = %record.vtep,
                            member_vtep = %m.vtep,
                            node = %record.node_id,
                            "skipping MAC record: its VTEP is not its node's"
                        );
                    }
                    contradicted.insert(key.clone());
                }
                // Its node is not (or no longer) live: nothing to send to.
                None => {}
            }
        }
        let mut macs = Vec::new();
        for ((vni, mac), list) in publishers {
            let (_, first) = list[0];
            if list.iter().all(|(_, r)| r.node_id == first.node_id) {
                macs.push(MacEntry {
                    vni,
                    mac: mac.to_owned(),
                    vtep: first.vtep,
                    node_id: first.node_id.clone(),
                });
                continue;
            }
            for (key, r) in list {
                if !self.contradicted.contains(key) {
                    tracing::warn!(key = %key, %mac, vni, node = %r.node_id, "MAC published by more than one node; no static entry for it");
                }
                contradicted.insert(key.clone());
            }
        }
        let subnets: BTreeMap<&str, ipnet::IpNet> = networks
            .iter()
            .filter_map(|n| Some((n.name.as_str(), ipam::subnet(n).ok()??)))
            .collect();
        let node_ids: BTreeSet<&str> = nodes.keys().copied().collect();
        let held = claims::resolve(&node_ids, &subnets, &claimed, &endpoint_records);
        for (key, reason) in held.refused {
            if !self.contradicted.contains(&key) {
                tracing::warn!(key = %key, %reason, "skipping address claim or endpoint");
            }
            contradicted.insert(key);
        }
        let addresses: Vec<AddressEntry> = held.addresses.into_iter().map(|a| a.item).collect();
        let mut endpoints: Vec<EndpointRecord> =
            held.endpoints.into_iter().map(|e| e.item).collect();
        endpoints.sort_by(|a, b| (&a.network, &a.name, &a.id).cmp(&(&b.network, &b.name, &b.id)));
        let mut members: Vec<Member> = live
            .values()
            .map(|m| Member {
                node_id: m.node_id.clone(),
                vtep: Some(m.vtep),
                networks: m.networks.clone(),
                role: Some(m.role),
                alive: true,
                key_epochs: m.key_epochs.clone(),
            })
            .collect();
        members.extend(
            nodes
                .values()
                .filter(|n| !live.contains_key(n.node_id.as_str()))
                .map(|n| Member {
                    node_id: n.node_id.clone(),
                    vtep: n.local,
                    networks: Vec::new(),
                    role: Some(n.role),
                    alive: false,
                    key_epochs: BTreeMap::new(),
                }),
        );
        self.contradicted = contradicted;
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        networks.sort();
        macs.sort_by(|a, b| (a.vni, &a.mac).cmp(&(b.vni, &b.mac)));
        ClusterView {
            cluster_id: self.cluster_id.clone(),
            members,
            networks,
            macs,
            addresses,
            endpoints,
            store_healthy: true,
            revision,
            keys,
        }
    }
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
            key_epochs: Default::default(),
        })
        .unwrap();
        let net = serde_json::to_vec(&NetworkDef {
            name: "blue".into(),
            vni: 4096,
            subnet: None,
            encrypted: false,
        })
        .unwrap();
        let keys = [
            (format!("{p}nodes/b"), node),
            (format!("{p}members/a"), member),
            (format!("{p}networks/blue"), net),
            (format!("{p}vni/4096"), b"blue".to_vec()),
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
    }

    #[test]
    fn records_contradicting_others_are_left_out() {
        let p = store::prefix("c1");
        let net = |name: &str, vni: u32| {
            serde_json::to_vec(&NetworkDef {
                name: name.into(),
                vni,
                subnet: None,
                encrypted: false,
            })
            .unwrap()
        };
        let member = serde_json::to_vec(&MemberRecord {
            node_id: "a".into(),
            vtep: "10.0.0.1".parse().unwrap(),
            networks: vec!["blue".into()],
            role: Role::Manager,
            updated: 0,
            key_epochs: Default::default(),
        })
        .unwrap();
        let mac = |vtep: &str| {
            serde_json::to_vec(&records::MacRecord {
                node_id: "a".into(),
                vtep: vtep.parse().unwrap(),
            })
            .unwrap()
        };
        let mut m = Mirror::new("c1");
        m.put(&format!("{p}networks/blue"), &net("blue", 4096), 0, 0);
        m.put(&format!("{p}vni/4096"), b"blue", 0, 0);
        // Names blue in its content: skipped for disagreeing with its key.
        m.put(&format!("{p}networks/zzz"), &net("blue", 4097), 0, 0);
        // A second network on blue's VNI.
        m.put(&format!("{p}networks/red"), &net("red", 4096), 0, 0);
        // Out of range, and VNI 0.
        m.put(&format!("{p}networks/big"), &net("big", 1 << 24), 0, 0);
        m.put(&format!("{p}networks/zero"), &net("zero", 0), 0, 0);
        m.put(&format!("{p}members/a"), &member, 7, 0);
        m.put(
            &format!("{p}macs/4096/02:00:00:00:00:01"),
            &mac("10.0.0.1"),
            7,
            0,
        );
        // Claims node a's MAC lives at another VTEP: a redirect, not a.
        m.put(
            &format!("{p}macs/4096/02:00:00:00:00:02"),
            &mac("10.0.0.66"),
            0,
            0,
        );
        let v = m.view(9);
        assert_eq!(
            v.networks,
            vec![NetworkDef {
                name: "blue".into(),
                vni: 4096,
                subnet: None,
                encrypted: false
            }]
        );
        let macs: Vec<&str> = v.macs.iter().map(|e| e.mac.as_str()).collect();
        assert_eq!(macs, ["02:00:00:00:00:01"]);
        // The same value again is not decoded again; a changed one is.
        m.put(&format!("{p}networks/zzz"), &net("zzz", 4097), 0, 0);
        m.put(&format!("{p}vni/4097"), b"zzz", 0, 0);
        assert_eq!(m.view(10).networks.len(), 2);
        m.delete(&format!("{p}networks/zzz"));
        assert_eq!(m.view(11).networks.len(), 1);
        assert_eq!(
            m.raw(&format!("{p}members/a")),
            Some((member.as_slice(), 7))
        );
    }

    fn member(id: &str, vtep: &str, alive: bool) -> Member {
        Member {
            node_id: id.into(),
            vtep: Some(vtep.parse().unwrap()),
            networks: Vec::new(),
            role: None,
            alive,
            key_epochs: BTreeMap::new(),
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
