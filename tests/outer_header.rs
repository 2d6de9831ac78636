//! The outer IP header's DF bit, TTL and TOS (`--df`, `--ttl`, `--tos`), checked on the wire for
//! single datagrams (pings) and for UDP GSO segments (the TSO superframes of a TCP transfer): the
//! kernel treats the two differently, and its default (IP_PMTUDISC_WANT) sets DF only on
//! datagrams that fit the path MTU, which a GSO send as a whole never does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use vxnet_tests::*;

/// The outer header fields of one captured VXLAN packet and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outer {
    df: bool,
    ttl: u8,
    tos: u8,
    /// Outer IP packet length.
    len: usize,
    /// The inner IP protocol (1 ICMP, 6 TCP; for IPv6 the first next header), 0 for non-IP.
    inner_proto: u8,
    /// The inner packet is IPv6 (the TAP's neighbour discovery and MLD).
    inner_v6: bool,
}

fn outer(frame: &[u8]) -> Option<Outer> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let (ip, outer, inner) = match ethertype {
        0x0800 => {
            let ip = frame.get(14..34)?;
            let f = Outer {
                df: ip[6] & 0x40 != 0,
                ttl: ip[8],
                tos: ip[1],
                len: u16::from_be_bytes([ip[2], ip[3]]) as usize,
                inner_proto: 0,
                inner_v6: false,
            };
            (ip, f, 14 + 20 + 8 + 8)
        }
        0x86dd => {
            let ip = frame.get(14..54)?;
            let f = Outer {
                df: false,
                ttl: ip[7],
                tos: (ip[0] << 4) | (ip[1] >> 4),
                len: u16::from_be_bytes([ip[4], ip[5]]) as usize + 40,
                inner_proto: 0,
                inner_v6: false,
            };
            (ip, f, 14 + 40 + 8 + 8)
        }
        _ => return None,
    };
    let _ = ip;
    let inner_proto = match frame.get(inner + 12..inner + 14) {
        Some([0x08, 0x00]) => frame.get(inner + 14 + 9).copied().unwrap_or(0),
        Some([0x86, 0xdd]) => frame.get(inner + 14 + 6).copied().unwrap_or(0),
        _ => 0,
    };
    let inner_v6 = frame.get(inner + 12..inner + 14) == Some(&[0x86, 0xdd][..]);
    Some(Outer {
        inner_proto,
        inner_v6,
        ..outer
    })
}

struct Pair {
    lab: Lab,
    a: Vxnet,
    _b: Vxnet,
}

/// Two vxnet hosts; `a` gets `args_a`. Host a's `eth0` segments UDP GSO sends in software, so a
/// capture there sees every segment as it leaves.
fn pair(test: &str, family: Family, args_a: &str) -> Option<Pair> {
    if !have_tool(test, "tcpdump") {
        return None;
    }
    let lab = Lab::lan(test, 2, family)?;
    lab.host(0)
        .must("ethtool -K eth0 tx-udp-segmentation off >/dev/null");
    // The socket path's GSO segments are what is checked here (tests/tunnel_gso.rs checks the
    // outer header of whole superframes).
    let (a, b) = lab.vxnet_pair(&format!("{args_a} --no-tunnel-gso"));
    Some(Pair { lab, a, _b: b })
}

impl Pair {
    /// Captures what host a sends to b's VXLAN port while `f` runs.
    fn sent_while(&self, f: impl FnOnce()) -> Vec<Outer> {
        let capture = Capture::start(
            &self.lab,
            0,
            "outer",
            "eth0",
            160,
            4000,
            &format!(
                "src host {} and udp dst port 4789",
                self.lab.host(0).underlay
            ),
        );
        f();
        let packets: Vec<Outer> = capture.frames().iter().filter_map(|f| outer(f)).collect();
        assert!(!packets.is_empty(), "nothing captured");
        packets
    }

    fn ping(&self, extra: &str) {
        let out = self
            .lab
            .host(0)
            .sh(&format!("ping -c 3 -i 0.2 -W 2 -s 1000 {extra} 10.1.0.2"));
        assert!(
            out.status.success(),
            "ping failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            self.a.proc.log_text()
        );
    }

    fn transfer(&self, port: u16) {
        let addr = format!("10.1.0.2:{port}").parse().unwrap();
        transfer_checked(
            "4 MB a -> b",
            self.lab.host(0),
            self.lab.host(1),
            addr,
            4 << 20,
        );
        assert!(
            self.a.network(42).gso_batches > 0,
            "the transfer used no UDP GSO send"
        );
    }
}

