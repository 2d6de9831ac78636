//! `vxnet explain` on captures of any size: memory bounded by one packet (it streams), a brief
//! view of one line per packet, a layer strip within the terminal's width, and errors that name
//! what is wrong with a malformed capture or an unwritable drawing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod explain_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use explain_support::*;

/// One VXLAN packet of the size the capture had (128 bytes on the wire).
fn packet() -> Vec<u8> {
    vxlan_packet(42, 4789)
}

/// Runs vxnet with stdout to /dev/null and returns (exit success, stderr, peak RSS in KiB), read
/// from the child's VmHWM while it runs (the high-water mark only grows, so the last reading
/// before it exits is its peak, give or take the last few milliseconds).
fn peak_rss(args: &[&str]) -> (bool, String, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vxnet"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(hwm) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline || peak > 4 * 1024 * 1024 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vxnet {args:?} ran past 300 s or 4 GiB (peak {peak} KiB)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr, peak)
}

#[test]
fn a_capture_of_100k_packets_is_explained_in_bounded_memory() {
    let dir = scratch("a_capture_of_100k_packets_is_explained_in_bounded_memory");
    let write = |name: &str, count: usize| {
        let path = dir.join(name);
        std::fs::write(&path, pcap(LINKTYPE_ETHERNET, &vec![packet(); count])).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let big = write("big.pcap", 100_000);
    // The full and JSON views do far more work per packet (this is a debug build): a fifth of
    // the packets, which the old whole-capture-in-memory code still needed ~300 MB for.
    let medium = write("medium.pcap", 20_000);
    // 100 MB: the bound asked for; holding the whole capture took over 1 GB.
    const LIMIT_KIB: u64 = 100 * 1024;
    for (path, view) in [
        (&big, &["--brief"][..]),
        (&medium, &["--json"]),
        (&medium, &["--color", "never"]),
    ] {
        let mut args = vec!["explain", "--pcap", path];
        args.extend_from_slice(view);
        let (ok, stderr, peak) = peak_rss(&args);
        assert!(ok, "{view:?}: {stderr}");
        assert!(
            peak < LIMIT_KIB,
            "{view:?}: peak RSS {peak} KiB, over {LIMIT_KIB} KiB"
        );
    }
}

#[test]
fn json_of_a_streamed_capture_is_one_document_with_every_packet() {
    let dir = scratch("json_of_a_streamed_capture_is_one_document_with_every_packet");
    let path = dir.join("three.pcap");
    let mut packets = vec![packet(); 3];
    packets.insert(1, b"not an ethernet frame at all".to_vec());
    std::fs::write(&path, pcap(LINKTYPE_ETHERNET, &packets)).unwrap();
    let out = vxnet(&["explain", "--json", "--pcap", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let frames: Vec<u64> = doc["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(frames, [1, 3, 4]);
    // The capture's records are one second apart (see `pcap`).
    let times: Vec<f64> = doc["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["time"].as_f64().unwrap())
        .collect();
    assert_eq!(times, [0.0, 2.0, 3.0]);
    assert_eq!(doc["source"]["total_packets"], 4);
    assert_eq!(doc["skipped"].as_array().unwrap().len(), 1);
    assert!(doc["overhead"]["ipv4"]["total"].as_u64().is_some());
}

#[test]
fn brief_is_one_line_per_packet_with_time_flow_vni_inner_and_size() {
    let dir = scratch("brief_is_one_line_per_packet_with_time_flow_vni_inner_and_size");
    let path = dir.join("brief.pcap");
    let packets = vec![packet(), vxlan_packet(7, 4789)];
    std::fs::write(&path, pcap(LINKTYPE_ETHERNET, &packets)).unwrap();
    let out = vxnet(&["explain", "--brief", "--pcap", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("VNI ")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, (time, vni)) in lines.iter().zip([("0.000000", 42), ("1.000000", 7)]) {
        assert!(line.contains(time), "{line}");
        assert!(line.contains(&format!("VNI {vni} ")), "{line}");
        assert!(line.contains("-> 192.168.205.11:4789"), "{line}");
        assert!(
            line.contains("172.17.0.2 -> 172.17.0.3 ICMPv4 echo request"),
            "{line}"
        );
        assert!(line.ends_with(&format!("{} B", packets[0].len())), "{line}");
    }
    assert!(text.contains("2 packets, 2 VXLAN"), "{text}");
    // Brief means brief: no layer tables, no hex dump.
    assert!(
        !text.contains("Hex dump") && !text.contains("offset len"),
        "{text}"
    );
}

#[test]
fn the_layer_strip_fits_the_terminal_width() {
    for columns in [60usize, 80, 200] {
        let out = Command::new(env!("CARGO_BIN_EXE_vxnet"))
            .args(["explain", "--color", "never"])
            .env("COLUMNS", columns.to_string())
            .output()
            .unwrap();
        let text = stdout(&out);
        let strip: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
        assert!(strip.len() >= 2, "{text}");
        for line in &strip {
            assert!(
                line.chars().count() <= columns,
                "{columns} columns: {} wide: {line}",
                line.chars().count()
            );
        }
        // Every layer is still in the strip.
        for layer in [
            "outer Ethernet",
            "outer IPv4",
            "VXLAN",
            "inner Ethernet",
            "payload",
        ] {
            assert!(
                strip.iter().any(|l| l.contains(layer)),
                "{layer}: {strip:?}"
            );
        }
    }
}

#[test]
fn an_endless_file_is_refused_at_once() {
    let (ok, stderr, peak) = peak_rss(&["explain", "--pcap", "/dev/zero"]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: /dev/zero: not a pcap"),
        "{stderr}"
    );
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn a_malformed_pcapng_block_is_named_by_offset_and_kind() {
    let dir = scratch("a_malformed_pcapng_block_is_named_by_offset_and_kind");
    let path = dir.join("bad.pcapng");
    let mut file = Vec::new();
    // Section header block (28 bytes), little endian, version 1.0, unknown section length.
    file.extend_from_slice(&0x0a0d_0d0au32.to_le_bytes());
    file.extend_from_slice(&28u32.to_le_bytes());
    file.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    file.extend_from_slice(&1u16.to_le_bytes());
    file.extend_from_slice(&0u16.to_le_bytes());
    file.extend_from_slice(&(-1i64).to_le_bytes());
    file.extend_from_slice(&28u32.to_le_bytes());
    // Interface description block: Ethernet.
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&20u32.to_le_bytes());
    file.extend_from_slice(&1u16.to_le_bytes());
    file.extend_from_slice(&0u16.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&20u32.to_le_bytes());
    // An enhanced packet block whose total length (12) is too short for its fixed fields.
    let bad_at = file.len();
    file.extend_from_slice(&6u32.to_le_bytes());
    file.extend_from_slice(&12u32.to_le_bytes());
    file.extend_from_slice(&12u32.to_le_bytes());
    file.extend_from_slice(&[0u8; 32]);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&file)
        .unwrap();
    let out = vxnet(&["explain", "--pcap", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(&format!("byte {bad_at}")), "{err}");
    assert!(err.contains("enhanced packet"), "{err}");
    // Not the parser's debug output.
    assert!(
        !err.contains("input [") && !err.contains("Internal parser"),
        "{err}"
    );
}

#[test]
fn svg_to_a_directory_or_an_unwritable_place_is_one_error_line_and_leaves_nothing() {
    let dir = scratch("svg_to_a_directory_or_an_unwritable_place");
    for (target, expect) in [
        (dir.to_str().unwrap().to_owned(), "it is a directory"),
        // A missing folder is named as missing (before: "is not a directory", as for a file).
        (
            dir.join("missing/x.svg").to_str().unwrap().to_owned(),
            "no such directory",
        ),
        ("/proc/version/x.svg".to_owned(), "is not a directory"),
        ("/proc/vxnet-explain.svg".to_owned(), "cannot create"),
    ] {
        let out = vxnet(&["explain", "--svg", &target]);
        assert!(!out.status.success(), "{target}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{target}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(expect),
            "{target}: {err}"
        );
        assert!(
            stdout(&out).is_empty(),
            "{target}: nothing explained before the refusal"
        );
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "left behind");
    // A capture without VXLAN: the error, and no drawing or temporary file.
    let capture = dir.join("novx.pcap");
    std::fs::write(&capture, pcap(LINKTYPE_ETHERNET, &[b"short".to_vec()])).unwrap();
    let svg = dir.join("none.svg");
    let out = vxnet(&[
        "explain",
        "--pcap",
        capture.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("novx.pcap")]);
}

#[test]
fn svg_of_a_capture_draws_the_chosen_frame() {
    let dir = scratch("svg_of_a_capture_draws_the_chosen_frame");
    let path = dir.join("two.pcap");
    let packets = vec![packet(), vxlan_packet(4242, 4789)];
    std::fs::write(&path, pcap(LINKTYPE_ETHERNET, &packets)).unwrap();
    let svg = dir.join("second.svg");
    let out = vxnet(&[
        "explain",
        "--brief",
        "--pcap",
        path.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--frame",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(drawing.contains("VNI: 4242"), "{drawing}");
    let out = vxnet(&[
        "explain",
        "--pcap",
        path.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--frame",
        "9",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no VXLAN packet numbered 9"),
        "{}",
        stderr(&out)
    );
}
