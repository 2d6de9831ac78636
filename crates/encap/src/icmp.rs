//! Path-MTU signalling into the overlay: the ICMP "fragmentation needed" (IPv4, type 3 code 4)
//! or ICMPv6 "packet too big" (type 2) a VTEP writes back into its TAP when a frame does not fit
//! the path to the destination VTEP, so that the sender's TCP (or any PMTU-discovering
//! application) lowers its path MTU, as with a router on an ordinary path.
//!
//! The reply is built the way the Linux kernel's VXLAN driver builds it for bridged traffic
//! (`skb_tunnel_check_pmtu`, `iptunnel_pmtud_build_icmp[v6]`): as if from the packet's own
//! destination, MAC addresses swapped, TTL / hop limit copied, quoting the start of the packet
//! (up to 576 bytes of reply over IPv4, 1280 over IPv6); no reply below the minimum MTU (576,
//! 1280), for IPv4 packets without DF or that are fragments, to broadcast or multicast, from
//! unspecified, loopback, broadcast or multicast sources, or for ICMP error messages. Linux TCP
//! accepts such a reply: it checks the quoted sequence number, not who sent it.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum::{checksum, pseudo_header_v6, Sum};
use crate::wire::EtherType;

/// Byte ranges of what is read and written (offsets in the Ethernet frame or the IP header).
mod field {
    use std::ops::Range;

    pub const ETH_DST: Range<usize> = 0..6;
    pub const ETH_SRC: Range<usize> = 6..12;
    pub const ETH_TYPE: Range<usize> = 12..14;
    pub const VLAN_TAG: usize = 4;

    pub const V4_VER_IHL: usize = 0;
    pub const V4_TOS: usize = 1;
    pub const V4_LEN: Range<usize> = 2..4;
    pub const V4_ID: Range<usize> = 4..6;
    pub const V4_FRAG: Range<usize> = 6..8;
    pub const V4_TTL: usize = 8;
    pub const V4_PROTO: usize = 9;
    pub const V4_CSUM: Range<usize> = 10..12;
    pub const V4_SRC: Range<usize> = 12..16;
    pub const V4_DST: Range<usize> = 16..20;
    pub const V4_HEADER: usize = 20;

    pub const V6_VER_CLASS_FLOW: Range<usize> = 0..4;
    pub const V6_PAYLOAD_LEN: Range<usize> = 4..6;
    pub const V6_NEXT: usize = 6;
    pub const V6_HOPS: usize = 7;
    pub const V6_SRC: Range<usize> = 8..24;
    pub const V6_DST: Range<usize> = 24..40;
    pub const V6_HEADER: usize = 40;

    /// ICMP and ICMPv6 share the layout used here: type, code, checksum, then 4 bytes (the MTU
    /// in the last two for IPv4, all four for IPv6), then the quoted packet.
    pub const ICMP_TYPE: usize = 0;
    pub const ICMP_CODE: usize = 1;
    pub const ICMP_CSUM: Range<usize> = 2..4;
    pub const ICMP_V4_MTU: Range<usize> = 6..8;
    pub const ICMP_V6_MTU: Range<usize> = 4..8;
    pub const ICMP_HEADER: usize = 8;
}

/// Smallest MTU an IPv4 host must accept (RFC 791); also the reply's size limit.
pub const IPV4_MIN_MTU: usize = 576;
/// Smallest MTU of an IPv6 link (RFC 8200); also the reply's size limit.
pub const IPV6_MIN_MTU: usize = 1280;
/// Room a reply needs at most: an Ethernet header with a VLAN tag and a minimum-MTU packet.
pub const MAX_REPLY_LEN: usize = 14 + field::VLAN_TAG + IPV6_MIN_MTU;

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const IPV4_DF: u16 = 0x4000;

/// Writes into `out` the ICMP reply telling the sender of `frame` (an Ethernet frame from the
/// TAP) that its path takes IP packets of at most `mtu` bytes. Returns the reply's length, or
/// `None` when no reply is due (see the module doc) or `out` is shorter than the reply.
pub fn too_big_reply(frame: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
    let mut l2 = 14;
    let mut ethertype = be16(frame, field::ETH_TYPE.start)?;
    if matches!(ethertype, EtherType::VLAN | EtherType::QINQ) {
        l2 += field::VLAN_TAG;
        ethertype = be16(frame, l2 - 2)?;
    }
    let packet = frame.get(l2..)?;
    let ip_len = match ethertype {
        EtherType::IPV4 => frag_needed(packet, mtu, out.get_mut(l2..)?)?,
        EtherType::IPV6 => packet_too_big(packet, mtu, out.get_mut(l2..)?)?,
        _ => return None,
    };
    // Back to the sender: the MACs swap, a VLAN tag stays.
    out[field::ETH_DST].copy_from_slice(&frame[field::ETH_SRC]);
    out[field::ETH_SRC].copy_from_slice(&frame[field::ETH_DST]);
    out[field::ETH_TYPE.start..l2].copy_from_slice(&frame[field::ETH_TYPE.start..l2]);
    Some(l2 + ip_len)
}

