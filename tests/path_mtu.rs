//! Path-MTU signalling: a jumbo-frame host and a 1500-byte host behind a router, both overlays
//! at MTU 8950 (one MTU for the whole cluster, as orchestrators set it). Neither TCP knows the
//! path only carries 1500-byte packets: the jumbo host's vxnet learns it from the router's ICMP
//! frag-needed (the kernel's PMTU for that VTEP), the 1500 host's from its own route, and each
//! answers the oversize frames from its TAP with ICMP frag-needed / packet-too-big, so TCP
//! lowers its MSS and the transfers complete, byte-checked, without anyone lowering an MTU.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use vxnet_tests::*;

const JUMBO: usize = 0;
const SMALL: usize = 1;
const VNI: u32 = 42;

struct Routed {
    lab: Lab,
    engines: [Vxnet; 2],
}

fn routed(test: &str, family: Family, args: &str) -> Option<Routed> {
    let lab = Lab::routed(test, family, [9000, 1500])?;
    let (inner, prefix) = match family {
        Family::V4 => ("10.1.0.", "24"),
        Family::V6 => ("fd42::", "64"),
    };
    let start = |i: usize| {
        lab.vxnet(
            i,
            &format!("h{i}"),
            &format!(
                "--vni 42 --dev vx42 --local {} --remote {} --address {inner}{}/{prefix} --mtu 8950 {args}",
                lab.host(i).underlay,
                lab.host(1 - i).underlay,
                i + 1
            ),
        )
    };
    let engines = [start(JUMBO), start(SMALL)];
    for i in [JUMBO, SMALL] {
        if family == Family::V6 {
            let out = wait_for(Duration::from_secs(5), || {
                !lab.host(i)
                    .must("ip -6 addr show dev vx42")
                    .contains("tentative")
            });
            assert!(out, "vx42 kept a tentative address");
        }
    }
    Some(Routed { lab, engines })
}

fn inner(family: Family, i: usize) -> String {
    match family {
        Family::V4 => format!("10.1.0.{}", i + 1),
        Family::V6 => format!("fd42::{}", i + 1),
    }
}

fn transfer(r: &Routed, family: Family, from: usize, to: usize, port: u16) {
    let addr = match family {
        Family::V4 => format!("{}:{port}", inner(family, to)),
        Family::V6 => format!("[{}]:{port}", inner(family, to)),
    };
    let len = 8 << 20;
    let elapsed = transfer_checked(
        &format!("8 MB host {from} -> host {to}"),
        r.lab.host(from),
        r.lab.host(to),
        addr.parse().unwrap(),
        len,
    );
    eprintln!("8 MB {from} -> {to}: {elapsed:.2?}");
}

/// The MTU the kernel of host `i` now keeps for `target` (a route exception learned from an
/// ICMP too-big), if any.
fn learned_mtu(r: &Routed, i: usize, target: &str) -> Option<u32> {
    let route = r.lab.host(i).must(&format!("ip route get {target}"));
    let words: Vec<&str> = route.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "mtu")
        .and_then(|w| w[1].parse().ok())
}

fn ip_flag(family: Family) -> &'static str {
    match family {
        Family::V4 => "-4",
        Family::V6 => "-6",
    }
}

fn check(test: &str, family: Family, args: &str) {
    let Some(r) = routed(test, family, args) else {
        return;
    };
    let overhead = if family == Family::V4 { 50 } else { 70 };
    let [jumbo, small] = &r.engines;
    assert!(
        r.lab.host(JUMBO).ping(&inner(family, SMALL), 2),
        "{}",
        jumbo.proc.log_text()
    );
    // 1500 -> jumbo: the small host's own underlay route is the limit.
    transfer(&r, family, SMALL, JUMBO, 5601);
    assert!(
        small.network(VNI).too_big_replies > 0,
        "no ICMP too-big reply from the 1500 host's vxnet"
    );
    assert_eq!(
        learned_mtu(&r, SMALL, &inner(family, JUMBO)),
        Some(1500 - overhead)
    );
    // What the hosts learned would now make each advertise the small MSS to the other: forget
    // it, so the jumbo host's TCP starts with 8950-byte frames again.
    for i in [JUMBO, SMALL] {
        r.lab
            .host(i)
            .must(&format!("ip {} route flush cache", ip_flag(family)));
        assert_eq!(learned_mtu(&r, i, &inner(family, 1 - i)), None);
    }
    // Jumbo -> 1500: the router refuses the first big packets with frag-needed, the jumbo
    // host's vxnet passes it on into its TAP.
    transfer(&r, family, JUMBO, SMALL, 5602);
    assert!(
        jumbo.network(VNI).too_big_replies > 0,
        "no ICMP too-big reply from the jumbo host's vxnet"
    );
    assert!(jumbo.drops(Some(VNI), DropReason::TooBig) > 0);
    // Its kernel learned the underlay path from the router, its TCP the overlay path from vxnet.
    assert_eq!(
        learned_mtu(&r, JUMBO, &r.lab.host(SMALL).underlay.to_string()),
        Some(1500)
    );
    assert_eq!(
        learned_mtu(&r, JUMBO, &inner(family, SMALL)),
        Some(1500 - overhead)
    );
    // Nothing was fragmented on the way: DF everywhere, the signalling did the rest.
    let frag = if family == Family::V4 {
        "FragCreates"
    } else {
        "Ip6FragCreates"
    };
    for i in [JUMBO, SMALL] {
        assert_eq!(r.lab.host(i).ip_stat(frag), 0, "host {i} fragmented");
    }
    // Only the refused frames are drops.
    for (name, v) in [("jumbo", jumbo), ("small", small)] {
        let stats = v.json("stats");
        for (reason, count) in stats["networks"][0]["drops"].as_object().unwrap() {
            if reason != "too_big" {
                assert_eq!(count.as_u64(), Some(0), "{name}: drops.{reason}");
            }
        }
    }
}

#[test]
fn tcp_across_a_1500_hop_between_8950_overlays() {
    check("pmtu_v4", Family::V4, "");
}

#[test]
fn tcp_across_a_1500_hop_between_8950_overlays_ipv6() {
    check("pmtu_v6", Family::V6, "");
}

/// Without TAP offloads every frame is checked on its own (no superframes, no GSO).
#[test]
fn tcp_across_a_1500_hop_without_offloads() {
    check("pmtu_nooff", Family::V4, "--no-offloads");
}
