//! TAP → wire: reading a batch of frames from a TAP, classifying them and wrapping them (segmented
//! when they are superframes) into the worker's buffers as a plan of sends.

use std::io;
use std::sync::atomic::Ordering;

use vxnet_encap::flow::flow_hash;
use vxnet_encap::offload::{
    segments_per_send, VirtioNetHdr, WirePlan, MAX_GSO_SEGMENTS, MAX_UDP_GSO_PAYLOAD,
    VIRTIO_NET_HDR_LEN,
};
use vxnet_encap::{encapsulate, Encapsulation};

use super::{Planned, Worker, BATCH, HEADROOM, MAX_CHUNK_SEGMENTS, MAX_FRAME, ROUNDS_PER_WAKE};
use crate::counters::{DropReason, Events};
use crate::forward::TapAction;

/// Makes the TCP superframes the kernel hands to TAP `dev` (inner MTU `mtu`) small enough for
/// one `UDP_SEGMENT` send each, by capping the device's `gso_max_segs`. Best effort: without it
/// a superframe just takes two sends.
pub fn fit_superframes_to_gso(dev: &str, mtu: u32) {
    let segs = segments_per_send(mtu as usize) as u32;
    match crate::sys::iface::set_gso_max_segs(dev, segs) {
        Ok(()) => tracing::debug!(
            dev,
            segs,
            "TAP gso_max_segs set: one UDP GSO send per superframe"
        ),
        Err(e) => tracing::debug!("keeping the TAP's gso_max_segs: {e}"),
    }
}

impl Worker {
    pub(super) fn drain_tap(&mut self, index: usize) -> io::Result<()> {
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
        let Some(network) = self.forwarder.networks().get(index) else {
            return Ok(0);
        };
        let vni = network.vni();
        let encapsulation = Encapsulation::vxlan(vni);
        let mut read = 0;
        // TAP buffers used: one per frame, several for a superframe of many small segments.
        let mut slot = 0;
        let mut attempts = 0;
        while read < BATCH && attempts < BATCH * 2 {
            attempts += 1;
            if self.offloads.vnet_hdr {
                let len = match self.taps[index].read(&mut self.raw) {
                    Ok(len) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                // Taken out for the duration so the frame can be read while `self` is mutated
                // (a big superframe may flush the plan half-way); put back right after.
                let raw = std::mem::take(&mut self.raw);
                let planned = self.plan_offloaded_frame(index, &raw[..len], &mut slot);
                self.raw = raw;
                if !planned {
                    continue;
                }
            } else {
                let buf = &mut self.tap_bufs[slot];
                let len = match self.taps[index].read(&mut buf[HEADROOM..HEADROOM + MAX_FRAME]) {
                    Ok(len) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                let end = HEADROOM + len;
                let outer = self.source_ports.policy().fields(&buf[HEADROOM..end]);
                let socket = self
                    .source_ports
                    .slot_for(flow_hash(&buf[HEADROOM..end]), outer.df);
                let now = Some(self.epoch.elapsed().as_nanos() as u64);
                let dest = match self
                    .forwarder
                    .from_tap_at(index, &buf[HEADROOM..end], false, now)
                {
                    TapAction::Drop(_) => continue,
                    TapAction::Unicast(dest) => Some(dest),
                    TapAction::Flood => None,
                };
                // The frame was checked to hold an Ethernet header, and HEADROOM fits VXLAN.
                let Ok(start) = encapsulate(&mut buf[..end], HEADROOM, &encapsulation) else {
                    continue;
                };
                self.plan.push(Planned {
                    buf: slot,
                    start,
                    end,
                    network: index,
                    dest,
                    segment_size: None,
                    segments: 1,
                    socket,
                    outer,
                });
                slot += 1;
            }
            read += 1;
        }
        Ok(read)
    }

    /// Classifies one frame read with its virtio-net header (`raw`) and writes it, segmented
    /// when it is a superframe, into TAP buffers from `*slot` on, planning its sends. A frame
    /// needing more buffers than are left sends what is planned and starts over at buffer 0.
    /// Returns false when the frame was dropped.
    fn plan_offloaded_frame(&mut self, index: usize, raw: &[u8], slot: &mut usize) -> bool {
        let Some(network) = self.forwarder.networks().get(index) else {
            return false;
        };
        let vni = network.vni();
        let Ok(hdr) = VirtioNetHdr::parse(raw) else {
            network.drops.count(DropReason::Runt);
            return false;
        };
        let frame = &raw[VIRTIO_NET_HDR_LEN..];
        let superframe = hdr.gso_kind() != VirtioNetHdr::GSO_NONE;
        let now = Some(self.epoch.elapsed().as_nanos() as u64);
        let dest = match self.forwarder.from_tap_at(index, frame, superframe, now) {
            TapAction::Drop(_) => return false,
            TapAction::Unicast(dest) => Some(dest),
            TapAction::Flood => None,
        };
        let outer = self.source_ports.policy().fields(frame);
        let socket = self.source_ports.slot_for(flow_hash(frame), outer.df);
        let mut wire = match WirePlan::new(&hdr, frame, self.mss[index]) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::debug!("dropping a TAP frame the segmenter refused: {e}");
                network.drops.count(DropReason::BadOffload);
                return false;
            }
        };
        let superframe_counters = if wire.is_tso() {
            Some((
                &network.events.tso_superframes,
                &network.events.tso_segments,
            ))
        } else if wire.is_uso() {
            Some((
                &network.events.uso_superframes,
                &network.events.uso_segments,
            ))
        } else {
            None
        };
        if let Some((superframes, segments)) = superframe_counters {
            Events::bump(superframes);
            segments.fetch_add(wire.segments() as u64, Ordering::Relaxed);
        }
        let max_segments = if self.offloads.gso {
            MAX_GSO_SEGMENTS
        } else {
            1
        };
        while wire.remaining() > 0 {
            if *slot == self.tap_bufs.len() {
                self.send_planned();
                self.plan.clear();
                *slot = 0;
            }
            let Some(network) = self.forwarder.networks().get(index) else {
                return false;
            };
            let out = &mut self.tap_bufs[*slot];
            let chunk = match wire.write_next(frame, vni, out, MAX_CHUNK_SEGMENTS) {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    // Not reached (a buffer holds any one segment); counted if it ever is.
                    tracing::debug!("dropping the rest of a TAP frame: {e}");
                    network.drops.count(DropReason::BadOffload);
                    return wire.remaining() < wire.segments();
                }
            };
            for batch in chunk.batches(MAX_UDP_GSO_PAYLOAD, max_segments) {
                if batch.segments > 1 {
                    Events::bump(&network.events.gso_batches);
                }
                self.plan.push(Planned {
                    buf: *slot,
                    start: batch.range.start,
                    end: batch.range.end,
                    network: index,
                    dest,
                    segment_size: (batch.segments > 1).then_some(batch.segment_size as u16),
                    segments: batch.segments,
                    socket,
                    outer,
                });
            }
            *slot += 1;
        }
        true
    }
}
