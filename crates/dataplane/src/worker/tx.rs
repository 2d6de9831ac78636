//! TAP → wire planning: frames read from a TAP are classified by the [`Forwarder`] and wrapped
//! in place (the VXLAN header goes into headroom reserved in front of each frame; a superframe
//! is segmented first) into a plan of sends. No I/O happens here: the worker reads the frames in
//! and hands the plan to its [`Sender`](super::send::Sender), so every planning rule is tested
//! without root (see the tests below).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use vxnet_encap::flow::flow_hash;
use vxnet_encap::offload::{
    segments_per_send, VirtioNetHdr, WirePlan, MAX_GSO_SEGMENTS, MAX_UDP_GSO_PAYLOAD,
    VIRTIO_NET_HDR_LEN,
};
use vxnet_encap::outer::OuterFields;
use vxnet_encap::wire::VXLAN_HEADER_LEN;
use vxnet_encap::{encapsulate, Encapsulation};

use super::source_ports::SourcePorts;
use super::BATCH;
use crate::counters::{DropReason, Events};
use crate::forward::{Forwarder, TapAction};

/// Headroom in front of each TAP frame: the VXLAN header (the kernel adds UDP and IP).
pub(super) const HEADROOM: usize = VXLAN_HEADER_LEN;
/// Largest frame a TAP hands us (room for a 64 KB superframe once offloads are on).
pub(super) const MAX_FRAME: usize = 65_536;
/// Inner headers that may repeat in front of each segment: Ethernet + 802.1Q tag + IPv4 with
/// options + TCP with options.
const MAX_INNER_HEADERS: usize = 146;
/// Output room for one segmented superframe: the payload plus, per segment, VXLAN and inner
/// headers.
const MAX_SEGMENTED: usize = MAX_FRAME + MAX_GSO_SEGMENTS * (VXLAN_HEADER_LEN + MAX_INNER_HEADERS);
/// Most segments written into one buffer: two full UDP GSO sends. A superframe with more (a
/// small MSS: 536 makes 123 of 64 KB) takes several buffers, so no size of it is refused.
const MAX_CHUNK_SEGMENTS: usize = 2 * MAX_GSO_SEGMENTS;
/// IPv4 and TCP headers without options: what comes off the TAP MTU to give the MSS.
const IPV4_TCP_HEADERS: usize = 40;

/// Makes the TCP superframes the kernel hands to TAP `dev` (inner MTU `mtu`) small enough for
/// one `UDP_SEGMENT` send each, by capping the device's `gso_max_segs`. Best effort: without it
/// a superframe just takes two sends.
pub(crate) fn fit_superframes_to_gso(dev: &str, mtu: u32) {
    let segs = segments_per_send(mtu as usize) as u32;
    match crate::sys::iface::set_gso_max_segs(dev, segs) {
        Ok(()) => tracing::debug!(
            dev,
            segs,
            "TAP gso_max_segs set: one UDP GSO send per superframe"
        ),
        Err(e) => tracing::debug!("keeping the TAP's gso_max_segs: {e}"),
    }
}

/// A frame read with a virtio-net header, classified: where it goes, with which outer fields.
#[derive(Debug, Clone, Copy)]
pub(super) struct Classified {
    pub(super) hdr: VirtioNetHdr,
    /// Bytes read (header and frame).
    pub(super) len: usize,
    /// `None`: flooded to every peer of the network.
    pub(super) dest: Option<SocketAddr>,
    pub(super) outer: OuterFields,
    /// The source-port slot of the flow.
    pub(super) socket: usize,
}

/// One wrapped frame (or run of equal-size segments) waiting to be sent, by index into the
/// plan's buffers (no borrows, so the plan vector is reused across batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Planned {
    pub(super) buf: usize,
    pub(super) start: usize,
    pub(super) end: usize,
    /// Index of the network (and TAP) the frame came from.
    pub(super) network: usize,
    /// `None`: flooded to every peer of the network.
    pub(super) dest: Option<SocketAddr>,
    /// UDP_SEGMENT size when the range holds several equal-size datagrams.
    pub(super) segment_size: Option<u16>,
    pub(super) segments: usize,
    /// The inner Ethernet frame bytes the datagrams carry (what the byte counters count).
    pub(super) inner_bytes: usize,
    /// Which source-port slot carries it (from the inner flow hash and the DF it needs).
    pub(super) socket: usize,
    /// Outer DF, TTL and TOS (per packet only where the policy inherits them).
    pub(super) outer: OuterFields,
}

