//! What a checksum field in a capture says, judged as Wireshark would with validation on, plus
//! the one state a capture taken before the NIC adds: left to checksum offload.
//!
//! Linux hands TCP/UDP checksums to the NIC (CHECKSUM_PARTIAL): the field holds only the folded
//! pseudo-header sum and the NIC adds the rest on transmit. A veth never does, and tcpdump sees the
//! packet before any NIC would, so every capture on a veth with default offloads (sender side or,
//! since the skb crosses the veth as it is, receiver side) holds such fields. They are neither
//! right nor wrong: Wireshark shows them "[unverified]", and so does `explain`.

use serde::Serialize;
use vxnet_encap::checksum::{self, Sum};

/// The verdict on one checksum field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(super) enum Check {
    /// The data sums to all ones with the field included.
    Verified,
    /// The field holds exactly the pseudo-header sum: the sender left it to checksum offload.
    LeftToOffload,
    /// An outer UDP checksum that verifies once the inner checksum, left to offload, is
    /// completed: Linux computes it ahead by local checksum offload (LCO), for the packet as the
    /// NIC will send it.
    VerifiedWithInnerCompleted,
    /// Neither: a receiver drops the packet.
    Wrong { expected: String },
    /// UDP over IPv4 with a zero field: no checksum was computed, which RFC 768 allows.
    None,
    /// A zero UDP checksum over IPv6, which RFC 8200 forbids unless the receiver allows it
    /// (RFC 6935 tunnels: the kernel's `udp6zerocsumrx`).
    ZeroOverIpv6,
    /// Part of the data is missing from the capture, so the sum cannot be taken.
    Unchecked,
}

impl Check {
    /// The note shown next to the field in the text view.
    pub(super) fn note(&self) -> String {
        match self {
            Check::Verified => "verified".into(),
            Check::LeftToOffload => "left to checksum offload (not verified): it holds only the \
                                     pseudo-header sum, which the sender's NIC completes; a capture \
                                     on the sending host (or across a veth) sees it before that"
                .into(),
            Check::VerifiedWithInnerCompleted => "verified over the packet as the NIC sends it, \
                                                  with the inner checksum completed (Linux's \
                                                  local checksum offload, LCO, sums ahead)"
                .into(),
            Check::Wrong { expected } => {
                format!("WRONG: should be {expected}; a receiver drops this packet")
            }
            Check::None => "none (allowed): zero means no checksum over IPv4 (RFC 768, RFC 7348)".into(),
            Check::ZeroOverIpv6 => "zero over IPv6: not allowed (RFC 8200) unless the receiver \
                                    accepts zero-checksum tunnels (RFC 6935, udp6zerocsumrx)"
                .into(),
            Check::Unchecked => "not verified: the capture does not hold the whole packet".into(),
        }
    }
}

/// How a zero field is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Zero {
    /// TCP, ICMP: zero is just a value.
    IsAValue,
    /// UDP over IPv4: zero means none.
    MeansNone,
    /// UDP over IPv6: zero is not allowed.
    Forbidden,
}

/// Judges a TCP/UDP/ICMPv6 checksum field: `segment` is the whole upper-layer packet (header,
/// field included, and payload), `field_at` the field's offset in it, `pseudo` its pseudo-header
/// (`None` for ICMPv4, which has none). `complete` is false when the capture lacks part of it.
pub(super) fn transport(
    segment: &[u8],
    field_at: usize,
    pseudo: Option<Sum>,
    zero: Zero,
    complete: bool,
) -> Check {
    let Some(field) = segment.get(field_at..field_at + 2) else {
        return Check::Unchecked;
    };
    let field = u16::from_be_bytes([field[0], field[1]]);
    if field == 0 {
        match zero {
            Zero::MeansNone => return Check::None,
            Zero::Forbidden => return Check::ZeroOverIpv6,
            Zero::IsAValue => {}
        }
    }
    if !complete {
        return Check::Unchecked;
    }
    let pseudo = pseudo.unwrap_or_default();
    if checksum::verifies(pseudo.add_bytes(segment)) {
        return Check::Verified;
    }
    // The exact CHECKSUM_PARTIAL signature (`~csum_tcpudp_magic(.., 0)`): the folded
    // pseudo-header sum, and only with a pseudo-header (ICMPv4 is never offloaded).
    if pseudo != Sum::default() && field == pseudo.fold() {
        return Check::LeftToOffload;
    }
    Check::Wrong {
        expected: format!("{:#06x}", expected(segment, field_at, pseudo, zero)),
    }
}

