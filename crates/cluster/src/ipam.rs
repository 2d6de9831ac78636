//! Host addresses from a network's `--subnet`: one key per address, `ipam/<network>/<ip>` → node
//! id, claimed with a create-only transaction so two nodes can never hold the same address. The
//! keys are persistent, so a node that restarts (same node id) gets the address it had; they are
//! removed with the network, or with the node (`cluster leave`/`cluster rm`, see [`super::removal`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ipnet::IpNet;

use super::records::NetworkDef;
use super::store::{Retry, Store};
use super::{Error, Result};

/// How many addresses of a subnet are tried; plenty for an overlay, and it keeps a /64 finite.
const MAX_CANDIDATES: usize = 1 << 16;

pub fn prefix(network: &str) -> String {
    format!("ipam/{network}/")
}

fn key(network: &str, ip: IpAddr) -> String {
    format!("ipam/{network}/{ip}")
}

/// The subnet of `def`, if it has one that parses.
pub fn subnet(def: &NetworkDef) -> Result<Option<IpNet>> {
    def.subnet
        .as_deref()
        .map(|s| {
            s.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| Error::Invalid(format!("network {}: bad subnet {s:?}", def.name)))
        })
        .transpose()
}

/// Host addresses of `subnet` in order: IPv4 without the network and broadcast addresses (except
/// in /31 and /32), IPv6 without the subnet-router anycast address.
pub fn candidates(subnet: IpNet) -> impl Iterator<Item = IpAddr> {
    let network = subnet.network();
    let skip_network = matches!(subnet, IpNet::V6(_)) && subnet.prefix_len() < 127;
    subnet
        .hosts()
        .filter(move |ip| !(skip_network && *ip == network))
        .take(MAX_CANDIDATES)
}

/// The address `node_id` already holds in `taken`, or the first free candidate.
pub fn choose(subnet: IpNet, taken: &BTreeMap<IpAddr, String>, node_id: &str) -> Option<IpAddr> {
    if let Some((ip, _)) = taken
        .iter()
        .find(|(ip, owner)| *owner == node_id && subnet.contains(*ip))
    {
        return Some(*ip);
    }
    candidates(subnet).find(|ip| !taken.contains_key(ip))
}

async fn allocations(store: &Store, network: &str) -> Result<BTreeMap<IpAddr, String>> {
    let (kvs, _) = store.list(&prefix(network)).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| {
            let ip = kv.key_str().ok()?.rsplit('/').next()?.parse().ok()?;
            Some((ip, String::from_utf8_lossy(kv.value()).into_owned()))
        })
        .collect())
}

/// Claims `ip` for `node_id` unless another node holds it. True when `node_id` holds it now.
pub async fn claim(store: &Store, network: &str, ip: IpAddr, node_id: &str) -> Result<bool> {
    let k = store.key(&key(network, ip));
    let txn = Txn::new()
        .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(k.clone(), node_id, None)]);
    // Retried freely: a claim that was applied unseen reads back as this node's below.
    if store.txn(Retry::Idempotent, txn).await?.succeeded() {
        return Ok(true);
    }
    Ok(store
        .get_raw(&k)
        .await?
        .is_some_and(|kv| kv.value() == node_id.as_bytes()))
}

/// This node's address on `def` (with the subnet's prefix length): the one it held before, or a
/// newly claimed free one. `None` when the network has no subnet.
pub async fn address_for(store: &Store, def: &NetworkDef, node_id: &str) -> Result<Option<IpNet>> {
    let Some(subnet) = subnet(def)? else {
        return Ok(None);
    };
    let mut taken = allocations(store, &def.name).await?;
    // Each lost race means another node took an address; bounded so a broken store cannot spin.
    for _ in 0..64 {
        let ip = choose(subnet, &taken, node_id).ok_or_else(|| {
            Error::Invalid(format!("network {}: no free address in {subnet}", def.name))
        })?;
        if taken.get(&ip).is_some_and(|owner| owner == node_id)
            || claim(store, &def.name, ip, node_id).await?
        {
            let net = IpNet::new(ip, subnet.prefix_len())
                .map_err(|e| Error::Invalid(format!("network {}: {e}", def.name)))?;
            return Ok(Some(net));
        }
        taken = allocations(store, &def.name).await?;
    }
    Err(Error::Invalid(format!(
        "network {}: gave up allocating an address after repeated conflicts",
        def.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn candidates_skip_special_addresses() {
        let v4: Vec<IpAddr> = candidates("10.1.0.0/30".parse().unwrap()).collect();
        assert_eq!(v4, vec![ip("10.1.0.1"), ip("10.1.0.2")]);
        let v6: Vec<IpAddr> = candidates("fd00::/126".parse().unwrap()).collect();
        assert_eq!(v6[0], ip("fd00::1"));
        assert_eq!(candidates("10.1.0.0/16".parse().unwrap()).count(), 65534);
    }

    #[test]
    fn choose_reuses_own_then_first_free() {
        let subnet: IpNet = "10.1.0.0/24".parse().unwrap();
        let mut taken = BTreeMap::new();
        assert_eq!(choose(subnet, &taken, "a"), Some(ip("10.1.0.1")));
        taken.insert(ip("10.1.0.1"), "a".to_string());
        taken.insert(ip("10.1.0.3"), "c".to_string());
        assert_eq!(choose(subnet, &taken, "a"), Some(ip("10.1.0.1")));
        assert_eq!(choose(subnet, &taken, "b"), Some(ip("10.1.0.2")));
        // An allocation outside the (re-created) subnet is not reused.
        taken.insert(ip("10.9.0.1"), "d".to_string());
        assert_eq!(choose(subnet, &taken, "d"), Some(ip("10.1.0.2")));
        let full: IpNet = "10.1.0.0/30".parse().unwrap();
        let taken: BTreeMap<_, _> = [(ip("10.1.0.1"), "x".into()), (ip("10.1.0.2"), "y".into())]
            .into_iter()
            .collect();
        assert_eq!(choose(full, &taken, "z"), None);
    }
}
