//! The Ethernet II header (14 bytes). Used for the outer header of raw/pcap paths and as the
//! fixed-offset view of inner frames.

use crate::error::{DecapError, Layer};
use crate::mac::MacAddr;

pub const ETHERNET_HEADER_LEN: usize = 14;

pub mod field {
    use std::ops::{Range, RangeFrom};
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: RangeFrom<usize> = 14..;
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
        let mut octets = [0u8; 6];
        octets.copy_from_slice(&self.buffer.as_ref()[range]);
        MacAddr(octets)
    }

    pub fn destination(&self) -> MacAddr {
        self.mac(field::DESTINATION)
    }

    pub fn source(&self) -> MacAddr {
        self.mac(field::SOURCE)
    }

    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
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