/// The value the field should hold: the sum with the field taken as zero.
fn expected(segment: &[u8], field_at: usize, pseudo: Sum, zero: Zero) -> u16 {
    let mut copy = segment.to_vec();
    copy[field_at..field_at + 2].fill(0);
    let value = pseudo.add_bytes(&copy).finish();
    // UDP sends a computed zero as all ones, so that zero can keep meaning "none".
    if value == 0 && zero != Zero::IsAValue {
        0xFFFF
    } else {
        value
    }
}

/// Judges an IPv4 header checksum (`header` includes options).
pub(super) fn ipv4_header(header: &[u8]) -> Check {
    const FIELD: usize = 10;
    if checksum::verifies(Sum::new().add_bytes(header)) {
        return Check::Verified;
    }
    Check::Wrong {
        expected: format!(
            "{:#06x}",
            expected(header, FIELD, Sum::new(), Zero::IsAValue)
        ),
    }
}

/// The correct value for a checksum field, to repair a scratch copy of a packet so the data
/// plane's own decapsulation (which rejects bad checksums, as a VTEP must) can lay out its
/// layers. The bytes shown are always the captured ones.
pub(super) fn repaired(segment: &[u8], field_at: usize, pseudo: Sum, udp: bool) -> u16 {
    let zero = if udp { Zero::MeansNone } else { Zero::IsAValue };
    expected(segment, field_at, pseudo, zero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn udp_v4(payload: &[u8]) -> (Vec<u8>, Sum) {
        let len = 8 + payload.len();
        let mut seg = vec![0x9c, 0x40, 0x12, 0xb5];
        seg.extend_from_slice(&(len as u16).to_be_bytes());
        seg.extend_from_slice(&[0, 0]);
        seg.extend_from_slice(payload);
        let pseudo = checksum::pseudo_header_v4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            17,
            len as u32,
        );
        (seg, pseudo)
    }

    #[test]
    fn the_four_states_of_a_udp_checksum() {
        let (mut seg, pseudo) = udp_v4(b"some payload");
        assert_eq!(
            transport(&seg, 6, Some(pseudo), Zero::MeansNone, true),
            Check::None
        );
        assert_eq!(
            transport(&seg, 6, Some(pseudo), Zero::Forbidden, true),
            Check::ZeroOverIpv6
        );

        let right = repaired(&seg, 6, pseudo, true);
        seg[6..8].copy_from_slice(&right.to_be_bytes());
        assert_eq!(
            transport(&seg, 6, Some(pseudo), Zero::MeansNone, true),
            Check::Verified
        );

        seg[6..8].copy_from_slice(&pseudo.fold().to_be_bytes());
        assert_eq!(
            transport(&seg, 6, Some(pseudo), Zero::MeansNone, true),
            Check::LeftToOffload
        );

        seg[6..8].copy_from_slice(&(right ^ 0x0101).to_be_bytes());
        assert_eq!(
            transport(&seg, 6, Some(pseudo), Zero::MeansNone, true),
            Check::Wrong {
                expected: format!("{right:#06x}")
            }
        );
        assert_eq!(
            transport(&seg, 6, Some(pseudo), Zero::MeansNone, false),
            Check::Unchecked
        );
    }

    #[test]
    fn ipv4_header_checksum() {
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&header), Check::Verified);
        header[10] = 0;
        assert_eq!(
            ipv4_header(&header),
            Check::Wrong {
                expected: "0xb861".into()
            }
        );
    }
}
