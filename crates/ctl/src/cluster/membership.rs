//! Live membership: the interface between the control plane and the packet engine.
//!
//! [`Membership::register`] grants a lease, writes `members/<node_id>` under it, keeps the lease
//! alive and watches the whole cluster prefix, publishing a [`ClusterView`] on a
//! `tokio::sync::watch` channel. If the store goes away the last view stays published (so
//! forwarding carries on) with `store_healthy = false`; a background task reconnects with
//! exponential backoff (capped at 2 s), re-registers, re-publishes MACs and resynchronises (full
//! read, then a watch from that revision). A reconnect first tries to keep the old lease: when the
//! store comes back before it expired, peers never see this member disappear.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp, WatchOptions, WatchStream,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::store::{self, MacRecord, MemberRecord, NetworkDef, NodeRecord, Store};
use super::token::Role;
use super::{Error, Result};

/// Default lease TTL: a host that stops renewing disappears from every view this long after.
pub const DEFAULT_TTL_SECS: i64 = 10;
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Short enough that a member is back well within a test-sized lease TTL after an outage, so it
/// can keep its lease; one connection attempt every 2 s is no load for etcd.
const BACKOFF_CAP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: String,
    /// The VTEP (underlay) address: from the live registration, or for a node that is down, the
    /// `--local` it joined with, if any.
    pub vtep: Option<IpAddr>,
    pub networks: Vec<String>,
    pub role: Option<Role>,
    /// Registered under a live lease right now.
    pub alive: bool,
}

/// A local MAC some member published for a VNI, so peers can install a static FDB entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacEntry {
    pub vni: u32,
    pub mac: String,
    pub vtep: IpAddr,
    pub node_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub cluster_id: String,
    pub members: Vec<Member>,
    pub networks: Vec<NetworkDef>,
    pub macs: Vec<MacEntry>,
    /// False while the store is unreachable; everything else is then the last known state.
    pub store_healthy: bool,
    /// The etcd revision this view reflects.
    pub revision: i64,
}

impl ClusterView {
    pub fn network(&self, name: &str) -> Option<&NetworkDef> {
        self.networks.iter().find(|n| n.name == name)
    }

    pub fn network_by_vni(&self, vni: u32) -> Option<&NetworkDef> {
        self.networks.iter().find(|n| n.vni == vni)
    }

    /// Live members with a known VTEP.
    pub fn alive(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.alive && m.vtep.is_some())
    }

    /// The head-end replication list for `vni`: VTEPs of live members (other than `self_node`)
    /// serving the network that has this VNI.
    pub fn flood_list(&self, vni: u32, self_node: &str) -> Vec<IpAddr> {
        let Some(net) = self.network_by_vni(vni) else {
            return Vec::new();
        };
        let mut out: Vec<IpAddr> = self
            .alive()
            .filter(|m| m.node_id != self_node && m.networks.contains(&net.name))
            .filter_map(|m| m.vtep)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every live member's VTEP: the underlay addresses VXLAN may be accepted from.
    pub fn peer_allow_list(&self, self_node: &str) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .alive()
            .filter(|m| m.node_id != self_node)
            .filter_map(|m| m.vtep)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Builds a view from the raw keys under the cluster prefix. Records that do not parse are
    /// skipped (and logged) rather than poisoning the whole view.
    pub fn from_kvs<'a>(
        cluster_id: &str,
        kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        revision: i64,
    ) -> ClusterView {
        let prefix = store::prefix(cluster_id);
        let mut nodes: BTreeMap<String, NodeRecord> = BTreeMap::new();
        let mut live: BTreeMap<String, MemberRecord> = BTreeMap::new();
        let mut networks = Vec::new();
        let mut macs = Vec::new();
        for (key, value) in kvs {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            // A record must match its key and be in range: the store only ever writes such
            // records, and anything else (a hand edit, another version's bug) must not reach
            // the engine, e.g. as a network name that is no interface name.
            let res: std::result::Result<(), String> = (|| {
                let json = |e: serde_json::Error| e.to_string();
                if let Some(id) = rest.strip_prefix("nodes/") {
                    let rec: NodeRecord = serde_json::from_slice(value).map_err(json)?;
                    if rec.node_id != id {
                        return Err(format!("node id {:?} under another key", rec.node_id));
                    }
                    nodes.insert(id.to_owned(), rec);
                } else if let Some(id) = rest.strip_prefix("members/") {
                    let rec: MemberRecord = serde_json::from_slice(value).map_err(json)?;
                    if rec.node_id != id {
                        return Err(format!("node id {:?} under another key", rec.node_id));
                    }
                    live.insert(id.to_owned(), rec);
                } else if let Some(name) = rest.strip_prefix("networks/") {
                    let def: NetworkDef = serde_json::from_slice(value).map_err(json)?;
                    super::network::validate_name(&def.name).map_err(|e| e.to_string())?;
                    if def.name != name {
                        return Err(format!("network {:?} under another key", def.name));
                    }
                    if def.vni > super::network::VNI_MAX {
                        return Err(format!("VNI {} out of range", def.vni));
                    }
                    networks.push(def);
                } else if let Some(m) = rest.strip_prefix("macs/") {
                    let Some((vni_key, mac)) = m.split_once('/') else {
                        return Err("not macs/<vni>/<mac>".into());
                    };
                    let vni: u32 = vni_key.parse().map_err(|_| "bad VNI in key")?;
                    let canonical = mac
                        .parse::<vxnet_encap::MacAddr>()
                        .is_ok_and(|parsed| parsed.to_string() == mac);
                    if vni.to_string() != vni_key || !canonical {
                        return Err("key not in the form the store writes".into());
                    }
                    let rec: MacRecord = serde_json::from_slice(value).map_err(json)?;
                    macs.push(MacEntry {
                        vni,
                        mac: mac.to_owned(),
                        vtep: rec.vtep,
                        node_id: rec.node_id,
                    });
                }
                Ok(())
            })();
            if let Err(e) = res {
                tracing::warn!(key, error = %e, "skipping corrupt record");
            }
        }
        let mut members: Vec<Member> = live
            .values()
            .map(|m| Member {
                node_id: m.node_id.clone(),
                vtep: Some(m.vtep),
                networks: m.networks.clone(),
                role: Some(m.role),
                alive: true,
            })
            .collect();
        members.extend(
            nodes
                .values()
                .filter(|n| !live.contains_key(&n.node_id))
                .map(|n| Member {
                    node_id: n.node_id.clone(),
                    vtep: n.local,
                    networks: Vec::new(),
                    role: Some(n.role),
                    alive: false,
                }),
        );
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        networks.sort();
        macs.sort_by(|a, b| (a.vni, &a.mac).cmp(&(b.vni, &b.mac)));
        ClusterView {
            cluster_id: cluster_id.to_owned(),
            members,
            networks,
            macs,
            store_healthy: true,
            revision,
        }
    }
}

