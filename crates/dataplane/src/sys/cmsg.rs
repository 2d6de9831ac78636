//! Ancillary data ("control messages") encoded and decoded as plain bytes.
//!
//! The libc `CMSG_*` macros are pointer arithmetic over a `msghdr`; doing the same over a byte
//! slice keeps this code safe and unit-testable. The layout is Linux's: a `cmsghdr` of
//! `{ size_t cmsg_len; int cmsg_level; int cmsg_type; }` followed by the data, every item starting
//! at a multiple of `sizeof(size_t)`.

use std::mem::size_of;

/// Alignment of every control message (`CMSG_ALIGN`).
pub(crate) const ALIGN: usize = size_of::<usize>();

/// Rounds `n` up to the control-message alignment.
pub(crate) const fn align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// Length of the aligned header, i.e. the offset of the data (`CMSG_LEN(0)`).
pub(crate) const HDR_LEN: usize = align(size_of::<libc::cmsghdr>());

/// `CMSG_LEN(data_len)`: the value stored in `cmsg_len`.
pub(crate) const fn len(data_len: usize) -> usize {
    HDR_LEN + data_len
}

/// `CMSG_SPACE(data_len)`: the room one message takes in the buffer.
pub(crate) const fn space(data_len: usize) -> usize {
    HDR_LEN + align(data_len)
}

/// Per-message control buffer size used by the batch I/O paths: room for a few `int`-sized
/// messages (a send carries UDP_SEGMENT, a TTL and a TOS at most; a receive UDP_GRO), so
/// unexpected extra cmsgs don't set MSG_CTRUNC.
pub(crate) const BUF_LEN: usize = 96;

/// Control-message storage aligned like a `cmsghdr`, so the kernel and anyone using the libc
/// macros on it see properly aligned headers.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgBuf(pub [u8; BUF_LEN]);

impl Default for CmsgBuf {
    fn default() -> Self {
        CmsgBuf([0; BUF_LEN])
    }
}

const LEVEL_OFF: usize = size_of::<usize>();
const TYPE_OFF: usize = LEVEL_OFF + size_of::<libc::c_int>();

/// Writes one control message at the start of `buf`; returns the space used, or `None` if `buf`
/// is too small. Padding bytes are zeroed (the kernel ignores them, but we don't leak garbage).
pub(crate) fn encode(
    buf: &mut [u8],
    level: libc::c_int,
    ty: libc::c_int,
    data: &[u8],
) -> Option<usize> {
    let used = space(data.len());
    let buf = buf.get_mut(..used)?;
    buf.fill(0);
    buf[..LEVEL_OFF].copy_from_slice(&len(data.len()).to_ne_bytes());
    buf[LEVEL_OFF..TYPE_OFF].copy_from_slice(&level.to_ne_bytes());
    buf[TYPE_OFF..TYPE_OFF + 4].copy_from_slice(&ty.to_ne_bytes());
    buf[HDR_LEN..HDR_LEN + data.len()].copy_from_slice(data);
    Some(used)
}

/// One decoded control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cmsg<'a> {
    pub(crate) level: libc::c_int,
    pub(crate) ty: libc::c_int,
    pub(crate) data: &'a [u8],
}

impl Cmsg<'_> {
    /// The data as a native-endian C `int`, if it is exactly that long.
    pub(crate) fn as_int(&self) -> Option<libc::c_int> {
        Some(libc::c_int::from_ne_bytes(self.data.try_into().ok()?))
    }
}

/// Iterates over the control messages in `buf[..controllen]` (pass exactly the `msg_controllen`
/// the kernel returned). Stops at the first malformed header instead of reading past the end.
pub(crate) fn iter(buf: &[u8]) -> Iter<'_> {
    Iter { rest: buf }
}

pub(crate) struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = Cmsg<'a>;

    fn next(&mut self) -> Option<Cmsg<'a>> {
        let rest = self.rest;
        if rest.len() < HDR_LEN {
            return None;
        }
        let cmsg_len = usize::from_ne_bytes(rest[..LEVEL_OFF].try_into().ok()?);
        let level = libc::c_int::from_ne_bytes(rest[LEVEL_OFF..TYPE_OFF].try_into().ok()?);
        let ty = libc::c_int::from_ne_bytes(rest[TYPE_OFF..TYPE_OFF + 4].try_into().ok()?);
        if cmsg_len < HDR_LEN || cmsg_len > rest.len() {
            self.rest = &[];
            return None;
        }
        let data = &rest[HDR_LEN..cmsg_len];
        // The last message may omit its trailing padding.
        self.rest = rest.get(align(cmsg_len)..).unwrap_or(&[]);
        Some(Cmsg { level, ty, data })
    }
}

/// Encodes `SOL_UDP/UDP_SEGMENT` (a `u16` segment size) for a GSO send.
pub(crate) fn encode_udp_segment(buf: &mut [u8], segment_size: u16) -> Option<usize> {
    encode(
        buf,
        libc::SOL_UDP,
        libc::UDP_SEGMENT,
        &segment_size.to_ne_bytes(),
    )
}

