//! The IPv4 header (RFC 791), without options on emit; options are accepted and skipped on parse.

use std::net::Ipv4Addr;

use crate::checksum::{self, Sum};
use crate::error::{DecapError, Layer};

use super::be::{be16, set_be16};

/// IPv4 header without options (IHL 5).
pub const IPV4_HEADER_LEN: usize = 20;
/// IPv4 header with the most options the IHL can describe (15 words).
pub const IPV4_MAX_HEADER_LEN: usize = 60;
const FLAG_DONT_FRAGMENT: u16 = 0x4000;
const FLAG_MORE_FRAGMENTS: u16 = 0x2000;
const FRAGMENT_OFFSET_MASK: u16 = 0x1FFF;

pub mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
    /// Source and destination together: what a pseudo-header sums and a flow is named by.
    pub const ADDRS: Range<usize> = SRC_ADDR.start..DST_ADDR.end;
}

header_view!(Ipv4Packet, DecapError);

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks the fixed header, the version, the IHL and the total length against the buffer, so
    /// that `header_len()` and `total_len()` can be used to slice without panicking.
    pub fn check_len(&self) -> Result<(), DecapError> {
        let actual = self.buffer.as_ref().len();
        if actual < IPV4_HEADER_LEN {
            return Err(DecapError::Truncated {
                layer: Layer::OuterIpv4,
                required: IPV4_HEADER_LEN,
                actual,
            });
        }
        if self.version() != 4 {
            return Err(DecapError::BadIpv4Header {
                reason: "version is not 4",
            });
        }
        let header_len = self.header_len();
        if header_len < IPV4_HEADER_LEN {
            return Err(DecapError::BadIpv4Header {
                reason: "IHL below 5",
            });
        }
        let total_len = self.total_len() as usize;
        if actual < header_len || actual < total_len {
            return Err(DecapError::Truncated {
                layer: Layer::OuterIpv4,
                required: header_len.max(total_len),
                actual,
            });
        }
        if total_len < header_len {
            return Err(DecapError::BadIpv4Header {
                reason: "total length shorter than the header",
            });
        }
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn word(&self, field: std::ops::Range<usize>) -> u16 {
        be16(self.bytes(), field.start).unwrap_or(0)
    }

    pub fn version(&self) -> u8 {
        self.bytes()[field::VER_IHL] >> 4
    }

    pub fn header_len(&self) -> usize {
        ((self.bytes()[field::VER_IHL] & 0x0F) as usize) * 4
    }

    pub fn dscp_ecn(&self) -> u8 {
        self.bytes()[field::DSCP_ECN]
    }

    pub fn total_len(&self) -> u16 {
        self.word(field::TOTAL_LEN)
    }

    pub fn ident(&self) -> u16 {
        self.word(field::IDENT)
    }

    pub fn dont_fragment(&self) -> bool {
        self.word(field::FLAGS_FRAG) & FLAG_DONT_FRAGMENT != 0
    }

    pub fn is_fragment(&self) -> bool {
        let flags_frag = self.word(field::FLAGS_FRAG);
        flags_frag & FLAG_MORE_FRAGMENTS != 0 || flags_frag & FRAGMENT_OFFSET_MASK != 0
    }

    pub fn ttl(&self) -> u8 {
        self.bytes()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.bytes()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        self.word(field::CHECKSUM)
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.bytes()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.bytes()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(Sum::new().add_bytes(&self.bytes()[..self.header_len()]))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The payload as delimited by the total length (trailing link padding excluded).
    pub fn payload(&self) -> &'a [u8] {
        let buffer = self.buffer.as_ref();
        &buffer[self.header_len()..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn set_word(&mut self, field: std::ops::Range<usize>, value: u16) {
        set_be16(self.buffer.as_mut(), field.start, value);
    }

    pub fn set_total_len(&mut self, len: u16) {
        self.set_word(field::TOTAL_LEN, len);
    }

    pub fn set_ident(&mut self, ident: u16) {
        self.set_word(field::IDENT, ident);
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        self.set_word(field::CHECKSUM, checksum);
    }

    /// Inlined: the encapsulation path emits a header and fills its checksum per packet.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_word(field::CHECKSUM, 0);
        let header_len = self.header_len();
        let sum = checksum::checksum(&self.buffer.as_ref()[..header_len]);
        self.set_word(field::CHECKSUM, sum);
    }
}

/// The fields of an outer IPv4 header that vxnet sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub dscp_ecn: u8,
    pub ident: u16,
    pub dont_fragment: bool,
}

impl Ipv4Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Self {
        Ipv4Repr {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            dscp_ecn: packet.dscp_ecn(),
            ident: packet.ident(),
            dont_fragment: packet.dont_fragment(),
        }
    }

    /// Writes a 20-byte header for a payload of `payload_len` bytes, checksum included.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>, payload_len: u16) {
        let b = packet.buffer.as_mut();
        b[field::VER_IHL] = 0x45;
        b[field::DSCP_ECN] = self.dscp_ecn;
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol;
        b[field::SRC_ADDR].copy_from_slice(&self.src.octets());
        b[field::DST_ADDR].copy_from_slice(&self.dst.octets());
        packet.set_total_len(IPV4_HEADER_LEN as u16 + payload_len);
        packet.set_ident(self.ident);
        let flags = if self.dont_fragment {
            FLAG_DONT_FRAGMENT
        } else {
            0
        };
        packet.set_word(field::FLAGS_FRAG, flags);
        packet.fill_checksum();
    }
}
