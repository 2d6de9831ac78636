//! IPv6 neighbour solicitation and advertisement messages (RFC 4861 §4.3, §4.4): the ICMPv6
//! message from its type byte on, with its link-layer address options.

use std::net::Ipv6Addr;

use crate::error::NeighborError;
use crate::mac::MacAddr;

/// Type, code, checksum, flags/reserved and the target address: the message before options.
pub const NDP_HEADER_LEN: usize = 24;
/// One Ethernet link-layer address option: type, length (in 8-byte units), the MAC.
pub const LINK_LAYER_OPTION_LEN: usize = 8;

pub mod field {
    use std::ops::{Range, RangeFrom};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    /// Router, Solicited, Override in the top bits (advertisements; reserved in solicitations).
    pub const FLAGS: usize = 4;
    pub const RESERVED: Range<usize> = 4..8;
    pub const TARGET: Range<usize> = 8..24;
    pub const OPTIONS: RangeFrom<usize> = 24..;
}

pub const TYPE_SOLICITATION: u8 = 135;
pub const TYPE_ADVERTISEMENT: u8 = 136;
pub const OPTION_SOURCE_LINK_LAYER: u8 = 1;
pub const OPTION_TARGET_LINK_LAYER: u8 = 2;
pub const FLAG_ROUTER: u8 = 0x80;
pub const FLAG_SOLICITED: u8 = 0x40;
pub const FLAG_OVERRIDE: u8 = 0x20;

header_view!(NdpPacket, NeighborError);

impl<T: AsRef<[u8]>> NdpPacket<T> {
    /// Checks the fixed part, that this is a solicitation or an advertisement with code 0, and
    /// that the options tile the rest exactly with no zero-length option (RFC 4861 §4.6: such a
    /// packet is discarded), so the option walk cannot step outside the buffer or loop.
    pub fn check_len(&self) -> Result<(), NeighborError> {
        let bytes = self.buffer.as_ref();
        if bytes.len() < NDP_HEADER_LEN {
            return Err(NeighborError::Truncated {
                what: "neighbour discovery message",
                required: NDP_HEADER_LEN,
                actual: bytes.len(),
            });
        }
        if !matches!(bytes[field::TYPE], TYPE_SOLICITATION | TYPE_ADVERTISEMENT)
            || bytes[field::CODE] != 0
        {
            return Err(NeighborError::Unsupported("ICMPv6 other than NS/NA code 0"));
        }
        let mut at = NDP_HEADER_LEN;
        while at < bytes.len() {
            let len = bytes.get(at + 1).map_or(0, |units| usize::from(*units) * 8);
            if len == 0 || at + len > bytes.len() {
                return Err(NeighborError::Unsupported("malformed NDP option"));
            }
            at += len;
        }
        Ok(())
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn target(&self) -> Ipv6Addr {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[field::TARGET]);
        Ipv6Addr::from(octets)
    }

    /// The MAC of the first link-layer address option of `kind` (source or target) that
    /// carries an Ethernet address.
    pub fn link_layer(&self, kind: u8) -> Option<MacAddr> {
        let bytes = self.buffer.as_ref();
        let mut at = NDP_HEADER_LEN;
        while at + 1 < bytes.len() {
            let len = usize::from(bytes[at + 1]) * 8;
            if len == 0 {
                return None;
            }
            if bytes[at] == kind && len == LINK_LAYER_OPTION_LEN {
                return MacAddr::from_slice(bytes.get(at + 2..at + 8)?);
            }
            at += len;
        }
        None
    }
}

/// What an NS or NA says, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdpRepr {
    /// [`TYPE_SOLICITATION`] or [`TYPE_ADVERTISEMENT`].
    pub msg_type: u8,
    /// Advertisement flags (0 in a solicitation).
    pub flags: u8,
    pub target: Ipv6Addr,
    /// The source link-layer option of a solicitation, the target one of an advertisement.
    pub link_layer: Option<MacAddr>,
}

impl NdpRepr {
    pub fn parse<T: AsRef<[u8]>>(packet: &NdpPacket<T>) -> Self {
        let (flags, option) = match packet.msg_type() {
            TYPE_ADVERTISEMENT => (packet.flags() & 0xE0, OPTION_TARGET_LINK_LAYER),
            _ => (0, OPTION_SOURCE_LINK_LAYER),
        };
        NdpRepr {
            msg_type: packet.msg_type(),
            flags,
            target: packet.target(),
            link_layer: packet.link_layer(option),
        }
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn len(&self) -> usize {
        NDP_HEADER_LEN + self.link_layer.map_or(0, |_| LINK_LAYER_OPTION_LEN)
    }

    /// Never: a message has at least its fixed part.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the message with a zero checksum (the caller sums it with the IPv6 pseudo-header)
    /// into `buffer`; its length, or `None` when `buffer` is too short.
    pub fn emit(&self, buffer: &mut [u8]) -> Option<usize> {
        let out = buffer.get_mut(..self.len())?;
        out[..NDP_HEADER_LEN].fill(0);
        out[field::TYPE] = self.msg_type;
        out[field::FLAGS] = self.flags;
        out[field::TARGET].copy_from_slice(&self.target.octets());
        if let Some(mac) = self.link_layer {
            let option = &mut out[NDP_HEADER_LEN..];
            option[0] = if self.msg_type == TYPE_ADVERTISEMENT {
                OPTION_TARGET_LINK_LAYER
            } else {
                OPTION_SOURCE_LINK_LAYER
            };
            option[1] = 1;
            option[2..8].copy_from_slice(&mac.octets());
        }
        Some(self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hostile_options() {
        let repr = NdpRepr {
            msg_type: TYPE_ADVERTISEMENT,
            flags: FLAG_SOLICITED | FLAG_OVERRIDE,
            target: "fd00::2".parse().unwrap(),
            link_layer: Some(MacAddr([2, 0, 0, 0, 0, 2])),
        };
        let mut buf = [0u8; 64];
        let len = repr.emit(&mut buf).unwrap();
        assert_eq!(len, 32);
        assert_eq!(
            NdpRepr::parse(&NdpPacket::new_checked(&buf[..len]).unwrap()),
            repr
        );
        for cut in 0..NDP_HEADER_LEN {
            assert!(NdpPacket::new_checked(&buf[..cut]).is_err());
        }
        // An option of length zero, and one running past the end, are refused.
        buf[NDP_HEADER_LEN + 1] = 0;
        assert!(NdpPacket::new_checked(&buf[..len]).is_err());
        buf[NDP_HEADER_LEN + 1] = 2;
        assert!(NdpPacket::new_checked(&buf[..len]).is_err());
        buf[field::TYPE] = 128;
        assert!(NdpPacket::new_checked(&buf[..NDP_HEADER_LEN]).is_err());
    }
}
