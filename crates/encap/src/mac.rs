use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// An IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a MAC address (expected six hex octets like 02:42:ac:11:00:02)")]
pub struct MacParseError(String);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// The kernel's "all-zeros" FDB entry: where broadcast, multicast and unknown unicast are flooded.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// A locally administered unicast address from a SHA-256 of `seed`: the same seed gives the
    /// same address on every run and every host, so a TAP that is recreated keeps its MAC (peers'
    /// ARP caches and static FDB entries stay right), while different seeds differ.
    pub fn derived(seed: &[u8]) -> MacAddr {
        let digest = ring::digest::digest(&ring::digest::SHA256, seed);
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&digest.as_ref()[..6]);
        // Locally administered (bit 1), unicast (bit 0 clear).
        mac[0] = (mac[0] | 0x02) & !0x01;
        MacAddr(mac)
    }

    /// The six octets of `bytes`, or `None` when it is not exactly six long.
    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }

    /// The address as the low 48 bits of a `u64` (a key that hashes and compares in one word).
    pub const fn to_u64(self) -> u64 {
        let [a, b, c, d, e, f] = self.0;
        u64::from_be_bytes([0, 0, a, b, c, d, e, f])
    }

    /// The inverse of [`to_u64`](Self::to_u64); the top 16 bits are ignored.
    pub const fn from_u64(value: u64) -> MacAddr {
        let [_, _, a, b, c, d, e, f] = value.to_be_bytes();
        MacAddr([a, b, c, d, e, f])
    }

    pub const fn is_broadcast(self) -> bool {
        self.to_u64() == 0xFFFF_FFFF_FFFF
    }

    /// Group bit set: broadcast and multicast both flood and must never be learned as a source.
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub const fn is_zero(self) -> bool {
        self.to_u64() == 0
    }

    /// A unicast address that can stand as a frame's source and be learned.
    pub const fn is_unicast(self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&LinkAddr(&self.0), f)
    }
}

/// A link-layer address of any length, shown as a MAC is (`02:42:ac:11:00:02`): a Linux cooked
/// capture (SLL) carries up to 8 address bytes. The one place such an address is formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddr<'a>(pub &'a [u8]);

impl fmt::Display for LinkAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, octet) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{octet:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, MacParseError> {
        let mut octets = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_string()))?;
            if part.is_empty() || part.len() > 2 {
                return Err(MacParseError(s.to_string()));
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_string()));
        }
        Ok(MacAddr(octets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let mac: MacAddr = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(mac.to_string(), "02:42:ac:11:00:02");
        assert!("02:42:ac:11:00".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:02:03".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:zz".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:".parse::<MacAddr>().is_err());
    }

    #[test]
    fn u64_and_slice_forms() {
        let mac = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(mac.to_u64(), 0x0242_ac11_0002);
        assert_eq!(MacAddr::from_u64(mac.to_u64()), mac);
        assert_eq!(MacAddr::from_slice(&mac.0), Some(mac));
        assert_eq!(MacAddr::from_slice(&mac.0[..5]), None);
        assert_eq!(LinkAddr(&[0xab, 0x01]).to_string(), "ab:01");
        assert_eq!(LinkAddr(&[]).to_string(), "");
    }

    #[test]
    fn classes() {
        assert!(MacAddr::BROADCAST.is_broadcast() && MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddr([0x33, 0x33, 0, 0, 0, 1]).is_multicast());
        assert!(MacAddr::ZERO.is_zero() && !MacAddr::ZERO.is_unicast());
        assert!(MacAddr([0x02, 0x42, 0xac, 0x11, 0, 2]).is_unicast());
    }
}
