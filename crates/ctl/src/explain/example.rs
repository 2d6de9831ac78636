//! The worked example: one ping between two containers on two hosts, with the addresses `vxnet
//! demo` gives its two hosts (VTEPs 192.168.205.1 and .2, overlay 192.168.205.129 and .130), so
//! the example and the demo's captured packet read alike.
//!
//! The packet is made the way the data plane makes it: the inner frame is written behind
//! headroom, `encapsulate` writes the outer headers in front of it with the engine's own outer
//! policy (DF, TTL, TOS) and source-port choice, and the result is decoded again by
//! `decapsulate_ethernet`, exactly like a captured packet. `--vni`, `--local`, `--remote` and
//! `--df` change what `vxnet run` would be given.

use std::net::{IpAddr, Ipv4Addr};

use clap::builder::TypedValueParser as _;
use vxnet_encap::outer::{DfPolicy, OuterPolicy};

use etherparse::PacketBuilder;
use vxnet_dataplane::tuning::SourcePortRange;
use vxnet_encap::{encapsulate, flow, IpPair, MacAddr, OuterStack, Vni, MAX_OUTER_LEN};

use super::decode::{explain_frame, LinkType};
use super::esp::keys::KeyTable;
use super::esp::EspContext;
use super::model::{Explanation, Overhead, Source};
use super::ExplainError;

/// Overlay addresses, with MACs made from them the way Docker makes a container's (02:42 and
/// the four octets).
pub(super) const CONTAINER_A: (Ipv4Addr, [u8; 6]) = (
    Ipv4Addr::new(192, 168, 205, 129),
    [0x02, 0x42, 0xc0, 0xa8, 0xcd, 0x81],
);
pub(super) const CONTAINER_B: (Ipv4Addr, [u8; 6]) = (
    Ipv4Addr::new(192, 168, 205, 130),
    [0x02, 0x42, 0xc0, 0xa8, 0xcd, 0x82],
);
const HOST_A_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xcd, 0x00, 0x01];
const HOST_B_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xcd, 0x00, 0x02];

/// What the worked example is built with: the values `vxnet run` would be given.
#[derive(Debug, Clone, clap::Args)]
pub struct ExampleArgs {
    /// The worked example's VXLAN network identifier (0 to 16777215, as `vxnet run` takes).
    #[arg(long, value_name = "N", default_value_t = 42,
          value_parser = clap::value_parser!(u32).range(0..=16_777_215),
          conflicts_with_all = ["pcap", "live"])]
    pub vni: u32,
    /// Host A's underlay address in the worked example (IPv4 or IPv6, as `vxnet run --local`).
    #[arg(long, value_name = "IP", default_value = "192.168.205.1",
          conflicts_with_all = ["pcap", "live"])]
    pub local: IpAddr,
    /// Host B's underlay address in the worked example (the same family as --local).
    #[arg(long, value_name = "IP", default_value = "192.168.205.2",
          conflicts_with_all = ["pcap", "live"])]
    pub remote: IpAddr,
    /// The outer DF bit as `vxnet run --df` sets it (the engine's default: set).
    #[arg(long, value_name = "POLICY", default_value = "set",
          value_parser = clap::builder::PossibleValuesParser::new(["set", "unset", "inherit"])
              .try_map(|s: String| s.parse::<DfPolicy>()),
          conflicts_with_all = ["pcap", "live"])]
    pub df: DfPolicy,
}

#[cfg(test)]
impl Default for ExampleArgs {
    /// What `vxnet explain` builds without options.
    fn default() -> Self {
        use clap::{Args, FromArgMatches};
        // Through the whole `explain` command: the options' conflicts name its other options.
        let matches = super::ExplainArgs::augment_args(clap::Command::new("explain"))
            .try_get_matches_from(["explain"])
            .expect("the defaults parse");
        super::ExplainArgs::from_arg_matches(&matches)
            .expect("the defaults parse")
            .example
    }
}

impl ExampleArgs {
    fn ips(&self) -> Result<IpPair, ExplainError> {
        match (self.local, self.remote) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Ok(IpPair::V4 { src, dst }),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Ok(IpPair::V6 { src, dst }),
            (local, remote) => Err(ExplainError::Example(format!(
                "--local {local} and --remote {remote} are of different address families"
            ))),
        }
    }
}
/// What `ping` puts in an echo request, shortened: enough to see the payload is carried as is.
const PING_PAYLOAD: &[u8] = b"vxnet explain: ping!";

