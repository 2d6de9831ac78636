//! A forwarding worker: one thread, one queue of every network's TAP, one UDP socket.
//!
//! Packets move in batches: up to [`BATCH`] frames are read from a TAP, classified by the
//! [`Forwarder`], wrapped in place (the VXLAN header goes into headroom reserved in front of each
//! frame) and handed to the kernel in one `sendmmsg`; received datagrams come in by `recvmmsg`.
//! All buffers are allocated when the worker starts; the loop itself allocates nothing.
//!
//! With offloads on, the TAP hands over TCP superframes (up to 64 KB, virtio-net header in
//! front) and, where the kernel offers USO, UDP ones; they are segmented (TCP at the inner MSS,
//! UDP at the sender's datagram size) with a fused copy+checksum, each segment wrapped, and all
//! of them given to the kernel in UDP_SEGMENT sends. In the other direction, UDP GRO
//! delivers runs of VXLAN datagrams in one read; their inner TCP segments are coalesced back into
//! superframes and written to the TAP with a virtio-net header.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::io::IoSlice;
use vxnet_encap::flow::flow_hash;
use vxnet_encap::offload::{
    complete_partial_checksum, segments_per_send, CoalesceConfig, Coalescer, InnerSuperframe, Push,
    VirtioNetHdr, WirePlan, MAX_GSO_SEGMENTS, MAX_UDP_GSO_PAYLOAD, VIRTIO_NET_HDR_LEN,
    ZERO_VNET_HDR,
};
use vxnet_encap::wire::{ETHERNET_HEADER_LEN, VXLAN_HEADER_LEN};
use vxnet_encap::{encapsulate, Encapsulation};

use crate::counters::{DropReason, Events};
use crate::fdb::Millis;
use crate::forward::{Forwarder, TapAction, WireAction, WireRun};
use crate::sys::poll::{wait_writable, EventFd, PollSet};
use crate::sys::tap::TapQueue;
use crate::sys::udp::{Outgoing, RecvBatch, SendBatch, UdpSocket};

/// Frames moved per syscall.
pub const BATCH: usize = 64;
/// Headroom in front of each TAP frame: the VXLAN header (the kernel adds UDP and IP).
const HEADROOM: usize = 8;
/// Largest frame a TAP hands us (room for a 64 KB superframe once offloads are on).
const MAX_FRAME: usize = 65_536;
/// Output room for one segmented superframe: the payload plus, per segment, VXLAN and inner
/// headers (Ethernet + tag + IPv4 with options + TCP with options: at most 146 bytes).
const MAX_SEGMENTED: usize = MAX_FRAME + MAX_GSO_SEGMENTS * (VXLAN_AND_INNER_HEADERS);
const VXLAN_AND_INNER_HEADERS: usize = 8 + 146;
/// Most segments written into one TAP buffer: two full UDP GSO sends. A superframe with more (a
/// small MSS: 536 makes 123 of 64 KB) takes several buffers, so no size of it is refused.
const MAX_CHUNK_SEGMENTS: usize = 2 * MAX_GSO_SEGMENTS;

/// Makes the TCP superframes the kernel hands to TAP `dev` (inner MTU `mtu`) small enough for
/// one `UDP_SEGMENT` send each, by capping the device's `gso_max_segs`. Best effort: without it
/// a superframe just takes two sends.
pub fn fit_superframes_to_gso(dev: &str, mtu: u32) {
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

/// Which fast-path features this worker uses (decided by the engine's probes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// The TAP was opened with IFF_VNET_HDR: frames carry a virtio-net header both ways.
    pub vnet_hdr: bool,
    /// UDP_SEGMENT sends.
    pub gso: bool,
    /// UDP_GRO receives (the socket option is set by the engine).
    pub gro: bool,
}
/// Batches drained per wake-up before polling again, so one busy direction cannot starve the other.
const ROUNDS_PER_WAKE: usize = 8;
/// How long a full socket buffer may hold up sending before the rest of the batch is dropped.
const SEND_STALL: Duration = Duration::from_millis(100);

