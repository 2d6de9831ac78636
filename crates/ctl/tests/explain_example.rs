#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `vxnet explain` with no capture: the worked example.

mod explain_support;

use explain_support::{layer, stdout, vxnet};
use serde_json::Value;
use vxnet_encap::wire::{ipv4, udp, vxlan, Ipv4Packet, UdpPacket, VxlanPacket};
use vxnet_encap::{decapsulate_ethernet, flow};

#[test]
fn worked_example_shows_every_layer_offsets_and_mtu() {
    let out = vxnet(&["explain"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for layer in [
        "outer Ethernet",
        "outer IPv4",
        "outer UDP",
        "VXLAN",
        "inner Ethernet",
        "inner IPv4",
        "inner ICMPv4",
        "payload",
    ] {
        assert!(text.contains(layer), "missing layer {layer}");
    }
    for needle in [
        "VNI 42",
        "192.168.205.129",
        "192.168.205.130",
        "02:42:c0:a8:cd:81",
        "02:42:c0:a8:cd:82",
        "192.168.205.1",
        "192.168.205.2",
        "4789",
        "echo request",
        // The diagram's byte ranges: VXLAN header at 42, inner frame at 50.
        "42..50 (8B)",
        "50..64 (14B)",
        "VXLAN  bytes 42..50",
        "inner Ethernet  bytes 50..64",
        "50 bytes = 20 + 8 + 8 + 14",
        "inner MTU 1450",
        "1430 over IPv6",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // The VNI row of the VXLAN table sits at offset 46 and is 3 bytes long.
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().take(4).collect::<Vec<_>>() == ["46", "3", "VNI", "42"]),
        "no VNI row at offset 46"
    );
}

#[test]
fn piped_output_is_plain_and_colour_can_be_forced() {
    let plain = vxnet(&["explain"]);
    assert!(!stdout(&plain).contains('\x1b'), "ANSI escape when piped");
    let forced = vxnet(&["explain", "--color", "always"]);
    assert!(stdout(&forced).contains("\x1b["));
    let json = vxnet(&["explain", "--json", "--color", "always"]);
    assert!(!stdout(&json).contains('\x1b'), "ANSI escape in JSON");
}

fn field<'a>(layer: &'a Value, name: &str) -> &'a Value {
    layer["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no field {name} in {}", layer["name"]))
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn json_matches_the_encap_views() {
    let out = vxnet(&["explain", "--json"]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_eq!(doc["source"]["kind"], "worked_example");
    assert_eq!(doc["overhead"]["ipv4"]["total"], 50);
    assert_eq!(doc["overhead"]["ipv4"]["inner_mtu"], 1450);
    assert_eq!(doc["overhead"]["ipv6"]["total"], 70);
    assert_eq!(doc["overhead"]["ipv6"]["inner_mtu"], 1430);
    let packet = &doc["packets"][0];
    assert_eq!(packet["vni"], 42);
    let bytes = hex_decode(packet["bytes"].as_str().unwrap());
    assert_eq!(packet["captured_len"], bytes.len());

    // The decoder and the views agree with what the JSON says, offset for offset.
    let parsed = decapsulate_ethernet(&bytes).unwrap();
    assert_eq!(parsed.offsets.vxlan, 42);
    assert_eq!(parsed.offsets.inner, 50);
    let ip = Ipv4Packet::new_checked(&bytes[parsed.offsets.ip..]).unwrap();
    let l = layer(packet, "outer IPv4");
    assert_eq!(l["offset"], 14);
    assert_eq!(l["len"], 20);
    for (name, range, value) in [
        (
            "total length",
            ipv4::field::TOTAL_LEN,
            Value::from(ip.total_len()),
        ),
        (
            "identification",
            ipv4::field::IDENT,
            Value::from(ip.ident()),
        ),
        (
            "source address",
            ipv4::field::SRC_ADDR,
            Value::from(ip.src_addr().to_string()),
        ),
        (
            "destination address",
            ipv4::field::DST_ADDR,
            Value::from(ip.dst_addr().to_string()),
        ),
    ] {
        let f = field(l, name);
        assert_eq!(f["offset"], 14 + range.start, "{name}");
        assert_eq!(f["len"], range.len(), "{name}");
        assert_eq!(f["value"], value, "{name}");
    }
    assert_eq!(field(l, "source address")["value"], "192.168.205.1");

    let u = UdpPacket::new_checked(&bytes[parsed.offsets.udp..parsed.offsets.end]).unwrap();
    let l = layer(packet, "outer UDP");
    let sport = field(l, "source port");
    assert_eq!(sport["value"], u.src_port());
    assert_eq!(sport["offset"], 34 + udp::field::SRC_PORT.start);
    // The port vxnet's engine really sends this flow from: the one its flow hash picks in the
    // default srcport range (since issue 15 an exact port per flow, not a 1024-port stripe).
    let port = vxnet_dataplane::source_port::port_for_flow(
        flow::flow_hash(parsed.vxlan.inner),
        &vxnet_dataplane::tuning::SourcePortRange::default(),
    );
    assert_eq!(u.src_port(), port);
    let note = sport["note"].as_str().unwrap();
    assert!(
        note.contains(
            "vxnet sends this flow from this port (its flow hash over srcport 49152-65535)"
        ),
        "{note}"
    );
    // Every checksum of the example is complete and verifies.
    for (layer_name, field_name) in [
        ("outer IPv4", "header checksum"),
        ("outer UDP", "checksum"),
        ("inner IPv4", "header checksum"),
        ("inner ICMPv4", "checksum"),
    ] {
        let f = field(layer(packet, layer_name), field_name);
        let state = &f["check"]["state"];
        let ok = if layer_name == "outer UDP" {
            "none"
        } else {
            "verified"
        };
        assert_eq!(state, ok, "{layer_name} {field_name}: {f}");
    }
    assert!(packet["remarks"].as_array().unwrap().is_empty());
    assert_eq!(field(l, "destination port")["value"], 4789);
    assert_eq!(field(l, "length")["value"], u.len_field());

    let v = VxlanPacket::new_checked(&bytes[parsed.offsets.vxlan..]).unwrap();
    let l = layer(packet, "VXLAN");
    assert_eq!(l["offset"], 42);
    let vni = field(l, "VNI");
    assert_eq!(vni["value"], v.vni().get());
    assert_eq!(vni["offset"], 42 + vxlan::field::VNI.start);
    assert_eq!(vni["len"], 3);
    assert_eq!(field(l, "flags")["value"], "0x08");

    let l = layer(packet, "inner Ethernet");
    assert_eq!(l["offset"], 50);
    assert_eq!(field(l, "source MAC")["value"], "02:42:c0:a8:cd:81");
    assert_eq!(field(l, "destination MAC")["value"], "02:42:c0:a8:cd:82");
    let l = layer(packet, "inner IPv4");
    assert_eq!(field(l, "source address")["value"], "192.168.205.129");
    assert_eq!(field(l, "source address")["offset"], 64 + 12);

    // Layers tile the packet: no gaps, no overlaps, nothing left over.
    let mut next = 0;
    for l in packet["layers"].as_array().unwrap() {
        assert_eq!(l["offset"], next, "gap before {}", l["name"]);
        next += l["len"].as_u64().unwrap();
        for f in l["fields"].as_array().unwrap() {
            let start = f["offset"].as_u64().unwrap();
            let end = start + f["len"].as_u64().unwrap();
            assert!(start >= l["offset"].as_u64().unwrap() && end <= next, "{f}");
        }
    }
    assert_eq!(next, bytes.len() as u64);
}

#[test]
fn the_example_takes_every_vni_vxnet_run_takes() {
    // `vxnet run --vni` takes 0 to 16777215 (24 bits, RFC 7348); the example takes the same.
    for vni in [0u32, 16_777_215] {
        let out = vxnet(&["explain", "--json", "--vni", &vni.to_string()]);
        assert!(out.status.success(), "--vni {vni}: {out:?}");
        let doc: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
        assert_eq!(doc["packets"][0]["vni"], vni);
    }
    let out = vxnet(&["explain", "--vni", "16777216"]);
    assert!(!out.status.success());
}
