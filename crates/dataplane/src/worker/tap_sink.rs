//! Wire → TAP, last step: writing received inner frames to their network's TAP, straight
//! through or via the coalescers into superframes behind a virtio-net header (TCP segments of
//! one flow always; datagrams of one UDP flow when the TAP took USO), completing partial
//! checksums on the way. Every failed write is a counted drop.

use std::io::IoSlice;
use std::sync::atomic::Ordering;

use vxnet_encap::offload::{
    complete_partial_checksum, CoalesceConfig, Coalescer, Merge, Push, UdpCoalescer, VirtioNetHdr,
    VIRTIO_NET_HDR_LEN, ZERO_VNET_HDR,
};

use crate::counters::{DropReason, Events};
use crate::forward::Forwarder;
use crate::sys::tap::TapQueue;

/// The TAP side of a worker's receive path: per network (indexed like the TAPs) a TCP coalescer
/// and, where the TAP took USO, a UDP one.
#[derive(Debug)]
pub(super) struct TapSink {
    coalescers: Vec<Coalescer>,
    udp_coalescers: Vec<Option<UdpCoalescer>>,
    /// The TAPs take a virtio-net header in front of every frame.
    vnet_hdr: bool,
}

impl TapSink {
    /// `uso[i]`: network `i`'s TAP accepted `TUN_F_USO4 | TUN_F_USO6`, so its kernel (6.2 or
    /// later) takes `GSO_UDP_L4` writes (see `vxnet_encap::offload::udp_coalesce`).
    pub(super) fn new(uso: &[bool], vnet_hdr: bool) -> Self {
        let config = CoalesceConfig::default();
        TapSink {
            coalescers: uso.iter().map(|_| Coalescer::new(config)).collect(),
            udp_coalescers: uso
                .iter()
                .map(|&uso| (vnet_hdr && uso).then(|| UdpCoalescer::new(config)))
                .collect(),
            vnet_hdr,
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
        taps: &[TapQueue],
        network: usize,
        frame: &mut [u8],
    ) {
        if !self.vnet_hdr {
            complete_partial(forwarder, network, frame);
            write_tap(forwarder, taps, network, &[IoSlice::new(frame)]);
            return;
        }
        let mut push = self.coalesce(forwarder, taps, network, frame);
        // Only frames the coalescers did not take are checked for a partial checksum: a segment
        // they verified is complete, and the signature check costs a parse.
        if matches!(push, Push::PassThrough(_)) && complete_partial(forwarder, network, frame) {
            push = self.coalesce(forwarder, taps, network, frame);
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

    /// Offers `frame` to network `network`'s coalescers (TCP, then UDP), writing out a pending
    /// superframe first when it must go. `PassThrough` when neither took it.
    fn coalesce(
        &mut self,
        forwarder: &Forwarder,
        taps: &[TapQueue],
        network: usize,
        frame: &mut [u8],
    ) -> Push {
        let write = |pending: &[u8]| write_coalesced(forwarder, taps, network, pending);
        let complete = |frame: &mut [u8]| complete_partial(forwarder, network, frame);
        let Some(tcp) = self.coalescers.get_mut(network) else {
            // No such network (nor TAP): nothing to write.
            return Push::Absorbed;
        };
        match (
            offer(tcp, frame, complete, write),
            self.udp_coalescers.get_mut(network),
        ) {
            (Push::PassThrough(_), Some(Some(udp))) => offer(udp, frame, complete, write),
            (push, _) => push,
        }
    }

    /// Writes out what the coalescers of network `network` hold, so what comes next (a whole
    /// superframe of the same flow) cannot overtake it.
    pub(super) fn flush(&mut self, forwarder: &Forwarder, taps: &[TapQueue], network: usize) {
        let write = |pending: &[u8]| write_coalesced(forwarder, taps, network, pending);
        if let Some(pending) = self.coalescers.get_mut(network).and_then(Merge::finish) {
            write(pending);
        }
        let udp = self
            .udp_coalescers
            .get_mut(network)
            .and_then(Option::as_mut);
        if let Some(pending) = udp.and_then(Merge::finish) {
            write(pending);
        }
    }

    /// Writes out every pending superframe: none waits for the next read.
    pub(super) fn flush_all(&mut self, forwarder: &Forwarder, taps: &[TapQueue]) {
        for network in 0..self.coalescers.len() {
            self.flush(forwarder, taps, network);
        }
    }
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

/// Writes a coalescer's superframe (or lone segment) to network `network`'s TAP, counting it.
fn write_coalesced(forwarder: &Forwarder, taps: &[TapQueue], network: usize, pending: &[u8]) {
    count_coalesced(forwarder, network, pending);
    write_tap(forwarder, taps, network, &[IoSlice::new(pending)]);
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
    taps: &[TapQueue],
    network: usize,
    parts: &[IoSlice<'_>],
) {
    let Some(tap) = taps.get(network) else {
        return;
    };
    if let Err(e) = tap.writev(parts) {
        // A full queue behind the TAP is the load's doing, anything else a fault: told apart.
        let reason = match e.raw_os_error() {
            Some(libc::EAGAIN | libc::ENOBUFS) => DropReason::TapFull,
            _ => DropReason::TapWrite,
        };
        if let Some(n) = forwarder.networks().get(network) {
            n.drops.count(reason);
        }
    }
}
