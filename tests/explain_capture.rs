//! `vxnet explain` on the captures people actually take: tcpdump on a veth with its offloads as
//! shipped (no `ethtool -K … tx off`), on the sending and on the receiving host, over IPv4 and
//! IPv6, with the kernel's vxlan and with vxnet sending. Such captures hold checksums left to
//! checksum offload (the pseudo-header sum only) and GSO superframes; every VXLAN packet in them
//! must be explained. Also `explain --live` on the same kind of link, and a capture without VXLAN.
//!
//! `VXNET_WRITE_FIXTURES=DIR` makes the captures tests also write a few packets of each capture
//! into DIR (`editcap`, from tshark's package): that is how `crates/ctl/tests/fixtures/offload-*`
//! and `no-vxlan.pcap` were made (`VXNET_WRITE_FIXTURES=$PWD/crates/ctl/tests/fixtures cargo test --test
//! explain_capture`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use vxnet_tests::*;

const KB: u64 = 1 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    Kernel,
    Vxnet,
}

/// Overlay addresses of hosts 0 and 1, and the prefix length.
fn overlay(family: Family) -> (&'static str, &'static str, u8) {
    match family {
        Family::V4 => ("10.1.0.1", "10.1.0.2", 24),
        Family::V6 => ("fd01::1", "fd01::2", 64),
    }
}

