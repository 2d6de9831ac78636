//! The UDP header (RFC 768).

use crate::checksum::Sum;
use crate::error::{DecapError, Layer};

use super::be::{be16, set_be16};

pub const UDP_HEADER_LEN: usize = 8;

pub mod field {
    use std::ops::{Range, RangeFrom};
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const PAYLOAD: RangeFrom<usize> = 8..;
}

header_view!(UdpPacket, DecapError);

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Checks the buffer holds the header and that the length field is neither shorter than the
    /// header nor longer than the buffer (so `payload` can trust it).
    pub fn check_len(&self) -> Result<(), DecapError> {
        let actual = self.buffer.as_ref().len();
        if actual < UDP_HEADER_LEN {
            return Err(DecapError::Truncated {
                layer: Layer::OuterUdp,
                required: UDP_HEADER_LEN,
                actual,
            });
        }
        let udp_len = self.len_field() as usize;
        if udp_len < UDP_HEADER_LEN || udp_len > actual {
            return Err(DecapError::BadUdpLength {
                udp_len,
                available: actual,
            });
        }
        Ok(())
    }

    fn word(&self, field: std::ops::Range<usize>) -> u16 {
        be16(self.buffer.as_ref(), field.start).unwrap_or(0)
    }

    pub fn src_port(&self) -> u16 {
        self.word(field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        self.word(field::DST_PORT)
    }

    pub fn len_field(&self) -> u16 {
        self.word(field::LENGTH)
    }

    pub fn checksum(&self) -> u16 {
        self.word(field::CHECKSUM)
    }

    /// True when the checksum over `pseudo_header` + datagram is valid.
    pub fn verify_checksum(&self, pseudo_header: Sum) -> bool {
        let datagram = &self.buffer.as_ref()[..self.len_field() as usize];
        crate::checksum::verifies(pseudo_header.add_bytes(datagram))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// The payload as delimited by the UDP length field (trailing link padding excluded).
    pub fn payload(&self) -> &'a [u8] {
        let buffer = self.buffer.as_ref();
        &buffer[UDP_HEADER_LEN..self.len_field() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    fn set_word(&mut self, field: std::ops::Range<usize>, value: u16) {
        set_be16(self.buffer.as_mut(), field.start, value);
    }

    pub fn set_src_port(&mut self, port: u16) {
        self.set_word(field::SRC_PORT, port);
    }

    pub fn set_dst_port(&mut self, port: u16) {
        self.set_word(field::DST_PORT, port);
    }

    pub fn set_len(&mut self, len: u16) {
        self.set_word(field::LENGTH, len);
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        self.set_word(field::CHECKSUM, checksum);
    }

    /// Computes and stores the checksum over `pseudo_header` + the whole datagram. A computed
    /// zero is sent as 0xFFFF because zero means "no checksum" (RFC 768).
    pub fn fill_checksum(&mut self, pseudo_header: Sum) {
        self.set_checksum(0);
        let len = self.len_field() as usize;
        let sum = pseudo_header
            .add_bytes(&self.buffer.as_ref()[..len])
            .finish();
        self.set_checksum(if sum == 0 { 0xFFFF } else { sum });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    pub fn parse<T: AsRef<[u8]>>(packet: &UdpPacket<T>) -> Self {
        UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        }
    }

    /// Writes ports and length; the checksum is left zero for the caller to fill or keep.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut UdpPacket<T>, udp_len: u16) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(udp_len);
        packet.set_checksum(0);
    }
}
