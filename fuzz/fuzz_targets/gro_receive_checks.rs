//! One UDP GRO read (or tunnel superframe) through the receive path, in the order the worker
//! (`vxnet_dataplane::worker`, `drain_socket` and `deliver`) takes it: the datagram cut at the
//! GRO segment size, each piece classified by `Forwarder::from_wire_run`, delivered inner
//! frames offered to the TCP and then the UDP coalescer (virtio-net TAP) or written as they are,
//! inner checksums a local kernel VTEP left partial completed, and a datagram longer than any
//! single frame that holds one whole inner superframe handed to the TAP whole or re-cut at the
//! TAP's MTU. The worker's I/O is left out; what it writes to the TAP is checked instead.
//!
//! Input: `[options][gro size: u16 BE, 0 = none][MTU step][datagram ...]` (see [`Options`]).
//! With the checksum option set, the harness first gives every inner IPv4 header and TCP/UDP
//! segment a valid (or kernel-partial) checksum, so the fuzzer reaches the coalescer's merge
//! logic, which a random checksum never passes.
//!
//! Properties:
//! - nothing panics;
//! - the run shortcut decides every piece exactly as a full `from_wire` does, and leaves the
//!   same counters and FDB behind;
//! - each coalescer's fast path and its full checks agree on every frame and every write;
//! - with nothing pending a coalescer never asks for a flush (the worker would lose the frame);
//! - a superframe written to the TAP re-segments (by vxnet's own TSO/USO path) into exactly the
//!   segments (datagrams) that went in, byte for byte except the fields a merge legitimately
//!   changes (TCP: window, IPv4 ID when fixed, checksums; UDP: the form of the IPv4 header
//!   checksum only), and every re-cut segment's checksums verify;
//! - a completed partial checksum verifies and nothing else in the frame changed;
//! - a tunnel superframe's header is one the segmenter accepts for that frame, and cut for a
//!   plain TAP its segments fit the TAP's MTU, carry valid checksums and the whole payload.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use vxnet_dataplane::fuzzing::{
    fdb_learned, from_wire_superframe, max_single_datagram, network, Forwarder, NetworkSpec,
    WireAction, WireRun,
};
use vxnet_encap::checksum;
use vxnet_encap::offload::{
    complete_checksum, complete_partial_checksum, CoalesceConfig, Coalescer, InnerSuperframe,
    Merge, Push, UdpCoalescer, VirtioNetHdr, WirePlan, MAX_GSO_SEGMENTS, VIRTIO_NET_HDR_LEN,
    ZERO_VNET_HDR,
};
use vxnet_encap::wire::VXLAN_HEADER_LEN;
use vxnet_encap::Vni;

#[path = "gro_receive_layout.rs"]
mod layout;
use layout::Layout;

const PORT: u16 = 4789;
const NOW: u64 = 1_000;
const ETHERNET: usize = 14;
/// The worker's scratch buffer for re-cutting a tunnel superframe (`raw`).
const RAW_LEN: usize = VIRTIO_NET_HDR_LEN + 65_536;
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));

/// The first four input bytes.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Bit 0: the TAP has a virtio-net header (frames go through the coalescer).
    pub vnet_hdr: bool,
    /// Bit 1: give inner frames valid checksums first.
    pub fix_checksums: bool,
    /// Bit 2: ... but leave the TCP/UDP one as a kernel does for a NIC (pseudo-header only).
    pub partial: bool,
    /// Bit 3: the coalescer may end a superframe with a short segment.
    pub short_tail: bool,
    /// Bit 4: `--accept-any`.
    pub accept_any: bool,
    /// Bit 5: the datagram comes from an address that is no configured peer.
    pub stranger: bool,
    /// Bit 6: fix checksums over the whole datagram as one frame (a tunnel superframe), not
    /// per GRO segment.
    pub whole_frame: bool,
    /// Bit 7: `--no-learning`.
    pub no_learning: bool,
    /// The socket's `UDP_GRO` segment size.
    pub gro_size: Option<u16>,
    /// Both networks' MTU: 68 + 6 × the fourth byte (68..=1598).
    pub mtu: u32,
}

impl Options {
    pub fn parse(data: &[u8]) -> Option<(Options, &[u8])> {
        let (head, rest) = data.split_at_checked(4)?;
        let bit = |n: u8| head[0] & (1 << n) != 0;
        let gro = u16::from_be_bytes([head[1], head[2]]);
        let options = Options {
            vnet_hdr: bit(0),
            fix_checksums: bit(1),
            partial: bit(2),
            short_tail: bit(3),
            accept_any: bit(4),
            stranger: bit(5),
            whole_frame: bit(6),
            no_learning: bit(7),
            gro_size: (gro != 0).then_some(gro),
            mtu: 68 + 6 * u32::from(head[3]),
        };
        Some((options, rest))
    }
}

