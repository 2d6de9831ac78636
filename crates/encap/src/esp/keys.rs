//! The key schedule: from one 32-byte network key to the AES-256-GCM key and salt of every SA,
//! such that no (key, nonce) pair is ever used twice.
//!
//! ```text
//! PRK          = HKDF-Extract(salt = "vxnet esp-in-udp v1", IKM = network key)     (RFC 5869)
//! key ‖ salt   = HKDF-Expand(PRK, info = epoch ‖ SPI ‖ src VTEP ‖ dst VTEP, 36 bytes)
//! nonce        = salt ‖ IV,  IV = the SA's 64-bit sequence number                   (RFC 4106)
//! ```
//!
//! - **epoch**: the network key's generation (0 for a static key file; the cluster's rotation
//!   counter). Its low 2 bits are the top 2 bits of the SPI, so a receiver holding a ring of up to
//!   three keys picks the right one without trying them all.
//! - **SPI**: the other 30 bits are drawn at random by each sender *worker* at every start (and at
//!   every rotation), so a restart or a second worker gets a new SA and a fresh replay window at
//!   the receiver instead of being refused as a replay of its predecessor.
//! - **src, dst VTEP**: the addresses the two VTEPs are configured and known by (`--local`, a
//!   peer's address in the configuration or the cluster record), not the outer addresses a packet
//!   happens to arrive from: behind a NAT these differ, and the SA must survive that. The
//!   destination binds a packet to one receiver (a packet sealed for B replayed to C, or reflected
//!   back to its sender, fails the ICV there); the source tells the receiver which peer an
//!   authenticated packet came from, which is what lets its endpoint roam.
//! - **sequence**: each SA's counter starts at a random value in `[1, 2^62]`, not at 1, and only
//!   counts up (64 bits: it cannot wrap). The IV carries it in full.
//!
//! Why this never repeats a (key, nonce) pair: HKDF-Expand is a PRF, so SAs that differ in any of
//! epoch, SPI, source or destination get independent keys. The workers of one engine use
//! different SPIs (an engine draws again on a duplicate among its own workers); two senders differ
//! in their source address; rotations differ in the epoch. What is left is one sender restarting
//! within one epoch and drawing the same 30-bit SPI again (2^-30 per pair of starts): its counter
//! then starts at an independent random point in a 2^62 range, so even a sender that sends 2^40
//! packets per start overlaps its predecessor's nonces with probability about 2^-51 per pair of
//! starts. No state has to survive a restart, and no clock is trusted.
//!
//! Everything on the wire stays standard RFC 4303/4106: a receiver that is told an SA's key
//! material (`vxnet sa show --keys`, Wireshark's ESP SA table) needs nothing else to decrypt it.

use std::net::{IpAddr, Ipv6Addr};

use ring::hkdf;
use thiserror::Error;

use crate::esp::wire::MIN_SPI;

/// Length of a network key: the secret every VTEP of one network shares.
pub const NETWORK_KEY_LEN: usize = 32;
/// AES-256 key and the 4-byte RFC 4106 salt.
pub const SA_KEY_MATERIAL_LEN: usize = 36;
/// The first sequence number of an SA lies in `[1, MAX_INITIAL_SEQUENCE]`, leaving 2^62 numbers
/// (millennia at any packet rate) before the counter could run out.
pub const MAX_INITIAL_SEQUENCE: u64 = 1 << 62;

const HKDF_SALT: &[u8] = b"vxnet esp-in-udp v1";

/// Why a network key could not be read from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyParseError {
    #[error("network key must be {expected} hex digits (32 bytes), found {found} characters")]
    WrongLength { expected: usize, found: usize },
    #[error("network key has a non-hex character at position {position}")]
    NotHex { position: usize },
}

/// The 32-byte secret of one network. Its text form is 64 hex digits (what `vxnet key generate`
/// prints and a key file holds). `Debug` never shows it.
#[derive(Clone)]
pub struct NetworkKey {
    bytes: [u8; NETWORK_KEY_LEN],
    prk: hkdf::Prk,
}

impl std::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkKey(…)")
    }
}