/// A per-datagram IP header field set by control message, by the IPv4 and IPv6 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpField {
    /// `IP_TTL` / `IPV6_HOPLIMIT`.
    Ttl,
    /// `IP_TOS` / `IPV6_TCLASS`.
    Tos,
}

/// Encodes `field = value` (a C `int`) for a datagram over IPv4 or IPv6.
pub(crate) fn encode_ip_field(
    buf: &mut [u8],
    ipv4: bool,
    field: IpField,
    value: u8,
) -> Option<usize> {
    let (level, ty) = match (ipv4, field) {
        (true, IpField::Ttl) => (libc::IPPROTO_IP, libc::IP_TTL),
        (true, IpField::Tos) => (libc::IPPROTO_IP, libc::IP_TOS),
        (false, IpField::Ttl) => (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT),
        (false, IpField::Tos) => (libc::IPPROTO_IPV6, libc::IPV6_TCLASS),
    };
    encode(buf, level, ty, &libc::c_int::from(value).to_ne_bytes())
}

/// Finds `SOL_UDP/UDP_GRO` (the segment size, as a C `int`) in received control data.
pub(crate) fn decode_udp_gro(buf: &[u8]) -> Option<u16> {
    iter(buf)
        .find(|c| c.level == libc::SOL_UDP && c.ty == libc::UDP_GRO)
        .and_then(|c| c.as_int())
        .and_then(|v| u16::try_from(v).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_libc_macros() {
        for n in [0usize, 1, 2, 4, 7, 8, 16, 20] {
            // SAFETY: CMSG_LEN/CMSG_SPACE are pure arithmetic on their argument.
            let (l, s) = unsafe { (libc::CMSG_LEN(n as u32), libc::CMSG_SPACE(n as u32)) };
            assert_eq!(len(n), l as usize, "len({n})");
            assert_eq!(space(n), s as usize, "space({n})");
        }
    }

    #[test]
    fn udp_segment_round_trip() {
        let mut b = CmsgBuf::default();
        let used = encode_udp_segment(&mut b.0, 1400).unwrap();
        assert_eq!(used, space(2));
        let all: Vec<_> = iter(&b.0[..used]).collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].level, libc::SOL_UDP);
        assert_eq!(all[0].ty, libc::UDP_SEGMENT);
        assert_eq!(all[0].data, 1400u16.to_ne_bytes());
    }

    #[test]
    fn segment_ttl_and_tos_fit_one_buffer() {
        let mut b = CmsgBuf::default();
        let a = encode_udp_segment(&mut b.0, 1400).unwrap();
        let t = encode_ip_field(&mut b.0[a..], true, IpField::Ttl, 7).unwrap();
        let o = encode_ip_field(&mut b.0[a + t..], false, IpField::Tos, 0xb8).unwrap();
        let all: Vec<_> = iter(&b.0[..a + t + o]).collect();
        assert_eq!(all.len(), 3);
        assert_eq!((all[1].level, all[1].ty), (libc::IPPROTO_IP, libc::IP_TTL));
        assert_eq!(all[1].as_int(), Some(7));
        assert_eq!(
            (all[2].level, all[2].ty),
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
        );
        assert_eq!(all[2].as_int(), Some(0xb8));
    }

    #[test]
    fn gro_decode_among_other_messages() {
        let mut b = CmsgBuf::default();
        let a = encode(&mut b.0, libc::SOL_IP, libc::IP_TOS, &[0x10]).unwrap();
        let g = encode(
            &mut b.0[a..],
            libc::SOL_UDP,
            libc::UDP_GRO,
            &1448i32.to_ne_bytes(),
        )
        .unwrap();
        assert_eq!(decode_udp_gro(&b.0[..a + g]), Some(1448));
        assert_eq!(decode_udp_gro(&b.0[..a]), None);
        // Out-of-range value for a u16 segment size is ignored, not truncated.
        let mut c = CmsgBuf::default();
        let n = encode(
            &mut c.0,
            libc::SOL_UDP,
            libc::UDP_GRO,
            &70000i32.to_ne_bytes(),
        )
        .unwrap();
        assert_eq!(decode_udp_gro(&c.0[..n]), None);
    }

    #[test]
    fn malformed_input_stops_iteration() {
        let mut b = CmsgBuf::default();
        let n = encode(&mut b.0, libc::SOL_UDP, libc::UDP_GRO, &1i32.to_ne_bytes()).unwrap();
        // Claimed length larger than the buffer.
        b.0[..ALIGN].copy_from_slice(&(BUF_LEN * 2).to_ne_bytes());
        assert_eq!(iter(&b.0[..n]).count(), 0);
        // Too short for a header.
        assert_eq!(iter(&b.0[..HDR_LEN - 1]).count(), 0);
        assert!(encode(&mut [0u8; 4], 0, 0, &[1]).is_none());
    }
}
