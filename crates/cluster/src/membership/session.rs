//! One connected period of the membership: a lease, its keep-alive stream, a watch, and the keys
//! mirrored from the store; and the writes made under the lease.

use std::collections::BTreeMap;

use etcd_client::{
    Compare, CompareOp, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
    WatchOptions, WatchStream,
};

use super::Config;
use crate::records::{MacRecord, MemberRecord};
use crate::store::Store;
use crate::view::ClusterView;
use crate::{Error, Result};

/// One connected period: a lease, its keep-alive stream, a watch and the mirrored keys.
pub(super) struct Session {
    pub(super) store: Store,
    pub(super) lease: i64,
    pub(super) keeper: LeaseKeeper,
    pub(super) keepalive: LeaseKeepAliveStream,
    pub(super) watch: WatchStream,
    pub(super) kvs: BTreeMap<String, Vec<u8>>,
    pub(super) revision: i64,
}

impl Session {
    pub(super) async fn establish(
        store: &Store,
        cfg: &Config,
        macs: &BTreeMap<u32, Vec<String>>,
        previous_lease: Option<i64>,
    ) -> Result<Session> {
        let mut c = store.client();
        let kept = match previous_lease {
            // An expired lease reads as TTL -1; any refusal just means a new lease.
            Some(id) => match store.op(c.lease_time_to_live(id, None)).await {
                Ok(r) => (r.ttl() > 0).then_some(id),
                Err(e) if e.is_unreachable() => return Err(e),
                Err(_) => None,
            },
            None => None,
        };
        let lease = match kept {
            Some(id) => id,
            None => store.op(c.lease_grant(cfg.ttl, None)).await?.id(),
        };
        let (mut keeper, keepalive) = store.op(c.lease_keep_alive(lease)).await?;
        if kept.is_some() {
            // Renew at once: the old lease may have only moments left.
            store.op(keeper.keep_alive()).await?;
        }
        put_member(store, cfg, lease).await?;
        for (vni, list) in macs {
            for mac in list {
                put_mac(store, cfg, lease, *vni, mac).await?;
            }
        }
        let mut resp = store
            .op(c.get(store.prefix(), Some(GetOptions::new().with_prefix())))
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let kvs = resp
            .take_kvs()
            .into_iter()
            .filter_map(|kv| Some((kv.key_str().ok()?.to_owned(), kv.value().to_vec())))
            .collect();
        let watch = store
            .op(c.watch(
                store.prefix(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            ))
            .await?;
        Ok(Session {
            store: store.clone(),
            lease,
            keeper,
            keepalive,
            watch,
            kvs,
            revision,
        })
    }

    pub(super) fn view(&self, cfg: &Config) -> ClusterView {
        ClusterView::from_kvs(
            &cfg.cluster_id,
            self.kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            self.revision,
        )
    }
}

pub(super) async fn put_member(store: &Store, cfg: &Config, lease: i64) -> Result<()> {
    let record = MemberRecord {
        node_id: cfg.node_id.clone(),
        vtep: cfg.vtep,
        networks: cfg.networks.clone(),
        role: cfg.role,
        updated: crate::now_secs(),
    };
    // Only while the node record exists: a node removed by `vxnet cluster rm` while it was cut
    // off from the store (its lease expired, so it was not live) must not come back on reconnect.
    let node_key = store.key(&format!("nodes/{}", cfg.node_id));
    let put = TxnOp::put(
        store.key(&format!("members/{}", cfg.node_id)),
        serde_json::to_vec(&record)?,
        Some(PutOptions::new().with_lease(lease)),
    );
    let txn = Txn::new()
        .when([Compare::create_revision(node_key, CompareOp::Greater, 0)])
        .and_then([put]);
    let mut c = store.client();
    if !store.op(c.txn(txn)).await?.succeeded() {
        return Err(Error::NotMember(
            cfg.node_id.clone(),
            store.cluster_id().to_owned(),
        ));
    }
    Ok(())
}

async fn put_mac(store: &Store, cfg: &Config, lease: i64, vni: u32, mac: &str) -> Result<()> {
    let rec = MacRecord {
        node_id: cfg.node_id.clone(),
        vtep: cfg.vtep,
    };
    let mut c = store.client();
    store
        .op(c.put(
            store.key(&format!("macs/{vni}/{mac}")),
            serde_json::to_vec(&rec)?,
            Some(PutOptions::new().with_lease(lease)),
        ))
        .await?;
    Ok(())
}

pub(super) async fn republish(
    store: &Store,
    cfg: &Config,
    lease: i64,
    vni: u32,
    old: &[String],
    new: &[String],
) -> Result<()> {
    let mut c = store.client();
    for mac in old.iter().filter(|m| !new.contains(m)) {
        store
            .op(c.delete(store.key(&format!("macs/{vni}/{mac}")), None))
            .await?;
    }
    for mac in new.iter().filter(|m| !old.contains(m)) {
        put_mac(store, cfg, lease, vni, mac).await?;
    }
    Ok(())
}