impl PartialEq for NetworkKey {
    fn eq(&self, other: &Self) -> bool {
        // Without an early exit, so a comparison does not tell how many leading bytes matched.
        let diff = self
            .bytes
            .iter()
            .zip(&other.bytes)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

impl NetworkKey {
    pub fn from_bytes(bytes: [u8; NETWORK_KEY_LEN]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&bytes);
        NetworkKey { bytes, prk }
    }

    /// Parses 64 hex digits; whitespace around them (a trailing newline) is ignored.
    pub fn from_hex(text: &str) -> Result<Self, KeyParseError> {
        let text = text.trim();
        let expected = NETWORK_KEY_LEN * 2;
        if text.len() != expected {
            return Err(KeyParseError::WrongLength {
                expected,
                found: text.chars().count(),
            });
        }
        let mut bytes = [0u8; NETWORK_KEY_LEN];
        let digits = text.as_bytes();
        for (i, byte) in bytes.iter_mut().enumerate() {
            let hi = hex_value(digits[2 * i]).ok_or(KeyParseError::NotHex { position: 2 * i })?;
            let lo = hex_value(digits[2 * i + 1]).ok_or(KeyParseError::NotHex {
                position: 2 * i + 1,
            })?;
            *byte = (hi << 4) | lo;
        }
        Ok(Self::from_bytes(bytes))
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.bytes)
    }

    /// The key material of one SA (see the module documentation for the derivation).
    pub fn derive(&self, id: &SaId) -> SaKeyMaterial {
        let epoch = id.epoch.0.to_be_bytes();
        let spi = id.spi.get().to_be_bytes();
        let src = vtep_bytes(id.src);
        let dst = vtep_bytes(id.dst);
        let info: [&[u8]; 4] = [&epoch, &spi, &src, &dst];
        let mut bytes = [0u8; SA_KEY_MATERIAL_LEN];
        // Infallible: 36 bytes is far below HKDF-SHA256's 255 × 32-byte limit.
        if let Ok(okm) = self.prk.expand(&info, MaterialLen) {
            let _ = okm.fill(&mut bytes);
        }
        SaKeyMaterial { bytes }
    }
}

struct MaterialLen;

impl hkdf::KeyType for MaterialLen {
    fn len(&self) -> usize {
        SA_KEY_MATERIAL_LEN
    }
}

/// IPv4 addresses enter the derivation IPv4-mapped, so both families have one 16-byte form.
fn vtep_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The generation of a network key: 0 for a static key file, the rotation counter in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyEpoch(pub u32);

impl KeyEpoch {
    /// The 2 bits of the epoch an SPI carries.
    pub const fn tag(self) -> u8 {
        (self.0 & 0b11) as u8
    }
}

/// A Security Parameters Index: never 0 and never below 256 (RFC 4303 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Spi(u32);

impl Spi {
    pub const fn new(value: u32) -> Option<Spi> {
        if value >= MIN_SPI {
            Some(Spi(value))
        } else {
            None
        }
    }

    /// vxnet's SPI layout: the epoch's 2-bit tag on top, 30 bits from `random` below, nudged out
    /// of the reserved range 0-255 (which costs 256 of 2^30 values nothing measurable).
    pub const fn for_epoch(epoch: KeyEpoch, random: u32) -> Spi {
        let mut value = ((epoch.tag() as u32) << 30) | (random & 0x3FFF_FFFF);
        if value < MIN_SPI {
            value |= MIN_SPI;
        }
        Spi(value)
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    /// The epoch tag of an SPI laid out by [`Spi::for_epoch`].
    pub const fn epoch_tag(self) -> u8 {
        (self.0 >> 30) as u8
    }
}

impl std::fmt::Display for Spi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// Everything that names one SA, and so its key: one direction between two VTEPs, one key
/// generation, one sender start (the SPI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SaId {
    pub epoch: KeyEpoch,
    pub spi: Spi,
    /// The sending VTEP's configured address.
    pub src: IpAddr,
    /// The receiving VTEP's configured address.
    pub dst: IpAddr,
}

/// The RFC 4106 key material of one SA: the AES-256 key followed by the 4-byte salt, as
/// Wireshark's ESP SA table and `ip xfrm` take it for `rfc4106(gcm(aes))`.
#[derive(Clone, PartialEq, Eq)]
pub struct SaKeyMaterial {
    bytes: [u8; SA_KEY_MATERIAL_LEN],
}

impl std::fmt::Debug for SaKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SaKeyMaterial(…)")
    }
}

impl SaKeyMaterial {
    pub const fn from_bytes(bytes: [u8; SA_KEY_MATERIAL_LEN]) -> Self {
        SaKeyMaterial { bytes }
    }

    pub fn key(&self) -> &[u8] {
        &self.bytes[..32]
    }

