//! Wire → TAP: draining the UDP sockets (single datagrams, UDP GRO runs and whole tunnel
//! superframes; ESP packets opened by [`EspRx`](super::esp::EspRx)) and handing each inner
//! frame to the TAP sink.

use std::io;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use vxnet_encap::offload::{InnerSuperframe, WirePlan, MAX_GSO_SEGMENTS};
use vxnet_encap::wire::{ETHERNET_HEADER_LEN, VXLAN_HEADER_LEN};

use super::tap_sink::{write_tap, TapSink};
use super::{unreadable, Worker, BATCH, ROUNDS_PER_WAKE};
use crate::counters::{DropReason, Events};
use crate::fdb::Millis;
use crate::forward::{Forwarder, WireAction, WireRun};
use crate::sys::tap::TapQueue;

/// The two receiving sockets of a worker: the plain VXLAN one and the ESP-in-UDP one. Both are
/// drained by the same loop ([`Worker::drain`]); they differ in how a packet is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leg {
    /// VXLAN datagrams (single, UDP GRO runs, whole tunnel superframes).
    Plain,
    /// ESP-in-UDP packets of encrypted networks (single or UDP GRO runs), opened in place.
    Esp,
}

impl Worker {
    /// Reads batches of datagrams from the `leg`'s socket until it is drained (or the round
    /// budget is spent) and delivers their inner frames.
    pub(super) fn drain(&mut self, leg: Leg) -> io::Result<()> {
        for round in 0..ROUNDS_PER_WAKE {
            let socket = match leg {
                Leg::Plain => &self.socket,
                Leg::Esp => match self.esp_socket.as_ref() {
                    Some(socket) => socket,
                    None => return Ok(()),
                },
            };
            let received = match self.recv.recv(socket) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // The socket's drop count is a system call of its own: read once per wake-up that
            // finds datagrams (drops while the worker slept or was descheduled, the ones that
            // matter, are then counted), not once per batch of a busy drain.
            if round == 0 {
                self.count_overflows(leg);
            }
            let now = self.now();
            let Worker {
                forwarder,
                taps,
                recv,
                sink,
                max_single_datagram,
                split,
                esp_rx,
                ..
            } = self;
            // One sender's datagrams in a row share their fate (see `from_wire_run`).
            let mut run = WireRun::default();
            for i in 0..received {
                let datagram = recv.datagram(i);
                if let Some(reason) = unreadable(&datagram) {
                    forwarder.drops.count(reason);
                    continue;
                }
                // With GRO one read holds a run of equal-size datagrams (last one shorter).
                let size = match datagram.gro_segment_size {
                    Some(size) if size > 0 => size as usize,
                    _ => datagram.data.len().max(1),
                };
                let source = datagram.source;
                let gro_size = datagram.gro_segment_size;
                // Mutable: ESP opens in place, and an inner checksum left partial by a local
                // kernel VTEP is completed in place before delivery.
                let data = recv.datagram_mut(i);
                if leg == Leg::Plain && data.len() > *max_single_datagram {
                    let inner = data.get(VXLAN_HEADER_LEN..).unwrap_or_default();
                    if let Ok(superframe) = InnerSuperframe::parse(inner) {
                        let received = TunnelSuperframe {
                            now,
                            source,
                            datagram: data,
                            superframe,
                            gro_size,
                        };
                        received.deliver(forwarder, taps, sink, split);
                        continue;
                    }
                }
                // A GRO run is counted once, on the network of its first delivered datagram.
                let mut gro_counted = data.len() <= size;
                let mut deliver = |network: usize, frame: &mut [u8]| {
                    if !gro_counted {
                        gro_counted = true;
                        if let Some(n) = forwarder.networks().get(network) {
                            Events::bump(&n.events.gro_batches);
                        }
                    }
                    sink.deliver(forwarder, taps, network, frame);
                };
                match leg {
                    Leg::Plain => {
                        for packet in data.chunks_mut(size) {
                            if let WireAction::Deliver { network, inner } =
                                forwarder.from_wire_run(now, source, packet, &mut run)
                            {
                                deliver(network, &mut packet[inner]);
                            }
                        }
                    }
                    // Opened a run at a time: one SA lookup and window lock for its packets.
                    Leg::Esp => {
                        esp_rx.open_run(forwarder, now, source, data, size, &mut run, &mut deliver)
                    }
                }
            }
            forwarder.end_run(&mut run);
            // A superframe never waits for the next read: flush at the end of every batch.
            sink.flush_all(forwarder, taps);
            if received < BATCH {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl Worker {
    /// Counts what the `leg`'s socket dropped for a full receive buffer since the last batch,
    /// from the socket's running total (see `UdpSocket::receive_drops`).
    fn count_overflows(&mut self, leg: Leg) {
        let socket = match leg {
            Leg::Plain => Some(&self.socket),
            Leg::Esp => self.esp_socket.as_ref(),
        };
        let Some(socket) = socket else {
            return;
        };
        // Only a counter is lost without it.
        let Ok(total) = socket.receive_drops() else {
            return;
        };
        self.forwarder.drops.count_many(
            DropReason::SocketOverflow,
            u64::from(socket.new_overflows(total)),
        );
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
    /// segment by segment when the TAP has no virtio-net header (`split` is the scratch space).
    fn deliver(
        self,
        forwarder: &Forwarder,
        taps: &[TapQueue],
        sink: &mut TapSink,
        split: &mut [u8],
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
        forwarder.count_rx(network, source.ip(), segments as u64, frame.len() as u64);
        Events::bump(&n.events.tunnel_superframes);
        n.events
            .tunnel_segments
            .fetch_add(segments as u64, Ordering::Relaxed);
        // Segments of the same flow may be waiting in the coalescer: they go first.
        sink.flush(forwarder, taps, network);
        if sink.vnet_hdr() {
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
            let written = match plan.write_next(frame, vni, split, MAX_GSO_SEGMENTS) {
                Ok(Some(written)) => written,
                Ok(None) => return,
                Err(_) => {
                    n.drops.count(DropReason::BadOffload);
                    return;
                }
            };
            // Each piece is a VXLAN datagram as it would go on the wire; the TAP wants the frame.
            for datagram in split[..written.total_len].chunks(written.segment_size) {
                if let Some(segment) = datagram.get(VXLAN_HEADER_LEN..) {
                    write_tap(forwarder, taps, network, &[IoSlice::new(segment)]);
                }
            }
        }
    }
}