/// The buffers one batch of TAP frames is wrapped in, and the sends planned from them. All
/// allocated once, when the worker starts.
#[derive(Debug)]
pub(super) struct TxPlan {
    /// Wrapped frames: one per buffer, several buffers for a superframe of many small segments.
    bufs: Vec<Box<[u8]>>,
    /// Buffers in use.
    used: usize,
    plan: Vec<Planned>,
    /// With a vnet header, TAP reads land here and are segmented into `bufs`.
    raw: Box<[u8]>,
    /// Per network (indexed like the TAPs): inner TCP payload bytes that fit one underlay
    /// datagram.
    mss: Vec<usize>,
    /// The source-port pool: which slot (port, DF) a flow leaves from, and the outer policy.
    source_ports: Arc<SourcePorts>,
    /// The engine's clock origin (storm control counts floods in nanoseconds since).
    epoch: Instant,
}

impl TxPlan {
    /// Buffers for the networks of `forwarder`; with `vnet_hdr` frames are read with a
    /// virtio-net header and may be superframes.
    pub(super) fn new(
        forwarder: &Forwarder,
        vnet_hdr: bool,
        source_ports: Arc<SourcePorts>,
        epoch: Instant,
    ) -> Self {
        let buf_len = if vnet_hdr {
            MAX_SEGMENTED
        } else {
            HEADROOM + MAX_FRAME
        };
        // The largest inner IP packet is the TAP MTU; the IP and TCP headers come off it. (The
        // kernel's gso_size is smaller still when TCP options are in use.)
        let mss = forwarder
            .networks()
            .iter()
            .map(|n| {
                (n.settings.mtu as usize)
                    .saturating_sub(IPV4_TCP_HEADERS)
                    .max(1)
            })
            .collect();
        let raw_len = if vnet_hdr {
            VIRTIO_NET_HDR_LEN + MAX_FRAME
        } else {
            0
        };
        TxPlan {
            bufs: (0..BATCH)
                .map(|_| vec![0u8; buf_len].into_boxed_slice())
                .collect(),
            used: 0,
            plan: Vec::with_capacity(BATCH),
            raw: vec![0u8; raw_len].into_boxed_slice(),
            mss,
            source_ports,
            epoch,
        }
    }

    /// Nanoseconds since the engine's epoch, the clock of `--bum-rate`.
    fn now_ns(&self) -> Option<u64> {
        Some(self.epoch.elapsed().as_nanos() as u64)
    }

    /// Forgets the plan; every buffer is free again.
    pub(super) fn clear(&mut self) {
        self.plan.clear();
        self.used = 0;
    }

    /// Where the next frame without a virtio-net header is read to: behind the headroom of the
    /// next free buffer. `None` when every buffer is in use.
    pub(super) fn frame_buf(&mut self) -> Option<&mut [u8]> {
        self.bufs
            .get_mut(self.used)
            .map(|buf| &mut buf[HEADROOM..HEADROOM + MAX_FRAME])
    }

    /// Where the next frame with a virtio-net header is read to.
    pub(super) fn raw_buf(&mut self) -> &mut [u8] {
        &mut self.raw
    }

    /// The buffers and the plan, for sending.
    pub(super) fn parts(&mut self) -> (&[Box<[u8]>], &mut [Planned]) {
        (&self.bufs, &mut self.plan)
    }

    #[cfg(test)]
    fn planned(&self) -> &[Planned] {
        &self.plan
    }

