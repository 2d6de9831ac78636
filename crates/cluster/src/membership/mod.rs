//! Live membership: how a running engine takes part in the cluster.
//!
//! [`Membership::register`] grants a lease, writes `members/<node_id>` under it, keeps the lease
//! alive and watches the whole cluster prefix, publishing a [`ClusterView`] on a
//! `tokio::sync::watch` channel.
//! - A lost watch resumes from the last revision seen (another store member if need be), so no
//!   event is lost; a watch that cannot resume (compacted) means a full resync.
//! - If the store goes away the last view stays published (so forwarding carries on) with
//!   `store_healthy = false`; the task reconnects with exponential backoff (capped at 2 s),
//!   re-registers, re-publishes MACs and resynchronises (full read, then a watch from that
//!   revision). A reconnect first tries to keep the old lease: when the store comes back before it
//!   expired, peers never see this member disappear.
//! - Its own records heal: a member or MAC record that vanishes or is changed by someone else is
//!   written again within a third of the lease TTL.
//! - A node id is one engine: registering refuses (and a running member stops) when another live
//!   engine holds the node's member record with another VTEP, e.g. a VM cloned with its state dir.
//!
//! [`MembershipHandle`] is the caller's side; the task itself is in `actor` (the keep-alive /
//! watch / command loop, healing and reconnecting) and `session` (what one connected period holds,
//! and the writes made under the lease).

mod actor;
mod leave;
mod session;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use std::sync::Mutex;

use vxnet_encap::MacAddr;

use super::admission::Admitter;
use super::records::NodeRecord;
use super::store::{self, Store};
use super::token::Role;
use super::view::{ClusterView, Mirror};
use super::{Error, Result};
use session::Session;

pub use session::check_free;

pub use leave::LeaveOnDrop;

/// Default lease TTL: a host that stops renewing disappears from every view this long after.
pub const DEFAULT_TTL_SECS: i64 = 10;
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Short enough that a member is back well within a test-sized lease TTL after an outage, so it
/// can keep its lease; one connection attempt every 2 s is no load for etcd.
const BACKOFF_CAP: Duration = Duration::from_secs(2);

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
    node_id: String,
    vtep: IpAddr,
    networks: Vec<String>,
    role: Role,
    ttl: i64,
    /// The newest key epoch held per encrypted network (the rotation's acknowledgement).
    key_epochs: BTreeMap<String, u32>,
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
    SetKeyEpochs {
        epochs: BTreeMap<String, u32>,
        reply: oneshot::Sender<Result<()>>,
    },
    Leave(oneshot::Sender<()>),
}

/// What the task shares with its handle.
#[derive(Debug, Default)]
struct Shared {
    /// The lease currently holding this member's keys.
    lease: AtomicI64,
    /// Why the task stopped on its own, for the owner to report.
    failure: Mutex<Option<Error>>,
}

/// The lease currently holding a member's keys, readable without its [`MembershipHandle`].
#[derive(Debug, Clone)]
pub struct LeaseRef(Arc<Shared>);

impl LeaseRef {
    pub fn id(&self) -> i64 {
        self.0.lease.load(Ordering::Relaxed)
    }
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
    shared: Arc<Shared>,
    store: Store,
    /// Admits joining nodes while this member runs, on a manager holding the admin identity.
    admitter: Option<Admitter>,
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
            node_id: node_id.to_owned(),
            vtep,
            networks,
            role: node.role,
            ttl: self.ttl_secs.max(2),
            key_epochs: BTreeMap::new(),
        };
        let mut state = actor::State {
            store: store.clone(),
            cfg,
            macs: BTreeMap::new(),
            mirror: Mirror::new(store.cluster_id()),
            own: BTreeMap::new(),
            shared: Arc::new(Shared::default()),
            shared_macs_warned: Default::default(),
        };
        let session = Session::establish(&mut state, None).await?;
        state.shared.lease.store(session.lease, Ordering::Relaxed);
        let (tx, rx) = watch::channel(state.mirror.view(session.revision));
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let shared = Arc::clone(&state.shared);
        let task = tokio::spawn(actor::run(state, session, tx, cmd_rx));
        let admitter = if node.role == Role::Manager {
            Admitter::start_if_admin(store).await
        } else {
            None
        };
        Ok(MembershipHandle {
            admitter,
            node_id: node_id.to_owned(),
            view: rx,
            cmd: cmd_tx,
            task: Some(task),
            shared,
            store: store.clone(),
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
        let macs = macs.iter().map(|m| MacAddr(*m).to_string()).collect();
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

    /// Acknowledges the key rings the engine now holds: per encrypted network, the newest epoch
    /// (written into this member's record, so it is restored with it after an outage). A key
    /// rotation switches senders to a new key only once every live member serving the network
    /// acknowledged it.
    pub async fn set_key_epochs(&self, epochs: BTreeMap<String, u32>) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::SetKeyEpochs { epochs, reply })
            .await
            .map_err(|_| Error::Invalid("membership task has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Invalid("membership task has stopped".into()))?
    }

    /// The lease currently holding this member's keys (it changes only when a reconnect could
    /// not keep the old one).
    pub fn lease_id(&self) -> i64 {
        self.shared.lease.load(Ordering::Relaxed)
    }

    /// A handle on [`lease_id`](Self::lease_id) that others can keep (the endpoint registry
    /// writes its records under the member's lease).
    pub fn lease(&self) -> LeaseRef {
        LeaseRef(Arc::clone(&self.shared))
    }

    /// The store this member registered with.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Why the task stopped on its own (removed from the cluster, node id taken by another
    /// engine), once it has; `None` while it runs.
    pub fn failure(&self) -> Option<Error> {
        self.shared.failure.lock().ok().and_then(|mut f| f.take())
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

impl MembershipHandle {
    /// Stops the task without revoking the lease.
    fn abort(&mut self) {
        self.admitter = None;
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for MembershipHandle {
    fn drop(&mut self) {
        self.abort();
    }
}
