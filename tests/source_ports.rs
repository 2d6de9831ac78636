//! Outer UDP source-port entropy (`--srcport`): 2000 inner UDP flows leave on as many outer
//! source ports as a hash over the whole range gives (about 1900 of 16384), every packet of a
//! flow on the same one, as tcpdump on the underlay sees them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::time::Duration;

use vxnet_tests::*;

const FLOWS: u16 = 2000;
const FIRST_INNER_PORT: u16 = 20000;

/// Outer and inner UDP source ports of a captured IPv4 VXLAN packet carrying inner IPv4/UDP.
fn ports(frame: &[u8]) -> Option<(u16, u16)> {
    let be16 = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    // Outer Ethernet 14 + IPv4 20 (no options from the kernel) + UDP 8 + VXLAN 8; inner
    // Ethernet 14, then the inner IPv4 header.
    let inner_ip = 14 + 20 + 8 + 8 + 14;
    if be16(12)? != 0x0800 || be16(inner_ip - 2)? != 0x0800 || *frame.get(inner_ip + 9)? != 17 {
        return None;
    }
    let ihl = usize::from(frame.get(inner_ip)? & 0x0f) * 4;
    Some((be16(34)?, be16(inner_ip + ihl)?))
}

/// Sends two datagrams on each of `FLOWS` inner flows (source ports 20000…) from host 0 to
/// 10.1.0.2 through `args` and returns, per inner source port, the outer source ports seen.
fn outer_ports_per_flow(test: &str, args: &str) -> Option<BTreeMap<u16, BTreeSet<u16>>> {
    if !have_tool(test, "tcpdump") {
        return None;
    }
    let lab = Lab::lan(test, 2, Family::V4)?;
    let u0 = lab.host(0).underlay;
    let (a, _b) = lab.vxnet_pair(args);
    assert!(lab.host(0).ping("10.1.0.2", 2), "{}", a.proc.log_text());
    let capture = Capture::start(
        &lab,
        0,
        "flows",
        "eth0",
        // Up to the inner UDP ports (86 bytes): a small snap length keeps the capture light.
        96,
        u32::from(FLOWS) * 2 + 500,
        &format!("src host {u0} and udp dst port 4789"),
    );
    in_netns(&lab.host(0).ns, || {
        let sockets: Vec<UdpSocket> = (0..FLOWS)
            .map(|i| UdpSocket::bind(("10.1.0.1", FIRST_INNER_PORT + i)).unwrap())
            .collect();
        for round in 0..2u8 {
            for (i, s) in sockets.iter().enumerate() {
                s.send_to(&[round; 32], "10.1.0.2:9").unwrap();
                // The TAP's queue holds 500 frames: stay well below it.
                if i % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    })
    .join()
    .unwrap();
    let mut seen: BTreeMap<u16, BTreeSet<u16>> = BTreeMap::new();
    for (outer, inner) in capture.frames().iter().filter_map(|f| ports(f)) {
        if (FIRST_INNER_PORT..FIRST_INNER_PORT + FLOWS).contains(&inner) {
            seen.entry(inner).or_default().insert(outer);
        }
    }
    assert!(
        seen.len() >= usize::from(FLOWS) * 95 / 100,
        "only {} of {FLOWS} flows captured",
        seen.len()
    );
    // One socket per port in use, all still open (none idle for 30 s yet), none evicted. (A
    // few more than the captured flows: ARP, neighbour discovery and the pings have ports too,
    // and so do flows the capture missed.)
    let ports = &a.json("stats")["source_ports"];
    let distinct = seen.values().flatten().collect::<BTreeSet<_>>().len() as u64;
    let open = ports["open"].as_u64().unwrap();
    let uncaptured = u64::from(FLOWS) - seen.len() as u64;
    assert!(
        (distinct..=distinct + uncaptured + 20).contains(&open),
        "{distinct} ports seen: {ports}"
    );
    assert_eq!(ports["bound"], ports["open"], "{ports}");
    assert_eq!(ports["evicted"].as_u64(), Some(0), "{ports}");
    Some(seen)
}

fn check(seen: &BTreeMap<u16, BTreeSet<u16>>, range: std::ops::RangeInclusive<u16>, min: usize) {
    for (inner, outer) in seen {
        assert_eq!(outer.len(), 1, "inner flow {inner} left on ports {outer:?}");
    }
    let distinct: BTreeSet<u16> = seen.values().flatten().copied().collect();
    for port in &distinct {
        assert!(range.contains(port), "source port {port} outside {range:?}");
    }
    eprintln!(
        "{} flows on {} distinct source ports",
        seen.len(),
        distinct.len()
    );
    assert!(
        distinct.len() >= min,
        "{} flows left on only {} distinct source ports",
        seen.len(),
        distinct.len()
    );
}

#[test]
fn two_thousand_flows_spread_over_the_default_range() {
    let Some(seen) = outer_ports_per_flow("srcport_default", "") else {
        return;
    };
    // A uniform hash puts 2000 flows on about 1885 of 16384 ports.
    check(&seen, 49152..=65535, 1000);
}

#[test]
fn a_configured_range_bounds_the_ports() {
    let Some(seen) = outer_ports_per_flow("srcport_range", "--srcport 40000-40999") else {
        return;
    };
    // 2000 flows over 1000 ports: about 865 in use.
    check(&seen, 40000..=40999, 700);
}
