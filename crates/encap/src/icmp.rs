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

use crate::checksum::{checksum, pseudo_header_v6, Sum};
use crate::wire::{
    ethernet, ipv6, EtherType, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, ETHERNET_HEADER_LEN,
    IPV4_HEADER_LEN, IPV6_HEADER_LEN,
};

/// The ICMP / ICMPv6 message layout used here (both share it): type, code, checksum, 4 bytes
/// (the MTU in the last two for IPv4, in all four for IPv6), then the quoted packet.
mod field {
    use std::ops::Range;

    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Range<usize> = 2..4;
    pub(super) const V4_MTU: Range<usize> = 6..8;
    pub(super) const V6_MTU: Range<usize> = 4..8;
    pub(super) const HEADER: usize = 8;
}

/// An 802.1Q / 802.1ad tag between the MACs and the EtherType.
const VLAN_TAG_LEN: usize = 4;
/// Smallest MTU an IPv4 host must accept (RFC 791); also the reply's size limit.
pub const IPV4_MIN_MTU: usize = 576;
/// Smallest MTU of an IPv6 link (RFC 8200); also the reply's size limit.
pub const IPV6_MIN_MTU: usize = 1280;
/// Room a reply needs at most: an Ethernet header with a VLAN tag and a minimum-MTU packet.
pub const MAX_REPLY_LEN: usize = ETHERNET_HEADER_LEN + VLAN_TAG_LEN + IPV6_MIN_MTU;

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// The Ethernet header length of `frame` (14, or 18 with a VLAN tag) and its EtherType.
pub(crate) fn l2_header(frame: &[u8]) -> Option<(usize, u16)> {
    let ethertype = be16(frame, ethernet::field::ETHERTYPE.start)?;
    if matches!(ethertype, EtherType::VLAN | EtherType::QINQ) {
        let l2 = ETHERNET_HEADER_LEN + VLAN_TAG_LEN;
        return Some((l2, be16(frame, l2 - 2)?));
    }
    Some((ETHERNET_HEADER_LEN, ethertype))
}

/// Writes into `out` the ICMP reply telling the sender of `frame` (an Ethernet frame from the
/// TAP) that its path takes IP packets of at most `mtu` bytes. Returns the reply's length, or
/// `None` when no reply is due (see the module doc) or `out` is shorter than the reply.
pub fn too_big_reply(frame: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
    let (l2, ethertype) = l2_header(frame)?;
    let packet = frame.get(l2..)?;
    let ip_len = match ethertype {
        EtherType::IPV4 => frag_needed(packet, mtu, out.get_mut(l2..)?)?,
        EtherType::IPV6 => packet_too_big(packet, mtu, out.get_mut(l2..)?)?,
        _ => return None,
    };
    // Back to the sender: the MACs swap, a VLAN tag stays.
    out[ethernet::field::DESTINATION].copy_from_slice(&frame[ethernet::field::SOURCE]);
    out[ethernet::field::SOURCE].copy_from_slice(&frame[ethernet::field::DESTINATION]);
    let tag_and_type = ethernet::field::ETHERTYPE.start..l2;
    out[tag_and_type.clone()].copy_from_slice(&frame[tag_and_type]);
    Some(l2 + ip_len)
}