/// Two networks, VNI 42 (untagged only) and 43 (802.1Q allowed), both flooding to 10.0.0.2,
/// with a tiny FDB so that a full table is reached too.
fn forwarder(o: &Options) -> Forwarder {
    let networks = [(42, false), (43, true)]
        .into_iter()
        .map(|(vni, allow_vlan)| {
            let spec = NetworkSpec {
                vni: Vni::new(vni).expect("VNI in range"),
                mtu: o.mtu,
                allow_vlan,
                learning: !o.no_learning,
                max_fdb: 4,
            };
            network(spec, LOCAL, PORT, vec![PEER])
        })
        .collect();
    Forwarder::new(networks, LOCAL, PORT, o.accept_any)
}

/// Which paths an input reached: the stable seed run checks that the seeds cover them all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    pub delivered: usize,
    pub dropped: usize,
    /// Coalescer writes of two or more segments: TCP, UDP.
    pub superframes: usize,
    pub udp_superframes: usize,
    pub partial_completed: usize,
    pub tunnel_whole: usize,
    /// Segments a tunnel superframe was re-cut into for a plain TAP.
    pub tunnel_segments: usize,
}

impl std::ops::AddAssign for Reached {
    fn add_assign(&mut self, o: Reached) {
        self.delivered += o.delivered;
        self.dropped += o.dropped;
        self.superframes += o.superframes;
        self.udp_superframes += o.udp_superframes;
        self.partial_completed += o.partial_completed;
        self.tunnel_whole += o.tunnel_whole;
        self.tunnel_segments += o.tunnel_segments;
    }
}

pub fn check(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let Some((o, datagram)) = Options::parse(data) else {
        return reached;
    };
    let mut datagram = datagram.to_vec();
    // What the worker cuts at: the GRO size, or the whole datagram without one.
    let size = match o.gro_size {
        Some(s) => usize::from(s),
        None => datagram.len().max(1),
    };
    if o.fix_checksums {
        if o.whole_frame {
            if let Some(inner) = datagram.get_mut(VXLAN_HEADER_LEN..) {
                fix_checksums(inner, o.partial);
            }
        } else {
            for piece in datagram.chunks_mut(size) {
                if let Some(inner) = piece.get_mut(VXLAN_HEADER_LEN..) {
                    fix_checksums(inner, o.partial);
                }
            }
        }
    }
    let source = SocketAddr::new(if o.stranger { STRANGER } else { PEER }, 40000);
    let fwd = forwarder(&o);
    let mut taps = [Tap::new(&o), Tap::new(&o)];

    if datagram.len() > max_single_datagram(&fwd) {
        let inner = datagram.get(VXLAN_HEADER_LEN..).unwrap_or_default();
        if let Ok(superframe) = InnerSuperframe::parse(inner) {
            tunnel_superframe(&fwd, &mut taps, &o, source, &datagram, superframe);
            for tap in &mut taps {
                tap.flush();
                reached += tap.reached;
            }
            return reached;
        }
    }

    let reference = forwarder(&o);
    let mut run = WireRun::default();
    for piece in datagram.chunks_mut(size) {
        let action = fwd.from_wire_run(NOW, source, piece, &mut run);
        let full = reference.from_wire(NOW, source, piece);
        assert_eq!(action, full, "the GRO run shortcut decided otherwise");
        match action {
            WireAction::Deliver { network, inner } => {
                assert_eq!(inner, VXLAN_HEADER_LEN..piece.len());
                reached.delivered += 1;
                taps[network].deliver(&mut piece[inner]);
            }
            WireAction::Drop(_) => reached.dropped += 1,
        }
    }
    fwd.end_run(&mut run);
    for tap in &mut taps {
        tap.flush();
        reached += tap.reached;
    }
    assert_same_state(&fwd, &reference);
    reached
}

/// The run shortcut skips work, never outcomes: same counters, drops and FDB.
fn assert_same_state(fwd: &Forwarder, reference: &Forwarder) {
    assert_eq!(fwd.peers.snapshot(), reference.peers.snapshot());
    assert_eq!(fwd.drops.snapshot(), reference.drops.snapshot());
    for (a, b) in fwd.networks().iter().zip(reference.networks()) {
        assert_eq!(a.traffic.snapshot(), b.traffic.snapshot());
        assert_eq!(a.drops.snapshot(), b.drops.snapshot());
        assert_eq!(a.fdb.rows(NOW), b.fdb.rows(NOW));
        assert!(fdb_learned(&a.fdb) <= a.settings.max_fdb);
    }
}

