//! TAP → wire, last step: the plan becomes messages (a flood one per peer), checked against the
//! path MTU to each VTEP (see [`super::pmtu`]), grouped by source-port socket and handed to the
//! kernel, with retries on a full socket buffer and the run-time fall-back when the kernel
//! refuses `UDP_SEGMENT` (see [`crate::offload`]). Every message that does not go out is a
//! counted drop; one too big for its path with DF is answered with ICMP into the TAP.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pmtu::PathMtus;
use super::source_ports::SourcePorts;
use super::tunnel::{TunnelTx, Whole};
use super::tx::{Classified, Planned};
use super::BATCH;
use crate::counters::{DropReason, Events};
use crate::fdb::Millis;
use crate::forward::Forwarder;
use crate::offload::{is_gso_refusal, UdpGso};
use crate::sys::poll::wait_writable;
use crate::sys::tap::TapQueue;
use crate::sys::udp::{Outgoing, SendBatch, UdpSocket};
use vxnet_encap::offload::{MAX_GSO_SEGMENTS, MAX_UDP_GSO_PAYLOAD};
use vxnet_encap::wire::VXLAN_HEADER_LEN;

mod esp;
pub(super) use esp::EspPath;

/// How long a full socket buffer may hold up sending before the rest of the batch is dropped.
const SEND_STALL: Duration = Duration::from_millis(100);
/// Flood copies room is reserved for per planned frame (more just grow the vectors once).
const MAX_FLOOD: usize = 64;

/// What to count for one message once the kernel took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    network: usize,
    dest: IpAddr,
    segments: usize,
    /// Inner frame bytes (see [`Planned::inner_bytes`]).
    bytes: usize,
}

/// A send the kernel refused in a way a smaller path MTU explains (EMSGSIZE; EINVAL or EIO for
/// a UDP GSO send): index into the batch's messages and the error number.
type Refused = (usize, i32);

/// What to do with a datagram too big for the path: with DF, answer it with ICMP; without,
/// send its GSO segments one by one (the kernel fragments each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Oversize {
    Answer { plan: usize, mtu: u32 },
    Split { plan: usize, dest: SocketAddr },
}

/// A worker's sending side: the engine's source-port sockets, what the worker knows of path
/// MTUs, and scratch space reused for every batch (allocated once, so sending allocates
/// nothing).
pub(super) struct Sender {
    source_ports: Arc<SourcePorts>,
    batch: SendBatch,
    gso: Arc<UdpGso>,
    pmtu: PathMtus,
    epoch: Instant,
    /// Per queued message: what to count, and which plan entry it came from.
    sent: Vec<Sent>,
    origins: Vec<usize>,
    /// Sends of the current batch too big for their path, and sends the kernel refused.
    oversize: Vec<Oversize>,
    refused: Vec<Refused>,
    outgoing: Vec<Outgoing<'static>>,
    packets: Vec<&'static [u8]>,
    /// The tunnel-GSO path, when the engine offers it.
    tunnel: Option<TunnelTx>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("source_ports", &self.source_ports.open())
            .field("gso", &self.gso.in_use())
            .field("pmtu", &self.pmtu)
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

impl Sender {
    pub(super) fn new(
        forwarder: &Forwarder,
        source_ports: Arc<SourcePorts>,
        gso: Arc<UdpGso>,
        epoch: Instant,
    ) -> Self {
        Sender {
            pmtu: PathMtus::new(
                forwarder.local(),
                source_ports.fallback_mtu(),
                source_ports.min_pmtu(),
                source_ports.range().outside(),
            ),
            source_ports,
            batch: SendBatch::new(BATCH * 4, 1),
            gso,
            epoch,
            sent: Vec::with_capacity(BATCH * MAX_FLOOD),
            origins: Vec::with_capacity(BATCH * MAX_FLOOD),
            oversize: Vec::with_capacity(BATCH),
            refused: Vec::with_capacity(BATCH),
            outgoing: Vec::with_capacity(BATCH * MAX_FLOOD),
            packets: Vec::with_capacity(BATCH),
            tunnel: None,
        }
    }

    /// The path-MTU probe's socket, if there is one.
    pub(super) fn probe_fd(&self) -> Option<BorrowedFd<'_>> {
        self.pmtu.probe_fd()
    }

    /// Sends superframes whole through `tunnel` where it can.
    pub(super) fn with_tunnel(mut self, tunnel: Option<TunnelTx>) -> Self {
        self.tunnel = tunnel;
        self
    }

    /// Whether a unicast TCP superframe may try the tunnel path.
    pub(super) fn has_tunnel(&self) -> bool {
        self.tunnel.is_some()
    }

