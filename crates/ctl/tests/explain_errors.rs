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
fn truncated_capture() {
    let dir = scratch("truncated_capture");
    for (name, source) in [
        ("cut.pcap", encap_fixture("kernel-vxlan-ipv4.pcap")),
        ("cut.pcapng", ctl_fixture("kernel-vxlan-ipv4.pcapng")),
    ] {
        let bytes = std::fs::read(source).unwrap();
        let path = dir.join(name);
        // Cut inside the last record, and inside the file header.
        for cut in [bytes.len() - 10, 12] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let out = vxnet(&["explain", "--pcap", path.to_str().unwrap()]);
            assert_one_error_line(&out, "truncated capture");
        }
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
    assert!(stderr(&out).contains("3 packets"));

    let json = vxnet(&["explain", "--json", "--pcap", path.to_str().unwrap()]);
    assert_one_error_line(&json, "no VXLAN packets");
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
