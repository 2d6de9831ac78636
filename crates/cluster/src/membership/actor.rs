//! The membership task: keeps the lease alive, mirrors the watch into published views, runs the
//! handle's commands, heals this member's own records, resumes a lost watch from the last
//! revision, and after a lost session reconnects with backoff and resynchronises.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::WatchStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::session::{claim_member, mac_key, mac_value, put_mac, republish, Session, WatchMessage};
use super::{Command, Config, Shared, BACKOFF_CAP, BACKOFF_START};
use crate::records::{MacRecord, MemberRecord};
use crate::store::Store;
use crate::view::{ClusterView, Mirror};
use crate::{Error, Result};

/// A value this member wrote to one of its own keys, and the revision of that write: healing
/// compares the mirror with it once the mirror has caught up with that revision.
#[derive(Debug, Clone)]
pub(super) struct Written {
    pub(super) value: Vec<u8>,
    pub(super) revision: i64,
}

/// Everything the task keeps across sessions.
pub(super) struct State {
    pub(super) store: Store,
    pub(super) cfg: Config,
    /// Published MACs by VNI, re-published after a lost lease.
    pub(super) macs: BTreeMap<u32, Vec<String>>,
    pub(super) mirror: Mirror,
    /// This member's own keys as it last wrote them.
    pub(super) own: BTreeMap<String, Written>,
    pub(super) shared: Arc<Shared>,
    /// MAC keys another live engine publishes too, already warned about.
    pub(super) shared_macs_warned: BTreeSet<String>,
}

impl State {
    /// Every published MAC with its VNI, copied out so the caller may change the state while it
    /// goes through them.
    pub(super) fn published_macs(&self) -> Vec<(u32, String)> {
        self.macs
            .iter()
            .flat_map(|(vni, list)| list.iter().map(|m| (*vni, m.clone())))
            .collect()
    }
}

enum Ended {
    Leave(oneshot::Sender<()>),
    /// The session is unusable (store gone, lease lost, watch compacted): reconnect.
    Failed(String),
    /// Retrying cannot help: stop, and tell the owner why.
    Fatal(Error),
}

