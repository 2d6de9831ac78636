//! The tunnel-GSO transmit path: TCP superframes leave vxnet whole, as one VXLAN datagram each,
//! through an underlay TAP redirected to the underlay device.
//!
//! One lab (three hosts on a bridge): vxnet on host 0 sends to vxnet on host 1 and to the
//! kernel's vxlan on host 2; every transfer is checked byte for byte, and captures on the
//! receivers show datagrams larger than the underlay MTU (whole superframes). The faults (device,
//! neighbour, route, redirect) are `tunnel_gso_faults.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use vxnet_dataplane::offload::Offload;
use vxnet_tests::*;

const MB: u64 = 1 << 20;

/// Captured UDP/4789 datagrams longer than the 1500-byte underlay MTU allows: whole superframes
/// (the veth and the bridge never segment them). Each carries the outer header the default
/// policy gives (DF set, TTL 64, TOS 0) and a source port of the default range.
fn whole_datagrams(frames: &[Vec<u8>]) -> usize {
    // Captured with a snap length of 96: the IPv4 total length field tells the real size.
    let whole: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|f| f.len() >= 42 && f[12..14] == [0x08, 0x00])
        .filter(|f| u16::from_be_bytes([f[16], f[17]]) > 1500)
        .collect();
    for f in &whole {
        let (tos, df, ttl) = (f[15], f[20] & 0x40 != 0, f[22]);
        assert_eq!(
            (tos, df, ttl),
            (0, true, 64),
            "outer header of a superframe"
        );
        let sport = u16::from_be_bytes([f[34], f[35]]);
        assert!(sport >= 49152, "source port {sport}");
    }
    whole.len()
}

fn send(lab: &Lab, to: usize, port: u16, what: &str) {
    let addr = SocketAddr::new(format!("10.1.0.{}", to + 1).parse().unwrap(), port);
    transfer_checked(what, lab.host(0), lab.host(to), addr, 16 * MB);
}

#[test]
fn whole_superframes_to_vxnet_and_kernel_peers() {
    let Some(lab) = Lab::lan("tgso", 3, Family::V4) else {
        return;
    };
    let u: Vec<String> = (0..3).map(|i| lab.host(i).underlay.to_string()).collect();
    lab.host(2).must(&format!(
        "ip link add vx0 type vxlan id 42 dstport 4789 local {} remote {} dev eth0 && \
         ip addr add 10.1.0.3/24 dev vx0 && ip link set vx0 up",
        u[2], u[0]
    ));
    let a = lab.vxnet(
        0,
        "a",
        &format!(
            "--vni 42 --dev vx42 --local {} --remote {} --remote {} --address 10.1.0.1/24",
            u[0], u[1], u[2]
        ),
    );
    let _b = lab.vxnet(
        1,
        "b",
        &format!(
            "--vni 42 --dev vx42 --local {} --remote {} --address 10.1.0.2/24",
            u[1], u[0]
        ),
    );
    let stats = a.stats();
    assert_eq!(stats.tx_path, "tunnel-gso", "{}", a.proc.log_text());
    assert!(stats.offloads.contains(&Offload::TunnelGso));
    // The default where the probe succeeds, said once in the start log.
    assert!(
        a.proc
            .log_text()
            .lines()
            .any(|l| l.contains("tx path: tunnel-gso through vxgso") && l.contains(">eth0")),
        "{}",
        a.proc.log_text()
    );
    assert!(lab.host(0).ping("10.1.0.2", 2) && lab.host(0).ping("10.1.0.3", 2));

    // The path is chosen, and the receivers get whole datagrams.
    for (to, port) in [(1, 5101), (2, 5102)] {
        let capture = Capture::start(
            &lab,
            to,
            &format!("in{to}"),
            "eth0",
            96,
            3000,
            "udp dst port 4789",
        );
        send(&lab, to, port, &format!("vxnet -> host {to}"));
        let whole = whole_datagrams(&capture.frames());
        assert!(
            whole > 0,
            "no datagram over the underlay MTU reached host {to}"
        );
    }
    let t = a.stats().tunnel_gso.expect("tunnel_gso in stats");
    assert!(t.superframes > 0 && t.segments > 2 * t.superframes, "{t:?}");
    assert_eq!(t.refused, 0, "{t:?}");
    assert!(t.devices.iter().any(|d| d.ends_with(">eth0")), "{t:?}");

    for reason in [DropReason::TapWrite, DropReason::BadOffload] {
        assert_eq!(a.drops(Some(42), reason), 0, "{reason} drops");
    }
}

#[test]
fn the_socket_path_when_turned_off_or_not_redirectable() {
    let Some(lab) = Lab::lan("tgsooff", 2, Family::V4) else {
        return;
    };
    let (u0, u1) = (lab.host(0).underlay, lab.host(1).underlay);
    let off = lab.vxnet(
        0,
        "off",
        &format!(
            "--vni 42 --dev vx42 --local {u0} --remote {u1} --address 10.1.0.1/24 --no-tunnel-gso"
        ),
    );
    let stats = off.stats();
    assert_eq!(stats.tx_path, "socket");
    assert!(stats.tunnel_gso.is_none());
    assert!(
        off.proc
            .log_text()
            .contains("tx path: socket (tunnel GSO not in use: turned off)"),
        "{}",
        off.proc.log_text()
    );
    assert!(!stats.offloads.contains(&Offload::TunnelGso));
    // A second engine whose underlay is the first one's TAP never redirects into it.
    let nested = lab.vxnet(
        0,
        "nested",
        "--vni 7 --dev vx7 --port 4790 --local 10.1.0.1 --remote 10.1.0.2 --address 10.2.0.1/24",
    );
    assert_eq!(nested.stats().tx_path, "socket");
    assert!(
        nested
            .proc
            .log_text()
            .contains("tx path: socket (tunnel GSO not in use: "),
        "{}",
        nested.proc.log_text()
    );
    let env = lab.vxnet_with_env(
        1,
        "env",
        &[("VXNET_DISABLE_OFFLOADS", "tunnel-gso")],
        &format!("--vni 42 --dev vx42 --local {u1} --remote {u0} --address 10.1.0.2/24"),
    );
    assert_eq!(env.stats().tx_path, "socket");
    transfer_checked(
        "socket path",
        lab.host(0),
        lab.host(1),
        "10.1.0.2:5201".parse().unwrap(),
        4 * MB,
    );
}
