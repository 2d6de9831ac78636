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

mod pmtu;
mod rx;
mod send;
mod source_ports;
mod tap_sink;
mod tx;

use std::io;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vxnet_encap::offload::{CoalesceConfig, Coalescer, MAX_GSO_SEGMENTS, VIRTIO_NET_HDR_LEN};
use vxnet_encap::outer::OuterFields;

use crate::fdb::Millis;
use crate::forward::Forwarder;
use crate::sys::poll::{EventFd, PollSet};
use crate::sys::tap::TapQueue;
use crate::sys::udp::{Outgoing, RecvBatch, SendBatch, UdpSocket};

pub use source_ports::{SourcePortConfig, SourcePorts};
pub use tx::fit_superframes_to_gso;

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
    /// Which source-port slot carries it (from the inner flow hash and the DF it needs).
    socket: usize,
    /// Outer DF, TTL and TOS (per packet only where the policy inherits them).
    outer: OuterFields,
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
    /// Plan index of each queued `Outgoing`.
    sockets: Vec<usize>,
    /// Path MTU to each VTEP and the ICMP too-big replies.
    pmtu: pmtu::PathMtus,
    /// Sends of the current batch too big for their path, and sends the kernel refused.
    oversize: Vec<send::Oversize>,
    refused: Vec<send::Refused>,
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
            pmtu: pmtu::PathMtus::new(
                forwarder.local(),
                source_ports.fallback_mtu(),
                source_ports.range().outside(),
            ),
            oversize: Vec::with_capacity(BATCH),
            refused: Vec::with_capacity(BATCH),
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
}
