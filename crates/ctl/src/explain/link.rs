//! The link layer a capture was taken on: Ethernet (with one underlay VLAN tag), Linux cooked
//! SLL/SLL2 (`tcpdump -i any`) or raw IP; where the outer IP header starts.

use vxnet_encap::wire::{ethernet, EtherType};

use super::fields::{be16, be32, ethertype_name, mac, one};
use super::model::{hex16, Layer, LayerBuilder, LayerKind};

/// The link layers vxnet can read captures of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkType {
    Ethernet,
    /// `tcpdump -i any` before libpcap 1.10.
    LinuxSll,
    /// `tcpdump -i any` / tshark on "any" since libpcap 1.10.
    LinuxSll2,
    /// Bare IPv4/IPv6 (tun devices, `LINKTYPE_RAW`).
    RawIp,
}

const SLL_HEADER_LEN: usize = 16;
const SLL2_HEADER_LEN: usize = 20;
pub(super) const VLAN_TAG_LEN: usize = 4;

/// Where the outer IP header starts and what the link layer says it carries.
pub(super) struct Link {
    pub layer: Option<Layer>,
    pub ip_start: usize,
    pub ethertype: u16,
    /// A plain Ethernet header, which `decapsulate_ethernet` reads itself.
    pub plain_ethernet: bool,
}

pub(super) fn link_layer(link: LinkType, data: &[u8]) -> Result<Link, String> {
    let too_short = |what: &str, need: usize| {
        format!(
            "{} bytes is shorter than a {what} header ({need} bytes)",
            data.len()
        )
    };
    match link {
        LinkType::Ethernet => {
            if data.len() < ethernet::ETHERNET_HEADER_LEN {
                return Err(too_short("Ethernet", ethernet::ETHERNET_HEADER_LEN));
            }
            let mut b = LayerBuilder::new("outer Ethernet", LayerKind::Link, 0, 14);
            b.noted(
                "destination MAC",
                ethernet::field::DESTINATION,
                mac(&data[ethernet::field::DESTINATION]),
                "next hop on the underlay (the receiving host's NIC)",
            )
            .noted(
                "source MAC",
                ethernet::field::SOURCE,
                mac(&data[ethernet::field::SOURCE]),
                "the sending host's NIC",
            );
            let mut ethertype = be16(data, 12);
            let mut ip_start = ethernet::ETHERNET_HEADER_LEN;
            // One underlay VLAN tag is common on trunks; skip it rather than call the packet alien.
            if matches!(ethertype, EtherType::VLAN | EtherType::QINQ) {
                if data.len() < ip_start + VLAN_TAG_LEN {
                    return Err(too_short("802.1Q-tagged Ethernet", ip_start + VLAN_TAG_LEN));
                }
                let tci = be16(data, 14);
                b.noted("802.1Q TPID", 12..14, hex16(ethertype), "underlay VLAN tag")
                    .field(
                        "802.1Q TCI",
                        14..16,
                        format!("VLAN {} priority {}", tci & 0x0FFF, tci >> 13),
                    );
                ethertype = be16(data, 16);
                ip_start += VLAN_TAG_LEN;
                b.noted(
                    "EtherType",
                    16..18,
                    hex16(ethertype),
                    ethertype_name(ethertype),
                );
            } else {
                b.noted(
                    "EtherType",
                    ethernet::field::ETHERTYPE,
                    hex16(ethertype),
                    ethertype_name(ethertype),
                );
            }
            let mut layer = b.finish();
            layer.len = ip_start;
            Ok(Link {
                layer: Some(layer),
                ip_start,
                ethertype,
                plain_ethernet: ip_start == ethernet::ETHERNET_HEADER_LEN,
            })
        }
        LinkType::LinuxSll => {
            if data.len() < SLL_HEADER_LEN {
                return Err(too_short("Linux cooked (SLL)", SLL_HEADER_LEN));
            }
            let ethertype = be16(data, 14);
            let addr_len = usize::from(be16(data, 4)).min(8);
            let mut b = LayerBuilder::new(
                "Linux cooked capture (SLL)",
                LayerKind::Link,
                0,
                SLL_HEADER_LEN,
            );
            b.noted("packet type", 0..2, be16(data, 0), "0 to us, 4 sent by us")
                .noted("ARPHRD type", 2..4, be16(data, 2), "1 = Ethernet")
                .field("address length", 4..6, be16(data, 4))
                .noted(
                    "link-layer address",
                    6..14,
                    mac(&data[6..6 + addr_len]),
                    "the sender's MAC",
                )
                .noted(
                    "protocol",
                    14..16,
                    hex16(ethertype),
                    ethertype_name(ethertype),
                );
            Ok(Link {
                layer: Some(b.finish()),
                ip_start: SLL_HEADER_LEN,
                ethertype,
                plain_ethernet: false,
            })
        }
        LinkType::LinuxSll2 => {
            if data.len() < SLL2_HEADER_LEN {
                return Err(too_short("Linux cooked (SLL2)", SLL2_HEADER_LEN));
            }
            let ethertype = be16(data, 0);
            let addr_len = usize::from(data[11]).min(8);
            let mut b = LayerBuilder::new(
                "Linux cooked capture (SLL2)",
                LayerKind::Link,
                0,
                SLL2_HEADER_LEN,
            );
            b.noted(
                "protocol",
                0..2,
                hex16(ethertype),
                ethertype_name(ethertype),
            )
            .field("reserved", 2..4, be16(data, 2))
            .field("interface index", 4..8, be32(data, 4))
            .noted("ARPHRD type", 8..10, be16(data, 8), "1 = Ethernet")
            .noted("packet type", one(10), data[10], "0 to us, 4 sent by us")
            .field("address length", one(11), data[11])
            .noted(
                "link-layer address",
                12..20,
                mac(&data[12..12 + addr_len]),
                "the sender's MAC",
            );
            Ok(Link {
                layer: Some(b.finish()),
                ip_start: SLL2_HEADER_LEN,
                ethertype,
                plain_ethernet: false,
            })
        }
        LinkType::RawIp => {
            let ethertype = match data.first().map(|b| b >> 4) {
                Some(4) => EtherType::IPV4,
                Some(6) => EtherType::IPV6,
                _ => return Err("raw IP packet that is neither IPv4 nor IPv6".into()),
            };
            Ok(Link {
                layer: None,
                ip_start: 0,
                ethertype,
                plain_ethernet: false,
            })
        }
    }
}
