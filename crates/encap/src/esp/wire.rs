//! The ESP packet as it sits in a UDP datagram on port 4500 (RFC 3948 §2.1, RFC 4303 §2, RFC 4106
//! §3 for the 8-byte explicit IV and the 16-byte ICV):
//!
//! ```text
//!  0               1               2               3
//! |               Security Parameters Index (SPI)                 |
//! |              Sequence Number (low 32 bits of the ESN)         |
//! |              Initialization Vector (8 bytes, explicit)        |
//! |                                                               |
//! ~  encrypted: payload | padding 0-3 | pad length | next header  ~
//! |              Integrity Check Value (16 bytes)                 |
//! ```
//!
//! The high 32 bits of the extended sequence number are never sent (RFC 4303 §2.2.1): both ends
//! know them, and they enter the ICV through the AAD.

use crate::esp::EspError;

/// SPI, sequence number and IV: the bytes in front of the ciphertext.
pub const ESP_HEADER_LEN: usize = 16;
/// The AES-GCM tag (RFC 4106 with a 16-octet ICV).
pub const ICV_LEN: usize = 16;
/// Pad length and next header, the fixed part of the encrypted trailer.
pub const TRAILER_LEN: usize = 2;
/// Padding aligns pad length and next header to the end of a 4-byte word, so 0-3 bytes of it.
pub const MAX_PAD_LEN: usize = 3;
/// What [`seal_in_place`](crate::esp::SealSa::seal_in_place) needs behind the payload at most.
pub const MAX_TAILROOM: usize = MAX_PAD_LEN + TRAILER_LEN + ICV_LEN;
/// The smallest packet that can hold a header, a trailer and an ICV.
pub const MIN_PACKET_LEN: usize = ESP_HEADER_LEN + TRAILER_LEN + ICV_LEN;
/// ESP's next-header value for the VXLAN UDP packet it carries in transport mode.
pub const NEXT_HEADER_UDP: u8 = 17;
/// RFC 4303 §2.6: a dummy packet (traffic flow confidentiality) says "no next header".
pub const NEXT_HEADER_NONE: u8 = 59;
/// SPIs 1-255 are reserved by IANA; 0 is never an SPI (it is the RFC 3948 non-ESP marker).
pub const MIN_SPI: u32 = 256;

pub mod field {
    use std::ops::{Range, RangeFrom};
    pub const SPI: Range<usize> = 0..4;
    pub const SEQUENCE: Range<usize> = 4..8;
    pub const IV: Range<usize> = 8..16;
    /// Ciphertext followed by the ICV.
    pub const ENCRYPTED: RangeFrom<usize> = 16..;
}

/// The bytes of ESP framing a payload of `payload_len` bytes adds, trailer and ICV included.
pub const fn overhead(payload_len: usize) -> usize {
    ESP_HEADER_LEN + pad_len(payload_len) + TRAILER_LEN + ICV_LEN
}

/// Padding after `payload_len` bytes so that pad length and next header end on a 4-byte boundary
/// (header and IV are 16 bytes, so counting from the payload start is enough).
pub const fn pad_len(payload_len: usize) -> usize {
    (4 - (payload_len + TRAILER_LEN) % 4) % 4
}

/// What a UDP datagram on the ESP-in-UDP port is (RFC 3948 §2.2, §2.3, §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpEncapKind {
    /// A single 0xFF byte a NAT keeps its mapping for; no content.
    NatKeepalive,
    /// The first 4 bytes are zero: IKE (or another non-ESP protocol) behind the non-ESP marker.
    NonEsp,
    /// An ESP packet; its length has been checked against [`MIN_PACKET_LEN`].
    Esp,
}

/// Classifies the payload of a datagram received on the ESP-in-UDP port.
pub fn classify(payload: &[u8]) -> Result<UdpEncapKind, EspError> {
    match payload {
        [0xFF] => Ok(UdpEncapKind::NatKeepalive),
        [0, 0, 0, 0, ..] => Ok(UdpEncapKind::NonEsp),
        _ => {
            EspPacket::new_checked(payload)?;
            Ok(UdpEncapKind::Esp)
        }
    }
}

