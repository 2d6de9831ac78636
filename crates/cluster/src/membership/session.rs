//! One connected period of the membership — a lease, its keep-alive stream and a watch — and the
//! writes made under the lease. Every write of one of this member's own keys is remembered in
//! [`State::own`](super::actor::State), so healing can tell its records from someone else's.

use std::net::IpAddr;

use etcd_client::{
    Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp, WatchStream,
};

use super::actor::{State, Written};
use super::Config;
use crate::records::{MacRecord, MemberRecord};
use crate::store::{Retry, Store};
use crate::{Error, Result};

/// Lost races for the member record before giving up; each loss means another writer moved.
const CLAIM_ATTEMPTS: usize = 4;

/// What the watch stream yields.
pub(super) type WatchMessage =
    std::result::Result<Option<etcd_client::WatchResponse>, etcd_client::Error>;

pub(super) struct Session {
    pub(super) lease: i64,
    pub(super) keeper: LeaseKeeper,
    pub(super) keepalive: LeaseKeepAliveStream,
    pub(super) watch: WatchStream,
    /// A watch message read ahead while draining a burst (see `actor::drain`), handled next.
    pub(super) held: Option<WatchMessage>,
    /// The last revision whose events under the prefix are all in the mirror: a resumed watch
    /// starts after it.
    pub(super) revision: i64,
}

impl Session {
    /// Takes (or keeps) a lease, writes this member's records under it, reads the whole prefix
    /// into the mirror and watches from the revision read.
    pub(super) async fn establish(
        state: &mut State,
        previous_lease: Option<i64>,
    ) -> Result<Session> {
        let store = state.store.clone();
        let kept = match previous_lease {
            // An expired lease reads as TTL -1; any refusal just means a new lease.
            Some(id) => match store.lease_ttl(id).await {
                Ok(ttl) => (ttl > 0).then_some(id),
                Err(e) if e.is_unreachable() => return Err(e),
                Err(_) => None,
            },
            None => None,
        };
        let lease = match kept {
            Some(id) => id,
            None => store.lease_grant(state.cfg.ttl).await?,
        };
        let (mut keeper, keepalive) = store.lease_keep_alive(lease).await?;
        if kept.is_some() {
            // Renew at once: the old lease may have only moments left.
            keeper.keep_alive().await?;
        }
        if kept != previous_lease {
            // Records written under a lost lease are gone with it.
            state.own.clear();
        }
        claim_member(state, lease).await?;
        for (vni, mac) in state.published_macs() {
            put_mac(state, lease, vni, &mac).await?;
        }
        let (kvs, revision) = store.list("").await?;
        state.mirror.load(kvs);
        let watch = store.watch_prefix(revision + 1).await?;
        Ok(Session {
            lease,
            keeper,
            keepalive,
            watch,
            held: None,
            revision,
        })
    }
}

/// Refuses when another live engine holds `node_id`'s member record with a VTEP other than
/// `vtep`: two engines with one node id (a VM cloned with its state dir) would take each other's
/// place in every peer's flood list. The same VTEP is this host again (a restart within the old
/// lease), which may take its record back. `vxnet run` checks this before creating anything.
pub async fn check_free(store: &Store, node_id: &str, vtep: IpAddr) -> Result<()> {
    let key = store.key(&format!("members/{node_id}"));
    let current = store.get_raw(&key).await?;
    check_holder(
        node_id,
        vtep,
        0,
        current.as_ref().map(|kv| (kv.value(), kv.lease())),
    )
}

/// The check of [`check_free`] on a record already read: `(value, lease)` of `members/<id>`.
pub(super) fn check_holder(
    node_id: &str,
    vtep: IpAddr,
    own_lease: i64,
    current: Option<(&[u8], i64)>,
) -> Result<()> {
    let Some((value, lease)) = current else {
        return Ok(());
    };
    // Lease 0: written without a lease by someone who is not an engine; nobody to collide with.
    if lease == 0 || lease == own_lease {
        return Ok(());
    }
    match serde_json::from_slice::<MemberRecord>(value) {
        Ok(other) if other.vtep != vtep => Err(Error::NodeInUse {
            node: node_id.to_owned(),
            vtep: other.vtep,
        }),
        _ => Ok(()),
    }
}

