//! Sans-IO VXLAN (RFC 7348) wire code for vxnet.
//!
//! Nothing here touches a socket, a clock or `unsafe`: every function takes bytes and returns bytes,
//! typed facts or a typed error, so the whole crate is testable (and fuzzable) without root.
//!
//! - [`wire`]: zero-copy views over VXLAN, UDP, TCP, IPv4, IPv6 and Ethernet headers (smoltcp
//!   style: `new_checked` validates the length once, after which no accessor can panic), their
//!   `Repr`s, and the one checked big-endian reader ([`wire::be16`], [`wire::be32`]).
//! - [`encap`]: writes outer headers *in front of* a frame that already sits in a buffer with
//!   headroom, so the cost does not depend on the frame size.
//! - [`decap`]: validates a received datagram (or a whole outer packet) and returns VNI + inner frame.
//! - [`inner`]: the inner-frame facts a forwarder needs (MACs, EtherType, 802.1Q tag).
//! - [`flow`]: the flow hash that picks the outer UDP source port.
//! - [`esp`]: encrypted VXLAN as standard UDP-encapsulated ESP (AES-256-GCM): key schedule,
//!   seal/open in place, anti-replay window.
//! - [`offload`]: the virtio-net header, checksum completion, TSO segmentation of TAP superframes
//!   into one UDP GSO send, and GRO-style coalescing of received TCP segments back into superframes.
//! - [`icmp`]: the ICMP frag-needed / ICMPv6 packet-too-big replies of path-MTU signalling.
//! - [`neighbor`]: ARP requests and IPv6 neighbour solicitations answered by the VTEP.
//! - [`outer`]: the outer DF / TTL / TOS policy (`df`, `ttl`, `tos` as iproute2 names them).
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod checksum;
pub mod decap;
pub mod encap;
mod error;
pub mod esp;
pub mod flow;
pub mod icmp;
pub mod inner;
mod mac;
pub mod neighbor;
pub mod offload;
pub mod outer;
mod vni;
pub mod wire;

pub use decap::{decapsulate, decapsulate_ethernet, decapsulate_ip, Decapsulated, OuterPacket};
pub use encap::{encapsulate, Encapsulation, IpPair, OuterStack, UdpChecksum, MAX_OUTER_LEN};
pub use error::{DecapError, EncapError, Layer, NeighborError, OffloadError};
pub use flow::{flow_hash, source_port_for, SOURCE_PORT_RANGE};
pub use inner::InnerFrame;
pub use mac::{LinkAddr, MacAddr, MacParseError};
pub use vni::{Vni, VniError};

/// The IANA-assigned VXLAN UDP port (RFC 7348 §5).
pub const DEFAULT_PORT: u16 = 4789;
/// The pre-IANA port the Linux kernel uses when `dstport` is not given (and flannel still uses).
pub const LINUX_LEGACY_PORT: u16 = 8472;
/// Outer bytes a VXLAN packet adds over IPv4: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const OVERHEAD_IPV4: usize = wire::IPV4_HEADER_LEN
    + wire::UDP_HEADER_LEN
    + wire::VXLAN_HEADER_LEN
    + wire::ETHERNET_HEADER_LEN;
/// Outer bytes a VXLAN packet adds over IPv6: outer IPv6 (40) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const OVERHEAD_IPV6: usize = wire::IPV6_HEADER_LEN
    + wire::UDP_HEADER_LEN
    + wire::VXLAN_HEADER_LEN
    + wire::ETHERNET_HEADER_LEN;

const _: () = assert!(OVERHEAD_IPV4 == 50 && OVERHEAD_IPV6 == 70);