/// `TunnelSuperframe::deliver` of the worker.
fn tunnel_superframe(
    fwd: &Forwarder,
    taps: &mut [Tap; 2],
    o: &Options,
    source: SocketAddr,
    datagram: &[u8],
    superframe: InnerSuperframe,
) {
    let WireAction::Deliver { network, inner } = from_wire_superframe(fwd, NOW, source, datagram)
    else {
        taps[0].reached.dropped += 1;
        return;
    };
    assert_eq!(inner, VXLAN_HEADER_LEN..datagram.len());
    let n = &fwd.networks()[network];
    let frame = &datagram[inner];
    let fallback_mss = (n.settings.mtu as usize + ETHERNET).saturating_sub(superframe.hdr_len());
    let Ok(hdr) = superframe.prepare(frame, o.gro_size, fallback_mss) else {
        return;
    };
    assert!(hdr.needs_csum() && hdr.gso_size > 0, "{hdr:?}");
    assert_eq!(usize::from(hdr.hdr_len), superframe.hdr_len());
    let segments = superframe.segments(usize::from(hdr.gso_size));
    taps[network].flush();
    if o.vnet_hdr {
        // The TAP's kernel cuts it: the header must describe the frame as vxnet's own
        // segmenter reads it.
        let plan = WirePlan::new(&hdr, frame, usize::from(u16::MAX))
            .unwrap_or_else(|e| panic!("tunnel superframe header {hdr:?} refused: {e}"));
        assert_eq!(plan.segments(), segments);
        taps[network].reached.tunnel_whole += 1;
        return;
    }
    let Ok(mut plan) = WirePlan::new(&hdr, frame, fallback_mss) else {
        return;
    };
    let mut raw = vec![0u8; RAW_LEN];
    let mut payload = 0;
    loop {
        let written = match plan.write_next(frame, n.settings.vni, &mut raw, MAX_GSO_SEGMENTS) {
            Ok(Some(written)) => written,
            Ok(None) => break,
            Err(_) => return,
        };
        for piece in raw[..written.total_len].chunks(written.segment_size) {
            let segment = &piece[VXLAN_HEADER_LEN..];
            let l = Layout::parse(segment).expect("a re-cut segment does not parse");
            assert_eq!(l.end, segment.len());
            if l.tcp {
                assert!(segment.len() <= n.settings.mtu as usize + ETHERNET);
            } else {
                // USO datagrams are never re-cut; `plan_uso` bounds their IP packet at mss + 40.
                assert!(l.end - l.l3 <= fallback_mss + 40);
            }
            assert!(l.checksums_verify(segment), "re-cut segment checksum");
            payload += l.end - l.hdr_len;
            taps[network].reached.tunnel_segments += 1;
        }
    }
    assert_eq!(payload, superframe.payload_len());
}

/// One coalescer run twice in lockstep (fast path on and off), and the frames merged into its
/// pending superframe so far.
struct Lockstep<M> {
    fast: M,
    full: M,
    pending: Vec<Vec<u8>>,
}

/// What the checks need of either coalescer beyond [`Merge`].
trait Coalescing: Merge {
    fn with(config: CoalesceConfig, fast_path: bool) -> Self;
}

impl Coalescing for Coalescer {
    fn with(config: CoalesceConfig, fast_path: bool) -> Self {
        let mut c = Coalescer::new(config);
        c.set_fast_path(fast_path);
        c
    }
}

impl Coalescing for UdpCoalescer {
    fn with(config: CoalesceConfig, fast_path: bool) -> Self {
        let mut c = UdpCoalescer::new(config);
        c.set_fast_path(fast_path);
        c
    }
}

impl<M: Coalescing> Lockstep<M> {
    fn new(config: CoalesceConfig) -> Self {
        Lockstep {
            fast: M::with(config, true),
            full: M::with(config, false),
            pending: Vec::new(),
        }
    }

    /// The worker's `push_or_flush`; `reached` counts superframes written.
    fn coalesce(&mut self, frame: &[u8], reached: &mut usize) -> Push {
        let mut push = self.push(frame);
        if push == Push::Flush {
            self.flush(reached);
            push = self.push(frame);
            assert_ne!(
                push,
                Push::Flush,
                "Flush with nothing pending: the frame is lost"
            );
        }
        if push == Push::Absorbed {
            self.pending.push(frame.to_vec());
        }
        push
    }

