#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Byte-for-byte agreement with the Linux kernel's vxlan driver.
//!
//! The fixtures were captured by `scripts/capture-kernel-fixture.sh`: two network namespaces joined
//! by veth (192.168.205.10/.11 and fd00:205::10/::11), a kernel `vxlan id 42 dstport 4789` device on
//! each, one ping 172.17.0.2 → 172.17.0.3, tcpdump on the receiving side's underlay. Each holds four
//! packets: ARP request, ARP reply, ICMP echo request, ICMP echo reply.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vxnet_encap::decap::OuterIp;
use vxnet_encap::encap::encapsulate_to_vec;
use vxnet_encap::{
    decapsulate_ethernet, Encapsulation, InnerFrame, IpPair, MacAddr, OuterStack, UdpChecksum, Vni,
};

/// Re-wraps the kernel's inner frame with vxnet's encapsulation using the outer fields the kernel
/// chose (addresses, ports, TTL, IP ID, DF), and compares the result with the kernel's bytes.
fn rewrap_matches(packet: &[u8]) {
    let parsed = decapsulate_ethernet(packet).expect("kernel packet decodes");
    let eth = parsed.ethernet.expect("outer ethernet");
    let mut outer = match parsed.ip {
        OuterIp::V4(ip) => {
            let mut o = OuterStack::new(
                IpPair::new(IpAddr::V4(ip.src), IpAddr::V4(ip.dst)).unwrap(),
                parsed.udp.src_port,
                parsed.udp.dst_port,
            );
            o.ipv4_ident = ip.ident;
            o.dont_fragment = ip.dont_fragment;
            o.ttl = ip.ttl;
            o.tos = ip.dscp_ecn;
            o
        }
        OuterIp::V6(ip) => {
            let mut o = OuterStack::new(
                IpPair::new(IpAddr::V6(ip.src), IpAddr::V6(ip.dst)).unwrap(),
                parsed.udp.src_port,
                parsed.udp.dst_port,
            );
            o.ttl = ip.hop_limit;
            o.tos = ip.traffic_class;
            o.ipv6_flow_label = ip.flow_label;
            o
        }
    };
    outer.ethernet = Some((eth.src, eth.dst));
    outer.udp_checksum = if parsed.udp_checksum == 0 {
        UdpChecksum::Zero
    } else {
        UdpChecksum::Compute
    };
    let encapsulation = Encapsulation::with_outer(parsed.vxlan.vni, outer);
    let ours = encapsulate_to_vec(parsed.vxlan.inner, &encapsulation).unwrap();
    assert_eq!(
        ours, packet,
        "vxnet's encapsulation differs from the kernel's"
    );
}

#[test]
fn ipv4_capture_decodes_as_expected() {
    let packets = support::read_pcap("kernel-vxlan-ipv4.pcap");
    assert_eq!(packets.len(), 4);
    for packet in &packets {
        let parsed = decapsulate_ethernet(packet).unwrap();
        assert_eq!(parsed.vxlan.vni, Vni::new(42).unwrap());
        assert_eq!(parsed.vxlan.flags, 0x08);
        assert_eq!(parsed.udp.dst_port, 4789);
        // The kernel draws source ports from the local port range (32768..=60999 by default).
        assert!(parsed.udp.src_port >= 32768);
        // Kernel 6.x defaults to `udpcsum`: a real outer checksum even over IPv4 (RFC 7348 says
        // SHOULD be zero). decapsulate_ethernet verified it, so it is complete, not partial.
        assert_ne!(parsed.udp_checksum, 0);
        assert_eq!(parsed.offsets.vxlan, 42);
        assert_eq!(parsed.offsets.inner, 50);
        let OuterIp::V4(ip) = parsed.ip else {
            panic!("not IPv4")
        };
        assert!(matches!(
            (ip.src, ip.dst),
            (a, b) if [a, b].contains(&Ipv4Addr::new(192, 168, 205, 10))
                && [a, b].contains(&Ipv4Addr::new(192, 168, 205, 11))
        ));
    }
    // Hand-checked bytes of the echo request (packet 3): VXLAN header at offset 42.
    let request = &packets[2];
    assert_eq!(&request[12..14], &[0x08, 0x00], "outer EtherType IPv4");
    assert_eq!(&request[23], &17, "outer protocol UDP");
    assert_eq!(&request[36..38], &[0x12, 0xb5], "UDP destination port 4789");
    assert_eq!(
        &request[42..50],
        &[0x08, 0, 0, 0, 0, 0, 42, 0],
        "VXLAN: I flag, VNI 42"
    );
    let inner = InnerFrame::new(&request[50..]).unwrap();
    assert_eq!(
        inner.source(),
        "02:42:ac:11:00:02".parse::<MacAddr>().unwrap()
    );
    assert_eq!(
        inner.destination(),
        "02:42:ac:11:00:03".parse::<MacAddr>().unwrap()
    );
    assert_eq!(inner.ethertype(), 0x0800);
    assert_eq!(&request[50 + 26..50 + 34], &[172, 17, 0, 2, 172, 17, 0, 3]);
}

#[test]
fn ipv4_encapsulation_is_byte_identical_to_the_kernel() {
    for packet in support::read_pcap("kernel-vxlan-ipv4.pcap") {
        rewrap_matches(&packet);
    }
}

#[test]
fn ipv6_encapsulation_is_byte_identical_to_the_kernel() {
    let packets = support::read_pcap("kernel-vxlan-ipv6.pcap");
    assert_eq!(packets.len(), 4);
    for packet in &packets {
        let parsed = decapsulate_ethernet(packet).unwrap();
        let OuterIp::V6(ip) = parsed.ip else {
            panic!("not IPv6")
        };
        assert!([ip.src, ip.dst].contains(&"fd00:205::10".parse::<Ipv6Addr>().unwrap()));
        // Over IPv6 the kernel computes the UDP checksum; ours must come out identical.
        assert_ne!(parsed.udp_checksum, 0);
        assert_eq!(parsed.offsets.inner, 14 + 40 + 8 + 8);
        rewrap_matches(packet);
    }
}

#[test]
fn same_inner_flow_keeps_one_source_port_like_the_kernel() {
    // The kernel hashed both ARP frames (same MAC pair reversed) and the ICMP flow; whatever its
    // choice, packets of one direction and flow kept one port. Ours must be stable too.
    let packets = support::read_pcap("kernel-vxlan-ipv4.pcap");
    let inner_request = decapsulate_ethernet(&packets[2])
        .unwrap()
        .vxlan
        .inner
        .to_vec();
    let mut again = inner_request.clone();
    again[14 + 4] ^= 0xFF; // a different IP ID: same flow.
    assert_eq!(
        vxnet_encap::flow::source_port(&inner_request),
        vxnet_encap::flow::source_port(&again)
    );
}

#[test]
fn checksum_policy_defaults_follow_rfc() {
    let v4 = OuterStack::new(
        IpPair::new("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()).unwrap(),
        50000,
        4789,
    );
    assert_eq!(v4.udp_checksum, UdpChecksum::Zero);
    let v6 = OuterStack::new(
        IpPair::new("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()).unwrap(),
        50000,
        4789,
    );
    assert_eq!(v6.udp_checksum, UdpChecksum::Compute);
}
