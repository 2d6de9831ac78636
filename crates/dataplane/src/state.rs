//! What the engine shares with its control plane: the forwarding generation of the moment and
//! what the control socket and the metrics endpoint report about it.
//!
//! It sits below both sides: the engine ([`crate::engine`]) writes it and starts the control
//! plane; the control socket and the metrics endpoint ([`crate::control`]) only read it, so the
//! control side never imports the engine.

use crate::control::limits::ControlCounters;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::counters::{SourcePortCounters, SourcePortSnapshot};
use crate::fdb::Millis;
use crate::forward::Forwarder;
use crate::offload::{Offload, UdpGso};
use crate::underlay::{TunnelGsoReport, Underlay};

/// The engine's membership in an etcd-backed cluster, as its control plane last saw it; `None`
/// in static mode. Shown by `vxnet networks --json` and `vxnet stats --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Store endpoints, e.g. `etcd://10.0.0.1:2379`.
    pub store: String,
    pub cluster_id: String,
    pub node_id: String,
    /// False while the store is unreachable: forwarding goes on with the last known peers.
    pub store_healthy: bool,
    pub members_alive: usize,
    /// The store revision the applied view reflects.
    pub revision: i64,
}

/// A network served in bridge mode: its bridge and the pool endpoints' addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bridged {
    pub(crate) bridge: String,
    pub(crate) pool: Option<ipnet::IpNet>,
}

impl Bridged {
    pub(crate) fn of(network: &crate::config::NetworkConfig) -> Option<Bridged> {
        network.bridge.clone().map(|bridge| Bridged {
            bridge,
            pool: network.pool,
        })
    }
}

/// What the control plane reads: shared with the control socket handlers.
#[derive(Debug)]
pub struct EngineState {
    /// The current forwarding generation; replaced (never mutated) when networks change.
    forwarder: ArcSwap<Forwarder>,
    pub(crate) epoch: Instant,
    pub(crate) workers: usize,
    /// What the current generation uses ...
    offloads: Mutex<Vec<Offload>>,
    /// ... with UDP GSO as it is now: the workers switch it off when the kernel refuses it.
    gso: Arc<UdpGso>,
    /// `--address` (or cluster-assigned address) of each network, by network name.
    addresses: Mutex<BTreeMap<String, String>>,
    cluster: Mutex<Option<ClusterInfo>>,
    /// The bridge of each network served in bridge mode, by network name.
    bridges: Mutex<BTreeMap<String, Bridged>>,
    /// Endpoints attached through the control socket (`vxnet attach`, the CNI plugin); set once
    /// when the engine is told where to keep their records.
    endpoints: std::sync::OnceLock<Arc<crate::endpoint::Endpoints>>,
    /// Refusals of the control socket (`vxnet stats`: `control`).
    pub(crate) control_counters: ControlCounters,
    /// Times the workers were started again because one was gone (`engine::supervise`).
    pub(crate) worker_restarts: std::sync::atomic::AtomicU64,
    source_ports: std::sync::OnceLock<(SourcePortInfo, Arc<SourcePortCounters>)>,
    /// Names and neighbour entries of the networks, and the DNS service's counters.
    pub names: Arc<crate::names::NameService>,
    /// The tunnel-GSO path, when the start-up probe found it.
    tunnel: std::sync::OnceLock<Arc<Underlay>>,
}

/// The source-port range and socket budget, as `vxnet stats` reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePortInfo {
    /// `MIN-MAX`.
    pub range: String,
    /// Most sockets open at once.
    pub max_open: usize,
}

/// [`SourcePortInfo`] with the pool's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePortReport {
    #[serde(flatten)]
    pub info: SourcePortInfo,
    #[serde(flatten)]
    pub counters: SourcePortSnapshot,
}

impl EngineState {
    /// The state of an engine that serves no network yet: `forwarder` is the empty generation.
    pub(crate) fn new(
        forwarder: Forwarder,
        workers: usize,
        addresses: BTreeMap<String, String>,
        gso: Arc<UdpGso>,
    ) -> Self {
        EngineState {
            forwarder: ArcSwap::from_pointee(forwarder),
            epoch: Instant::now(),
            workers,
            offloads: Mutex::new(Vec::new()),
            gso,
            addresses: Mutex::new(addresses),
            cluster: Mutex::new(None),
            bridges: Mutex::new(BTreeMap::new()),
            endpoints: std::sync::OnceLock::new(),
            control_counters: ControlCounters::default(),
            worker_restarts: std::sync::atomic::AtomicU64::new(0),
            source_ports: std::sync::OnceLock::new(),
            names: Arc::new(crate::names::NameService::default()),
            tunnel: std::sync::OnceLock::new(),
        }
    }

