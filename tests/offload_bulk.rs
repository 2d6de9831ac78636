//! Bulk transfers with every offload on, byte-checked, and proof in the counters that the
//! offloads did the work: TSO superframes segmented by vxnet, UDP GSO sends, UDP GRO reads and
//! superframes coalesced back for the TAP. Also the small-MSS case, where one 64 KB superframe
//! becomes more segments than one UDP GSO send may carry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod offload_common;

use offload_common::*;
use vxnet_tests::*;

/// What every offload-on engine must report.
fn all_offloads() -> Vec<Offload> {
    with_uso(&[
        Offload::GroCoalescing,
        Offload::TapVnetHdr,
        Offload::Tso,
        Offload::UdpGro,
        Offload::UdpGso,
    ])
}

/// The counters that show an engine's TAP -> wire side used TSO + UDP GSO.
fn assert_sent_with_offloads(name: &str, v: &Vxnet) {
    let superframes = v.network(VNI).tso_superframes;
    let segments = v.network(VNI).tso_segments;
    assert!(superframes > 0, "{name}: no TSO superframe was segmented");
    assert!(
        segments > 2 * superframes,
        "{name}: {superframes} superframes made only {segments} segments"
    );
    assert!(v.network(VNI).gso_batches > 0, "{name}: no UDP GSO send");
}

/// The counters that show an engine's wire -> TAP side used UDP GRO + coalescing.
fn assert_received_with_offloads(name: &str, v: &Vxnet) {
    assert!(v.network(VNI).gro_batches > 0, "{name}: no UDP GRO read");
    let superframes = v.network(VNI).coalesced_superframes;
    let segments = v.network(VNI).coalesced_segments;
    assert!(superframes > 0, "{name}: nothing was coalesced");
    assert!(
        segments >= 2 * superframes,
        "{name}: {superframes} superframes of only {segments} segments"
    );
}

/// 200 MB vxnet -> vxnet. One direction suffices here: both ends run the same code, so a -> b
/// covers the sending side (TSO segmentation, UDP GSO) on a and the receiving side (UDP GRO,
/// coalescing) on b; b -> a would run the very same paths with the roles swapped. (Against the
/// kernel, below, both directions are tested: there each direction is different code.)
#[test]
fn bulk_200mb_vxnet_to_vxnet_with_offloads() {
    let Some(t) = trio("bulk_vxnet_vxnet", Family::V4, 1500, &[], "") else {
        return;
    };
    assert_eq!(t.a.offloads(), all_offloads());
    assert_eq!(t.b.offloads(), all_offloads());
    t.ping(A, B);
    t.transfer(A, B, 5001, 200 * MB);
    assert_sent_with_offloads("a", &t.a);
    assert_received_with_offloads("b", &t.b);
    assert_eq!(t.a.drops(Some(VNI), DropReason::BadOffload), 0);
    assert_eq!(t.b.drops(Some(VNI), DropReason::TapWrite), 0);
}

/// 200 MB vxnet -> kernel vxlan: vxnet's segmentation and UDP GSO against the kernel's
/// receive path. (Each direction against the kernel is different code on vxnet's side, so both
/// are tested, as separate tests to run side by side.)
#[test]
fn bulk_200mb_vxnet_to_kernel_with_offloads() {
    let Some(t) = trio("bulk_vxnet_kernel", Family::V4, 1500, &[], "") else {
        return;
    };
    assert_eq!(t.a.offloads(), all_offloads());
    t.ping(A, KERNEL);
    t.transfer(A, KERNEL, 5002, 200 * MB);
    assert_sent_with_offloads("a", &t.a);
    assert_eq!(t.a.drops(Some(VNI), DropReason::BadOffload), 0);
}

/// 200 MB kernel vxlan -> vxnet: UDP GRO reads of what the kernel sent and their coalescing
/// into superframes for the TAP.
#[test]
fn bulk_200mb_kernel_to_vxnet_with_offloads() {
    let Some(t) = trio("bulk_kernel_vxnet", Family::V4, 1500, &[], "") else {
        return;
    };
    assert_eq!(t.a.offloads(), all_offloads());
    t.ping(KERNEL, A);
    t.transfer(KERNEL, A, 5003, 200 * MB);
    assert_received_with_offloads("a", &t.a);
    assert_eq!(t.a.drops(Some(VNI), DropReason::TapWrite), 0);
}

/// Every host advertises MSS 536 for the overlay subnet (`advmss`, the route-level
/// `TCP_MAXSEG`), so TCP on the TAPs sends 524-byte segments (536 minus timestamps) in 64 KB
/// TSO superframes: 123 segments each, more than one UDP GSO send may carry (64). They used to
/// be dropped as `bad_offload`; now they go out in several sends.
fn small_mss(t: &Trio) {
    for i in [A, B, KERNEL] {
        let dev = if i == KERNEL { "vx0" } else { "vx42" };
        t.host(i).must(&format!(
            "ip route replace 10.1.0.0/24 dev {dev} proto kernel scope link src {} advmss 536",
            inner(i)
        ));
    }
}

#[test]
fn mss_536_superframes_of_more_than_64_segments_vxnet_to_vxnet() {
    let Some(t) = trio("small_mss_vxnet", Family::V4, 1500, &[], "") else {
        return;
    };
    small_mss(&t);
    t.ping(A, B);
    t.transfer(A, B, 5004, 32 * MB);
    t.transfer(B, A, 5005, 32 * MB);
    for (name, v) in [("a", &t.a), ("b", &t.b)] {
        assert_eq!(v.drops(Some(VNI), DropReason::BadOffload), 0, "{name}");
        assert_sent_with_offloads(name, v);
    }
    t.assert_no_drops(&[]);
}

#[test]
fn mss_536_superframes_of_more_than_64_segments_vxnet_and_kernel() {
    let Some(t) = trio("small_mss_kernel", Family::V4, 1500, &[], "") else {
        return;
    };
    small_mss(&t);
    t.ping(A, KERNEL);
    t.transfer(A, KERNEL, 5006, 32 * MB);
    t.transfer(KERNEL, A, 5007, 32 * MB);
    assert_eq!(t.a.drops(Some(VNI), DropReason::BadOffload), 0);
    assert_sent_with_offloads("a", &t.a);
    assert_received_with_offloads("a", &t.a);
}
