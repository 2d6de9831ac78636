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
mod tests;