/// The MTU to report for `frame` (as [`too_big_reply`] takes it) when the path to its VTEP takes
/// outer IP packets of `path_mtu` bytes: less the outer IP header (20 or 40), UDP (8), VXLAN (8)
/// and the inner Ethernet header (14, 18 with a VLAN tag).
pub fn inner_mtu(path_mtu: usize, ipv6_underlay: bool, frame: &[u8]) -> usize {
    let outer_ip = if ipv6_underlay {
        IPV6_HEADER_LEN
    } else {
        IPV4_HEADER_LEN
    };
    let l2 = l2_header(frame).map_or(ETHERNET_HEADER_LEN, |(l2, _)| l2);
    path_mtu.saturating_sub(outer_ip + 8 + 8 + l2)
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

/// The ICMP(v6) message of `out` (type, code and checksum field zeroed, MTU written) and the
/// quoted start of `packet`, `quoted` bytes of it.
fn write_message(out: &mut [u8], ty: u8, mtu: &[u8], packet: &[u8], quoted: usize) {
    out[..field::HEADER].fill(0);
    out[field::TYPE] = ty;
    let mtu_field = if mtu.len() == 2 {
        field::V4_MTU
    } else {
        field::V6_MTU
    };
    out[mtu_field].copy_from_slice(mtu);
    out[field::HEADER..field::HEADER + quoted].copy_from_slice(&packet[..quoted]);
}

/// IPv4: the reply to `packet` (from its IP header on) in `out`; its IP length.
fn frag_needed(packet: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    // Only a whole packet that asked not to be fragmented: DF set, not a fragment itself.
    if mtu < IPV4_MIN_MTU || !ip.dont_fragment() || ip.is_fragment() {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if dst.is_broadcast()
        || dst.is_multicast()
        || src.octets()[0] == 0
        || src.is_loopback()
        || src.is_broadcast()
        || src.is_multicast()
    {
        return None;
    }
    if ip.protocol() == ICMP && ip.payload().first().is_some_and(is_icmp_error) {
        return None;
    }
    let quoted = usize::from(ip.total_len()).min(IPV4_MIN_MTU - IPV4_HEADER_LEN - field::HEADER);
    let icmp_len = field::HEADER + quoted;
    let out = out.get_mut(..IPV4_HEADER_LEN + icmp_len)?;
    let (header, icmp) = out.split_at_mut(IPV4_HEADER_LEN);
    Ipv4Repr {
        src: dst,
        dst: src,
        protocol: ICMP,
        ttl: ip.ttl(),
        dscp_ecn: 0,
        ident: 0,
        dont_fragment: true,
    }
    .emit(&mut Ipv4Packet::new_unchecked(header), icmp_len as u16);
    let mtu = u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes();
    write_message(icmp, 3, &mtu, packet, quoted);
    // Code 4: fragmentation needed and DF set.
    icmp[field::CODE] = 4;
    let sum = checksum(icmp);
    icmp[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    Some(IPV4_HEADER_LEN + icmp_len)
}

/// ICMP types that report errors (RFC 1122 §3.2.2: never answered with another error).
fn is_icmp_error(icmp_type: &u8) -> bool {
    matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
}

/// IPv6: the reply to `packet` in `out`; its IP length.
fn packet_too_big(packet: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
    let ip = Ipv6Packet::new_checked(packet).ok()?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if mtu < IPV6_MIN_MTU
        || src.is_unspecified()
        || src.is_multicast()
        || src.is_loopback()
        || dst.is_multicast()
        || !answerable_v6(packet)
    {
        return None;
    }
    let quoted = (IPV6_HEADER_LEN + usize::from(ip.payload_len()))
        .min(IPV6_MIN_MTU - IPV6_HEADER_LEN - field::HEADER);
    let icmp_len = field::HEADER + quoted;
    let out = out.get_mut(..IPV6_HEADER_LEN + icmp_len)?;
    let (header, icmp) = out.split_at_mut(IPV6_HEADER_LEN);
    Ipv6Repr {
        src: dst,
        dst: src,
        next_header: ICMPV6,
        hop_limit: ip.hop_limit(),
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut Ipv6Packet::new_unchecked(header), icmp_len as u16);
    let mtu = u32::try_from(mtu).unwrap_or(u32::MAX).to_be_bytes();
    // Type 2: packet too big.
    write_message(icmp, 2, &mtu, packet, quoted);
    let sum =
        pseudo_header_v6(dst, src, ICMPV6, icmp_len as u32).add_sum(Sum::new().add_bytes(icmp));
    icmp[field::CHECKSUM].copy_from_slice(&sum.finish().to_be_bytes());
    Some(IPV6_HEADER_LEN + icmp_len)
}

/// Walks the extension headers of an IPv6 packet: a non-first fragment, an ICMPv6 error or a
/// redirect is not answered; a chain that cannot be followed is answered (as the kernel does
/// when it stops at an unknown header).
fn answerable_v6(packet: &[u8]) -> bool {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const DEST_OPTS: u8 = 60;
    let mut next = packet[ipv6::field::NEXT_HEADER];
    let mut at = IPV6_HEADER_LEN;
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

    const IPV4_DF: u16 = 0x4000;

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