    /// Plans the frame of `len` bytes just read into [`frame_buf`](Self::frame_buf) from network
    /// `index`'s TAP: classified, wrapped in `encapsulation`. False when it was dropped (and
    /// counted).
    pub(super) fn plan_frame(
        &mut self,
        forwarder: &Forwarder,
        index: usize,
        encapsulation: &Encapsulation,
        len: usize,
    ) -> bool {
        let Some(buf) = self.bufs.get_mut(self.used) else {
            return false;
        };
        let end = HEADROOM + len;
        let frame = &buf[HEADROOM..end];
        let now = Some(self.epoch.elapsed().as_nanos() as u64);
        let dest = match forwarder.from_tap_at(index, frame, false, now) {
            TapAction::Drop(_) => return false,
            TapAction::Unicast(dest) => Some(dest),
            TapAction::Flood => None,
        };
        let outer = self.source_ports.policy().fields(frame);
        let socket = self.source_ports.slot_for(flow_hash(frame), outer.df);
        let start = match encapsulate(&mut buf[..end], HEADROOM, encapsulation) {
            Ok(start) => start,
            Err(e) => {
                // Not reached (the forwarder checked the Ethernet header, HEADROOM fits VXLAN);
                // counted if it ever is.
                if let Some(network) = forwarder.networks().get(index) {
                    network.drops.count(DropReason::from(e));
                }
                return false;
            }
        };
        self.plan.push(Planned {
            buf: self.used,
            start,
            end,
            network: index,
            dest,
            segment_size: None,
            segments: 1,
            inner_bytes: (end - start).saturating_sub(VXLAN_HEADER_LEN),
            socket,
            outer,
        });
        self.used += 1;
        true
    }

    /// Classifies the `len` bytes just read into [`raw_buf`](Self::raw_buf) from network
    /// `index`'s TAP (a virtio-net header and a frame): where it goes and with which outer
    /// fields. `None` when it was dropped (and counted).
    pub(super) fn classify(
        &self,
        forwarder: &Forwarder,
        index: usize,
        len: usize,
    ) -> Option<Classified> {
        let network = forwarder.networks().get(index)?;
        let raw = &self.raw[..len.min(self.raw.len())];
        let Ok(hdr) = VirtioNetHdr::parse(raw) else {
            network.drops.count(DropReason::Runt);
            return None;
        };
        let frame = &raw[VIRTIO_NET_HDR_LEN..];
        let superframe = hdr.gso_kind() != VirtioNetHdr::GSO_NONE;
        let dest = match forwarder.from_tap_at(index, frame, superframe, self.now_ns()) {
            TapAction::Drop(_) => return None,
            TapAction::Unicast(dest) => Some(dest),
            TapAction::Flood => None,
        };
        let outer = self.source_ports.policy().fields(frame);
        let socket = self.source_ports.slot_for(flow_hash(frame), outer.df);
        Some(Classified {
            hdr,
            len,
            dest,
            outer,
            socket,
        })
    }

    /// The frame of a classified read (behind its virtio-net header).
    pub(super) fn raw_frame(&self, c: &Classified) -> &[u8] {
        self.raw
            .get(VIRTIO_NET_HDR_LEN..c.len.min(self.raw.len()))
            .unwrap_or(&[])
    }

    /// Whether nothing is planned yet.
    pub(super) fn is_empty(&self) -> bool {
        self.plan.is_empty()
    }

    /// [`classify`](Self::classify), then [`plan_classified`](Self::plan_classified).
    #[cfg(test)]
    pub(super) fn plan_offloaded(
        &mut self,
        forwarder: &Forwarder,
        index: usize,
        len: usize,
        gso: bool,
        send: impl FnMut(&[Box<[u8]>], &mut [Planned]),
    ) -> bool {
        match self.classify(forwarder, index, len) {
            Some(c) => self.plan_classified(forwarder, index, &c, gso, send),
            None => false,
        }
    }

