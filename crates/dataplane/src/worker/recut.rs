//! A coalesced superframe the TAP refused, written again segment by segment.
//!
//! Some kernels refuse GSO writes to a TAP that others take: Linux 6.6.44 (and the stable
//! kernels that took the same `virtio_net_hdr_to_skb` check) answers EINVAL to a superframe
//! whose last segment is shorter than `gso_size`, which the coalescers make whenever a flow's
//! burst ends mid-segment (wireguard-go and Tailscale met it in 2024). Nothing at start-up says
//! which kernel does what, so the sink learns it from the first refusal: the refused superframe
//! is cut back into the segments it was made of and each is written alone (nothing is lost), and
//! the caller stops making what was refused (short tails, or that kind of superframe at all).

use std::io::{self, IoSlice};

use vxnet_encap::offload::merge::MAX_SUPERFRAME_IP_LEN;
use vxnet_encap::offload::{VirtioNetHdr, WirePlan, VIRTIO_NET_HDR_LEN, ZERO_VNET_HDR};
use vxnet_encap::wire::VXLAN_HEADER_LEN;
use vxnet_encap::Vni;

/// What a TAP refused, and so what its sink must stop making.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A superframe whose last segment is shorter than the others: keep segments equal.
    ShortTail,
    /// A superframe of equal segments: stop coalescing this transport into the TAP.
    Gso { udp: bool },
}

/// Why the refused write is worth a second look: EINVAL for a GSO superframe. Anything else
/// (a full queue, a TAP gone) is not the header's fault and is counted as usual.
pub(super) fn refusal(written: &[u8], error: &io::Error) -> Option<Refusal> {
    if error.raw_os_error() != Some(libc::EINVAL) {
        return None;
    }
    let hdr = VirtioNetHdr::parse(written).ok()?;
    let gso_size = usize::from(hdr.gso_size);
    if hdr.gso_kind() == VirtioNetHdr::GSO_NONE || gso_size == 0 {
        return None;
    }
    let payload = written
        .len()
        .checked_sub(VIRTIO_NET_HDR_LEN + usize::from(hdr.hdr_len))?;
    Some(if !payload.is_multiple_of(gso_size) {
        Refusal::ShortTail
    } else {
        Refusal::Gso {
            udp: hdr.gso_kind() == VirtioNetHdr::GSO_UDP_L4,
        }
    })
}

/// Cuts `written` (virtio-net header + superframe, as a coalescer sealed it) back into its
/// segments, each with its own lengths, IPv4 ID and complete checksums, and hands each to
/// `write` behind an all-zero virtio-net header. Returns how many segments were cut, or why
/// the superframe could not be planned (then nothing was written; a `scratch` given smaller than
/// one segment fails part way, which the sink's, sized on first use, never is).
///
/// The cutting is the send side's (`WirePlan`, which does the same to superframes the TAP hands
/// out): one implementation of the kernel's segmentation rules, not two. It lays each segment
/// behind a VXLAN header, skipped here; `scratch` holds a chunk of segments at a time.
pub(super) fn write_segments(
    written: &[u8],
    scratch: &mut Vec<u8>,
    mut write: impl FnMut(&[IoSlice<'_>]),
) -> Result<usize, vxnet_encap::OffloadError> {
    let hdr = VirtioNetHdr::parse(written)?;
    let frame = written.get(VIRTIO_NET_HDR_LEN..).unwrap_or_default();
    // The segment size is the superframe's own: no path MTU applies on the way into a TAP.
    let mut plan = WirePlan::new(&hdr, frame, MAX_SUPERFRAME_IP_LEN)?;
    if scratch.is_empty() {
        // Allocated on the first refusal only: most kernels never refuse.
        scratch.resize(SCRATCH_LEN, 0);
    }
    // Any VNI: the VXLAN header it goes into is skipped.
    let vni = Vni::from_be_bytes([0; 3]);
    let mut cut = 0;
    while let Some(chunk) = plan.write_next(frame, vni, scratch, usize::MAX)? {
        let out = scratch.get(..chunk.total_len).unwrap_or_default();
        for segment in out.chunks(chunk.segment_size.max(1)) {
            let inner = segment.get(VXLAN_HEADER_LEN..).unwrap_or_default();
            write(&[IoSlice::new(&ZERO_VNET_HDR), IoSlice::new(inner)]);
        }
        cut += chunk.segments;
    }
    Ok(cut)
}

/// Room for at least one segment of the largest superframe (one IP packet of 64 KB behind its
/// link header and a VXLAN header), and for a few dozen of a 1500-byte MTU.
const SCRATCH_LEN: usize = 2 * (MAX_SUPERFRAME_IP_LEN + 64);

#[cfg(test)]
#[path = "recut_tests.rs"]
mod tests;
