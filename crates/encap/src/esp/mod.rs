//! Encrypted VXLAN as UDP-encapsulated ESP: RFC 3948 framing, RFC 4303 transport mode over the
//! VXLAN UDP packet, AES-256-GCM per RFC 4106 with 64-bit extended sequence numbers.
//!
//! ```text
//!  outer IP | UDP → 4500 | SPI | seq (low 32) | IV (8) |
//!            encrypted: [ UDP (VXLAN's, → 4789) | VXLAN | inner frame | pad 0-3 | pad len | 17 ] | ICV (16)
//! ```
//!
//! Sans-IO like the rest of the crate: no sockets, no clock, no randomness of its own. The caller
//! supplies the random SPI bits and initial sequence numbers (see [`keys`] for why both are
//! random), reserves headroom and tailroom around the payload, and maps each [`EspError`] to a
//! drop counter ([`EspError::drop_reason`]).
//!
//! - [`wire`]: the packet view (`new_checked`, then no accessor can panic) and the RFC 3948
//!   classification of a datagram on port 4500 (NAT keepalive, non-ESP marker, ESP).
//! - [`keys`]: network key, SPI layout and the HKDF key schedule.
//! - [`mod@establish`]: which SA the first packet of an unknown SPI belongs to.
//! - [`replay`]: the anti-replay window with ESN inference.
//! - [`sa`]: outbound and inbound SAs that seal and open in place.
//! - [`transport`]: the VXLAN UDP packet as ESP payload, built and sealed in place.
//!
//! How a data plane uses it:
//! - **Send**, per worker, peer and key epoch: `SealSa::new(key, SaId { epoch, spi:
//!   Spi::for_epoch(epoch, random), src: local VTEP, dst: peer VTEP }, initial_sequence(random))`.
//!   Per frame, with [`transport::HEADROOM`] in front and [`MAX_TAILROOM`] behind it:
//!   [`transport::seal_vxlan`] returns the range to send as the payload of a UDP datagram to the
//!   peer's endpoint, port [`DEFAULT_ESP_PORT`]. Segments of one TSO superframe have equal payload
//!   lengths, hence equal padding and equal sealed lengths, so they still go out as one
//!   UDP_SEGMENT send.
//! - **Receive**: [`classify`] the datagram (keepalives and non-ESP are not for the SA path);
//!   look the SPI up; an unknown one goes through [`establish()`] once; then
//!   [`OpenSa::open_in_place`] gives the plaintext range (UDP header, VXLAN, frame), and
//!   `decapsulate(&plaintext[8..])` the frame. Errors map to counters by
//!   [`EspError::drop_reason`]. Workers that share an inbound SA share its [`OpenKey`] and keep its
//!   [`ReplayWindow`] behind a lock: `sequence_of` + `check` under it, `decrypt_in_place` outside,
//!   `commit` under it again.

mod error;
pub mod establish;
pub mod keys;
pub mod replay;
pub mod sa;
pub mod transport;
pub mod wire;

pub use error::{EspDropReason, EspError};
pub use establish::establish;
pub use keys::{
    initial_sequence, KeyEpoch, KeyParseError, NetworkKey, SaId, SaKeyMaterial, Spi,
    NETWORK_KEY_LEN,
};
pub use replay::{ReplayWindow, WINDOW as REPLAY_WINDOW};
pub use sa::{OpenKey, OpenSa, Opened, SealSa, Sealed, MAX_PAYLOAD_LEN};
pub use wire::{classify, EspPacket, UdpEncapKind, ESP_HEADER_LEN, ICV_LEN, MAX_TAILROOM};

/// The IANA port for UDP-encapsulated ESP (RFC 3948), vxnet's default `--esp-port`.
pub const DEFAULT_ESP_PORT: u16 = 4500;

/// Bytes an encrypted packet adds over the same plain VXLAN packet at most: outer UDP (8; the
/// VXLAN UDP header moves inside), ESP header and IV (16), padding and trailer (2-5), ICV (16).
/// The TAP MTU of an encrypted network is the plain one less this.
pub const MAX_OVERHEAD: usize = crate::wire::UDP_HEADER_LEN + ESP_HEADER_LEN + MAX_TAILROOM;
