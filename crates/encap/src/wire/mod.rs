//! Zero-copy header views and their high-level representations.
//!
//! Each `XPacket<T>` wraps a buffer; `new_checked` runs `check_len` once, after which every accessor
//! indexes within the checked length and cannot panic. Byte ranges live in each module's `field`
//! module so the layout is written down exactly once. `XRepr` is the parsed, owned form used to emit.

pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod udp;
pub mod vxlan;

pub use ethernet::{EtherType, EthernetPacket, EthernetRepr, ETHERNET_HEADER_LEN};
pub use ipv4::{Ipv4Packet, Ipv4Repr, IPV4_HEADER_LEN};
pub use ipv6::{Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN};
pub use udp::{UdpPacket, UdpRepr, UDP_HEADER_LEN};
pub use vxlan::{VxlanPacket, VxlanRepr, VXLAN_HEADER_LEN};

/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