/// Formats a MAC the way keys and views carry it.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Registration options; [`Membership::register`] uses the defaults.
#[derive(Debug, Clone)]
pub struct Membership {
    pub ttl_secs: i64,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            ttl_secs: DEFAULT_TTL_SECS,
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    endpoints: Vec<String>,
    cluster_id: String,
    node_id: String,
    vtep: IpAddr,
    networks: Vec<String>,
    role: Role,
    ttl: i64,
}

enum Command {
    PublishMacs {
        vni: u32,
        macs: Vec<String>,
        reply: oneshot::Sender<Result<()>>,
    },
    SetNetworks {
        networks: Vec<String>,
        reply: oneshot::Sender<Result<()>>,
    },
    Leave(oneshot::Sender<()>),
}

/// Owns the background task. Dropping it aborts the task without revoking the lease, exactly
/// like a crashed host: the member disappears when the lease expires. Call
/// [`MembershipHandle::leave`] for a clean, immediate departure.
#[derive(Debug)]
pub struct MembershipHandle {
    node_id: String,
    view: watch::Receiver<ClusterView>,
    cmd: mpsc::Sender<Command>,
    task: Option<JoinHandle<()>>,
    lease: Arc<AtomicI64>,
    endpoints: Vec<String>,
}

impl Membership {
    /// Registers with the default TTL. Fails if the store is unreachable now or if `node_id`
    /// never joined the cluster (no `nodes/<node_id>`: a wrong token cannot get one).
    pub async fn register(
        store: &Store,
        node_id: &str,
        vtep: IpAddr,
        networks: Vec<String>,
    ) -> Result<MembershipHandle> {
        Membership::default()
            .start(store, node_id, vtep, networks)
            .await
    }

