//! Test 5 of issue 3: a burst of malformed VXLAN datagrams. The engine keeps running, counts each
//! drop reason exactly, and valid traffic (ping and a byte-checked TCP transfer with a kernel
//! vxlan peer) before, during and after the burst loses nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use vxnet_dataplane::control::proto::StatsReport;
use vxnet_tests::{have_tool, in_netns, start_transfer, wait_for, DropReason, Family, Host, Lab};

const VNI: u32 = 42;
const MTU: usize = 1200;
/// How many times each kind of bad datagram is sent (per round), so every reason has its own count.
const KINDS: [(DropReason, u64); 7] = [
    (DropReason::TooShort, 3),
    (DropReason::NoVniFlag, 4),
    (DropReason::UnknownVni, 5),
    (DropReason::InnerTooShort, 6),
    (DropReason::Oversize, 7),
    (DropReason::VlanTagged, 8),
    (DropReason::NotPeer, 9),
];
const ROUNDS: u64 = 40;

fn vxlan(flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut d = vec![flags, 0, 0, 0];
    d.extend_from_slice(&vni.to_be_bytes()[1..]);
    d.push(0);
    d.extend_from_slice(inner);
    d
}

/// A unicast frame from a MAC nobody uses, so learning it changes nothing that matters.
fn inner_frame(len: usize, ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x98, 0x02, 0, 0, 0, 0, 0x99];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.resize(len, 0xab);
    f
}

/// The datagram for one kind of bad input.
fn bad(kind: DropReason) -> Vec<u8> {
    match kind {
        DropReason::TooShort => vec![0x08, 0, 0, 0],
        DropReason::NoVniFlag => vxlan(0x00, VNI, &inner_frame(60, 0x0800)),
        DropReason::UnknownVni => vxlan(0x08, VNI + 1, &inner_frame(60, 0x0800)),
        DropReason::InnerTooShort => vxlan(0x08, VNI, &inner_frame(60, 0x0800)[..10]),
        // MTU + 14 is the largest frame the network carries.
        DropReason::Oversize => vxlan(0x08, VNI, &inner_frame(MTU + 14 + 86, 0x0800)),
        DropReason::VlanTagged => vxlan(0x08, VNI, &inner_frame(64, 0x8100)),
        // Well-formed, but sent from a host that is not a peer.
        DropReason::NotPeer => vxlan(0x08, VNI, &inner_frame(60, 0x0800)),
        other => unreachable!("no bad input for {other}"),
    }
}

