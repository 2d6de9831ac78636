#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `vxnet explain` on encrypted VXLAN (ESP in UDP): captures sealed by vxnet's ESP code and by
//! scapy's (an implementation that is not ours), decrypted with keys in both accepted formats,
//! cross-checked with tshark; the worked example `--encrypted`; bad keys files.

mod explain_support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;

use explain_support::*;
use serde_json::Value;
use vxnet_encap::esp::transport::{seal_vxlan, VxlanPorts, HEADROOM};
use vxnet_encap::esp::{KeyEpoch, NetworkKey, SaId, SealSa, Spi, MAX_TAILROOM};
use vxnet_encap::Vni;

const WIRESHARK_GCM: &str = "AES-GCM with 16 octet ICV [RFC4106]";

fn explain_json(args: &[&str]) -> Value {
    let mut all = vec!["explain", "--json"];
    all.extend_from_slice(args);
    let out = vxnet(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn packets(doc: &Value) -> &Vec<Value> {
    doc["packets"].as_array().unwrap()
}

/// Every packet decrypted, VNI 42, an inner ICMP echo request, the given sequence numbers.
fn assert_decrypted(doc: &Value, sequences: &[u64], high_from: &str) {
    let ps = packets(doc);
    assert_eq!(ps.len(), sequences.len());
    for (p, seq) in ps.iter().zip(sequences) {
        assert_eq!(p["esp"]["state"], "decrypted", "{}", p["esp"]["detail"]);
        assert_eq!(p["esp"]["sequence"], *seq);
        assert_eq!(p["esp"]["sequence_high_from"], high_from);
        assert_eq!(p["vni"], 42);
        assert!(
            p["summary"]
                .as_str()
                .unwrap()
                .contains("ICMPv4 echo request"),
            "{}",
            p["summary"]
        );
        assert_eq!(layer(p, "inner ICMPv4")["fields"][0]["value"], 8);
        assert_eq!(layer(p, "ESP trailer (decrypted)")["len"], 2);
    }
}

#[test]
fn scapy_capture_decrypts_with_sa_show_json_and_with_wireshark_esp_sa() {
    let pcap = ctl_fixture("scapy-esp.pcap");
    for keys in ["scapy-esp.keys.json", "scapy-esp.esp_sa"] {
        let doc = explain_json(&["--pcap", &pcap, "--keys", &ctl_fixture(keys)]);
        // scapy's IVs are not the sequence number: the high half is inferred, from 0.
        assert_decrypted(&doc, &[1, 2, 3], "inferred");
        let plain = packets(&doc)[0]["decrypted_bytes"].as_str().unwrap();
        assert!(plain.contains(&hex::encode("scapy ping 1")), "{keys}");
        assert_eq!(doc["skipped_by_reason"][0]["count"], 1);
        assert!(doc["skipped_by_reason"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("NAT keepalive"));
        assert_eq!(doc["overhead"]["esp"]["ipv4_inner_mtu"], 1405);

        let out = vxnet(&["explain", "--pcap", &pcap, "--keys", &ctl_fixture(keys)]);
        let text = stdout(&out);
        assert!(text.contains("3 of them encrypted"), "{text}");
        assert!(text.contains("decrypted, VNI 42"), "{text}");
        assert!(text.contains("ICV    ") && text.contains("verified: AES-GCM tag"));
        assert!(text.contains("inferred as a receiver does"));
    }
}

#[test]
fn without_keys_the_layers_are_shown_and_the_payload_is_opaque() {
    let doc = explain_json(&["--pcap", &ctl_fixture("scapy-esp.pcap")]);
    for p in packets(&doc) {
        assert_eq!(p["esp"]["state"], "opaque");
        assert_eq!(p["esp"]["spi"], 0x1234_abcd);
        assert!(p["vni"].is_null());
        assert!(p.get("decrypted_bytes").is_none());
        assert_eq!(layer(p, "ESP header")["len"], 16);
        assert_eq!(layer(p, "ESP ICV")["len"], 16);
        assert_eq!(layer(p, "outer UDP")["fields"][1]["value"], 4500);
    }
    let text = stdout(&vxnet(&[
        "explain",
        "--pcap",
        &ctl_fixture("scapy-esp.pcap"),
    ]));
    assert!(text.contains("encrypted (no key: opaque)"), "{text}");
    assert!(text.contains("the payload is opaque"));
    assert!(text.contains("42-45 of ESP in UDP"));
}

#[test]
fn a_wrong_key_says_the_icv_does_not_verify() {
    let dir = scratch("esp_wrong_key");
    let good = std::fs::read_to_string(ctl_fixture("scapy-esp.esp_sa")).unwrap();
    // Flip the last digit of the salt.
    let bad = good.replacen("a2a3\"", "a2a4\"", 1);
    assert_ne!(good, bad);
    let keys = dir.join("esp_sa");
    std::fs::write(&keys, bad).unwrap();
    let pcap = ctl_fixture("scapy-esp.pcap");
    let doc = explain_json(&["--pcap", &pcap, "--keys", keys.to_str().unwrap()]);
    for p in packets(&doc) {
        assert_eq!(p["esp"]["state"], "icv_mismatch");
        assert!(p["esp"]["detail"]
            .as_str()
            .unwrap()
            .contains("the ICV does not verify"));
    }
    let text = stdout(&vxnet(&[
        "explain",
        "--pcap",
        &pcap,
        "--keys",
        keys.to_str().unwrap(),
    ]));
    assert!(text.contains("ICV DOES NOT VERIFY"), "{text}");
}

#[test]
fn scapy_made_now_decrypts_and_tshark_agrees_with_the_fixture() {
    let dir = scratch("esp_scapy_now");
    let made = Command::new("/usr/bin/python3")
        .arg(ctl_fixture("make-scapy-esp.py"))
        .arg(&dir)
        .output();
    match made {
        Ok(out) if out.status.success() => {
            let pcap = dir.join("scapy-esp.pcap");
            let keys = dir.join("scapy-esp.keys.json");
            let doc = explain_json(&[
                "--pcap",
                pcap.to_str().unwrap(),
                "--keys",
                keys.to_str().unwrap(),
            ]);
            assert_decrypted(&doc, &[1, 2, 3], "inferred");
        }
        other if std::env::var_os("CI").is_some() => panic!("scapy: {other:?}"),
        other => eprintln!("scapy not usable ({other:?}); the committed fixture covers this"),
    }
    let pcap = ctl_fixture("scapy-esp.pcap");
    let esp_sa = std::fs::read_to_string(ctl_fixture("scapy-esp.esp_sa")).unwrap();
    if let Some(seen) = tshark_icmp(&dir, Path::new(&pcap), &esp_sa) {
        assert_eq!(seen, ["42\t1", "42\t2", "42\t3"]);
    }
}

/// What tshark decrypts from `pcap` with `esp_sa` as its SA table: per ICMP packet, the VXLAN
/// VNI and the ICMP sequence number. `None` (or a failure under CI) without tshark.
fn tshark_icmp(dir: &Path, pcap: &Path, esp_sa: &str) -> Option<Vec<String>> {
    let config = dir.join("xdg");
    std::fs::create_dir_all(config.join("wireshark")).unwrap();
    std::fs::write(config.join("wireshark/esp_sa"), esp_sa).unwrap();
    let out = Command::new("tshark")
        .env("XDG_CONFIG_HOME", &config)
        .args(["-r", pcap.to_str().unwrap()])
        .args(["-o", "esp.enable_encryption_decode:TRUE", "-Y", "icmp"])
        .args(["-T", "fields", "-e", "vxlan.vni", "-e", "icmp.seq"])
        .output();
    match out {
        Ok(out) if out.status.success() => Some(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect(),
        ),
        other if std::env::var_os("CI").is_some() => panic!("tshark: {other:?}"),
        other => {
            eprintln!("tshark not usable ({other:?}); skipping the cross-check");
            None
        }
    }
}

/// An inner ping with ICMP sequence number `seq`, as the example containers send it.
fn ping(seq: u16) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(
        [0x02, 0x42, 0xac, 0x11, 0, 2],
        [0x02, 0x42, 0xac, 0x11, 0, 3],
    )
    .ipv4([172, 17, 0, 2], [172, 17, 0, 3], 64)
    .icmpv4_echo_request(9, seq);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"vxnet-sealed").unwrap();
    frame
}

#[test]
fn vxnet_sealed_capture_across_2_32_decrypts_and_tshark_agrees() {
    let (src, dst) = (Ipv4Addr::new(10, 44, 0, 1), Ipv4Addr::new(10, 44, 0, 2));
    let epoch = KeyEpoch(2);
    let id = SaId {
        epoch,
        spi: Spi::for_epoch(epoch, 0x0bad_cafe),
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
    };
    // The counter crosses 2^32 inside the capture: the high half changes, and is never sent.
    let first = (1u64 << 32) - 2;
    let mut sa = SealSa::new(&NetworkKey::from_bytes([0x5a; 32]), id, first);
    let mut frames = Vec::new();
    for seq in 1..=4u16 {
        let inner = ping(seq);
        let frame = HEADROOM..HEADROOM + inner.len();
        let mut buf = vec![0u8; frame.end + MAX_TAILROOM];
        buf[frame.clone()].copy_from_slice(&inner);
        let ports = VxlanPorts {
            src: 50_000 + seq,
            dst: 4789,
        };
        let sealed = seal_vxlan(&mut sa, &mut buf, frame, Vni::new(42).unwrap(), ports).unwrap();
        let builder = etherparse::PacketBuilder::ethernet2(
            [0x52, 0x54, 0, 0, 0, 1],
            [0x52, 0x54, 0, 0, 0, 2],
        )
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(4500, 4500);
        let mut out = Vec::new();
        builder.write(&mut out, &buf[sealed.packet]).unwrap();
        frames.push(out);
    }
    let dir = scratch("esp_vxnet_sealed");
    let pcap = dir.join("vxnet-esp.pcap");
    std::fs::write(&pcap, explain_support::pcap(LINKTYPE_ETHERNET, &frames)).unwrap();
    let material = sa.key_material().to_hex();
    let spi = format!("{:#010x}", id.spi.get());
    // What `vxnet sa show --json --keys` prints (spi, src, dst, key; other fields ignored).
    let json = dir.join("sa.json");
    std::fs::write(
        &json,
        serde_json::json!({"sas": [{"spi": spi, "src": src.to_string(), "dst": dst.to_string(),
            "direction": "out", "algorithm": "rfc4106(gcm(aes))", "key": material}]})
        .to_string(),
    )
    .unwrap();
    let esp_sa = format!(
        "\"IPv4\",\"*\",\"*\",\"{spi}\",\"{WIRESHARK_GCM}\",\"{material}\",\"NULL\",\"\"\n"
    );
    let wireshark = dir.join("esp_sa");
    std::fs::write(&wireshark, &esp_sa).unwrap();

    let expected: Vec<u64> = (0..4).map(|i| first + i).collect();
    for keys in [&json, &wireshark] {
        let doc = explain_json(&[
            "--pcap",
            pcap.to_str().unwrap(),
            "--keys",
            keys.to_str().unwrap(),
        ]);
        // vxnet's IV carries the full number, so the high half is read, not guessed.
        assert_decrypted(&doc, &expected, "iv");
        let highs: Vec<u64> = packets(&doc)
            .iter()
            .map(|p| p["esp"]["sequence_high"].as_u64().unwrap())
            .collect();
        assert_eq!(highs, [0, 0, 1, 1]);
        let lows: Vec<u64> = packets(&doc)
            .iter()
            .map(|p| p["esp"]["sequence_low"].as_u64().unwrap())
            .collect();
        assert_eq!(lows, [0xFFFF_FFFE, 0xFFFF_FFFF, 0, 1]);
    }
    if let Some(seen) = tshark_icmp(&dir, &pcap, &esp_sa) {
        assert_eq!(seen, ["42\t1", "42\t2", "42\t3", "42\t4"]);
    }
}

#[test]
fn encrypted_worked_example_text_and_json() {
    let out = vxnet(&["explain", "--encrypted", "--color", "never"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "Encrypted VXLAN, ESP in UDP: a worked example",
        "ESP SPI 0x",
        "decrypted, VNI 42, overhead 92 bytes (50 of plain VXLAN + 42 of ESP in UDP)",
        "UDP-encapsulated ESP (RFC 3948)",
        "the high 32 (1) are never sent",
        "What encryption adds (ESP in UDP)",
        "inner MTU: 1405 over IPv4",
        "17 = UDP: transport mode",
    ] {
        assert!(text.contains(want), "lacks {want:?}:\n{text}");
    }
    let doc = explain_json(&["--encrypted"]);
    let p = &packets(&doc)[0];
    assert_eq!(p["esp"]["state"], "decrypted");
    assert_eq!(p["esp"]["sequence"], (1u64 << 32) + 42);
    assert_eq!(p["esp"]["sequence_high_from"], "iv");
    assert_eq!(p["esp"]["overhead_over_plain_vxlan"], 42);
    assert_eq!(p["overhead"], 92);
    assert_eq!(doc["overhead"]["esp"]["over_plain_max"], 45);
    assert_eq!(layer(p, "VXLAN")["fields"][2]["value"], 42);
    // The example's wire bytes explained as a capture without keys: opaque, same layout.
    let wire = hex::decode(p["bytes"].as_str().unwrap()).unwrap();
    let dir = scratch("esp_example_as_capture");
    let pcap = dir.join("example.pcap");
    std::fs::write(&pcap, explain_support::pcap(LINKTYPE_ETHERNET, &[wire])).unwrap();
    let doc = explain_json(&["--pcap", pcap.to_str().unwrap()]);
    assert_eq!(packets(&doc)[0]["esp"]["state"], "opaque");
    assert_eq!(packets(&doc)[0]["esp"]["spi"], p["esp"]["spi"]);
}

#[test]
fn bad_keys_files_and_truncated_esp_are_one_error_line() {
    let dir = scratch("esp_bad_keys");
    let pcap = ctl_fixture("scapy-esp.pcap");
    // Each keys file (none for the missing one) and its error.
    for (name, contents, error) in [
        ("missing.json", None, "missing.json: no such file"),
        (
            "garbled.json",
            Some("{\"sas\": [{\"spi\": \"0x1234abcd\", \"key\": \"0xabc"),
            "garbled.json: not a keys file: not valid JSON",
        ),
        (
            "short.json",
            Some(r#"[{"spi": 4660, "key": "0011"}]"#),
            "SA 1: key is 2 bytes, not 36",
        ),
        ("empty.json", Some(r#"{"sas": []}"#), "no SAs in it"),
    ] {
        let keys = dir.join(name);
        if let Some(contents) = contents {
            std::fs::write(&keys, contents).unwrap();
        }
        assert_one_error_line(
            &vxnet(&["explain", "--pcap", &pcap, "--keys", keys.to_str().unwrap()]),
            error,
        );
    }
    assert_one_error_line(
        &vxnet(&["explain", "--keys", &ctl_fixture("scapy-esp.esp_sa")]),
        "--keys decrypts captures",
    );
    // A capture of nothing but a truncated ESP packet: counted, then the one error line.
    let cut = udp_packet(4500, &[0x12, 0x34, 0xab, 0xcd, 0, 0, 0, 1, 9, 9]);
    let cap = dir.join("cut.pcap");
    std::fs::write(&cap, explain_support::pcap(LINKTYPE_ETHERNET, &[cut])).unwrap();
    assert_one_error_line(
        &vxnet(&["explain", "--pcap", cap.to_str().unwrap()]),
        "1 not valid ESP: truncated",
    );
}
