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
//!
//! The parts, in packet order: this module (the poll loop and the TAP reads) → [`tx`] (pure
//! planning: classify, segment, wrap) → [`send`] (messages, GSO policy, `sendmmsg`); and from
//! the wire: [`rx`] (the socket drain, GRO runs, tunnel superframes) → [`tap_sink`] (coalescing
//! and TAP writes). [`pmtu`] is the send side's path-MTU check and its ICMP too-big replies.

mod esp;
#[cfg(test)]
mod fixtures;
mod neighbors;
mod pmtu;
mod recut;
mod rx;
mod send;
mod source_ports;
mod tap_sink;
mod tunnel;
mod tx;

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vxnet_encap::offload::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use vxnet_encap::Encapsulation;

use crate::counters::DropReason;
use crate::fdb::Millis;
use crate::forward::Forwarder;
use crate::offload::Offloads;
use crate::sys::poll::{EventFd, PollSet};
use crate::sys::tap::TapQueue;
use crate::sys::thread::{hand_over, Handed, OwnerMark};
use crate::sys::udp::{Received, RecvBatch, UdpSocket};

pub(crate) use source_ports::{SourcePortConfig, SourcePorts};
pub(crate) use tx::fit_superframes_to_gso;

use esp::{EspRx, EspTx};
use send::Sender;
use tap_sink::TapSink;
use tunnel::TunnelTx;
use tx::{TxPlan, MAX_FRAME};

/// Frames moved per syscall.
pub(crate) const BATCH: usize = 64;
/// Batches drained per wake-up before polling again, so one busy direction cannot starve the other.
const ROUNDS_PER_WAKE: usize = 8;

/// Everything a worker is built from.
#[derive(Debug)]
pub(crate) struct WorkerConfig {
    /// The forwarding generation the worker serves.
    pub(crate) forwarder: Arc<Forwarder>,
    /// One queue of each network's TAP, indexed like `forwarder.networks()`.
    pub(crate) taps: Vec<TapQueue>,
    /// Per TAP (indexed alike): it took USO, so datagrams of one UDP flow may be written to it
    /// as one superframe.
    pub(crate) uso: Vec<bool>,
    /// The worker's receive socket (one of the engine's SO_REUSEPORT group).
    pub(crate) socket: UdpSocket,
    /// Its ESP-in-UDP socket (encrypted networks send from and receive on it), when bound.
    pub(crate) esp_socket: Option<UdpSocket>,
    /// The worker's number in its generation (worker 0 sends the NAT keepalives).
    pub(crate) index: usize,
    /// The engine's sending sockets, shared by all workers.
    pub(crate) source_ports: Arc<SourcePorts>,
    /// The worker's own fd of its generation's stop eventfd: readable when it must stop.
    pub(crate) stop: EventFd,
    /// The engine's clock origin (FDB times are milliseconds since).
    pub(crate) epoch: Instant,
    pub(crate) offloads: Offloads,
    /// How long to keep polling without sleeping after traffic (`--busy-poll`); zero sleeps
    /// in `poll(2)` at once.
    pub(crate) busy_poll: Duration,
}

pub(crate) struct Worker {
    /// First, so it is dropped before the fds below: from then on the supervisor leaves
    /// closing them to the worker (see `sys::thread::hand_over`).
    owner: OwnerMark,
    forwarder: Arc<Forwarder>,
    taps: Vec<TapQueue>,
    socket: UdpSocket,
    esp_socket: Option<UdpSocket>,
    index: usize,
    stop: EventFd,
    epoch: Instant,
    busy_poll: Duration,
    /// Encrypted networks: sealing (TAP → wire) and opening (wire → TAP).
    esp_tx: EspTx,
    esp_rx: EspRx,
    /// Frames are read with a virtio-net header (and may be superframes).
    vnet_hdr: bool,
    /// TAP → wire: the batch being planned, and the sockets it leaves from.
    tx: TxPlan,
    sender: Sender,
    /// Wire → TAP.
    recv: RecvBatch,
    /// Longer received datagrams are GRO runs or tunnel superframes.
    max_single_datagram: usize,
    sink: TapSink,
    /// Without a vnet header, a tunnel superframe is cut into frames here.
    split: Box<[u8]>,
    /// ARP/ND requests answered from the neighbour table.
    neighbors: neighbors::NeighborAnswers,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("taps", &self.taps.len())
            .finish()
    }
}