    pub async fn start(
        &self,
        store: &Store,
        node_id: &str,
        vtep: IpAddr,
        networks: Vec<String>,
    ) -> Result<MembershipHandle> {
        let node: NodeRecord = store
            .get_json(&store.key(&format!("nodes/{node_id}")))
            .await?
            .ok_or_else(|| Error::NotMember(node_id.to_owned(), store.cluster_id().to_owned()))?;
        let cfg = Config {
            endpoints: store.endpoints().to_vec(),
            cluster_id: store.cluster_id().to_owned(),
            node_id: node_id.to_owned(),
            vtep,
            networks,
            role: node.role,
            ttl: self.ttl_secs.max(2),
        };
        let macs = BTreeMap::new();
        let session = Session::establish(store, &cfg, &macs, None).await?;
        let lease = Arc::new(AtomicI64::new(session.lease));
        let (tx, rx) = watch::channel(session.view(&cfg));
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let endpoints = cfg.endpoints.clone();
        let task = tokio::spawn(run(cfg, session, macs, tx, cmd_rx, Arc::clone(&lease)));
        Ok(MembershipHandle {
            node_id: node_id.to_owned(),
            view: rx,
            cmd: cmd_tx,
            task: Some(task),
            lease,
            endpoints,
        })
    }
}

impl MembershipHandle {
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// A receiver of every view change; `borrow()` gives the current one.
    pub fn view(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    pub fn current(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    /// Replaces this node's published MACs for `vni` (under its lease). Kept locally too, so they
    /// are re-published after a store outage.
    pub async fn publish_macs(&self, vni: u32, macs: &[[u8; 6]]) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        let macs = macs.iter().map(format_mac).collect();
        self.cmd
            .send(Command::PublishMacs { vni, macs, reply })
            .await
            .map_err(|_| Error::Invalid("membership task has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Invalid("membership task has stopped".into()))?
    }

    /// Replaces the networks this member says it serves (its `members/` record), e.g. when the
    /// engine starts or stops serving one. Kept locally too, for re-registration after an outage.
    pub async fn set_networks(&self, networks: Vec<String>) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::SetNetworks { networks, reply })
            .await
            .map_err(|_| Error::Invalid("membership task has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Invalid("membership task has stopped".into()))?
    }

    /// The lease currently holding this member's keys (it changes only when a reconnect could
    /// not keep the old one).
    pub fn lease_id(&self) -> i64 {
        self.lease.load(Ordering::Relaxed)
    }

    /// The store endpoints this member registered with.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Revokes the lease (the member key and its MACs vanish at once) and stops the task.
    pub async fn leave(mut self) {
        let (ack, rx) = oneshot::channel();
        if self.cmd.send(Command::Leave(ack)).await.is_ok() {
            let _ = tokio::time::timeout(store::OP_TIMEOUT * 2, rx).await;
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for MembershipHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One connected period: a lease, its keep-alive stream, a watch and the mirrored keys.
struct Session {
    store: Store,
    lease: i64,
    keeper: LeaseKeeper,
    keepalive: LeaseKeepAliveStream,
    watch: WatchStream,
    kvs: BTreeMap<String, Vec<u8>>,
    revision: i64,
}

impl Session {
    async fn establish(
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

    fn view(&self, cfg: &Config) -> ClusterView {
        ClusterView::from_kvs(
            &cfg.cluster_id,
            self.kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            self.revision,
        )
    }
}

async fn put_member(store: &Store, cfg: &Config, lease: i64) -> Result<()> {
    let record = MemberRecord {
        node_id: cfg.node_id.clone(),
        vtep: cfg.vtep,
        networks: cfg.networks.clone(),
        role: cfg.role,
        updated: super::now_secs(),
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

enum Ended {
    Leave(oneshot::Sender<()>),
    Failed(String),
}

async fn run(
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

async fn republish(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_from_kvs() {
        let p = store::prefix("c1");
        let node = serde_json::to_vec(&NodeRecord {
            node_id: "b".into(),
            role: Role::Worker,
            local: Some("10.0.0.2".parse().unwrap()),
            joined: 0,
        })
        .unwrap();
        let member = serde_json::to_vec(&MemberRecord {
            node_id: "a".into(),
            vtep: "10.0.0.1".parse().unwrap(),
            networks: vec!["blue".into()],
            role: Role::Manager,
            updated: 0,
        })
        .unwrap();
        let net = serde_json::to_vec(&NetworkDef {
            name: "blue".into(),
            vni: 4096,
            subnet: None,
        })
        .unwrap();
        let keys = [
            (format!("{p}nodes/b"), node),
            (format!("{p}members/a"), member),
            (format!("{p}networks/blue"), net),
            (format!("{p}networks/bad"), b"{".to_vec()),
        ];
        let v = ClusterView::from_kvs(
            "c1",
            keys.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            7,
        );
        assert_eq!(v.members.len(), 2);
        assert!(v.members[0].alive && !v.members[1].alive);
        assert_eq!(v.networks.len(), 1);
        assert_eq!(
            v.flood_list(4096, "x"),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(v.flood_list(4096, "a").is_empty());
        assert_eq!(
            format_mac(&[0, 1, 2, 0xaa, 0xbb, 0xcc]),
            "00:01:02:aa:bb:cc"
        );
    }
}