/// One wrapped frame waiting to be sent, by index into the worker's buffers (no borrows, so the
/// plan vector is reused across batches).
#[derive(Debug, Clone, Copy)]
struct Planned {
    buf: usize,
    start: usize,
    end: usize,
    network: usize,
    dest: Option<SocketAddr>,
    /// UDP_SEGMENT size when the range holds several equal-size datagrams.
    segment_size: Option<u16>,
    segments: usize,
    /// Which source-port socket carries it (from the inner flow hash).
    socket: usize,
}

/// The sockets packets leave from, one per stripe of the dynamic port range (RFC 7348 §5: the
/// source port is a hash of the inner flow, in 49152–65535). A flow always maps to one stripe,
/// so it keeps one port; different flows spread over the range for underlay ECMP/RSS.
#[derive(Debug)]
pub struct SourcePorts {
    sockets: Vec<UdpSocket>,
}

impl SourcePorts {
    pub fn new(sockets: Vec<UdpSocket>) -> Self {
        SourcePorts { sockets }
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    pub fn ports(&self) -> Vec<u16> {
        self.sockets.iter().map(|s| s.local_addr().port()).collect()
    }

    /// The socket for an inner flow hash: the stripe its hashed port falls in.
    fn index_for(&self, hash: u32) -> usize {
        crate::source_port::index_for(hash, self.sockets.len())
    }
}

pub struct Worker {
    forwarder: Arc<Forwarder>,
    taps: Vec<TapQueue>,
    socket: UdpSocket,
    source_ports: Arc<SourcePorts>,
    stop: Arc<EventFd>,
    epoch: Instant,
    tap_bufs: Vec<Box<[u8]>>,
    plan: Vec<Planned>,
    recv: RecvBatch,
    send: SendBatch,
    /// Destination and network of each queued `Outgoing`, for counting what was sent.
    sent_meta: Vec<(usize, IpAddr, usize, usize)>,
    /// Source-port socket of each queued `Outgoing`.
    sockets: Vec<usize>,
    outgoing: Vec<Outgoing<'static>>,
    packets: Vec<&'static [u8]>,
    offloads: Offloads,
    /// With a vnet header, TAP reads land here and are segmented into `tap_bufs`.
    raw: Box<[u8]>,
    /// Per network (index like `taps`): inner TCP payload bytes that fit one underlay datagram.
    mss: Vec<usize>,
    /// Longer received datagrams are GRO runs or tunnel superframes.
    max_single_datagram: usize,
    coalescers: Vec<Coalescer>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("taps", &self.taps.len())
            .finish()
    }
}

/// Reuses a vector's allocation for elements of the same layout but another lifetime: the
/// vectors of borrowed slices are rebuilt every batch, their capacity is not.
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    // Same size and alignment (only lifetimes differ): std collects an emptied vector in place.
    v.into_iter().filter_map(|_| None).collect()
}

/// Hands `out` to the kernel, retrying partial sends and waiting (briefly) when the socket
/// buffer is full; counts what was sent and what had to be dropped. Returns false when a
/// UDP_SEGMENT send was refused (the caller turns GSO off).
fn send_all(
    forwarder: &Forwarder,
    socket: &UdpSocket,
    send: &mut SendBatch,
    out: &[Outgoing<'_>],
    meta: &[(usize, IpAddr, usize, usize)],
) -> bool {
    let mut gso_ok = true;
    let mut done = 0;
    while done < out.len() {
        match send.send(socket, &out[done..]) {
            Ok(0) => {
                // Nothing taken and no error: count the head as lost rather than spin.
                count_send_error(forwarder, meta[done].0);
                done += 1;
            }
            Ok(sent) => {
                for (network, dest, segments, bytes) in &meta[done..done + sent] {
                    forwarder.count_sent(*network, *dest, *segments, *bytes);
                }
                done += sent;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !matches!(wait_writable(socket.socket().as_fd(), SEND_STALL), Ok(true)) {
                    for (network, _, _, _) in &meta[done..] {
                        count_send_error(forwarder, *network);
                    }
                    return gso_ok;
                }
            }
            Err(e) => {
                if out[done].segment_size.is_some()
                    && matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL))
                {
                    gso_ok = false;
                }
                // sendmmsg reports a failing message on the call after the ones that went out:
                // it is the head of what is left. Skip it, keep the rest.
                count_send_error(forwarder, meta[done].0);
                done += 1;
            }
        }
    }
    gso_ok
}

