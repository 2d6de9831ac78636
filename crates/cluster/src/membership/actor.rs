//! The membership task: keeps the lease alive, mirrors the watch into published views, runs the
//! handle's commands, and after a lost connection reconnects with backoff and resynchronises.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::EventType;
use tokio::sync::{mpsc, oneshot, watch};

use super::session::{put_member, republish, Session};
use super::{Command, Config, BACKOFF_CAP, BACKOFF_START};
use crate::store::Store;
use crate::view::ClusterView;
use crate::Error;

enum Ended {
    Leave(oneshot::Sender<()>),
    Failed(String),
}

pub(super) async fn run(
    mut cfg: Config,
    mut session: Session,
    mut macs: BTreeMap<u32, Vec<String>>,
    tx: watch::Sender<ClusterView>,
    mut cmds: mpsc::Receiver<Command>,
    lease_id: Arc<AtomicI64>,
) {
    loop {
        match drive(&mut cfg, &mut session, &mut macs, &tx, &mut cmds).await {
            Ended::Leave(ack) => {
                let mut c = session.store.client();
                let _ = session.store.op(c.lease_revoke(session.lease)).await;
                let _ = ack.send(());
                return;
            }
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
                        macs.insert(vni, list);
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    Some(Command::SetNetworks { networks, reply }) => {
                        cfg.networks = networks;
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                },
            }
            let attempt = async {
                let store = Store::connect(&cfg.endpoints, &cfg.cluster_id).await?;
                Session::establish(&store, &cfg, &macs, Some(previous)).await
            };
            match attempt.await {
                Ok(s) => break s,
                Err(e @ Error::NotMember(..)) => {
                    // Retrying cannot help; ending the task stops `vxnet run` with this reason.
                    tracing::error!(error = %e, "removed from the cluster while cut off from the store (`vxnet cluster rm`); not registering again");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, ?backoff, "reconnect failed");
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            }
        };
        lease_id.store(session.lease, Ordering::Relaxed);
        tracing::info!(
            revision = session.revision,
            kept_lease = session.lease == previous,
            "store reconnected and resynchronised"
        );
        tx.send_replace(session.view(&cfg));
    }
}

async fn drive(
    cfg: &mut Config,
    s: &mut Session,
    macs: &mut BTreeMap<u32, Vec<String>>,
    tx: &watch::Sender<ClusterView>,
    cmds: &mut mpsc::Receiver<Command>,
) -> Ended {
    let ttl = Duration::from_secs(cfg.ttl.unsigned_abs());
    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(500)));
    let mut last_ack = Instant::now();
    loop {
        tokio::select! {
            msg = s.watch.message() => match msg {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        // E.g. compacted past our revision: only a full resync can recover.
                        return Ended::Failed(format!("watch cancelled: {}", resp.cancel_reason()));
                    }
                    if let Some(h) = resp.header() {
                        s.revision = s.revision.max(h.revision());
                    }
                    if resp.events().is_empty() {
                        continue;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Ok(key) = kv.key_str() else { continue };
                        match ev.event_type() {
                            EventType::Put => { s.kvs.insert(key.to_owned(), kv.value().to_vec()); }
                            EventType::Delete => { s.kvs.remove(key); }
                        }
                    }
                    tx.send_replace(s.view(cfg));
                }
                Ok(None) => return Ended::Failed("watch stream closed".into()),
                Err(e) => return Ended::Failed(format!("watch: {e}")),
            },
            ka = s.keepalive.message() => match ka {
                Ok(Some(r)) if r.ttl() > 0 => last_ack = Instant::now(),
                Ok(Some(_)) => return Ended::Failed("lease expired".into()),
                Ok(None) => return Ended::Failed("keep-alive stream closed".into()),
                Err(e) => return Ended::Failed(format!("keep-alive: {e}")),
            },
            _ = tick.tick() => {
                // No acknowledgement for a whole TTL means the lease is gone or the store is
                // silently partitioned away; either way only a fresh session helps.
                if last_ack.elapsed() > ttl {
                    return Ended::Failed("no keep-alive acknowledgement within the TTL".into());
                }
                if let Err(e) = s.keeper.keep_alive().await {
                    return Ended::Failed(format!("keep-alive send: {e}"));
                }
            },
            cmd = cmds.recv() => match cmd {
                None => return Ended::Failed("handle dropped".into()),
                Some(Command::Leave(ack)) => return Ended::Leave(ack),
                Some(Command::PublishMacs { vni, macs: list, reply }) => {
                    let old = macs.insert(vni, list.clone()).unwrap_or_default();
                    let res = republish(&s.store, cfg, s.lease, vni, &old, &list).await;
                    let failed = res.as_ref().err().map(|e| e.is_unreachable()).unwrap_or(false);
                    let _ = reply.send(res);
                    if failed {
                        return Ended::Failed("store unreachable while publishing MACs".into());
                    }
                }
                Some(Command::SetNetworks { networks, reply }) => {
                    cfg.networks = networks;
                    let res = put_member(&s.store, cfg, s.lease).await;
                    let failed = res.as_ref().err().map(|e| e.is_unreachable()).unwrap_or(false);
                    // An unreachable store is not the caller's problem: the record is rewritten
                    // on re-registration.
                    let _ = reply.send(if failed { Ok(()) } else { res });
                    if failed {
                        return Ended::Failed("store unreachable while updating networks".into());
                    }
                }
            },
        }
    }
}