fn explain_json(pcap: &Path) -> Value {
    let out = Command::new(vxnet_bin())
        .args(["explain", "--json", "--pcap"])
        .arg(pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "explain {}: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every checksum verdict in an explanation, as (layer, field, state).
fn checks(doc: &Value) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for packet in doc["packets"].as_array().unwrap() {
        for layer in packet["layers"].as_array().unwrap() {
            for field in layer["fields"].as_array().unwrap() {
                if let Some(state) = field["check"]["state"].as_str() {
                    found.push((
                        layer["name"].as_str().unwrap().to_owned(),
                        field["name"].as_str().unwrap().to_owned(),
                        state.to_owned(),
                    ));
                }
            }
        }
    }
    found
}

/// Asserts that every packet of `pcap` (captured with `udp port 4789`) is explained, that none
/// has a wrong checksum, and that some field was left to offload (the case this is about).
fn assert_all_explained(what: &str, pcap: &Path) -> Value {
    let doc = explain_json(pcap);
    let total = doc["source"]["total_packets"].as_u64().unwrap();
    let explained = doc["packets"].as_array().unwrap().len() as u64;
    assert!(total >= 4, "{what}: only {total} packets captured");
    assert_eq!(
        explained, total,
        "{what}: {explained} of {total} VXLAN packets explained; skipped: {}",
        doc["skipped"]
    );
    let checks = checks(&doc);
    if let Some(keep) = std::env::var_os("VXNET_KEEP_CAPTURES") {
        let dest = PathBuf::from(keep).join(what.replace([',', ' '], "_"));
        std::fs::copy(pcap, dest.with_extension("pcap")).unwrap();
    }
    let wrong: Vec<_> = checks.iter().filter(|c| c.2 == "wrong").collect();
    assert!(wrong.is_empty(), "{what}: wrong checksums {wrong:?}");
    assert!(
        checks.iter().any(|c| c.2 == "left_to_offload"),
        "{what}: no checksum left to offload, so the capture did not test the case: {checks:?}"
    );
    doc
}

/// Writes a small fixture `name` from `pcap`, when asked to: its first three packets without
/// TCP inside, its first three small TCP ones (where the inner checksum is left to offload), and
/// its smallest superframe up to 8000 bytes (a GSO/GRO frame bigger than the MTU).
fn write_fixture(pcap: &Path, name: &str) {
    let Some(dir) = std::env::var_os("VXNET_WRITE_FIXTURES") else {
        return;
    };
    let doc = explain_json(pcap);
    let packets = doc["packets"].as_array().unwrap();
    let is_tcp = |p: &&Value| p["summary"].as_str().unwrap().contains(" TCP ");
    let len = |p: &Value| p["captured_len"].as_u64().unwrap();
    let mut keep: Vec<&Value> = packets.iter().filter(|p| !is_tcp(p)).take(3).collect();
    keep.extend(
        packets
            .iter()
            .filter(|p| is_tcp(p) && len(p) <= 400)
            .take(3),
    );
    keep.extend(
        packets
            .iter()
            .filter(|p| (1515..=8000).contains(&len(p)))
            .min_by_key(|p| len(p)),
    );
    let mut frames: Vec<u64> = keep.iter().map(|p| p["frame"].as_u64().unwrap()).collect();
    frames.sort_unstable();
    let frames: Vec<String> = frames.iter().map(u64::to_string).collect();
    let out = PathBuf::from(dir).join(name);
    must(&format!(
        "editcap -F pcap -r {} {} {}",
        pcap.display(),
        out.display(),
        frames.join(" ")
    ));
}

/// Two hosts on a switched underlay, default offloads everywhere; host 0 sends to host 1 over
/// VNI 42 (ping, then 512 KB of TCP, which both directions carry), and both underlays are
/// captured. Every VXLAN packet of both captures must be explained.
fn capture_both_sides(test: &str, family: Family, sender: Sender) {
    if !have_tool(test, "tcpdump") {
        return;
    }
    let Some(lab) = Lab::lan(test, 2, family) else {
        return;
    };
    let (a, b) = (lab.host(0).underlay, lab.host(1).underlay);
    let (ip_a, ip_b, prefix) = overlay(family);
    let _engines: Vec<Vxnet> = match sender {
        Sender::Kernel => {
            for (i, local, remote, ip) in [(0, a, b, ip_a), (1, b, a, ip_b)] {
                lab.host(i).must(&format!(
                    "ip link add vx0 type vxlan id 42 dstport 4789 local {local} remote {remote} \
                     dev eth0 && ip addr add {ip}/{prefix} dev vx0 nodad && ip link set vx0 up"
                ));
            }
            Vec::new()
        }
        Sender::Vxnet => [(0, a, b, ip_a), (1, b, a, ip_b)]
            .into_iter()
            .map(|(i, local, remote, ip)| {
                let engine = lab.vxnet(
                    i,
                    &format!("h{i}"),
                    &format!(
                        "--vni 42 --dev vx0 --local {local} --remote {remote} --address {ip}/{prefix}"
                    ),
                );
                if family == Family::V6 {
                    // vxnet adds the address with DAD; the receiver cannot bind it before.
                    let settled = wait_for(Duration::from_secs(5), || {
                        lab.host(i)
                            .sh("ip -6 addr show dev vx0 tentative")
                            .stdout
                            .is_empty()
                    });
                    assert!(settled, "{ip} stayed tentative (DAD)");
                }
                engine
            })
            .collect(),
    };
    let dumps = [
        Capture::file(&lab, 0, "sender", "eth0", "udp port 4789"),
        Capture::file(&lab, 1, "receiver", "eth0", "udp port 4789"),
    ];
    assert!(lab.host(0).ping(ip_b, 2), "{test}: overlay ping");
    transfer_checked(
        test,
        lab.host(0),
        lab.host(1),
        SocketAddr::new(ip_b.parse().unwrap(), 5001),
        512 * KB,
    );
    let [sent, received] = dumps.map(Capture::finish);

    let family_name = if family == Family::V4 { "ipv4" } else { "ipv6" };
    let sender_name = if sender == Sender::Kernel {
        "kernel"
    } else {
        "vxnet"
    };
    for (side, pcap) in [("sender", &sent), ("receiver", &received)] {
        let what = format!("{test}, {side} side");
        let doc = assert_all_explained(&what, pcap);
        if sender == Sender::Vxnet {
            // Every outer source port is one vxnet's engine binds: the note says so.
            for p in doc["packets"].as_array().unwrap() {
                let udp = p["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|l| l["name"] == "outer UDP")
                    .unwrap();
                let note = udp["fields"][0]["note"].as_str().unwrap();
                assert!(
                    note.contains("vxnet sends this flow from this port"),
                    "{what}: frame {}: {note}",
                    p["frame"]
                );
            }
        }
        write_fixture(
            pcap,
            &format!("offload-{sender_name}-{family_name}-{side}.pcap"),
        );
    }
}

#[test]
fn kernel_sender_ipv4_default_offloads() {
    capture_both_sides("explain_cap_k4", Family::V4, Sender::Kernel);
}

#[test]
fn kernel_sender_ipv6_default_offloads() {
    capture_both_sides("explain_cap_k6", Family::V6, Sender::Kernel);
}

#[test]
fn vxnet_sender_ipv4_default_offloads() {
    capture_both_sides("explain_cap_v4", Family::V4, Sender::Vxnet);
}

#[test]
fn vxnet_sender_ipv6_default_offloads() {
    capture_both_sides("explain_cap_v6", Family::V6, Sender::Vxnet);
}

/// A capture of the underlay without its VXLAN traffic: the error counts what it held instead.
#[test]
fn capture_without_vxlan_says_why_with_counts() {
    let test = "explain_cap_none";
    if !have_tool(test, "tcpdump") {
        return;
    }
    let Some(lab) = Lab::lan(test, 2, Family::V4) else {
        return;
    };
    let dump = Capture::file(&lab, 1, "plain", "eth0", "not udp port 4789");
    // Underlay ping (ARP + ICMP) and one UDP datagram to port 5353.
    assert!(lab.host(0).ping("10.0.0.2", 2));
    lab.host(0)
        .must("bash -c \"printf hello > /dev/udp/10.0.0.2/5353\"");
    let pcap = dump.finish();

    let out = Command::new(vxnet_bin())
        .args(["explain", "--pcap"])
        .arg(&pcap)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("no VXLAN packets"),
        "{err}"
    );
    assert!(err.contains("not IP (ARP)"), "{err}");
    assert!(err.contains("not UDP (ICMP)"), "{err}");
    if let Some(dir) = std::env::var_os("VXNET_WRITE_FIXTURES") {
        must(&format!(
            "editcap -F pcap -r {} {} 1-6",
            pcap.display(),
            PathBuf::from(dir).join("no-vxlan.pcap").display()
        ));
    }
}

/// `explain --live eth0` on the receiving host of a kernel pair with default offloads: JSON
/// lines, one per VXLAN packet, stopping by itself after --count; Ctrl-C stops it too.
/// `vxnet explain --live eth0 ARGS` in namespace `ns`, its output piped.
fn explain_live(ns: &str, args: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(vxnet_bin())
        .args(["explain", "--live", "eth0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The JSON documents of a `--count 3 --json` live capture, once it ended successfully: three,
/// numbered 1, 2, 3.
fn three_frames(capture: Child) -> Vec<Value> {
    let out = capture.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 3, "{text}");
    let frames: Vec<u64> = docs.iter().map(|d| d["frame"].as_u64().unwrap()).collect();
    assert_eq!(frames, [1, 2, 3], "{text}");
    docs
}

#[test]
fn live_capture_explains_packets_as_they_pass() {
    let test = "explain_live";
    let Some(lab) = Lab::lan(test, 2, Family::V4) else {
        return;
    };
    let (a, b) = (lab.host(0).underlay, lab.host(1).underlay);
    for (i, local, remote, ip) in [(0, a, b, "10.1.0.1"), (1, b, a, "10.1.0.2")] {
        lab.host(i).must(&format!(
            "ip link add vx0 type vxlan id 42 dstport 4789 local {local} remote {remote} dev eth0 \
             && ip addr add {ip}/24 dev vx0 && ip link set vx0 up"
        ));
    }
    let live = |args: &[&str]| explain_live(&lab.host(1).ns, args);
    let capture = live(&["--count", "3", "--json"]);
    std::thread::sleep(Duration::from_millis(300));
    // Frames that are not VXLAN pass first (pings on the underlay itself): the packets shown are
    // still numbered 1, 2, 3, by what is shown, not by every frame the socket saw.
    assert!(lab.host(0).ping(&b.to_string(), 2));
    // ARP + echo request + echo reply are three VXLAN packets on their own.
    assert!(lab.host(0).ping("10.1.0.2", 3));
    let docs = three_frames(capture);
    for doc in &docs {
        assert_eq!(doc["vni"], 42, "{doc}");
        assert!(doc["summary"].as_str().unwrap().contains("VNI 42"));
    }

    let mut capture = live(&["--count", "0"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(lab.host(0).ping("10.1.0.2", 1));
    let status = interrupt(&mut capture, Duration::from_secs(5)).expect("exits on Ctrl-C");
    let mut text = String::new();
    std::io::Read::read_to_string(capture.stdout.as_mut().unwrap(), &mut text).unwrap();
    assert!(status.success(), "{status:?}: {text}");
    assert!(text.starts_with("Capturing on eth0"), "{text}");
    assert!(text.contains("Packet "), "{text}");
    assert!(text.contains(" VXLAN packets explained"), "{text}");
}

/// The UDP payloads (ESP packets and a NAT keepalive) of the committed scapy capture.
fn scapy_esp_payloads() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/ctl/tests/fixtures/scapy-esp.pcap"
    );
    let file = std::fs::read(path).unwrap();
    // Classic little-endian pcap, Ethernet: 24-byte file header, 16 bytes before each record.
    assert_eq!(file[..4], [0xd4, 0xc3, 0xb2, 0xa1]);
    let mut at = 24;
    let mut payloads = Vec::new();
    while at + 16 <= file.len() {
        let len = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &file[at + 16..at + 16 + len];
        // Ethernet 14 + IPv4 20 + UDP 8.
        payloads.push(frame[42..].to_vec());
        at += 16 + len;
    }
    payloads
}

/// `explain --live eth0 --keys` on a host receiving encrypted VXLAN (scapy's ESP packets, sent
/// from a UDP socket on port 4500 of the other host): each one decrypted down to the inner ping,
/// with the keys in `vxnet sa show --json --keys` form.
#[test]
fn live_capture_decrypts_esp_in_udp_with_keys() {
    let test = "explain_live_esp";
    let Some(lab) = Lab::lan(test, 2, Family::V4) else {
        return;
    };
    let keys = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/ctl/tests/fixtures/scapy-esp.keys.json"
    );
    let capture = explain_live(&lab.host(1).ns, &["--count", "3", "--json", "--keys", keys]);
    std::thread::sleep(Duration::from_millis(500));
    let hex: Vec<String> = scapy_esp_payloads()
        .iter()
        .map(|p| p.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    lab.host(0).must(&format!(
        "/usr/bin/python3 -c \"import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
         s.bind(('0.0.0.0', 4500)); [s.sendto(bytes.fromhex(h), ('{}', 4500)) for h in sys.argv[1:]]\" {}",
        lab.host(1).underlay,
        hex.join(" ")
    ));
    let docs = three_frames(capture);
    for (doc, seq) in docs.iter().zip(1..) {
        assert_eq!(doc["esp"]["state"], "decrypted", "{doc}");
        assert_eq!(doc["esp"]["sequence"], seq);
        assert_eq!(doc["vni"], 42);
        assert!(doc["summary"]
            .as_str()
            .unwrap()
            .contains("ICMPv4 echo request"));
    }
}