impl Worker {
    /// The worker, and the record of the fds it owns (`taps`, `socket`, `esp_socket` and `stop`,
    /// cloned for it alone, and its path-MTU probe) by which the supervisor closes them should
    /// the kernel end the worker's thread.
    pub(crate) fn new(config: WorkerConfig) -> (Self, Handed) {
        let WorkerConfig {
            forwarder,
            taps,
            uso,
            socket,
            esp_socket,
            index,
            source_ports,
            stop,
            epoch,
            offloads,
            busy_poll,
        } = config;
        let encrypted = forwarder.networks().iter().any(|n| n.is_encrypted());
        let now = epoch.elapsed().as_millis() as Millis;
        let split_len = if offloads.vnet_hdr {
            0
        } else {
            VIRTIO_NET_HDR_LEN + MAX_FRAME
        };
        let sender = Sender::new(&forwarder, Arc::clone(&source_ports), offloads.gso, epoch)
            .with_tunnel(
                offloads
                    .tunnel
                    .filter(|_| offloads.vnet_hdr)
                    .map(|u| TunnelTx::new(u, *source_ports.policy(), index)),
            );
        let (handed, owner) = hand_over(
            taps.iter()
                .map(AsFd::as_fd)
                .chain([socket.as_fd(), stop.as_fd()])
                .chain(esp_socket.as_ref().map(AsFd::as_fd))
                .chain(sender.probe_fd()),
        );
        let worker = Worker {
            owner,
            esp_tx: EspTx::new(&forwarder, index),
            esp_rx: EspRx::new(now, encrypted),
            esp_socket,
            index,
            tx: TxPlan::new(
                &forwarder,
                offloads.vnet_hdr,
                Arc::clone(&source_ports),
                epoch,
            ),
            sender,
            recv: RecvBatch::new(BATCH, MAX_FRAME),
            max_single_datagram: forwarder.max_single_datagram(),
            sink: TapSink::new(&uso, offloads.vnet_hdr),
            split: vec![0u8; split_len].into_boxed_slice(),
            neighbors: neighbors::NeighborAnswers::new(),
            vnet_hdr: offloads.vnet_hdr,
            forwarder,
            taps,
            socket,
            stop,
            epoch,
            busy_poll,
        };
        (worker, handed)
    }

    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// Runs until the stop eventfd fires; `running` is called once this thread is known as the
    /// worker's (its kernel id recorded for the supervisor).
    pub(crate) fn run(mut self, running: impl FnOnce()) -> io::Result<()> {
        self.owner.runs_here();
        running();
        let mut poll = PollSet::new();
        for tap in &self.taps {
            poll.add(tap.as_fd());
        }
        let socket_index = poll.add(self.socket.socket().as_fd());
        let esp_index = self
            .esp_socket
            .as_ref()
            .map(|s| poll.add(s.socket().as_fd()));
        let stop_index = poll.add(self.stop.as_fd());
        let mut spin = Spin::new(self.busy_poll);
        loop {
            let keepalive = self.keepalive_due_in().map(Duration::from_millis);
            let ready = poll.wait(spin.timeout(keepalive))?;
            if poll.is_ready(stop_index) {
                return Ok(());
            }
            spin.saw(ready > 0);
            if keepalive.is_some() {
                self.send_keepalives();
            }
            if ready == 0 {
                if spin.spinning() {
                    // Spin politely: a thread waiting for this CPU (the application at the end
                    // of the exchange, the other engine) runs first.
                    std::thread::yield_now();
                }
                continue;
            }
            if let Some(esp_index) = esp_index {
                if poll.is_ready(esp_index) {
                    self.drain(rx::Leg::Esp)?;
                }
            }
            for index in 0..self.taps.len() {
                if poll.is_ready(index) {
                    self.drain_tap(index)?;
                }
            }
            if poll.is_ready(socket_index) {
                self.drain(rx::Leg::Plain)?;
            }
        }
    }

    fn drain_tap(&mut self, index: usize) -> io::Result<()> {
        for _ in 0..ROUNDS_PER_WAKE {
            let read = self.read_tap_batch(index)?;
            let (bufs, plan) = self.tx.parts();
            self.esp_tx.dispatch(
                &self.forwarder,
                &mut self.sender,
                (&self.taps, self.vnet_hdr),
                self.esp_socket.as_ref(),
                bufs,
                plan,
            );
            if read < BATCH {
                break;
            }
        }
        Ok(())
    }

