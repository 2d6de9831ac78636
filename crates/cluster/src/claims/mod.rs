//! Who holds an address, and which endpoint holds a name, when every node writes only under its
//! own prefix (`node/<id>/…`, see [`crate::scoped`]).
//!
//! etcd cannot make a key under one node's prefix exclusive of keys under another's, so
//! uniqueness is decided by order: of all claims on one address of a network, the one with the
//! lowest create revision wins, and every reader ([`resolve`], used by the view and by claimers)
//! ignores the rest, as it ignores claims of nodes not in `nodes/`, of unknown networks and
//! outside the subnet. The same holds for endpoint names in a network. A claimer writes its claim
//! (create-only, on its own key), then reads every node's claims on that address: any earlier
//! one means it lost, and it deletes its own and tries the next address (or reports the address
//! or name taken). No node's user can delete or overwrite another node's claim, and a node that
//! writes claims it did not win only hides them from itself.
//!
//! Claims of the old layout (`ipam/<network>/<ip>` → node id) are read as host claims: they keep
//! the create revisions they were written at, so they keep winning over anything newer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use etcd_client::{GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::ipam;
use super::records::{self, Record};
use super::scoped::{self, AddressClaim, ClaimKind, EndpointRecord};
use super::store::{Retry, Store};
use super::Result;

mod claim;
mod focus;

pub use claim::{holders, host_address, publish_endpoint, reassert_endpoint, withdraw_endpoint};

/// A claimed address, as every reader sees it: the claim that won.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AddressEntry {
    pub network: String,
    pub address: IpAddr,
    pub node: String,
    pub kind: ClaimKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// A record as read, with where it stands in line (its key's create revision).
#[derive(Debug, Clone)]
pub(crate) struct Seen<T> {
    pub(crate) key: String,
    pub(crate) create_revision: i64,
    pub(crate) item: T,
}

impl<T> Seen<T> {
    pub(crate) fn new(key: &str, create_revision: i64, item: T) -> Seen<T> {
        Seen {
            key: key.to_owned(),
            create_revision,
            item,
        }
    }

    /// The order every reader agrees on: create revision, then key (ties only in views built
    /// without revisions).
    fn rank(&self) -> (i64, &str) {
        (self.create_revision, &self.key)
    }
}

/// A claim as decoded: network, address, claim.
pub(crate) type Claim = (String, IpAddr, AddressClaim);

/// What [`resolve`] decided.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// The winning claim of each claimed address, with its key and create revision.
    pub(crate) addresses: Vec<Seen<AddressEntry>>,
    pub(crate) endpoints: Vec<Seen<EndpointRecord>>,
    /// Records that contradict their network (an address outside its subnet): key and reason,
    /// for one warning each. Lost races are not listed: they are normal and withdrawn.
    pub(crate) refused: Vec<(String, String)>,
}

/// The winners among `claims` and `endpoints`: only nodes in `nodes`, only networks in `subnets`
/// that have a subnet, only addresses inside it; the earliest claim of an address; endpoints
/// whose every address they won, and whose name no earlier endpoint of the network holds.
pub(crate) fn resolve(
    nodes: &BTreeSet<&str>,
    subnets: &BTreeMap<&str, IpNet>,
    claims: &[Seen<Claim>],
    endpoints: &[Seen<EndpointRecord>],
) -> Resolved {
    let mut out = Resolved::default();
    let mut winners: BTreeMap<(&str, IpAddr), &Seen<Claim>> = BTreeMap::new();
    for c in claims {
        let (network, ip, claim) = &c.item;
        let Some(subnet) = subnets.get(network.as_str()) else {
            continue;
        };
        if !nodes.contains(claim.node.as_str()) {
            continue;
        }
        if !ipam::is_host_address(*subnet, *ip) {
            out.refused.push((
                c.key.clone(),
                format!("{ip} is not a host address of {subnet}"),
            ));
            continue;
        }
        let slot = winners.entry((network, *ip)).or_insert(c);
        if c.rank() < slot.rank() {
            *slot = c;
        }
    }
    let mut held: Vec<&Seen<EndpointRecord>> = endpoints
        .iter()
        .filter(|e| nodes.contains(e.item.node.as_str()))
        .filter(|e| {
            let Some(subnet) = subnets.get(e.item.network.as_str()) else {
                return false;
            };
            let outside: Vec<String> = e
                .item
                .ips()
                .filter(|ip| !ipam::is_host_address(*subnet, *ip))
                .map(|ip| ip.to_string())
                .collect();
            if !outside.is_empty() {
                out.refused.push((
                    e.key.clone(),
                    format!("{} outside {subnet}", outside.join(",")),
                ));
                return false;
            }
            e.item.ips().count() == e.item.addresses.len()
                && e.item.ips().all(|ip| {
                    winners
                        .get(&(e.item.network.as_str(), ip))
                        .is_some_and(|w| {
                            let claim = &w.item.2;
                            claim.node == e.item.node
                                && claim.kind == ClaimKind::Endpoint
                                && claim.endpoint.as_deref() == Some(e.item.id.as_str())
                        })
                })
        })
        .collect();
    held.sort_by(|a, b| a.rank().cmp(&b.rank()));
    let mut names: BTreeSet<(String, String)> = BTreeSet::new();
    for e in held {
        if names.insert((e.item.network.clone(), e.item.name.to_ascii_lowercase())) {
            out.endpoints.push(e.clone());
        }
    }
    out.addresses = winners
        .into_values()
        .map(|c| Seen {
            key: c.key.clone(),
            create_revision: c.create_revision,
            item: AddressEntry {
                network: c.item.0.clone(),
                address: c.item.1,
                node: c.item.2.node.clone(),
                kind: c.item.2.kind,
                endpoint: c.item.2.endpoint.clone(),
            },
        })
        .collect();
    out
}