    fn push(&mut self, frame: &[u8]) -> Push {
        let fast = self.fast.push(frame);
        let full = self.full.push(frame);
        assert_eq!(
            fast, full,
            "the coalescer's fast path disagrees with its full checks"
        );
        fast
    }

    /// The worker's `flush`.
    fn flush(&mut self, reached: &mut usize) {
        let fast = self.fast.finish().map(<[u8]>::to_vec);
        let full = self.full.finish().map(<[u8]>::to_vec);
        assert_eq!(fast, full, "fast path built another superframe");
        let parts = std::mem::take(&mut self.pending);
        match fast {
            None => assert!(parts.is_empty(), "absorbed frames never written"),
            Some(write) => {
                check_superframe(&write, &parts);
                *reached += usize::from(parts.len() > 1);
            }
        }
    }
}

/// One network's TAP (with USO): TCP segments and then UDP datagrams offered to the coalescers.
struct Tap {
    vnet_hdr: bool,
    tcp: Lockstep<Coalescer>,
    udp: Lockstep<UdpCoalescer>,
    reached: Reached,
}

impl Tap {
    fn new(o: &Options) -> Tap {
        let config = CoalesceConfig {
            short_tail: o.short_tail,
            ..CoalesceConfig::default()
        };
        Tap {
            vnet_hdr: o.vnet_hdr,
            tcp: Lockstep::new(config),
            udp: Lockstep::new(config),
            reached: Reached::default(),
        }
    }

    /// The worker's `deliver`.
    fn deliver(&mut self, frame: &mut [u8]) {
        if !self.vnet_hdr {
            self.reached.partial_completed += usize::from(complete_partial(frame));
            return;
        }
        let mut push = self.coalesce(frame);
        if matches!(push, Push::PassThrough(_)) && complete_partial(frame) {
            self.reached.partial_completed += 1;
            push = self.coalesce(frame);
        }
        // A frame still passed through goes to the TAP as it is, behind a zero header.
        let _ = push;
    }

    /// The worker's `TapSink::coalesce`: TCP first, then UDP.
    fn coalesce(&mut self, frame: &[u8]) -> Push {
        match self.tcp.coalesce(frame, &mut self.reached.superframes) {
            Push::PassThrough(_) => self.udp.coalesce(frame, &mut self.reached.udp_superframes),
            push => push,
        }
    }

    fn flush(&mut self) {
        self.tcp.flush(&mut self.reached.superframes);
        self.udp.flush(&mut self.reached.udp_superframes);
    }
}

/// A coalescer write against the frames that went into it.
fn check_superframe(write: &[u8], parts: &[Vec<u8>]) {
    let hdr = VirtioNetHdr::parse(write).expect("write without a virtio-net header");
    let frame = &write[VIRTIO_NET_HDR_LEN..];
    match parts {
        [] => panic!("a write nothing went into"),
        [single] => {
            assert_eq!(write[..VIRTIO_NET_HDR_LEN], ZERO_VNET_HDR);
            // Untouched, but for link padding after the IP packet.
            assert!(single.starts_with(frame), "a lone segment was changed");
            let l = Layout::parse(single).expect("a coalesced frame that is not TCP/UDP");
            assert_eq!(l.end, frame.len());
            return;
        }
        _ => {}
    }
    let first = Layout::parse(&parts[0]).expect("a coalesced frame that does not parse");
    let l = Layout::parse(frame).expect("a superframe that does not parse");
    assert_eq!(l.tcp, first.tcp);
    assert!(hdr.needs_csum());
    let want = match (l.tcp, l.ipv6) {
        (true, false) => VirtioNetHdr::GSO_TCPV4,
        (true, true) => VirtioNetHdr::GSO_TCPV6,
        (false, _) => VirtioNetHdr::GSO_UDP_L4,
    };
    assert_eq!(hdr.gso_type, want);
    assert_eq!(usize::from(hdr.gso_size), first.end - first.hdr_len);
    assert_eq!(usize::from(hdr.csum_start), l.l4);
    assert_eq!(usize::from(hdr.csum_offset), l.checksum_field() - l.l4);
    assert_eq!(usize::from(hdr.hdr_len), l.hdr_len);
    assert_eq!(l.end, frame.len());
    if !l.tcp {
        // What the kernel takes in a GSO_UDP_L4 TAP write: more than one datagram, at most 64.
        assert!(parts.len() <= 64 && l.end - l.hdr_len > usize::from(hdr.gso_size));
    }
    // NEEDS_CSUM: the field holds the pseudo-header sum; completed, the checksum is right.
    let mut completed = frame.to_vec();
    complete_checksum(&mut completed, hdr.csum_start, hdr.csum_offset).expect("csum offsets");
    assert!(l.checksums_verify(&completed), "superframe checksum");

    // USO never re-cuts a datagram: any MSS that holds one keeps the application's boundaries.
    let mss = if l.tcp { hdr.gso_size } else { u16::MAX };
    let mut plan = WirePlan::new(&hdr, frame, usize::from(mss))
        .unwrap_or_else(|e| panic!("superframe does not re-segment: {e}"));
    assert_eq!(plan.segments(), parts.len());
    let mut out = vec![0u8; plan.total_len()];
    let vni = Vni::new(42).expect("VNI in range");
    let written = plan
        .write_next(frame, vni, &mut out, usize::MAX)
        .expect("re-segmenting")
        .expect("segments");
    assert_eq!(written.segments, parts.len());
    let fixed_id = l.tcp && !l.ipv6 && ipv4_id(&parts[0], l.l3) == ipv4_id(&parts[1], l.l3);
    let pieces = out[..written.total_len].chunks(written.segment_size);
    for (piece, part) in pieces.zip(parts) {
        let segment = &piece[VXLAN_HEADER_LEN..];
        let sl = Layout::parse(segment).expect("a re-segmented piece does not parse");
        let original = &part[..Layout::parse(part).expect("part").end];
        assert_eq!(
            masked(segment, &sl, fixed_id),
            masked(original, &sl, fixed_id),
            "a re-segmented superframe differs from what went in"
        );
        assert!(sl.checksums_verify(segment), "re-segmented checksum");
    }
}

