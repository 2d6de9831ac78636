//! Wire → TAP, last step: writing received inner frames to their network's TAP, straight
//! through or via the coalescers into superframes behind a virtio-net header (TCP segments of
//! one flow always; datagrams of one UDP flow when the TAP took USO), completing partial
//! checksums on the way. Every failed write is a counted drop; a superframe the TAP refuses is
//! written again segment by segment, and the sink stops making what was refused (see `recut`).

use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};

use vxnet_encap::offload::{
    complete_partial_checksum, CoalesceConfig, Coalescer, Merge, Push, UdpCoalescer, VirtioNetHdr,
    VIRTIO_NET_HDR_LEN, ZERO_VNET_HDR,
};

use super::recut::{self, Refusal};
use crate::counters::{DropReason, Events};
use crate::forward::Forwarder;
use crate::sys::tap::TapQueue;

/// Where the sink writes: a network's TAP queues in the engine, a recording double in tests
/// (no kernel this project runs on refuses a superframe, so the refusal path is driven by one).
pub(super) trait TapWrite {
    fn writev(&self, parts: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl TapWrite for TapQueue {
    fn writev(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        TapQueue::writev(self, parts)
    }
}

/// The TAP side of a worker's receive path: per network (indexed like the TAPs) its coalescers.
#[derive(Debug)]
pub(super) struct TapSink {
    lanes: Vec<Lanes>,
    /// The TAPs take a virtio-net header in front of every frame.
    vnet_hdr: bool,
    /// Where a refused superframe is cut back into segments (empty until a TAP refuses one).
    scratch: Vec<u8>,
}

/// One network's coalescers; `None` where its TAP cannot take (or refused) such superframes.
#[derive(Debug)]
struct Lanes {
    tcp: Option<Coalescer>,
    udp: Option<UdpCoalescer>,
}

impl TapSink {
    /// `uso[i]`: network `i`'s TAP accepted `TUN_F_USO4 | TUN_F_USO6`, so its kernel (6.2 or
    /// later) takes `GSO_UDP_L4` writes (see `vxnet_encap::offload::udp_coalesce`).
    pub(super) fn new(uso: &[bool], vnet_hdr: bool) -> Self {
        let config = CoalesceConfig::default();
        TapSink {
            lanes: uso
                .iter()
                .map(|&uso| Lanes {
                    tcp: Some(Coalescer::new(config)),
                    udp: (vnet_hdr && uso).then(|| UdpCoalescer::new(config)),
                })
                .collect(),
            vnet_hdr,
            scratch: Vec::new(),
        }
    }

    pub(super) fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Writes one inner frame towards network `network`'s TAP: straight through without a vnet
    /// header, else through the coalescers (segments of one TCP flow, datagrams of one UDP flow
    /// merge into a superframe).
    pub(super) fn deliver(
        &mut self,
        forwarder: &Forwarder,
        taps: &[impl TapWrite],
        network: usize,
        frame: &mut [u8],
    ) {
        if !self.vnet_hdr {
            complete_partial(forwarder, network, frame);
            write_tap(forwarder, taps, network, &[IoSlice::new(frame)]);
            return;
        }
        let out = Out {
            forwarder,
            taps,
            network,
        };
        let mut taken = self.coalesce(out, frame);
        // Only frames the coalescers did not take are checked for a partial checksum: a segment
        // they verified is complete, and the signature check costs a parse.
        if !taken && complete_partial(forwarder, network, frame) {
            taken = self.coalesce(out, frame);
        }
        if !taken {
            write_tap(
                forwarder,
                taps,
                network,
                &[IoSlice::new(&ZERO_VNET_HDR), IoSlice::new(frame)],
            );
        }
    }

    /// Offers `frame` to network `network`'s coalescers (TCP, then UDP), writing out a pending
    /// superframe first when it must go. False when neither took it (write it as it is).
    fn coalesce<T: TapWrite>(&mut self, out: Out<'_, T>, frame: &mut [u8]) -> bool {
        let Some(lanes) = self.lanes.get_mut(out.network) else {
            // No such network (nor TAP): nothing to write.
            return true;
        };
        let mut refused = None;
        let mut write =
            |pending: &[u8]| out.write_coalesced(pending, &mut self.scratch, &mut refused);
        let complete = |frame: &mut [u8]| complete_partial(out.forwarder, out.network, frame);
        let taken = |push: Push| !matches!(push, Push::PassThrough(_));
        let mut took = false;
        if let Some(tcp) = lanes.tcp.as_mut() {
            took = taken(offer(tcp, frame, complete, &mut write));
        }
        if let (false, Some(udp)) = (took, lanes.udp.as_mut()) {
            took = taken(offer(udp, frame, complete, &mut write));
        }
        if let Some(refusal) = refused {
            self.stop_making(out, refusal);
        }
        took
    }

    /// After network `network`'s TAP refused a superframe: writes out what its coalescers hold
    /// and has them stop making what was refused, for as long as this worker runs (a kernel does
    /// not change its mind).
    fn stop_making<T: TapWrite>(&mut self, out: Out<'_, T>, refusal: Refusal) {
        self.flush(out.forwarder, out.taps, out.network);
        let Some(lanes) = self.lanes.get_mut(out.network) else {
            return;
        };
        let short_tails = lanes
            .tcp
            .as_ref()
            .map(|c| c.config().short_tail)
            .or(lanes.udp.as_ref().map(|c| c.config().short_tail))
            .unwrap_or(false);
        match refusal {
            // The coalescers are idle after the flush: new ones lose nothing.
            Refusal::ShortTail if short_tails => {
                let config = CoalesceConfig {
                    short_tail: false,
                    ..CoalesceConfig::default()
                };
                if lanes.tcp.is_some() {
                    lanes.tcp = Some(Coalescer::new(config));
                }
                if lanes.udp.is_some() {
                    lanes.udp = Some(UdpCoalescer::new(config));
                }
            }
            // Made before short tails stopped (the other transport's pending superframe, flushed
            // by the first refusal): nothing more to stop. Coalescers without short tails make
            // none.
            Refusal::ShortTail => {}
            Refusal::Gso { udp: true } => lanes.udp = None,
            Refusal::Gso { udp: false } => lanes.tcp = None,
        }
    }

    /// Writes out what the coalescers of network `network` hold, so what comes next (a whole
    /// superframe of the same flow) cannot overtake it.
    pub(super) fn flush(&mut self, forwarder: &Forwarder, taps: &[impl TapWrite], network: usize) {
        let out = Out {
            forwarder,
            taps,
            network,
        };
        let Some(lanes) = self.lanes.get_mut(network) else {
            return;
        };
        let mut refused = None;
        if let Some(pending) = lanes.tcp.as_mut().and_then(Merge::finish) {
            out.write_coalesced(pending, &mut self.scratch, &mut refused);
        }
        if let Some(pending) = lanes.udp.as_mut().and_then(Merge::finish) {
            out.write_coalesced(pending, &mut self.scratch, &mut refused);
        }
        if let Some(refusal) = refused {
            // Nothing is pending now: stop_making's own flush writes nothing.
            self.stop_making(out, refusal);
        }
    }

    /// Writes out every pending superframe: none waits for the next read.
    pub(super) fn flush_all(&mut self, forwarder: &Forwarder, taps: &[impl TapWrite]) {
        for network in 0..self.lanes.len() {
            self.flush(forwarder, taps, network);
        }
    }
}

/// Where a network's superframes go: its TAP, and its counters.
struct Out<'a, T> {
    forwarder: &'a Forwarder,
    taps: &'a [T],
    network: usize,
}

// Not derived: a derive would ask `T: Copy`, though only references are copied.
impl<T> Clone for Out<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Out<'_, T> {}

impl<T: TapWrite> Out<'_, T> {
    /// Writes a coalescer's superframe (or lone segment) to the TAP, counting it. A superframe
    /// the TAP refuses is written again segment by segment (counted and said once per network
    /// and kind), and `refused` says what to stop making.
    fn write_coalesced(
        &self,
        pending: &[u8],
        scratch: &mut Vec<u8>,
        refused: &mut Option<Refusal>,
    ) {
        let Some(tap) = self.taps.get(self.network) else {
            return;
        };
        let error = match tap.writev(&[IoSlice::new(pending)]) {
            Ok(_) => return count_coalesced(self.forwarder, self.network, pending),
            Err(e) => e,
        };
        let Some(refusal) = recut::refusal(pending, &error) else {
            return count_write_error(self.forwarder, self.network, &error);
        };
        *refused = Some(refusal);
        let cut = recut::write_segments(pending, scratch, |parts| {
            write_tap(self.forwarder, self.taps, self.network, parts)
        });
        let Some(n) = self.forwarder.networks().get(self.network) else {
            return;
        };
        if cut.is_err() {
            // Not a superframe this engine's segmentation takes back: lost, and counted so.
            n.drops.count(DropReason::TapWrite);
        }
        let (counter, what) = match refusal {
            Refusal::ShortTail => (
                &n.events.tap_refused_short_tail,
                "a superframe whose last segment is short (as Linux 6.6.44 does); \
                 superframes now keep their segments equal",
            ),
            Refusal::Gso { udp } => (
                &n.events.tap_refused_gso,
                if udp {
                    "a UDP superframe; datagrams now go to it one by one"
                } else {
                    "a TCP superframe; segments now go to it one by one"
                },
            ),
        };
        if bump_first(counter) {
            tracing::warn!(
                "network {}: the TAP refused ({error}) {what}",
                n.settings.name
            );
        }
    }
}