    /// Reads up to a batch of frames from TAP `index` and plans them (see [`tx`]).
    fn read_tap_batch(&mut self, index: usize) -> io::Result<usize> {
        self.tx.clear();
        let Some(network) = self.forwarder.networks().get(index) else {
            return Ok(0);
        };
        let encapsulation = Encapsulation::vxlan(network.vni());
        if index >= self.taps.len() {
            return Ok(0);
        }
        let mut read = 0;
        let mut attempts = 0;
        while read < BATCH && attempts < BATCH * 2 {
            attempts += 1;
            let buf = if self.vnet_hdr {
                self.tx.raw_buf()
            } else {
                match self.tx.frame_buf() {
                    Some(buf) => buf,
                    // One buffer per frame and at most BATCH frames: not reached.
                    None => break,
                }
            };
            let len = match self.taps[index].read(buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let frame = if self.vnet_hdr {
                self.tx.raw_buf().get(VIRTIO_NET_HDR_LEN..len)
            } else {
                self.tx.frame_buf().and_then(|buf| buf.get(..len))
            };
            let (forwarder, taps) = (&self.forwarder, &self.taps);
            if frame.is_some_and(|frame| {
                self.neighbors
                    .intercept(forwarder, taps, index, self.vnet_hdr, frame)
            }) {
                continue;
            }
            let planned = if self.vnet_hdr {
                self.plan_read(index, len)
            } else {
                self.tx
                    .plan_frame(&self.forwarder, index, &encapsulation, len)
            };
            if planned {
                read += 1;
            }
        }
        Ok(read)
    }

    /// Plans (or sends whole) the frame just read with a virtio-net header from TAP `index`.
    /// A unicast TCP superframe of a plain network goes through the tunnel path when it can,
    /// after whatever was planned before it (so it never overtakes earlier frames of its flow).
    fn plan_read(&mut self, index: usize, len: usize) -> bool {
        let (forwarder, taps) = (&self.forwarder, &self.taps);
        let Some(classified) = self.tx.classify(forwarder, index, len) else {
            return false;
        };
        let (sender, esp_tx) = (&mut self.sender, &mut self.esp_tx);
        let esp_socket = self.esp_socket.as_ref();
        let tso = matches!(
            classified.hdr.gso_kind(),
            VirtioNetHdr::GSO_TCPV4 | VirtioNetHdr::GSO_TCPV6
        );
        let whole = tso
            && sender.has_tunnel()
            && classified.dest.is_some()
            && forwarder
                .networks()
                .get(index)
                .is_some_and(|n| !n.is_encrypted());
        if whole {
            if !self.tx.is_empty() {
                let (bufs, plan) = self.tx.parts();
                esp_tx.dispatch(forwarder, sender, (taps, true), esp_socket, bufs, plan);
                self.tx.clear();
            }
            if sender.send_whole(
                forwarder,
                index,
                &classified,
                self.tx.raw_frame(&classified),
            ) {
                return true;
            }
        }
        let gso = sender.gso();
        self.tx
            .plan_classified(forwarder, index, &classified, gso, |bufs, plan| {
                esp_tx.dispatch(forwarder, sender, (taps, true), esp_socket, bufs, plan)
            })
    }
}

/// The adaptive busy-poll (`--busy-poll`): after a wake-up that found traffic, the worker
/// polls without sleeping until `window` passes with nothing to do, so the next packet of an
/// exchange (the answer to what it just forwarded, the next request) is taken without the
/// cost of a wake-up on another CPU. Idle, it sleeps in `poll(2)` as before: an engine
/// without traffic never spins.
#[derive(Debug)]
struct Spin {
    window: Duration,
    /// Spinning until then (the last traffic plus `window`).
    until: Option<Instant>,
}

impl Spin {
    fn new(window: Duration) -> Self {
        Spin {
            window,
            until: None,
        }
    }

    /// The timeout of the next `poll`: zero while spinning, else `idle` (`None`: forever).
    fn timeout(&mut self, idle: Option<Duration>) -> Option<Duration> {
        match self.until {
            Some(until) if Instant::now() < until => Some(Duration::ZERO),
            Some(_) => {
                self.until = None;
                idle
            }
            None => idle,
        }
    }

    fn spinning(&self) -> bool {
        self.until.is_some()
    }

    /// Records the outcome of a poll: traffic (re)starts the window.
    fn saw(&mut self, traffic: bool) {
        if traffic && !self.window.is_zero() {
            self.until = Some(Instant::now() + self.window);
        }
    }
}

/// Why a received datagram cannot be read at all, if it cannot: cut short by the buffer, or
/// empty (which the per-packet loops, cutting a datagram into GRO segments, would otherwise
/// skip without a count).
fn unreadable(datagram: &Received<'_>) -> Option<DropReason> {
    if datagram.truncated {
        Some(DropReason::Truncated)
    } else if datagram.data.is_empty() {
        Some(DropReason::EmptyDatagram)
    } else {
        None
    }
}
