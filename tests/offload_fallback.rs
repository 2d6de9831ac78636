//! Each offload fall-back path, forced as if the kernel had refused the offload
//! (`VXNET_DISABLE_OFFLOADS=tap|gso|gro`) or switched off by the user (`--no-offloads`): the
//! engine must say what it uses (`vxnet stats --json` and the start-up log line), must really
//! not use what it dropped (counters stay zero), and traffic must still flow correctly both
//! ways against a full-offload vxnet and against the kernel's vxlan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod offload_common;

use offload_common::*;
use vxnet_tests::*;

const TRANSFER: u64 = 4 * MB;

/// Offload work counters and whether the engine under test may have done that work.
struct Expect {
    offloads: Vec<String>,
    /// TAP superframes segmented by vxnet (needs the TAP's vnet header + TSO).
    tso: bool,
    /// UDP GSO sends.
    gso: bool,
    /// UDP GRO reads.
    gro: bool,
    /// Superframes coalesced for the TAP (needs the vnet header).
    coalesce: bool,
}

fn fallback(test: &str, env: &[(&str, &str)], args: &str, expect: Expect) {
    let Some(t) = trio(test, Family::V4, 1500, env, args) else {
        return;
    };
    let mut want = expect.offloads.clone();
    want.sort();
    assert_eq!(t.a.offloads(), want, "vxnet stats --json offloads");
    assert_eq!(t.a.logged_offloads(), want, "start-up log line");
    // The peer engine keeps everything, so each pair below mixes a fall-back and a full path.
    assert_eq!(
        t.b.offloads(),
        with_uso(&[
            "gro-coalescing",
            "tap-vnet-hdr",
            "tso",
            "udp-gro",
            "udp-gso"
        ]),
        "b"
    );

    for (from, to) in [(A, B), (B, A), (A, KERNEL), (KERNEL, A)] {
        t.ping(from, to);
    }
    let mut port = 5100;
    for (from, to) in [(A, B), (B, A), (A, KERNEL), (KERNEL, A)] {
        port += 1;
        t.transfer(from, to, port, TRANSFER);
    }

    let a = |key: &str| t.a.counter(VNI, key);
    let work = [
        ("tso_superframes", expect.tso),
        ("gso_batches", expect.gso),
        ("gro_batches", expect.gro),
        ("coalesced_superframes", expect.coalesce),
    ];
    for (key, used) in work {
        let n = a(key);
        assert_eq!(
            n > 0,
            used,
            "a: {key} = {n} (expected it to be in use: {used})"
        );
    }
    // What a sent and received went through its counters as whole segments either way.
    assert!(a("tx_packets") > TRANSFER / 1500);
    assert!(a("rx_packets") > TRANSFER / 1500);
    t.assert_no_drops(&[]);
}

#[test]
fn fallback_without_tap_offloads() {
    // No vnet header: frames of at most the MTU both ways, no segmenting, no coalescing. GSO
    // stays on (nothing to batch without superframes), GRO reads still batch what b sends.
    fallback(
        "fallback_tap",
        &[("VXNET_DISABLE_OFFLOADS", "tap")],
        "",
        Expect {
            offloads: vec!["udp-gso".into(), "udp-gro".into()],
            tso: false,
            gso: false,
            gro: true,
            coalesce: false,
        },
    );
}

#[test]
fn fallback_without_udp_gso() {
    // Superframes are still segmented, but every segment is its own datagram.
    fallback(
        "fallback_gso",
        &[("VXNET_DISABLE_OFFLOADS", "gso")],
        "",
        Expect {
            offloads: with_uso(&["tap-vnet-hdr", "gro-coalescing", "tso", "udp-gro"]),
            tso: true,
            gso: false,
            gro: true,
            coalesce: true,
        },
    );
}

#[test]
fn fallback_without_udp_gro() {
    // One datagram per read; recvmmsg batches are still coalesced for the TAP.
    fallback(
        "fallback_gro",
        &[("VXNET_DISABLE_OFFLOADS", "gro")],
        "",
        Expect {
            offloads: with_uso(&["tap-vnet-hdr", "gro-coalescing", "tso", "udp-gso"]),
            tso: true,
            gso: true,
            gro: false,
            coalesce: true,
        },
    );
}

#[test]
fn fallback_no_offloads_flag() {
    fallback(
        "fallback_none",
        &[],
        "--no-offloads",
        Expect {
            offloads: vec![],
            tso: false,
            gso: false,
            gro: false,
            coalesce: false,
        },
    );
}

#[test]
fn fallback_all_three_by_env_equals_no_offloads() {
    fallback(
        "fallback_env_all",
        &[("VXNET_DISABLE_OFFLOADS", "tap, gso,gro")],
        "",
        Expect {
            offloads: vec![],
            tso: false,
            gso: false,
            gro: false,
            coalesce: false,
        },
    );
}