/// The ids of the cluster's nodes (`nodes/`): only their claims count.
pub(crate) async fn read_nodes(store: &Store) -> Result<BTreeSet<String>> {
    let prefix = store.prefix();
    let mut nodes = BTreeSet::new();
    for kv in store.list("nodes/").await?.0 {
        let Some(rest) = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)) else {
            continue;
        };
        if let Ok(Some(Record::Node { id, .. })) = records::decode(rest, kv.value()) {
            nodes.insert(id);
        }
    }
    Ok(nodes)
}

/// Runs the reads `ops` in transactions of at most [`TXN_OPS`](super::store::TXN_OPS) and
/// returns every key-value they found.
pub(crate) async fn get_many(store: &Store, ops: Vec<TxnOp>) -> Result<Vec<KeyValue>> {
    let mut out = Vec::new();
    for chunk in ops.chunks(super::store::TXN_OPS) {
        let resp = store
            .txn(Retry::Idempotent, Txn::new().and_then(chunk.to_vec()))
            .await?;
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                out.extend(get.kvs().iter().cloned());
            }
        }
    }
    Ok(out)
}

/// Everything every node holds in one network (or, from [`Holdings::around`], all that decides
/// some addresses and one name), read from the store.
#[derive(Debug, Default)]
pub(crate) struct Holdings {
    nodes: BTreeSet<String>,
    claims: Vec<Seen<Claim>>,
    endpoints: Vec<Seen<EndpointRecord>>,
    /// The address handed out last in the network by any node (round-robin starts after it).
    pub(crate) cursor: Option<IpAddr>,
}

impl Holdings {
    /// Reads the nodes, then every node's claims, endpoints and cursor in `network` and the old
    /// layout's claims (a few transactions of range reads; no scan of other networks). O(N + M):
    /// what listing a network and a crowded subnet need; one claim needs far less
    /// ([`Holdings::around`]).
    pub(crate) async fn read(store: &Store, network: &str) -> Result<Holdings> {
        let mut h = Holdings {
            nodes: read_nodes(store).await?,
            ..Holdings::default()
        };
        let ranged = || Some(GetOptions::new().with_prefix());
        let mut ops = vec![TxnOp::get(store.key(&ipam::prefix(network)), ranged())];
        for n in &h.nodes {
            ops.push(TxnOp::get(
                store.key(&scoped::addrs_prefix(n, network)),
                ranged(),
            ));
            ops.push(TxnOp::get(
                store.key(&scoped::endpoints_prefix(n, network)),
                ranged(),
            ));
            ops.push(TxnOp::get(store.key(&scoped::cursor_key(n, network)), None));
        }
        let mut newest_cursor = 0;
        for kv in get_many(store, ops).await? {
            h.absorb(&store.prefix(), &kv, &mut newest_cursor);
        }
        Ok(h)
    }

    /// Adds one key-value read from the store: a claim, an endpoint, or a cursor (kept when it
    /// is newer than `newest_cursor`). Anything else is ignored.
    fn absorb(&mut self, prefix: &str, kv: &KeyValue, newest_cursor: &mut i64) {
        let Some(rest) = kv.key_str().ok().and_then(|k| k.strip_prefix(prefix)) else {
            return;
        };
        let rev = kv.create_revision();
        if rest.contains("/cursors/") {
            let ip = std::str::from_utf8(kv.value())
                .ok()
                .and_then(|s| s.parse().ok());
            if ip.is_some() && kv.mod_revision() > *newest_cursor {
                *newest_cursor = kv.mod_revision();
                self.cursor = ip;
            }
            return;
        }
        match records::decode(rest, kv.value()) {
            Ok(Some(Record::Claim { network, ip, claim })) => {
                self.claims.push(Seen::new(rest, rev, (network, ip, claim)))
            }
            Ok(Some(Record::Endpoint(e))) => self.endpoints.push(Seen::new(rest, rev, e)),
            Ok(_) => {}
            Err(e) => tracing::warn!(key = rest, error = %e, "skipping invalid store record"),
        }
    }

