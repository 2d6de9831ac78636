#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests: whatever goes in comes back out, and every malformed length is named exactly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use vxnet_encap::encap::encapsulate_to_vec;
use vxnet_encap::{
    decapsulate, decapsulate_ethernet, decapsulate_ip, encapsulate, DecapError, EncapError,
    Encapsulation, IpPair, Layer, MacAddr, OuterStack, Vni, MAX_OUTER_LEN,
};

fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 14..1600)
}

fn ip_pair_strategy() -> impl Strategy<Value = IpPair> {
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| IpPair::V4 {
            src: Ipv4Addr::from(a),
            dst: Ipv4Addr::from(b)
        }),
        (any::<u128>(), any::<u128>()).prop_map(|(a, b)| IpPair::V6 {
            src: Ipv6Addr::from(a),
            dst: Ipv6Addr::from(b)
        }),
    ]
}

proptest! {
    #[test]
    fn vxlan_only_round_trip(frame in frame_strategy(), vni in 0u32..=Vni::MAX) {
        let vni = Vni::new(vni).unwrap();
        let packet = encapsulate_to_vec(&frame, &Encapsulation::vxlan(vni)).unwrap();
        prop_assert_eq!(packet.len(), frame.len() + 8);
        let d = decapsulate(&packet).unwrap();
        prop_assert_eq!(d.vni, vni);
        prop_assert_eq!(d.inner, &frame[..]);
    }

    #[test]
    fn full_stack_round_trip(
        frame in frame_strategy(),
        vni in 0u32..=Vni::MAX,
        ips in ip_pair_strategy(),
        src_port in any::<u16>(),
        dst_port in any::<u16>(),
        with_ethernet in any::<bool>(),
        checksum in any::<bool>(),
    ) {
        let vni = Vni::new(vni).unwrap();
        let mut outer = OuterStack::new(ips, src_port, dst_port);
        if checksum {
            outer.udp_checksum = vxnet_encap::UdpChecksum::Compute;
        }
        if with_ethernet {
            outer.ethernet = Some((MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2])));
        }
        let packet = encapsulate_to_vec(&frame, &Encapsulation::with_outer(vni, outer)).unwrap();
        let parsed = if with_ethernet { decapsulate_ethernet(&packet) } else { decapsulate_ip(&packet) }.unwrap();
        prop_assert_eq!(parsed.vxlan.vni, vni);
        prop_assert_eq!(parsed.vxlan.inner, &frame[..]);
        prop_assert_eq!(parsed.udp.src_port, src_port);
        prop_assert_eq!(parsed.udp.dst_port, dst_port);
        prop_assert_eq!(parsed.offsets.inner, packet.len() - frame.len());
        prop_assert_eq!(parsed.offsets.end, packet.len());
    }

    #[test]
    fn headroom_is_written_in_place_and_payload_never_moves(
        frame in frame_strategy(),
        slack in 0usize..32,
    ) {
        let encapsulation = Encapsulation::with_outer(
            Vni::new(7).unwrap(),
            OuterStack::new(IpPair::new(IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2])).unwrap(), 50000, 4789),
        );
        let headroom = encapsulation.header_len() + slack;
        let mut buf = vec![0xEEu8; headroom + frame.len()];
        buf[headroom..].copy_from_slice(&frame);
        let start = encapsulate(&mut buf, headroom, &encapsulation).unwrap();
        prop_assert_eq!(start, slack);
        prop_assert!(buf[..slack].iter().all(|&b| b == 0xEE), "wrote outside the headroom");
        prop_assert_eq!(&buf[headroom..], &frame[..]);
    }

    /// No input can make decapsulation panic; errors are fine.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decapsulate(&bytes);
        let _ = decapsulate_ip(&bytes);
        let _ = decapsulate_ethernet(&bytes);
    }
}

#[test]
fn every_truncated_vxlan_payload_names_its_layer_and_lengths() {
    let frame = [0x11u8; 60];
    let packet = encapsulate_to_vec(&frame, &Encapsulation::vxlan(Vni::new(42).unwrap())).unwrap();
    for len in 0..packet.len() {
        let expected = if len < 8 {
            Err(DecapError::Truncated {
                layer: Layer::Vxlan,
                required: 8,
                actual: len,
            })
        } else if len < 8 + 14 {
            Err(DecapError::Truncated {
                layer: Layer::InnerEthernet,
                required: 14,
                actual: len - 8,
            })
        } else {
            Ok(&frame[..len - 8])
        };
        assert_eq!(
            decapsulate(&packet[..len]).map(|d| d.inner),
            expected,
            "length {len}"
        );
    }
}

