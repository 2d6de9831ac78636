//! Named overlay networks. Name and VNI uniqueness are enforced by etcd itself: a create is one
//! transaction that only succeeds if neither `networks/<name>` nor `vni/<vni>` exists yet
//! (create_revision == 0), so two hosts creating at once can never both win.

use std::collections::BTreeSet;
use std::net::IpAddr;

use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp};

use super::records::{MemberRecord, NetworkDef};
use super::store::Store;
use super::{Error, Result};

/// Auto-allocated VNIs start here, leaving the low range for hand-picked ones.
pub const AUTO_VNI_MIN: u32 = 4096;
pub const VNI_MAX: u32 = (1 << 24) - 1;

pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid network name {name:?} (1-64 of [A-Za-z0-9._-])"
        )))
    }
}

/// Checks `a.b.c.d/len` or `x::/len` and returns it normalised.
pub fn validate_subnet(cidr: &str) -> Result<String> {
    let bad = || Error::Invalid(format!("invalid subnet {cidr:?} (expected ADDR/PREFIX)"));
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(format!("{addr}/{len}"))
}

pub async fn list(store: &Store) -> Result<Vec<NetworkDef>> {
    store.networks().await
}

/// Creates a network; with `vni == None` the lowest free VNI ≥ [`AUTO_VNI_MIN`] is taken, retrying
/// when a concurrent create grabbed the same one first.
pub async fn create(
    store: &Store,
    name: &str,
    vni: Option<u32>,
    subnet: Option<&str>,
) -> Result<NetworkDef> {
    validate_name(name)?;
    let subnet = subnet.map(validate_subnet).transpose()?;
    if let Some(v) = vni {
        if v == 0 || v > VNI_MAX {
            return Err(Error::Invalid(format!("VNI {v} out of range 1-{VNI_MAX}")));
        }
    }
    // Bounded so a pathological race cannot spin forever; each loss means someone else progressed.
    for _ in 0..64 {
        let (kvs, _) = store.list("vni/").await?;
        let taken: BTreeSet<u32> = kvs
            .iter()
            .filter_map(|kv| kv.key_str().ok()?.rsplit('/').next()?.parse().ok())
            .collect();
        let chosen = match vni {
            Some(v) => v,
            None => (AUTO_VNI_MIN..=VNI_MAX)
                .find(|v| !taken.contains(v))
                .ok_or(Error::VniExhausted)?,
        };
        let def = NetworkDef {
            name: name.to_owned(),
            vni: chosen,
            subnet: subnet.clone(),
        };
        let net_key = store.key(&format!("networks/{name}"));
        let vni_key = store.key(&format!("vni/{chosen}"));
        let txn = Txn::new()
            .when([
                Compare::create_revision(net_key.clone(), CompareOp::Equal, 0),
                Compare::create_revision(vni_key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(net_key.clone(), serde_json::to_vec(&def)?, None),
                TxnOp::put(vni_key.clone(), name, None),
            ]);
        let mut c = store.client();
        let resp = store.op(c.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(def);
        }
        // Lost: find out which condition failed to give the right error or retry.
        if store.get_raw(&net_key).await?.is_some() {
            return Err(Error::NameTaken(name.to_owned()));
        }
        if vni.is_some() {
            let owner = store
                .get_raw(&vni_key)
                .await?
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                .unwrap_or_default();
            return Err(Error::VniTaken(chosen, owner));
        }
    }
    Err(Error::Invalid(
        "gave up allocating a VNI after repeated conflicts".into(),
    ))
}

/// Removes a network unless a live member still serves it (`force` overrides).
pub async fn remove(store: &Store, name: &str, force: bool) -> Result<NetworkDef> {
    let net_key = store.key(&format!("networks/{name}"));
    let def: NetworkDef = store
        .get_json(&net_key)
        .await?
        .ok_or_else(|| Error::NoSuchNetwork(name.to_owned()))?;
    if !force {
        let users: Vec<String> = store
            .members()
            .await?
            .into_iter()
            .filter(|m: &MemberRecord| m.networks.iter().any(|n| n == name))
            .map(|m| format!("{}({})", m.node_id, m.vtep))
            .collect();
        if !users.is_empty() {
            return Err(Error::NetworkInUse {
                name: name.to_owned(),
                members: users.join(", "),
            });
        }
    }
    let vni_key = store.key(&format!("vni/{}", def.vni));
    // Its address allocations go with it, so a re-created network starts from a clean subnet.
    let ipam = store.key(&super::ipam::prefix(name));
    let txn = Txn::new().and_then([
        TxnOp::delete(net_key, None),
        TxnOp::delete(vni_key, None),
        TxnOp::delete(ipam, Some(DeleteOptions::new().with_prefix())),
    ]);
    let mut c = store.client();
    store.op(c.txn(txn)).await?;
    Ok(def)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_subnets() {
        assert!(validate_name("blue-net_1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        assert_eq!(validate_subnet("10.1.0.0/24").unwrap(), "10.1.0.0/24");
        assert!(validate_subnet("10.1.0.0/33").is_err());
        assert!(validate_subnet("fd00::/64").is_ok());
        assert!(validate_subnet("10.1.0.0").is_err());
    }
}
