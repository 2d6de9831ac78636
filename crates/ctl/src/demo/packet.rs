//! Shows one captured underlay frame layer by layer, with byte offsets.
//!
//! Deliberately modest: `vxnet explain` (another module) owns the full renderer. The demo only calls
//! [`explain_frame`] and prints [`Explained::render`], so swapping in that renderer later touches
//! one call site.

use std::fmt::Write as _;

use serde::Serialize;
use vxnet_encap::checksum::pseudo_header_v4;
use vxnet_encap::wire::{EtherType, Ipv4Packet, UdpPacket};
use vxnet_encap::{decapsulate_ethernet, DecapError, InnerFrame};

const ETHERNET_HEADER: usize = 14;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// One header of the packet: where it starts, how long it is, what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerLine {
    pub offset: usize,
    pub len: usize,
    pub layer: &'static str,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explained {
    pub frame_len: usize,
    pub vni: u32,
    pub layers: Vec<LayerLine>,
    /// The frame came with a UDP checksum still to be filled in (checksum offload on the veth),
    /// so it was computed here before the checksum could be verified.
    pub checksum_offloaded: bool,
}

impl Explained {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "  offset  len  layer           fields");
        for l in &self.layers {
            let _ = writeln!(
                out,
                "  {:>6} {:>4}  {:<15} {}",
                l.offset, l.len, l.layer, l.summary
            );
        }
        let inner = self
            .layers
            .iter()
            .find(|l| l.layer == "inner Ethernet")
            .map(|l| l.offset)
            .unwrap_or(self.frame_len);
        let _ = writeln!(
            out,
            "  {} bytes on the wire: {} bytes of outer headers wrap a {}-byte inner frame (VNI {})",
            self.frame_len,
            inner,
            self.frame_len - inner,
            self.vni
        );
        if self.checksum_offloaded {
            let _ = writeln!(
                out,
                "  (the UDP checksum was left to checksum offload and was computed here)"
            );
        }
        out
    }
}

/// Decodes an outer Ethernet frame carrying VXLAN.
pub fn explain_frame(frame: &[u8]) -> Result<Explained, DecapError> {
    match decapsulate_ethernet(frame) {
        Err(DecapError::BadUdpChecksum) => {
            // A frame captured before the NIC (here: veth) would fill in the checksum carries only
            // the pseudo-header sum. Fill it in the way the hardware would, then decode.
            let mut fixed = frame.to_vec();
            if fill_udp_checksum_v4(&mut fixed).is_none() {
                return Err(DecapError::BadUdpChecksum);
            }
            let mut explained = explain_valid(&fixed)?;
            explained.checksum_offloaded = true;
            for layer in explained.layers.iter_mut().filter(|l| l.layer == "UDP") {
                layer.summary = layer.summary.replace("(verified)", "(computed here)");
            }
            Ok(explained)
        }
        Err(e) => Err(e),
        Ok(_) => explain_valid(frame),
    }
}

fn fill_udp_checksum_v4(frame: &mut [u8]) -> Option<()> {
    let ip_bytes = frame.get_mut(ETHERNET_HEADER..)?;
    let ip = Ipv4Packet::new_checked(&*ip_bytes).ok()?;
    let (header_len, total, src, dst) = (
        ip.header_len(),
        usize::from(ip.total_len()),
        ip.src_addr(),
        ip.dst_addr(),
    );
    let udp_bytes = ip_bytes.get_mut(header_len..total)?;
    let mut udp = UdpPacket::new_checked(udp_bytes).ok()?;
    let len = u32::from(udp.len_field());
    udp.fill_checksum(pseudo_header_v4(src, dst, IPPROTO_UDP, len));
    Some(())
}

