//! Security associations: sealing and opening ESP packets in place with AES-256-GCM (RFC 4106),
//! 64-bit extended sequence numbers (RFC 4303 §2.2.1) and the anti-replay window.
//!
//! Workers: each worker of an engine owns its own outbound SAs (one per peer and key epoch, with a
//! SPI of its own), as RFC 9611 does for per-CPU SAs. A shared atomic counter would also keep
//! sequence numbers unique, but two workers taking numbers from one counter put them on the wire
//! out of order by up to a whole send batch each (a TSO superframe is ~45 segments, a batch many
//! of those), and a worker that is descheduled for a few milliseconds on a busy 2-core host falls
//! more than any replay window behind the other: its packets would be dropped as too old. With one
//! SA per worker each SA's stream is in order as sent, `seal_in_place` needs no atomic, and the
//! receiver keeps one window per worker-SA. The cost is a few more SAs per peer.

use std::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::esp::keys::{NetworkKey, SaId, SaKeyMaterial};
use crate::esp::replay::ReplayWindow;
use crate::esp::wire::{
    pad_len, read_trailer, write_trailer, EspPacket, ESP_HEADER_LEN, ICV_LEN, MAX_TAILROOM,
    NEXT_HEADER_UDP, TRAILER_LEN,
};
use crate::esp::EspError;

/// The largest payload whose ESP packet still fits a UDP datagram over IPv4 (65535 - 20 - 8 bytes
/// of UDP payload, less ESP's header and largest trailer).
pub const MAX_PAYLOAD_LEN: usize = 65_507 - ESP_HEADER_LEN - MAX_TAILROOM;

/// The AES-GCM key of one SA with its salt, shared by the sealing and the opening side.
struct GcmKey {
    key: LessSafeKey,
    salt: [u8; 4],
}

impl GcmKey {
    fn new(material: &SaKeyMaterial) -> Self {
        // Infallible: the key is always 32 bytes, the length AES-256-GCM takes.
        let unbound = UnboundKey::new(&aead::AES_256_GCM, material.key())
            .unwrap_or_else(|_| unreachable!("AES-256 key is 32 bytes"));
        GcmKey {
            key: LessSafeKey::new(unbound),
            salt: material.salt(),
        }
    }

    /// RFC 4106 §4: nonce = salt ‖ IV.
    fn nonce(&self, iv: u64) -> Nonce {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&self.salt);
        nonce[4..].copy_from_slice(&iv.to_be_bytes());
        Nonce::assume_unique_for_key(nonce)
    }
}

/// RFC 4106 §5 with extended sequence numbers: SPI ‖ sequence high ‖ sequence low.
fn aad(spi: u32, seq: u64) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..4].copy_from_slice(&spi.to_be_bytes());
    aad[4..].copy_from_slice(&seq.to_be_bytes());
    aad
}

/// Where [`SealSa::seal_in_place`] put the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The ESP packet, SPI to ICV, within the buffer: the UDP payload to send to port 4500.
    pub packet: Range<usize>,
    pub seq: u64,
}

/// An outbound SA: seals with a strictly increasing sequence number. Owned by one worker.
pub struct SealSa {
    id: SaId,
    material: SaKeyMaterial,
    gcm: GcmKey,
    next_seq: u64,
}

