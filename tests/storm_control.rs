//! Storm control (`--bum-rate PPS`): a broadcast flood from a host's overlay is flooded to the
//! peers at the configured rate (a bucket one second deep), the excess is dropped and counted as
//! `bum_rate_limited` in `vxnet stats` and the Prometheus metrics, and known unicast is not
//! limited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use vxnet_tests::*;

const RATE: u64 = 1000;
const BROADCASTS: u64 = 20_000;

/// Frames the TAP handed to vxnet so far (the TAP's TX side).
fn tap_tx_packets(host: &Host) -> u64 {
    host.must("cat /sys/class/net/vx42/statistics/tx_packets")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_broadcast_flood_is_cut_to_the_bum_rate() {
    let Some(lab) = Lab::lan("storm", 2, Family::V4) else {
        return;
    };
    let h0 = lab.host(0);
    let (a, b) = lab.vxnet_pair(&format!("--bum-rate {RATE} --metrics 127.0.0.1:9110"));
    assert!(h0.ping("10.1.0.2", 2));
    let tap_before = tap_tx_packets(h0);
    let flooded_before = a.network(42).flooded;
    let b_rx_before = b.network(42).traffic.rx_packets;

    // As fast as one socket can: about half a second on this machine.
    let elapsed = in_netns(&h0.ns, || {
        let s = UdpSocket::bind("10.1.0.1:0").unwrap();
        s.set_broadcast(true).unwrap();
        let start = Instant::now();
        for i in 0..BROADCASTS {
            // A full qdisc refuses now and then (ENOBUFS); that frame simply never reaches vxnet.
            let _ = s.send_to(&i.to_be_bytes(), "10.1.0.255:9");
        }
        start.elapsed()
    })
    .join()
    .unwrap();
    // Let vxnet drain the TAP, then read the counters.
    let settled = wait_for(Duration::from_secs(5), || {
        let seen = tap_tx_packets(h0) - tap_before;
        let handled =
            a.network(42).flooded - flooded_before + a.drops(Some(42), DropReason::BumRateLimited);
        handled + 5 >= seen
    });
    assert!(settled, "vxnet did not take every frame off the TAP");
    let offered = tap_tx_packets(h0) - tap_before;
    let flooded = a.network(42).flooded - flooded_before;
    let limited = a.drops(Some(42), DropReason::BumRateLimited);
    eprintln!(
        "{offered} frames offered in {elapsed:.2?}: {flooded} flooded, {limited} rate-limited"
    );
    assert!(
        offered > BROADCASTS / 2,
        "only {offered} broadcasts reached the TAP"
    );
    // The bucket's depth (one second of frames) passes, then RATE per second.
    let allowed = RATE * (1 + elapsed.as_millis() as u64 / 1000 + 1);
    assert!(
        (RATE * 9 / 10..=allowed).contains(&flooded),
        "{flooded} frames flooded in {elapsed:.2?} at --bum-rate {RATE}"
    );
    // Every broadcast is flooded or counted (a few other frames, ARP or neighbour discovery,
    // may have crossed the TAP meanwhile).
    assert!(
        (offered.saturating_sub(5)..=offered).contains(&(flooded + limited)),
        "{offered} offered, {flooded} flooded + {limited} limited"
    );
    // The peer got what was flooded and no more.
    assert!(wait_for(Duration::from_secs(3), || {
        b.network(42).traffic.rx_packets - b_rx_before >= flooded * 95 / 100
    }));
    assert!(b.network(42).traffic.rx_packets - b_rx_before <= flooded + 10);
    // The same count in the metrics.
    let (status, scrape) = http_get(&h0.ns, "127.0.0.1:9110", "/metrics");
    assert!(status.contains("200"), "{status}");
    let line = scrape
        .lines()
        .find(|l| {
            l.starts_with("vxnet_dropped_packets_total{")
                && l.contains("vni=\"42\"")
                && l.contains("reason=\"bum_rate_limited\"")
        })
        .unwrap_or_else(|| panic!("no bum_rate_limited series in {scrape}"));
    assert!(
        line.ends_with(&format!(" {limited}")),
        "{line} vs {limited}"
    );
    // Unicast to a learned MAC is not limited: a ping right after the flood gets through.
    assert!(h0.ping("10.1.0.2", 3));
}
