//! TAP offloads, sans-IO: the virtio-net header, checksum completion, TSO segmentation of TCP
//! superframes into one UDP GSO send, and GRO-style coalescing of received TCP segments.
//!
//! - [`vnet`]: `struct virtio_net_hdr` (native endian, 10 bytes).
//! - [`segment`]: TAP -> wire. [`prepare_for_wire`] is the single entry point for every frame read
//!   from the TAP: it passes plain frames through, completes a pending checksum, or splits a TSO
//!   superframe into VXLAN-wrapped segments of equal size laid out for one `UDP_SEGMENT` send.
//! - [`coalesce`]: wire -> TAP. [`Coalescer`] merges consecutive, checksum-verified TCP segments of
//!   one flow into a superframe with a `NEEDS_CSUM` + `TCPV4/6` virtio-net header.
//! - [`udp_coalesce`]: wire -> TAP. [`UdpCoalescer`] does the same for the datagrams of one UDP
//!   flow (`GSO_UDP_L4`), the kernel's UDP GRO; only for a TAP that took USO.
//! - [`merge`]: what the two coalescers share ([`Merge`], [`Push`], [`Emit`], the header checks
//!   and the sealing of a superframe behind its virtio-net header); `pending`: the pending
//!   superframe both build, and the buffer work on it.
//! - [`copy_csum`]: the fused copy + checksum both directions use.
//! - [`partial`]: inner checksums a kernel VTEP on the same machine left for a NIC to finish.
//! - [`tunnel_gso`]: a whole inner superframe a kernel VTEP on the same machine sent unsplit.
//! - `frame`: where an inner frame's IP and TCP/UDP headers are, checked once; the code above
//!   rewrites them through the [`crate::wire`] views (`ipv4`, `ipv6`, `tcp`, `udp`).
//!
//! All offsets (like the virtio-net header's) count from the start of the inner Ethernet header.
//!
//! # Engine usage
//!
//! TAP -> wire, per TAP read `[virtio_net_hdr][frame]`:
//! ```text
//! let hdr = VirtioNetHdr::parse(&read)?;            // native endian, 10 bytes
//! let frame = &read[VIRTIO_NET_HDR_LEN..];
//! // out: allocated once; a superframe that does not fit goes out in several chunks
//! let mut plan = WirePlan::new(&hdr, frame, mss)?;
//! while let Some(seg) = plan.write_next(frame, vni, &mut out, max_segments)? {
//!     for b in seg.batches(MAX_UDP_GSO_PAYLOAD, MAX_GSO_SEGMENTS) {
//!         // one sendmsg of out[b.range] with cmsg UDP_SEGMENT = b.segment_size as u16
//!         // (skip the cmsg when b.segments == 1)
//!     }
//! }
//! ```
//! ([`prepare_for_wire`] does it in one go when the output buffer holds the whole frame.)
//! `mss` is the inner TCP payload that fits the underlay: underlay MTU - outer IP (20/40) - UDP 8 -
//! VXLAN 8 - inner Ethernet 14 - inner IP/TCP headers (e.g. 1500 - 50 - 20 - 32 = 1398 for IPv4
//! with timestamps). A malformed frame is an error to count and drop.
//!
//! Wire -> TAP, per batch of decapsulated inner frames (either coalescer, through [`Merge`]):
//! ```text
//! coalescer.coalesce(frames, |e| match e {
//!     Emit::Write(bytes) => tap.write(bytes),            // header included
//!     Emit::AsIs(frame) => tap.writev(&[ZERO_VNET_HDR, frame]),
//! });
//! ```

pub mod coalesce;
pub mod copy_csum;
mod frame;
pub mod merge;
pub mod partial;
mod pending;
pub mod segment;
pub mod tunnel_gso;
pub mod tunnel_tx;
pub mod udp_coalesce;
pub mod vnet;

pub use coalesce::Coalescer;
pub use merge::{CoalesceConfig, CoalesceStats, Emit, Merge, Push, Reject};
pub use partial::complete_partial_checksum;
pub use segment::{
    complete_checksum, prepare_for_wire, prepare_for_wire_with, required_output_len,
    segments_per_send, CopyMode, GsoBatch, GsoBatches, Segmented, WirePlan, MAX_GSO_SEGMENTS,
    MAX_UDP_GSO_PAYLOAD,
};
pub use tunnel_gso::InnerSuperframe;
pub use udp_coalesce::UdpCoalescer;
pub use vnet::{VirtioNetHdr, VIRTIO_NET_HDR_LEN, ZERO_VNET_HDR};

use crate::wire::{tcp, udp};

/// The virtio-net `csum_offset` of a TCP checksum: where it sits in the TCP header.
pub const TCP_CHECKSUM_OFFSET: u16 = tcp::field::CHECKSUM.start as u16;
/// The virtio-net `csum_offset` of a UDP checksum: where it sits in the UDP header.
pub const UDP_CHECKSUM_OFFSET: u16 = udp::field::CHECKSUM.start as u16;