/// The inner frame container A sends to container B: an ICMP echo request.
pub(super) fn inner_frame() -> Result<Vec<u8>, ExplainError> {
    let builder = PacketBuilder::ethernet2(CONTAINER_A.1, CONTAINER_B.1)
        .ipv4(CONTAINER_A.0.octets(), CONTAINER_B.0.octets(), 64)
        .icmpv4_echo_request(0x1d2c, 1);
    let mut frame = Vec::with_capacity(builder.size(PING_PAYLOAD.len()));
    builder
        .write(&mut frame, PING_PAYLOAD)
        .map_err(|e| ExplainError::Example(e.to_string()))?;
    Ok(frame)
}

/// The whole outer packet host A puts on the wire, built by the data plane's encapsulation.
pub(super) fn outer_packet(dst_port: u16, args: &ExampleArgs) -> Result<Vec<u8>, ExplainError> {
    let inner = inner_frame()?;
    let vni = Vni::new(args.vni).map_err(|e| ExplainError::Example(e.to_string()))?;
    // The port vxnet's engine sends this flow from: the one the flow hash picks in the default
    // srcport range (nothing else holding the port).
    let port = vxnet_dataplane::source_port::port_for_flow(
        flow::flow_hash(&inner),
        &SourcePortRange::default(),
    );
    let mut outer = OuterStack::new(args.ips()?, port, dst_port);
    outer.ethernet = Some((MacAddr(HOST_A_MAC), MacAddr(HOST_B_MAC)));
    // DF as the engine's outer policy decides it for this frame (its default sets DF: VTEPs
    // must not fragment, RFC 7348 section 4.3); TTL and TOS stay the socket's defaults.
    let policy = OuterPolicy {
        df: args.df,
        ..OuterPolicy::default()
    };
    outer.dont_fragment = policy.fields(&inner).df;
    let encapsulation = vxnet_encap::Encapsulation::with_outer(vni, outer);

    // The frame goes in behind headroom, as the data plane reads it from the TAP device.
    let mut buf = vec![0u8; MAX_OUTER_LEN + inner.len()];
    buf[MAX_OUTER_LEN..].copy_from_slice(&inner);
    let start = encapsulate(&mut buf, MAX_OUTER_LEN, &encapsulation)
        .map_err(|e| ExplainError::Example(e.to_string()))?;
    Ok(buf.split_off(start))
}

pub(super) fn worked_example(
    dst_port: u16,
    args: &ExampleArgs,
) -> Result<Explanation, ExplainError> {
    let bytes = outer_packet(dst_port, args)?;
    let mut no_esp = EspContext::new(Vec::new(), None);
    let packet = explain_frame(
        1,
        LinkType::Ethernet,
        &bytes,
        bytes.len(),
        &[dst_port],
        &mut no_esp,
    )
    .map_err(|skip| ExplainError::Example(skip.reason))?;
    Ok(Explanation {
        source: Source::WorkedExample {
            story: format!(
                "Container {} ({}) on host {} pings container {} ({}) on host {}. \
                 Both containers are in VXLAN network {}: host A wraps the container's \
                 Ethernet frame in UDP port {dst_port} to host B, which unwraps it and hands \
                 the untouched frame to container B. The outer header is what vxnet's engine \
                 sends with --df {}: {}.",
                CONTAINER_A.0,
                MacAddr(CONTAINER_A.1),
                args.local,
                CONTAINER_B.0,
                MacAddr(CONTAINER_B.1),
                args.remote,
                args.vni,
                args.df,
                match args.df {
                    DfPolicy::Set => "DF set, so no router fragments it on the way",
                    DfPolicy::Unset => "DF clear, so routers on the path may fragment it",
                    DfPolicy::Inherit => "DF copied from the inner packet",
                }
            ),
        },
        packets: vec![packet],
        skipped: Vec::new(),
        skipped_by_reason: Vec::new(),
        truncated: None,
        overhead: Overhead::standard(),
    })
}

/// The encrypted example's network key: fixed, so the example reads the same every time. It is a
/// teaching key, printed by `explain --encrypted --json`; never use it for a network.
const EXAMPLE_NETWORK_KEY: [u8; 32] = *b"vxnet explain --encrypted (demo)";
/// The random half of the sending worker's SPI (epoch 0, a static key file).
const EXAMPLE_SPI_RANDOM: u32 = 0x2c0f_fee5;
/// Where the SA's counter stands: past 2^32, so the example shows the high half of the 64-bit
/// sequence number that is never sent.
const EXAMPLE_SEQUENCE: u64 = (1 << 32) + 42;

/// The encrypted packet host A sends, sealed by the data plane's ESP code, with the SPI and key
/// material of its SA.
pub(super) fn encrypted_packet(
    esp_port: u16,
    args: &ExampleArgs,
) -> Result<
    (
        Vec<u8>,
        vxnet_encap::esp::Spi,
        vxnet_encap::esp::SaKeyMaterial,
    ),
    ExplainError,
