//! One overlay network (one VNI, one TAP) and the peers it floods to and accepts from.
//!
//! The peer set is read on every packet and changed rarely (config, `fdb add`, the cluster
//! store), so it is an immutable snapshot behind `ArcSwap`: readers never lock, writers build a
//! new snapshot and swap it in.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use vxnet_encap::Vni;

use crate::counters::{DropCounters, Events, Traffic};
use crate::crypto::NetworkCrypto;
use crate::fdb::Fdb;
use crate::keyring::KeyRing;
use crate::neighbors::NeighborTable;
use crate::storm::RateLimiter;

/// Who a network floods to and accepts VXLAN from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSet {
    /// Head-end replication list: broadcast, multicast and unknown unicast go to each.
    pub flood: Vec<SocketAddr>,
    /// Sources accepted on receive (sorted): flood peers plus static FDB destinations.
    pub allowed: Vec<IpAddr>,
}

impl PeerSet {
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        self.allowed.binary_search(&ip).is_ok()
    }
}

/// Where the peers come from; the snapshot is their union. Owned by the control plane.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerSources {
    /// `--remote` / `remotes = [...]`.
    pub(crate) configured: Vec<IpAddr>,
    /// All-zeros FDB entries (`vxnet fdb add 00:00:00:00:00:00 --dst IP`), as with the kernel.
    pub(crate) flood_entries: Vec<IpAddr>,
    /// Members of the cluster serving this network.
    pub(crate) cluster: Vec<IpAddr>,
}

/// Static settings of a network, fixed at start.
#[derive(Debug, Clone)]
pub struct NetworkSettings {
    pub name: String,
    pub vni: Vni,
    pub dev: String,
    /// TAP MTU: the largest inner IP packet; frames may be this + 14 (+4 when tagged) bytes.
    pub mtu: u32,
    pub allow_vlan: bool,
    pub learning: bool,
    pub max_fdb: usize,
    /// Storm control: frames per second this network may flood (`--bum-rate`); `None`: no limit.
    pub bum_rate: Option<u32>,
}

#[derive(Debug)]
pub struct Network {
    pub settings: NetworkSettings,
    pub fdb: Fdb,
    pub traffic: Traffic,
    pub events: Events,
    pub drops: DropCounters,
    /// The storm-control bucket when `settings.bum_rate` is set, shared by every worker.
    pub bum_limiter: Option<RateLimiter>,
    /// Encrypted networks only: keys and SAs. Fixed at creation (turning encryption on or off
    /// rebuilds the network), the keys within it are not.
    pub crypto: Option<NetworkCrypto>,
    /// IP -> MAC of the network's endpoints and hosts: ARP/ND answered locally.
    pub neighbors: NeighborTable,
    peers: ArcSwap<PeerSet>,
    sources: Mutex<PeerSources>,
    local: IpAddr,
    port: u16,
}

impl Network {
    pub fn new(
        settings: NetworkSettings,
        local: IpAddr,
        port: u16,
        configured: Vec<IpAddr>,
    ) -> Self {
        let network = Network {
            fdb: Fdb::new(settings.max_fdb),
            bum_limiter: settings.bum_rate.map(RateLimiter::new),
            settings,
            traffic: Traffic::default(),
            events: Events::default(),
            drops: DropCounters::default(),
            crypto: None,
            neighbors: NeighborTable::default(),
            peers: ArcSwap::from_pointee(PeerSet::default()),
            sources: Mutex::new(PeerSources {
                configured,
                ..PeerSources::default()
            }),
            local,
            port,
        };
        network.rebuild_peers();
        network
    }

    /// Makes a network being built an encrypted one (before it is shared).
    pub fn encrypted(mut self, ring: KeyRing) -> Self {
        self.crypto = Some(NetworkCrypto::new(ring));
        self
    }

    pub fn is_encrypted(&self) -> bool {
        self.crypto.is_some()
    }

    pub(crate) fn vni(&self) -> Vni {
        self.settings.vni
    }

    /// The current peer snapshot. Lock-free.
    pub fn peers(&self) -> arc_swap::Guard<Arc<PeerSet>> {
        self.peers.load()
    }

    /// Changes the peer sources and publishes a new snapshot.
    pub(crate) fn update_sources<F: FnOnce(&mut PeerSources)>(&self, f: F) {
        {
            let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut sources);
        }
        self.rebuild_peers();
    }

    pub(crate) fn sources(&self) -> PeerSources {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Recomputes the snapshot; call after static FDB entries change too.
    pub fn rebuild_peers(&self) {
        let sources = self.sources();
        let mut flood: Vec<IpAddr> = sources
            .configured
            .iter()
            .chain(&sources.flood_entries)
            .chain(&sources.cluster)
            .copied()
            // Our own address may be listed by the cluster or a shared config file.
            .filter(|ip| *ip != self.local)
            .collect();
        flood.sort();
        flood.dedup();
        let mut allowed = flood.clone();
        allowed.extend(self.fdb.static_destinations());
        allowed.sort();
        allowed.dedup();
        self.peers.store(Arc::new(PeerSet {
            flood: flood
                .into_iter()
                .map(|ip| SocketAddr::new(ip, self.port))
                .collect(),
            allowed,
        }));
    }
}
