//! The Ethernet II header (14 bytes). Used for the outer header of raw/pcap paths and as the
//! fixed-offset view of inner frames.

use crate::error::{DecapError, Layer};
use crate::mac::MacAddr;

use super::be::be16;

pub const ETHERNET_HEADER_LEN: usize = 14;
/// One 802.1Q / 802.1ad tag (TPID + TCI), inserted where the EtherType was.
pub const VLAN_TAG_LEN: usize = 4;
/// An Ethernet header carrying one VLAN tag.
pub const TAGGED_HEADER_LEN: usize = ETHERNET_HEADER_LEN + VLAN_TAG_LEN;
/// The VLAN ID bits of a TCI (the rest are priority and drop eligibility).
pub const VLAN_ID_MASK: u16 = 0x0FFF;

pub mod field {
    use std::ops::{Range, RangeFrom};
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

/// An 802.1Q tag's fields, counted from its TPID (which sits at [`field::ETHERTYPE`]); the
/// EtherType (or the next tag) follows at [`VLAN_TAG_LEN`].
pub mod vlan_field {
    use std::ops::Range;
    pub const TPID: Range<usize> = 0..2;
    pub const TCI: Range<usize> = 2..4;
}

/// The EtherTypes vxnet looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtherType;

impl EtherType {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88A8;
    pub const IPV6: u16 = 0x86DD;
}

#[derive(Debug, Clone)]
pub struct EthernetPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetPacket { buffer }
    }

    /// `layer` says which Ethernet header this is so a short buffer is reported precisely.
    pub fn new_checked(buffer: T, layer: Layer) -> Result<Self, DecapError> {
        let actual = buffer.as_ref().len();
        if actual < ETHERNET_HEADER_LEN {
            return Err(DecapError::Truncated {
                layer,
                required: ETHERNET_HEADER_LEN,
                actual,
            });
        }
        Ok(EthernetPacket { buffer })
    }

    fn mac(&self, range: std::ops::Range<usize>) -> MacAddr {
        self.buffer
            .as_ref()
            .get(range)
            .and_then(MacAddr::from_slice)
            .unwrap_or_default()
    }

    pub fn destination(&self) -> MacAddr {
        self.mac(field::DESTINATION)
    }

    pub fn source(&self) -> MacAddr {
        self.mac(field::SOURCE)
    }

    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE.start).unwrap_or(0)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetPacket<&'a T> {
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src: MacAddr,
    pub dst: MacAddr,
    pub ethertype: u16,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]>>(packet: &EthernetPacket<T>) -> Self {
        EthernetRepr {
            src: packet.source(),
            dst: packet.destination(),
            ethertype: packet.ethertype(),
        }
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut EthernetPacket<T>) {
        let b = packet.buffer.as_mut();
        b[field::DESTINATION].copy_from_slice(&self.dst.0);
        b[field::SOURCE].copy_from_slice(&self.src.0);
        b[field::ETHERTYPE].copy_from_slice(&self.ethertype.to_be_bytes());
    }
}
