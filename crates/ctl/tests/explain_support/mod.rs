//! Shared helpers for the `vxnet explain` tests: run the binary, write small captures.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use vxnet_encap::encap::encapsulate_to_vec;
use vxnet_encap::{Encapsulation, IpPair, MacAddr, OuterStack, Vni};

pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

pub fn vxnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vxnet"))
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("run vxnet")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("utf-8 stderr")
}

pub fn encap_fixture(name: &str) -> String {
    format!(
        "{}/../encap/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

pub fn ctl_fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory unique to one test, under the target dir.
pub fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A classic little-endian pcap file, as tcpdump writes it.
pub fn pcap(linktype: u32, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&linktype.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        out.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// An inner ICMP echo request between the Docker example containers.
pub fn inner_ping() -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(
        [0x02, 0x42, 0xac, 0x11, 0, 2],
        [0x02, 0x42, 0xac, 0x11, 0, 3],
    )
    .ipv4([172, 17, 0, 2], [172, 17, 0, 3], 64)
    .icmpv4_echo_request(1, 1);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"ping").unwrap();
    frame
}

/// A whole Ethernet/IPv4/UDP/VXLAN packet to `dst_port`, made by vxnet-encap.
pub fn vxlan_packet(vni: u32, dst_port: u16) -> Vec<u8> {
    let mut outer = OuterStack::new(
        IpPair::new(
            IpAddr::V4(Ipv4Addr::new(192, 168, 205, 10)),
            IpAddr::V4(Ipv4Addr::new(192, 168, 205, 11)),
        )
        .unwrap(),
        50_000,
        dst_port,
    );
    outer.ethernet = Some((
        MacAddr([0x52, 0x54, 0, 0, 0, 0x0a]),
        MacAddr([0x52, 0x54, 0, 0, 0, 0x0b]),
    ));
    encapsulate_to_vec(
        &inner_ping(),
        &Encapsulation::with_outer(Vni::new(vni).unwrap(), outer),
    )
    .unwrap()
}

pub fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 0x0a, 0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 0x0a, 192, 168, 205, 10]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 192, 168, 205, 11]);
    f
}

pub fn udp_packet(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(
        [0x52, 0x54, 0, 0, 0, 0x0a],
        [0x52, 0x54, 0, 0, 0, 0x0b],
    )
    .ipv4([192, 168, 205, 10], [192, 168, 205, 11], 64)
    .udp(40_000, dst_port);
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).unwrap();
    frame
}

pub fn tcp_packet() -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(
        [0x52, 0x54, 0, 0, 0, 0x0a],
        [0x52, 0x54, 0, 0, 0, 0x0b],
    )
    .ipv4([192, 168, 205, 10], [192, 168, 205, 11], 64)
    .tcp(40_000, 4789, 1, 1024);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"").unwrap();
    frame
}

/// Exactly one stderr line, starting `error:`, non-zero exit, no panic.
pub fn assert_one_error_line(output: &Output, expect: &str) {
    let err = stderr(output);
    assert!(!output.status.success(), "exit status: {:?}", output.status);
    assert_eq!(err.lines().count(), 1, "stderr: {err:?}");
    assert!(err.starts_with("error: "), "stderr: {err:?}");
    assert!(err.contains(expect), "stderr {err:?} lacks {expect:?}");
    assert!(!err.contains("panicked"), "stderr: {err:?}");
    assert!(output.stdout.is_empty(), "stdout not empty on error");
}

/// The layer called `name` of a packet of `explain --json`.
pub fn layer<'a>(packet: &'a Value, name: &str) -> &'a Value {
    packet["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no layer {name}"))
}
