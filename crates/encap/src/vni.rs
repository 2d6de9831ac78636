use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A VXLAN Network Identifier: 24 bits. Construction is checked, so a `Vni` in hand always fits the
/// header and is never silently truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vni(u32);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VniError {
    #[error("VNI {0} is out of range (0..=16777215, 24 bits)")]
    OutOfRange(u64),
    #[error("VNI {0:?} is not a number")]
    NotANumber(String),
}

impl Vni {
    pub const MAX: u32 = 0x00FF_FFFF;

    pub const fn new(value: u32) -> Result<Self, VniError> {
        if value > Self::MAX {
            Err(VniError::OutOfRange(value as u64))
        } else {
            Ok(Vni(value))
        }
    }

    /// Builds a VNI from the three header bytes; infallible because three bytes cannot exceed 24 bits.
    pub const fn from_be_bytes(bytes: [u8; 3]) -> Self {
        Vni(((bytes[0] as u32) << 16) | ((bytes[1] as u32) << 8) | bytes[2] as u32)
    }

    pub const fn to_be_bytes(self) -> [u8; 3] {
        [(self.0 >> 16) as u8, (self.0 >> 8) as u8, self.0 as u8]
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Vni {
    type Error = VniError;
    fn try_from(value: u32) -> Result<Self, VniError> {
        Vni::new(value)
    }
}

impl From<Vni> for u32 {
    fn from(vni: Vni) -> u32 {
        vni.0
    }
}

impl FromStr for Vni {
    type Err = VniError;
    fn from_str(s: &str) -> Result<Self, VniError> {
        let value: u64 = s
            .trim()
            .parse()
            .map_err(|_| VniError::NotANumber(s.to_string()))?;
        match u32::try_from(value) {
            Ok(v) => Vni::new(v),
            Err(_) => Err(VniError::OutOfRange(value)),
        }
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_is_24_bits() {
        assert_eq!(Vni::new(0).map(Vni::get), Ok(0));
        assert_eq!(Vni::new(0xFF_FFFF).map(Vni::get), Ok(0xFF_FFFF));
        assert_eq!(Vni::new(0x100_0000), Err(VniError::OutOfRange(0x100_0000)));
        assert_eq!(
            "16777216".parse::<Vni>(),
            Err(VniError::OutOfRange(16_777_216))
        );
        assert_eq!(
            "99999999999".parse::<Vni>(),
            Err(VniError::OutOfRange(99_999_999_999))
        );
        assert!(matches!("x42".parse::<Vni>(), Err(VniError::NotANumber(_))));
        assert_eq!("42".parse::<Vni>().map(Vni::get), Ok(42));
    }

    #[test]
    fn byte_order_is_network_order() {
        let vni = Vni::from_be_bytes([0x12, 0x34, 0x56]);
        assert_eq!(vni.get(), 0x123456);
        assert_eq!(vni.to_be_bytes(), [0x12, 0x34, 0x56]);
    }
}