impl std::fmt::Debug for SealSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealSa")
            .field("id", &self.id)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl SealSa {
    /// `initial_seq` is where this SA's counter starts; vxnet's senders draw it at random
    /// ([`initial_sequence`](crate::esp::initial_sequence)) so that a restart that happens to
    /// redraw its SPI still uses fresh nonces. It must not be 0.
    pub fn new(network: &NetworkKey, id: SaId, initial_seq: u64) -> Self {
        let material = network.derive(&id);
        SealSa {
            id,
            gcm: GcmKey::new(&material),
            material,
            next_seq: initial_seq.max(1),
        }
    }

    pub const fn id(&self) -> &SaId {
        &self.id
    }

    /// The sequence number the next packet gets.
    pub const fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// For `vxnet sa show --keys` and Wireshark.
    pub const fn key_material(&self) -> &SaKeyMaterial {
        &self.material
    }

    /// Encrypts `buf[payload]` in place and frames it as ESP: header (16 bytes) into the headroom
    /// in front of the payload, trailer and ICV ([`MAX_TAILROOM`] bytes
    /// at most) into the tailroom behind it. The payload is what follows the outer UDP header of a
    /// plain VXLAN packet, starting at its own UDP header: transport mode over the VXLAN UDP
    /// packet, next header 17. Nothing is allocated; the payload never moves.
    pub fn seal_in_place(
        &mut self,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Result<Sealed, EspError> {
        let Some(start) = payload.start.checked_sub(ESP_HEADER_LEN) else {
            return Err(EspError::NoHeadroom {
                needed: ESP_HEADER_LEN,
                available: payload.start,
            });
        };
        if payload.start > payload.end || payload.end > buf.len() {
            return Err(EspError::BadRange {
                start: payload.start,
                end: payload.end,
                len: buf.len(),
            });
        }
        let payload_len = payload.end - payload.start;
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(EspError::TooLong {
                len: payload_len,
                limit: MAX_PAYLOAD_LEN,
            });
        }
        let tailroom = pad_len(payload_len) + TRAILER_LEN + ICV_LEN;
        let available = buf.len() - payload.end;
        if available < tailroom {
            return Err(EspError::NoTailroom {
                needed: tailroom,
                available,
            });
        }
        let trailer_end = payload.end + tailroom - ICV_LEN;
        let end = payload.end + tailroom;
        let seq = self.next_seq;
        // Consumed before use, so no failure below can ever hand the same number out twice.
        self.next_seq = seq.checked_add(1).ok_or(EspError::SequenceExhausted {
            spi: self.id.spi.get(),
        })?;
        let spi = self.id.spi.get();
        {
            let mut header = EspPacket::new_unchecked(&mut buf[start..payload.start]);
            header.set_spi(spi);
            header.set_sequence_low(seq as u32);
            header.set_iv(seq);
        }
        write_trailer(&mut buf[payload.end..trailer_end], NEXT_HEADER_UDP);
        let tag = self
            .gcm
            .key
            .seal_in_place_separate_tag(
                self.gcm.nonce(seq),
                Aad::from(aad(spi, seq)),
                &mut buf[payload.start..trailer_end],
            )
            // ring refuses only inputs beyond GCM's 64 GiB limit, far above MAX_PAYLOAD_LEN.
            .map_err(|_| EspError::TooLong {
                len: payload_len,
                limit: MAX_PAYLOAD_LEN,
            })?;
        buf[trailer_end..end].copy_from_slice(tag.as_ref());
        Ok(Sealed {
            packet: start..end,
            seq,
        })
    }
}

/// What [`OpenSa::open_in_place`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The full 64-bit sequence number the packet authenticated with.
    pub seq: u64,
    /// The decrypted payload (the VXLAN packet's UDP header, VXLAN header and inner frame) within
    /// the buffer given to `open_in_place`.
    pub payload: Range<usize>,
}

/// The decrypting half of an inbound SA, without its replay state: immutable, so several receive
/// workers may share one behind a lock-protected [`ReplayWindow`].
pub struct OpenKey {
    id: SaId,
    material: SaKeyMaterial,
    gcm: GcmKey,
}

impl std::fmt::Debug for OpenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl OpenKey {
    pub fn new(network: &NetworkKey, id: SaId) -> Self {
        let material = network.derive(&id);
        OpenKey {
            id,
            gcm: GcmKey::new(&material),
            material,
        }
    }