fn count_send_error(forwarder: &Forwarder, network: usize) {
    if let Some(n) = forwarder.networks().get(network) {
        n.drops.count(DropReason::SendError);
    }
}

impl Worker {
    pub fn new(
        forwarder: Arc<Forwarder>,
        taps: Vec<TapQueue>,
        socket: UdpSocket,
        source_ports: Arc<SourcePorts>,
        stop: Arc<EventFd>,
        epoch: Instant,
        offloads: Offloads,
    ) -> Self {
        let max_flood = 64;
        let buf_len = if offloads.vnet_hdr {
            MAX_SEGMENTED
        } else {
            HEADROOM + MAX_FRAME
        };
        // The largest inner IP packet is the TAP MTU; 40 bytes of IP and TCP header come off it.
        // (The kernel's gso_size is smaller still when TCP options are in use.)
        let mss = forwarder
            .networks()
            .iter()
            .map(|n| (n.settings.mtu as usize).saturating_sub(40).max(1))
            .collect();
        let coalescers = (0..taps.len())
            .map(|_| Coalescer::new(CoalesceConfig::default()))
            .collect();
        Worker {
            max_single_datagram: forwarder.max_single_datagram(),
            forwarder,
            taps,
            socket,
            source_ports,
            stop,
            epoch,
            tap_bufs: (0..BATCH)
                .map(|_| vec![0u8; buf_len].into_boxed_slice())
                .collect(),
            plan: Vec::with_capacity(BATCH),
            recv: RecvBatch::new(BATCH, MAX_FRAME),
            send: SendBatch::new(BATCH * 4, 1),
            sent_meta: Vec::with_capacity(BATCH * max_flood),
            sockets: Vec::with_capacity(BATCH * max_flood),
            outgoing: Vec::with_capacity(BATCH * max_flood),
            packets: Vec::with_capacity(BATCH),
            offloads,
            raw: vec![0u8; VIRTIO_NET_HDR_LEN + MAX_FRAME].into_boxed_slice(),
            mss,
            coalescers,
        }
    }

    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// Runs until the stop eventfd fires.
    pub fn run(mut self) -> io::Result<()> {
        let mut poll = PollSet::new();
        for tap in &self.taps {
            poll.add(tap.as_fd());
        }
        let socket_index = poll.add(self.socket.socket().as_fd());
        let stop_index = poll.add(self.stop.as_fd());
        loop {
            poll.wait(None)?;
            if poll.is_ready(stop_index) {
                return Ok(());
            }
            for index in 0..self.taps.len() {
                if poll.is_ready(index) {
                    self.drain_tap(index)?;
                }
            }
            if poll.is_ready(socket_index) {
                self.drain_socket()?;
            }
        }
    }

    fn drain_tap(&mut self, index: usize) -> io::Result<()> {
        for _ in 0..ROUNDS_PER_WAKE {
            let read = self.read_tap_batch(index)?;
            self.send_planned();
            if read < BATCH {
                break;
            }
        }
        Ok(())
    }