/// Writes this member's record under `lease`, unless another live engine holds it with another
/// VTEP ([`Error::NodeInUse`]) or the node record is gone ([`Error::NotMember`]). The write only
/// applies if the record is still the one checked (one etcd transaction), so two engines starting
/// at once cannot both pass the check.
pub(super) async fn claim_member(state: &mut State, lease: i64) -> Result<()> {
    let store = &state.store;
    let cfg = &state.cfg;
    let key = store.key(&format!("members/{}", cfg.node_id));
    let node_key = store.key(&format!("nodes/{}", cfg.node_id));
    for _ in 0..CLAIM_ATTEMPTS {
        let current = store.get_raw(&key).await?;
        check_holder(
            &cfg.node_id,
            cfg.vtep,
            lease,
            current.as_ref().map(|kv| (kv.value(), kv.lease())),
        )?;
        let seen = current.as_ref().map_or(0, |kv| kv.mod_revision());
        let value = serde_json::to_vec(&member_record(cfg))?;
        // Only while the node record exists: a node removed by `vxnet cluster rm` while it was
        // cut off from the store (its lease expired, so it was not live) must not come back on
        // reconnect.
        let txn = Txn::new()
            .when([
                Compare::create_revision(node_key.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(key.clone(), CompareOp::Equal, seen),
            ])
            .and_then([TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = store.txn(Retry::Idempotent, txn).await?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            state.own.insert(key, Written { value, revision });
            return Ok(());
        }
        if store.get_raw(&node_key).await?.is_none() {
            return Err(Error::NotMember(
                cfg.node_id.clone(),
                store.cluster_id().to_owned(),
            ));
        }
    }
    Err(Error::Invalid(format!(
        "gave up registering node {} after repeated concurrent changes of its member record",
        cfg.node_id
    )))
}

fn member_record(cfg: &Config) -> MemberRecord {
    MemberRecord {
        node_id: cfg.node_id.clone(),
        vtep: cfg.vtep,
        networks: cfg.networks.clone(),
        role: cfg.role,
        updated: crate::now_secs(),
        key_epochs: cfg.key_epochs.clone(),
    }
}

pub(super) fn mac_value(cfg: &Config) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&MacRecord {
        node_id: cfg.node_id.clone(),
        vtep: cfg.vtep,
    })?)
}

/// This node's MAC record: under its own prefix, which no other node may write.
pub(super) fn mac_key(store: &Store, node_id: &str, vni: u32, mac: &str) -> String {
    store.key(&crate::scoped::mac_key(node_id, vni, mac))
}

pub(super) async fn put_mac(state: &mut State, lease: i64, vni: u32, mac: &str) -> Result<()> {
    let key = mac_key(&state.store, &state.cfg.node_id, vni, mac);
    let value = mac_value(&state.cfg)?;
    let revision = state.store.put(&key, value.clone(), Some(lease)).await?;
    state.own.insert(key, Written { value, revision });
    Ok(())
}

/// Replaces the published MACs of `vni` (`old` → `new`). A withdrawn MAC is deleted only while it
/// is still under this member's lease (one transaction), so a MAC another engine has since
/// published is left alone.
pub(super) async fn republish(
    state: &mut State,
    lease: i64,
    vni: u32,
    old: &[String],
    new: &[String],
) -> Result<()> {
    for mac in old.iter().filter(|m| !new.contains(m)) {
        let key = mac_key(&state.store, &state.cfg.node_id, vni, mac);
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(key.clone(), None)]);
        state.store.txn(Retry::Idempotent, txn).await?;
        state.own.remove(&key);
    }
    for mac in new.iter().filter(|m| !old.contains(m)) {
        put_mac(state, lease, vni, mac).await?;
    }
    Ok(())
}
