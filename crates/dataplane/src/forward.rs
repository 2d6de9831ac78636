//! The forwarding core: what to do with one frame from a TAP or one datagram from the wire.
//!
//! It performs no I/O and reads no clock (`now` is passed in), so every rule — flooding,
//! learning, peer filtering, MTU, VLAN policy — is tested without root. Workers call it per
//! packet and carry out the returned action.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;

use vxnet_encap::wire::VXLAN_HEADER_LEN;
use vxnet_encap::{decapsulate, InnerFrame, Vni};

use vxnet_encap::esp::DEFAULT_ESP_PORT;

use crate::counters::{DropCounters, DropReason, Events, PeerTable};
use crate::crypto::floors::ReplayFloors;
use crate::crypto::LogLimit;
use crate::fdb::{Learned, Millis};
use crate::network::Network;

/// Where a frame read from a TAP goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapAction {
    /// Known unicast destination: that VTEP only.
    Unicast(SocketAddr),
    /// Broadcast, multicast or unknown unicast: head-end replication to the network's flood list.
    Flood,
    Drop(DropReason),
}

/// What to do with a datagram received on the VXLAN port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireAction {
    /// Write `datagram[inner]` to the TAP of network `network`.
    Deliver {
        network: usize,
        inner: Range<usize>,
    },
    Drop(DropReason),
}

/// The forwarding state shared by all workers.
#[derive(Debug)]
pub struct Forwarder {
    /// Indexed like the workers' TAP queues.
    networks: Vec<Arc<Network>>,
    port: u16,
    local: IpAddr,
    accept_any: bool,
    /// Shared with the forwarder generations that follow this one (see `Forwarder::with_networks`).
    pub peers: Arc<PeerTable>,
    /// Drops not attributable to a network (bad header, unknown VNI).
    pub drops: Arc<DropCounters>,
    /// Where encrypted networks send to and listen on (RFC 3948 ESP-in-UDP).
    esp_port: u16,
    /// Rate limit of the engine-wide ESP warnings (ESP without an encrypted network here).
    pub esp_log: Arc<LogLimit>,
    /// Inbound SAs' replay floors, engine-wide: a network rebuilt keeps its SAs' floors.
    pub floors: Arc<ReplayFloors>,
}

/// What a datagram repeats of its run's previous one to share its fate: the VXLAN header, the
/// inner destination and source MACs and the EtherType (or 802.1Q TPID).
pub const RUN_KEY_LEN: usize = VXLAN_HEADER_LEN + 14;

/// The previous delivered datagram of a run (see [`Forwarder::from_wire_run`]) and the counts
/// not yet added. Reused across runs; holds no borrows.
#[derive(Debug, Clone)]
pub struct WireRun {
    key: [u8; RUN_KEY_LEN],
    len: usize,
    network: Option<usize>,
    sender: IpAddr,
    packets: u64,
    inner_bytes: u64,
}

impl Default for WireRun {
    fn default() -> Self {
        WireRun {
            key: [0; RUN_KEY_LEN],
            len: 0,
            network: None,
            sender: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            packets: 0,
            inner_bytes: 0,
        }
    }
}

const ETHERNET_HEADER: usize = 14;
const VLAN_TAG: usize = 4;

impl Forwarder {
    pub fn new(networks: Vec<Arc<Network>>, local: IpAddr, port: u16, accept_any: bool) -> Self {
        let forwarder = Forwarder {
            networks,
            port,
            local,
            accept_any,
            peers: Arc::new(PeerTable::new(4096)),
            drops: Arc::new(DropCounters::default()),
            esp_port: DEFAULT_ESP_PORT,
            esp_log: Arc::new(LogLimit::default()),
            floors: Arc::new(ReplayFloors::in_memory()),
        };
        forwarder.register_peers();
        forwarder
    }

    /// The ESP-in-UDP port of encrypted networks (default 4500).
    pub fn with_esp_port(mut self, port: u16) -> Self {
        self.esp_port = port;
        self
    }

    /// Where inbound SAs' replay floors are kept (default: in memory only).
    pub fn with_replay_floors(mut self, floors: Arc<ReplayFloors>) -> Self {
        self.floors = floors;
        self
    }

