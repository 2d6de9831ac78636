//! Packet counters: per network, per peer, and drops by reason. All relaxed atomics: they are
//! statistics, read rarely by the control socket, written by the workers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vxnet_encap::{DecapError, EncapError, Layer};

/// Why a frame or datagram was dropped. Each is counted on its own: an operator must be able to
/// tell an attack (not_peer) from a misconfiguration (unknown_vni) from an MTU problem (oversize).
/// Serialized as its [`name`](DropReason::name); ordered by name, so reports list reasons
/// alphabetically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// The TAP could not take the frame for now (EAGAIN, ENOBUFS): the stack behind it is
    /// behind.
    TapFull,
    /// Datagrams the kernel dropped before vxnet read them: a receive socket's buffer was
    /// full (SO_RXQ_OVFL), the receive loop was behind.
    SocketOverflow,
    /// Sending to the underlay failed.
    SendError,
    /// A TAP frame with a virtio-net header the segmenter refused (malformed or unsupported).
    BadOffload,
    /// A broadcast, multicast or unknown-unicast frame over the network's `--bum-rate`.
    BumRateLimited,
    /// A frame larger than the path MTU to its VTEP allows, with DF: answered with ICMP
    /// frag-needed / packet-too-big into the TAP (rate-limited), never fragmented.
    TooBig,
    /// Plaintext VXLAN for an encrypted network: it accepts only authenticated packets.
    Unencrypted,
    /// On the ESP port: too short, misaligned, bad padding, a reserved SPI or not ESP at all.
    EspMalformed,
    /// An SPI no inbound SA has and no key and peer of an encrypted network verifies.
    EspUnknownSpi,
    /// A sequence number already received or older than the anti-replay window.
    EspReplay,
    /// The ICV did not verify under the SA of its SPI: forged or corrupted.
    EspAuth,
    /// ESP received while no network here is encrypted (a peer has a key this host lacks).
    EspNoKey,
    /// An unknown SPI while the worker's budget of trial decryptions was spent.
    EspEstablishLimited,
    /// Authenticated under one network's key but carrying another network's VNI.
    EspWrongVni,
    /// A UDP datagram with no payload at all (to the VXLAN port): nothing to decapsulate, and
    /// nothing a VTEP sends, so a probe or a flood worth counting.
    EmptyDatagram,
    /// An ESP sequence number implausibly far (more than 2^32) ahead of its SA's window: taken
    /// as it stands it would move the window past every packet the real sender has yet to send.
    EspBeyondWindow,
}

