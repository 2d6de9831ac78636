//! Neighbour resolution answered by the VTEP (ARP reduction and ND proxy, like the kernel
//! vxlan's `proxy` flag): a request from the TAP side for an address whose MAC the cluster's
//! records already know is answered on the spot instead of being flooded to every VTEP.
//!
//! Answered: ARP requests (not probes with sender 0.0.0.0, not gratuitous ARP) and neighbour
//! solicitations with hop limit 255, a valid checksum, a unicast target and a source address
//! (duplicate address detection, from `::`, is left to the owner). The reply comes as if from
//! the owner: ARP reply from its MAC, or a solicited, override neighbour advertisement from its
//! address with its MAC in the target link-layer option. A VLAN tag is kept.

use std::net::{IpAddr, Ipv6Addr};

use crate::checksum::{pseudo_header_v6, verifies, Sum};
use crate::error::NeighborError;
use crate::icmp::l2_header;
use crate::mac::MacAddr;
use crate::wire::{
    ethernet, ndp, ArpOperation, ArpPacket, ArpRepr, EtherType, Ipv6Packet, Ipv6Repr, NdpPacket,
    NdpRepr, ARP_LEN, IPV6_HEADER_LEN,
};

const ICMPV6: u8 = 58;
/// RFC 4861 §7.1: neighbour discovery messages must arrive with hop limit 255 (never routed).
const ND_HOP_LIMIT: u8 = 255;
/// Room a reply needs: tagged Ethernet header, IPv6 header, an advertisement with its option.
pub const MAX_REPLY_LEN: usize = 18 + IPV6_HEADER_LEN + 32;

/// A request for the MAC of `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicitation {
    pub target: IpAddr,
    /// The asker: the Ethernet source of the frame.
    pub requester_mac: MacAddr,
    pub requester_ip: IpAddr,
}

/// What a neighbour message says about who holds an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neighbor {
    /// A request vxnet may answer.
    Request(Solicitation),
    /// A claim that `ip` is at `mac`: an ARP reply or gratuitous ARP, an advertisement.
    Claim { ip: IpAddr, mac: MacAddr },
}

/// Reads `frame` (an Ethernet frame from the TAP) as an ARP or NDP message.
pub fn parse(frame: &[u8]) -> Result<Neighbor, NeighborError> {
    let not = NeighborError::Unsupported("neither ARP nor neighbour discovery");
    let (l2, ethertype) = l2_header(frame).ok_or(not)?;
    let requester_mac = MacAddr::from_slice(&frame[ethernet::field::SOURCE]).ok_or(not)?;
    let payload = frame.get(l2..).ok_or(not)?;
    match ethertype {
        EtherType::ARP => {
            let arp = ArpRepr::parse(&ArpPacket::new_checked(payload)?);
            let gratuitous = arp.sender_ip == arp.target_ip;
            match arp.operation {
                ArpOperation::Request if !gratuitous && !arp.sender_ip.is_unspecified() => {
                    Ok(Neighbor::Request(Solicitation {
                        target: IpAddr::V4(arp.target_ip),
                        requester_mac,
                        requester_ip: IpAddr::V4(arp.sender_ip),
                    }))
                }
                ArpOperation::Reply | ArpOperation::Request if !arp.sender_ip.is_unspecified() => {
                    Ok(Neighbor::Claim {
                        ip: IpAddr::V4(arp.sender_ip),
                        mac: arp.sender_mac,
                    })
                }
                _ => Err(NeighborError::Unsupported("ARP probe or other operation")),
            }
        }
        EtherType::IPV6 => {
            let ip = Ipv6Packet::new_checked(payload)
                .map_err(|_| NeighborError::Unsupported("malformed IPv6"))?;
            if ip.next_header() != ICMPV6 || ip.hop_limit() != ND_HOP_LIMIT {
                return Err(NeighborError::Unsupported("not neighbour discovery"));
            }
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let icmp = ip.payload();
            let sum = pseudo_header_v6(src, dst, ICMPV6, icmp.len() as u32)
                .add_sum(Sum::new().add_bytes(icmp));
            if !verifies(sum) {
                return Err(NeighborError::Unsupported("bad ICMPv6 checksum"));
            }
            let nd = NdpRepr::parse(&NdpPacket::new_checked(icmp)?);
            if nd.target.is_multicast() {
                return Err(NeighborError::Unsupported("multicast target"));
            }
            match nd.msg_type {
                ndp::TYPE_SOLICITATION if !src.is_unspecified() => {
                    Ok(Neighbor::Request(Solicitation {
                        target: IpAddr::V6(nd.target),
                        requester_mac,
                        requester_ip: IpAddr::V6(src),
                    }))
                }
                ndp::TYPE_ADVERTISEMENT => Ok(Neighbor::Claim {
                    ip: IpAddr::V6(nd.target),
                    mac: nd.link_layer.unwrap_or(requester_mac),
                }),
                _ => Err(NeighborError::Unsupported("duplicate address detection")),
            }
        }
        _ => Err(not),
    }
}

