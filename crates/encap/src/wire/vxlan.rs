//! The 8-byte VXLAN header (RFC 7348 §5):
//!
//! ```text
//!  0               1               2               3
//! |R R R R I R R R|          Reserved (24 bits)                   |
//! |          VXLAN Network Identifier (VNI)       |   Reserved    |
//! ```

use crate::error::{DecapError, Layer};
use crate::vni::Vni;

pub const VXLAN_HEADER_LEN: usize = 8;
/// The "I" flag: the VNI is valid. Must be set on send and checked on receipt.
pub const FLAG_I: u8 = 0x08;

pub mod field {
    use std::ops::{Range, RangeFrom};
    pub const FLAGS: usize = 0;
    pub const RESERVED_1: Range<usize> = 1..4;
    pub const VNI: Range<usize> = 4..7;
    pub const RESERVED_2: usize = 7;
    pub const PAYLOAD: RangeFrom<usize> = 8..;
}

header_view!(
    /// A view of a VXLAN header followed by the inner frame.
    VxlanPacket,
    DecapError
);

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    pub fn check_len(&self) -> Result<(), DecapError> {
        let actual = self.buffer.as_ref().len();
        if actual < VXLAN_HEADER_LEN {
            return Err(DecapError::Truncated {
                layer: Layer::Vxlan,
                required: VXLAN_HEADER_LEN,
                actual,
            });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn has_vni_flag(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    pub fn vni(&self) -> Vni {
        let b = &self.buffer.as_ref()[field::VNI];
        Vni::from_be_bytes([b[0], b[1], b[2]])
    }

    /// The 24 reserved bits after the flags and the 8 after the VNI; ignored on receipt.
    pub fn reserved(&self) -> (u32, u8) {
        let b = self.buffer.as_ref();
        let r1 = &b[field::RESERVED_1];
        (
            u32::from_be_bytes([0, r1[0], r1[1], r1[2]]),
            b[field::RESERVED_2],
        )
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> VxlanPacket<&'a T> {
    /// The inner Ethernet frame, borrowed for the buffer's whole lifetime.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    pub fn set_vni(&mut self, vni: Vni) {
        self.buffer.as_mut()[field::VNI].copy_from_slice(&vni.to_be_bytes());
    }

    pub fn clear_reserved(&mut self) {
        let b = self.buffer.as_mut();
        b[field::RESERVED_1].fill(0);
        b[field::RESERVED_2] = 0;
    }
}

/// The meaning of a VXLAN header: all there is to it is the VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanRepr {
    pub vni: Vni,
}

impl VxlanRepr {
    /// Receive rule of RFC 7348: I must be set; other flags and the reserved fields are ignored.
    pub fn parse<T: AsRef<[u8]>>(packet: &VxlanPacket<T>) -> Result<Self, DecapError> {
        if !packet.has_vni_flag() {
            return Err(DecapError::MissingIFlag {
                flags: packet.flags(),
            });
        }
        Ok(VxlanRepr { vni: packet.vni() })
    }

    /// Send rule of RFC 7348: I set, every reserved bit zero.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut VxlanPacket<T>) {
        packet.set_flags(FLAG_I);
        packet.clear_reserved();
        packet.set_vni(self.vni);
    }

    pub const fn header_len(&self) -> usize {
        VXLAN_HEADER_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_matches_rfc_layout() {
        let mut bytes = [0xAAu8; 8];
        let vni = Vni::new(0x123456).unwrap();
        VxlanRepr { vni }.emit(&mut VxlanPacket::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
    }

    #[test]
    fn receive_ignores_reserved_bits_but_requires_i() {
        let bytes = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 42, 0xFF];
        let packet = VxlanPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(VxlanRepr::parse(&packet).unwrap().vni.get(), 42);
        assert_eq!(packet.reserved(), (0xFF_FFFF, 0xFF));

        let bytes = [0xF7, 0, 0, 0, 0, 0, 42, 0];
        let packet = VxlanPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            VxlanRepr::parse(&packet),
            Err(DecapError::MissingIFlag { flags: 0xF7 })
        );
    }

    #[test]
    fn every_short_length_is_reported_exactly() {
        for len in 0..VXLAN_HEADER_LEN {
            let bytes = vec![0x08; len];
            assert_eq!(
                VxlanPacket::new_checked(&bytes[..]).err(),
                Some(DecapError::Truncated {
                    layer: Layer::Vxlan,
                    required: 8,
                    actual: len
                })
            );
        }
    }
}
