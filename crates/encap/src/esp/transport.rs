//! Transport mode over the VXLAN UDP packet: what goes inside the ESP payload, built in place.
//!
//! The plaintext is the UDP packet a plain VXLAN VTEP would send, from its UDP header on: the UDP
//! header (source port from the flow hash, destination 4789), the VXLAN header and the inner
//! frame. Its UDP checksum is sent as zero: the ICV covers every byte, and RFC 3948 §3.1.2 lets a
//! transport-mode receiver behind a NAT skip the inner checksum, which no longer matches the
//! rewritten addresses anyway.

use std::ops::Range;

use crate::encap::{encapsulate, Encapsulation};
use crate::esp::wire::ESP_HEADER_LEN;
use crate::esp::{EspError, SealSa, Sealed};
use crate::vni::Vni;
use crate::wire::{UdpPacket, UdpRepr, UDP_HEADER_LEN, VXLAN_HEADER_LEN};

/// Headroom to reserve in front of an inner frame for the ESP path over a UDP socket: VXLAN (8),
/// the VXLAN packet's UDP header (8) and the ESP header with its IV (16). Tailroom:
/// [`MAX_TAILROOM`](crate::esp::MAX_TAILROOM).
pub const HEADROOM: usize = VXLAN_HEADER_LEN + UDP_HEADER_LEN + ESP_HEADER_LEN;

/// The inner UDP ports of the VXLAN packet ESP carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanPorts {
    pub src: u16,
    pub dst: u16,
}

/// Wraps the frame `buf[frame]` in VXLAN and its UDP header, then seals the result as ESP, all in
/// place: `buf[frame.start - HEADROOM..frame.start]` and the tailroom behind `frame.end` are
/// written, the frame is encrypted where it lies. Returns the ESP packet's range (the payload of
/// the datagram to send to the ESP-in-UDP port).
pub fn seal_vxlan(
    sa: &mut SealSa,
    buf: &mut [u8],
    frame: Range<usize>,
    vni: Vni,
    ports: VxlanPorts,
) -> Result<Sealed, EspError> {
    if frame.start < HEADROOM {
        return Err(EspError::NoHeadroom {
            needed: HEADROOM,
            available: frame.start,
        });
    }
    let udp_start = frame.start - VXLAN_HEADER_LEN - UDP_HEADER_LEN;
    let udp_len = frame.end.saturating_sub(udp_start);
    if frame.end > buf.len() || udp_len > usize::from(u16::MAX) {
        return Err(EspError::TooLong {
            len: udp_len,
            limit: usize::from(u16::MAX),
        });
    }
    // Writes only the VXLAN header (no outer stack), so its only failure is a frame shorter than
    // an Ethernet header; ESP carries such a frame as faithfully as plain VXLAN would refuse it.
    encapsulate(
        &mut buf[..frame.end],
        frame.start,
        &Encapsulation::vxlan(vni),
    )
    .map_err(|_| EspError::Truncated {
        required: 14,
        actual: frame.end.saturating_sub(frame.start),
    })?;
    UdpRepr {
        src_port: ports.src,
        dst_port: ports.dst,
    }
    .emit(
        &mut UdpPacket::new_unchecked(&mut buf[udp_start..frame.end]),
        udp_len as u16,
    );
    sa.seal_in_place(buf, udp_start..frame.end)
}
