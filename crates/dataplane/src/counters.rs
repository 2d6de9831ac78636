//! Packet counters: per network, per peer, and drops by reason. All relaxed atomics: they are
//! statistics, read rarely by the control socket, written by the workers.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why a frame or datagram was dropped. Each is counted on its own: an operator must be able to
/// tell an attack (not_peer) from a misconfiguration (unknown_vni) from an MTU problem (oversize).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Datagram shorter than the 8-byte VXLAN header.
    TooShort,
    /// VXLAN I flag clear.
    NoVniFlag,
    /// Inner frame shorter than an Ethernet header.
    InnerTooShort,
    /// No network serves the VNI.
    UnknownVni,
    /// Sender is not a known peer of that network (and `--accept-any` is off).
    NotPeer,
    /// Inner frame carries an 802.1Q/802.1ad tag and the network does not allow it.
    VlanTagged,
    /// Frame larger than the network's MTU allows; VTEPs never fragment.
    Oversize,
    /// Inner source MAC is multicast/broadcast/zero: invalid as a source, never learned.
    BadSourceMac,
    /// Datagram did not fit the receive buffer.
    Truncated,
    /// Frame from the TAP shorter than an Ethernet header.
    Runt,
    /// Flood with nobody to flood to.
    NoPeers,
    /// Destination VTEP of another address family than the local socket.
    WrongFamily,
    /// Writing to the TAP failed.
    TapWrite,
    /// Sending to the underlay failed.
    SendError,
    /// A TAP frame with a virtio-net header the segmenter refused (malformed or unsupported).
    BadOffload,
    /// A broadcast, multicast or unknown-unicast frame over the network's `--bum-rate`.
    BumRateLimited,
    /// A frame larger than the path MTU to its VTEP allows, with DF: answered with ICMP
    /// frag-needed / packet-too-big into the TAP (rate-limited), never fragmented.
    TooBig,
}

impl DropReason {
    pub const ALL: [DropReason; 17] = [
        DropReason::TooShort,
        DropReason::NoVniFlag,
        DropReason::InnerTooShort,
        DropReason::UnknownVni,
        DropReason::NotPeer,
        DropReason::VlanTagged,
        DropReason::Oversize,
        DropReason::BadSourceMac,
        DropReason::Truncated,
        DropReason::Runt,
        DropReason::NoPeers,
        DropReason::WrongFamily,
        DropReason::TapWrite,
        DropReason::SendError,
        DropReason::BadOffload,
        DropReason::BumRateLimited,
        DropReason::TooBig,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::NoVniFlag => "no_vni_flag",
            DropReason::InnerTooShort => "inner_too_short",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::NotPeer => "not_peer",
            DropReason::VlanTagged => "vlan_tagged",
            DropReason::Oversize => "oversize",
            DropReason::BadSourceMac => "bad_source_mac",
            DropReason::Truncated => "truncated",
            DropReason::Runt => "runt",
            DropReason::NoPeers => "no_peers",
            DropReason::WrongFamily => "wrong_family",
            DropReason::TapWrite => "tap_write",
            DropReason::SendError => "send_error",
            DropReason::BadOffload => "bad_offload",
            DropReason::BumRateLimited => "bum_rate_limited",
            DropReason::TooBig => "too_big",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
pub struct DropCounters([AtomicU64; DropReason::ALL.len()]);

impl DropCounters {
    pub fn count(&self, reason: DropReason) {
        self.0[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()].load(Ordering::Relaxed)
    }

    /// Every reason with its count (zeros included, so scripts can rely on the keys).
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), self.get(*r)))
            .collect()
    }

    pub fn total(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.get(*r)).sum()
    }
}

/// rx = from the wire to the TAP, tx = from the TAP to the wire (one per destination copy).
#[derive(Debug, Default)]
pub struct Traffic {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
}

impl Traffic {
    pub fn rx(&self, bytes: usize) {
        self.rx_many(1, bytes as u64);
    }