fn explain_valid(frame: &[u8]) -> Result<Explained, DecapError> {
    let outer = decapsulate_ethernet(frame)?;
    let o = outer.offsets;
    let mut layers = Vec::new();
    if let Some(eth) = outer.ethernet {
        layers.push(LayerLine {
            offset: 0,
            len: o.ip,
            layer: "Ethernet",
            summary: format!(
                "{} -> {}  type {}",
                eth.src,
                eth.dst,
                ethertype_name(eth.ethertype)
            ),
        });
    }
    let ip_summary = match outer.ip {
        vxnet_encap::decap::OuterIp::V4(v4) => format!(
            "{} -> {}  proto {IPPROTO_UDP} (UDP)  ttl {}{}",
            v4.src,
            v4.dst,
            v4.ttl,
            if v4.dont_fragment { "  DF" } else { "" }
        ),
        vxnet_encap::decap::OuterIp::V6(v6) => format!(
            "{} -> {}  next header {IPPROTO_UDP} (UDP)  hop limit {}",
            v6.src, v6.dst, v6.hop_limit
        ),
    };
    let ip_layer = if matches!(outer.ip, vxnet_encap::decap::OuterIp::V4(_)) {
        "IPv4"
    } else {
        "IPv6"
    };
    layers.push(LayerLine {
        offset: o.ip,
        len: o.udp - o.ip,
        layer: ip_layer,
        summary: ip_summary,
    });
    layers.push(LayerLine {
        offset: o.udp,
        len: o.vxlan - o.udp,
        layer: "UDP",
        summary: format!(
            "{} -> {}  length {}  checksum {}",
            outer.udp.src_port,
            outer.udp.dst_port,
            o.end - o.udp,
            if outer.udp_checksum == 0 {
                "none (0)".to_string()
            } else {
                format!("{:#06x} (verified)", outer.udp_checksum)
            }
        ),
    });
    layers.push(LayerLine {
        offset: o.vxlan,
        len: o.inner - o.vxlan,
        layer: "VXLAN",
        summary: format!(
            "flags {:#04x} (I: VNI valid)  VNI {}",
            outer.vxlan.flags, outer.vxlan.vni
        ),
    });
    inner_layers(outer.vxlan.inner, o.inner, &mut layers);
    Ok(Explained {
        frame_len: frame.len(),
        vni: u32::from(outer.vxlan.vni),
        layers,
        checksum_offloaded: false,
    })
}

/// The inner frame's Ethernet header and, for IPv4, its IP header and transport.
fn inner_layers(inner: &[u8], base: usize, layers: &mut Vec<LayerLine>) {
    let Ok(frame) = InnerFrame::new(inner) else {
        return;
    };
    layers.push(LayerLine {
        offset: base,
        len: ETHERNET_HEADER,
        layer: "inner Ethernet",
        summary: format!(
            "{} -> {}  type {}",
            frame.source(),
            frame.destination(),
            ethertype_name(frame.ethertype())
        ),
    });
    if frame.ethertype() != EtherType::IPV4 {
        return;
    }
    let Ok(ip) = Ipv4Packet::new_checked(&inner[ETHERNET_HEADER..]) else {
        return;
    };
    let ip_offset = base + ETHERNET_HEADER;
    let header_len = ip.header_len();
    layers.push(LayerLine {
        offset: ip_offset,
        len: header_len,
        layer: "inner IPv4",
        summary: format!(
            "{} -> {}  proto {} ({})  ttl {}",
            ip.src_addr(),
            ip.dst_addr(),
            ip.protocol(),
            protocol_name(ip.protocol()),
            ip.ttl()
        ),
    });
    let payload = ip.payload();
    let transport = match (ip.protocol(), payload) {
        (IPPROTO_ICMP, [kind, code, ..]) => Some(("inner ICMP", icmp_name(*kind, *code))),
        (IPPROTO_TCP | IPPROTO_UDP, [a, b, c, d, ..]) => Some((
            if ip.protocol() == IPPROTO_TCP {
                "inner TCP"
            } else {
                "inner UDP"
            },
            format!(
                "{} -> {}",
                u16::from_be_bytes([*a, *b]),
                u16::from_be_bytes([*c, *d])
            ),
        )),
        _ => None,
    };
    if let Some((layer, summary)) = transport {
        layers.push(LayerLine {
            offset: ip_offset + header_len,
            len: payload.len(),
            layer,
            summary,
        });
    }
}

