#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `vxnet explain --pcap`: kernel captures, pcapng, cooked captures, mixed captures.

mod explain_support;

use explain_support::*;
use serde_json::Value;

fn explain_json(path: &str, extra: &[&str]) -> Value {
    let mut args = vec!["explain", "--json", "--pcap", path];
    args.extend_from_slice(extra);
    let out = vxnet(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn vnis(doc: &Value) -> Vec<u64> {
    doc["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["vni"].as_u64().unwrap())
        .collect()
}

#[test]
fn kernel_fixtures_explain_four_packets_each_with_vni_42() {
    for (name, vxlan_at) in [
        ("kernel-vxlan-ipv4.pcap", 42),
        ("kernel-vxlan-ipv6.pcap", 62),
    ] {
        let path = encap_fixture(name);
        let out = vxnet(&["explain", "--pcap", &path]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("4 packets, 4 VXLAN"), "{name}:\n{text}");
        assert_eq!(text.matches(", VNI 42,").count(), 4, "{name}");
        assert!(text.contains("ARP who-has 172.17.0.3 tell 172.17.0.2"));
        assert!(text.contains("ICMPv4 echo request") && text.contains("ICMPv4 echo reply"));
        assert!(!text.contains('\x1b'));

        let doc = explain_json(&path, &[]);
        assert_eq!(vnis(&doc), [42, 42, 42, 42]);
        assert_eq!(doc["source"]["format"], "pcap");
        assert!(doc["skipped"].as_array().unwrap().is_empty());
        for p in doc["packets"].as_array().unwrap() {
            let vxlan = p["layers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["name"] == "VXLAN")
                .unwrap();
            assert_eq!(vxlan["offset"], vxlan_at, "{name}");
        }
        let overhead = doc["packets"][0]["overhead"].as_u64().unwrap();
        assert_eq!(overhead, if vxlan_at == 42 { 50 } else { 70 });
    }
}

#[test]
fn pcapng_written_by_tshark_is_read() {
    // Committed fixture: `tshark -r kernel-vxlan-ipv4.pcap -F pcapng -w kernel-vxlan-ipv4.pcapng`.
    let doc = explain_json(&ctl_fixture("kernel-vxlan-ipv4.pcapng"), &[]);
    assert_eq!(doc["source"]["format"], "pcapng");
    assert_eq!(vnis(&doc), [42, 42, 42, 42]);
}

#[test]
fn pcapng_made_now_by_tshark_is_read() {
    let Ok(status) = std::process::Command::new("tshark")
        .arg("--version")
        .output()
    else {
        eprintln!("tshark not installed; the committed pcapng fixture covers this");
        return;
    };
    assert!(status.status.success());
    let dir = scratch("pcapng_made_now_by_tshark_is_read");
    let out = dir.join("v6.pcapng");
    let converted = std::process::Command::new("tshark")
        .args([
            "-r",
            &encap_fixture("kernel-vxlan-ipv6.pcap"),
            "-F",
            "pcapng",
            "-w",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        converted.status.success(),
        "{}",
        String::from_utf8_lossy(&converted.stderr)
    );
    let doc = explain_json(out.to_str().unwrap(), &[]);
    assert_eq!(doc["source"]["format"], "pcapng");
    assert_eq!(vnis(&doc), [42, 42, 42, 42]);
}

#[test]
fn mixed_capture_lists_what_it_skipped_and_why() {
    let mut bad_flags = vxlan_packet(7, 4789);
    bad_flags[42] = 0x00; // I flag clear
    let packets = vec![
        arp_request(),
        vxlan_packet(42, 4789),
        udp_packet(53, b"\x12\x34 not dns really"),
        tcp_packet(),
        bad_flags,
        vxlan_packet(100, 8472),
        vxlan_packet(5000, 9999),
    ];
    let dir = scratch("mixed_capture_lists_what_it_skipped_and_why");
    let path = dir.join("mixed.pcap");
    std::fs::write(&path, pcap(LINKTYPE_ETHERNET, &packets)).unwrap();
    let path = path.to_str().unwrap();

    let doc = explain_json(path, &[]);
    assert_eq!(vnis(&doc), [42, 100]);
    let skipped: Vec<(u64, String)> = doc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["frame"].as_u64().unwrap(),
                s["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let frames: Vec<u64> = skipped.iter().map(|s| s.0).collect();
    assert_eq!(frames, [1, 3, 4, 5, 7]);
    assert!(
        skipped[0].1.contains("not IP") && skipped[0].1.contains("ARP"),
        "{skipped:?}"
    );
    assert!(
        skipped[1].1.contains("-> 53: not a VXLAN port"),
        "{skipped:?}"
    );
    assert!(
        skipped[2].1.contains("not UDP") && skipped[2].1.contains("TCP"),
        "{skipped:?}"
    );
    assert!(skipped[3].1.contains("I flag is clear"), "{skipped:?}");
    assert!(skipped[4].1.contains("-> 9999"), "{skipped:?}");

    let text = stdout(&vxnet(&["explain", "--pcap", path]));
    assert!(text.contains("7 packets, 2 VXLAN"), "{text}");
    assert!(text.contains("Skipped (not VXLAN)"));
    assert!(text.contains("packet    1: not IP"), "{text}");

    // --port adds a VXLAN port.
    let doc = explain_json(path, &["--port", "9999"]);
    assert_eq!(vnis(&doc), [42, 100, 5000]);
}

#[test]
fn linux_cooked_sll2_capture_is_read() {
    // `tcpdump -i any` writes LINKTYPE_LINUX_SLL2: a 20-byte header instead of Ethernet.
    let packet = vxlan_packet(42, 4789);
    let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6];
    sll2.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 0x0a, 0, 0]);
    sll2.extend_from_slice(&packet[14..]);
    let dir = scratch("linux_cooked_sll2_capture_is_read");
    let path = dir.join("any.pcap");
    std::fs::write(&path, pcap(LINKTYPE_LINUX_SLL2, &[sll2])).unwrap();
    let doc = explain_json(path.to_str().unwrap(), &[]);
    assert_eq!(vnis(&doc), [42]);
    let layers = doc["packets"][0]["layers"].as_array().unwrap();
    assert_eq!(layers[0]["name"], "Linux cooked capture (SLL2)");
    let vxlan = layers.iter().find(|l| l["name"] == "VXLAN").unwrap();
    assert_eq!(vxlan["offset"], 20 + 20 + 8);
}

/// Every checksum verdict of an explanation, as `layer field: state`.
fn checks(doc: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for p in doc["packets"].as_array().unwrap() {
        for l in p["layers"].as_array().unwrap() {
            for f in l["fields"].as_array().unwrap() {
                if let Some(state) = f["check"]["state"].as_str() {
                    found.push(format!(
                        "{} {}: {state}",
                        l["name"].as_str().unwrap(),
                        f["name"].as_str().unwrap()
                    ));
                }
            }
        }
    }
    found
}

/// Captures tcpdump took on veths with default offloads (`tests/explain_capture.rs` made them):
/// every packet is explained, nothing is called wrong, and each kind of sender leaves its own
/// signature. Before, every one of these was rejected ("no VXLAN packets").
#[test]
fn captures_with_checksums_left_to_offload_are_explained_in_full() {
    for sender in ["kernel", "vxnet"] {
        for family in ["ipv4", "ipv6"] {
            for side in ["sender", "receiver"] {
                let name = format!("offload-{sender}-{family}-{side}.pcap");
                let doc = explain_json(&ctl_fixture(&name), &[]);
                let packets = doc["packets"].as_array().unwrap();
                assert_eq!(packets.len(), 7, "{name}: {}", doc["skipped"]);
                assert_eq!(doc["source"]["total_packets"], 7, "{name}");
                let checks = checks(&doc);
                let has = |c: &str| checks.iter().any(|x| x == c);
                assert!(
                    !checks.iter().any(|c| c.ends_with("wrong")),
                    "{name}: {checks:?}"
                );
                if family == "ipv6" {
                    // IPv6 needs the outer UDP checksum; the veth never completes it.
                    assert!(
                        has("outer UDP checksum: left_to_offload"),
                        "{name}: {checks:?}"
                    );
                }
                match sender {
                    // The kernel leaves its inner TCP checksum to the NIC and (with an inner
                    // checksum pending) sums the outer one ahead by LCO.
                    "kernel" => {
                        assert!(
                            has("inner TCP checksum: left_to_offload"),
                            "{name}: {checks:?}"
                        );
                        if family == "ipv4" {
                            assert!(
                                has("outer UDP checksum: verified_with_inner_completed"),
                                "{name}: {checks:?}"
                            );
                        }
                    }
                    // vxnet completes inner checksums itself; its outer ones are the kernel's
                    // UDP socket's, left to offload.
                    _ => {
                        assert!(has("inner TCP checksum: verified"), "{name}: {checks:?}");
                        assert!(!has("inner TCP checksum: left_to_offload"), "{name}");
                        assert!(
                            has("outer UDP checksum: left_to_offload"),
                            "{name}: {checks:?}"
                        );
                        for p in packets {
                            let note = p["layers"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .find(|l| l["name"] == "outer UDP")
                                .unwrap()["fields"][0]["note"]
                                .as_str()
                                .unwrap()
                                .to_owned();
                            assert!(
                                note.contains("vxnet sends this flow from this port"),
                                "{name}: {note}"
                            );
                        }
                    }
                }
                // One superframe per fixture, bigger than the MTU, said so.
                let big: Vec<&Value> = packets
                    .iter()
                    .filter(|p| p["captured_len"].as_u64().unwrap() > 1514)
                    .collect();
                assert_eq!(big.len(), 1, "{name}");
                let remarks = big[0]["remarks"].to_string();
                assert!(
                    remarks.contains("more than a 1500-byte MTU"),
                    "{name}: {remarks}"
                );
                if sender == "vxnet" {
                    assert!(remarks.contains("a UDP GSO send"), "{name}: {remarks}");
                }
            }
        }
    }

    let text = stdout(&vxnet(&[
        "explain",
        "--pcap",
        &ctl_fixture("offload-kernel-ipv4-sender.pcap"),
    ]));
    assert!(text.contains("7 packets, 7 VXLAN"), "{text}");
    assert!(
        text.contains("left to checksum offload (not verified)"),
        "{text}"
    );
    assert!(!text.contains("WRONG"), "{text}");
}

#[test]
fn fixture_without_vxlan_gives_the_reasons_counted() {
    let out = vxnet(&["explain", "--pcap", &ctl_fixture("no-vxlan.pcap")]);
    assert_one_error_line(
        &out,
        "among its 6 packets: 2 not UDP (ICMPv6); 2 not IP (ARP); 2 not UDP (ICMP)",
    );
}

/// A wrong checksum is shown as wrong, with the value it should hold, and the packet is still
/// explained; a zero outer UDP checksum over IPv4 stays "none".
#[test]
fn wrong_checksums_are_shown_and_the_packet_still_explained() {
    let fixture = std::fs::read(ctl_fixture("offload-kernel-ipv6-sender.pcap")).unwrap();
    // The first record's packet starts after the 24-byte file header and a 16-byte record
    // header; outer UDP checksum at 14 + 40 + 6, inner ICMPv6 checksum at 14 + 40 + 8 + 8 + 14 + 40 + 2.
    let mut bytes = fixture.clone();
    let packet = 24 + 16;
    bytes[packet + 60] ^= 0x55;
    bytes[packet + 126] ^= 0x0f;
    let dir = scratch("wrong_checksums");
    let path = dir.join("wrong.pcap");
    std::fs::write(&path, &bytes).unwrap();
    let doc = explain_json(path.to_str().unwrap(), &[]);
    assert_eq!(
        doc["packets"].as_array().unwrap().len(),
        7,
        "{}",
        doc["skipped"]
    );
    let first = &doc["packets"][0];
    let verdicts = checks(&serde_json::json!({ "packets": [first] }));
    assert_eq!(
        verdicts,
        ["outer UDP checksum: wrong", "inner ICMPv6 checksum: wrong"],
        "{first}"
    );
    let remarks = first["remarks"].to_string();
    assert!(
        remarks.contains("outer UDP checksum") && remarks.contains("is WRONG (should be 0x"),
        "{remarks}"
    );

    // Zero over IPv4 is "none (allowed)": vxnet-encap's IPv4 packets carry none.
    let zero = vxlan_packet(42, 4789);
    let path = dir.join("zero.pcap");
    std::fs::write(&path, pcap(LINKTYPE_ETHERNET, &[zero])).unwrap();
    let doc = explain_json(path.to_str().unwrap(), &[]);
    assert_eq!(checks(&doc)[1], "outer UDP checksum: none");
    let text = stdout(&vxnet(&["explain", "--pcap", path.to_str().unwrap()]));
    assert!(text.contains("none (allowed)"), "{text}");
}

/// An inner UDP datagram whose checksum holds only the pseudo-header sum (what a container's
/// stack leaves for the NIC) is explained, the field marked as left to offload.
#[test]
fn inner_udp_checksum_left_to_offload() {
    use vxnet_encap::checksum::pseudo_header_v4;
    let mut inner = Vec::new();
    etherparse::PacketBuilder::ethernet2(
        [0x02, 0x42, 0xac, 0x11, 0, 2],
        [0x02, 0x42, 0xac, 0x11, 0, 3],
    )
    .ipv4([172, 17, 0, 2], [172, 17, 0, 3], 64)
    .udp(40_000, 53)
    .write(&mut inner, b"a DNS query, say")
    .unwrap();
    let udp_len = inner.len() - 14 - 20;
    let pseudo = pseudo_header_v4(
        [172, 17, 0, 2].into(),
        [172, 17, 0, 3].into(),
        17,
        udp_len as u32,
    );
    inner[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&pseudo.fold().to_be_bytes());
    let mut outer = vxlan_packet(42, 4789);
    outer.truncate(50);
    outer.extend_from_slice(&inner);
    // Fix the outer lengths for the new inner frame (IPv4 total length, header checksum, UDP length).
    let ip_len = (outer.len() - 14) as u16;
    outer[16..18].copy_from_slice(&ip_len.to_be_bytes());
    outer[24..26].fill(0);
    let sum = vxnet_encap::checksum::checksum(&outer[14..34]);
    outer[24..26].copy_from_slice(&sum.to_be_bytes());
    outer[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());

    let dir = scratch("inner_udp_left_to_offload");
    let path = dir.join("udp.pcap");
    std::fs::write(&path, pcap(LINKTYPE_ETHERNET, &[outer])).unwrap();
    let doc = explain_json(path.to_str().unwrap(), &[]);
    assert_eq!(
        checks(&doc),
        [
            "outer IPv4 header checksum: verified",
            "outer UDP checksum: none",
            "inner IPv4 header checksum: verified",
            "inner UDP checksum: left_to_offload"
        ]
    );
    assert!(doc["packets"][0]["summary"]
        .as_str()
        .unwrap()
        .contains("UDP 40000 -> 53"));
}
