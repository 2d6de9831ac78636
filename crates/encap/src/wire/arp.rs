//! The ARP packet (RFC 826) for IPv4 over Ethernet, the only kind an overlay carries.

use std::net::Ipv4Addr;

use crate::error::NeighborError;
use crate::mac::MacAddr;

use super::be::{be16, set_be16};

/// Ethernet/IPv4 ARP: 8 bytes of header and two (MAC, IPv4) pairs.
pub const ARP_LEN: usize = 28;

pub mod field {
    use std::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;

/// ARP operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOperation {
    Request,
    Reply,
    /// Any other code (RARP, InARP...): carried, never answered.
    Other(u16),
}

impl From<u16> for ArpOperation {
    fn from(code: u16) -> Self {
        match code {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Other(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(op: ArpOperation) -> Self {
        match op {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Other(code) => code,
        }
    }
}

header_view!(ArpPacket, NeighborError);

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Checks the length and that the packet maps Ethernet MACs to IPv4 addresses (6 and 4
    /// bytes), so every accessor reads inside the buffer at the fixed offsets.
    pub fn check_len(&self) -> Result<(), NeighborError> {
        let bytes = self.buffer.as_ref();
        if bytes.len() < ARP_LEN {
            return Err(NeighborError::Truncated {
                what: "ARP",
                required: ARP_LEN,
                actual: bytes.len(),
            });
        }
        if be16(bytes, field::HTYPE.start) != Some(HTYPE_ETHERNET)
            || be16(bytes, field::PTYPE.start) != Some(PTYPE_IPV4)
            || bytes[field::HLEN] != 6
            || bytes[field::PLEN] != 4
        {
            return Err(NeighborError::Unsupported("ARP other than Ethernet/IPv4"));
        }
        Ok(())
    }

    fn mac(&self, field: std::ops::Range<usize>) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field]).unwrap_or(MacAddr([0; 6]))
    }

    fn ip(&self, field: std::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(be16(self.buffer.as_ref(), field::OPER.start).unwrap_or(0))
    }

    pub fn sender_mac(&self) -> MacAddr {
        self.mac(field::SHA)
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        self.ip(field::SPA)
    }

    pub fn target_mac(&self) -> MacAddr {
        self.mac(field::THA)
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        self.ip(field::TPA)
    }
}

/// An Ethernet/IPv4 ARP packet, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: ArpOperation,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Self {
        ArpRepr {
            operation: packet.operation(),
            sender_mac: packet.sender_mac(),
            sender_ip: packet.sender_ip(),
            target_mac: packet.target_mac(),
            target_ip: packet.target_ip(),
        }
    }

    /// Writes the whole packet into the first [`ARP_LEN`] bytes of `buffer`; false (nothing
    /// written) when it is shorter.
    pub fn emit(&self, buffer: &mut [u8]) -> bool {
        let Some(out) = buffer.get_mut(..ARP_LEN) else {
            return false;
        };
        set_be16(out, field::HTYPE.start, HTYPE_ETHERNET);
        set_be16(out, field::PTYPE.start, PTYPE_IPV4);
        out[field::HLEN] = 6;
        out[field::PLEN] = 4;
        set_be16(out, field::OPER.start, self.operation.into());
        out[field::SHA].copy_from_slice(&self.sender_mac.octets());
        out[field::SPA].copy_from_slice(&self.sender_ip.octets());
        out[field::THA].copy_from_slice(&self.target_mac.octets());
        out[field::TPA].copy_from_slice(&self.target_ip.octets());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_lengths() {
        let repr = ArpRepr {
            operation: ArpOperation::Request,
            sender_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            sender_ip: Ipv4Addr::new(10, 0, 0, 1),
            target_mac: MacAddr([0; 6]),
            target_ip: Ipv4Addr::new(10, 0, 0, 2),
        };
        let mut buf = [0u8; ARP_LEN];
        assert!(repr.emit(&mut buf));
        assert_eq!(
            ArpRepr::parse(&ArpPacket::new_checked(&buf[..]).unwrap()),
            repr
        );
        for len in 0..ARP_LEN {
            assert!(ArpPacket::new_checked(&buf[..len]).is_err());
        }
        buf[field::HLEN] = 8;
        assert!(ArpPacket::new_checked(&buf[..]).is_err());
        assert!(!repr.emit(&mut [0u8; ARP_LEN - 1]));
    }
}
