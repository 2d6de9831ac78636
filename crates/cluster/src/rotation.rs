//! Key rotation of encrypted networks: a new key is accepted by everyone before anyone sends
//! with it.
//!
//! 1. **Lock.** One manager rotates a network at a time: it holds `locks/keys/<network>`, created
//!    only if absent (one etcd transaction) under a short lease it keeps alive while it works. A
//!    manager that dies mid-rotation loses the lock with its lease, and the next manager finishes
//!    the rotation from the record (the phase is in the record, not in the rotator's memory).
//! 2. **Publish** epoch `N+1` accept-only ([`NetworkKeys::published`]).
//! 3. **Wait** until every live member serving the network acknowledges holding `N+1` (its
//!    member record's `key_epochs`, written by its engine after the ring is applied), or until
//!    [`RotateOptions::ack_timeout`] passes: a member that is live but does not answer must not
//!    stop rotations for ever; it is named in the result and the log.
//! 4. **Switch** `send` to `N+1`, dropping `N-1` ([`NetworkKeys::switched`]). Dropping `N-1` is
//!    safe: every member that acknowledged `N+1` had applied a ring whose send epoch was `N`.
//!
//! Both writes are transactions that apply only if the key record is still the one read and the
//! lock is still the one taken (its create revision), so a rotator that lost its lock (a pause
//! longer than the lease) can never overwrite its successor's work.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::keyring::NetworkKeys;
use super::records::{self, NetworkDef, Record};
use super::store::{Retry, Store};
use super::token::Role;
use super::view::ClusterView;
use super::{Error, Result};

/// How long a rotation waits for acknowledgements by default before switching anyway.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// The lock's lease: a dead rotator blocks rotations of its network this long at most.
const LOCK_TTL_SECS: i64 = 10;
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// Switch to the new key after this long even if some live members have not acknowledged it.
    pub ack_timeout: Duration,
    /// `rotate-key` waits this long for another manager's rotation of the network to end.
    pub lock_wait: Duration,
}

impl Default for RotateOptions {
    fn default() -> Self {
        RotateOptions {
            ack_timeout: ACK_TIMEOUT,
            lock_wait: ACK_TIMEOUT + Duration::from_secs(LOCK_TTL_SECS.unsigned_abs() * 2),
        }
    }
}

/// What one rotation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rotation {
    pub network: String,
    /// The send epoch before and after.
    pub from: u32,
    pub to: u32,
    /// Live members serving the network that acknowledged the new key before the switch.
    pub acknowledged: Vec<String>,
    /// Live members serving it that had not acknowledged it when the wait ran out.
    pub unacknowledged: Vec<String>,
}

/// The rotation lock of one network, held under a lease kept alive in the background.
struct Lock {
    store: Store,
    key: String,
    lease: i64,
    /// The lock key's create revision: the fencing token every write compares.
    revision: i64,
    keepalive: JoinHandle<()>,
}

impl Lock {
    /// Takes the lock, or returns who holds it.
    async fn try_acquire(
        store: &Store,
        network: &str,
        holder: &str,
    ) -> Result<std::result::Result<Lock, String>> {
        let key = store.key(&format!("locks/keys/{network}"));
        let lease = store.lease_grant(LOCK_TTL_SECS).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                holder,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = match store.txn(Retry::IfNotSent, txn).await {
            Ok(r) => r,
            Err(e) => {
                let _ = store.lease_revoke(lease).await;
                return Err(e);
            }
        };
        let revision = if resp.succeeded() {
            resp.header().map_or(0, |h| h.revision())
        } else {
            let taken = take_over_dead(store, &key, holder, lease).await;
            if !matches!(taken, Ok(Ok(_))) {
                let _ = store.lease_revoke(lease).await;
            }
            match taken? {
                Ok(revision) => revision,
                Err(who) => return Ok(Err(who)),
            }
        };
        let keepalive = tokio::spawn(keep_alive(store.clone(), lease));
        Ok(Ok(Lock {
            store: store.clone(),
            key,
            lease,
            revision,
            keepalive,
        }))
    }