    /// Set once at start: what `vxnet stats` reports of the source-port sockets.
    pub(crate) fn set_source_ports(&self, info: SourcePortInfo, counters: Arc<SourcePortCounters>) {
        let _ = self.source_ports.set((info, counters));
    }

    pub fn source_ports(&self) -> Option<SourcePortReport> {
        self.source_ports
            .get()
            .map(|(info, counters)| SourcePortReport {
                info: info.clone(),
                counters: counters.snapshot(),
            })
    }

    pub fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// The forwarder of this moment (a cheap `Arc` clone).
    pub fn forwarder(&self) -> Arc<Forwarder> {
        self.forwarder.load_full()
    }

    /// Makes `forwarder` the generation the control plane sees, with the offloads it uses.
    pub(crate) fn publish(&self, forwarder: Arc<Forwarder>, offloads: Vec<Offload>) {
        self.names.attach(Arc::clone(&forwarder));
        self.forwarder.store(forwarder);
        *lock(&self.offloads) = offloads;
    }

    /// The offloads in use at this moment.
    pub(crate) fn offloads(&self) -> Vec<Offload> {
        let gso = self.gso.in_use();
        let tunnel = self.tunnel.get().is_some_and(|t| t.active());
        lock(&self.offloads)
            .iter()
            .copied()
            .filter(|o| *o != Offload::UdpGso || gso)
            .filter(|o| *o != Offload::TunnelGso || tunnel)
            .collect()
    }

    /// Set once at start when the tunnel-GSO path is offered.
    pub(crate) fn set_tunnel(&self, underlay: Arc<Underlay>) {
        let _ = self.tunnel.set(underlay);
    }

    /// What the tunnel-GSO path did, when it is offered.
    pub(crate) fn tunnel_gso(&self) -> Option<TunnelGsoReport> {
        self.tunnel.get().map(|t| t.report())
    }

    pub(crate) fn address(&self, network: &str) -> Option<String> {
        lock(&self.addresses).get(network).cloned()
    }

    pub(crate) fn set_address(&self, network: &str, address: Option<String>) {
        let mut addresses = lock(&self.addresses);
        match address {
            Some(address) => addresses.insert(network.to_string(), address),
            None => addresses.remove(network),
        };
    }

    pub(crate) fn bridge(&self, network: &str) -> Option<Bridged> {
        lock(&self.bridges).get(network).cloned()
    }

    pub(crate) fn set_bridge(&self, network: &str, bridge: Option<Bridged>) {
        let mut bridges = lock(&self.bridges);
        match bridge {
            Some(bridge) => bridges.insert(network.to_string(), bridge),
            None => bridges.remove(network),
        };
    }

    pub(crate) fn endpoints(&self) -> Option<&Arc<crate::endpoint::Endpoints>> {
        self.endpoints.get()
    }

    pub(crate) fn set_endpoints(&self, endpoints: Arc<crate::endpoint::Endpoints>) -> bool {
        self.endpoints.set(endpoints).is_ok()
    }

    pub(crate) fn cluster(&self) -> Option<ClusterInfo> {
        lock(&self.cluster).clone()
    }

    pub(crate) fn set_cluster(&self, info: Option<ClusterInfo>) {
        *lock(&self.cluster) = info;
    }
}

/// A poisoned lock only means another control-plane call panicked mid-update; the data is
/// still the best there is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_offloads_follow_a_run_time_gso_refusal() {
        let gso = UdpGso::new(true);
        let forwarder = Forwarder::new(Vec::new(), "10.0.0.1".parse().unwrap(), 4789, false);
        let state = EngineState::new(forwarder, 1, BTreeMap::new(), Arc::clone(&gso));
        let generation = vec![Offload::TapVnetHdr, Offload::UdpGso, Offload::UdpGro];
        state.publish(state.forwarder(), generation);
        assert_eq!(
            state.offloads(),
            [Offload::TapVnetHdr, Offload::UdpGso, Offload::UdpGro]
        );
        // A worker sees the kernel refuse a UDP_SEGMENT send: reported at once, no new
        // generation needed.
        gso.refused();
        assert_eq!(state.offloads(), [Offload::TapVnetHdr, Offload::UdpGro]);
    }
}