    /// The next generation when networks are added or removed at run time: same settings, and
    /// the same per-peer and engine-wide counters, so nothing counted so far is lost.
    pub(crate) fn with_networks(&self, networks: Vec<Arc<Network>>) -> Self {
        let forwarder = Forwarder {
            networks,
            port: self.port,
            local: self.local,
            accept_any: self.accept_any,
            peers: Arc::clone(&self.peers),
            drops: Arc::clone(&self.drops),
            esp_port: self.esp_port,
            esp_log: Arc::clone(&self.esp_log),
            floors: Arc::clone(&self.floors),
        };
        forwarder.register_peers();
        forwarder
    }

    /// Known peers get their counter rows up front, so `vxnet peers` lists them before traffic.
    fn register_peers(&self) {
        for network in &self.networks {
            for ip in &network.peers().allowed {
                let _ = self.peers.counters(*ip);
            }
        }
    }

    pub fn networks(&self) -> &[Arc<Network>] {
        &self.networks
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn local(&self) -> IpAddr {
        self.local
    }

    pub(crate) fn esp_port(&self) -> u16 {
        self.esp_port
    }

    pub(crate) fn accept_any(&self) -> bool {
        self.accept_any
    }

    pub(crate) fn network_index(&self, vni: Vni) -> Option<usize> {
        // A handful of networks per engine: a linear scan beats hashing.
        self.networks.iter().position(|n| n.vni() == vni)
    }

    /// Largest frame a network carries: its MTU plus the Ethernet header (plus a tag if allowed).
    fn max_frame(network: &Network, tagged: bool) -> usize {
        let tag = if tagged && network.settings.allow_vlan {
            VLAN_TAG
        } else {
            0
        };
        network.settings.mtu as usize + ETHERNET_HEADER + tag
    }

    /// Decides the fate of a frame read from network `index`'s TAP.
    pub fn from_tap(&self, index: usize, frame: &[u8]) -> TapAction {
        self.from_tap_frame(index, frame, false)
    }

    /// Like [`from_tap`](Self::from_tap); a `superframe` (TSO, to be segmented at the MSS) is
    /// exempt from the MTU check because each of its segments fits.
    // Named for where the frame comes from, like `from_tap` and `from_wire`.
    #[allow(clippy::wrong_self_convention)]
    pub(crate) fn from_tap_frame(&self, index: usize, frame: &[u8], superframe: bool) -> TapAction {
        self.from_tap_at(index, frame, superframe, None)
    }

    /// [`from_tap_frame`](Self::from_tap_frame) with storm control: at `now` (nanoseconds since
    /// the engine's epoch) a frame to flood over the network's `--bum-rate` is dropped as
    /// [`DropReason::BumRateLimited`]. Without `now` no limit applies.
    #[allow(clippy::wrong_self_convention)]
    pub fn from_tap_at(
        &self,
        index: usize,
        frame: &[u8],
        superframe: bool,
        now: Option<u64>,
    ) -> TapAction {
        let Some(network) = self.networks.get(index) else {
            return TapAction::Drop(DropReason::UnknownVni);
        };
        let mut action = Self::classify_tap(network, self.port, self.local, frame, superframe);
        if let (TapAction::Flood, Some(limiter), Some(now)) = (action, &network.bum_limiter, now) {
            if !limiter.admit(now) {
                action = TapAction::Drop(DropReason::BumRateLimited);
            }
        }
        match action {
            TapAction::Drop(reason) => network.drops.count(reason),
            TapAction::Flood => Events::bump(&network.events.flooded),
            TapAction::Unicast(_) => {}
        }
        action
    }

    fn classify_tap(
        network: &Network,
        port: u16,
        local: IpAddr,
        frame: &[u8],
        superframe: bool,
    ) -> TapAction {
        let Ok(inner) = InnerFrame::new(frame) else {
            return TapAction::Drop(DropReason::Runt);
        };
        let tagged = inner.is_vlan_tagged();
        if tagged && !network.settings.allow_vlan {
            return TapAction::Drop(DropReason::VlanTagged);
        }
        if !superframe && frame.len() > Self::max_frame(network, tagged) {
            return TapAction::Drop(DropReason::Oversize);
        }
        let destination = inner.destination();
        if !destination.is_multicast() {
            if let Some(vtep) = network.fdb.lookup(destination) {
                if vtep.is_ipv4() != local.is_ipv4() {
                    return TapAction::Drop(DropReason::WrongFamily);
                }
                return TapAction::Unicast(SocketAddr::new(vtep, port));
            }
        }
        if network.peers().flood.is_empty() {
            return TapAction::Drop(DropReason::NoPeers);
        }
        TapAction::Flood
    }

    /// Decides the fate of a datagram from `source`, learning its inner source MAC on the way.
    pub fn from_wire(&self, now: Millis, source: SocketAddr, datagram: &[u8]) -> WireAction {
        let action = self.classify_wire(now, source, datagram);
        if let WireAction::Deliver { network, inner } = &action {
            self.count_rx(*network, source.ip(), 1, inner.len() as u64);
        }
        action
    }

    /// [`from_wire`](Self::from_wire) for the datagrams of one UDP GRO read, which come from one
    /// sender and (for a TCP flow) repeat the same VXLAN header and inner Ethernet header. A
    /// datagram that repeats the previous delivered one's first [`RUN_KEY_LEN`] bytes and is
    /// no longer than it has the same fate: the VNI lookup, the peer check and learning (same
    /// MAC, same sender, same `now`) are skipped, and the counters are added once per run.
    /// Call [`end_run`](Self::end_run) after the last datagram.
    pub fn from_wire_run(
        &self,
        now: Millis,
        source: SocketAddr,
        datagram: &[u8],
        run: &mut WireRun,
    ) -> WireAction {
        self.run_step(now, source.ip(), None, datagram, run)
    }

    /// [`from_wire_run`](Self::from_wire_run) for a VXLAN packet that arrived in ESP and
    /// authenticated under an SA of network `network` sent by the VTEP `sender`: that VTEP, not
    /// the packet's source address, is the sender that is checked, learnt and counted, and the
    /// VNI must be `network`'s. Use a run of its own for the ESP socket's datagrams.
    pub fn from_esp_run(
        &self,
        now: Millis,
        network: usize,
        sender: IpAddr,
        datagram: &[u8],
        run: &mut WireRun,
    ) -> WireAction {
        self.run_step(now, sender, Some(network), datagram, run)
    }

    fn run_step(
        &self,
        now: Millis,
        sender: IpAddr,
        authenticated: Option<usize>,
        datagram: &[u8],
        run: &mut WireRun,
    ) -> WireAction {
        if let Some(network) = run.network {
            if run.sender == sender
                && datagram.len() <= run.len
                && datagram.get(..RUN_KEY_LEN) == Some(&run.key[..])
            {
                run.packets += 1;
                run.inner_bytes += (datagram.len() - VXLAN_HEADER_LEN) as u64;
                return WireAction::Deliver {
                    network,
                    inner: VXLAN_HEADER_LEN..datagram.len(),
                };
            }
        }
        self.end_run(run);
        let action = self.classify(now, sender, authenticated, datagram, false);
        if let WireAction::Deliver { network, inner } = &action {
            if let Some(key) = datagram.get(..RUN_KEY_LEN) {
                run.key.copy_from_slice(key);
                run.network = Some(*network);
                run.sender = sender;
                run.len = datagram.len();
                run.packets = 1;
                run.inner_bytes = inner.len() as u64;
            } else {
                self.count_rx(*network, sender, 1, inner.len() as u64);
            }
        }
        action
    }

    /// Adds what [`from_wire_run`](Self::from_wire_run) delivered to the counters and forgets
    /// the run.
    pub fn end_run(&self, run: &mut WireRun) {
        if let Some(network) = run.network.take() {
            self.count_rx(network, run.sender, run.packets, run.inner_bytes);
        }
    }

    /// Adds delivered traffic: `packets` inner frames of `inner` bytes in all. Every byte
    /// counter (network and peer, receive and send) counts inner Ethernet frame bytes, so one
    /// frame adds the same on both ends whatever the encapsulation (VXLAN, ESP) added.
    pub(crate) fn count_rx(&self, network: usize, sender: IpAddr, packets: u64, inner: u64) {
        if let Some(n) = self.networks.get(network) {
            n.traffic.rx_many(packets, inner);
        }
        self.peers.with(sender, |c| c.rx_many(packets, inner));
    }

    /// Longest datagram that can hold a single frame of any network: anything longer is a GRO
    /// run or a tunnel superframe (see [`from_wire_superframe`](Self::from_wire_superframe)).
    pub(crate) fn max_single_datagram(&self) -> usize {
        self.networks
            .iter()
            .map(|n| VXLAN_HEADER_LEN + Self::max_frame(n, true))
            .max()
            .unwrap_or(0)
    }

    /// [`from_wire`](Self::from_wire) for a datagram that carries one inner superframe (a kernel
    /// VTEP's UDP-tunnel GSO through a veth; the caller checked the shape): larger than the
    /// network's MTU by design, so that check is skipped. The caller counts what it delivers
    /// with [`count_rx`](Self::count_rx), in segments.
    #[allow(clippy::wrong_self_convention)]
    pub(crate) fn from_wire_superframe(
        &self,
        now: Millis,
        source: SocketAddr,
        datagram: &[u8],
    ) -> WireAction {
        self.classify(now, source.ip(), None, datagram, true)
    }

    /// Everything [`from_wire`](Self::from_wire) decides and learns, but not the delivered
    /// traffic counters.
    fn classify_wire(&self, now: Millis, source: SocketAddr, datagram: &[u8]) -> WireAction {
        self.classify(now, source.ip(), None, datagram, false)
    }

    /// `authenticated`: the network whose SA the datagram came in (ESP); `None` for plaintext
    /// VXLAN, which an encrypted network refuses.
    fn classify(
        &self,
        now: Millis,
        sender: IpAddr,
        authenticated: Option<usize>,
        datagram: &[u8],
        superframe: bool,
    ) -> WireAction {
        let decapsulated = match decapsulate(datagram) {
            Ok(d) => d,
            Err(e) => {
                let reason = DropReason::from(e);
                self.drops.count(reason);
                return WireAction::Drop(reason);
            }
        };
        let Some(index) = self.network_index(decapsulated.vni) else {
            self.drops.count(DropReason::UnknownVni);
            return WireAction::Drop(DropReason::UnknownVni);
        };
        let network = &self.networks[index];
        match authenticated {
            Some(sa_network) if sa_network != index => {
                // A holder of one network's key must not reach into another network.
                let reason = DropReason::EspWrongVni;
                if let Some(n) = self.networks.get(sa_network) {
                    n.drops.count(reason);
                }
                return WireAction::Drop(reason);
            }
            None if network.is_encrypted() => {
                let reason = DropReason::Unencrypted;
                network.drops.count(reason);
                if let Some(crypto) = &network.crypto {
                    if crypto.plaintext_log.allow(now) {
                        tracing::warn!(
                            network = %network.settings.name,
                            from = %sender,
                            "plaintext VXLAN for an encrypted network (the peer has no key for it, or someone forges it); dropped, nothing learnt"
                        );
                    }
                }
                return WireAction::Drop(reason);
            }
            _ => {}
        }
        let reason = if !self.accept_any && !network.peers().allows(sender) {
            Some(DropReason::NotPeer)
        } else {
            Self::check_inner(network, decapsulated.inner, superframe)
        };
        if let Some(reason) = reason {
            network.drops.count(reason);
            return WireAction::Drop(reason);
        }
        if network.settings.learning {
            // `check_inner` proved the frame holds an Ethernet header.
            if let Ok(inner) = InnerFrame::new(decapsulated.inner) {
                match network.fdb.learn(now, inner.source(), sender) {
                    Learned::New => Events::bump(&network.events.learned),
                    Learned::Moved { .. } => Events::bump(&network.events.moved),
                    Learned::Full => Events::bump(&network.events.fdb_full),
                    Learned::Refreshed | Learned::StaticKept | Learned::NotLearnable => {}
                }
            }
        }
        let inner_len = decapsulated.inner.len();
        WireAction::Deliver {
            network: index,
            inner: VXLAN_HEADER_LEN..VXLAN_HEADER_LEN + inner_len,
        }
    }

    fn check_inner(network: &Network, frame: &[u8], superframe: bool) -> Option<DropReason> {
        let Ok(inner) = InnerFrame::new(frame) else {
            return Some(DropReason::InnerTooShort);
        };
        if !inner.source().is_unicast() {
            return Some(DropReason::BadSourceMac);
        }
        let tagged = inner.is_vlan_tagged();
        if tagged && !network.settings.allow_vlan {
            return Some(DropReason::VlanTagged);
        }
        if !superframe && frame.len() > Self::max_frame(network, tagged) {
            return Some(DropReason::Oversize);
        }
        None
    }

    /// Counts what a worker managed to send for network `index`: `segments` datagrams (one
    /// UDP_SEGMENT send carries several) carrying inner frames of `bytes` in all (the same
    /// definition as [`count_rx`](Self::count_rx): no VXLAN header, no ESP).
    pub fn count_sent(&self, index: usize, dest: IpAddr, segments: usize, bytes: usize) {
        if let Some(network) = self.networks.get(index) {
            network.traffic.tx(segments as u64, bytes as u64);
        }
        self.peers
            .with(dest, |c| c.tx(segments as u64, bytes as u64));
    }
}
