//! Inner checksums a kernel VTEP on the same machine left unfinished.
//!
//! Linux hands checksum work to the NIC (CHECKSUM_PARTIAL): the TCP or UDP checksum field holds
//! only the folded pseudo-header sum, and the NIC adds the payload on transmit. The kernel's vxlan
//! keeps that state for the inner packet, so when the "NIC" is a veth (namespaces on one host),
//! the VXLAN datagram reaches vxnet with the inner checksum never completed. Inside one kernel
//! that is fine (the skb says "partial, trust me"), but the skb state does not cross a UDP socket:
//! written to the TAP as it is, the segment fails the receiving stack's check and TCP stalls
//! (ping works, TCP does not).
//!
//! [`complete_partial_checksum`] recognises that exact signature, a checksum field equal to the
//! pseudo-header sum of the packet it sits in, on a packet whose full checksum does not verify,
//! and completes the checksum as the NIC would have. Packets with any other wrong checksum are
//! left alone for the receiving stack to drop. The cost to error detection is that a corrupted
//! packet whose checksum field happens to equal its pseudo-header sum (1 in 65536 corruptions that
//! leave the field random) would be repaired rather than dropped, and only where the outer UDP
//! checksum, which covers the whole inner frame, did not already catch the corruption.

use crate::checksum::{self, Sum};
use crate::wire::be::set_be16;

use super::frame::{holds_partial_checksum, IpFrame, TcpFrame, Transport};

/// Completes the inner TCP/UDP checksum of `frame` (an inner Ethernet frame) if it carries the
/// CHECKSUM_PARTIAL signature; true when it did. Any frame it does not understand is untouched.
pub fn complete_partial_checksum(frame: &mut [u8]) -> bool {
    let Some((ip, transport)) = classify(frame) else {
        return false;
    };
    let (l4, end) = (ip.l4, ip.end);
    if end < l4 + transport.min_header_len() {
        return false;
    }
    let field = l4 + transport.checksum_offset();
    let pseudo = ip.pseudo_header(frame, transport.protocol(), end - l4);
    if !holds_partial_checksum(frame, field, pseudo) {
        return false;
    }
    let segment = Sum::new().add_bytes(&frame[l4..end]);
    if checksum::verifies(pseudo.add_sum(segment)) {
        // Complete already; the signature was a coincidence.
        return false;
    }
    // The field holds the pseudo-header sum, so summing the segment as it is (field included)
    // gives pseudo-header + segment: exactly what the NIC would have computed.
    set_be16(frame, field, transport.finished_checksum(segment));
    true
}

/// The IP layout of a TCP or UDP frame, and which of the two it carries. A TCP header is checked
/// as everywhere else (data offset included): a segment no TCP accepts is not one to repair.
fn classify(frame: &[u8]) -> Option<(IpFrame, Transport)> {
    if let Ok(tf) = TcpFrame::parse(frame) {
        return Some((tf.ip, Transport::Tcp));
    }
    let ip = IpFrame::parse(frame, Transport::Udp.protocol()).ok()?;
    Some((ip, Transport::Udp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::frame::make_partial;
    use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};
    use etherparse::PacketBuilder;

    fn tcp_v4(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
            .tcp(40000, 5201, 7, 1000)
            .ack(9)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    fn udp_v6(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .udp(5000, 6000)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    #[test]
    fn partial_tcp_over_ipv4_is_completed_to_the_real_checksum() {
        let good = tcp_v4(&[0x5a; 1400]);
        let mut frame = good.clone();
        make_partial(&mut frame, IPPROTO_TCP);
        assert_ne!(frame, good);
        assert!(complete_partial_checksum(&mut frame));
        assert_eq!(frame, good);
    }

    #[test]
    fn partial_udp_over_ipv6_is_completed_to_the_real_checksum() {
        let good = udp_v6(b"datagram payload of odd length");
        let mut frame = good.clone();
        make_partial(&mut frame, IPPROTO_UDP);
        assert!(complete_partial_checksum(&mut frame));
        assert_eq!(frame, good);
    }

    #[test]
    fn complete_and_corrupt_frames_are_left_alone() {
        let good = tcp_v4(b"hello");
        let mut frame = good.clone();
        assert!(!complete_partial_checksum(&mut frame), "already complete");
        assert_eq!(frame, good);

        let mut corrupt = good.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x10;
        let before = corrupt.clone();
        assert!(
            !complete_partial_checksum(&mut corrupt),
            "wrong, but not partial"
        );
        assert_eq!(corrupt, before);

        let mut arp = vec![0xff; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!complete_partial_checksum(&mut arp));
    }

    #[test]
    fn a_tcp_header_no_stack_accepts_is_left_alone() {
        // Found by the gro_receive fuzz target: data offset 0, partial checksum.
        let mut frame = tcp_v4(&[0x5a; 100]);
        frame[14 + 20 + 12] = 0x00;
        make_partial(&mut frame, IPPROTO_TCP);
        let before = frame.clone();
        assert!(!complete_partial_checksum(&mut frame));
        assert_eq!(frame, before);
    }

    #[test]
    fn ethernet_padding_is_not_summed() {
        // A 1-byte TCP payload gives a frame under 60 bytes; links pad it, the IP length rules.
        let good = tcp_v4(b"x");
        let mut frame = good.clone();
        make_partial(&mut frame, IPPROTO_TCP);
        frame.resize(60, 0xAB);
        assert!(complete_partial_checksum(&mut frame));
        assert_eq!(&frame[..good.len()], &good[..]);
    }

    proptest::proptest! {
        #[test]
        fn completion_matches_the_builder(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let good = tcp_v4(&payload);
            let mut frame = good.clone();
            make_partial(&mut frame, IPPROTO_TCP);
            let changed = frame != good;
            proptest::prop_assert_eq!(complete_partial_checksum(&mut frame), changed);
            proptest::prop_assert_eq!(frame, good);
        }
    }
}