/// A view of an ESP packet: SPI up to and including the ICV.
#[derive(Debug, Clone)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// Wraps without checking; only [`check_len`](Self::check_len) makes accessors safe to call.
    pub const fn new_unchecked(buffer: T) -> Self {
        EspPacket { buffer }
    }

    /// Checks the length and that the SPI is not one of the reserved values (0 would be the
    /// non-ESP marker, 1-255 are IANA's).
    pub fn new_checked(buffer: T) -> Result<Self, EspError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        if packet.spi() < MIN_SPI {
            return Err(EspError::ReservedSpi { spi: packet.spi() });
        }
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<(), EspError> {
        let actual = self.buffer.as_ref().len();
        if actual < MIN_PACKET_LEN {
            return Err(EspError::Truncated {
                required: MIN_PACKET_LEN,
                actual,
            });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn spi(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SPI])
    }

    /// The low 32 bits of the extended sequence number.
    pub fn sequence_low(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SEQUENCE])
    }

    /// The explicit IV. vxnet's senders put the full 64-bit sequence number here, which lets a
    /// receiver that meets an SA mid-stream learn the high half; other senders may use any unique
    /// value, so receivers treat it only as a hint.
    pub fn iv(&self) -> u64 {
        let b = &self.buffer.as_ref()[field::IV];
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// Length of the encrypted part (payload, padding, pad length, next header).
    pub fn ciphertext_len(&self) -> usize {
        self.buffer.as_ref().len() - ESP_HEADER_LEN - ICV_LEN
    }

    pub fn ciphertext(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[ESP_HEADER_LEN..b.len() - ICV_LEN]
    }

    pub fn icv(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - ICV_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EspPacket<T> {
    pub fn set_spi(&mut self, spi: u32) {
        self.buffer.as_mut()[field::SPI].copy_from_slice(&spi.to_be_bytes());
    }

    pub fn set_sequence_low(&mut self, seq: u32) {
        self.buffer.as_mut()[field::SEQUENCE].copy_from_slice(&seq.to_be_bytes());
    }

    pub fn set_iv(&mut self, iv: u64) {
        self.buffer.as_mut()[field::IV].copy_from_slice(&iv.to_be_bytes());
    }

    /// Ciphertext and ICV, as the AEAD opens them in place.
    pub fn encrypted_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::ENCRYPTED]
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Writes the RFC 4303 default padding (1, 2, 3, …), pad length and next header behind a payload
/// of `payload_len` bytes; `trailer` must hold exactly `pad_len(payload_len) + TRAILER_LEN` bytes.
pub(crate) fn write_trailer(trailer: &mut [u8], next_header: u8) {
    let pad = trailer.len() - TRAILER_LEN;
    for (i, b) in trailer[..pad].iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    trailer[pad] = pad as u8;
    trailer[pad + 1] = next_header;
}

/// Reads the trailer at the end of a decrypted ciphertext and returns the payload length.
/// The padding must be RFC 4303's default (1, 2, 3, …): anything else means the sender is not
/// what it claims, or the plaintext is not what was sealed.
pub(crate) fn read_trailer(plaintext: &[u8]) -> Result<usize, EspError> {
    let len = plaintext.len();
    if len < TRAILER_LEN {
        return Err(EspError::Truncated {
            required: MIN_PACKET_LEN,
            actual: len + ESP_HEADER_LEN + ICV_LEN,
        });
    }
    let next_header = plaintext[len - 1];
    let pad_len = plaintext[len - 2];
    let Some(payload_len) = (len - TRAILER_LEN).checked_sub(pad_len as usize) else {
        return Err(EspError::BadPadding { pad_len });
    };
    let padding = &plaintext[payload_len..len - TRAILER_LEN];
    if padding.iter().zip(1u8..).any(|(&b, want)| b != want) {
        return Err(EspError::BadPadding { pad_len });
    }
    if next_header != NEXT_HEADER_UDP {
        return Err(EspError::BadNextHeader { next_header });
    }
    Ok(payload_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_follows_rfc_3948() {
        assert_eq!(classify(&[0xFF]), Ok(UdpEncapKind::NatKeepalive));
        assert_eq!(classify(&[0, 0, 0, 0, 1, 2]), Ok(UdpEncapKind::NonEsp));
        assert_eq!(classify(&[0, 0, 0, 0]), Ok(UdpEncapKind::NonEsp));
        let mut esp = [0u8; MIN_PACKET_LEN];
        esp[..4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        assert_eq!(classify(&esp), Ok(UdpEncapKind::Esp));
        esp[..4].copy_from_slice(&255u32.to_be_bytes());
        assert_eq!(classify(&esp), Err(EspError::ReservedSpi { spi: 255 }));
        // A 0xFF byte followed by more is not a keepalive, and too short for ESP.
        assert_eq!(
            classify(&[0xFF, 0]),
            Err(EspError::Truncated {
                required: MIN_PACKET_LEN,
                actual: 2
            })
        );
        assert!(matches!(classify(&[]), Err(EspError::Truncated { .. })));
    }

    #[test]
    fn every_short_length_is_reported_exactly() {
        for len in 0..MIN_PACKET_LEN {
            let bytes = vec![0x11; len];
            assert_eq!(
                EspPacket::new_checked(&bytes[..]).err(),
                Some(EspError::Truncated {
                    required: MIN_PACKET_LEN,
                    actual: len
                })
            );
        }
    }

    #[test]
    fn accessors_read_the_rfc_layout() {
        let mut bytes = [0u8; 40];
        let mut p = EspPacket::new_unchecked(&mut bytes[..]);
        p.set_spi(0xA1B2_C3D4);
        p.set_sequence_low(7);
        p.set_iv(0x0102_0304_0506_0708);
        assert_eq!(
            &bytes[..16],
            &[0xA1, 0xB2, 0xC3, 0xD4, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        let p = EspPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (p.spi(), p.sequence_low(), p.iv()),
            (0xA1B2_C3D4, 7, 0x0102_0304_0506_0708)
        );
        assert_eq!(p.ciphertext_len(), 8);
        assert_eq!(p.icv().len(), ICV_LEN);
    }

    #[test]
    fn padding_aligns_and_round_trips() {
        for payload_len in 0..12 {
            let pad = pad_len(payload_len);
            assert!(pad <= MAX_PAD_LEN);
            assert_eq!((payload_len + pad + TRAILER_LEN) % 4, 0);
            let mut pt = vec![0xEEu8; payload_len + pad + TRAILER_LEN];
            write_trailer(&mut pt[payload_len..], NEXT_HEADER_UDP);
            assert_eq!(read_trailer(&pt), Ok(payload_len));
        }
    }

    #[test]
    fn bad_trailers_are_refused() {
        assert_eq!(
            read_trailer(&[1, 2, 3, 17]),
            Err(EspError::BadPadding { pad_len: 3 })
        );
        assert_eq!(
            read_trailer(&[9, 2, 1, 17]),
            Err(EspError::BadPadding { pad_len: 1 })
        );
        assert_eq!(
            read_trailer(&[0, 0, 0, 0, 6]),
            Err(EspError::BadNextHeader { next_header: 6 })
        );
        assert_eq!(
            read_trailer(&[0, NEXT_HEADER_NONE]),
            Err(EspError::BadNextHeader { next_header: 59 })
        );
    }
}
