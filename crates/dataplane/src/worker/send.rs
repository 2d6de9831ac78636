//! Handing the plan to the kernel: grouped by source-port socket, with retries on a full socket
//! buffer and the run-time fall-back when the kernel refuses UDP_SEGMENT.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;

use super::{Worker, SEND_STALL};
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
    /// Sends everything in the plan: unicast to one VTEP, floods to each peer of the network.
    pub(super) fn send_planned(&mut self) {
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
                    ttl: planned.outer.ttl,
                    tos: planned.outer.tos,
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
            if let Some(udp) = source_ports.get(socket) {
                all_ok &= send_all(
                    forwarder,
                    &udp,
                    send,
                    &out[start..end],
                    &sent_meta[start..end],
                );
            } else {
                for (network, _, _, _) in &sent_meta[start..end] {
                    count_send_error(forwarder, *network);
                }
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
}