/// The MTU to report for `frame` (as [`too_big_reply`] takes it) when the path to its VTEP takes
/// outer IP packets of `path_mtu` bytes: less the outer IP header (20 or 40), UDP (8), VXLAN (8)
/// and the inner Ethernet header (14, 18 with a VLAN tag).
pub fn inner_mtu(path_mtu: usize, ipv6_underlay: bool, frame: &[u8]) -> usize {
    let outer_ip = if ipv6_underlay { 40 } else { 20 };
    let tagged = matches!(
        be16(frame, field::ETH_TYPE.start),
        Some(EtherType::VLAN | EtherType::QINQ)
    );
    let l2 = 14 + if tagged { field::VLAN_TAG } else { 0 };
    path_mtu.saturating_sub(outer_ip + 8 + 8 + l2)
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

fn ipv4_at(data: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(data[at], data[at + 1], data[at + 2], data[at + 3])
}

/// IPv4: the reply to `packet` (from its IP header on) in `out`; its IP length.
fn frag_needed(packet: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
    let header = packet.get(..field::V4_HEADER)?;
    let ihl = usize::from(header[field::V4_VER_IHL] & 0x0f) * 4;
    if header[field::V4_VER_IHL] >> 4 != 4 || ihl < field::V4_HEADER || packet.len() < ihl {
        return None;
    }
    // Only a whole packet that asked not to be fragmented: DF set, not a fragment itself.
    if mtu < IPV4_MIN_MTU || be16(header, field::V4_FRAG.start)? != IPV4_DF {
        return None;
    }
    let src = ipv4_at(header, field::V4_SRC.start);
    let dst = ipv4_at(header, field::V4_DST.start);
    if dst.is_broadcast()
        || dst.is_multicast()
        || src.is_unspecified()
        || src.octets()[0] == 0
        || src.is_loopback()
        || src.is_broadcast()
        || src.is_multicast()
    {
        return None;
    }
    if header[field::V4_PROTO] == ICMP && is_icmp_error(packet.get(ihl)?) {
        return None;
    }
    // The original packet's length as sent (a TSO superframe's header may say more than is
    // quoted; only the quote matters).
    let quoted = packet
        .len()
        .min(IPV4_MIN_MTU - field::V4_HEADER - field::ICMP_HEADER);
    let total = field::V4_HEADER + field::ICMP_HEADER + quoted;
    let out = out.get_mut(..total)?;
    out.fill(0);
    let (ip, icmp) = out.split_at_mut(field::V4_HEADER);
    ip[field::V4_VER_IHL] = 0x45;
    ip[field::V4_TOS] = 0;
    ip[field::V4_LEN].copy_from_slice(&(total as u16).to_be_bytes());
    ip[field::V4_ID].copy_from_slice(&[0, 0]);
    ip[field::V4_FRAG].copy_from_slice(&IPV4_DF.to_be_bytes());
    ip[field::V4_TTL] = header[field::V4_TTL];
    ip[field::V4_PROTO] = ICMP;
    ip[field::V4_SRC].copy_from_slice(&header[field::V4_DST]);
    ip[field::V4_DST].copy_from_slice(&header[field::V4_SRC]);
    let ip_csum = checksum(ip);
    ip[field::V4_CSUM].copy_from_slice(&ip_csum.to_be_bytes());
    icmp[field::ICMP_TYPE] = 3;
    icmp[field::ICMP_CODE] = 4;
    let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
    icmp[field::ICMP_V4_MTU].copy_from_slice(&mtu.to_be_bytes());
    icmp[field::ICMP_HEADER..].copy_from_slice(&packet[..quoted]);
    let icmp_csum = checksum(icmp);
    icmp[field::ICMP_CSUM].copy_from_slice(&icmp_csum.to_be_bytes());
    Some(total)
}

/// ICMP types that report errors (RFC 1122 §3.2.2: never answered with another error).
fn is_icmp_error(icmp_type: &u8) -> bool {
    matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
}

/// IPv6: the reply to `packet` in `out`; its IP length.
fn packet_too_big(packet: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
    let header = packet.get(..field::V6_HEADER)?;
    if header[0] >> 4 != 6 || mtu < IPV6_MIN_MTU {
        return None;
    }
    let octets = |r: std::ops::Range<usize>| -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&header[r]);
        a
    };
    let src = Ipv6Addr::from(octets(field::V6_SRC));
    let dst = Ipv6Addr::from(octets(field::V6_DST));
    if src.is_unspecified() || src.is_multicast() || src.is_loopback() || dst.is_multicast() {
        return None;
    }
    if !answerable_v6(packet) {
        return None;
    }
    let quoted = packet
        .len()
        .min(IPV6_MIN_MTU - field::V6_HEADER - field::ICMP_HEADER);
    let icmp_len = field::ICMP_HEADER + quoted;
    let total = field::V6_HEADER + icmp_len;
    let out = out.get_mut(..total)?;
    out.fill(0);
    let (ip, icmp) = out.split_at_mut(field::V6_HEADER);
    ip[field::V6_VER_CLASS_FLOW].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[field::V6_PAYLOAD_LEN].copy_from_slice(&(icmp_len as u16).to_be_bytes());
    ip[field::V6_NEXT] = ICMPV6;
    ip[field::V6_HOPS] = header[field::V6_HOPS];
    ip[field::V6_SRC].copy_from_slice(&header[field::V6_DST]);
    ip[field::V6_DST].copy_from_slice(&header[field::V6_SRC]);
    icmp[field::ICMP_TYPE] = 2;
    icmp[field::ICMP_CODE] = 0;
    let mtu = u32::try_from(mtu).unwrap_or(u32::MAX);
    icmp[field::ICMP_V6_MTU].copy_from_slice(&mtu.to_be_bytes());
    icmp[field::ICMP_HEADER..].copy_from_slice(&packet[..quoted]);
    let sum =
        pseudo_header_v6(dst, src, ICMPV6, icmp_len as u32).add_sum(Sum::new().add_bytes(icmp));
    icmp[field::ICMP_CSUM].copy_from_slice(&sum.finish().to_be_bytes());
    Some(total)
}

