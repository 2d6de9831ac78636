//! Leaving the cluster when the owner of a membership goes away, also from inside a runtime.

use std::time::Duration;

use super::MembershipHandle;
use crate::store::Store;
use crate::Error;

/// Owns the membership; when dropped (SIGINT/SIGTERM, or an error) revokes the lease so the
/// other hosts drop this one at once rather than when the lease expires. Dropping runs inside
/// the engine's runtime, which cannot be blocked on, so the revoke runs on its own thread with
/// its own connection, bounded in time.
#[derive(Debug)]
pub struct LeaveOnDrop {
    handle: MembershipHandle,
}

impl LeaveOnDrop {
    pub fn new(handle: MembershipHandle) -> LeaveOnDrop {
        LeaveOnDrop { handle }
    }

    pub fn handle(&self) -> &MembershipHandle {
        &self.handle
    }
}

const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        // The task first, so it cannot register again under a new lease after the revoke.
        self.handle.abort();
        let lease = self.handle.lease_id();
        // A connection of its own: the handle's belongs to the runtime that is shutting down.
        let access = self.handle.store().access().clone();
        let cluster_id = self.handle.store().cluster_id().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("vxnet-leave".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let res = rt.block_on(async {
                    let store = Store::connect_with(&access, &cluster_id).await?;
                    store.lease_revoke(lease).await?;
                    Ok::<(), Error>(())
                });
                let _ = tx.send(res);
            });
        if spawned.is_err() {
            return;
        }
        match rx.recv_timeout(LEAVE_TIMEOUT) {
            Ok(Ok(())) => tracing::info!("left the cluster"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not leave the cluster cleanly; peers drop this host when its lease expires")
            }
            Err(_) => tracing::warn!(
                "leaving the cluster timed out; peers drop this host when its lease expires"
            ),
        }
    }
}
