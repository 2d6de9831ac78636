use thiserror::Error;

/// Why an ESP packet could not be sealed or was not accepted. Every receive-side variant is a drop
/// reason of its own, so the data plane can count bad ICVs, unknown SPIs and replays separately
/// (see [`EspError::drop_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EspError {
    #[error("ESP packet truncated: {required} bytes required, {actual} present")]
    Truncated { required: usize, actual: usize },
    #[error("ESP ciphertext of {len} bytes does not end on a 4-byte boundary (RFC 4303 §2.4)")]
    Misaligned { len: usize },
    #[error("SPI {spi} is reserved (RFC 4303 §2.1: 1-255 are IANA's, 0 is the non-ESP marker)")]
    ReservedSpi { spi: u32 },
    #[error("no security association for SPI {spi:#010x}")]
    UnknownSpi { spi: u32 },
    #[error("sequence number {seq} was already received (replay)")]
    Replayed { seq: u64 },
    #[error("sequence number {seq} is older than the anti-replay window")]
    TooOld { seq: u64 },
    #[error("sequence number {seq} is more than 2^32 ahead of the anti-replay window (top {top}): implausible for the sender, refused rather than moving the window")]
    BeyondWindow { seq: u64, top: u64 },
    #[error("integrity check value (ICV) does not verify")]
    BadIcv,
    #[error("ESP padding is malformed (pad length {pad_len})")]
    BadPadding { pad_len: u8 },
    #[error("ESP next header {next_header} is not UDP (17)")]
    BadNextHeader { next_header: u8 },
    #[error("{needed} bytes of headroom needed in front of the payload, {available} available")]
    NoHeadroom { needed: usize, available: usize },
    #[error("{needed} bytes of tailroom needed behind the payload, {available} available")]
    NoTailroom { needed: usize, available: usize },
    #[error("payload range {start}..{end} does not lie within the {len}-byte buffer")]
    BadRange {
        start: usize,
        end: usize,
        len: usize,
    },
    #[error("ESP payload of {len} bytes exceeds the {limit}-byte limit of a UDP datagram")]
    TooLong { len: usize, limit: usize },
    #[error("the sequence number space of SPI {spi:#010x} is exhausted; a new SA is needed")]
    SequenceExhausted { spi: u32 },
}

/// The counter an [`EspError`] on receive belongs to: the drop reasons, kept few so that
/// `vxnet stats` stays readable; the error itself says the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EspDropReason {
    /// Too short, misaligned, reserved SPI, bad padding or next header: not a well-formed packet.
    Malformed,
    UnknownSpi,
    /// Duplicate or older than the window.
    Replay,
    /// Forged, corrupted, or sealed under another key.
    Auth,
    /// Implausibly far ahead of the window (a key holder jumping another sender's SA).
    BeyondWindow,
}

impl EspError {
    pub const fn drop_reason(&self) -> EspDropReason {
        match self {
            EspError::UnknownSpi { .. } => EspDropReason::UnknownSpi,
            EspError::Replayed { .. } | EspError::TooOld { .. } => EspDropReason::Replay,
            EspError::BadIcv => EspDropReason::Auth,
            EspError::BeyondWindow { .. } => EspDropReason::BeyondWindow,
            _ => EspDropReason::Malformed,
        }
    }
}
