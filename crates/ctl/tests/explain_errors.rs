#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bad input to `vxnet explain --pcap`: one `error:` line, non-zero exit, never a panic.

mod explain_support;

use explain_support::*;

#[test]
fn missing_file() {
    let out = vxnet(&["explain", "--pcap", "/nonexistent/capture.pcap"]);
    assert_one_error_line(&out, "no such file");
}

#[test]
fn a_directory_is_named_as_one() {
    // Before: "cannot read: read failed".
    let dir = scratch("directory_capture");
    let out = vxnet(&["explain", "--pcap", dir.to_str().unwrap()]);
    assert_one_error_line(&out, "Is a directory");
}

#[test]
fn not_a_capture() {
    let dir = scratch("not_a_capture");
    let path = dir.join("notes.pcap");
    std::fs::write(&path, "these are my notes, not packets\n".repeat(20)).unwrap();
    let out = vxnet(&["explain", "--pcap", path.to_str().unwrap()]);
    assert_one_error_line(&out, "not a pcap or pcapng capture");

    let empty = dir.join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let out = vxnet(&["explain", "--pcap", empty.to_str().unwrap()]);
    assert_one_error_line(&out, "empty");
}

#[test]
fn capture_cut_inside_a_record_explains_the_packets_before_the_cut() {
    let dir = scratch("truncated_capture");
    for (name, source) in [
        ("cut.pcap", encap_fixture("kernel-vxlan-ipv4.pcap")),
        ("cut.pcapng", ctl_fixture("kernel-vxlan-ipv4.pcapng")),
    ] {
        let bytes = std::fs::read(source).unwrap();
        let path = dir.join(name);
        let path = path.to_str().unwrap();
        // Cut inside the last record: the first three packets are whole.
        std::fs::write(path, &bytes[..bytes.len() - 10]).unwrap();
        let out = vxnet(&["explain", "--pcap", path]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("3 packets, 3 VXLAN"), "{name}:\n{text}");
        assert!(
            text.contains("ends in the middle of the record") && text.contains("after packet 3"),
            "{name}:\n{text}"
        );
        let json = vxnet(&["explain", "--json", "--pcap", path]);
        let doc: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
        assert_eq!(doc["packets"].as_array().unwrap().len(), 3);
        let truncated = doc["truncated"].as_str().unwrap();
        assert!(
            truncated.contains(&format!("of {},", bytes.len() - 10)),
            "{truncated}"
        );

        // Cut inside the file header: nothing to explain.
        std::fs::write(path, &bytes[..12]).unwrap();
        let out = vxnet(&["explain", "--pcap", path]);
        assert_one_error_line(&out, "truncated capture");
    }
}

#[test]
fn capture_without_vxlan() {
    let dir = scratch("capture_without_vxlan");
    let path = dir.join("plain.pcap");
    std::fs::write(
        &path,
        pcap(
            LINKTYPE_ETHERNET,
            &[arp_request(), udp_packet(53, b"dns"), tcp_packet()],
        ),
    )
    .unwrap();
    let out = vxnet(&["explain", "--pcap", path.to_str().unwrap()]);
    assert_one_error_line(&out, "no VXLAN packets");
    let err = stderr(&out);
    assert!(err.contains("among its 3 packets: "), "{err}");
    for reason in [
        "1 not IP (ARP)",
        "1 UDP to port 53, not a VXLAN port",
        "1 not UDP (TCP)",
    ] {
        assert!(err.contains(reason), "{err} lacks {reason:?}");
    }

    // --json: the same error line, and the counts as a document on stdout for scripts.
    let json = vxnet(&["explain", "--json", "--pcap", path.to_str().unwrap()]);
    assert!(!json.status.success());
    assert_eq!(stderr(&json), err);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(
        doc["error"].as_str().unwrap(),
        err.trim_start_matches("error: ").trim_end()
    );
    let counts = doc["skipped_by_reason"].as_array().unwrap();
    assert_eq!(counts.len(), 3);
    assert_eq!(counts[0]["reason"], "not IP (ARP)");
    assert_eq!(counts[0]["count"], 1);
}

#[test]
fn reasons_are_counted_and_a_vxlan_port_in_disguise_is_pointed_out() {
    // 5 ARP, 2 DNS, 3 VXLAN on port 4790: the summary counts each kind and suggests --port.
    let mut packets = vec![arp_request(); 5];
    packets.extend(vec![udp_packet(53, b"dns"); 2]);
    packets.extend(vec![vxlan_packet(42, 4790); 3]);
    let dir = scratch("reasons_are_counted");
    let path = dir.join("mostly-arp.pcap");
    std::fs::write(&path, pcap(LINKTYPE_ETHERNET, &packets)).unwrap();
    let out = vxnet(&["explain", "--pcap", path.to_str().unwrap()]);
    assert_one_error_line(
        &out,
        "among its 10 packets: 5 not IP (ARP); 3 UDP to port 4790, not a VXLAN port (looks like \
         VXLAN: try --port 4790); 2 UDP to port 53, not a VXLAN port",
    );
}

#[test]
fn every_truncation_of_a_capture_is_an_error_or_an_explanation() {
    // No prefix of a capture may crash the reader.
    let bytes = std::fs::read(encap_fixture("kernel-vxlan-ipv6.pcap")).unwrap();
    let dir = scratch("every_truncation");
    let path = dir.join("prefix.pcap");
    for cut in (0..bytes.len()).step_by(37) {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let out = vxnet(&["explain", "--pcap", path.to_str().unwrap()]);
        if !out.status.success() {
            assert_one_error_line(&out, "");
        }
    }
}

#[test]
fn live_capture_on_a_missing_interface_or_without_root() {
    let out = vxnet(&["explain", "--live", "vxnet-nope0"]);
    assert_one_error_line(&out, "vxnet-nope0: no such network interface");

    // Without CAP_NET_RAW (what a non-root user lacks) no packet socket opens: `setpriv` drops it
    // from the bounding set, which also strips it from root.
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set=-net_raw", env!("CARGO_BIN_EXE_vxnet")])
        .args(["explain", "--live", "lo"])
        .output()
        .expect("setpriv (util-linux)");
    assert_one_error_line(&out, "capturing on lo needs root (CAP_NET_RAW)");

    // --count belongs to --live; --live and --pcap exclude each other.
    let out = vxnet(&["explain", "--count", "3"]);
    assert_one_error_line(&out, "--live <DEV>");
    let out = vxnet(&["explain", "--live", "lo", "--pcap", "x.pcap"]);
    assert_one_error_line(&out, "cannot be used with");
}
