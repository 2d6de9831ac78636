//! etcd access: the connection, bounded calls that fail over between endpoints, and the cluster's
//! key prefix. Everything of one cluster lives under `/vxnet/<cluster_id>/`; the records and their
//! keys are in [`records`](crate::records).
//!
//! Why not etcd-client's own multi-endpoint client: its balanced channel dispatches calls to an
//! endpoint that is down as readily as to a live one (with one of three members killed, most CLI
//! calls failed with "tcp connect error"), and it has no notion of retrying elsewhere. So the
//! store keeps one client per endpoint, sends every call to the endpoint that last answered, and
//! on a transport failure tries the next endpoint in turn. Streams (watch, lease keep-alive) are
//! opened the same way, on an endpoint that answers.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, GetOptions, KeyValue, LeaseKeepAliveStream, LeaseKeeper, PutOptions,
    Txn, TxnResponse, WatchOptions, WatchStream,
};
use serde::de::DeserializeOwned;

use super::access::StoreAccess;
use super::records::{self, MemberRecord, Meta, NetworkDef, NodeRecord, Record};
use super::{Error, Result};

mod errors;
use errors::{answer, chain, classify, compacted, stale_token, Class};

/// Every store call is bounded: a call to an endpoint that went away otherwise waits forever,
/// and a CLI command or the membership loop must notice an outage instead.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// A dead endpoint on a LAN refuses or times out quickly; the next one is tried after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a call may be sent again to another endpoint after a transport failure whose outcome
/// is unknown (the request may have been applied). Calls that were never sent are always retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads, plain puts and deletes, lease calls: applying twice is applying once.
    Idempotent,
    /// Create-only transactions: a second try after an applied first one would report a
    /// conflict with itself.
    IfNotSent,
}

/// A connection to the cluster's part of the store. Cheap to clone (shared clients).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    access: StoreAccess,
    urls: Vec<String>,
    options: ConnectOptions,
    /// One client per endpoint, connected on first use, and again after etcd's auth store
    /// changed under its token.
    clients: Vec<std::sync::Mutex<Option<Client>>>,
    /// The endpoint that answered last: calls go there first.
    preferred: AtomicUsize,
    cluster_id: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("access", &self.inner.access)
            .field("cluster_id", &self.inner.cluster_id)
            .finish()
    }
}

/// Operations per transaction when a batch is split: etcd refuses more than 128 by default
/// (`--max-txn-ops`).
pub(crate) const TXN_OPS: usize = 120;

/// Keys per page of a full read ([`Store::list`]): about 350 KiB of endpoint records, well under
/// gRPC's 4 MiB message limit even with larger values.
pub(crate) const PAGE_KEYS: i64 = 1000;
/// Full reads started again after a compaction overtook them. Each needs a compaction of its
/// own during the read (a few pages, tens of milliseconds): a store compacting that often for
/// this long is broken, and the read fails with etcd's error.
const COMPACTED_RETRIES: u32 = 10;

/// The end of the range of every key starting with `prefix` (etcd's convention: the prefix
/// with its last byte below 0xff incremented; `\0` for "to the end of the key space").
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub fn prefix(cluster_id: &str) -> String {
    format!("/vxnet/{cluster_id}/")
}

impl Store {
    /// Connects to `endpoints` over plain http and checks that one of them answers.
    pub async fn connect(endpoints: &[String], cluster_id: &str) -> Result<Store> {
        Store::connect_with(&StoreAccess::plain(endpoints), cluster_id).await
    }

    /// Connects as `access` says (TLS, credentials) and checks that one endpoint answers.
    pub async fn connect_with(access: &StoreAccess, cluster_id: &str) -> Result<Store> {
        let endpoints = &access.endpoints;
        if endpoints.is_empty() {
            return Err(Error::BadEndpoint(String::new()));
        }
        if let Some(tls) = &access.tls {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            crate::tls_check::check(tls, now).map_err(|reason| Error::Tls {
                endpoints: endpoints.join(","),
                reason,
            })?;
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(OP_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            // A member cut off from the others' quorum fails calls (and cancels watches)
            // instead of serving a stale view, so the call moves to another member.
            .with_require_leader(true);
        let store = Store {
            inner: Arc::new(Inner {
                urls: access.urls(),
                options: access.options(options),
                access: access.clone(),
                clients: endpoints.iter().map(|_| Default::default()).collect(),
                // Spread engines over the members rather than all on the first one.
                preferred: AtomicUsize::new(rand::random::<usize>() % endpoints.len()),
                cluster_id: cluster_id.to_owned(),
            }),
        };
        // A cheap read proves the store is there; errors surface now rather than mid-command.
        store.get_raw(&store.key("meta")).await?;
        Ok(store)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.access.endpoints
    }

    /// How this store is reached, to connect again from elsewhere (another runtime).
    pub fn access(&self) -> &StoreAccess {
        &self.inner.access
    }

    pub fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    pub fn prefix(&self) -> String {
        prefix(&self.inner.cluster_id)
    }

    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix())
    }