/// Writes into `out` the reply to `frame` (a [`Neighbor::Request`]) saying its target is at
/// `mac`. Returns the reply's length, or `None` when the frame is no answerable request or `out`
/// is shorter than [`MAX_REPLY_LEN`].
pub fn reply(frame: &[u8], mac: MacAddr, out: &mut [u8]) -> Option<usize> {
    let Ok(Neighbor::Request(request)) = parse(frame) else {
        return None;
    };
    let (l2, _) = l2_header(frame)?;
    let len = match (request.target, request.requester_ip) {
        (IpAddr::V4(target), IpAddr::V4(requester)) => {
            let arp = ArpRepr {
                operation: ArpOperation::Reply,
                sender_mac: mac,
                sender_ip: target,
                target_mac: request.requester_mac,
                target_ip: requester,
            };
            arp.emit(out.get_mut(l2..)?).then_some(ARP_LEN)?
        }
        (IpAddr::V6(target), IpAddr::V6(requester)) => {
            advertisement(target, requester, mac, out.get_mut(l2..)?)?
        }
        _ => return None,
    };
    out[ethernet::field::DESTINATION].copy_from_slice(&request.requester_mac.octets());
    out[ethernet::field::SOURCE].copy_from_slice(&mac.octets());
    let tag_and_type = ethernet::field::ETHERTYPE.start..l2;
    out[tag_and_type.clone()].copy_from_slice(&frame[tag_and_type]);
    Some(l2 + len)
}