fn ipv4_id(frame: &[u8], l3: usize) -> [u8; 2] {
    [frame[l3 + 4], frame[l3 + 5]]
}

/// `frame` with what a merge may change zeroed: the IPv4 header checksum (recomputed; a frame
/// may have carried the other form of the same value), and for TCP the window (the superframe
/// carries the last), the TCP checksum and a fixed IPv4 ID (re-segmenting numbers the segments).
/// A UDP datagram's checksum has one form only (zero means none and is never merged): it must
/// come back as sent.
fn masked(frame: &[u8], l: &Layout, fixed_id: bool) -> Vec<u8> {
    let mut out = frame.to_vec();
    if !l.ipv6 {
        out[l.l3 + 10..l.l3 + 12].fill(0);
        if fixed_id {
            out[l.l3 + 4..l.l3 + 6].fill(0);
        }
    }
    if l.tcp {
        out[l.l4 + 14..l.l4 + 18].fill(0);
    }
    out
}

/// The worker's `complete_partial`, checked: a completion changes only the checksum field, and
/// to a checksum that verifies.
fn complete_partial(frame: &mut [u8]) -> bool {
    let before = frame.to_vec();
    let completed = complete_partial_checksum(frame);
    if !completed {
        assert_eq!(before, frame, "changed without completing");
        return false;
    }
    let l = Layout::parse(frame).expect("completed a frame that is not TCP/UDP");
    let field = l.checksum_field();
    assert_eq!(before[..field], frame[..field]);
    assert_eq!(before[field + 2..], frame[field + 2..]);
    // Only the TCP/UDP checksum: the IPv4 header's is the kernel's to judge.
    assert!(
        l.l4_checksum_verifies(frame),
        "completed checksum does not verify"
    );
    true
}

/// Gives the frame's IPv4 header and TCP/UDP segment valid checksums, or leaves the TCP/UDP
/// one as the kernel's pseudo-header sum (`partial`). Frames it does not parse are left alone.
fn fix_checksums(frame: &mut [u8], partial: bool) {
    let Some(l) = Layout::parse(frame) else {
        return;
    };
    if !l.ipv6 {
        frame[l.l3 + 10..l.l3 + 12].fill(0);
        let c = checksum::checksum(&frame[l.l3..l.l4]);
        frame[l.l3 + 10..l.l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    let field = l.checksum_field();
    frame[field..field + 2].fill(0);
    let pseudo = l.pseudo_header(frame);
    let value = if partial {
        pseudo.fold()
    } else {
        match pseudo.add_bytes(&frame[l.l4..l.end]).finish() {
            0 if !l.tcp => 0xFFFF,
            v => v,
        }
    };
    frame[field..field + 2].copy_from_slice(&value.to_be_bytes());
}
