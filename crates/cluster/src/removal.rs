//! Taking a node out of the cluster for good: `vxnet cluster leave` on the node itself and
//! `vxnet cluster rm NODE_ID` on a manager for a node that is gone.
//!
//! A node owns `nodes/<node_id>`, everything under its own prefix `node/<node_id>/` (host
//! address claims and round-robin cursors are persistent; MACs, endpoints and their claims live
//! under its lease) and, in clusters laid out before node-scoped records, the old
//! `ipam/<network>/<ip>` addresses whose value is its id. All of them go in one transaction that
//! only applies while the node is not live and no address changed hands since they were read, so
//! a starting engine can never keep an address that was freed. Every reader ignores records of
//! nodes not in `nodes/` anyway, so what a removed node held is free everywhere at once.

use std::net::IpAddr;

use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp};
use serde::Serialize;

use super::state::StateDir;
use super::store::{Retry, Store};
use super::token::Role;
use super::{node, roles, scoped, Error, Result};

/// Re-reads after a lost race are bounded; each loss means another node changed an allocation.
const ATTEMPTS: usize = 16;

/// An address a removed node held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freed {
    pub network: String,
    pub address: IpAddr,
}

#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub cluster_id: String,
    pub node_id: String,
    /// Whether the store still had the node's record (a node removed with `cluster rm` can still
    /// `leave` to clear its state dir).
    pub node_record: bool,
    pub freed: Vec<Freed>,
}

/// The old layout's `ipam/<network>/<ip>` keys owned by `node_id`, the addresses it claimed
/// under its own prefix, and the revision the old keys were read at.
async fn owned_addresses(store: &Store, node_id: &str) -> Result<(Vec<String>, Vec<Freed>, i64)> {
    let (kvs, rev) = store.list("ipam/").await?;
    let legacy = store.key("ipam/");
    let mut keys = Vec::new();
    let mut freed = Vec::new();
    for kv in kvs.iter().filter(|kv| kv.value() == node_id.as_bytes()) {
        let Some(key) = kv.key_str().ok() else {
            continue;
        };
        if let Some(f) = key.strip_prefix(&legacy).and_then(freed_at) {
            keys.push(key.to_owned());
            freed.push(f);
        }
    }
    let scoped = store.key(&scoped::node_prefix(node_id));
    let (kvs, _) = store
        .list(&format!("{}addrs/", scoped::node_prefix(node_id)))
        .await?;
    for kv in &kvs {
        let rest = kv.key_str().ok().and_then(|k| k.strip_prefix(&scoped));
        if let Some(f) = rest
            .and_then(|r| r.strip_prefix("addrs/"))
            .and_then(freed_at)
        {
            freed.push(f);
        }
    }
    freed.sort_by(|a, b| (&a.network, a.address).cmp(&(&b.network, b.address)));
    freed.dedup();
    Ok((keys, freed, rev))
}

/// The address of a `<network>/<ip>` key tail.
fn freed_at(tail: &str) -> Option<Freed> {
    let (network, ip) = tail.rsplit_once('/')?;
    Some(Freed {
        network: network.to_owned(),
        address: ip.parse().ok()?,
    })
}

/// Deletes `node_id`'s node record and addresses in one transaction; refused while it is live.
pub async fn remove_node(store: &Store, node_id: &str) -> Result<Removed> {
    let node_key = store.key(&format!("nodes/{node_id}"));
    let member_key = store.key(&format!("members/{node_id}"));
    // A worker leaving a cluster laid out by an older version may no longer delete its old
    // `ipam/` keys (only managers may write there now); without them every reader ignores
    // them anyway once its node record is gone, and a manager's `cluster rm` deletes them.
    let mut with_legacy = true;
    for _ in 0..ATTEMPTS {
        let node_record = store.get_raw(&node_key).await?.is_some();
        let (mut legacy, freed, rev) = owned_addresses(store, node_id).await?;
        if !with_legacy {
            legacy.clear();
        }
        let mut ops = vec![
            TxnOp::delete(node_key.clone(), None),
            TxnOp::delete(
                store.key(&scoped::node_prefix(node_id)),
                Some(DeleteOptions::new().with_prefix()),
            ),
        ];
        ops.extend(legacy.iter().map(|k| TxnOp::delete(k.clone(), None)));
        let txn = Txn::new()
            .when([
                Compare::create_revision(member_key.clone(), CompareOp::Equal, 0),
                Compare::mod_revision(store.key("ipam/"), CompareOp::Less, rev + 1).with_prefix(),
            ])
            .and_then(ops);
        let applied = match store.txn(Retry::IfNotSent, txn).await {
            Err(Error::StoreDenied(_)) if !legacy.is_empty() => {
                with_legacy = false;
                continue;
            }
            other => other?.succeeded(),
        };
        if applied {
            return Ok(Removed {
                cluster_id: store.cluster_id().to_owned(),
                node_id: node_id.to_owned(),
                node_record,
                freed,
            });
        }
        if store.get_raw(&member_key).await?.is_some() {
            return Err(Error::NodeLive(node_id.to_owned()));
        }
    }
    Err(Error::Invalid(format!(
        "gave up removing node {node_id} after repeated address changes"
    )))
}

/// `vxnet cluster leave`: frees this node in the store, then forgets the membership locally. The
/// state dir is only touched once the store agreed, so a failure loses nothing. Like `docker swarm
/// leave`, the last manager is kept from stranding the other nodes unless `force`.
pub async fn leave(dir: &StateDir, force: bool) -> Result<Removed> {
    let (store, state) = node::connect(dir).await?;
    if state.role == Role::Manager && !force {
        let others: Vec<_> = store
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.node_id != state.node_id)
            .collect();
        if !others.is_empty() && others.iter().all(|n| n.role != Role::Manager) {
            return Err(Error::LastManager(
                state.node_id,
                state.cluster_id,
                others.len(),
            ));
        }
    }
    let removed = remove_node(&store, &state.node_id).await?;
    dir.forget_membership()?;
    Ok(removed)
}

/// `vxnet cluster rm NODE_ID`, on a manager.
pub async fn rm(dir: &StateDir, node_id: &str) -> Result<Removed> {
    let (store, state) = node::connect(dir).await?;
    if state.role != Role::Manager {
        return Err(Error::NotManager(state.role.to_string()));
    }
    if node_id == state.node_id {
        return Err(Error::Invalid(format!(
            "node {node_id} is this node; use `vxnet cluster leave` instead"
        )));
    }
    let removed = remove_node(&store, node_id).await?;
    if !removed.node_record && removed.freed.is_empty() {
        return Err(Error::NoSuchNode(node_id.to_owned(), state.cluster_id));
    }
    // Its own etcd user goes too, so its credentials stop working. Only the admin identity may
    // do this; otherwise an admitting manager removes the user shortly (see `admission`).
    if let Err(e) = roles::remove_node(&store, node_id).await {
        tracing::debug!(node = node_id, error = %e, "node user left for the admitting manager to remove");
    }
    Ok(removed)
}

/// The freed addresses as one phrase, for the human summary.
pub fn describe(freed: &[Freed]) -> String {
    if freed.is_empty() {
        return "no addresses".into();
    }
    freed
        .iter()
        .map(|f| format!("{} on {}", f.address, f.network))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_lists_addresses() {
        assert_eq!(describe(&[]), "no addresses");
        let f = |n: &str, a: &str| Freed {
            network: n.into(),
            address: a.parse().unwrap(),
        };
        assert_eq!(
            describe(&[f("blue", "10.1.0.3"), f("green", "fd00::2")]),
            "10.1.0.3 on blue, fd00::2 on green"
        );
    }
}