    /// The store could not be talked to because of `reason`; a TLS failure is named as such.
    fn unreachable(&self, reason: String) -> Error {
        let endpoints = self.inner.access.endpoints.join(",");
        match self
            .inner
            .access
            .tls
            .as_ref()
            .and_then(|tls| crate::tls_check::explain(&reason, tls.identity.is_some()))
        {
            Some(reason) => Error::Tls { endpoints, reason },
            None => Error::Unreachable { endpoints, reason },
        }
    }

    async fn client_at(&self, i: usize) -> Result<Client, etcd_client::Error> {
        let inner = &self.inner;
        let cached = inner.clients[i].lock().ok().and_then(|c| c.clone());
        if let Some(c) = cached {
            return Ok(c);
        }
        let c = Client::connect([inner.urls[i].as_str()], Some(inner.options.clone())).await?;
        if let Ok(mut slot) = inner.clients[i].lock() {
            *slot = Some(c.clone());
        }
        Ok(c)
    }

    /// Drops endpoint `i`'s client, so the next call connects (and authenticates) again.
    fn forget_client(&self, i: usize) {
        if let Ok(mut slot) = self.inner.clients[i].lock() {
            *slot = None;
        }
    }

    /// Runs `call` on the preferred endpoint, then on each other one in turn while it fails with
    /// a transport error (for [`Retry::IfNotSent`] only errors that prove the request never left).
    /// Each try is bounded by [`OP_TIMEOUT`]; the endpoint that answers becomes the preferred one.
    pub async fn call<T, F, Fut>(&self, retry: Retry, mut call: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.inner.access.endpoints.len();
        let first = self.inner.preferred.load(Ordering::Relaxed) % n;
        let mut last = None;
        let mut fresh_token = false;
        let mut order = (0..n).map(|k| (first + k) % n);
        let mut next = order.next();
        while let Some(i) = next {
            let attempt = async {
                let client = self.client_at(i).await?;
                call(client).await
            };
            let result = tokio::time::timeout(OP_TIMEOUT, attempt).await;
            // etcd refuses a token issued before its users or roles last changed (a node
            // admitted, a role upgraded); logging in again is all it takes. Once per call.
            if matches!(&result, Ok(Err(e)) if stale_token(e)) && !fresh_token {
                fresh_token = true;
                self.forget_client(i);
                continue;
            }
            next = order.next();
            let failure = match result {
                Ok(Ok(v)) => {
                    self.inner.preferred.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Err(e)) => match classify(&e) {
                    Class::Answer => return Err(answer(e)),
                    Class::NotSent => chain(&e),
                    Class::Unknown if retry == Retry::Idempotent => chain(&e),
                    Class::Unknown => return Err(self.unreachable(chain(&e))),
                },
                Err(_) if retry == Retry::Idempotent => {
                    format!("no answer within {}s", OP_TIMEOUT.as_secs())
                }
                Err(_) => {
                    return Err(
                        self.unreachable(format!("no answer within {}s", OP_TIMEOUT.as_secs()))
                    )
                }
            };
            tracing::debug!(endpoint = %self.inner.access.endpoints[i], reason = %failure, "store endpoint failed; trying the next");
            last = Some(failure);
        }
        Err(self.unreachable(last.unwrap_or_default()))
    }

    pub async fn get_raw(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        let mut resp = self
            .call(Retry::Idempotent, |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(resp.take_kvs().into_iter().next())
    }

    /// The JSON value at `key`; a value that does not parse is [`Error::Corrupt`].
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get_raw(key).await? {
            Some(kv) => decode(&kv).map(Some),
            None => Ok(None),
        }
    }

    /// All keys under `<prefix><sub>`, and the store revision they were read at.
    pub async fn list(&self, sub: &str) -> Result<(Vec<KeyValue>, i64)> {
        self.range_all(&self.key(sub), false).await
    }

    /// The keys (without values) under `<prefix><sub>`, with the cluster prefix removed.
    pub async fn list_keys(&self, sub: &str) -> Result<Vec<String>> {
        let prefix = self.prefix();
        Ok(self
            .range_all(&self.key(sub), true)
            .await?
            .0
            .iter()
            .filter_map(|kv| Some(kv.key_str().ok()?.strip_prefix(&prefix)?.to_owned()))
            .collect())
    }

    /// Every key under `prefix` (a full key), read in pages of [`PAGE_KEYS`] at the revision of
    /// the first page, so the result is one consistent snapshot however large: one response
    /// holding a whole cluster of 10 000 endpoints would pass gRPC's 4 MiB message limit, and
    /// one page is also bounded in time by [`OP_TIMEOUT`] on a loaded store.
    ///
    /// A compaction between two pages (etcd's `--auto-compaction-*`, an operator's `etcdctl
    /// compact`) refuses the next page at the snapshot's revision; the read then starts over at
    /// the current one, up to [`COMPACTED_RETRIES`] times, rather than failing the resync that
    /// needed it.
    async fn range_all(&self, prefix: &str, keys_only: bool) -> Result<(Vec<KeyValue>, i64)> {
        let mut retries = 0;
        loop {
            match self.range_snapshot(prefix, keys_only).await {
                Err(Error::Etcd(e)) if compacted(&e) && retries < COMPACTED_RETRIES => {
                    retries += 1;
                    tracing::debug!(
                        prefix,
                        retries,
                        "store compacted during a paged read; reading again"
                    );
                }
                result => return result,
            }
        }
    }

