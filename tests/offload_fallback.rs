//! Each offload fall-back path, forced as if the kernel had refused the offload
//! (`VXNET_DISABLE_OFFLOADS=tap|gso|gro`) or switched off by the user (`--no-offloads`): the
//! engine must say what it uses (`vxnet stats --json` and the start-up log line), must really
//! not use what it dropped (counters stay zero), and traffic must still flow correctly both
//! ways against a full-offload vxnet and against the kernel's vxlan. And UDP GSO refused by the
//! kernel while the engine runs: it falls back, says so, and loses nothing for good.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod offload_common;

use offload_common::*;
use vxnet_tests::*;

const TRANSFER: u64 = 4 * MB;

/// Offload work counters and whether the engine under test may have done that work.
struct Expect {
    offloads: Vec<Offload>,
    /// TAP superframes segmented by vxnet (needs the TAP's vnet header + TSO).
    tso: bool,
    /// UDP GSO sends.
    gso: bool,
    /// UDP GRO reads.
    gro: bool,
    /// Superframes coalesced for the TAP (needs the vnet header).
    coalesce: bool,
}

impl Expect {
    /// No offload at all: every frame and datagram one by one.
    const NOTHING: Expect = Expect {
        offloads: Vec::new(),
        tso: false,
        gso: false,
        gro: false,
        coalesce: false,
    };
}

fn fallback(test: &str, env: &[(&str, &str)], args: &str, expect: Expect) {
    let Some(t) = trio(test, Family::V4, 1500, env, args) else {
        return;
    };
    let mut want = expect.offloads.clone();
    want.sort();
    assert_eq!(t.a.offloads(), want, "vxnet stats --json offloads");
    let reported = t.a.stats().offloads;
    assert!(
        t.a.logged_offloads_in_use(&reported),
        "start-up log line naming {reported:?}: {}",
        t.a.proc.log_text()
    );
    // The peer engine keeps everything, so each pair below mixes a fall-back and a full path.
    assert_eq!(
        t.b.offloads(),
        with_uso(&[
            Offload::GroCoalescing,
            Offload::TapVnetHdr,
            Offload::Tso,
            Offload::UdpGro,
            Offload::UdpGso
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

    let a = t.a.network(VNI);
    let work = [
        ("tso_superframes", a.tso_superframes, expect.tso),
        ("gso_batches", a.gso_batches, expect.gso),
        ("gro_batches", a.gro_batches, expect.gro),
        (
            "coalesced_superframes",
            a.coalesced_superframes,
            expect.coalesce,
        ),
    ];
    for (key, n, used) in work {
        assert_eq!(
            n > 0,
            used,
            "a: {key} = {n} (expected it to be in use: {used})"
        );
    }
    // What a sent and received went through its counters as whole segments either way.
    assert!(a.traffic.tx_packets > TRANSFER / 1500);
    assert!(a.traffic.rx_packets > TRANSFER / 1500);
    t.assert_no_drops(&[]);
}

#[test]
fn fallback_without_tap_offloads() {
    // No vnet header: frames of at most the MTU both ways, no segmenting, no coalescing. GSO
    // stays on and still batches: the equal-size frames a transfer reads one by one from the
    // TAP leave for b in runs of one UDP_SEGMENT send. GRO reads still batch what b sends.
    fallback(
        "fallback_tap",
        &[("VXNET_DISABLE_OFFLOADS", "tap")],
        "",
        Expect {
            offloads: vec![Offload::UdpGso, Offload::UdpGro],
            tso: false,
            gso: true,
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
            offloads: with_uso(&[
                Offload::TapVnetHdr,
                Offload::GroCoalescing,
                Offload::Tso,
                Offload::UdpGro,
            ]),
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
            offloads: with_uso(&[
                Offload::TapVnetHdr,
                Offload::GroCoalescing,
                Offload::Tso,
                Offload::UdpGso,
            ]),
            tso: true,
            gso: true,
            gro: false,
            coalesce: true,
        },
    );
}

#[test]
fn fallback_no_offloads_flag() {
    fallback("fallback_none", &[], "--no-offloads", Expect::NOTHING);
}

#[test]
fn fallback_all_three_by_env_equals_no_offloads() {
    fallback(
        "fallback_env_all",
        &[("VXNET_DISABLE_OFFLOADS", "tap, gso,gro")],
        "",
        Expect::NOTHING,
    );
}

/// The kernel starts refusing UDP_SEGMENT sends while traffic flows (see
/// [`Vxnet::refuse_udp_gso`]): the engine falls back to one datagram per segment for good,
/// `vxnet stats` stops listing udp-gso at once, and TCP recovers what the refused sends lost.
#[test]
fn udp_gso_refused_at_run_time() {
    // One source port (one socket, opened by the first transfer): the refusal below reaches the
    // socket every later flow leaves from, as a refusing path would (sockets bound after it are
    // not switched, so with the default range the new flows would just find fresh ones).
    let Some(t) = trio(
        "gso_refused",
        Family::V4,
        1500,
        &[],
        "--srcport 50000-50000",
    ) else {
        return;
    };
    if !have_tool("gso_refused", "python3") {
        return;
    }
    let gso_in_use = |v: &Vxnet| v.stats().offloads.contains(&Offload::UdpGso);
    assert!(gso_in_use(&t.a), "a starts with UDP GSO");
    t.transfer(A, B, 5201, TRANSFER);
    let batches = t.a.network(VNI).gso_batches;
    assert!(
        batches > 0,
        "a sent nothing with UDP GSO before the refusal"
    );

    t.a.refuse_udp_gso();
    t.transfer(A, B, 5202, TRANSFER);
    t.transfer(A, KERNEL, 5203, TRANSFER);

    assert!(
        !gso_in_use(&t.a),
        "vxnet stats still reports udp-gso after the fall-back; log: {}",
        t.a.proc.log_text()
    );
    assert!(
        t.a.proc
            .log_text()
            .contains("UDP GSO refused by the kernel at run time"),
        "no fall-back warning: {}",
        t.a.proc.log_text()
    );
    let a = t.a.network(VNI);
    // At most the sends planned before the refusal was seen by each worker went out as GSO runs.
    let refused = a.drops[&DropReason::SendError];
    assert!(refused >= 1, "no refused send counted");
    assert!(
        a.gso_batches <= batches + refused,
        "GSO runs kept being planned after the fall-back: {batches} -> {}",
        a.gso_batches
    );
    // Segmenting goes on; only the sends are single datagrams now.
    assert!(a.tso_superframes > 0);
    assert!(gso_in_use(&t.b), "b's own sockets are untouched");
    t.assert_no_drops(&[DropReason::SendError]);
}