> {
    use vxnet_encap::esp::transport::{seal_vxlan, VxlanPorts, HEADROOM};
    use vxnet_encap::esp::{KeyEpoch, NetworkKey, SaId, SealSa, Spi, MAX_TAILROOM};
    let example = |e: &dyn std::fmt::Display| ExplainError::Example(e.to_string());
    let inner = inner_frame()?;
    let vni = Vni::new(args.vni).map_err(|e| example(&e))?;
    let epoch = KeyEpoch(0);
    let id = SaId {
        epoch,
        spi: Spi::for_epoch(epoch, EXAMPLE_SPI_RANDOM),
        src: args.local,
        dst: args.remote,
    };
    let mut sa = SealSa::new(
        &NetworkKey::from_bytes(EXAMPLE_NETWORK_KEY),
        id,
        EXAMPLE_SEQUENCE,
    );
    // As the engine does: the frame behind ESP's headroom, tailroom behind it, sealed in place.
    let stripe = vxnet_dataplane::source_port::stripe_for_flow(flow::flow_hash(&inner));
    let frame = HEADROOM..HEADROOM + inner.len();
    let mut buf = vec![0u8; frame.end + MAX_TAILROOM];
    buf[frame.clone()].copy_from_slice(&inner);
    let ports = VxlanPorts {
        src: *stripe.start(),
        dst: vxnet_encap::DEFAULT_PORT,
    };
    let sealed = seal_vxlan(&mut sa, &mut buf, frame, vni, ports).map_err(|e| example(&e))?;
    // The engine hands the ESP packet to a UDP socket bound to the ESP port; the kernel writes
    // UDP and IP in front of it, as etherparse does here.
    // DF as the engine's outer policy sets it on its ESP sockets.
    let df = OuterPolicy {
        df: args.df,
        ..OuterPolicy::default()
    }
    .fields(&inner)
    .df;
    let ip = match args.ips()? {
        IpPair::V4 { src, dst } => {
            let mut header = etherparse::Ipv4Header::new(
                0,
                64,
                etherparse::IpNumber::UDP,
                src.octets(),
                dst.octets(),
            )
            .map_err(|e| example(&e))?;
            header.dont_fragment = df;
            etherparse::IpHeaders::Ipv4(header, Default::default())
        }
        IpPair::V6 { src, dst } => etherparse::IpHeaders::Ipv6(
            etherparse::Ipv6Header {
                hop_limit: 64,
                source: src.octets(),
                destination: dst.octets(),
                ..Default::default()
            },
            Default::default(),
        ),
    };
    let builder = PacketBuilder::ethernet2(HOST_A_MAC, HOST_B_MAC)
        .ip(ip)
        .udp(esp_port, esp_port);
    let esp = &buf[sealed.packet];
    let mut packet = Vec::with_capacity(builder.size(esp.len()));
    builder.write(&mut packet, esp).map_err(|e| example(&e))?;
    Ok((packet, id.spi, sa.key_material().clone()))
}

pub(super) fn encrypted_example(
    esp_port: u16,
    args: &ExampleArgs,
) -> Result<Explanation, ExplainError> {
    let (bytes, spi, material) = encrypted_packet(esp_port, args)?;
    let keys = KeyTable::single(spi, material, "the example's SA");
    let mut esp = EspContext::new(vec![esp_port], Some(keys));
    let packet = explain_frame(
        1,
        LinkType::Ethernet,
        &bytes,
        bytes.len(),
        &[vxnet_encap::DEFAULT_PORT],
        &mut esp,
    )
    .map_err(|skip| ExplainError::Example(skip.reason))?;
    Ok(Explanation {
        source: Source::WorkedExample {
            story: format!(
                "The same ping on an encrypted network: container {} on host {} pings container \
                 {} on host {}, VXLAN network {}. Host A wraps the frame in VXLAN and its UDP \
                 header as before, then seals that UDP packet as ESP (RFC 4303 transport mode, \
                 AES-256-GCM per RFC 4106) and sends it in UDP to port {esp_port} (RFC 3948), so \
                 NATs and firewalls see plain UDP. Host B finds the SA by its SPI, checks the \
                 sequence number against its replay window and the ICV, decrypts, and goes on as \
                 for plain VXLAN. An observer on the underlay sees only the clear layers; here \
                 the example's own key opens the rest (for a capture: --keys, from `vxnet sa \
                 show --json --keys`).",
                CONTAINER_A.0, args.local, CONTAINER_B.0, args.remote, args.vni
            ),
        },
        packets: vec![packet],
        skipped: Vec::new(),
        skipped_by_reason: Vec::new(),
        truncated: None,
        overhead: Overhead::encrypted(),
    })
}