    /// One paged read of everything under `prefix`, at the revision of its first page.
    async fn range_snapshot(&self, prefix: &str, keys_only: bool) -> Result<(Vec<KeyValue>, i64)> {
        let end = prefix_end(prefix.as_bytes());
        let mut start = prefix.as_bytes().to_vec();
        let mut out = Vec::new();
        let mut revision = 0;
        loop {
            let mut resp = self
                .call(Retry::Idempotent, |mut c| {
                    let mut opts = GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(PAGE_KEYS)
                        .with_revision(revision);
                    if keys_only {
                        opts = opts.with_keys_only();
                    }
                    let start = start.clone();
                    async move { c.get(start, Some(opts)).await }
                })
                .await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = resp.more();
            let page = resp.take_kvs();
            match page.last() {
                Some(last) if more => {
                    // The next page starts right after the last key read.
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => {
                    out.extend(page);
                    return Ok((out, revision));
                }
            }
            out.extend(page);
        }
    }

    /// Puts `value` at `key` (a full key), under `lease` if given; returns the revision written.
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: Option<i64>) -> Result<i64> {
        let key = key.to_owned();
        let resp = self
            .call(Retry::Idempotent, |mut c| {
                let (key, value) = (key.clone(), value.clone());
                let opts = lease.map(|l| PutOptions::new().with_lease(l));
                async move { c.put(key, value, opts).await }
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    pub async fn txn(&self, retry: Retry, txn: Txn) -> Result<TxnResponse> {
        self.call(retry, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    pub async fn lease_grant(&self, ttl: i64) -> Result<i64> {
        let resp = self
            .call(Retry::Idempotent, |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await?;
        Ok(resp.id())
    }

    /// The lease's remaining seconds; -1 once it expired (etcd's answer for unknown leases).
    pub async fn lease_ttl(&self, id: i64) -> Result<i64> {
        let resp = self
            .call(Retry::Idempotent, |mut c| async move {
                c.lease_time_to_live(id, None).await
            })
            .await?;
        Ok(resp.ttl())
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<()> {
        self.call(Retry::Idempotent, |mut c| async move {
            c.lease_revoke(id).await
        })
        .await?;
        Ok(())
    }

    /// Opens a keep-alive stream for `lease` on an endpoint that answers.
    pub async fn lease_keep_alive(
        &self,
        lease: i64,
    ) -> Result<(LeaseKeeper, LeaseKeepAliveStream)> {
        self.call(Retry::Idempotent, |mut c| async move {
            c.lease_keep_alive(lease).await
        })
        .await
    }

    /// Watches everything under the cluster prefix from `start_revision` on, on an endpoint that
    /// answers.
    pub async fn watch_prefix(&self, start_revision: i64) -> Result<WatchStream> {
        let key = self.prefix();
        self.call(Retry::Idempotent, |mut c| {
            let key = key.clone();
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(start_revision);
            async move { c.watch(key, Some(opts)).await }
        })
        .await
    }

    pub async fn meta(&self) -> Result<Meta> {
        self.get_json(&self.key("meta"))
            .await?
            .ok_or_else(|| Error::NoCluster(self.inner.cluster_id.clone()))
    }

    /// The valid records under `<prefix><sub>`; invalid ones are skipped with a warning each, so
    /// one bad record does not make `network ls` or `network rm` fail.
    async fn records(&self, sub: &str) -> Result<Vec<Record>> {
        let (kvs, _) = self.list(sub).await?;
        let prefix = self.prefix();
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                match records::decode(key.strip_prefix(&prefix)?, kv.value()) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(key, error = %e, "skipping invalid store record");
                        None
                    }
                }
            })
            .collect())
    }

    pub async fn networks(&self) -> Result<Vec<NetworkDef>> {
        let mut nets: Vec<NetworkDef> = self
            .records("networks/")
            .await?
            .into_iter()
            .filter_map(|r| match r {
                Record::Network(def) => Some(def),
                _ => None,
            })
            .collect();
        nets.sort();
        Ok(nets)
    }

    pub async fn members(&self) -> Result<Vec<MemberRecord>> {
        Ok(self
            .records("members/")
            .await?
            .into_iter()
            .filter_map(|r| match r {
                Record::Member { record, .. } => Some(record),
                _ => None,
            })
            .collect())
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        Ok(self
            .records("nodes/")
            .await?
            .into_iter()
            .filter_map(|r| match r {
                Record::Node { record, .. } => Some(record),
                _ => None,
            })
            .collect())
    }
}

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(kv.value()).map_err(|source| Error::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        source,
    })
}