    /// Sends the TCP superframe `frame` (classified as `c`, read from network `network`'s TAP)
    /// whole through the underlay TAP. False: it was not sent, plan it the ordinary way.
    pub(super) fn send_whole(
        &mut self,
        forwarder: &Forwarder,
        network: usize,
        c: &Classified,
        frame: &[u8],
    ) -> bool {
        let (Some(tunnel), Some(dest), Some(n)) = (
            self.tunnel.as_mut(),
            c.dest,
            forwarder.networks().get(network),
        ) else {
            return false;
        };
        let now = self.epoch.elapsed().as_millis() as Millis;
        let whole = Whole {
            hdr: &c.hdr,
            frame,
            dest,
            vni: n.vni(),
            src_port: self.source_ports.port_of(c.socket),
            outer: c.outer,
            path_mtu: self.pmtu.get(dest, now),
        };
        match tunnel.send(&whole, now) {
            Some(carried) => {
                forwarder.count_sent(network, dest.ip(), carried.segments, carried.bytes);
                true
            }
            None => false,
        }
    }

    /// Whether segments may still share `UDP_SEGMENT` sends (false once the kernel refused one).
    pub(super) fn gso(&self) -> bool {
        self.gso.in_use()
    }

    /// Sends everything in `plan` (ranges of `bufs`): unicast to one VTEP, floods to each peer
    /// of the network. ICMP too-big replies go into `taps` (with a virtio-net header when
    /// `vnet_hdr`).
    pub(super) fn send(
        &mut self,
        forwarder: &Forwarder,
        taps: &[TapQueue],
        vnet_hdr: bool,
        bufs: &[Box<[u8]>],
        plan: &mut [Planned],
    ) {
        if plan.is_empty() {
            return;
        }
        // Group by source-port socket; (buf, start) keeps read order within a socket, so the
        // packets of one flow never overtake each other.
        plan.sort_unstable_by_key(|p| (p.socket, p.buf, p.start));
        let now = self.epoch.elapsed().as_millis() as Millis;
        let mut slices: Vec<&[u8]> = recycle(std::mem::take(&mut self.packets));
        slices.extend(plan.iter().map(|p| &bufs[p.buf][p.start..p.end]));
        let mut out: Vec<Outgoing<'_>> = recycle(std::mem::take(&mut self.outgoing));
        self.oversize.clear();
        self.refused.clear();
        expand(
            forwarder,
            plan,
            &slices,
            self.gso.in_use(),
            &mut out,
            &mut self.sent,
            &mut self.origins,
            &mut |planned, index, dest| {
                // Without DF a single datagram is the kernel's to fragment; only DF and GSO
                // sends (whose segments the kernel will not fragment) are checked.
                if !(planned.outer.df || planned.segment_size.is_some()) {
                    return None;
                }
                let mtu = self.pmtu.get(dest, now);
                (!self.pmtu.fits(mtu, datagram_len(planned)))
                    .then(|| too_big(planned, index, dest, mtu))
            },
            &mut self.oversize,
        );
        let mut start = 0;
        while start < out.len() {
            let socket = plan[self.origins[start]].socket;
            let end = start
                + self.origins[start..]
                    .iter()
                    .take_while(|o| plan[**o].socket == socket)
                    .count();
            if let Some(udp) = self.source_ports.get(socket) {
                send_all(
                    forwarder,
                    &udp,
                    &mut self.batch,
                    &out[start..end],
                    &self.sent[start..end],
                    start,
                    &mut self.refused,
                );
            } else {
                for s in &self.sent[start..end] {
                    count_unsent(forwarder, s);
                }
            }
            start = end;
        }
        // Refused sends: larger than the underlay device takes (the DF sockets do not enforce
        // the path MTU the kernel learnt, the checks above do), or the kernel refuses
        // UDP_SEGMENT at run time.
        let mut gso_refused = false;
        for &(i, errno) in &self.refused {
            let planned = &plan[self.origins[i]];
            let dest = out[i].dest;
            let mtu = self.pmtu.refresh(dest, now);
            // Gathered single datagrams (see `expand`) are not answered one by one: the path
            // read again sends the next ones apart, or answers them.
            let gathered = self.sent[i].segments > planned.segments;
            if !gathered
                && !self.pmtu.fits(mtu, datagram_len(planned))
                && (planned.outer.df || planned.segment_size.is_some())
            {
                self.oversize
                    .push(too_big(planned, self.origins[i], dest, mtu));
            } else {
                gso_refused |= errno != libc::EMSGSIZE;
                count_unsent(forwarder, &self.sent[i]);
            }
        }
        if gso_refused {
            // A refusal the path MTU does not explain (an egress device without checksum
            // offload, an xfrm path): the refused messages are counted (TCP retransmits them);
            // from now on every worker sends segment by segment.
            self.gso.refused();
        }
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        for &o in &self.oversize {
            match o {
                Oversize::Answer { plan: index, mtu } => {
                    let planned = &plan[index];
                    count_drop(forwarder, planned.network, DropReason::TooBig);
                    let first = &slices[index][..datagram_len(planned).min(slices[index].len())];
                    self.pmtu.answer(
                        forwarder,
                        taps,
                        planned.network,
                        vnet_hdr,
                        first,
                        mtu,
                        now_ns,
                    );
                }
                Oversize::Split { plan: index, dest } => {
                    split_send(
                        forwarder,
                        &self.source_ports,
                        &plan[index],
                        slices[index],
                        dest,
                    );
                }
            }
        }
        self.outgoing = recycle(out);
        self.packets = recycle(slices);
    }
}

