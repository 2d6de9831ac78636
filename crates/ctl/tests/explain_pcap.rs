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