pub(super) async fn run(
    mut state: State,
    mut session: Session,
    tx: watch::Sender<ClusterView>,
    mut cmds: mpsc::Receiver<Command>,
) {
    loop {
        match drive(&mut state, &mut session, &tx, &mut cmds).await {
            Ended::Leave(ack) => {
                let _ = state.store.lease_revoke(session.lease).await;
                let _ = ack.send(());
                return;
            }
            Ended::Fatal(e) => return stop(&state, e),
            Ended::Failed(reason) => {
                tracing::warn!(%reason, "store connection lost; keeping last view");
                tx.send_modify(|v| v.store_healthy = false);
            }
        }
        let mut backoff = BACKOFF_START;
        let previous = session.lease;
        session = loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(Command::Leave(ack)) => { let _ = ack.send(()); return; }
                    Some(Command::PublishMacs { vni, macs: list, reply }) => {
                        // Remembered now, written on re-registration.
                        state.macs.insert(vni, list);
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    Some(Command::SetNetworks { networks, reply }) => {
                        state.cfg.networks = networks;
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    Some(Command::SetKeyEpochs { epochs, reply }) => {
                        state.cfg.key_epochs = epochs;
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                },
            }
            match Session::establish(&mut state, Some(previous)).await {
                Ok(s) => break s,
                Err(e @ (Error::NotMember(..) | Error::NodeInUse { .. })) => {
                    return stop(&state, e);
                }
                Err(e) => {
                    tracing::debug!(error = %e, ?backoff, "reconnect failed");
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            }
        };
        state.shared.lease.store(session.lease, Ordering::Relaxed);
        tracing::info!(
            revision = session.revision,
            kept_lease = session.lease == previous,
            "store reconnected and resynchronised"
        );
        tx.send_replace(state.mirror.view(session.revision));
    }
}

/// Ends the task for good; dropping the view sender tells the owner, [`Shared::failure`] why.
fn stop(state: &State, e: Error) {
    match &e {
        Error::NotMember(..) => {
            tracing::error!(error = %e, "removed from the cluster while cut off from the store (`vxnet cluster rm`); not registering again")
        }
        _ => tracing::error!(error = %e, "leaving the cluster"),
    }
    if let Ok(mut f) = state.shared.failure.lock() {
        *f = Some(e);
    }
}

async fn drive(
    state: &mut State,
    s: &mut Session,
    tx: &watch::Sender<ClusterView>,
    cmds: &mut mpsc::Receiver<Command>,
) -> Ended {
    let ttl = Duration::from_secs(state.cfg.ttl.unsigned_abs());
    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(500)));
    let mut last_ack = Instant::now();
    let mut last_watch = Instant::now();
    loop {
        tokio::select! {
            msg = next_message(&mut s.held, &mut s.watch) => match msg {
                Ok(Some(resp)) => {
                    last_watch = Instant::now();
                    if resp.canceled() {
                        // Compacted past our revision (or refused): only a full resync recovers.
                        return Ended::Failed(format!(
                            "watch cancelled (compact revision {}): {}",
                            resp.compact_revision(),
                            resp.cancel_reason()
                        ));
                    }
                    if resp.events().is_empty() {
                        // A progress notification: every event up to its revision was sent.
                        if !resp.created() {
                            if let Some(h) = resp.header() {
                                s.revision = s.revision.max(h.revision());
                            }
                        }
                        continue;
                    }
                    s.revision = s.revision.max(state.mirror.apply(resp.events()));
                    drain(state, s);
                    tx.send_replace(state.mirror.view(s.revision));
                }
                Ok(None) => {
                    if let Err(e) = resume_watch(state, s, "watch stream closed").await {
                        return Ended::Failed(format!("watch: {e}"));
                    }
                    last_watch = Instant::now();
                }
                Err(e) => {
                    if let Err(e) = resume_watch(state, s, &e.to_string()).await {
                        return Ended::Failed(format!("watch: {e}"));
                    }
                    last_watch = Instant::now();
                }
            },
            ka = s.keepalive.message() => match ka {
                Ok(Some(r)) if r.ttl() > 0 => last_ack = Instant::now(),
                Ok(Some(_)) => return Ended::Failed("lease expired".into()),
                Ok(None) | Err(_) => {
                    // The endpoint went away; the lease lives in the cluster, not there.
                    match state.store.lease_keep_alive(s.lease).await {
                        Ok((keeper, stream)) => (s.keeper, s.keepalive) = (keeper, stream),
                        Err(e) => return Ended::Failed(format!("keep-alive: {e}")),
                    }
                }
            },
            _ = tick.tick() => {
                // No acknowledgement for a whole TTL means the lease is gone or the store is
                // silently partitioned away; either way only a fresh session helps.
                if last_ack.elapsed() > ttl {
                    return Ended::Failed("no keep-alive acknowledgement within the TTL".into());
                }
                if s.keeper.keep_alive().await.is_err() {
                    match state.store.lease_keep_alive(s.lease).await {
                        Ok((keeper, stream)) => (s.keeper, s.keepalive) = (keeper, stream),
                        Err(e) => return Ended::Failed(format!("keep-alive: {e}")),
                    }
                }
                // A watch that answers no progress request for a TTL is stuck on a member that
                // lost the others; resume it elsewhere.
                if last_watch.elapsed() > ttl || s.watch.request_progress().await.is_err() {
                    if let Err(e) = resume_watch(state, s, "no watch progress").await {
                        return Ended::Failed(format!("watch: {e}"));
                    }
                    last_watch = Instant::now();
                }
                match heal(state, s.lease, s.revision).await {
                    Ok(()) => {}
                    Err(e @ Error::NodeInUse { .. }) | Err(e @ Error::NotMember(..)) => return Ended::Fatal(e),
                    Err(e) if e.is_unreachable() => return Ended::Failed(format!("healing own records: {e}")),
                    Err(e) => tracing::warn!(error = %e, "could not restore this member's records"),
                }
            },
            cmd = cmds.recv() => match cmd {
                None => return Ended::Failed("handle dropped".into()),
                Some(Command::Leave(ack)) => return Ended::Leave(ack),
                Some(Command::PublishMacs { vni, macs: list, reply }) => {
                    let old = state.macs.insert(vni, list.clone()).unwrap_or_default();
                    let res = republish(state, s.lease, vni, &old, &list).await;
                    let failed = res.as_ref().err().map(|e| e.is_unreachable()).unwrap_or(false);
                    let _ = reply.send(res);
                    if failed {
                        return Ended::Failed("store unreachable while publishing MACs".into());
                    }
                }
                Some(Command::SetNetworks { networks, reply }) => {
                    state.cfg.networks = networks;
                    let res = claim_member(state, s.lease).await;
                    let failed = res.as_ref().err().map(|e| e.is_unreachable()).unwrap_or(false);
                    // An unreachable store is not the caller's problem: the record is rewritten
                    // on re-registration.
                    let _ = reply.send(if failed { Ok(()) } else { res });
                    if failed {
                        return Ended::Failed("store unreachable while updating networks".into());
                    }
                }
                Some(Command::SetKeyEpochs { epochs, reply }) => {
                    if state.cfg.key_epochs == epochs {
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    state.cfg.key_epochs = epochs;
                    let res = claim_member(state, s.lease).await;
                    let failed = res.as_ref().err().map(|e| e.is_unreachable()).unwrap_or(false);
                    // An unreachable store is not the caller's problem: the record is rewritten
                    // on re-registration.
                    let _ = reply.send(if failed { Ok(()) } else { res });
                    if failed {
                        return Ended::Failed("store unreachable while acknowledging keys".into());
                    }
                }
            },
        }
    }
}

/// Responses drained at most before one view is built, so a store that never stops changing
/// still lets the keep-alives and commands through.
const DRAIN_MAX: usize = 256;

