//! TAP → wire, last step: the plan becomes messages (a flood one per peer), grouped by
//! source-port socket and handed to the kernel, with retries on a full socket buffer and the
//! run-time fall-back when the kernel refuses `UDP_SEGMENT` (see [`crate::offload`]). Every
//! message that does not go out is a counted drop.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use super::source_ports::SourcePorts;
use super::tx::Planned;
use super::BATCH;
use crate::counters::DropReason;
use crate::forward::Forwarder;
use crate::offload::{is_gso_refusal, UdpGso};
use crate::sys::poll::wait_writable;
use crate::sys::udp::{Outgoing, SendBatch, UdpSocket};

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
    bytes: usize,
}

/// A worker's sending side: the engine's source-port sockets and scratch space reused for every
/// batch (allocated once, so sending allocates nothing).
pub(super) struct Sender {
    source_ports: Arc<SourcePorts>,
    batch: SendBatch,
    gso: Arc<UdpGso>,
    /// Per queued message: what to count, and which source-port socket carries it.
    sent: Vec<Sent>,
    sockets: Vec<usize>,
    outgoing: Vec<Outgoing<'static>>,
    packets: Vec<&'static [u8]>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("source_ports", &self.source_ports.len())
            .field("gso", &self.gso.in_use())
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
    pub(super) fn new(source_ports: Arc<SourcePorts>, gso: Arc<UdpGso>) -> Self {
        Sender {
            source_ports,
            batch: SendBatch::new(BATCH * 4, 1),
            gso,
            sent: Vec::with_capacity(BATCH * MAX_FLOOD),
            sockets: Vec::with_capacity(BATCH * MAX_FLOOD),
            outgoing: Vec::with_capacity(BATCH * MAX_FLOOD),
            packets: Vec::with_capacity(BATCH),
        }
    }

    /// Whether segments may still share `UDP_SEGMENT` sends (false once the kernel refused one).
    pub(super) fn gso(&self) -> bool {
        self.gso.in_use()
    }

    /// Sends everything in `plan` (ranges of `bufs`): unicast to one VTEP, floods to each peer
    /// of the network.
    pub(super) fn send(&mut self, forwarder: &Forwarder, bufs: &[Box<[u8]>], plan: &mut [Planned]) {
        if plan.is_empty() {
            return;
        }
        // Group by source-port socket; (buf, start) keeps read order within a socket, so the
        // packets of one flow never overtake each other.
        plan.sort_unstable_by_key(|p| (p.socket, p.buf, p.start));
        let mut slices: Vec<&[u8]> = recycle(std::mem::take(&mut self.packets));
        slices.extend(plan.iter().map(|p| &bufs[p.buf][p.start..p.end]));
        let mut out: Vec<Outgoing<'_>> = recycle(std::mem::take(&mut self.outgoing));
        expand(
            forwarder,
            plan,
            &slices,
            &mut out,
            &mut self.sent,
            &mut self.sockets,
        );
        let mut refused = false;
        let mut start = 0;
        while start < out.len() {
            let socket = self.sockets[start];
            let end = start
                + self.sockets[start..]
                    .iter()
                    .take_while(|s| **s == socket)
                    .count();
            if let Some(udp) = self.source_ports.socket(socket) {
                refused |= send_all(
                    forwarder,
                    udp,
                    &mut self.batch,
                    &out[start..end],
                    &self.sent[start..end],
                );
            }
            start = end;
        }
        if refused {
            // The refused messages are counted (TCP retransmits them); from now on every worker
            // sends segment by segment.
            self.gso.refused();
        }
        self.outgoing = recycle(out);
        self.packets = recycle(slices);
    }
}

impl Sender {
    /// Sends sealed ESP packets (see [`super::esp`]): each entry of `plan` to its `dest` (the
    /// peer's endpoint) from `socket`, the worker's ESP-in-UDP socket; `vteps[i]` is the VTEP
    /// entry `i` is for, which is what gets counted.
    pub(super) fn send_esp(
        &mut self,
        forwarder: &Forwarder,
        socket: &UdpSocket,
        bufs: &[Box<[u8]>],
        plan: &[Planned],
        vteps: &[IpAddr],
    ) {
        if plan.is_empty() {
            return;
        }
        let mut slices: Vec<&[u8]> = recycle(std::mem::take(&mut self.packets));
        slices.extend(plan.iter().map(|p| &bufs[p.buf][p.start..p.end]));
        let mut out: Vec<Outgoing<'_>> = recycle(std::mem::take(&mut self.outgoing));
        self.sent.clear();
        for ((p, packet), vtep) in plan.iter().zip(&slices).zip(vteps) {
            let Some(dest) = p.dest else {
                continue;
            };
            out.push(Outgoing {
                dest,
                parts: std::slice::from_ref(packet),
                segment_size: p.segment_size,
            });
            self.sent.push(Sent {
                network: p.network,
                dest: *vtep,
                segments: p.segments,
                bytes: packet.len(),
            });
        }
        if send_all(forwarder, socket, &mut self.batch, &out, &self.sent) {
            self.gso.refused();
        }
        self.outgoing = recycle(out);
        self.packets = recycle(slices);
    }
}