    /// Takes the lock, waiting up to `wait` for the current holder to finish.
    async fn acquire(store: &Store, network: &str, holder: &str, wait: Duration) -> Result<Lock> {
        let start = Instant::now();
        loop {
            match Lock::try_acquire(store, network, holder).await? {
                Ok(lock) => return Ok(lock),
                Err(who) if start.elapsed() >= wait => {
                    return Err(Error::Invalid(format!(
                        "node {who} is rotating the keys of network {network}; try again later"
                    )))
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    fn still_held(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.revision)
    }

    /// The lock is still under this rotator's lease (a lock taken over keeps no old lease).
    fn still_ours(&self) -> Compare {
        Compare::lease(self.key.clone(), CompareOp::Equal, self.lease)
    }

    async fn release(self) {
        self.keepalive.abort();
        if let Err(e) = self.store.lease_revoke(self.lease).await {
            tracing::debug!(error = %e, "could not revoke the rotation lock (it expires with its lease)");
        }
    }
}

impl Drop for Lock {
    /// A rotation dropped midway (its engine stopping) stops renewing the lock, so the lock
    /// expires with its lease and the next manager finishes the rotation.
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// When the lock record at `key` is held by no live lease (written without one, e.g. by hand or
/// a broken tool, or garbage: every rotator writes it under a lease, which takes it away when
/// the rotator dies), takes it over under `lease` in one transaction that applies only if the
/// record is still the one looked at. `Ok(Ok(create revision))` when taken, `Ok(Err(holder))`
/// when a live rotator holds it.
async fn take_over_dead(
    store: &Store,
    key: &str,
    holder: &str,
    lease: i64,
) -> Result<std::result::Result<i64, String>> {
    let Some(kv) = store.get_raw(key).await? else {
        // Released between the two calls: the next try takes it the ordinary way.
        return Ok(Err(String::new()));
    };
    let who = printable(kv.value());
    let live = kv.lease() != 0 && store.lease_ttl(kv.lease()).await? > 0;
    if live {
        return Ok(Err(who));
    }
    // Overwritten under this rotator's lease: the record keeps its create revision, and every
    // write of the rotation also compares the lease (see `Lock::still_ours`), so nobody else's
    // writes pass as this rotation's.
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.to_owned(),
            CompareOp::Equal,
            kv.mod_revision(),
        )])
        .and_then([TxnOp::put(
            key.to_owned(),
            holder,
            Some(PutOptions::new().with_lease(lease)),
        )]);
    if !store.txn(Retry::IfNotSent, txn).await?.succeeded() {
        return Ok(Err(who));
    }
    let revision = kv.create_revision();
    tracing::warn!(
        %key,
        found = %who,
        lease = kv.lease(),
        "took over a rotation lock that no live rotator holds"
    );
    Ok(Ok(revision))
}

/// A lock record's holder as text for messages: control characters and overlong garbage from a
/// corrupt record must not reach the terminal.
fn printable(value: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(value)
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    if text.is_empty() {
        "(unreadable lock record)".into()
    } else {
        text
    }
}

async fn keep_alive(store: Store, lease: i64) {
    let period = Duration::from_secs((LOCK_TTL_SECS / 3).max(1).unsigned_abs());
    loop {
        match store.lease_keep_alive(lease).await {
            Ok((mut keeper, mut stream)) => loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                if !matches!(stream.message().await, Ok(Some(_))) {
                    break;
                }
                tokio::time::sleep(period).await;
            },
            Err(e) => tracing::debug!(error = %e, "rotation lock keep-alive failed; retrying"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The key ring of `network` and the revision it was written at. A network that does not exist,
/// is not encrypted, or whose key record fails its checks is an error: a rotation never starts
/// from a ring it cannot trust.
pub async fn read(store: &Store, network: &str) -> Result<(NetworkKeys, i64)> {
    let def: NetworkDef = store
        .get_json(&store.key(&format!("networks/{network}")))
        .await?
        .ok_or_else(|| Error::NoSuchNetwork(network.to_owned()))?;
    if !def.encrypted {
        return Err(Error::Invalid(format!(
            "network {network} is not encrypted (create it with --encrypted)"
        )));
    }
    let rest = format!("keys/{network}");
    let kv = store.get_raw(&store.key(&rest)).await?.ok_or_else(|| {
        Error::Invalid(format!(
            "network {network} is encrypted but has no key record"
        ))
    })?;
    match records::decode(&rest, kv.value())? {
        Some(Record::Keys(ring)) => Ok((ring, kv.mod_revision())),
        _ => Err(Error::Invalid(format!("{rest}: not a key record"))),
    }
}

/// The send epoch and pending epoch of every encrypted network with a valid key record, for
/// `network ls` (never the keys). Invalid records are left out with a warning.
pub async fn epochs(store: &Store) -> Result<BTreeMap<String, (u32, Option<u32>)>> {
    let (kvs, _) = store.list("keys/").await?;
    let prefix = store.prefix();
    let mut out = BTreeMap::new();
    for kv in &kvs {
        let Some(rest) = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)) else {
            continue;
        };
        match records::decode(rest, kv.value()) {
            Ok(Some(Record::Keys(ring))) => {
                out.insert(ring.network.clone(), (ring.send, ring.pending()));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(key = rest, error = %e, "skipping invalid store record"),
        }
    }
    Ok(out)
}

/// Writes `next` over the ring read at `revision`, if neither it nor the lock changed since.
async fn write(store: &Store, lock: &Lock, revision: i64, next: &NetworkKeys) -> Result<i64> {
    let key = store.key(&format!("keys/{}", next.network));
    let txn = Txn::new()
        .when([
            Compare::mod_revision(key.clone(), CompareOp::Equal, revision),
            lock.still_held(),
            lock.still_ours(),
        ])
        .and_then([TxnOp::put(key, serde_json::to_vec(next)?, None)]);
    let resp = store.txn(Retry::Idempotent, txn).await?;
    if !resp.succeeded() {
        return Err(Error::Invalid(format!(
            "the key ring of network {} changed under the rotation (the rotation lock was lost?); nothing switched",
            next.network
        )));
    }
    Ok(resp.header().map_or(0, |h| h.revision()))
}

/// Live members serving `network`, split by whether they acknowledged `epoch`.
async fn acknowledgements(
    store: &Store,
    network: &str,
    epoch: u32,
) -> Result<(Vec<String>, Vec<String>)> {
    let (mut acked, mut missing) = (Vec::new(), Vec::new());
    for m in store.members().await? {
        if !m.networks.iter().any(|n| n == network) {
            continue;
        }
        if m.key_epochs.get(network).is_some_and(|&e| e >= epoch) {
            acked.push(m.node_id);
        } else {
            missing.push(m.node_id);
        }
    }
    Ok((acked, missing))
}

/// Phases 3 and 4 for the pending key of `ring` (read at `revision`).
async fn finish(
    store: &Store,
    lock: &Lock,
    ring: &NetworkKeys,
    revision: i64,
    opts: &RotateOptions,
) -> Result<Rotation> {
    let epoch = ring.pending().unwrap_or(ring.send);
    let start = Instant::now();
    let (acknowledged, unacknowledged) = loop {
        let (acked, missing) = acknowledgements(store, &ring.network, epoch).await?;
        if missing.is_empty() || start.elapsed() >= opts.ack_timeout {
            break (acked, missing);
        }
        tokio::time::sleep(POLL).await;
    };
    if !unacknowledged.is_empty() {
        tracing::warn!(
            network = %ring.network,
            epoch,
            members = %unacknowledged.join(","),
            "switching to the new key without these live members' acknowledgement (waited {:?}); they may lose traffic until they apply it",
            opts.ack_timeout
        );
    }
    let next = ring.switched();
    write(store, lock, revision, &next).await?;
    tracing::info!(network = %ring.network, from = ring.send, to = next.send, "key rotated");
    Ok(Rotation {
        network: ring.network.clone(),
        from: ring.send,
        to: next.send,
        acknowledged,
        unacknowledged,
    })
}

/// Publishes a new key in `ring` (read at `revision`) and finishes the rotation.
async fn publish_and_finish(
    store: &Store,
    lock: &Lock,
    ring: &NetworkKeys,
    revision: i64,
    opts: &RotateOptions,
) -> Result<Rotation> {
    let next = ring.published();
    let revision = write(store, lock, revision, &next).await?;
    tracing::info!(network = %ring.network, epoch = next.newest(), "new key published (accept-only)");
    finish(store, lock, &next, revision, opts).await
}

/// `network rotate-key`: one full rotation of `network`, as `holder` (this node's id). A rotation
/// another manager left half done is finished first, then a new key is rotated in.
pub async fn rotate(
    store: &Store,
    network: &str,
    holder: &str,
    opts: &RotateOptions,
) -> Result<Rotation> {
    // Checked before waiting for a lock, so a typo fails at once.
    read(store, network).await?;
    let lock = Lock::acquire(store, network, holder, opts.lock_wait).await?;
    let result = async {
        let (mut ring, mut revision) = read(store, network).await?;
        let mut from = ring.send;
        if ring.pending().is_some() {
            finish(store, &lock, &ring, revision, opts).await?;
            (ring, revision) = read(store, network).await?;
            from = from.min(ring.send);
        }
        let mut done = publish_and_finish(store, &lock, &ring, revision, opts).await?;
        done.from = from;
        Ok(done)
    }
    .await;
    lock.release().await;
    result
}

/// The automatic rotation's step for one network: if its send key is due (or a rotation was
/// left half done) and no other manager is rotating it, rotate it. `Ok(None)`: nothing to do.
pub async fn rotate_if_due(
    store: &Store,
    network: &str,
    holder: &str,
    opts: &RotateOptions,
) -> Result<Option<Rotation>> {
    let Ok(lock) = Lock::try_acquire(store, network, holder).await? else {
        return Ok(None);
    };
    let result = async {
        // Read under the lock: another manager may have rotated it a moment ago.
        let (ring, revision) = read(store, network).await?;
        if ring.pending().is_some() {
            finish(store, &lock, &ring, revision, opts).await.map(Some)
        } else if ring.due(crate::now_secs()) {
            publish_and_finish(store, &lock, &ring, revision, opts)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    }
    .await;
    lock.release().await;
    result
}

/// How often the automatic rotation looks at the rings: a tenth of the shortest interval,
/// between 1 s and 30 s.
fn check_period(view: &ClusterView) -> Duration {
    let shortest = view
        .keys
        .values()
        .map(|r| r.rotation_secs)
        .min()
        .unwrap_or(u64::MAX);
    Duration::from_millis(shortest.saturating_mul(100).clamp(1000, 30_000))
}

/// Automatic rotation, run by every `vxnet run` of the cluster: while this node is a manager,
/// rotates each encrypted network whose send key is older than its rotation interval. The lock
/// makes one manager do it; the others find it busy or the ring fresh. Runs until dropped.
pub async fn auto(store: Store, node_id: String, view: watch::Receiver<ClusterView>) {
    let opts = RotateOptions::default();
    loop {
        let current = view.borrow().clone();
        tokio::time::sleep(check_period(&current)).await;
        let current = view.borrow().clone();
        let manager = current
            .members
            .iter()
            .any(|m| m.node_id == node_id && m.role == Some(Role::Manager));
        if !manager || !current.store_healthy {
            continue;
        }
        let now = crate::now_secs();
        for net in current.networks.iter().filter(|n| n.encrypted) {
            let Some(ring) = current.keys.get(&net.name) else {
                continue;
            };
            if ring.pending().is_none() && !ring.due(now) {
                continue;
            }
            match rotate_if_due(&store, &net.name, &node_id, &opts).await {
                Ok(Some(r)) => {
                    tracing::info!(network = %r.network, from = r.from, to = r.to, "automatic key rotation done")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(network = %net.name, error = %e, "automatic key rotation failed; retrying later")
                }
            }
        }
    }
}
