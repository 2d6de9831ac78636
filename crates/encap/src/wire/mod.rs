//! Zero-copy header views and their high-level representations.
//!
//! Each `XPacket<T>` wraps a buffer; `new_checked` runs `check_len` once, after which every accessor
//! indexes within the checked length and cannot panic. Byte ranges live in each module's `field`
//! module so the layout is written down exactly once, and every multi-byte field is read and
//! written through [`be`], the one big-endian reader. `XRepr` is the parsed, owned form used to
//! emit (TCP has a view only: vxnet rewrites segments, it never builds them).

/// Declares the header view `$name<T>` over a buffer, the smoltcp way: `new_unchecked` wraps,
/// `new_checked` wraps and runs the view's own `check_len` once. Written once here so every
/// view is built and checked alike.
macro_rules! header_view {
    ($(#[$meta:meta])* $name:ident, $error:ty) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps without checking: accessors are exact only after
            /// [`check_len`](Self::check_len).
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Wraps and runs [`check_len`](Self::check_len).
            pub fn new_checked(buffer: T) -> Result<Self, $error> {
                let packet = Self::new_unchecked(buffer);
                packet.check_len()?;
                Ok(packet)
            }
        }
    };
}

pub mod arp;
pub mod be;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod ndp;
pub mod tcp;
pub mod udp;
pub mod vxlan;

pub use arp::{ArpOperation, ArpPacket, ArpRepr, ARP_LEN};
pub use be::{be16, be32};
pub use ethernet::{
    EtherType, EthernetPacket, EthernetRepr, ETHERNET_HEADER_LEN, TAGGED_HEADER_LEN, VLAN_TAG_LEN,
};
pub use ipv4::{Ipv4Packet, Ipv4Repr, IPV4_HEADER_LEN, IPV4_MAX_HEADER_LEN};
pub use ipv6::{Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN};
pub use ndp::{NdpPacket, NdpRepr, NDP_HEADER_LEN};
pub use tcp::{TcpPacket, TCP_HEADER_LEN, TCP_MAX_HEADER_LEN};
pub use udp::{UdpPacket, UdpRepr, UDP_HEADER_LEN};
pub use vxlan::{VxlanPacket, VxlanRepr, VXLAN_HEADER_LEN};

/// `base + field`: a header's field range as an offset into the frame the header sits in.
pub(crate) const fn at(base: usize, field: std::ops::Range<usize>) -> std::ops::Range<usize> {
    base + field.start..base + field.end
}

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;
/// IP protocol number of UDP-Lite.
pub const IPPROTO_UDPLITE: u8 = 136;