    /// Reads up to a batch of frames from TAP `index`, classifies and wraps them into the plan.
    fn read_tap_batch(&mut self, index: usize) -> io::Result<usize> {
        self.plan.clear();
        let Some(network) = self.forwarder.networks().get(index) else {
            return Ok(0);
        };
        let vni = network.vni();
        let encapsulation = Encapsulation::vxlan(vni);
        let mut read = 0;
        // TAP buffers used: one per frame, several for a superframe of many small segments.
        let mut slot = 0;
        let mut attempts = 0;
        while read < BATCH && attempts < BATCH * 2 {
            attempts += 1;
            if self.offloads.vnet_hdr {
                let len = match self.taps[index].read(&mut self.raw) {
                    Ok(len) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                // Taken out for the duration so the frame can be read while `self` is mutated
                // (a big superframe may flush the plan half-way); put back right after.
                let raw = std::mem::take(&mut self.raw);
                let planned = self.plan_offloaded_frame(index, &raw[..len], &mut slot);
                self.raw = raw;
                if !planned {
                    continue;
                }
            } else {
                let buf = &mut self.tap_bufs[slot];
                let len = match self.taps[index].read(&mut buf[HEADROOM..HEADROOM + MAX_FRAME]) {
                    Ok(len) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                let end = HEADROOM + len;
                let socket = self.source_ports.index_for(flow_hash(&buf[HEADROOM..end]));
                let dest = match self.forwarder.from_tap(index, &buf[HEADROOM..end]) {
                    TapAction::Drop(_) => continue,
                    TapAction::Unicast(dest) => Some(dest),
                    TapAction::Flood => None,
                };
                // The frame was checked to hold an Ethernet header, and HEADROOM fits VXLAN.
                let Ok(start) = encapsulate(&mut buf[..end], HEADROOM, &encapsulation) else {
                    continue;
                };
                self.plan.push(Planned {
                    buf: slot,
                    start,
                    end,
                    network: index,
                    dest,
                    segment_size: None,
                    segments: 1,
                    socket,
                });
                slot += 1;
            }
            read += 1;
        }
        Ok(read)
    }

    /// Classifies one frame read with its virtio-net header (`raw`) and writes it, segmented
    /// when it is a superframe, into TAP buffers from `*slot` on, planning its sends. A frame
    /// needing more buffers than are left sends what is planned and starts over at buffer 0.
    /// Returns false when the frame was dropped.
    fn plan_offloaded_frame(&mut self, index: usize, raw: &[u8], slot: &mut usize) -> bool {
        let Some(network) = self.forwarder.networks().get(index) else {
            return false;
        };
        let vni = network.vni();
        let Ok(hdr) = VirtioNetHdr::parse(raw) else {
            network.drops.count(DropReason::Runt);
            return false;
        };
        let frame = &raw[VIRTIO_NET_HDR_LEN..];
        let superframe = hdr.gso_kind() != VirtioNetHdr::GSO_NONE;
        let dest = match self.forwarder.from_tap_frame(index, frame, superframe) {
            TapAction::Drop(_) => return false,
            TapAction::Unicast(dest) => Some(dest),
            TapAction::Flood => None,
        };
        let socket = self.source_ports.index_for(flow_hash(frame));
        let mut wire = match WirePlan::new(&hdr, frame, self.mss[index]) {
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
        let max_segments = if self.offloads.gso {
            MAX_GSO_SEGMENTS
        } else {
            1
        };
        while wire.remaining() > 0 {
            if *slot == self.tap_bufs.len() {
                self.send_planned();
                self.plan.clear();
                *slot = 0;
            }
            let Some(network) = self.forwarder.networks().get(index) else {
                return false;
            };
            let out = &mut self.tap_bufs[*slot];
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
                self.plan.push(Planned {
                    buf: *slot,
                    start: batch.range.start,
                    end: batch.range.end,
                    network: index,
                    dest,
                    segment_size: (batch.segments > 1).then_some(batch.segment_size as u16),
                    segments: batch.segments,
                    socket,
                });
            }
            *slot += 1;
        }
        true
    }

    /// Sends everything in the plan: unicast to one VTEP, floods to each peer of the network.
    fn send_planned(&mut self) {
        if self.plan.is_empty() {
            return;
        }
        // Group by source-port socket; (buf, start) keeps read order within a socket, so the
        // packets of one flow never overtake each other.
        self.plan
            .sort_unstable_by_key(|p| (p.socket, p.buf, p.start));
        let Worker {
            forwarder,
            source_ports,
            tap_bufs,
            plan,
            send,
            sent_meta,
            outgoing,
            packets,
            offloads,
            sockets,
            ..
        } = self;
        let mut slices: Vec<&[u8]> = recycle(std::mem::take(packets));
        for planned in plan.iter() {
            slices.push(&tap_bufs[planned.buf][planned.start..planned.end]);
        }
        let mut out: Vec<Outgoing<'_>> = recycle(std::mem::take(outgoing));
        sent_meta.clear();
        sockets.clear();
        let local_is_v4 = forwarder.local().is_ipv4();
        for (planned, packet) in plan.iter().zip(&slices) {
            let parts = std::slice::from_ref(packet);
            let mut push = |dest: SocketAddr| {
                out.push(Outgoing {
                    dest,
                    parts,
                    segment_size: planned.segment_size,
                });
                sent_meta.push((planned.network, dest.ip(), planned.segments, packet.len()));
                sockets.push(planned.socket);
            };
            match planned.dest {
                Some(dest) => push(dest),
                None => {
                    let Some(network) = forwarder.networks().get(planned.network) else {
                        continue;
                    };
                    for dest in network.peers().flood.iter() {
                        if dest.is_ipv4() == local_is_v4 {
                            push(*dest);
                        } else {
                            network.drops.count(DropReason::WrongFamily);
                        }
                    }
                }
            }
        }
        let mut all_ok = true;
        let mut start = 0;
        while start < out.len() {
            let socket = sockets[start];
            let end = start
                + sockets[start..]
                    .iter()
                    .take_while(|s| **s == socket)
                    .count();
            if let Some(udp) = source_ports.sockets.get(socket) {
                all_ok &= send_all(
                    forwarder,
                    udp,
                    send,
                    &out[start..end],
                    &sent_meta[start..end],
                );
            }
            start = end;
        }
        if !all_ok {
            // The kernel refused UDP_SEGMENT at run time (EIO/EINVAL): send segment by
            // segment from now on. The refused frames are counted; TCP retransmits them.
            if offloads.gso {
                tracing::warn!("UDP GSO refused by the kernel at run time; falling back to one datagram per segment");
                offloads.gso = false;
            }
        }
        *outgoing = recycle(out);
        *packets = recycle(slices);
    }

    fn drain_socket(&mut self) -> io::Result<()> {
        for _ in 0..ROUNDS_PER_WAKE {
            let received = match self.recv.recv(&self.socket) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let now = self.now();
            let Worker {
                forwarder,
                taps,
                recv,
                coalescers,
                offloads,
                max_single_datagram,
                raw,
                ..
            } = self;
            // One sender's datagrams in a row share their fate (see `from_wire_run`).
            let mut run = WireRun::default();
            for i in 0..received {
                let datagram = recv.datagram(i);
                if datagram.truncated {
                    forwarder.drops.count(DropReason::Truncated);
                    continue;
                }
                // With GRO one read holds a run of equal-size VXLAN datagrams (last one shorter).
                let size = match datagram.gro_segment_size {
                    Some(size) if size > 0 => size as usize,
                    _ => datagram.data.len().max(1),
                };
                let source = datagram.source;
                let gro_size = datagram.gro_segment_size;
                // Mutable: an inner checksum left partial by a local kernel VTEP is completed
                // in place before delivery.
                let data = recv.datagram_mut(i);
                if data.len() > *max_single_datagram {
                    let inner = data.get(VXLAN_HEADER_LEN..).unwrap_or_default();
                    if let Ok(superframe) = InnerSuperframe::parse(inner) {
                        let received = TunnelSuperframe {
                            now,
                            source,
                            datagram: data,
                            superframe,
                            gro_size,
                        };
                        received.deliver(forwarder, taps, coalescers, *offloads, raw);
                        continue;
                    }
                }
                // A GRO run is counted once, on the network of its first delivered datagram.
                let mut gro_counted = data.len() <= size;
                for packet in data.chunks_mut(size) {
                    if let WireAction::Deliver { network, inner } =
                        forwarder.from_wire_run(now, source, packet, &mut run)
                    {
                        if !gro_counted {
                            gro_counted = true;
                            if let Some(n) = forwarder.networks().get(network) {
                                Events::bump(&n.events.gro_batches);
                            }
                        }
                        deliver(
                            forwarder,
                            taps,
                            coalescers,
                            *offloads,
                            network,
                            &mut packet[inner],
                        );
                    }
                }
            }
            forwarder.end_run(&mut run);
            // A superframe never waits for the next read: flush at the end of every batch.
            for (network, coalescer) in coalescers.iter_mut().enumerate() {
                flush(forwarder, taps, coalescer, network);
            }
            if received < BATCH {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// A received datagram that holds one inner superframe (see `vxnet_encap::offload::tunnel_gso`).
struct TunnelSuperframe<'a> {
    now: Millis,
    source: SocketAddr,
    datagram: &'a [u8],
    superframe: InnerSuperframe,
    /// The `UDP_GRO` size the socket reported: the sender's segment payload.
    gro_size: Option<u16>,
}

impl TunnelSuperframe<'_> {
    /// Writes the superframe to its network's TAP whole, behind a TSO/USO virtio-net header, or
    /// segment by segment when the TAP has no virtio-net header (`raw` is the scratch space).
    fn deliver(
        self,
        forwarder: &Forwarder,
        taps: &[TapQueue],
        coalescers: &mut [Coalescer],
        offloads: Offloads,
        raw: &mut [u8],
    ) {
        let TunnelSuperframe {
            now,
            source,
            datagram,
            superframe,
            gro_size,
        } = self;
        let WireAction::Deliver { network, inner } =
            forwarder.from_wire_superframe(now, source, datagram)
        else {
            return;
        };
        let Some(n) = forwarder.networks().get(network) else {
            return;
        };
        // The payload one frame of the TAP's MTU holds behind these headers.
        let fallback_mss =
            (n.settings.mtu as usize + ETHERNET_HEADER_LEN).saturating_sub(superframe.hdr_len());
        let frame = &datagram[inner];
        let hdr = match superframe.prepare(frame, gro_size, fallback_mss) {
            Ok(hdr) => hdr,
            Err(_) => {
                n.drops.count(DropReason::BadOffload);
                return;
            }
        };
        let segments = superframe.segments(hdr.gso_size as usize);
        forwarder.count_rx(
            network,
            source.ip(),
            segments as u64,
            frame.len() as u64,
            (frame.len() + VXLAN_HEADER_LEN) as u64,
        );
        Events::bump(&n.events.tunnel_superframes);
        n.events
            .tunnel_segments
            .fetch_add(segments as u64, Ordering::Relaxed);
        // Segments of the same flow may be waiting in the coalescer: they go first.
        if let Some(coalescer) = coalescers.get_mut(network) {
            flush(forwarder, taps, coalescer, network);
        }
        if offloads.vnet_hdr {
            let hdr = hdr.to_bytes();
            write_tap(
                forwarder,
                taps,
                network,
                &[IoSlice::new(&hdr), IoSlice::new(frame)],
            );
            return;
        }
        // Cut where the TAP's MTU allows, even if the sender's segments were larger.
        let mut plan = match WirePlan::new(&hdr, frame, fallback_mss) {
            Ok(plan) => plan,
            Err(_) => {
                n.drops.count(DropReason::BadOffload);
                return;
            }
        };
        let vni = n.vni();
        loop {
            let written = match plan.write_next(frame, vni, raw, MAX_GSO_SEGMENTS) {
                Ok(Some(written)) => written,
                Ok(None) => return,
                Err(_) => {
                    n.drops.count(DropReason::BadOffload);
                    return;
                }
            };
            // Each piece is a VXLAN datagram as it would go on the wire; the TAP wants the frame.
            for datagram in raw[..written.total_len].chunks(written.segment_size) {
                if let Some(segment) = datagram.get(VXLAN_HEADER_LEN..) {
                    write_tap(forwarder, taps, network, &[IoSlice::new(segment)]);
                }
            }
        }
    }
}

/// Writes one inner frame towards network `network`'s TAP: straight through without a vnet
/// header, else through the coalescer (TCP segments of one flow merge into a superframe).
fn deliver(
    forwarder: &Forwarder,
    taps: &[TapQueue],
    coalescers: &mut [Coalescer],
    offloads: Offloads,
    network: usize,
    frame: &mut [u8],
) {
    if !offloads.vnet_hdr {
        complete_partial(forwarder, network, frame);
        write_tap(forwarder, taps, network, &[IoSlice::new(frame)]);
        return;
    }
    let Some(coalescer) = coalescers.get_mut(network) else {
        return;
    };
    let mut push = coalesce(forwarder, taps, coalescer, network, frame);
    // Only frames the coalescer did not take are checked for a partial checksum: a TCP segment
    // it verified is complete, and the signature check costs a parse.
    if matches!(push, Push::PassThrough(_)) && complete_partial(forwarder, network, frame) {
        push = coalesce(forwarder, taps, coalescer, network, frame);
    }
    if let Push::PassThrough(_) = push {
        write_tap(
            forwarder,
            taps,
            network,
            &[IoSlice::new(&ZERO_VNET_HDR), IoSlice::new(frame)],
        );
    }
}

/// Offers `frame` to the coalescer, writing out the pending superframe first when it must go.
fn coalesce(
    forwarder: &Forwarder,
    taps: &[TapQueue],
    coalescer: &mut Coalescer,
    network: usize,
    frame: &[u8],
) -> Push {
    let mut push = coalescer.push(frame);
    if push == Push::Flush {
        flush(forwarder, taps, coalescer, network);
        push = coalescer.push(frame);
    }
    push
}

/// Writes out the superframe (or lone segment) the coalescer holds for network `network`.
fn flush(forwarder: &Forwarder, taps: &[TapQueue], coalescer: &mut Coalescer, network: usize) {
    if let Some(pending) = coalescer.finish() {
        count_coalesced(forwarder, network, pending);
        write_tap(forwarder, taps, network, &[IoSlice::new(pending)]);
    }
}

/// Completes an inner checksum a kernel VTEP on this machine left for a NIC (see
/// `vxnet_encap::offload::partial`), counting it.
fn complete_partial(forwarder: &Forwarder, network: usize, frame: &mut [u8]) -> bool {
    let completed = complete_partial_checksum(frame);
    if completed {
        if let Some(n) = forwarder.networks().get(network) {
            Events::bump(&n.events.partial_checksums);
        }
    }
    completed
}

/// Counts a coalescer write that is a superframe (a single segment leaves with a zero header).
fn count_coalesced(forwarder: &Forwarder, network: usize, write: &[u8]) {
    let (Ok(hdr), Some(n)) = (
        VirtioNetHdr::parse(write),
        forwarder.networks().get(network),
    ) else {
        return;
    };
    if hdr.gso_kind() == VirtioNetHdr::GSO_NONE || hdr.gso_size == 0 {
        return;
    }
    let payload = write
        .len()
        .saturating_sub(VIRTIO_NET_HDR_LEN + hdr.hdr_len as usize);
    Events::bump(&n.events.coalesced_superframes);
    n.events.coalesced_segments.fetch_add(
        payload.div_ceil(hdr.gso_size as usize) as u64,
        Ordering::Relaxed,
    );
}

fn write_tap(forwarder: &Forwarder, taps: &[TapQueue], network: usize, parts: &[IoSlice<'_>]) {
    let Some(tap) = taps.get(network) else {
        return;
    };
    if tap.writev(parts).is_err() {
        if let Some(n) = forwarder.networks().get(network) {
            n.drops.count(DropReason::TapWrite);
        }
    }
}
