//! Handing the plan to the kernel: grouped by source-port socket, checked against the path MTU
//! to each VTEP, with retries on a full socket buffer and the run-time fall-back when the
//! kernel refuses UDP_SEGMENT.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;

use super::{Planned, Worker, SEND_STALL};
use crate::counters::DropReason;
use crate::forward::Forwarder;
use crate::sys::poll::wait_writable;
use crate::sys::udp::{Outgoing, SendBatch, UdpSocket};

/// Reuses a vector's allocation for elements of the same layout but another lifetime: the
/// vectors of borrowed slices are rebuilt every batch, their capacity is not.
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    // Same size and alignment (only lifetimes differ): std collects an emptied vector in place.
    v.into_iter().filter_map(|_| None).collect()
}

/// A send the kernel refused as too big for the path (EMSGSIZE; EINVAL or EIO for a UDP GSO
/// send): index into the batch and the error number.
pub(super) type Refused = (usize, i32);

/// Hands `out` to the kernel, retrying partial sends and waiting (briefly) when the socket
/// buffer is full; counts what was sent and what had to be dropped. Sends refused in a way a
/// smaller path MTU explains are left in `refused` (indices into `out`, offset by `base`) for the
/// caller to judge, uncounted.
fn send_all(
    forwarder: &Forwarder,
    socket: &UdpSocket,
    send: &mut SendBatch,
    out: &[Outgoing<'_>],
    meta: &[(usize, IpAddr, usize, usize)],
    base: usize,
    refused: &mut Vec<Refused>,
) {
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
                    return;
                }
            }
            Err(e) => {
                // sendmmsg reports a failing message on the call after the ones that went out:
                // it is the head of what is left. Skip it, keep the rest.
                let gso = out[done].segment_size.is_some();
                match e.raw_os_error() {
                    Some(errno @ libc::EMSGSIZE) => refused.push((base + done, errno)),
                    Some(errno @ (libc::EINVAL | libc::EIO)) if gso => {
                        refused.push((base + done, errno))
                    }
                    _ => count_send_error(forwarder, meta[done].0),
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

fn count_send_error(forwarder: &Forwarder, network: usize) {
    count_drop(forwarder, network, DropReason::SendError);
}

/// The UDP payload of one datagram of a planned send (for a GSO send: one segment).
fn datagram_len(planned: &Planned) -> usize {
    planned
        .segment_size
        .map_or(planned.end - planned.start, usize::from)
}

/// What to do with a datagram too big for the path: with DF, answer it with ICMP; without,
/// send its GSO segments one by one (the kernel fragments each).
#[derive(Debug, Clone, Copy)]
pub(super) enum Oversize {
    Answer { plan: usize, mtu: u32 },
    Split { plan: usize, dest: SocketAddr },
}

impl Worker {
    /// Sends everything in the plan: unicast to one VTEP, floods to each peer of the network.
    pub(super) fn send_planned(&mut self) {
        if self.plan.is_empty() {
            return;
        }
        // Group by source-port socket; (buf, start) keeps read order within a socket, so the
        // packets of one flow never overtake each other.
        self.plan
            .sort_unstable_by_key(|p| (p.socket, p.buf, p.start));
        let now = self.now();
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
            sockets: origins,
            pmtu,
            oversize,
            refused,
            taps,
            epoch,
            ..
        } = self;
        let mut slices: Vec<&[u8]> = recycle(std::mem::take(packets));
        for planned in plan.iter() {
            slices.push(&tap_bufs[planned.buf][planned.start..planned.end]);
        }
        let mut out: Vec<Outgoing<'_>> = recycle(std::mem::take(outgoing));
        sent_meta.clear();
        origins.clear();
        oversize.clear();
        refused.clear();
        let local_is_v4 = forwarder.local().is_ipv4();
        for (index, (planned, packet)) in plan.iter().zip(&slices).enumerate() {
            let parts = std::slice::from_ref(packet);
            let mut push = |dest: SocketAddr| {
                // Without DF a single datagram is the kernel's to fragment; only DF and GSO
                // sends (whose segments the kernel will not fragment) are checked.
                if planned.outer.df || planned.segment_size.is_some() {
                    let mtu = pmtu.get(dest, now);
                    if !pmtu.fits(mtu, datagram_len(planned)) {
                        oversize.push(too_big(planned, index, dest, mtu));
                        return;
                    }
                }
                out.push(Outgoing {
                    dest,
                    parts,
                    segment_size: planned.segment_size,
                    ttl: planned.outer.ttl,
                    tos: planned.outer.tos,
                });
                sent_meta.push((planned.network, dest.ip(), planned.segments, packet.len()));
                origins.push(index);
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
        let mut start = 0;
        while start < out.len() {
            let socket = plan[origins[start]].socket;
            let end = start
                + origins[start..]
                    .iter()
                    .take_while(|o| plan[**o].socket == socket)
                    .count();
            if let Some(udp) = source_ports.get(socket) {
                send_all(
                    forwarder,
                    &udp,
                    send,
                    &out[start..end],
                    &sent_meta[start..end],
                    start,
                    refused,
                );
            } else {
                for (network, _, _, _) in &sent_meta[start..end] {
                    count_send_error(forwarder, *network);
                }
            }
            start = end;
        }
        // Refused sends: the path MTU went down since it was last read (a router's ICMP taught
        // the kernel), or the kernel refuses UDP_SEGMENT at run time.
        let mut gso_refused = false;
        for &(i, errno) in refused.iter() {
            let planned = &plan[origins[i]];
            let dest = out[i].dest;
            let mtu = pmtu.refresh(dest, now);
            if !pmtu.fits(mtu, datagram_len(planned))
                && (planned.outer.df || planned.segment_size.is_some())
            {
                oversize.push(too_big(planned, origins[i], dest, mtu));
            } else {
                gso_refused |= errno != libc::EMSGSIZE;
                count_send_error(forwarder, planned.network);
            }
        }
        if gso_refused && offloads.gso {
            // EIO/EINVAL on a UDP_SEGMENT send the path MTU does not explain (an egress device
            // without checksum offload, an xfrm path): send segment by segment from now on. The
            // refused frames are counted; TCP retransmits them.
            tracing::warn!("UDP GSO refused by the kernel at run time; falling back to one datagram per segment");
            offloads.gso = false;
        }
        let now_ns = epoch.elapsed().as_nanos() as u64;
        for &o in oversize.iter() {
            match o {
                Oversize::Answer { plan: index, mtu } => {
                    let planned = &plan[index];
                    count_drop(forwarder, planned.network, DropReason::TooBig);
                    let first = &slices[index][..datagram_len(planned).min(slices[index].len())];
                    pmtu.answer(
                        forwarder,
                        taps,
                        planned.network,
                        offloads.vnet_hdr,
                        first,
                        mtu,
                        now_ns,
                    );
                }
                Oversize::Split { plan: index, dest } => {
                    split_send(forwarder, source_ports, &plan[index], slices[index], dest);
                }
            }
        }
        *outgoing = recycle(out);
        *packets = recycle(slices);
    }
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
    source_ports: &super::SourcePorts,
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
            Ok(_) => forwarder.count_sent(planned.network, dest.ip(), 1, segment.len()),
            Err(_) => count_send_error(forwarder, planned.network),
        }
    }
}