/// A solicited, override advertisement of `target` at `mac` to `requester`; its IP length.
fn advertisement(
    target: Ipv6Addr,
    requester: Ipv6Addr,
    mac: MacAddr,
    out: &mut [u8],
) -> Option<usize> {
    let nd = NdpRepr {
        msg_type: ndp::TYPE_ADVERTISEMENT,
        flags: ndp::FLAG_SOLICITED | ndp::FLAG_OVERRIDE,
        target,
        link_layer: Some(mac),
    };
    let out = out.get_mut(..IPV6_HEADER_LEN + nd.len())?;
    let (header, icmp) = out.split_at_mut(IPV6_HEADER_LEN);
    Ipv6Repr {
        src: target,
        dst: requester,
        next_header: ICMPV6,
        hop_limit: ND_HOP_LIMIT,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut Ipv6Packet::new_unchecked(header), nd.len() as u16);
    let len = nd.emit(icmp)?;
    let sum = pseudo_header_v6(target, requester, ICMPV6, len as u32)
        .add_sum(Sum::new().add_bytes(icmp))
        .finish();
    icmp[ndp::field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    Some(IPV6_HEADER_LEN + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ETHERNET_HEADER_LEN;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const ASKER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const OWNER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

    fn ethernet(ethertype: u16, vlan: Option<u16>) -> Vec<u8> {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&ASKER.octets());
        if let Some(vid) = vlan {
            frame.extend_from_slice(&EtherType::VLAN.to_be_bytes());
            frame.extend_from_slice(&vid.to_be_bytes());
        }
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame
    }

    fn arp(
        operation: ArpOperation,
        sender: [u8; 4],
        target: [u8; 4],
        vlan: Option<u16>,
    ) -> Vec<u8> {
        let mut frame = ethernet(EtherType::ARP, vlan);
        let at = frame.len();
        frame.resize(at + ARP_LEN, 0);
        ArpRepr {
            operation,
            sender_mac: ASKER,
            sender_ip: Ipv4Addr::from(sender),
            target_mac: MacAddr([0; 6]),
            target_ip: Ipv4Addr::from(target),
        }
        .emit(&mut frame[at..]);
        frame
    }

    fn solicitation(src: &str, target: &str, hop_limit: u8) -> Vec<u8> {
        let (src, target): (Ipv6Addr, Ipv6Addr) = (src.parse().unwrap(), target.parse().unwrap());
        let octets = target.octets();
        // The solicited-node multicast address of the target.
        let dst = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(octets[13]),
            u16::from_be_bytes([octets[14], octets[15]]),
        );
        let nd = NdpRepr {
            msg_type: ndp::TYPE_SOLICITATION,
            flags: 0,
            target,
            link_layer: Some(ASKER),
        };
        let mut frame = ethernet(EtherType::IPV6, None);
        let at = frame.len();
        frame.resize(at + IPV6_HEADER_LEN + nd.len(), 0);
        let (header, icmp) = frame[at..].split_at_mut(IPV6_HEADER_LEN);
        Ipv6Repr {
            src,
            dst,
            next_header: ICMPV6,
            hop_limit,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut Ipv6Packet::new_unchecked(header), nd.len() as u16);
        nd.emit(icmp).unwrap();
        let sum = pseudo_header_v6(src, dst, ICMPV6, nd.len() as u32)
            .add_sum(Sum::new().add_bytes(icmp))
            .finish();
        icmp[ndp::field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
        frame
    }

    #[test]
    fn an_arp_request_is_answered_from_the_owner() {
        for vlan in [None, Some(42)] {
            let request = arp(ArpOperation::Request, [10, 0, 0, 1], [10, 0, 0, 2], vlan);
            let mut out = [0u8; MAX_REPLY_LEN];
            let len = reply(&request, OWNER, &mut out).unwrap();
            let l2 = if vlan.is_some() {
                ETHERNET_HEADER_LEN + 4
            } else {
                ETHERNET_HEADER_LEN
            };
            assert_eq!(len, l2 + ARP_LEN);
            assert_eq!(&out[..6], &ASKER.octets());
            assert_eq!(&out[6..12], &OWNER.octets());
            assert_eq!(
                &out[12..l2],
                &request[12..l2],
                "the tag and EtherType are kept"
            );
            let answer = ArpRepr::parse(&ArpPacket::new_checked(&out[l2..len]).unwrap());
            assert_eq!(answer.operation, ArpOperation::Reply);
            assert_eq!(
                (answer.sender_mac, answer.sender_ip),
                (OWNER, Ipv4Addr::new(10, 0, 0, 2))
            );
            assert_eq!(
                (answer.target_mac, answer.target_ip),
                (ASKER, Ipv4Addr::new(10, 0, 0, 1))
            );
            // The reply is itself a claim of the owner's address.
            assert_eq!(
                parse(&out[..len]).unwrap(),
                Neighbor::Claim {
                    ip: "10.0.0.2".parse().unwrap(),
                    mac: OWNER
                }
            );
        }
    }

    #[test]
    fn probes_and_gratuitous_arp_are_not_answered() {
        let mut out = [0u8; MAX_REPLY_LEN];
        let probe = arp(ArpOperation::Request, [0, 0, 0, 0], [10, 0, 0, 2], None);
        assert!(reply(&probe, OWNER, &mut out).is_none());
        let gratuitous = arp(ArpOperation::Request, [10, 0, 0, 2], [10, 0, 0, 2], None);
        assert!(reply(&gratuitous, OWNER, &mut out).is_none());
        assert!(matches!(parse(&gratuitous), Ok(Neighbor::Claim { .. })));
        assert!(reply(&probe, OWNER, &mut [0u8; 20]).is_none());
    }

    #[test]
    fn a_solicitation_gets_a_valid_advertisement() {
        let request = solicitation("fd00::1", "fd00::2", 255);
        assert!(matches!(parse(&request), Ok(Neighbor::Request(_))));
        let mut out = [0u8; MAX_REPLY_LEN];
        let len = reply(&request, OWNER, &mut out).unwrap();
        // parse() checks hop limit and checksum: the advertisement passes both.
        assert_eq!(
            parse(&out[..len]).unwrap(),
            Neighbor::Claim {
                ip: "fd00::2".parse().unwrap(),
                mac: OWNER
            }
        );
        let ip = Ipv6Packet::new_checked(&out[ETHERNET_HEADER_LEN..len]).unwrap();
        assert_eq!(ip.dst_addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
        let nd = NdpRepr::parse(&NdpPacket::new_checked(ip.payload()).unwrap());
        assert_eq!(nd.flags, ndp::FLAG_SOLICITED | ndp::FLAG_OVERRIDE);
    }

    #[test]
    fn routed_forged_or_dad_solicitations_are_not_answered() {
        let mut out = [0u8; MAX_REPLY_LEN];
        assert!(reply(&solicitation("fd00::1", "fd00::2", 64), OWNER, &mut out).is_none());
        assert!(reply(&solicitation("::", "fd00::2", 255), OWNER, &mut out).is_none());
        assert!(reply(&solicitation("fd00::1", "ff02::1", 255), OWNER, &mut out).is_none());
        let mut bad_sum = solicitation("fd00::1", "fd00::2", 255);
        let last = bad_sum.len() - 1;
        bad_sum[last] ^= 1;
        assert!(reply(&bad_sum, OWNER, &mut out).is_none());
    }

    proptest! {
        #[test]
        fn any_bytes_are_parsed_or_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut out = [0u8; MAX_REPLY_LEN];
            let _ = parse(&bytes);
            if let Some(len) = reply(&bytes, OWNER, &mut out) {
                prop_assert!(len <= MAX_REPLY_LEN);
            }
        }

        #[test]
        fn any_corruption_of_a_request_is_handled(at in 0usize..110, value: u8) {
            let mut frame = solicitation("fd00::1", "fd00::2", 255);
            if let Some(byte) = frame.get_mut(at) {
                *byte = value;
            }
            let mut out = [0u8; MAX_REPLY_LEN];
            let _ = reply(&frame, OWNER, &mut out);
        }
    }
}
