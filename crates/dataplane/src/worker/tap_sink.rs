//! Wire → TAP, last step: writing received inner frames to their network's TAP, straight
//! through or via the coalescer into superframes behind a virtio-net header, completing partial
//! checksums on the way. Every failed write is a counted drop.

use std::io::IoSlice;
use std::sync::atomic::Ordering;

use vxnet_encap::offload::{
    complete_partial_checksum, CoalesceConfig, Coalescer, Push, VirtioNetHdr, VIRTIO_NET_HDR_LEN,
    ZERO_VNET_HDR,
};

use crate::counters::{DropReason, Events};
use crate::forward::Forwarder;
use crate::sys::tap::TapQueue;

/// The TAP side of a worker's receive path: one coalescer per network (indexed like the TAPs).
#[derive(Debug)]
pub(super) struct TapSink {
    coalescers: Vec<Coalescer>,
    /// The TAPs take a virtio-net header in front of every frame.
    vnet_hdr: bool,
}

impl TapSink {
    pub(super) fn new(networks: usize, vnet_hdr: bool) -> Self {
        TapSink {
            coalescers: (0..networks)
                .map(|_| Coalescer::new(CoalesceConfig::default()))
                .collect(),
            vnet_hdr,
        }
    }

    pub(super) fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Writes one inner frame towards network `network`'s TAP: straight through without a vnet
    /// header, else through the coalescer (TCP segments of one flow merge into a superframe).
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
        let Some(coalescer) = self.coalescers.get_mut(network) else {
            return;
        };
        let mut push = coalesce(forwarder, taps, coalescer, network, frame);
        // Only frames the coalescer did not take are checked for a partial checksum: a TCP
        // segment it verified is complete, and the signature check costs a parse.
        if matches!(push, Push::PassThrough(_)) && complete_partial(forwarder, network, frame) {
            push = coalesce(forwarder, taps, coalescer, network, frame);
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

    /// Writes out what the coalescer of network `network` holds, so what comes next (a whole
    /// superframe of the same flow) cannot overtake it.
    pub(super) fn flush(&mut self, forwarder: &Forwarder, taps: &[TapQueue], network: usize) {
        if let Some(coalescer) = self.coalescers.get_mut(network) {
            flush(forwarder, taps, coalescer, network);
        }
    }

    /// Writes out every pending superframe: none waits for the next read.
    pub(super) fn flush_all(&mut self, forwarder: &Forwarder, taps: &[TapQueue]) {
        for (network, coalescer) in self.coalescers.iter_mut().enumerate() {
            flush(forwarder, taps, coalescer, network);
        }
    }
}

/// Offers `frame` to the coalescer, writing out the pending superframe first when it must go.
fn coalesce(
    forwarder: &Forwarder,
    taps: &[TapQueue],
    coalescer: &mut Coalescer,
    network: usize,
    frame: &[u8],
) -> Push {
    let mut push = coalescer.push(frame);
    if push == Push::Flush {
        flush(forwarder, taps, coalescer, network);
        push = coalescer.push(frame);
    }
    push
}

/// Writes out the superframe (or lone segment) the coalescer holds for network `network`.
fn flush(forwarder: &Forwarder, taps: &[TapQueue], coalescer: &mut Coalescer, network: usize) {
    if let Some(pending) = coalescer.finish() {
        count_coalesced(forwarder, network, pending);
        write_tap(forwarder, taps, network, &[IoSlice::new(pending)]);
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

/// Counts a coalescer write that is a superframe (a single segment leaves with a zero header).
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
    Events::bump(&n.events.coalesced_superframes);
    n.events.coalesced_segments.fetch_add(
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
