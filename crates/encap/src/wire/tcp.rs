//! The TCP header (RFC 9293), as the offload code reads and rewrites it.
//!
//! vxnet never builds a TCP segment of its own: it cuts a stack's superframe into segments and
//! merges segments back, changing a few fields in place. So there is a view and no `Repr`. TCP only
//! ever appears inside an inner frame, hence [`OffloadError`] and [`Layer::InnerTcp`].

use crate::error::{Layer, OffloadError};

use super::be::{be16, be32, set_be16, set_be32};

/// TCP header without options (data offset 5).
pub const TCP_HEADER_LEN: usize = 20;
/// TCP header with the most options the data offset can describe (15 words).
pub const TCP_MAX_HEADER_LEN: usize = 60;

pub mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    /// Data offset in the high nibble (in 32-bit words).
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
    /// Options run from here to the data offset.
    pub const OPTIONS: usize = 20;
    /// Source and destination port together (with the IP addresses, what names a flow).
    pub const PORTS: Range<usize> = SRC_PORT.start..DST_PORT.end;
}

/// The flag bits of [`field::FLAGS`].
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

header_view!(
    /// A view of a TCP header and what follows it. Before `check_len`, a field past the end of
    /// the buffer reads as zero.
    TcpPacket,
    OffloadError
);

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Checks the fixed header, a data offset of at least 5 and the options against the buffer,
    /// so that `header_len()` can be used to slice without panicking.
    pub fn check_len(&self) -> Result<(), OffloadError> {
        let actual = self.bytes().len();
        if actual < TCP_HEADER_LEN {
            return Err(OffloadError::Truncated {
                layer: Layer::InnerTcp,
                required: TCP_HEADER_LEN,
                actual,
            });
        }
        let header_len = self.header_len();
        if header_len < TCP_HEADER_LEN {
            return Err(OffloadError::BadHeader {
                layer: Layer::InnerTcp,
                reason: "data offset below 5",
            });
        }
        if actual < header_len {
            return Err(OffloadError::Truncated {
                layer: Layer::InnerTcp,
                required: header_len,
                actual,
            });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn word(&self, field: std::ops::Range<usize>) -> u16 {
        be16(self.bytes(), field.start).unwrap_or(0)
    }

    pub fn src_port(&self) -> u16 {
        self.word(field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        self.word(field::DST_PORT)
    }

    pub fn seq_number(&self) -> u32 {
        be32(self.bytes(), field::SEQ_NUM.start).unwrap_or(0)
    }

    pub fn ack_number(&self) -> u32 {
        be32(self.bytes(), field::ACK_NUM.start).unwrap_or(0)
    }

    /// Header length from the data offset, options included.
    pub fn header_len(&self) -> usize {
        let offset = self.bytes().get(field::DATA_OFFSET).copied().unwrap_or(0);
        usize::from(offset >> 4) * 4
    }

    /// The flag byte; test it against [`flags`].
    pub fn flags(&self) -> u8 {
        self.bytes().get(field::FLAGS).copied().unwrap_or(0)
    }

    pub fn window_len(&self) -> u16 {
        self.word(field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        self.word(field::CHECKSUM)
    }

    pub fn urgent_at(&self) -> u16 {
        self.word(field::URGENT)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// The options (empty without), borrowed for the buffer's whole lifetime.
    pub fn options(&self) -> &'a [u8] {
        let buffer = self.buffer.as_ref();
        buffer
            .get(field::OPTIONS..self.header_len())
            .unwrap_or_default()
    }

    /// What follows the header, to the end of the buffer (the caller delimits the buffer by the
    /// IP length, which TCP itself does not carry).
    pub fn payload(&self) -> &'a [u8] {
        let buffer = self.buffer.as_ref();
        buffer.get(self.header_len()..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_seq_number(&mut self, seq: u32) {
        set_be32(self.buffer.as_mut(), field::SEQ_NUM.start, seq);
    }

    pub fn set_flags(&mut self, value: u8) {
        if let Some(f) = self.buffer.as_mut().get_mut(field::FLAGS) {
            *f = value;
        }
    }

    pub fn set_window_len(&mut self, window: u16) {
        set_be16(self.buffer.as_mut(), field::WINDOW.start, window);
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        set_be16(self.buffer.as_mut(), field::CHECKSUM.start, checksum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports 40000 -> 5201, seq 0x01020304, ack 9, data offset 6 (one 4-byte option), ACK|PSH,
    /// window 1000, checksum 0xabcd, urgent 0; then a 3-byte payload.
    const SEGMENT: [u8; 27] = [
        0x9c, 0x40, 0x14, 0x51, 1, 2, 3, 4, 0, 0, 0, 9, 0x60, 0x18, 0x03, 0xe8, 0xab, 0xcd, 0, 0,
        1, 1, 8, 10, b'a', b'b', b'c',
    ];

    #[test]
    fn fields_read_where_rfc_9293_puts_them() {
        let tcp = TcpPacket::new_checked(&SEGMENT[..]).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (40000, 5201));
        assert_eq!((tcp.seq_number(), tcp.ack_number()), (0x0102_0304, 9));
        assert_eq!(tcp.header_len(), 24);
        assert_eq!(tcp.flags(), flags::ACK | flags::PSH);
        assert_eq!(
            (tcp.window_len(), tcp.checksum(), tcp.urgent_at()),
            (1000, 0xabcd, 0)
        );
        assert_eq!(tcp.options(), &[1, 1, 8, 10]);
        assert_eq!(tcp.payload(), b"abc");
    }

    #[test]
    fn setters_change_only_their_field() {
        let mut bytes = SEGMENT;
        let mut tcp = TcpPacket::new_unchecked(&mut bytes[..]);
        tcp.set_seq_number(0xdead_beef);
        tcp.set_flags(flags::ACK);
        tcp.set_window_len(7);
        tcp.set_checksum(0x1234);
        let mut want = SEGMENT;
        want[field::SEQ_NUM].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        want[field::FLAGS] = flags::ACK;
        want[field::WINDOW].copy_from_slice(&[0, 7]);
        want[field::CHECKSUM].copy_from_slice(&[0x12, 0x34]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn short_or_inconsistent_headers_are_typed_errors() {
        for len in 0..TCP_HEADER_LEN {
            assert_eq!(
                TcpPacket::new_checked(&SEGMENT[..len]).err(),
                Some(OffloadError::Truncated {
                    layer: Layer::InnerTcp,
                    required: TCP_HEADER_LEN,
                    actual: len
                })
            );
        }
        assert_eq!(
            TcpPacket::new_checked(&SEGMENT[..22]).err(),
            Some(OffloadError::Truncated {
                layer: Layer::InnerTcp,
                required: 24,
                actual: 22
            })
        );
        let mut low = SEGMENT;
        low[field::DATA_OFFSET] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&low[..]).err(),
            Some(OffloadError::BadHeader {
                layer: Layer::InnerTcp,
                reason: "data offset below 5"
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn no_accessor_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            // Checked or not, a view reads without panicking.
            let tcp = TcpPacket::new_unchecked(&bytes[..]);
            let _ = (tcp.src_port(), tcp.dst_port(), tcp.seq_number(), tcp.ack_number());
            let _ = (tcp.flags(), tcp.window_len(), tcp.checksum(), tcp.urgent_at());
            let _ = (tcp.options(), tcp.payload(), tcp.check_len());
        }
    }
}