/// Every packet fits `expect`, and among them are full-size GSO segments of TCP and single
/// datagrams of ICMP.
fn check(packets: &[Outer], mtu: usize, expect: impl Fn(&Outer) -> Option<(bool, u8, u8)>) {
    let mut segments = 0;
    let mut pings = 0;
    for p in packets {
        if let Some((df, ttl, tos)) = expect(p) {
            assert_eq!(
                (p.df, p.ttl, p.tos),
                (df, ttl, tos),
                "outer header of {p:?}"
            );
        }
        if p.len == mtu && p.inner_proto == 6 {
            segments += 1;
        }
        if p.inner_proto == 1 {
            pings += 1;
        }
    }
    assert!(
        segments > 100,
        "only {segments} full-size TCP segments captured"
    );
    assert!(pings >= 3, "only {pings} pings captured");
}

/// Starts the pair with `args` on host a, pings and moves 4 MB over TCP (port `port`), and
/// checks every packet a sent against `(df, ttl, tos)`.
fn fixed(test: &str, family: Family, args: &str, port: u16, expect: (bool, u8, u8)) {
    let Some(p) = pair(test, family, args) else {
        return;
    };
    let packets = p.sent_while(|| {
        p.ping("");
        p.transfer(port);
    });
    check(&packets, 1500, |_| Some(expect));
    if family == Family::V6 {
        // df set over IPv6: never fragmented at the source.
        assert_eq!(p.lab.host(0).ip_stat("Ip6FragCreates"), 0);
    }
}

/// The default is df set: every packet, GSO segment or not, carries DF.
#[test]
fn fixed_ttl_and_tos_with_df_set_on_gso_and_single_datagrams() {
    fixed(
        "outer_fixed",
        Family::V4,
        "--ttl 9 --tos 0xb8",
        5401,
        (true, 9, 0xb8),
    );
}

#[test]
fn df_unset_clears_df_everywhere() {
    fixed(
        "outer_unset",
        Family::V4,
        "--df unset",
        5402,
        (false, 64, 0),
    );
}

/// `inherit` takes each packet's fields from its inner header: pings with TTL 33, TOS 0x28 and
/// DF clear; TCP with DF (Linux TCP sets it), TTL 20 (the overlay route's hoplimit, so it differs
/// from the outer default) and the TOS iperf3 sets; ARP and other non-IP frames get DF clear,
/// the default TTL and TOS 0.
#[test]
fn inherit_copies_df_ttl_and_dscp_from_each_inner_packet() {
    if !have_tool("outer_inherit", "iperf3") {
        return;
    }
    let Some(p) = pair(
        "outer_inherit",
        Family::V4,
        "--df inherit --ttl inherit --tos inherit",
    ) else {
        return;
    };
    let h0 = p.lab.host(0);
    h0.must(
        "ip route replace 10.1.0.0/24 dev vx42 proto kernel scope link src 10.1.0.1 hoplimit 20",
    );
    let log = p.lab.dir.join("iperf3.log");
    let _server = p.lab.spawn(1, &log, "iperf3 -s -1 -B 10.1.0.2 -p 5403");
    assert!(wait_for(Duration::from_secs(5), || p
        .lab
        .host(1)
        .sh("ss -ltn | grep -q :5403")
        .status
        .success()));
    let packets = p.sent_while(|| {
        p.ping("-t 33 -Q 0x2b -M dont");
        h0.must("iperf3 -c 10.1.0.2 -p 5403 -n 4M -S 0x20 >/dev/null");
    });
    check(&packets, 1500, |o| match o.inner_proto {
        // The TAP's own IPv6 neighbour discovery and MLD: inner IPv6 always means DF, and its
        // hop limit (255 or 1) is inherited.
        _ if o.inner_v6 => Some((true, o.ttl, 0)),
        // ECN bits of the inner TOS (0x2b has ECT/CE bits 0x03) do not reach the outer header.
        1 => Some((false, 33, 0x28)),
        6 if o.len == 1500 => Some((true, 20, 0x20)),
        6 => None,
        // ARP.
        _ => Some((false, 64, 0)),
    });
    assert!(p.a.network(42).gso_batches > 0);
}

/// IPv6 has no DF bit (the parser reads it as clear): hop limit and traffic class.
#[test]
fn ipv6_underlay_fixed_hop_limit_and_traffic_class() {
    fixed(
        "outer_v6",
        Family::V6,
        "--ttl 7 --tos 0x48",
        5404,
        (false, 7, 0x48),
    );
}
