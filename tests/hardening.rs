//! Faults and hostile input an engine must take in its stride: a zero-length datagram is a
//! counted drop, a plaintext engine leaves the ESP-in-UDP port to others, and a static-mode
//! engine killed and restarted keeps its TAP MAC (so the peers' ARP caches stay right).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::time::Duration;

use vxnet_tests::{in_netns, wait_for, Family, Host, Lab, Vxnet};

/// Whether anything in `host`'s namespace listens on UDP `port`.
fn udp_port_bound(host: &Host, port: u16) -> bool {
    let out = host.must(&format!("ss -Hunl 'sport = :{port}'"));
    !out.trim().is_empty()
}

/// `vxnet stats --json`'s engine-wide drop count for `reason` (by name, so a reason the engine
/// does not know reads as 0 and fails the assertion rather than the build).
fn drops_named(engine: &Vxnet, reason: &str) -> u64 {
    engine.json("stats")["drops"][reason].as_u64().unwrap_or(0)
}

fn tap_mac(host: &Host, dev: &str) -> String {
    host.must(&format!("cat /sys/class/net/{dev}/address"))
        .trim()
        .to_string()
}

#[test]
fn zero_length_datagrams_are_a_counted_drop() {
    let Some(lab) = Lab::lan("hardening_empty", 2, Family::V4) else {
        return;
    };
    let (a, b) = lab.vxnet_pair("");
    assert!(lab.host(0).ping("10.1.0.2", 1), "overlay does not work");
    let target = std::net::SocketAddr::new(lab.host(0).underlay, 4789);
    in_netns(&lab.host(1).ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..7 {
            socket.send_to(&[], target).unwrap();
        }
    })
    .join()
    .unwrap();
    let counted = wait_for(Duration::from_secs(5), || {
        drops_named(&a, "empty_datagram") == 7
    });
    assert!(
        counted,
        "7 zero-length datagrams, counted as empty_datagram: {}",
        drops_named(&a, "empty_datagram")
    );
    assert!(lab.host(0).ping("10.1.0.2", 1), "overlay broken after them");
    drop(b);
}

#[test]
fn plaintext_engines_leave_the_esp_port_alone() {
    let Some(lab) = Lab::lan("hardening_espport", 1, Family::V4) else {
        return;
    };
    let h = lab.host(0).clone();
    let u = h.underlay;
    let first = lab.vxnet(
        0,
        "p1",
        &format!("--vni 42 --dev vxp1 --local {u} --address 10.1.0.1/24"),
    );
    assert!(
        !udp_port_bound(&h, 4500),
        "a plaintext engine holds UDP 4500:\n{}",
        h.must("ss -Hunlp")
    );
    // A second plaintext engine on the host (another VXLAN port) starts too.
    let second = lab.vxnet(
        0,
        "p2",
        &format!("--vni 43 --dev vxp2 --local {u} --port 4790 --address 10.2.0.1/24"),
    );
    // Another program (IKE's NAT-T, say) takes 4500: still no obstacle to a plaintext engine.
    let ns = h.ns.clone();
    let ike = in_netns(&ns, move || UdpSocket::bind((u, 4500)))
        .join()
        .unwrap()
        .expect("UDP 4500 is free for another program while plaintext engines run");
    let third = lab.vxnet(
        0,
        "p3",
        &format!("--vni 44 --dev vxp3 --local {u} --port 4791 --address 10.3.0.1/24"),
    );
    // Asked for explicitly, the ESP port is bound (ESP from a peer that encrypts is then heard
    // and counted as esp_no_key).
    let explicit = lab.vxnet(
        0,
        "p4",
        &format!(
            "--vni 45 --dev vxp4 --local {u} --port 4792 --esp-port 4502 --address 10.4.0.1/24"
        ),
    );
    assert!(udp_port_bound(&h, 4502), "--esp-port 4502 given, not bound");
    drop(ike);
    drop((first, second, third, explicit));
}

#[test]
fn static_engine_restarted_after_kill_keeps_its_mac() {
    let Some(lab) = Lab::lan("hardening_mac", 2, Family::V4) else {
        return;
    };
    let (mut a, b) = lab.vxnet_pair("");
    let h0 = lab.host(0).clone();
    let h1 = lab.host(1).clone();
    assert!(h1.ping("10.1.0.1", 2), "overlay does not work");
    let before = tap_mac(&h0, "vx42");
    // The peer now has host 0's MAC in its ARP cache (REACHABLE for 15-45 s).
    assert!(h1.must("ip neigh show 10.1.0.1").contains(&before));

    a.proc.child.kill().unwrap();
    a.proc.child.wait().unwrap();
    let (u0, u1) = (h0.underlay, h1.underlay);
    let a2 = lab.vxnet(
        0,
        "a",
        &format!("--vni 42 --dev vx42 --local {u0} --remote {u1} --address 10.1.0.1/24"),
    );
    let after = tap_mac(&h0, "vx42");
    assert_eq!(before, after, "the TAP MAC changed across a restart");
    // At once: no waiting for the peer's ARP entry to age out.
    let out = h1.sh("ping -c 3 -i 0.3 -W 1 10.1.0.1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains(" 0 received"),
        "ping right after the restart:\n{text}"
    );
    // Another network on the same host gets another MAC, and so does the peer.
    assert_ne!(after, tap_mac(&h1, "vx42"));
    drop((a2, b));
}

#[test]
fn an_address_another_interface_holds_is_warned_about() {
    let Some(lab) = Lab::lan("hardening_addr", 1, Family::V4) else {
        return;
    };
    let h = lab.host(0).clone();
    // What a bridge-mode run without --cleanup leaves: its bridge, holding the address. Before,
    // the TAP got the address too without a word, and the overlay was silently dead.
    h.must("ip link add vxkept type bridge && ip addr add 10.1.0.1/24 dev vxkept");
    let engine = lab.vxnet(
        0,
        "a",
        &format!(
            "--vni 42 --dev vx42 --local {} --address 10.1.0.1/24",
            h.underlay
        ),
    );
    let said = || {
        engine
            .proc
            .log_text()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("10.1.0.1/24 of vx42 is also on vxkept"))
    };
    assert!(
        wait_for(Duration::from_secs(5), said),
        "{}",
        engine.proc.log_text()
    );
}
