//! Following the cluster read-only: the view as it changes, without a lease, a member record or
//! anything else written (`vxnet cluster watch` without `--local`). An engine of this node may
//! run meanwhile: nothing here claims its node id.

use std::time::Duration;

use crate::error::Result;
use crate::store::Store;
use crate::view::{ClusterView, Mirror};

/// Wait before reading the whole prefix again after the watch broke.
const RESYNC_DELAY: Duration = Duration::from_secs(1);

/// Calls `emit` with the whole view, then again after every change, until `emit` returns false.
/// A broken watch is resumed with a fresh full read (so nothing is missed, even across a
/// compaction); only a failing first read is an error.
pub async fn follow(store: &Store, mut emit: impl FnMut(&ClusterView) -> bool) -> Result<()> {
    let mut mirror = Mirror::new(store.cluster_id());
    let mut first = true;
    loop {
        let read = async {
            let (kvs, revision) = store.list("").await?;
            let watch = store.watch_prefix(revision + 1).await?;
            Ok::<_, crate::Error>((kvs, revision, watch))
        };
        let (kvs, mut revision, mut watch) = match read.await {
            Ok(read) => read,
            Err(e) if first => return Err(e),
            Err(e) => {
                tracing::warn!("cluster watch: {e}; retrying");
                tokio::time::sleep(RESYNC_DELAY).await;
                continue;
            }
        };
        first = false;
        mirror.load(kvs);
        if !emit(&mirror.view(revision)) {
            return Ok(());
        }
        loop {
            match watch.message().await {
                Ok(Some(resp)) if resp.canceled() => {
                    tracing::warn!("cluster watch cancelled: {}", resp.cancel_reason());
                    break;
                }
                Ok(Some(resp)) if resp.events().is_empty() => {}
                Ok(Some(resp)) => {
                    revision = revision.max(mirror.apply(resp.events()));
                    if !emit(&mirror.view(revision)) {
                        return Ok(());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("cluster watch: {e}; reading the cluster again");
                    break;
                }
            }
        }
        tokio::time::sleep(RESYNC_DELAY).await;
    }
}