    pub fn salt(&self) -> [u8; 4] {
        [
            self.bytes[32],
            self.bytes[33],
            self.bytes[34],
            self.bytes[35],
        ]
    }

    pub const fn as_bytes(&self) -> &[u8; SA_KEY_MATERIAL_LEN] {
        &self.bytes
    }

    /// `0x` and 72 hex digits: key then salt.
    pub fn to_hex(&self) -> String {
        format!("0x{}", to_hex(&self.bytes))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xF) as usize] as char);
    }
    out
}

/// Maps a random 64-bit value to a first sequence number in `[1, MAX_INITIAL_SEQUENCE]`.
pub const fn initial_sequence(random: u64) -> u64 {
    (random % MAX_INITIAL_SEQUENCE) + 1
}

/// The unspecified address, for SAs whose peer has no configured address yet (tests, examples).
pub const UNSPECIFIED_VTEP: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    fn id(epoch: u32, spi: u32, src: [u8; 4], dst: [u8; 4]) -> SaId {
        SaId {
            epoch: KeyEpoch(epoch),
            spi: Spi::for_epoch(KeyEpoch(epoch), spi),
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
        }
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let text = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n";
        let key = NetworkKey::from_hex(text).unwrap();
        assert_eq!(key.to_hex(), text.trim().to_lowercase());
        assert_eq!(
            NetworkKey::from_hex("abcd"),
            Err(KeyParseError::WrongLength {
                expected: 64,
                found: 4
            })
        );
        let mut bad = text.trim().to_string();
        bad.replace_range(10..11, "g");
        assert_eq!(
            NetworkKey::from_hex(&bad),
            Err(KeyParseError::NotHex { position: 10 })
        );
        assert_eq!(format!("{key:?}"), "NetworkKey(…)");
    }

    #[test]
    fn every_input_of_the_derivation_changes_the_key() {
        let key = NetworkKey::from_bytes([7; 32]);
        let base = id(1, 0x1234, [10, 0, 0, 1], [10, 0, 0, 2]);
        let variants = [
            base,
            id(2, 0x1234, [10, 0, 0, 1], [10, 0, 0, 2]),
            id(1, 0x1235, [10, 0, 0, 1], [10, 0, 0, 2]),
            id(1, 0x1234, [10, 0, 0, 3], [10, 0, 0, 2]),
            // The reverse direction.
            id(1, 0x1234, [10, 0, 0, 2], [10, 0, 0, 1]),
        ];
        let materials: HashSet<[u8; 36]> =
            variants.iter().map(|v| *key.derive(v).as_bytes()).collect();
        assert_eq!(materials.len(), variants.len());
        let other = NetworkKey::from_bytes([8; 32]);
        assert_ne!(other.derive(&base), key.derive(&base));
        // Deterministic: the receiver derives what the sender did.
        assert_eq!(key.derive(&base), key.derive(&base));
    }

    /// Pins the derivation, so an accidental change (which would break every mixed-version
    /// network) fails here. Computed independently with Python's hmac/hashlib (RFC 5869).
    #[test]
    fn derivation_matches_rfc_5869_computed_elsewhere() {
        let key = NetworkKey::from_bytes([0x42; 32]);
        let m = key.derive(&id(3, 0x0012_3456, [192, 0, 2, 1], [192, 0, 2, 2]));
        assert_eq!(m.to_hex(), EXPECTED_MATERIAL);
    }

    const EXPECTED_MATERIAL: &str =
        "0x291837b0c2ba7c637032581a2ee520d06895831bd8b62a160f18d5f768fb4bd0e93b7b44";

    #[test]
    fn spi_layout() {
        let spi = Spi::for_epoch(KeyEpoch(6), 0xFFFF_FFFF);
        assert_eq!(spi.get(), 0xBFFF_FFFF);
        assert_eq!(spi.epoch_tag(), 2);
        assert_eq!(Spi::for_epoch(KeyEpoch(0), 5).get(), 0x105);
        assert!(Spi::for_epoch(KeyEpoch(0), 0).get() >= MIN_SPI);
        assert_eq!(Spi::new(255), None);
        assert_eq!(Spi::new(256).map(Spi::get), Some(256));
    }

    #[test]
    fn initial_sequence_range() {
        assert_eq!(initial_sequence(0), 1);
        assert_eq!(
            initial_sequence(u64::MAX),
            u64::MAX % MAX_INITIAL_SEQUENCE + 1
        );
        assert!(initial_sequence(u64::MAX) <= MAX_INITIAL_SEQUENCE);
    }
}