    /// Plans a classified frame: segmented when it is a superframe, each segment wrapped. With
    /// `gso`, runs of equal-size segments share one `UDP_SEGMENT` send. A frame needing more
    /// buffers than are left hands the plan so far to `send` and goes on from the first buffer.
    /// False when the frame was dropped (and counted).
    pub(super) fn plan_classified(
        &mut self,
        forwarder: &Forwarder,
        index: usize,
        classified: &Classified,
        gso: bool,
        mut send: impl FnMut(&[Box<[u8]>], &mut [Planned]),
    ) -> bool {
        let Some(network) = forwarder.networks().get(index) else {
            return false;
        };
        let TxPlan {
            bufs,
            used,
            plan,
            raw,
            mss,
            ..
        } = self;
        let Classified {
            hdr,
            len,
            dest,
            outer,
            socket,
        } = *classified;
        let raw = &raw[..len.min(raw.len())];
        let vni = network.vni();
        let frame = &raw[VIRTIO_NET_HDR_LEN..];
        let mss = mss.get(index).copied().unwrap_or(1);
        let mut wire = match WirePlan::new(&hdr, frame, mss) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::debug!("dropping a TAP frame the segmenter refused: {e}");
                network.drops.count(DropReason::BadOffload);
                return false;
            }
        };
        let superframe_counters = if wire.is_tso() {
            Some((
                &network.events.tso_superframes,
                &network.events.tso_segments,
            ))
        } else if wire.is_uso() {
            Some((
                &network.events.uso_superframes,
                &network.events.uso_segments,
            ))
        } else {
            None
        };
        if let Some((superframes, segments)) = superframe_counters {
            Events::bump(superframes);
            segments.fetch_add(wire.segments() as u64, Ordering::Relaxed);
        }
        let max_segments = if gso { MAX_GSO_SEGMENTS } else { 1 };
        while wire.remaining() > 0 {
            if *used == bufs.len() {
                send(bufs, plan);
                plan.clear();
                *used = 0;
            }
            let out = &mut bufs[*used];
            let chunk = match wire.write_next(frame, vni, out, MAX_CHUNK_SEGMENTS) {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    // Not reached (a buffer holds any one segment); counted if it ever is.
                    tracing::debug!("dropping the rest of a TAP frame: {e}");
                    network.drops.count(DropReason::BadOffload);
                    return wire.remaining() < wire.segments();
                }
            };
            for batch in chunk.batches(MAX_UDP_GSO_PAYLOAD, max_segments) {
                if batch.segments > 1 {
                    Events::bump(&network.events.gso_batches);
                }
                plan.push(Planned {
                    buf: *used,
                    start: batch.range.start,
                    end: batch.range.end,
                    network: index,
                    dest,
                    segment_size: (batch.segments > 1).then_some(batch.segment_size as u16),
                    segments: batch.segments,
                    inner_bytes: batch
                        .range
                        .len()
                        .saturating_sub(batch.segments * VXLAN_HEADER_LEN),
                    socket,
                    outer,
                });
            }
            *used += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use vxnet_encap::{MacAddr, Vni};

    use vxnet_encap::outer::OuterPolicy;

    use super::super::fixtures::{self, PORT};
    use super::super::source_ports::SourcePortConfig;
    use super::*;
    use crate::tuning::SourcePortRange;

    const LOCAL: &str = "10.0.0.1";
    const PEERS: [&str; 2] = ["10.0.0.2", "10.0.0.3"];
    const MTU: u32 = 1450;
    const SENDER: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const KNOWN: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    fn forwarder() -> Forwarder {
        fixtures::forwarder(LOCAL, &PEERS, MTU)
    }

    /// A plan over the default srcport range (nothing is bound: planning only picks slots).
    fn tx_plan(fwd: &Forwarder, vnet_hdr: bool) -> TxPlan {
        let pool = SourcePorts::new(SourcePortConfig {
            local: LOCAL.parse().unwrap(),
            range: SourcePortRange::default(),
            listen_port: PORT,
            policy: OuterPolicy::default(),
            cap: 64,
            send_buffer: 0,
            fallback_mtu: 1500,
            min_pmtu: 1280,
        });
        TxPlan::new(fwd, vnet_hdr, Arc::new(pool), Instant::now())
    }

    fn drops(forwarder: &Forwarder, reason: DropReason) -> u64 {
        forwarder.networks()[0].drops.get(reason)
    }

    /// An Ethernet frame to `dst` carrying IPv4/TCP with `payload` bytes.
    fn tcp_frame(dst: [u8; 6], payload: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&SENDER);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 20 + payload) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0]);
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[10, 1, 0, 1, 10, 1, 0, 2]);
        f.extend_from_slice(&[0x30, 0x39, 0x13, 0x89, 0, 0, 0, 1, 0, 0, 0, 0]);
        f.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend((0..payload).map(|i| i as u8));
        f
    }

    fn read_frame(tx: &mut TxPlan, frame: &[u8]) -> usize {
        tx.frame_buf().unwrap()[..frame.len()].copy_from_slice(frame);
        frame.len()
    }

    /// Puts `frame` behind a TSO virtio-net header (gso_size `mss`) into the raw buffer.
    fn read_superframe(tx: &mut TxPlan, frame: &[u8], mss: u16) -> usize {
        let hdr = VirtioNetHdr {
            flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
            gso_type: VirtioNetHdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
        };
        let raw = tx.raw_buf();
        raw[..VIRTIO_NET_HDR_LEN].copy_from_slice(&hdr.to_bytes());
        raw[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + frame.len()].copy_from_slice(frame);
        VIRTIO_NET_HDR_LEN + frame.len()
    }

    fn vxlan() -> Encapsulation {
        Encapsulation::vxlan(Vni::new(42).unwrap())
    }

    #[test]
    fn a_broadcast_is_wrapped_in_place_and_flooded() {
        let fwd = forwarder();
        let mut tx = tx_plan(&fwd, false);
        let frame = tcp_frame([0xff; 6], 100);
        let len = read_frame(&mut tx, &frame);
        assert!(tx.plan_frame(&fwd, 0, &vxlan(), len));
        let [planned] = *tx.planned() else {
            panic!("one send planned: {:?}", tx.planned());
        };
        assert_eq!(planned.dest, None, "flooded");
        assert_eq!(
            (planned.buf, planned.start, planned.end),
            (0, 0, HEADROOM + frame.len())
        );
        assert_eq!((planned.segments, planned.segment_size), (1, None));
        assert!(planned.socket < SourcePortRange::default().len() * 2);
        let (bufs, _) = tx.parts();
        let wrapped = &bufs[0][planned.start..planned.end];
        assert_eq!(
            wrapped[..8],
            [0x08, 0, 0, 0, 0, 0, 42, 0],
            "VXLAN header, VNI 42"
        );
        assert_eq!(&wrapped[8..], &frame[..]);
        assert_eq!(fwd.networks()[0].events.flooded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_known_destination_goes_to_its_vtep_from_the_flows_port() {
        let fwd = forwarder();
        let vtep: IpAddr = PEERS[1].parse().unwrap();
        fwd.networks()[0]
            .fdb
            .add_static(MacAddr(KNOWN), vtep)
            .unwrap();
        let mut tx = tx_plan(&fwd, false);
        let frame = tcp_frame(KNOWN, 10);
        for _ in 0..2 {
            let len = read_frame(&mut tx, &frame);
            assert!(tx.plan_frame(&fwd, 0, &vxlan(), len));
        }
        let [first, second] = *tx.planned() else {
            panic!("two sends planned: {:?}", tx.planned());
        };
        assert_eq!(first.dest, Some(SocketAddr::new(vtep, PORT)));
        assert_eq!((first.buf, second.buf), (0, 1), "one buffer per frame");
        assert_eq!(
            first.socket, second.socket,
            "one flow keeps its source port"
        );
        assert_eq!(
            first.socket,
            tx.source_ports.slot_for(flow_hash(&frame), first.outer.df)
        );
    }

    #[test]
    fn drops_are_counted_and_plan_nothing() {
        let fwd = forwarder();
        let mut tx = tx_plan(&fwd, false);
        let runt = [0xffu8; 13];
        let len = read_frame(&mut tx, &runt);
        assert!(!tx.plan_frame(&fwd, 0, &vxlan(), len));
        let oversize = tcp_frame([0xff; 6], MTU as usize);
        let len = read_frame(&mut tx, &oversize);
        assert!(!tx.plan_frame(&fwd, 0, &vxlan(), len));
        assert!(tx.planned().is_empty());
        assert_eq!(drops(&fwd, DropReason::Runt), 1);
        assert_eq!(drops(&fwd, DropReason::Oversize), 1);
        // No buffer was used up by the drops.
        let len = read_frame(&mut tx, &tcp_frame([0xff; 6], 10));
        assert!(tx.plan_frame(&fwd, 0, &vxlan(), len));
        assert_eq!(tx.planned()[0].buf, 0);
    }

    #[test]
    fn a_superframe_is_cut_into_gso_runs_at_the_mss() {
        let fwd = forwarder();
        let mut tx = tx_plan(&fwd, true);
        let mss = (MTU as usize - IPV4_TCP_HEADERS) as u16;
        let frame = tcp_frame([0xff; 6], 10 * mss as usize + 7);
        let len = read_superframe(&mut tx, &frame, mss);
        assert!(tx.plan_offloaded(&fwd, 0, len, true, |_, _| panic!("no flush")));
        let planned = tx.planned();
        let segments: usize = planned.iter().map(|p| p.segments).sum();
        assert_eq!(segments, 11, "ten full segments and a short one");
        assert!(planned.iter().any(|p| p.segments > 1), "{planned:?}");
        for p in planned.iter().filter(|p| p.segments > 1) {
            let size = p.segment_size.expect("a run has a segment size") as usize;
            assert_eq!(size, VXLAN_HEADER_LEN + 54 + mss as usize);
            assert_eq!((p.end - p.start).div_ceil(size), p.segments);
        }
        let events = &fwd.networks()[0].events;
        assert_eq!(events.tso_superframes.load(Ordering::Relaxed), 1);
        assert_eq!(events.tso_segments.load(Ordering::Relaxed), 11);
        assert!(events.gso_batches.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn without_gso_every_segment_is_its_own_send() {
        let fwd = forwarder();
        let mut tx = tx_plan(&fwd, true);
        let mss = (MTU as usize - IPV4_TCP_HEADERS) as u16;
        let frame = tcp_frame([0xff; 6], 5 * mss as usize);
        let len = read_superframe(&mut tx, &frame, mss);
        assert!(tx.plan_offloaded(&fwd, 0, len, false, |_, _| panic!("no flush")));
        let planned = tx.planned();
        assert_eq!(planned.len(), 5);
        assert!(planned
            .iter()
            .all(|p| p.segments == 1 && p.segment_size.is_none()));
        assert_eq!(
            fwd.networks()[0].events.gso_batches.load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn a_superframe_that_outgrows_the_buffers_sends_the_plan_so_far() {
        let fwd = forwarder();
        let mut tx = tx_plan(&fwd, true);
        // 60 plain frames take 60 of the BATCH buffers ...
        let plain = tcp_frame([0xff; 6], 100);
        let none = VirtioNetHdr::from_bytes([0; VIRTIO_NET_HDR_LEN]);
        for _ in 0..60 {
            let raw = tx.raw_buf();
            raw[..VIRTIO_NET_HDR_LEN].copy_from_slice(&none.to_bytes());
            raw[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + plain.len()].copy_from_slice(&plain);
            let len = VIRTIO_NET_HDR_LEN + plain.len();
            assert!(tx.plan_offloaded(&fwd, 0, len, true, |_, _| panic!("no flush yet")));
        }
        // ... and a superframe at MSS 64 (938 segments, MAX_CHUNK_SEGMENTS per buffer) needs 8.
        let frame = tcp_frame([0xff; 6], 60_000);
        let len = read_superframe(&mut tx, &frame, 64);
        let mut flushed = Vec::new();
        assert!(tx.plan_offloaded(&fwd, 0, len, true, |bufs, plan| {
            assert_eq!(bufs.len(), BATCH);
            flushed.push(plan.iter().map(|p| p.segments).sum::<usize>());
        }));
        let segments = 60_000usize.div_ceil(64);
        let first_part = (BATCH - 60) * MAX_CHUNK_SEGMENTS;
        assert_eq!(flushed, [60 + first_part]);
        let left: usize = tx.planned().iter().map(|p| p.segments).sum();
        assert_eq!(left, segments - first_part);
        assert_eq!(
            tx.planned()[0].buf,
            0,
            "planning went on from the first buffer"
        );
    }

    #[test]
    fn a_bad_virtio_net_header_is_a_counted_drop() {
        let fwd = forwarder();
        let mut tx = tx_plan(&fwd, true);
        // Shorter than a virtio-net header.
        assert!(!tx.plan_offloaded(&fwd, 0, 4, true, |_, _| {}));
        assert_eq!(drops(&fwd, DropReason::Runt), 1);
        // A GSO type the segmenter does not know.
        let frame = tcp_frame([0xff; 6], 3000);
        let len = read_superframe(&mut tx, &frame, 1000);
        tx.raw_buf()[1] = 0x42;
        assert!(!tx.plan_offloaded(&fwd, 0, len, true, |_, _| {}));
        assert_eq!(drops(&fwd, DropReason::BadOffload), 1);
        assert!(tx.planned().is_empty());
    }
}
