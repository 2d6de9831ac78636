use thiserror::Error;

/// The protocol layer a length or format problem was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    OuterEthernet,
    OuterIpv4,
    OuterIpv6,
    OuterUdp,
    Vxlan,
    InnerEthernet,
    InnerVlan,
    InnerIpv4,
    InnerIpv6,
    InnerTcp,
    InnerUdp,
    VirtioNet,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layer::OuterEthernet => "outer Ethernet",
            Layer::OuterIpv4 => "outer IPv4",
            Layer::OuterIpv6 => "outer IPv6",
            Layer::OuterUdp => "outer UDP",
            Layer::Vxlan => "VXLAN",
            Layer::InnerEthernet => "inner Ethernet",
            Layer::InnerVlan => "inner 802.1Q",
            Layer::InnerIpv4 => "inner IPv4",
            Layer::InnerIpv6 => "inner IPv6",
            Layer::InnerTcp => "inner TCP",
            Layer::InnerUdp => "inner UDP",
            Layer::VirtioNet => "virtio-net",
        })
    }
}

/// Why a received packet is not a usable VXLAN packet. Every variant is a drop reason the data
/// plane counts separately, so they stay distinct rather than collapsing into "malformed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecapError {
    #[error("{layer} header truncated: {required} bytes required, {actual} present")]
    Truncated {
        layer: Layer,
        required: usize,
        actual: usize,
    },
    #[error("VXLAN I flag is clear (flags byte {flags:#04x})")]
    MissingIFlag { flags: u8 },
    #[error("outer EtherType {ethertype:#06x} is neither IPv4 nor IPv6")]
    NotIp { ethertype: u16 },
    #[error("outer IPv4 header is malformed: {reason}")]
    BadIpv4Header { reason: &'static str },
    #[error("outer IPv4 header checksum is wrong")]
    BadIpv4Checksum,
    #[error("outer IPv4 packet is a fragment (VTEPs must not fragment)")]
    Fragmented,
    #[error("outer IP protocol {protocol} is not UDP")]
    NotUdp { protocol: u8 },
    #[error(
        "outer UDP length {udp_len} disagrees with the {available} bytes the IP header carries"
    )]
    BadUdpLength { udp_len: usize, available: usize },
    #[error("outer UDP checksum is wrong")]
    BadUdpChecksum,
    #[error("outer UDP checksum is zero over IPv6 (RFC 6935 exemption not enabled)")]
    ZeroUdpChecksumIpv6,
}

/// Why a frame could not be encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EncapError {
    #[error("{needed} bytes of headroom needed in front of the frame, {available} available")]
    NoHeadroom { needed: usize, available: usize },
    #[error("inner frame of {len} bytes is shorter than an Ethernet header")]
    InnerTooShort { len: usize },
    #[error(
        "encapsulated packet of {len} bytes exceeds the {limit}-byte limit of the outer header"
    )]
    TooLong { len: usize, limit: usize },
    #[error("outer addresses mix IPv4 and IPv6")]
    MixedAddressFamilies,
}

/// Why a TAP frame could not be prepared for the wire (checksum completion / TSO segmentation).
/// Offsets and lengths count from the inner Ethernet header, as the virtio-net header's do on a TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OffloadError {
    #[error("{layer} header truncated: {required} bytes required, {actual} present")]
    Truncated {
        layer: Layer,
        required: usize,
        actual: usize,
    },
    #[error("inner EtherType {ethertype:#06x} is neither IPv4 nor IPv6")]
    NotIp { ethertype: u16 },
    #[error("{layer} header is malformed: {reason}")]
    BadHeader { layer: Layer, reason: &'static str },
    #[error("inner IP protocol / next header {protocol} is not TCP")]
    NotTcp { protocol: u8 },
    #[error("inner IP protocol / next header {protocol} is not UDP")]
    NotUdp { protocol: u8 },
    #[error(
        "a {ip_len}-byte segment exceeds the {max}-byte inner IP packets the underlay carries"
    )]
    SegmentTooBig { ip_len: usize, max: usize },
    #[error("inner IPv4 packet is a fragment")]
    Fragment,
    #[error("virtio-net gso_type {gso_type:#04x} is not supported")]
    UnsupportedGsoType { gso_type: u8 },
    #[error("virtio-net gso_type {gso_type:#04x} does not match the inner IPv{ip_version} packet")]
    GsoTypeMismatch { gso_type: u8, ip_version: u8 },
    #[error("virtio-net gso_size is 0 on a GSO frame")]
    GsoSizeZero,
    #[error("segment payload size (MSS) is 0")]
    MssZero,
    #[error(
        "checksum field at csum_start {csum_start} + csum_offset {csum_offset} does not fit the {frame_len}-byte frame"
    )]
    BadChecksumOffsets {
        csum_start: u16,
        csum_offset: u16,
        frame_len: usize,
    },
    #[error(
        "virtio-net csum_start {csum_start} is not the inner TCP/UDP header offset {tcp_offset}"
    )]
    CsumStartMismatch { csum_start: u16, tcp_offset: usize },
    #[error(
        "frame of {actual} bytes is not the {planned}-byte frame the segmentation was planned for"
    )]
    FrameChanged { planned: usize, actual: usize },
    #[error("output buffer of {available} bytes is too small: {required} required")]
    OutputTooSmall { required: usize, available: usize },
}

/// Why a frame is not an ARP request or IPv6 neighbour solicitation vxnet can answer (the
/// frame is then forwarded as it came).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NeighborError {
    #[error("{what} truncated: {required} bytes required, {actual} present")]
    Truncated {
        what: &'static str,
        required: usize,
        actual: usize,
    },
    #[error("not answered: {0}")]
    Unsupported(&'static str),
}