/// Counts one event; true for the first of them (the one to say).
fn bump_first(counter: &AtomicU64) -> bool {
    counter.fetch_add(1, Ordering::Relaxed) == 0
}

/// Offers `frame` to one coalescer. A frame of the pending flow whose checksum a kernel VTEP on
/// this machine left partial fails the coalescer's checksum check and would end the superframe
/// (`Flush`), then start one of its own once completed: every datagram of a kernel peer's UDP
/// flow (sent one by one, each partial) would go to the TAP alone. Completed first, it continues
/// the superframe. Only a `Flush` pays for the signature check (a parse): a flow's end, not its
/// every frame.
fn offer(
    merge: &mut impl Merge,
    frame: &mut [u8],
    complete: impl Fn(&mut [u8]) -> bool,
    write: impl FnMut(&[u8]),
) -> Push {
    match merge.push(frame) {
        Push::Flush if complete(frame) => merge.push_or_flush(frame, write),
        Push::Flush => merge.flush_and_push(frame, write),
        push => push,
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

/// Counts a coalescer write that is a superframe (a single segment leaves with a zero header):
/// TCP and UDP apart.
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
    let (superframes, merged) = if hdr.gso_kind() == VirtioNetHdr::GSO_UDP_L4 {
        (
            &n.events.udp_coalesced_superframes,
            &n.events.udp_coalesced_datagrams,
        )
    } else {
        (
            &n.events.coalesced_superframes,
            &n.events.coalesced_segments,
        )
    };
    Events::bump(superframes);
    merged.fetch_add(
        payload.div_ceil(hdr.gso_size as usize) as u64,
        Ordering::Relaxed,
    );
}

/// Writes `parts` as one frame to network `network`'s TAP; a failed write is a counted drop.
pub(super) fn write_tap(
    forwarder: &Forwarder,
    taps: &[impl TapWrite],
    network: usize,
    parts: &[IoSlice<'_>],
) {
    let Some(tap) = taps.get(network) else {
        return;
    };
    if let Err(e) = tap.writev(parts) {
        count_write_error(forwarder, network, &e);
    }
}

/// Counts a failed TAP write as a drop: a full queue behind the TAP is the load's doing,
/// anything else a fault, told apart.
fn count_write_error(forwarder: &Forwarder, network: usize, error: &io::Error) {
    let reason = match error.raw_os_error() {
        Some(libc::EAGAIN | libc::ENOBUFS) => DropReason::TapFull,
        _ => DropReason::TapWrite,
    };
    if let Some(n) = forwarder.networks().get(network) {
        n.drops.count(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::fixtures;

    fn short_tails(lanes: &Lanes) -> (Option<bool>, Option<bool>) {
        (
            lanes.tcp.as_ref().map(|c| c.config().short_tail),
            lanes.udp.as_ref().map(|c| c.config().short_tail),
        )
    }

    #[test]
    fn a_refusal_stops_what_was_refused_and_only_that() {
        let forwarder = fixtures::forwarder("10.0.0.1", &[], 1500);
        let out = Out {
            forwarder: &forwarder,
            taps: &[] as &[TapQueue],
            network: 0,
        };
        let mut sink = TapSink::new(&[true], true);
        assert_eq!(short_tails(&sink.lanes[0]), (Some(true), Some(true)));
        // A short tail refused: both transports keep their segments equal from now on.
        sink.stop_making(out, Refusal::ShortTail);
        assert_eq!(short_tails(&sink.lanes[0]), (Some(false), Some(false)));
        // Equal UDP segments refused too: UDP is no longer coalesced, TCP still is.
        sink.stop_making(out, Refusal::Gso { udp: true });
        assert_eq!(short_tails(&sink.lanes[0]), (Some(false), None));
        // Another short tail, made before they stopped: nothing more stops.
        sink.stop_making(out, Refusal::ShortTail);
        assert_eq!(short_tails(&sink.lanes[0]), (Some(false), None));
        // Equal TCP segments refused: nothing is coalesced any more, and frames pass.
        sink.stop_making(out, Refusal::Gso { udp: false });
        assert_eq!(short_tails(&sink.lanes[0]), (None, None));
        let mut frame = vec![0u8; 60];
        assert!(!sink.coalesce(out, &mut frame));

        let mut sink = TapSink::new(&[true], true);
        sink.stop_making(out, Refusal::Gso { udp: false });
        assert_eq!(short_tails(&sink.lanes[0]), (None, Some(true)));
    }
}