/// Turns `plan` (whose wrapped bytes are `slices`, in the same order) into messages: one per
/// entry for a unicast, one per flood peer of the network for a flood, skipping (and counting)
/// peers of the other address family. `sent` and `sockets` get one entry per message.
fn expand<'a>(
    forwarder: &Forwarder,
    plan: &[Planned],
    slices: &'a [&'a [u8]],
    out: &mut Vec<Outgoing<'a>>,
    sent: &mut Vec<Sent>,
    sockets: &mut Vec<usize>,
) {
    sent.clear();
    sockets.clear();
    let local_is_v4 = forwarder.local().is_ipv4();
    for (planned, packet) in plan.iter().zip(slices) {
        let parts = std::slice::from_ref(packet);
        let mut push = |dest: SocketAddr| {
            out.push(Outgoing {
                dest,
                parts,
                segment_size: planned.segment_size,
            });
            sent.push(Sent {
                network: planned.network,
                dest: dest.ip(),
                segments: planned.segments,
                bytes: packet.len(),
            });
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
}

/// Hands `out` to the kernel, retrying partial sends and waiting (briefly) when the socket
/// buffer is full; counts what was sent and what had to be dropped. True when the kernel
/// refused a `UDP_SEGMENT` send (the caller switches GSO off).
fn send_all(
    forwarder: &Forwarder,
    socket: &UdpSocket,
    batch: &mut SendBatch,
    out: &[Outgoing<'_>],
    sent: &[Sent],
) -> bool {
    let mut refused = false;
    let mut done = 0;
    while done < out.len() {
        match batch.send(socket, &out[done..]) {
            Ok(0) => {
                // Nothing taken and no error: count the head as lost rather than spin.
                count_send_error(forwarder, sent[done].network);
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
                        count_send_error(forwarder, s.network);
                    }
                    return refused;
                }
            }
            Err(e) => {
                refused |= out[done].segment_size.is_some() && is_gso_refusal(&e);
                // sendmmsg reports a failing message on the call after the ones that went out:
                // it is the head of what is left. Skip it, keep the rest.
                count_send_error(forwarder, sent[done].network);
                done += 1;
            }
        }
    }
    refused
}

fn count_send_error(forwarder: &Forwarder, network: usize) {
    if let Some(n) = forwarder.networks().get(network) {
        n.drops.count(DropReason::SendError);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::forwarder;
    use super::*;

    fn planned(dest: Option<SocketAddr>, segments: usize, socket: usize) -> Planned {
        Planned {
            buf: 0,
            start: 0,
            end: 0,
            network: 0,
            dest,
            segment_size: (segments > 1).then_some(1000),
            segments,
            socket,
        }
    }

    #[test]
    fn a_flood_becomes_one_message_per_peer_of_the_local_family() {
        let fwd = forwarder("10.0.0.1", &["10.0.0.2", "fd00::3", "10.0.0.4"], 1450);
        let unicast: SocketAddr = "10.0.0.9:4789".parse().unwrap();
        let plan = [planned(None, 3, 5), planned(Some(unicast), 1, 2)];
        let (a, b) = ([1u8; 30], [2u8; 10]);
        let slices: Vec<&[u8]> = vec![&a, &b];
        let (mut out, mut sent, mut sockets) = (Vec::new(), Vec::new(), Vec::new());
        expand(&fwd, &plan, &slices, &mut out, &mut sent, &mut sockets);
        let dests: Vec<String> = out.iter().map(|o| o.dest.to_string()).collect();
        assert_eq!(dests, ["10.0.0.2:4789", "10.0.0.4:4789", "10.0.0.9:4789"]);
        assert_eq!(sockets, [5, 5, 2]);
        assert_eq!(out[0].segment_size, Some(1000));
        assert_eq!(out[2].segment_size, None);
        assert_eq!(
            sent[1],
            Sent {
                network: 0,
                dest: "10.0.0.4".parse().unwrap(),
                segments: 3,
                bytes: 30,
            }
        );
        assert_eq!(out[2].parts, [&b[..]]);
        assert_eq!(
            fwd.networks()[0].drops.get(DropReason::WrongFamily),
            1,
            "the IPv6 peer of an IPv4 engine"
        );
    }
}
