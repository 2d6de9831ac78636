//! A forwarding worker: one thread, one queue of every network's TAP, one UDP socket.
//!
//! Packets move in batches: up to [`BATCH`] frames are read from a TAP, classified by the
//! [`Forwarder`], wrapped in place (the VXLAN header goes into headroom reserved in front of each
//! frame) and handed to the kernel in one `sendmmsg`; received datagrams come in by `recvmmsg`.
//! All buffers are allocated when the worker starts; the loop itself allocates nothing.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vxnet_encap::{encapsulate, Encapsulation};

use crate::counters::DropReason;
use crate::fdb::Millis;
use crate::forward::{Forwarder, TapAction, WireAction};
use crate::sys::poll::{wait_writable, EventFd, PollSet};
use crate::sys::tap::TapQueue;
use crate::sys::udp::{Outgoing, RecvBatch, SendBatch, UdpSocket};

/// Frames moved per syscall.
pub const BATCH: usize = 64;
/// Headroom in front of each TAP frame: the VXLAN header (the kernel adds UDP and IP).
const HEADROOM: usize = 8;
/// Largest frame a TAP hands us (room for a 64 KB superframe once offloads are on).
const MAX_FRAME: usize = 65_536;
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
}

pub struct Worker {
    forwarder: Arc<Forwarder>,
    taps: Vec<TapQueue>,
    socket: UdpSocket,
    stop: Arc<EventFd>,
    epoch: Instant,
    tap_bufs: Vec<Box<[u8]>>,
    plan: Vec<Planned>,
    recv: RecvBatch,
    send: SendBatch,
    /// Destination and network of each queued `Outgoing`, for counting what was sent.
    sent_meta: Vec<(usize, IpAddr, usize)>,
    outgoing: Vec<Outgoing<'static>>,
    packets: Vec<&'static [u8]>,
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
/// buffer is full; counts what was sent and what had to be dropped.
fn send_all(
    forwarder: &Forwarder,
    socket: &UdpSocket,
    send: &mut SendBatch,
    out: &[Outgoing<'_>],
    meta: &[(usize, IpAddr, usize)],
) {
    let mut done = 0;
    while done < out.len() {
        match send.send(socket, &out[done..]) {
            Ok(sent) => {
                for (network, dest, bytes) in &meta[done..done + sent] {
                    forwarder.count_sent(*network, *dest, *bytes);
                }
                done += sent.max(1).min(out.len() - done);
                if sent == 0 {
                    // Nothing taken and no error: count the head as lost rather than spin.
                    count_send_error(forwarder, meta[done - 1].0);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !matches!(wait_writable(socket.socket().as_fd(), SEND_STALL), Ok(true)) {
                    for (network, _, _) in &meta[done..] {
                        count_send_error(forwarder, *network);
                    }
                    return;
                }
            }
            Err(_) => {
                // sendmmsg reports a failing message on the call after the ones that went out:
                // it is the head of what is left. Skip it, keep the rest.
                count_send_error(forwarder, meta[done].0);
                done += 1;
            }
        }
    }
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
        stop: Arc<EventFd>,
        epoch: Instant,
    ) -> Self {
        let max_flood = 64;
        Worker {
            forwarder,
            taps,
            socket,
            stop,
            epoch,
            tap_bufs: (0..BATCH)
                .map(|_| vec![0u8; HEADROOM + MAX_FRAME].into_boxed_slice())
                .collect(),
            plan: Vec::with_capacity(BATCH),
            recv: RecvBatch::new(BATCH, MAX_FRAME),
            send: SendBatch::new(BATCH * 4, 1),
            sent_meta: Vec::with_capacity(BATCH * max_flood),
            outgoing: Vec::with_capacity(BATCH * max_flood),
            packets: Vec::with_capacity(BATCH),
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
        let encapsulation = match self.forwarder.networks().get(index) {
            Some(network) => Encapsulation::vxlan(network.vni()),
            None => return Ok(0),
        };
        let mut read = 0;
        while read < BATCH {
            let buf = &mut self.tap_bufs[read];
            let len = match self.taps[index].read(&mut buf[HEADROOM..]) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let end = HEADROOM + len;
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
                buf: read,
                start,
                end,
                network: index,
                dest,
            });
            read += 1;
        }
        Ok(read)
    }

    /// Sends everything in the plan: unicast to one VTEP, floods to each peer of the network.
    fn send_planned(&mut self) {
        if self.plan.is_empty() {
            return;
        }
        let Worker {
            forwarder,
            socket,
            tap_bufs,
            plan,
            send,
            sent_meta,
            outgoing,
            packets,
            ..
        } = self;
        let mut slices: Vec<&[u8]> = recycle(std::mem::take(packets));
        for planned in plan.iter() {
            slices.push(&tap_bufs[planned.buf][planned.start..planned.end]);
        }
        let mut out: Vec<Outgoing<'_>> = recycle(std::mem::take(outgoing));
        sent_meta.clear();
        let local_is_v4 = forwarder.local().is_ipv4();
        for (planned, packet) in plan.iter().zip(&slices) {
            let parts = std::slice::from_ref(packet);
            let mut push = |dest: SocketAddr| {
                out.push(Outgoing {
                    dest,
                    parts,
                    segment_size: None,
                });
                sent_meta.push((planned.network, dest.ip(), packet.len()));
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
        send_all(forwarder, socket, send, &out, sent_meta);
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
            for i in 0..received {
                let datagram = self.recv.datagram(i);
                if datagram.truncated {
                    self.forwarder.drops.count(DropReason::Truncated);
                    continue;
                }
                if let WireAction::Deliver { network, inner } =
                    self.forwarder
                        .from_wire(now, datagram.source, datagram.data)
                {
                    if let Some(tap) = self.taps.get(network) {
                        if tap.write(&datagram.data[inner]).is_err() {
                            if let Some(n) = self.forwarder.networks().get(network) {
                                n.drops.count(DropReason::TapWrite);
                            }
                        }
                    }
                }
            }
            if received < BATCH {
                return Ok(());
            }
        }
        Ok(())
    }
}
