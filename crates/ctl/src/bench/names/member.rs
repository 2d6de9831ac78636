//! One simulated host: its own store connection, lease (kept alive) and watch of the whole
//! cluster prefix, as a real engine has. What it does with the events is the lightweight part:
//! it decodes every record with the engine's decoder and keeps the endpoint names it has seen,
//! noting when each appeared and disappeared, instead of running a packet engine.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::EventType;
use vxnet_cluster::records::{self, MemberRecord, NodeRecord, Record};
use vxnet_cluster::token::Role;
use vxnet_cluster::{Store, StoreAccess};

/// What a member saw, shared with the bench's driver.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// Endpoint id -> when its record first arrived.
    pub(super) appeared: Mutex<HashMap<String, Instant>>,
    /// Endpoint id -> when its record was deleted.
    pub(super) vanished: Mutex<HashMap<String, Instant>>,
    /// Watch events received (every key of every change).
    pub(super) events: AtomicU64,
    /// Name -> addresses: the member's name table.
    names: Mutex<HashMap<String, Vec<IpAddr>>>,
}

impl Seen {
    pub(super) fn appeared_count(&self) -> usize {
        lock(&self.appeared).len()
    }

    pub(super) fn vanished_count(&self) -> usize {
        lock(&self.vanished).len()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running simulated host.
pub(super) struct Member {
    pub(super) id: String,
    pub(super) store: Store,
    pub(super) lease: i64,
    pub(super) seen: Arc<Seen>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// The node record every member's endpoints need (readers ignore endpoints of unknown nodes).
pub(super) fn node_record(id: &str, vtep: IpAddr) -> Vec<u8> {
    serde_json::to_vec(&NodeRecord {
        node_id: id.to_string(),
        role: Role::Worker,
        local: Some(vtep),
        joined: 0,
    })
    .unwrap_or_default()
}

impl Member {
    /// Connects, takes a lease, registers under it and watches from the revision it read the
    /// prefix at (the resynchronisation a restarted engine does).
    pub(super) async fn join(
        access: &StoreAccess,
        cluster: &str,
        id: String,
        vtep: IpAddr,
        network: &str,
        ttl: i64,
    ) -> Result<Member, String> {
        let store = Store::connect_with(access, cluster)
            .await
            .map_err(|e| e.to_string())?;
        let lease = store.lease_grant(ttl).await.map_err(|e| e.to_string())?;
        let record = MemberRecord {
            node_id: id.clone(),
            vtep,
            networks: vec![network.to_string()],
            role: Role::Worker,
            updated: 0,
            key_epochs: Default::default(),
        };
        store
            .put(
                &store.key(&format!("members/{id}")),
                serde_json::to_vec(&record).map_err(|e| e.to_string())?,
                Some(lease),
            )
            .await
            .map_err(|e| e.to_string())?;
        let seen = Arc::new(Seen::default());
        let (kvs, revision) = store.list("").await.map_err(|e| e.to_string())?;
        for kv in &kvs {
            if let Ok(key) = kv.key_str() {
                seen.put(&store.prefix(), key, kv.value(), Instant::now());
            }
        }
        let watch = store
            .watch_prefix(revision + 1)
            .await
            .map_err(|e| e.to_string())?;
        let (keeper, replies) = store
            .lease_keep_alive(lease)
            .await
            .map_err(|e| e.to_string())?;
        let tasks = vec![
            tokio::spawn(follow(store.prefix(), watch, Arc::clone(&seen))),
            tokio::spawn(keep_alive(keeper, replies, ttl)),
        ];
        Ok(Member {
            id,
            store,
            lease,
            seen,
            tasks,
        })
    }
}

impl Seen {
    fn put(&self, prefix: &str, key: &str, value: &[u8], at: Instant) {
        let Some(rest) = key.strip_prefix(prefix) else {
            return;
        };
        if let Ok(Some(Record::Endpoint(e))) = records::decode(rest, value) {
            lock(&self.names)
                .entry(e.name.to_ascii_lowercase())
                .or_default()
                .extend(e.ips());
            lock(&self.appeared).entry(e.id).or_insert(at);
        }
    }

    fn delete(&self, key: &str, at: Instant) {
        if !key.contains("/endpoints/") {
            return;
        }
        let Some(id) = key.rsplit('/').next() else {
            return;
        };
        lock(&self.vanished).entry(id.to_string()).or_insert(at);
    }
}

/// Applies the watch's events to the member's table until the stream ends.
async fn follow(prefix: String, mut watch: etcd_client::WatchStream, seen: Arc<Seen>) {
    while let Ok(Some(resp)) = watch.message().await {
        let at = Instant::now();
        for ev in resp.events() {
            seen.events.fetch_add(1, Ordering::Relaxed);
            let Some(kv) = ev.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            match ev.event_type() {
                EventType::Put => seen.put(&prefix, key, kv.value(), at),
                EventType::Delete => seen.delete(key, at),
            }
        }
    }
}

/// Refreshes the lease every third of its TTL, as the engine's membership does.
async fn keep_alive(
    mut keeper: etcd_client::LeaseKeeper,
    mut replies: etcd_client::LeaseKeepAliveStream,
    ttl: i64,
) {
    let every = Duration::from_secs(ttl.max(3) as u64 / 3);
    loop {
        if keeper.keep_alive().await.is_err() || !matches!(replies.message().await, Ok(Some(_))) {
            return;
        }
        tokio::time::sleep(every).await;
    }
}
