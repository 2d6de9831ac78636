//! The fixed IPv6 header (RFC 8200). Extension headers are not used by VXLAN senders and a packet
//! whose next header is not UDP is reported as such.

use std::net::Ipv6Addr;

use crate::error::{DecapError, Layer};

use super::be::{be16, be32, set_be16};

pub const IPV6_HEADER_LEN: usize = 40;

pub mod field {
    use std::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
    /// Source and destination together: what a pseudo-header sums and a flow is named by.
    pub const ADDRS: Range<usize> = SRC_ADDR.start..DST_ADDR.end;
}

header_view!(Ipv6Packet, DecapError);

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn check_len(&self) -> Result<(), DecapError> {
        let actual = self.buffer.as_ref().len();
        if actual < IPV6_HEADER_LEN {
            return Err(DecapError::Truncated {
                layer: Layer::OuterIpv6,
                required: IPV6_HEADER_LEN,
                actual,
            });
        }
        let required = IPV6_HEADER_LEN + self.payload_len() as usize;
        if actual < required {
            return Err(DecapError::Truncated {
                layer: Layer::OuterIpv6,
                required,
                actual,
            });
        }
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn first_word(&self) -> u32 {
        be32(self.bytes(), field::VER_TC_FLOW.start).unwrap_or(0)
    }

    pub fn version(&self) -> u8 {
        (self.first_word() >> 28) as u8
    }

    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000F_FFFF
    }

    pub fn payload_len(&self) -> u16 {
        be16(self.bytes(), field::PAYLOAD_LEN.start).unwrap_or(0)
    }

    pub fn next_header(&self) -> u8 {
        self.bytes()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.bytes()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        addr(&self.bytes()[field::SRC_ADDR])
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(&self.bytes()[field::DST_ADDR])
    }
}

fn addr(bytes: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(bytes);
    Ipv6Addr::from(octets)
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    pub fn payload(&self) -> &'a [u8] {
        let buffer = self.buffer.as_ref();
        &buffer[IPV6_HEADER_LEN..IPV6_HEADER_LEN + self.payload_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_payload_len(&mut self, len: u16) {
        set_be16(self.buffer.as_mut(), field::PAYLOAD_LEN.start, len);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Ipv6Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Self {
        Ipv6Repr {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            next_header: packet.next_header(),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        }
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>, payload_len: u16) {
        let first =
            (6u32 << 28) | ((self.traffic_class as u32) << 20) | (self.flow_label & 0xF_FFFF);
        let b = packet.buffer.as_mut();
        b[field::VER_TC_FLOW].copy_from_slice(&first.to_be_bytes());
        b[field::NEXT_HEADER] = self.next_header;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SRC_ADDR].copy_from_slice(&self.src.octets());
        b[field::DST_ADDR].copy_from_slice(&self.dst.octets());
        packet.set_payload_len(payload_len);
    }
}
