//! Small readers and names the decoders share.

use std::ops::Range;

use vxnet_encap::wire::EtherType;

pub(super) fn one(at: usize) -> Range<usize> {
    at..at + 1
}

// Callers check a layer's length before they describe its fields, so a missing field (read as 0)
// never shows; the reader and the address format are `vxnet-encap`'s, as the data plane's are.
pub(super) fn be16(data: &[u8], at: usize) -> u16 {
    vxnet_encap::wire::be16(data, at).unwrap_or(0)
}

pub(super) fn be32(data: &[u8], at: usize) -> u32 {
    vxnet_encap::wire::be32(data, at).unwrap_or(0)
}

pub(super) fn mac(bytes: &[u8]) -> String {
    vxnet_encap::LinkAddr(bytes).to_string()
}

pub(super) fn ethertype_name(ethertype: u16) -> &'static str {
    match ethertype {
        EtherType::IPV4 => "IPv4",
        EtherType::IPV6 => "IPv6",
        EtherType::ARP => "ARP",
        EtherType::VLAN => "802.1Q VLAN tag",
        EtherType::QINQ => "802.1ad VLAN tag",
        _ => "unknown",
    }
}

pub(super) fn ip_protocol_name(protocol: u8) -> &'static str {
    match protocol {
        1 => "ICMP",
        2 => "IGMP",
        6 => "TCP",
        17 => "UDP",
        58 => "ICMPv6",
        132 => "SCTP",
        _ => "other",
    }
}