fn ethertype_name(ethertype: u16) -> String {
    let name = match ethertype {
        EtherType::IPV4 => "IPv4",
        EtherType::IPV6 => "IPv6",
        EtherType::ARP => "ARP",
        EtherType::VLAN => "802.1Q",
        _ => "?",
    };
    format!("{ethertype:#06x} ({name})")
}

fn protocol_name(protocol: u8) -> &'static str {
    match protocol {
        IPPROTO_ICMP => "ICMP",
        IPPROTO_TCP => "TCP",
        IPPROTO_UDP => "UDP",
        _ => "?",
    }
}

fn icmp_name(kind: u8, code: u8) -> String {
    match kind {
        0 => "echo reply".into(),
        8 => "echo request".into(),
        3 => format!("destination unreachable (code {code})"),
        _ => format!("type {kind} code {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use vxnet_encap::encap::encapsulate_to_vec;
    use vxnet_encap::{Encapsulation, IpPair, MacAddr, OuterStack, UdpChecksum, Vni};

    /// An ICMP echo request 172.17.0.2 -> 172.17.0.3 wrapped for VNI 42.
    fn wrapped_ping(checksum: UdpChecksum) -> Vec<u8> {
        let mut inner = vec![0x02, 0, 0, 0, 0, 3, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 1, 0, 0];
        ip.extend_from_slice(&[172, 17, 0, 2, 172, 17, 0, 3]);
        ip.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        inner.extend_from_slice(&ip);
        let ips = IpPair::new(
            IpAddr::V4(Ipv4Addr::new(192, 168, 205, 10)),
            IpAddr::V4(Ipv4Addr::new(192, 168, 205, 11)),
        )
        .unwrap();
        let mut outer = OuterStack::new(ips, 50000, 4789);
        outer.ethernet = Some((MacAddr([2, 0, 0, 0, 0, 0xa]), MacAddr([2, 0, 0, 0, 0, 0xb])));
        outer.udp_checksum = checksum;
        let vni = Vni::try_from(42).unwrap();
        encapsulate_to_vec(&inner, &Encapsulation::with_outer(vni, outer)).unwrap()
    }

    #[test]
    fn explains_a_wrapped_ping_with_offsets() {
        let frame = wrapped_ping(UdpChecksum::Zero);
        let e = explain_frame(&frame).unwrap();
        assert_eq!(e.vni, 42);
        assert!(!e.checksum_offloaded);
        let offsets: Vec<(usize, &str)> = e.layers.iter().map(|l| (l.offset, l.layer)).collect();
        assert_eq!(
            offsets,
            [
                (0, "Ethernet"),
                (14, "IPv4"),
                (34, "UDP"),
                (42, "VXLAN"),
                (50, "inner Ethernet"),
                (64, "inner IPv4"),
                (84, "inner ICMP"),
            ]
        );
        assert!(e.layers[6].summary.contains("echo request"));
        let text = e.render();
        assert!(text.contains("VNI 42"), "{text}");
        assert!(text.contains("192.168.205.10 -> 192.168.205.11"), "{text}");
    }

    #[test]
    fn a_checksum_left_to_offload_is_computed() {
        let mut frame = wrapped_ping(UdpChecksum::Compute);
        assert!(explain_frame(&frame).is_ok());
        // What a sender with checksum offload hands the NIC: some non-final value.
        frame[40] ^= 0x5a;
        let e = explain_frame(&frame).unwrap();
        assert!(e.checksum_offloaded);
        assert!(e.layers[2].summary.contains("(computed here)"));
        // Not VXLAN at all stays an error.
        assert!(explain_frame(&frame[..30]).is_err());
    }
}
