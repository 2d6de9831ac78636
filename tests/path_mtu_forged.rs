//! Path MTU that forged ICMP cannot poison. A blind attacker sprays ICMP "fragmentation needed"
//! claiming an MTU of 300 over every source port of host A's engine; A's kernel takes it (down
//! to its floor of 552) for the path to B. Below `--min-pmtu` (1280 by default) vxnet does not
//! follow it: a 2 MB TCP transfer and a 1400-byte DF ping across the overlay still work. One
//! claiming 1400 (above the floor) is followed as path-MTU discovery should be: the 1400-byte
//! DF ping is answered with ICMP "fragmentation needed" from inside the TAP (`too_big_replies`),
//! and TCP still moves its 2 MB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use vxnet_tests::*;

const VNI: u32 = 42;

/// Sends ICMP frag-needed (type 3 code 4) with next-hop MTU `mtu` to `victim`, each quoting a
/// UDP datagram from `victim`:PORT to `peer`:4789, for every PORT in `ports`, through a raw
/// socket. argv: victim peer low high mtu.
const SPRAY: &str = r#"
import socket, struct, sys
victim, peer = sys.argv[1], sys.argv[2]
low, high, mtu = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for port in range(low, high + 1):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1450, 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(victim), socket.inet_aton(peer))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", port, 4789, 1430, 0)
    icmp = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + ip + udp
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    raw.sendto(icmp, (victim, 0))
"#;

/// Host 1 (any host on the path would do) sprays host 0 with forged frag-needed for `mtu`.
fn spray(lab: &Lab, mtu: u32) {
    let (victim, peer) = (lab.host(0).underlay, lab.host(1).underlay);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.host(1).ns, "python3", "-c", SPRAY])
        .args([
            victim.to_string(),
            peer.to_string(),
            "49152".into(),
            "65535".into(),
            mtu.to_string(),
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "spraying ICMP: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The path MTU host `i`'s kernel keeps for `target` (a route exception), if any.
fn learned_mtu(lab: &Lab, i: usize, target: IpAddr) -> Option<u32> {
    let route = lab.host(i).must(&format!("ip route get {target}"));
    // `mtu 1400`, or `mtu lock 552` when the kernel clamped it to its floor.
    let mut words = route.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.find(|w| *w != "lock")?.parse().ok()
}

fn transfer_2mb(lab: &Lab, port: u16) {
    let elapsed = transfer_checked(
        "2 MB host 0 -> host 1",
        lab.host(0),
        lab.host(1),
        format!("10.1.0.2:{port}").parse().unwrap(),
        2 << 20,
    );
    eprintln!("2 MB 0 -> 1: {elapsed:.2?}");
}

/// `ping -M do` of a 1400-byte IP packet from host 0 to host 1's overlay address.
fn df_ping(lab: &Lab) -> std::process::Output {
    lab.host(0)
        .sh("ping -c 3 -i 0.2 -W 2 -M do -s 1372 10.1.0.2")
}

#[test]
fn forged_frag_needed_below_the_floor_is_not_followed() {
    let Some(lab) = Lab::lan("pmtu_forged", 2, Family::V4) else {
        return;
    };
    let (a, _b) = lab.vxnet_pair("");
    assert!(lab.host(0).ping("10.1.0.2", 2), "{}", a.proc.log_text());
    // Flows in use: their source-port sockets are open, the spray finds them.
    transfer_2mb(&lab, 5701);
    spray(&lab, 300);
    let peer = lab.host(1).underlay;
    assert!(
        wait_for(std::time::Duration::from_secs(5), || learned_mtu(
            &lab, 0, peer
        )
        .is_some_and(|m| m < 1280)),
        "the kernel did not take the forged ICMP (the test proves nothing): {:?}",
        learned_mtu(&lab, 0, peer)
    );
    let ping = df_ping(&lab);
    assert!(
        ping.status.success(),
        "a 1400-byte DF ping after forged ICMP (MTU 300): {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    transfer_2mb(&lab, 5702);
    // The workers read the path MTU once a second: on an idle machine the ping and the transfer
    // can be over before the first read that sees the forged value and warns.
    let warned = || {
        a.proc
            .log_text()
            .contains("below --min-pmtu (most likely forged ICMP frag-needed); not followed")
    };
    assert!(
        wait_for(std::time::Duration::from_secs(5), warned),
        "no warning about the ignored path MTU: {}",
        a.proc.log_text()
    );

    // Above the floor the path MTU is followed, and the frames that no longer fit are answered
    // from inside the TAP, though the kernel refuses none of them. (The kernel only ever lowers
    // a path MTU: the poisoned one goes first.)
    lab.host(0).must("ip route flush cache");
    spray(&lab, 1400);
    assert!(
        wait_for(std::time::Duration::from_secs(5), || learned_mtu(
            &lab, 0, peer
        ) == Some(1400)),
        "the kernel did not take the ICMP for 1400: {:?}",
        learned_mtu(&lab, 0, peer)
    );
    // The workers read the path MTU once a second: until then the ping may still pass (the
    // kernel, in PMTUDISC_PROBE, refuses nothing), so ask again until the engine has followed.
    let mut text = String::new();
    let followed = wait_for(std::time::Duration::from_secs(5), || {
        let ping = df_ping(&lab);
        text = String::from_utf8_lossy(&ping.stdout).into_owned()
            + &String::from_utf8_lossy(&ping.stderr);
        text.contains("mtu = 1350")
    });
    assert!(
        followed,
        "the 1400-byte DF ping is answered with the path's inner MTU (1400 - 50): {text}"
    );
    assert!(a.network(VNI).too_big_replies > 0);
    transfer_2mb(&lab, 5703);
}