/// The watch's next message: the one [`drain`] read ahead, if any.
async fn next_message(held: &mut Option<WatchMessage>, watch: &mut WatchStream) -> WatchMessage {
    match held.take() {
        Some(msg) => msg,
        None => watch.message().await,
    }
}

/// Applies the event batches the watch has ready now to the mirror, so that a burst of changes
/// (M endpoints registering) costs one view, O(N + M) to build, instead of one per change; the
/// first message that is not an event batch (a progress notification, a cancellation, the end,
/// an error) is kept for the watch arm to handle as usual.
fn drain(state: &mut State, s: &mut Session) {
    for _ in 0..DRAIN_MAX {
        let mut next = std::pin::pin!(s.watch.message());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let std::task::Poll::Ready(msg) = next.as_mut().poll(&mut cx) else {
            return;
        };
        match msg {
            Ok(Some(resp)) if !resp.canceled() && !resp.events().is_empty() => {
                s.revision = s.revision.max(state.mirror.apply(resp.events()));
            }
            other => {
                s.held = Some(other);
                return;
            }
        }
    }
}

/// Opens a new watch from the revision after the last one mirrored, on whichever endpoint
/// answers: no event is lost, and nothing is read twice.
async fn resume_watch(state: &State, s: &mut Session, why: &str) -> Result<()> {
    s.watch = state.store.watch_prefix(s.revision + 1).await?;
    s.held = None;
    tracing::info!(reason = %why, from_revision = s.revision + 1, "store watch resumed");
    Ok(())
}

/// Writes this member's records again where the store no longer has them as written: deleted,
/// or overwritten by someone who is not a live engine of this node. Another live engine holding
/// the member record with another VTEP is a collision ([`Error::NodeInUse`]); another live engine
/// publishing the same MAC is left alone with one warning (a MAC given twice by hand), since
/// taking it back would make the two fight.
async fn heal(state: &mut State, lease: i64, revision: i64) -> Result<()> {
    let member_key = state.store.key(&format!("members/{}", state.cfg.node_id));
    if let Some(w) = state.own.get(&member_key) {
        if w.revision <= revision {
            let current = state.mirror.raw(&member_key);
            if current != Some((w.value.as_slice(), lease)) {
                let was = describe(current.map(|(v, l)| (v.to_vec(), l)));
                // Any other live engine now holding the record is a second engine of this node
                // (even on this VTEP: a newer start on this host takes over).
                if let Some((value, other)) = current.filter(|(_, l)| *l != 0 && *l != lease) {
                    if let Ok(rec) = serde_json::from_slice::<MemberRecord>(value) {
                        return Err(Error::NodeInUse {
                            node: state.cfg.node_id.clone(),
                            vtep: rec.vtep,
                        });
                    }
                    tracing::debug!(
                        lease = other,
                        "unreadable member record under another lease"
                    );
                }
                claim_member(state, lease).await?;
                tracing::warn!(key = %member_key, %was, "this member's record had changed in the store; restored it");
            }
        }
    }
    let mine = mac_value(&state.cfg)?;
    for (vni, mac) in state.published_macs() {
        let key = mac_key(&state.store, &state.cfg.node_id, vni, &mac);
        let Some(w) = state.own.get(&key) else {
            continue;
        };
        if w.revision > revision {
            continue;
        }
        let current = state.mirror.raw(&key).map(|(v, l)| (v.to_vec(), l));
        if current
            .as_ref()
            .is_some_and(|(v, l)| *v == mine && *l == lease)
        {
            state.shared_macs_warned.remove(&key);
            continue;
        }
        if let Some(owner) = current
            .as_ref()
            .and_then(|(v, l)| live_publisher(state, v, *l, lease))
        {
            if state.shared_macs_warned.insert(key.clone()) {
                tracing::warn!(%mac, vni, node = %owner, "another live engine publishes this node's MAC too; leaving its record");
            }
            continue;
        }
        let was = describe(current);
        put_mac(state, lease, vni, &mac).await?;
        tracing::warn!(%key, %was, "this member's MAC record had changed in the store; restored it");
    }
    Ok(())
}

/// The node id of the MAC record `value` (under `lease`) if a live engine other than this member
/// wrote it: another node whose live member record has the VTEP the MAC record names.
fn live_publisher(state: &State, value: &[u8], lease: i64, own_lease: i64) -> Option<String> {
    if lease == 0 || lease == own_lease {
        return None;
    }
    let rec: MacRecord = serde_json::from_slice(value).ok()?;
    if rec.node_id == state.cfg.node_id {
        return None;
    }
    let member_key = state.store.key(&format!("members/{}", rec.node_id));
    let (member, member_lease) = state.mirror.raw(&member_key)?;
    let member: MemberRecord = serde_json::from_slice(member).ok()?;
    (member_lease != 0 && member.vtep == rec.vtep).then_some(rec.node_id)
}

fn describe(current: Option<(Vec<u8>, i64)>) -> String {
    match current {
        None => "deleted".into(),
        Some((v, l)) => format!("{} (lease {l})", String::from_utf8_lossy(&v)),
    }
}