    pub(crate) fn resolve(&self, network: &str, subnet: IpNet) -> Resolved {
        let nodes = self.nodes.iter().map(String::as_str).collect();
        let subnets = [(network, subnet)].into_iter().collect();
        resolve(&nodes, &subnets, &self.claims, &self.endpoints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(key: &str, rev: i64, ip: &str, node: &str, ep: Option<&str>) -> Seen<Claim> {
        let kind = if ep.is_some() {
            ClaimKind::Endpoint
        } else {
            ClaimKind::Host
        };
        Seen::new(
            key,
            rev,
            (
                "blue".into(),
                ip.parse().unwrap(),
                AddressClaim {
                    node: node.into(),
                    kind,
                    endpoint: ep.map(Into::into),
                },
            ),
        )
    }

    fn endpoint(rev: i64, node: &str, id: &str, name: &str, addr: &str) -> Seen<EndpointRecord> {
        Seen::new(
            &format!("node/{node}/endpoints/blue/{id}"),
            rev,
            EndpointRecord {
                id: id.into(),
                name: name.into(),
                aliases: vec![],
                network: "blue".into(),
                addresses: vec![addr.into()],
                mac: "02:00:00:00:00:01".into(),
                node: node.into(),
                container_id: None,
                ifname: "eth0".into(),
                since: 0,
            },
        )
    }

    #[test]
    fn the_earliest_claim_wins_and_others_are_ignored() {
        let nodes: BTreeSet<&str> = ["a", "b"].into_iter().collect();
        let subnets = [("blue", "10.1.0.0/24".parse().unwrap())]
            .into_iter()
            .collect();
        let claims = vec![
            // b claimed .5 first; a's later claim loses.
            claim(
                "node/a/addrs/blue/10.1.0.5",
                12,
                "10.1.0.5",
                "a",
                Some("ea"),
            ),
            claim(
                "node/b/addrs/blue/10.1.0.5",
                10,
                "10.1.0.5",
                "b",
                Some("eb"),
            ),
            // The old layout's claim is older than b's new one: a keeps .7.
            claim("ipam/blue/10.1.0.7", 3, "10.1.0.7", "a", None),
            claim("node/b/addrs/blue/10.1.0.7", 20, "10.1.0.7", "b", None),
            // A node not in `nodes/` (removed) holds nothing.
            claim(
                "node/ghost/addrs/blue/10.1.0.9",
                1,
                "10.1.0.9",
                "ghost",
                None,
            ),
            // Outside the subnet, and its broadcast address.
            claim("node/a/addrs/blue/10.2.0.1", 1, "10.2.0.1", "a", None),
            claim("node/a/addrs/blue/10.1.0.255", 1, "10.1.0.255", "a", None),
            // a's endpoint on .6, won.
            claim(
                "node/a/addrs/blue/10.1.0.6",
                11,
                "10.1.0.6",
                "a",
                Some("ea2"),
            ),
        ];
        let endpoints = vec![
            endpoint(12, "a", "ea", "lost-address", "10.1.0.5/24"),
            endpoint(10, "b", "eb", "web", "10.1.0.5/24"),
            // Its address won but b's earlier endpoint holds the name (case-insensitively).
            endpoint(11, "a", "ea2", "WEB", "10.1.0.6/24"),
            endpoint(1, "a", "ex", "outside", "10.2.0.1/24"),
        ];
        let r = resolve(&nodes, &subnets, &claims, &endpoints);
        let owners: Vec<(String, &str)> = r
            .addresses
            .iter()
            .map(|a| (a.item.address.to_string(), a.item.node.as_str()))
            .collect();
        assert_eq!(
            owners,
            [
                ("10.1.0.5".to_string(), "b"),
                ("10.1.0.6".to_string(), "a"),
                ("10.1.0.7".to_string(), "a")
            ]
        );
        let names: Vec<&str> = r.endpoints.iter().map(|e| e.item.name.as_str()).collect();
        assert_eq!(names, ["web"]);
        let refused: BTreeSet<&str> = r.refused.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            refused,
            [
                "node/a/addrs/blue/10.2.0.1",
                "node/a/addrs/blue/10.1.0.255",
                "node/a/endpoints/blue/ex"
            ]
            .into_iter()
            .collect()
        );
        // The order records arrive in does not matter.
        let mut rev_claims = claims.clone();
        rev_claims.reverse();
        let again = resolve(&nodes, &subnets, &rev_claims, &endpoints);
        assert_eq!(
            again.addresses.iter().map(|a| &a.item).collect::<Vec<_>>(),
            r.addresses.iter().map(|a| &a.item).collect::<Vec<_>>()
        );
    }
}
