//! Named overlay networks. Name and VNI uniqueness are enforced by etcd itself: a create is one
//! transaction that only succeeds if neither `networks/<name>` nor `vni/<vni>` exists yet
//! (create_revision == 0), so two hosts creating at once can never both win.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp};

use super::keyring::{NetworkKeys, MIN_ROTATION};
use super::records::{self, validate_vni, MemberRecord, NetworkDef, Record};
use super::store::{Retry, Store};
use super::{Error, Result};

/// Auto-allocated VNIs start here, leaving the low range for hand-picked ones.
pub const AUTO_VNI_MIN: u32 = 4096;
pub use super::records::{validate_name, validate_subnet, VNI_MAX};

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
    create_with(store, name, vni, subnet, None).await
}

/// [`create`], encrypted when `key_rotation` is given: the network's first key (see
/// [`keyring`](crate::keyring)) is written in the same transaction as the network, so no
/// engine ever sees the network without its keys.
pub async fn create_with(
    store: &Store,
    name: &str,
    vni: Option<u32>,
    subnet: Option<&str>,
    key_rotation: Option<Duration>,
) -> Result<NetworkDef> {
    validate_name(name)?;
    if let Some(every) = key_rotation {
        if every < MIN_ROTATION {
            return Err(Error::Invalid(format!(
                "key rotation interval {every:?} is below the minimum of {MIN_ROTATION:?}"
            )));
        }
    }
    let subnet = subnet.map(validate_subnet).transpose()?;
    if let Some(v) = vni {
        validate_vni(u64::from(v))?;
    }
    let keys_key = store.key(&format!("keys/{name}"));
    let ring = key_rotation
        .map(|every| serde_json::to_vec(&NetworkKeys::new(name, every)))
        .transpose()?;
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
            encrypted: key_rotation.is_some(),
        };
        let net_key = store.key(&format!("networks/{name}"));
        let vni_key = store.key(&format!("vni/{chosen}"));
        let txn = Txn::new()
            .when([
                Compare::create_revision(net_key.clone(), CompareOp::Equal, 0),
                Compare::create_revision(vni_key.clone(), CompareOp::Equal, 0),
            ])
            .and_then(
                [
                    TxnOp::put(net_key.clone(), serde_json::to_vec(&def)?, None),
                    TxnOp::put(vni_key.clone(), name, None),
                ]
                .into_iter()
                .chain(
                    ring.as_ref()
                        .map(|r| TxnOp::put(keys_key.clone(), r.clone(), None)),
                )
                .collect::<Vec<_>>(),
            );
        let resp = store.txn(Retry::IfNotSent, txn).await?;
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

/// Removes a network unless a live member still serves it (`force` overrides). A record that
/// fails its checks can be removed by its name too; the VNI index goes with it only if it names
/// this network, so removing a bogus duplicate never frees the real network's VNI.
pub async fn remove(store: &Store, name: &str, force: bool) -> Result<NetworkDef> {
    let net_key = store.key(&format!("networks/{name}"));
    let kv = store
        .get_raw(&net_key)
        .await?
        .ok_or_else(|| Error::NoSuchNetwork(name.to_owned()))?;
    let def = match records::decode(&format!("networks/{name}"), kv.value()) {
        Ok(Some(Record::Network(def))) => def,
        other => {
            if let Err(e) = other {
                tracing::warn!(network = name, error = %e, "removing an invalid network record");
            }
            let vni = serde_json::from_slice::<NetworkDef>(kv.value()).map_or(0, |d| d.vni);
            NetworkDef {
                name: name.to_owned(),
                vni,
                subnet: None,
                encrypted: false,
            }
        }
    };
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
    // Its keys go too: a network re-created under the name starts a new ring.
    let keys = store.key(&format!("keys/{name}"));
    let txn = Txn::new()
        .when([Compare::value(vni_key.clone(), CompareOp::Equal, name)])
        .and_then([
            TxnOp::delete(net_key.clone(), None),
            TxnOp::delete(vni_key, None),
            TxnOp::delete(ipam.clone(), Some(DeleteOptions::new().with_prefix())),
            TxnOp::delete(keys.clone(), None),
        ])
        .or_else([
            TxnOp::delete(net_key, None),
            TxnOp::delete(ipam, Some(DeleteOptions::new().with_prefix())),
            TxnOp::delete(keys, None),
        ]);
    store.txn(Retry::Idempotent, txn).await?;
    release_scoped(store, name).await?;
    Ok(def)
}

/// Deletes every node's claims, endpoints, name index and cursor in network `name` (removed), so a network
/// re-created under the name starts from a clean subnet.
async fn release_scoped(store: &Store, name: &str) -> Result<()> {
    let keys = store.list_keys("node/").await?;
    let ops: Vec<TxnOp> = keys
        .iter()
        .filter(|k| {
            let mut parts = k.split('/').skip(2);
            let kind = parts.next();
            matches!(kind, Some("addrs" | "endpoints" | "cursors" | "names"))
                && parts.next() == Some(name)
        })
        .map(|k| TxnOp::delete(store.key(k), None))
        .collect();
    for chunk in ops.chunks(super::store::TXN_OPS) {
        store
            .txn(Retry::Idempotent, Txn::new().and_then(chunk.to_vec()))
            .await?;
    }
    Ok(())
}