/// Sends `rounds` rounds of the given kinds from inside `from`'s namespace, paced so that a
/// burst overlaps the valid traffic instead of being over before it starts.
fn burst(from: &Host, to: SocketAddr, kinds: Vec<(DropReason, u64)>, rounds: u64) {
    let ns = from.ns.clone();
    in_netns(&ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..rounds {
            for (kind, n) in &kinds {
                let datagram = bad(*kind);
                for _ in 0..*n {
                    socket.send_to(&datagram, to).unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    })
    .join()
    .unwrap();
}

fn ping_without_loss(host: &Host, target: &str, count: u32) {
    let out = host.sh(&format!("ping -c {count} -i 0.05 -W 2 {target}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("{count} received, 0% packet loss")),
        "ping {target} lost packets:\n{text}"
    );
}

type Drops = BTreeMap<DropReason, u64>;

/// Engine-wide drops and those of VNI 42.
fn drops(stats: &StatsReport) -> (Drops, Drops) {
    let network = stats.networks.iter().find(|n| n.vni == VNI).unwrap();
    (stats.drops.clone(), network.drops.clone())
}

#[test]
fn malformed_burst_is_counted_and_valid_traffic_survives() {
    let Some(lab) = Lab::lan("bad_input", 3, Family::V4) else {
        return;
    };
    if !have_tool("bad_input", "ethtool") {
        return;
    }
    let (vtep, peer, stranger) = (lab.host(0), lab.host(1), lab.host(2));
    let mut engine = lab.vxnet(
        0,
        "vx",
        &format!(
            "--vni {VNI} --dev vx42 --local {} --remote {} --address 10.1.0.1/24 --mtu {MTU}",
            vtep.underlay, peer.underlay
        ),
    );
    // The kernel's vxlan as the valid peer, with the same inner MTU so TCP never sends a
    // segment vxnet would have to drop as oversize.
    peer.must(&format!(
        "ip link add vx0 type vxlan id {VNI} dstport 4789 local {} remote {} dev eth0 && \
         ip link set vx0 mtu {MTU} && ip addr add 10.1.0.2/24 dev vx0 && ip link set vx0 up",
        peer.underlay, vtep.underlay
    ));
    // Inner checksums computed in software, as on a real wire (vxnet would also complete the
    // partial ones a same-host kernel leaves, but this test is about what a wire carries).
    peer.must("ethtool -K vx0 tx off >/dev/null");

    // Before.
    ping_without_loss(peer, "10.1.0.1", 5);
    ping_without_loss(vtep, "10.1.0.2", 5);
    let before = engine.stats();
    let (global0, net0) = drops(&before);
    assert!(
        global0.values().chain(net0.values()).all(|&v| v == 0),
        "drops before the burst: {before:?}"
    );

    // During: a TCP transfer and a ping run while the peer and a stranger send the burst.
    let port = 5001;
    let target: SocketAddr = "10.1.0.1:5001".parse().unwrap();
    let len = 8 << 20;
    let transfer = start_transfer("TCP during the burst", peer, vtep, target, len);
    let pinger = {
        let peer = peer.clone();
        std::thread::spawn(move || ping_without_loss(&peer, "10.1.0.1", 30))
    };
    let to = SocketAddr::new(vtep.underlay, 4789);
    let from_peer: Vec<_> = KINDS
        .iter()
        .copied()
        .filter(|(k, _)| *k != DropReason::NotPeer)
        .collect();
    let from_stranger: Vec<_> = KINDS
        .iter()
        .copied()
        .filter(|(k, _)| *k == DropReason::NotPeer)
        .collect();
    let stranger_burst = {
        let stranger = stranger.clone();
        std::thread::spawn(move || burst(&stranger, to, from_stranger, ROUNDS))
    };
    burst(peer, to, from_peer, ROUNDS);
    stranger_burst.join().unwrap();
    pinger.join().unwrap();
    let moved = transfer
        .finish()
        .unwrap_or_else(|e| panic!("TCP data lost or corrupted on port {port}: {e}"));
    assert_eq!(moved.bytes, len, "TCP data lost on port {port}");

    // After.
    ping_without_loss(peer, "10.1.0.1", 5);
    ping_without_loss(vtep, "10.1.0.2", 5);
    assert!(
        matches!(engine.proc.child.try_wait(), Ok(None)),
        "the engine exited: {}",
        engine.proc.log_text()
    );

    // Exact counts: each reason once per bad datagram, nothing else dropped. Engine-wide reasons
    // are those found before a network is known; the rest belong to VNI 42.
    let engine_wide = [
        DropReason::TooShort,
        DropReason::NoVniFlag,
        DropReason::InnerTooShort,
        DropReason::UnknownVni,
    ];
    let mut want_global: Drops = global0.keys().map(|k| (*k, 0)).collect();
    let mut want_net: Drops = net0.keys().map(|k| (*k, 0)).collect();
    for (kind, n) in KINDS {
        let map = if engine_wide.contains(&kind) {
            &mut want_global
        } else {
            &mut want_net
        };
        assert!(map.contains_key(&kind), "stats has no reason {kind}");
        map.insert(kind, n * ROUNDS);
    }
    let settled = wait_for(Duration::from_secs(5), || {
        drops(&engine.stats()) == (want_global.clone(), want_net.clone())
    });
    let stats = engine.stats();
    let (global, net) = drops(&stats);
    assert!(settled, "drop counters differ:\nwant engine {want_global:?}\n got engine {global:?}\nwant vni {want_net:?}\n got vni {net:?}");
}

/// A well-formed inner TCP packet far over the MTU, in a VXLAN datagram the sender's kernel
/// fragments and vxnet's kernel reassembles: the same shape as a same-host kernel VTEP's
/// UDP-tunnel GSO superframe, which vxnet hands to the TAP whole. Wire-born, its checksum is a
/// complete one, so it stays an oversize frame (VTEPs do not fragment) and is never handed on.
#[test]
fn oversize_tcp_packet_from_the_wire_is_not_taken_for_a_superframe() {
    let Some(lab) = Lab::lan("oversize_superframe", 2, Family::V4) else {
        return;
    };
    let (vtep, peer) = (lab.host(0), lab.host(1));
    let engine = lab.vxnet(
        0,
        "vx",
        &format!(
            "--vni {VNI} --dev vx42 --local {} --remote {} --address 10.1.0.1/24",
            vtep.underlay, peer.underlay
        ),
    );
    let mut inner = Vec::new();
    etherparse::PacketBuilder::ethernet2([0x02, 0, 0, 0, 0, 0x98], [0x02, 0, 0, 0, 0, 0x99])
        .ipv4([10, 1, 0, 2], [10, 1, 0, 1], 64)
        .tcp(40000, 5201, 7, 1000)
        .ack(1)
        .write(&mut inner, &[0x5a; 20_000])
        .unwrap();
    let datagram = vxlan(0x08, VNI, &inner);
    let to = SocketAddr::new(vtep.underlay, 4789);
    in_netns(&peer.ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..3 {
            socket.send_to(&datagram, to).unwrap();
        }
    })
    .join()
    .unwrap();
    let oversize = || engine.drops(Some(VNI), DropReason::Oversize);
    let counted = wait_for(Duration::from_secs(5), || oversize() >= 3);
    assert!(counted, "oversize drops: {}", oversize());
    assert_eq!(engine.network(VNI).tunnel_superframes, 0);
}