/// Walks the extension headers of an IPv6 packet: a non-first fragment, an ICMPv6 error or a
/// redirect is not answered; a chain that cannot be followed is answered (as the kernel does
/// when it stops at an unknown header).
fn answerable_v6(packet: &[u8]) -> bool {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const DEST_OPTS: u8 = 60;
    let mut next = packet[field::V6_NEXT];
    let mut at = field::V6_HEADER;
    // A handful of headers at most in practice; the bound keeps a hostile chain cheap.
    for _ in 0..8 {
        match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS => {
                let (Some(&n), Some(&len)) = (packet.get(at), packet.get(at + 1)) else {
                    return true;
                };
                next = n;
                at += (usize::from(len) + 1) * 8;
            }
            FRAGMENT => {
                let Some(offset) = be16(packet, at + 2) else {
                    return true;
                };
                if offset & !0x7 != 0 {
                    return false;
                }
                let Some(&n) = packet.get(at) else {
                    return true;
                };
                next = n;
                at += 8;
            }
            ICMPV6 => {
                // Types below 128 are errors; 137 is a redirect.
                return !matches!(packet.get(at), Some(t) if *t < 128 || *t == 137);
            }
            _ => return true,
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::checksum::verifies;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    /// An IPv4/TCP frame from A (10.1.0.1) to B (10.1.0.2) with `payload` bytes.
    fn tcp4(frag: u16, payload: usize) -> Vec<u8> {
        let total = 40 + payload;
        let mut f = [B.to_vec(), A.to_vec(), vec![0x08, 0x00]].concat();
        f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 7]);
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[61, 6, 0, 0, 10, 1, 0, 1, 10, 1, 0, 2]);
        f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 1, 2, 3, 4]);
        f.resize(14 + total, 0xab);
        f
    }

    fn tcp6(payload: usize) -> Vec<u8> {
        let mut f = [B.to_vec(), A.to_vec(), vec![0x86, 0xdd]].concat();
        let len = 20 + payload;
        f.extend_from_slice(&[0x60, 0, 0, 0, (len >> 8) as u8, len as u8, 6, 50]);
        let mut src = [0u8; 16];
        src[0] = 0xfd;
        src[15] = 1;
        let mut dst = src;
        dst[15] = 2;
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 1, 2, 3, 4]);
        f.resize(14 + 40 + len, 0xcd);
        f
    }

    #[test]
    fn ipv4_frag_needed_as_the_kernel_builds_it() {
        let frame = tcp4(IPV4_DF, 8000);
        let mut out = [0u8; MAX_REPLY_LEN];
        let n = too_big_reply(&frame, 1450, &mut out).unwrap();
        let reply = &out[..n];
        assert_eq!(n, 14 + 576);
        assert_eq!((&reply[0..6], &reply[6..12]), (&A[..], &B[..]));
        let ip = &reply[14..34];
        assert_eq!(ip[9], 1);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 576);
        assert_eq!(ip[8], 61, "TTL copied");
        assert_eq!(&ip[12..16], &[10, 1, 0, 2], "from the packet's destination");
        assert_eq!(&ip[16..20], &[10, 1, 0, 1]);
        assert!(verifies(Sum::new().add_bytes(ip)));
        let icmp = &reply[34..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1450);
        assert!(verifies(Sum::new().add_bytes(icmp)));
        // The quote is the original packet's first 548 bytes, TCP ports and sequence included.
        assert_eq!(&icmp[8..], &frame[14..14 + 548]);
    }

    #[test]
    fn ipv6_packet_too_big() {
        let frame = tcp6(3000);
        let mut out = [0u8; MAX_REPLY_LEN];
        let n = too_big_reply(&frame, 1430, &mut out).unwrap();
        assert_eq!(n, 14 + 1280);
        let ip = &out[14..54];
        assert_eq!(ip[6], 58);
        assert_eq!(ip[7], 50);
        assert_eq!(&ip[8..24], &frame[14 + 24..14 + 40]);
        let icmp = &out[54..n];
        assert_eq!((icmp[0], icmp[1]), (2, 0));
        assert_eq!(
            u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
            1430
        );
        let mut src = [0u8; 16];
        src.copy_from_slice(&ip[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&ip[24..40]);
        let sum = pseudo_header_v6(src.into(), dst.into(), 58, icmp.len() as u32)
            .add_sum(Sum::new().add_bytes(icmp));
        assert!(verifies(sum));
    }

    #[test]
    fn the_reported_mtu_leaves_room_for_the_encapsulation() {
        assert_eq!(inner_mtu(1500, false, &tcp4(IPV4_DF, 0)), 1450);
        assert_eq!(inner_mtu(1500, true, &tcp6(0)), 1430);
        let mut tagged = tcp4(IPV4_DF, 0);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        assert_eq!(inner_mtu(1500, false, &tagged), 1446);
        assert_eq!(inner_mtu(10, false, &[]), 0);
    }

    #[test]
    fn a_vlan_tag_stays_on_the_reply() {
        let mut frame = tcp4(IPV4_DF, 2000);
        frame.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        let mut out = [0u8; MAX_REPLY_LEN];
        let n = too_big_reply(&frame, 1400, &mut out).unwrap();
        assert_eq!(&out[12..18], &[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        assert_eq!(n, 18 + 576);
    }

    #[test]
    fn no_reply_where_the_kernel_sends_none() {
        let mut out = [0u8; MAX_REPLY_LEN];
        // DF clear (the packet may be fragmented), a fragment, too small an MTU.
        assert_eq!(too_big_reply(&tcp4(0, 2000), 1400, &mut out), None);
        assert_eq!(
            too_big_reply(&tcp4(IPV4_DF | 0x2000, 2000), 1400, &mut out),
            None
        );
        assert_eq!(too_big_reply(&tcp4(IPV4_DF, 2000), 575, &mut out), None);
        assert_eq!(too_big_reply(&tcp6(2000), 1279, &mut out), None);
        // To broadcast, from loopback.
        let mut to_bcast = tcp4(IPV4_DF, 2000);
        to_bcast[30..34].copy_from_slice(&[255; 4]);
        assert_eq!(too_big_reply(&to_bcast, 1400, &mut out), None);
        let mut from_lo = tcp4(IPV4_DF, 2000);
        from_lo[26..30].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(too_big_reply(&from_lo, 1400, &mut out), None);
        // An ICMP error is never answered; an echo request is.
        let mut icmp = tcp4(IPV4_DF, 2000);
        icmp[23] = 1;
        icmp[34] = 3;
        assert_eq!(too_big_reply(&icmp, 1400, &mut out), None);
        icmp[34] = 8;
        assert!(too_big_reply(&icmp, 1400, &mut out).is_some());
        // ICMPv6 errors neither.
        let mut icmp6 = tcp6(2000);
        icmp6[20] = 58;
        icmp6[54] = 1;
        assert_eq!(too_big_reply(&icmp6, 1400, &mut out), None);
        // Non-IP, truncated, or no room: nothing, and no panic.
        assert_eq!(too_big_reply(&tcp4(IPV4_DF, 0)[..20], 1400, &mut out), None);
        let arp = [B.to_vec(), A.to_vec(), vec![0x08, 0x06], vec![0; 28]].concat();
        assert_eq!(too_big_reply(&arp, 1400, &mut out), None);
        assert_eq!(
            too_big_reply(&tcp4(IPV4_DF, 2000), 1400, &mut [0u8; 100]),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_give_a_reply_or_none(
            frame in proptest::collection::vec(proptest::num::u8::ANY, 0..1600),
            mtu in 0usize..70000,
        ) {
            let mut out = [0u8; MAX_REPLY_LEN];
            if let Some(n) = too_big_reply(&frame, mtu, &mut out) {
                proptest::prop_assert!(n <= MAX_REPLY_LEN);
            }
        }
    }
}