    /// `packets` received frames of `bytes` in all (a run counted at once).
    pub fn rx_many(&self, packets: u64, bytes: u64) {
        self.rx_packets.fetch_add(packets, Ordering::Relaxed);
        self.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn tx(&self, packets: u64, bytes: u64) {
        self.tx_packets.fetch_add(packets, Ordering::Relaxed);
        self.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// Forwarding events that are not drops.
#[derive(Debug, Default)]
pub struct Events {
    /// Frames sent to every peer (broadcast, multicast, unknown unicast).
    pub flooded: AtomicU64,
    pub learned: AtomicU64,
    pub moved: AtomicU64,
    /// New MACs not learned because the table was at `--max-fdb`.
    pub fdb_full: AtomicU64,
    /// TCP superframes read from the TAP (TSO) and cut into segments by vxnet ...
    pub tso_superframes: AtomicU64,
    /// ... and the segments they made.
    pub tso_segments: AtomicU64,
    /// UDP superframes read from the TAP (USO) and cut into datagrams by vxnet ...
    pub uso_superframes: AtomicU64,
    /// ... and the datagrams they made.
    pub uso_segments: AtomicU64,
    /// Runs of equal-size datagrams handed to the kernel in one `UDP_SEGMENT` send.
    pub gso_batches: AtomicU64,
    /// UDP GRO reads that carried more than one VXLAN datagram.
    pub gro_batches: AtomicU64,
    /// Superframes coalesced from received TCP segments and written to the TAP ...
    pub coalesced_superframes: AtomicU64,
    /// ... and the segments merged into them.
    pub coalesced_segments: AtomicU64,
    /// Received inner TCP/UDP checksums a kernel VTEP on this machine left partial (for a NIC
    /// that a veth is not) and vxnet completed.
    pub partial_checksums: AtomicU64,
    /// Datagrams from a kernel VTEP on this machine that carried a whole inner superframe
    /// (UDP-tunnel GSO through a veth), written to the TAP unsplit ...
    pub tunnel_superframes: AtomicU64,
    /// ... and the segments they stand for.
    pub tunnel_segments: AtomicU64,
    /// ICMP frag-needed / packet-too-big replies written into the TAP (path-MTU signalling).
    pub too_big_replies: AtomicU64,
}

impl Events {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The source-port sockets (`--srcport`): how many are open and what happened to them.
/// Engine-wide; written by the workers' shared pool, read by `vxnet stats`.
#[derive(Debug, Default)]
pub struct SourcePortCounters {
    /// Sockets open now.
    pub open: AtomicU64,
    /// Sockets bound since start.
    pub bound: AtomicU64,
    /// Sockets closed to stay under the cap (the file-descriptor budget).
    pub evicted: AtomicU64,
    /// Sockets closed because no flow used them for a while.
    pub idle_closed: AtomicU64,
    /// Hashed ports another program held (the flow left from a nearby port).
    pub port_busy: AtomicU64,
}

impl SourcePortCounters {
    pub fn snapshot(&self) -> SourcePortSnapshot {
        SourcePortSnapshot {
            open: self.open.load(Ordering::Relaxed),
            bound: self.bound.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            idle_closed: self.idle_closed.load(Ordering::Relaxed),
            port_busy: self.port_busy.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePortSnapshot {
    pub open: u64,
    pub bound: u64,
    pub evicted: u64,
    pub idle_closed: u64,
    pub port_busy: u64,
}

/// Per-remote-VTEP counters.
pub type PeerCounters = Traffic;

/// Remote VTEPs by address. A peer gets counters when it is configured or first heard from;
/// the number of peers heard from is bounded so `--accept-any` cannot be made to grow it forever.
#[derive(Debug)]
pub struct PeerTable {
    map: papaya::HashMap<IpAddr, Arc<PeerCounters>, foldhash::fast::RandomState>,
    limit: usize,
}

impl PeerTable {
    pub fn new(limit: usize) -> Self {
        PeerTable {
            map: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .build(),
            limit,
        }
    }

    /// The counters of `peer`, created on first use while under the limit.
    pub fn counters(&self, peer: IpAddr) -> Option<Arc<PeerCounters>> {
        let map = self.map.pin();
        if let Some(c) = map.get(&peer) {
            return Some(Arc::clone(c));
        }
        if map.len() >= self.limit {
            return None;
        }
        Some(Arc::clone(map.get_or_insert_with(peer, || {
            Arc::new(PeerCounters::default())
        })))
    }

    /// Applies `f` to the peer's counters without cloning the Arc (the per-packet path).
    pub fn with<F: FnOnce(&PeerCounters)>(&self, peer: IpAddr, f: F) {
        let map = self.map.pin();
        if let Some(c) = map.get(&peer) {
            f(c);
            return;
        }
        drop(map);
        if let Some(c) = self.counters(peer) {
            f(&c);
        }
    }

    pub fn snapshot(&self) -> Vec<(IpAddr, TrafficSnapshot)> {
        let mut rows: Vec<_> = self
            .map
            .pin()
            .iter()
            .map(|(ip, c)| (*ip, c.snapshot()))
            .collect();
        rows.sort_by_key(|(ip, _)| *ip);
        rows
    }
}