/// Turns `plan` (whose wrapped bytes are `slices`, in the same order) into messages: one per
/// entry for a unicast, one per flood peer of the network for a flood, skipping (and counting)
/// peers of the other address family. `check` sets aside (into `oversize`) a message too big
/// for its path. `sent` and `origins` get one entry per message.
///
/// With `gather`, consecutive single datagrams of equal size to the same VTEP from the same
/// socket with the same outer fields (a flow of small frames: each TAP read is one frame) become
/// one `UDP_SEGMENT` send whose parts are the datagrams: the kernel then carries them as one
/// packet through the whole send path, the underlay and, where the receiver has UDP GRO, into
/// its socket, instead of once per frame.
#[allow(clippy::too_many_arguments)]
fn expand<'a>(
    forwarder: &Forwarder,
    plan: &[Planned],
    slices: &'a [&'a [u8]],
    gather: bool,
    out: &mut Vec<Outgoing<'a>>,
    sent: &mut Vec<Sent>,
    origins: &mut Vec<usize>,
    check: &mut dyn FnMut(&Planned, usize, SocketAddr) -> Option<Oversize>,
    oversize: &mut Vec<Oversize>,
) {
    sent.clear();
    origins.clear();
    let local_is_v4 = forwarder.local().is_ipv4();
    // The run of single datagrams the last message gathers, if it may take more.
    let mut run: Option<Run> = None;
    for (index, (planned, packet)) in plan.iter().zip(slices).enumerate() {
        if let (Some(r), Some(dest), Some(last)) = (run.as_mut(), planned.dest, out.last_mut()) {
            if r.takes(&plan[r.first], planned, packet.len())
                && check(&r.as_gso(planned), index, dest).is_none()
            {
                r.add(packet.len());
                last.parts = &slices[r.first..=index];
                last.segment_size = Some(r.size as u16);
                if let Some(s) = sent.last_mut() {
                    s.segments += 1;
                    s.bytes += planned.inner_bytes;
                }
                if r.count == 2 {
                    if let Some(n) = forwarder.networks().get(planned.network) {
                        Events::bump(&n.events.gso_batches);
                    }
                }
                continue;
            }
        }
        run = None;
        let parts = std::slice::from_ref(packet);
        let mut push = |dest: SocketAddr| {
            if let Some(o) = check(planned, index, dest) {
                oversize.push(o);
                return false;
            }
            out.push(Outgoing {
                dest,
                parts,
                segment_size: planned.segment_size,
                ttl: planned.outer.ttl,
                tos: planned.outer.tos,
            });
            sent.push(Sent {
                network: planned.network,
                dest: dest.ip(),
                segments: planned.segments,
                bytes: planned.inner_bytes,
            });
            origins.push(index);
            true
        };
        match planned.dest {
            Some(dest) => {
                if push(dest) && gather && planned.segment_size.is_none() {
                    run = Some(Run::new(index, packet.len()));
                }
            }
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
}

/// Single datagrams gathered into one `UDP_SEGMENT` send (see [`expand`]).
#[derive(Debug)]
struct Run {
    /// The plan entry (and slice) of its first datagram.
    first: usize,
    /// The segment size: every datagram has it but the last, which may be shorter.
    size: usize,
    count: usize,
    bytes: usize,
    /// A shorter datagram ended it.
    closed: bool,
}

impl Run {
    fn new(first: usize, size: usize) -> Self {
        Run {
            first,
            size,
            count: 1,
            bytes: size,
            closed: false,
        }
    }

    /// Whether the single datagram `next` (`len` bytes) may follow in this send: same VTEP,
    /// socket, network and outer fields as the run's `first` entry, no longer than the segment
    /// size, and room left under the kernel's limits.
    fn takes(&self, first: &Planned, next: &Planned, len: usize) -> bool {
        !self.closed
            && next.segment_size.is_none()
            && next.segments == 1
            && next.dest == first.dest
            && next.socket == first.socket
            && next.network == first.network
            && next.outer == first.outer
            && len <= self.size
            && len > 0
            && self.count < MAX_GSO_SEGMENTS
            && self.bytes + len <= MAX_UDP_GSO_PAYLOAD
    }

    fn add(&mut self, len: usize) {
        self.count += 1;
        self.bytes += len;
        self.closed = len < self.size;
    }

    /// `next` as a segment of this send, for the path-MTU check (a GSO segment is never
    /// fragmented, so it is checked with or without DF).
    fn as_gso(&self, next: &Planned) -> Planned {
        Planned {
            segment_size: Some(self.size as u16),
            ..*next
        }
    }
}

/// Hands `out` to the kernel, retrying partial sends and waiting (briefly) when the socket
/// buffer is full; counts what was sent and what had to be dropped. Sends refused in a way a
/// smaller path MTU (or a run-time `UDP_SEGMENT` refusal) explains are left in `refused`
/// (indices into `out`, offset by `base`) for the caller to judge, uncounted.
fn send_all(
    forwarder: &Forwarder,
    socket: &UdpSocket,
    batch: &mut SendBatch,
    out: &[Outgoing<'_>],
    sent: &[Sent],
    base: usize,
    refused: &mut Vec<Refused>,
) {
    let mut done = 0;
    while done < out.len() {
        match batch.send(socket, &out[done..]) {
            Ok(0) => {
                // Nothing taken and no error: count the head as lost rather than spin.
                count_unsent(forwarder, &sent[done]);
                done += 1;
            }
            Ok(n) => {
                for s in &sent[done..done + n] {
                    forwarder.count_sent(s.network, s.dest, s.segments, s.bytes);
                }
                done += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !matches!(wait_writable(socket.socket().as_fd(), SEND_STALL), Ok(true)) {
                    for s in &sent[done..] {
                        count_unsent(forwarder, s);
                    }
                    return;
                }
            }
            Err(e) => {
                // sendmmsg reports a failing message on the call after the ones that went out:
                // it is the head of what is left. Skip it, keep the rest.
                let gso = out[done].segment_size.is_some();
                match e.raw_os_error() {
                    Some(errno @ libc::EMSGSIZE) => refused.push((base + done, errno)),
                    Some(errno) if gso && is_gso_refusal(&e) => refused.push((base + done, errno)),
                    _ => count_unsent(forwarder, &sent[done]),
                }
                done += 1;
            }
        }
    }
}

fn count_drop(forwarder: &Forwarder, network: usize, reason: DropReason) {
    if let Some(n) = forwarder.networks().get(network) {
        n.drops.count(reason);
    }
}

/// Counts every datagram of a message that did not go out.
fn count_unsent(forwarder: &Forwarder, s: &Sent) {
    if let Some(n) = forwarder.networks().get(s.network) {
        n.drops.count_many(DropReason::SendError, s.segments as u64);
    }
}

fn count_send_error(forwarder: &Forwarder, network: usize) {
    count_drop(forwarder, network, DropReason::SendError);
}

/// The UDP payload of one datagram of a planned send (for a GSO send: one segment).
fn datagram_len(planned: &Planned) -> usize {
    planned
        .segment_size
        .map_or(planned.end - planned.start, usize::from)
}

fn too_big(planned: &Planned, plan: usize, dest: SocketAddr, mtu: u32) -> Oversize {
    if planned.outer.df {
        Oversize::Answer { plan, mtu }
    } else {
        Oversize::Split { plan, dest }
    }
}

/// Sends the segments of a GSO send one datagram at a time (DF clear: the kernel fragments
/// those larger than the path). Rare: only when a path shrank below an unfragmentable size.
fn split_send(
    forwarder: &Forwarder,
    source_ports: &SourcePorts,
    planned: &Planned,
    packet: &[u8],
    dest: SocketAddr,
) {
    let Some(udp) = source_ports.get(planned.socket) else {
        count_send_error(forwarder, planned.network);
        return;
    };
    for segment in packet.chunks(datagram_len(planned).max(1)) {
        match udp.send_to(segment, dest) {
            Ok(_) => forwarder.count_sent(
                planned.network,
                dest.ip(),
                1,
                segment.len().saturating_sub(VXLAN_HEADER_LEN),
            ),
            Err(_) => count_send_error(forwarder, planned.network),
        }
    }
}

#[cfg(test)]
mod tests;