    /// An inbound key from key material given as such (`vxnet explain --keys`: what `vxnet sa
    /// show --keys` or Wireshark's ESP SA table holds), not derived from a network key.
    pub fn from_material(id: SaId, material: SaKeyMaterial) -> Self {
        OpenKey {
            id,
            gcm: GcmKey::new(&material),
            material,
        }
    }

    pub const fn id(&self) -> &SaId {
        &self.id
    }

    pub const fn key_material(&self) -> &SaKeyMaterial {
        &self.material
    }

    /// The full sequence number of `packet`. vxnet's senders put it in the IV, so when the IV's low
    /// half matches the sequence field the IV is taken: it lets a receiver that restarted or meets
    /// an SA beyond 2^32 pick it up, and names a packet that is older than the window as such.
    /// Otherwise (a sender with other IVs) RFC 4303 Appendix A2 infers the high half from the
    /// window. The high half is authenticated (AAD) and the IV is part of the nonce, so a forged
    /// or wrong guess only fails the ICV.
    pub fn sequence_of(&self, packet: &[u8], window: &ReplayWindow) -> Result<u64, EspError> {
        let p = EspPacket::new_checked(packet)?;
        if p.spi() != self.id.spi.get() {
            return Err(EspError::UnknownSpi { spi: p.spi() });
        }
        let low = p.sequence_low();
        let iv = p.iv();
        if iv as u32 == low && iv != 0 {
            return Ok(iv);
        }
        window.infer(low).ok_or(EspError::TooOld {
            seq: u64::from(low),
        })
    }

    /// Verifies and decrypts `packet` (SPI to ICV) in place as sequence number `seq`, and checks
    /// its trailer. Returns the payload's range within `packet`. Touches no replay state.
    pub fn decrypt_in_place(&self, seq: u64, packet: &mut [u8]) -> Result<Range<usize>, EspError> {
        let mut p = EspPacket::new_checked(&mut *packet)?;
        let ciphertext_len = p.ciphertext_len();
        if ciphertext_len % 4 != 0 {
            return Err(EspError::Misaligned {
                len: ciphertext_len,
            });
        }
        let spi = p.spi();
        let nonce = self.gcm.nonce(p.iv());
        let plaintext = self
            .gcm
            .key
            .open_in_place(nonce, Aad::from(aad(spi, seq)), p.encrypted_mut())
            .map_err(|_| EspError::BadIcv)?;
        let payload_len = read_trailer(plaintext)?;
        Ok(ESP_HEADER_LEN..ESP_HEADER_LEN + payload_len)
    }
}

/// An inbound SA with its anti-replay window, for a receiver that owns it alone.
#[derive(Debug)]
pub struct OpenSa {
    key: OpenKey,
    window: ReplayWindow,
}

impl OpenSa {
    pub fn new(network: &NetworkKey, id: SaId) -> Self {
        Self::from_key(OpenKey::new(network, id))
    }

    /// An SA with a fresh window around an already derived key.
    pub fn from_key(key: OpenKey) -> Self {
        OpenSa {
            key,
            window: ReplayWindow::new(),
        }
    }

    pub const fn key(&self) -> &OpenKey {
        &self.key
    }

    pub const fn window(&self) -> &ReplayWindow {
        &self.window
    }

    /// The key and the window apart, for receivers whose workers share the key and keep the
    /// window behind a lock (see the module documentation of `esp`).
    pub fn into_parts(self) -> (OpenKey, ReplayWindow) {
        (self.key, self.window)
    }

    /// Checks the sequence number against the window, then verifies and decrypts in place, then
    /// records the sequence number: RFC 4303 §3.4.3's order, so neither a replay costs a
    /// decryption nor a forgery moves the window.
    pub fn open_in_place(&mut self, packet: &mut [u8]) -> Result<Opened, EspError> {
        let seq = self.key.sequence_of(packet, &self.window)?;
        self.window.check(seq)?;
        let payload = self.key.decrypt_in_place(seq, packet)?;
        self.window.commit(seq)?;
        Ok(Opened { seq, payload })
    }
}
