//! Underlay MTU: with 1500- and 9000-byte underlays (and a mix of both), vxnet fills the
//! underlay exactly and never beyond it. TCP superframes must be cut at the MSS that fits the
//! underlay, so the largest VXLAN packet on the wire is exactly the underlay MTU and the kernel
//! never fragments one (no IP fragments created, reassembled or refused anywhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod offload_common;

use offload_common::*;
use vxnet_tests::*;

/// No host of the lab fragmented, reassembled or refused to fragment an IP packet.
fn assert_no_fragments(t: &Trio, family: Family) {
    let fields: [&str; 3] = match family {
        Family::V4 => ["FragCreates", "FragFails", "ReasmReqds"],
        Family::V6 => ["Ip6FragCreates", "Ip6FragFails", "Ip6ReasmReqds"],
    };
    for i in [A, B, KERNEL] {
        for field in fields {
            assert_eq!(t.host(i).ip_stat(field), 0, "host {i}: {field}");
        }
    }
}

/// Captures on host `i`'s underlay the VXLAN packets it sends while `f` runs and returns, per
/// threshold, how many of at least that many bytes of IP packet were seen (each capture stops
/// at 5). Host `i`'s `eth0` stops segmenting UDP GSO sends itself first: a veth otherwise passes
/// a whole GSO send along as one big packet and a capture would never see the segments (a NIC
/// without UDP segmentation offload does the same, in software, before the wire).
fn capture_sizes(
    t: &Trio,
    i: usize,
    family: Family,
    thresholds: &[u32],
    f: impl FnOnce(),
) -> Vec<usize> {
    t.host(i)
        .must("ethtool -K eth0 tx-udp-segmentation off >/dev/null");
    let proto = if family == Family::V4 { "ip" } else { "ip6" };
    let captures: Vec<Capture> = thresholds
        .iter()
        .map(|ip_len| {
            Capture::start(
                &t.lab,
                i,
                &format!("h{i}-{ip_len}"),
                "eth0",
                128,
                5,
                &format!(
                    "{proto} src host {} and udp dst port 4789 and greater {}",
                    t.host(i).underlay,
                    ip_len + 14
                ),
            )
        })
        .collect();
    f();
    captures.into_iter().map(|c| c.frames().len()).collect()
}

fn tap_mtu(t: &Trio, i: usize) -> u32 {
    let dev = if i == KERNEL { "vx0" } else { "vx42" };
    t.host(i)
        .must(&format!("cat /sys/class/net/{dev}/mtu"))
        .trim()
        .parse()
        .unwrap()
}

/// vxnet <-> vxnet and vxnet <-> kernel on one underlay MTU, every offload on.
fn uniform_mtu(test: &str, family: Family, mtu: u32, len: u64) {
    if !have_tool(test, "tcpdump") {
        return;
    }
    let Some(t) = trio(test, family, mtu, &[], "") else {
        return;
    };
    let overhead = if family == Family::V4 { 50 } else { 70 };
    assert_eq!(tap_mtu(&t, A), mtu - overhead);
    assert_eq!(tap_mtu(&t, B), mtu - overhead);
    // Packets of exactly the underlay MTU from a, to b and to the kernel, none bigger: the
    // segmenter uses the MSS that fills the underlay and no more.
    for (to, port) in [(B, 5201), (KERNEL, 5202)] {
        let sizes = capture_sizes(&t, A, family, &[mtu, mtu + 1], || {
            t.transfer(A, to, port, len)
        });
        assert!(
            sizes[0] > 0,
            "a sent no {mtu}-byte VXLAN packet to host {to}"
        );
        assert_eq!(
            sizes[1], 0,
            "a sent VXLAN packets over {mtu} bytes to host {to}"
        );
    }
    t.transfer(KERNEL, A, 5203, len);
    t.transfer(B, A, 5204, len);
    assert_no_fragments(&t, family);
    // The big segments came from vxnet's segmenter: superframes went in, GSO sends went out.
    assert!(t.a.network(VNI).tso_superframes > 0);
    assert!(t.a.network(VNI).gso_batches > 0);
    assert!(t.a.network(VNI).coalesced_superframes > 0);
    t.assert_no_drops(&[]);
}

#[test]
fn underlay_1500_fills_but_never_exceeds_the_mtu() {
    uniform_mtu("mtu1500", Family::V4, 1500, 16 * MB);
}

#[test]
fn underlay_9000_fills_but_never_exceeds_the_mtu() {
    uniform_mtu("mtu9000", Family::V4, 9000, 32 * MB);
}

#[test]
fn underlay_9000_ipv6_fills_but_never_exceeds_the_mtu() {
    uniform_mtu("mtu9000v6", Family::V6, 9000, 16 * MB);
}

/// Mixed MTUs, the way a user meets them: jumbo frames are being rolled out host by host, so
/// host a already has a 9000-byte underlay while b and the kernel host are still at 1500, all
/// on one LAN. Each vxnet takes its TAP MTU from its own underlay (a: 8950, b: 1450), the
/// kernel's vxlan from its device (1450). TCP still works both ways with every offload on,
/// because each side advertises the MSS of its own overlay MTU and a's segmenter cuts
/// superframes at the gso_size TCP chose (<= 1398 bytes towards the 1500 hosts), so nothing
/// a sends them exceeds 1500 bytes on the wire. (What cannot work, with vxnet as with the
/// kernel's vxlan, is a non-TCP packet from a bigger than 1450 bytes: the switch drops it.
/// Give every host `--mtu` of the smallest underlay to rule that out.)
#[test]
fn mixed_jumbo_and_1500_underlays() {
    if !have_tool("mtu_mixed", "tcpdump") {
        return;
    }
    let Some(t) = trio_with_mtus("mtu_mixed", Family::V4, [9000, 1500, 1500], &[], "") else {
        return;
    };
    assert_eq!(tap_mtu(&t, A), 8950);
    assert_eq!(tap_mtu(&t, B), 1450);
    assert_eq!(tap_mtu(&t, KERNEL), 1450);
    let sizes = capture_sizes(&t, A, Family::V4, &[1500, 1501], || {
        t.transfer(A, B, 5301, 8 * MB);
        t.transfer(B, A, 5302, 8 * MB);
        t.transfer(A, KERNEL, 5303, 8 * MB);
        t.transfer(KERNEL, A, 5304, 8 * MB);
    });
    assert!(sizes[0] > 0, "a sent no full-size (1500) VXLAN packet");
    assert_eq!(
        sizes[1], 0,
        "a sent VXLAN packets the 1500-byte hosts cannot take"
    );
    assert_no_fragments(&t, Family::V4);
    assert!(t.a.network(VNI).tso_superframes > 0);
    assert!(t.a.network(VNI).gso_batches > 0);
    t.assert_no_drops(&[]);
}
