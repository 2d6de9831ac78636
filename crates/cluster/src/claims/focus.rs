//! The reads of one endpoint claim, bounded by the number of nodes rather than the size of the
//! network: which node's claim on one address is the earliest, and which endpoint holding one
//! name is, are decided from every node's keys for that address and that name only (point reads
//! and one small range read per node, in a few transactions), then by the same [`super::resolve`]
//! every reader uses. Reading the whole network instead costs O(N + M) keys per claim, about
//! 3.5 MB at 10 000 endpoints, which made registering M endpoints O(M · (N + M)).
//!
//! The subset is closed under what `resolve` looks at: every claim on each address asked about,
//! every endpoint of the name asked about (found through the `names/` index written with each
//! endpoint) and of this node's endpoint, and every claim on those endpoints' addresses (an
//! endpoint counts only if it holds all of them). So `resolve` decides those addresses and that
//! name exactly as a reader of the whole store would.

use std::collections::BTreeSet;
use std::net::IpAddr;

use etcd_client::{GetOptions, TxnOp};

use super::{get_many, Holdings};
use crate::ipam;
use crate::scoped;
use crate::store::Store;
use crate::Result;

/// What one claimer asks about.
#[derive(Debug, Default)]
pub(crate) struct Focus<'a> {
    /// Addresses whose claims (every node's) are read.
    pub(crate) ips: Vec<IpAddr>,
    /// A name whose endpoints (every node's) are read.
    pub(crate) name: Option<&'a str>,
    /// One endpoint, by node and id (the claimer's own: published already?).
    pub(crate) own: Option<(&'a str, &'a str)>,
    /// Read every node's cursor too (the newest is where round-robin goes on).
    pub(crate) cursor: bool,
}

impl Holdings {
    /// Reads, for `nodes` (from [`super::read_nodes`]), what decides `focus` in `network`:
    /// O(N) keys, plus the rare endpoints that share the name.
    pub(crate) async fn around(
        store: &Store,
        network: &str,
        nodes: &BTreeSet<String>,
        focus: &Focus<'_>,
    ) -> Result<Holdings> {
        let prefix = store.prefix();
        let mut h = Holdings {
            nodes: nodes.clone(),
            ..Holdings::default()
        };
        let mut ops = claim_reads(store, network, nodes, &focus.ips);
        for n in nodes {
            if let Some(name) = focus.name {
                let names = store.key(&scoped::names_prefix(n, network, name));
                ops.push(TxnOp::get(names, Some(GetOptions::new().with_prefix())));
            }
            if focus.cursor {
                ops.push(TxnOp::get(store.key(&scoped::cursor_key(n, network)), None));
            }
        }
        if let Some((node, id)) = focus.own {
            ops.push(TxnOp::get(
                store.key(&scoped::endpoint_key(node, network, id)),
                None,
            ));
        }
        let mut newest_cursor = 0;
        let mut named: BTreeSet<(String, String)> = BTreeSet::new();
        for kv in get_many(store, ops).await? {
            let key = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix));
            match key.and_then(name_entry) {
                Some(entry) => {
                    named.insert(entry);
                }
                None => h.absorb(&prefix, &kv, &mut newest_cursor),
            }
        }
        // The endpoints the name index points at (not read yet), then the claims on their
        // addresses that are not read yet.
        let have: BTreeSet<(String, String)> = h
            .endpoints
            .iter()
            .map(|e| (e.item.node.clone(), e.item.id.clone()))
            .collect();
        let ops: Vec<TxnOp> = named
            .difference(&have)
            .map(|(node, id)| TxnOp::get(store.key(&scoped::endpoint_key(node, network, id)), None))
            .collect();
        for kv in get_many(store, ops).await? {
            h.absorb(&prefix, &kv, &mut newest_cursor);
        }
        let more: BTreeSet<IpAddr> = h
            .endpoints
            .iter()
            .flat_map(|e| e.item.ips())
            .filter(|ip| !focus.ips.contains(ip))
            .collect();
        let more: Vec<IpAddr> = more.into_iter().collect();
        for kv in get_many(store, claim_reads(store, network, nodes, &more)).await? {
            h.absorb(&prefix, &kv, &mut newest_cursor);
        }
        Ok(h)
    }
}

/// Point reads of every claim on each of `ips`: each node's, and the old layout's.
fn claim_reads(
    store: &Store,
    network: &str,
    nodes: &BTreeSet<String>,
    ips: &[IpAddr],
) -> Vec<TxnOp> {
    let mut ops = Vec::with_capacity(ips.len() * (nodes.len() + 1));
    for ip in ips {
        ops.push(TxnOp::get(
            store.key(&format!("{}{ip}", ipam::prefix(network))),
            None,
        ));
        for n in nodes {
            ops.push(TxnOp::get(
                store.key(&scoped::addr_key(n, network, *ip)),
                None,
            ));
        }
    }
    ops
}

/// `node/<node>/names/<network>/<name>/<id>` → (node, id).
fn name_entry(rest: &str) -> Option<(String, String)> {
    let mut parts = rest.split('/');
    let (Some("node"), Some(node), Some("names")) = (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let id = parts.nth(2)?;
    Some((node.to_owned(), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_index_keys_give_node_and_endpoint() {
        let key = scoped::name_key("n1", "blue", "Web", "e7");
        assert_eq!(key, "node/n1/names/blue/web/e7");
        assert_eq!(name_entry(&key), Some(("n1".into(), "e7".into())));
        assert_eq!(name_entry("node/n1/endpoints/blue/e7"), None);
        assert_eq!(name_entry("node/n1/names/blue/web"), None);
    }
}