impl DropReason {
    pub(crate) const ALL: [DropReason; 29] = [
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
        DropReason::TapFull,
        DropReason::SocketOverflow,
        DropReason::SendError,
        DropReason::BadOffload,
        DropReason::BumRateLimited,
        DropReason::TooBig,
        DropReason::Unencrypted,
        DropReason::EspMalformed,
        DropReason::EspUnknownSpi,
        DropReason::EspReplay,
        DropReason::EspAuth,
        DropReason::EspNoKey,
        DropReason::EspEstablishLimited,
        DropReason::EspWrongVni,
        DropReason::EmptyDatagram,
        DropReason::EspBeyondWindow,
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
            DropReason::Unencrypted => "unencrypted",
            DropReason::EspMalformed => "esp_malformed",
            DropReason::EspUnknownSpi => "esp_unknown_spi",
            DropReason::EspReplay => "esp_replay",
            DropReason::EspAuth => "esp_auth",
            DropReason::EspNoKey => "esp_no_key",
            DropReason::EspEstablishLimited => "esp_establish_limited",
            DropReason::EspWrongVni => "esp_wrong_vni",
            DropReason::EmptyDatagram => "empty_datagram",
            DropReason::EspBeyondWindow => "esp_beyond_window",
            DropReason::TapFull => "tap_full",
            DropReason::SocketOverflow => "socket_overflow",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl Ord for DropReason {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}

impl PartialOrd for DropReason {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a received datagram that is not usable VXLAN is counted. Every variant is listed, so a
/// new one cannot be miscounted without a compile error here.
impl From<DecapError> for DropReason {
    fn from(error: DecapError) -> Self {
        match error {
            DecapError::Truncated { layer, .. } => match layer {
                Layer::InnerEthernet
                | Layer::InnerVlan
                | Layer::InnerIpv4
                | Layer::InnerIpv6
                | Layer::InnerTcp
                | Layer::InnerUdp => DropReason::InnerTooShort,
                Layer::Vxlan
                | Layer::OuterEthernet
                | Layer::OuterIpv4
                | Layer::OuterIpv6
                | Layer::OuterUdp
                | Layer::VirtioNet => DropReason::TooShort,
            },
            DecapError::MissingIFlag { .. } => DropReason::NoVniFlag,
            // Faults of the outer headers. The data plane reads VXLAN from a UDP socket, whose
            // kernel has checked those headers already, so it never sees these; should a raw
            // path ever produce them, they count with the header that did not parse.
            DecapError::NotIp { .. }
            | DecapError::BadIpv4Header { .. }
            | DecapError::BadIpv4Checksum
            | DecapError::Fragmented
            | DecapError::NotUdp { .. }
            | DecapError::BadUdpLength { .. }
            | DecapError::BadUdpChecksum
            | DecapError::ZeroUdpChecksumIpv6 => DropReason::TooShort,
        }
    }
}

/// How a TAP frame that could not be wrapped is counted (every variant listed, as above).
impl From<EncapError> for DropReason {
    fn from(error: EncapError) -> Self {
        match error {
            EncapError::InnerTooShort { .. } => DropReason::Runt,
            // The wrapped frame does not fit what carries it.
            EncapError::NoHeadroom { .. } | EncapError::TooLong { .. } => DropReason::Oversize,
            EncapError::MixedAddressFamilies => DropReason::WrongFamily,
        }
    }
}

#[derive(Debug, Default)]
pub struct DropCounters([AtomicU64; DropReason::ALL.len()]);

impl DropCounters {
    pub(crate) fn count(&self, reason: DropReason) {
        self.0[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` drops at once (the kernel reports some drops as a running total).
    pub(crate) fn count_many(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.0[reason.index()].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()].load(Ordering::Relaxed)
    }

    /// Every reason with its count (zeros included, so scripts can rely on the keys).
    pub fn snapshot(&self) -> BTreeMap<DropReason, u64> {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r))).collect()
    }

    pub fn total(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.get(*r)).sum()
    }
}

/// rx = from the wire to the TAP, tx = from the TAP to the wire (one per destination copy).
#[derive(Debug, Default)]
pub struct Traffic {
    pub(crate) rx_packets: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) tx_packets: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
}

impl Traffic {
    /// `packets` received frames of `bytes` in all (a run counted at once).
    pub(crate) fn rx_many(&self, packets: u64, bytes: u64) {
        self.rx_packets.fetch_add(packets, Ordering::Relaxed);
        self.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn tx(&self, packets: u64, bytes: u64) {
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
    pub(crate) flooded: AtomicU64,
    pub learned: AtomicU64,
    pub moved: AtomicU64,
    /// New MACs not learned because the table was at `--max-fdb`.
    pub fdb_full: AtomicU64,
    /// TCP superframes read from the TAP (TSO) and cut into segments by vxnet ...
    pub(crate) tso_superframes: AtomicU64,
    /// ... and the segments they made.
    pub(crate) tso_segments: AtomicU64,
    /// UDP superframes read from the TAP (USO) and cut into datagrams by vxnet ...
    pub(crate) uso_superframes: AtomicU64,
    /// ... and the datagrams they made.
    pub(crate) uso_segments: AtomicU64,
    /// Runs of equal-size datagrams handed to the kernel in one `UDP_SEGMENT` send.
    pub(crate) gso_batches: AtomicU64,
    /// UDP GRO reads that carried more than one VXLAN datagram.
    pub(crate) gro_batches: AtomicU64,
    /// Superframes coalesced from received TCP segments and written to the TAP ...
    pub(crate) coalesced_superframes: AtomicU64,
    /// ... and the segments merged into them.
    pub(crate) coalesced_segments: AtomicU64,
    /// Superframes coalesced from received datagrams of one UDP flow (`GSO_UDP_L4`) ...
    pub(crate) udp_coalesced_superframes: AtomicU64,
    /// ... and the datagrams merged into them.
    pub(crate) udp_coalesced_datagrams: AtomicU64,
    /// Received inner TCP/UDP checksums a kernel VTEP on this machine left partial (for a NIC
    /// that a veth is not) and vxnet completed.
    pub(crate) partial_checksums: AtomicU64,
    /// Coalesced superframes a TAP refused (EINVAL) and vxnet wrote again segment by segment:
    /// for a short last segment (Linux 6.6.44), after which superframes keep segments equal ...
    pub(crate) tap_refused_short_tail: AtomicU64,
    /// ... and of equal segments, after which that transport is no longer coalesced.
    pub(crate) tap_refused_gso: AtomicU64,
    /// Datagrams from a kernel VTEP on this machine that carried a whole inner superframe
    /// (UDP-tunnel GSO through a veth), written to the TAP unsplit ...
    pub(crate) tunnel_superframes: AtomicU64,
    /// ... and the segments they stand for.
    pub(crate) tunnel_segments: AtomicU64,
    /// ICMP frag-needed / packet-too-big replies written into the TAP (path-MTU signalling).
    pub(crate) too_big_replies: AtomicU64,
    /// ARP requests / neighbour solicitations from the TAP answered from the neighbour table
    /// (an endpoint on this host answers itself on the bridge: the TAP's copy is dropped).
    pub(crate) neighbor_answered: AtomicU64,
    /// ... and those for addresses the table does not hold, flooded as before.
    pub(crate) neighbor_flooded: AtomicU64,
    /// ARP replies / advertisements from the TAP claiming a recorded address for another MAC:
    /// dropped, so no other host's cache is poisoned.
    pub(crate) neighbor_spoofed: AtomicU64,
}

impl Events {
    pub(crate) fn bump(counter: &AtomicU64) {
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
pub(crate) type PeerCounters = Traffic;

/// Remote VTEPs by address. A peer gets counters when it is configured or first heard from;
/// the number of peers heard from is bounded so `--accept-any` cannot be made to grow it forever.
#[derive(Debug)]
pub struct PeerTable {
    map: papaya::HashMap<IpAddr, Arc<PeerCounters>, foldhash::fast::RandomState>,
    limit: usize,
}

impl PeerTable {
    pub(crate) fn new(limit: usize) -> Self {
        PeerTable {
            map: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .build(),
            limit,
        }
    }

    /// The counters of `peer`, created on first use while under the limit.
    pub(crate) fn counters(&self, peer: IpAddr) -> Option<Arc<PeerCounters>> {
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
    pub(crate) fn with<F: FnOnce(&PeerCounters)>(&self, peer: IpAddr, f: F) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use vxnet_encap::decapsulate;

    #[test]
    fn reasons_serialize_as_their_names_in_name_order() {
        for reason in DropReason::ALL {
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json, reason.name(), "{reason:?}");
            assert_eq!(serde_json::from_value::<DropReason>(json).unwrap(), reason);
        }
        let counters = DropCounters::default();
        counters.count(DropReason::SendError);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.len(), DropReason::ALL.len(), "zeros included");
        let keys: Vec<&str> = snapshot.keys().map(|r| r.name()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        let text = serde_json::to_string(&snapshot).unwrap();
        assert!(text.contains("\"send_error\":1"), "{text}");
        let back: BTreeMap<DropReason, u64> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, snapshot);
    }

    #[test]
    fn decapsulation_errors_count_as_the_layer_that_failed() {
        let reason = |datagram: &[u8]| DropReason::from(decapsulate(datagram).unwrap_err());
        assert_eq!(reason(&[0x08, 0, 0]), DropReason::TooShort);
        assert_eq!(reason(&[0; 8 + 14]), DropReason::NoVniFlag);
        assert_eq!(
            reason(&[0x08, 0, 0, 0, 0, 0, 42, 0, 1]),
            DropReason::InnerTooShort
        );
        let truncated = |layer| DecapError::Truncated {
            layer,
            required: 1,
            actual: 0,
        };
        assert_eq!(
            DropReason::from(truncated(Layer::InnerVlan)),
            DropReason::InnerTooShort
        );
        assert_eq!(
            DropReason::from(truncated(Layer::OuterUdp)),
            DropReason::TooShort
        );
        assert_eq!(
            DropReason::from(EncapError::InnerTooShort { len: 3 }),
            DropReason::Runt
        );
    }
}