#[test]
fn every_truncated_outer_ipv4_packet_is_reported_exactly() {
    let frame = [0x22u8; 64];
    let mut outer = OuterStack::new(
        IpPair::new(
            IpAddr::from([192, 168, 205, 10]),
            IpAddr::from([192, 168, 205, 11]),
        )
        .unwrap(),
        50000,
        4789,
    );
    outer.ethernet = Some((MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2])));
    let packet = encapsulate_to_vec(
        &frame,
        &Encapsulation::with_outer(Vni::new(42).unwrap(), outer),
    )
    .unwrap();
    let total = packet.len();
    for len in 0..total {
        let got = decapsulate_ethernet(&packet[..len]).unwrap_err();
        let expected = if len < 14 {
            DecapError::Truncated {
                layer: Layer::OuterEthernet,
                required: 14,
                actual: len,
            }
        } else if len < 14 + 20 {
            DecapError::Truncated {
                layer: Layer::OuterIpv4,
                required: 20,
                actual: len - 14,
            }
        } else {
            // The IPv4 total length promises the whole packet.
            DecapError::Truncated {
                layer: Layer::OuterIpv4,
                required: total - 14,
                actual: len - 14,
            }
        };
        assert_eq!(got, expected, "length {len}");
    }
}

#[test]
fn every_truncated_outer_ipv6_packet_is_reported_exactly() {
    let frame = [0x33u8; 64];
    let outer = OuterStack::new(
        IpPair::new("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()).unwrap(),
        50000,
        4789,
    );
    let packet = encapsulate_to_vec(
        &frame,
        &Encapsulation::with_outer(Vni::new(42).unwrap(), outer),
    )
    .unwrap();
    for len in 0..packet.len() {
        let expected = if len == 0 {
            // Without a version nibble there is no telling the family: IPv4's minimum is named.
            DecapError::Truncated {
                layer: Layer::OuterIpv4,
                required: 20,
                actual: 0,
            }
        } else if len < 40 {
            DecapError::Truncated {
                layer: Layer::OuterIpv6,
                required: 40,
                actual: len,
            }
        } else {
            DecapError::Truncated {
                layer: Layer::OuterIpv6,
                required: packet.len(),
                actual: len,
            }
        };
        assert_eq!(
            decapsulate_ip(&packet[..len]).unwrap_err(),
            expected,
            "length {len}"
        );
    }
}

#[test]
fn malformed_outer_headers_get_their_own_errors() {
    let frame = [0x44u8; 64];
    let base = encapsulate_to_vec(
        &frame,
        &Encapsulation::with_outer(
            Vni::new(42).unwrap(),
            OuterStack::new(
                IpPair::new(IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2])).unwrap(),
                50000,
                4789,
            ),
        ),
    )
    .unwrap();

    let mut bad = base.clone();
    bad[10] ^= 0xFF; // IPv4 header checksum
    assert_eq!(
        decapsulate_ip(&bad).unwrap_err(),
        DecapError::BadIpv4Checksum
    );

    let mut clear_i = base.clone();
    clear_i[28] = 0x00;
    assert_eq!(
        decapsulate_ip(&clear_i).unwrap_err(),
        DecapError::MissingIFlag { flags: 0 }
    );

    let mut udp_len_long = base.clone();
    let long = (base.len() - 20 + 1) as u16;
    udp_len_long[24..26].copy_from_slice(&long.to_be_bytes());
    assert!(matches!(
        decapsulate_ip(&udp_len_long).unwrap_err(),
        DecapError::BadUdpLength { .. }
    ));

    let mut with_checksum = base.clone();
    with_checksum[26..28].copy_from_slice(&[0x12, 0x34]);
    assert_eq!(
        decapsulate_ip(&with_checksum).unwrap_err(),
        DecapError::BadUdpChecksum
    );

    let mut fragment = base.clone();
    fragment[6] = 0x20; // MF
    fragment[10..12].copy_from_slice(&[0, 0]);
    let sum = vxnet_encap::checksum::checksum(&fragment[..20]);
    fragment[10..12].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(
        decapsulate_ip(&fragment).unwrap_err(),
        DecapError::Fragmented
    );
}

#[test]
fn encapsulation_errors() {
    let vni = Vni::new(1).unwrap();
    let mut buf = [0u8; 30];
    assert_eq!(
        encapsulate(&mut buf, 4, &Encapsulation::vxlan(vni)),
        Err(EncapError::NoHeadroom {
            needed: 8,
            available: 4
        })
    );
    assert_eq!(
        encapsulate(&mut buf, 20, &Encapsulation::vxlan(vni)),
        Err(EncapError::InnerTooShort { len: 10 })
    );
    assert_eq!(
        IpPair::new(IpAddr::from([10, 0, 0, 1]), "fd00::1".parse().unwrap()),
        Err(EncapError::MixedAddressFamilies)
    );
    let mut huge = vec![0u8; MAX_OUTER_LEN + 65_600];
    let outer = OuterStack::new(
        IpPair::new(IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2])).unwrap(),
        1,
        2,
    );
    assert!(matches!(
        encapsulate(
            &mut huge,
            MAX_OUTER_LEN,
            &Encapsulation::with_outer(vni, outer)
        ),
        Err(EncapError::TooLong { .. })
    ));
}
