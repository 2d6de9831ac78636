//! The forwarding rules, exercised on the pure core: no sockets, no clock, no root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use vxnet_dataplane::counters::DropReason;
use vxnet_dataplane::forward::{TapAction, WireAction};
use vxnet_encap::MacAddr;

#[test]
fn unknown_unicast_and_broadcast_flood_then_learned_unicast_goes_to_one_peer() {
    let net = network(42, &["10.0.0.2", "10.0.0.3"]);
    let fwd = forwarder(vec![net.clone()], false);
    assert_eq!(net.peers().flood.len(), 2);

    // Before learning: unicast to mac(3) is unknown → flood; broadcast → flood.
    assert_eq!(
        fwd.from_tap(0, &frame(mac(3), mac(1), 100)),
        TapAction::Flood
    );
    assert_eq!(
        fwd.from_tap(0, &frame(MacAddr::BROADCAST, mac(1), 60)),
        TapAction::Flood
    );

    // mac(3) speaks from 10.0.0.3: learned.
    let reply = vxlan(42, &frame(mac(1), mac(3), 100));
    let action = fwd.from_wire(0, from("10.0.0.3"), &reply);
    assert_eq!(
        action,
        WireAction::Deliver {
            network: 0,
            inner: 8..108
        }
    );
    assert_eq!(
        fwd.from_tap(0, &frame(mac(3), mac(1), 100)),
        TapAction::Unicast(SocketAddr::new(ip("10.0.0.3"), PORT))
    );
    // Multicast is still flooded, whatever is learned.
    assert_eq!(
        fwd.from_tap(0, &frame(MacAddr([0x01, 0, 0x5e, 0, 0, 1]), mac(1), 60)),
        TapAction::Flood
    );
    // The MAC moves to 10.0.0.2.
    fwd.from_wire(1, from("10.0.0.2"), &reply);
    assert_eq!(
        fwd.from_tap(0, &frame(mac(3), mac(1), 100)),
        TapAction::Unicast(SocketAddr::new(ip("10.0.0.2"), PORT))
    );
    assert_eq!(
        net.events
            .learned
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        net.events.moved.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn non_peers_are_dropped_unless_accept_any() {
    let net = network(42, &["10.0.0.2"]);
    let strict = forwarder(vec![net.clone()], false);
    let packet = vxlan(42, &frame(mac(1), mac(9), 80));
    assert_eq!(
        strict.from_wire(0, from("10.9.9.9"), &packet),
        WireAction::Drop(DropReason::NotPeer)
    );
    assert_eq!(net.drops.get(DropReason::NotPeer), 1);
    assert_eq!(
        net.fdb.lookup(mac(9)),
        None,
        "a rejected sender must not be learned"
    );

    let open = forwarder(vec![network(42, &["10.0.0.2"])], true);
    assert!(matches!(
        open.from_wire(0, from("10.9.9.9"), &packet),
        WireAction::Deliver { .. }
    ));

    // A static FDB destination counts as a known peer.
    net.fdb.add_static(mac(7), ip("10.0.0.7")).unwrap();
    net.rebuild_peers();
    assert!(matches!(
        strict.from_wire(0, from("10.0.0.7"), &packet),
        WireAction::Deliver { .. }
    ));
}

#[test]
fn every_malformed_datagram_has_its_reason() {
    let fwd = forwarder(vec![network(42, &["10.0.0.2"])], false);
    let peer = from("10.0.0.2");
    let good = vxlan(42, &frame(mac(1), mac(2), 80));

    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (good[..7].to_vec(), DropReason::TooShort),
        (
            {
                let mut p = good.clone();
                p[0] = 0;
                p
            },
            DropReason::NoVniFlag,
        ),
        (good[..8 + 13].to_vec(), DropReason::InnerTooShort),
        (
            vxlan(43, &frame(mac(1), mac(2), 80)),
            DropReason::UnknownVni,
        ),
        (
            vxlan(42, &tagged(mac(1), mac(2), 80)),
            DropReason::VlanTagged,
        ),
        (
            vxlan(42, &frame(mac(1), mac(2), 1450 + 14 + 1)),
            DropReason::Oversize,
        ),
        (
            vxlan(42, &frame(mac(1), MacAddr::BROADCAST, 80)),
            DropReason::BadSourceMac,
        ),
    ];
    for (packet, reason) in cases {
        assert_eq!(
            fwd.from_wire(0, peer, &packet),
            WireAction::Drop(reason),
            "{reason:?}"
        );
    }
    // The largest frame the MTU allows passes.
    assert!(matches!(
        fwd.from_wire(0, peer, &vxlan(42, &frame(mac(1), mac(2), 1450 + 14))),
        WireAction::Deliver { .. }
    ));
}

#[test]
fn tap_side_rules() {
    let net = network(42, &["10.0.0.2"]);
    let fwd = forwarder(vec![net.clone()], false);
    assert_eq!(
        fwd.from_tap(0, &[0u8; 13]),
        TapAction::Drop(DropReason::Runt)
    );
    assert_eq!(
        fwd.from_tap(0, &frame(mac(1), mac(2), 1465)),
        TapAction::Drop(DropReason::Oversize)
    );
    assert_eq!(
        fwd.from_tap(0, &tagged(mac(1), mac(2), 100)),
        TapAction::Drop(DropReason::VlanTagged)
    );
    let lonely = network(7, &[]);
    let fwd2 = forwarder(vec![lonely], false);
    assert_eq!(
        fwd2.from_tap(0, &frame(MacAddr::BROADCAST, mac(2), 60)),
        TapAction::Drop(DropReason::NoPeers)
    );
}

#[test]
fn vlan_frames_pass_where_allowed() {
    let mut s = settings("tagged", 42);
    s.allow_vlan = true;
    let net = std::sync::Arc::new(vxnet_dataplane::network::Network::new(
        s,
        ip("10.0.0.1"),
        PORT,
        vec![ip("10.0.0.2")],
    ));
    let fwd = forwarder(vec![net], false);
    assert!(matches!(
        fwd.from_wire(
            0,
            from("10.0.0.2"),
            &vxlan(42, &tagged(mac(1), mac(2), 1450 + 18))
        ),
        WireAction::Deliver { .. }
    ));
    assert_eq!(
        fwd.from_tap(0, &tagged(mac(1), mac(2), 100)),
        TapAction::Flood
    );
}

#[test]
fn networks_are_isolated_by_vni() {
    let blue = network(42, &["10.0.0.2"]);
    let red = network(43, &["10.0.0.2"]);
    let fwd = forwarder(vec![blue.clone(), red.clone()], false);
    // The same MAC behind different VTEPs in the two networks.
    fwd.from_wire(0, from("10.0.0.2"), &vxlan(43, &frame(mac(1), mac(5), 64)));
    assert_eq!(red.fdb.lookup(mac(5)), Some(ip("10.0.0.2")));
    assert_eq!(blue.fdb.lookup(mac(5)), None);
    assert_eq!(
        fwd.from_wire(0, from("10.0.0.2"), &vxlan(43, &frame(mac(1), mac(5), 64))),
        WireAction::Deliver {
            network: 1,
            inner: 8..72
        }
    );
}

#[test]
fn learning_off_learns_nothing_and_full_table_floods() {
    let mut s = settings("quiet", 42);
    s.learning = false;
    let quiet = std::sync::Arc::new(vxnet_dataplane::network::Network::new(
        s,
        ip("10.0.0.1"),
        PORT,
        vec![ip("10.0.0.2")],
    ));
    let fwd = forwarder(vec![quiet.clone()], false);
    fwd.from_wire(0, from("10.0.0.2"), &vxlan(42, &frame(mac(1), mac(5), 64)));
    assert!(quiet.fdb.is_empty());

    let mut s = settings("small", 42);
    s.max_fdb = 1;
    let small = std::sync::Arc::new(vxnet_dataplane::network::Network::new(
        s,
        ip("10.0.0.1"),
        PORT,
        vec![ip("10.0.0.2")],
    ));
    let fwd = forwarder(vec![small.clone()], false);
    fwd.from_wire(0, from("10.0.0.2"), &vxlan(42, &frame(mac(1), mac(5), 64)));
    fwd.from_wire(0, from("10.0.0.2"), &vxlan(42, &frame(mac(1), mac(6), 64)));
    assert_eq!(
        small
            .events
            .fdb_full
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        fwd.from_tap(0, &frame(mac(6), mac(1), 64)),
        TapAction::Flood
    );
}

/// Datagrams classified one by one and as runs (`from_wire_run`, as the worker does for a
/// UDP GRO read) get the same actions and leave the same counters, FDB and drops behind.
#[test]
fn runs_decide_and_count_like_single_datagrams() {
    use vxnet_dataplane::forward::WireRun;
    let make = || {
        let blue = network(42, &["10.0.0.2", "10.0.0.3"]);
        let red = network(43, &["10.0.0.2"]);
        let fwd = forwarder(vec![blue.clone(), red.clone()], false);
        (fwd, blue, red)
    };
    let (single, s_blue, s_red) = make();
    let (runs, r_blue, r_red) = make();
    let a = from("10.0.0.2");
    let b = from("10.0.0.3");
    let stranger = from("10.9.9.9");
    let seg = |vni, src, len| vxlan(vni, &frame(mac(1), mac(src), len));
    // (sender, datagram) in arrival order; runs break on another sender, VNI, MAC, a longer
    // datagram or a drop, and must never carry a decision over to a different datagram.
    let sequence: Vec<(SocketAddr, Vec<u8>)> = vec![
        (a, seg(42, 5, 1464)),
        (a, seg(42, 5, 1464)),
        (a, seg(42, 5, 700)),
        (a, seg(42, 5, 1464)), // longer than the previous one: full check again
        (a, seg(42, 5, 1465)), // oversize
        (a, seg(42, 5, 100)),
        (b, seg(42, 5, 100)), // same bytes, other sender: the MAC moves
        (b, seg(42, 5, 100)),
        (a, seg(43, 5, 100)),        // other VNI
        (stranger, seg(43, 5, 100)), // not a peer
        (a, seg(43, 6, 100)),
        (a, vxlan(42, &frame(mac(1), MacAddr::BROADCAST, 80))), // bad source MAC
        (a, vxlan(42, &frame(mac(1), MacAddr::BROADCAST, 80))),
        (a, vxlan(42, &tagged(mac(1), mac(7), 100))), // VLAN not allowed
        (a, seg(44, 5, 100)),                         // unknown VNI
        (a, vec![0u8; 10]),                           // too short
        (a, seg(42, 8, 60)),
    ];
    let mut run = WireRun::default();
    for (i, (sender, datagram)) in sequence.iter().enumerate() {
        let one = single.from_wire(7, *sender, datagram);
        let many = runs.from_wire_run(7, *sender, datagram, &mut run);
        assert_eq!(one, many, "datagram {i}");
    }
    runs.end_run(&mut run);
    runs.end_run(&mut run); // idempotent
    for (x, y) in [(&s_blue, &r_blue), (&s_red, &r_red)] {
        assert_eq!(x.traffic.snapshot(), y.traffic.snapshot());
        assert_eq!(x.drops.snapshot(), y.drops.snapshot());
        assert_eq!(x.fdb.rows(7), y.fdb.rows(7));
        assert_eq!(
            x.events.moved.load(std::sync::atomic::Ordering::Relaxed),
            y.events.moved.load(std::sync::atomic::Ordering::Relaxed)
        );
        assert_eq!(
            x.events.learned.load(std::sync::atomic::Ordering::Relaxed),
            y.events.learned.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    assert_eq!(single.peers.snapshot(), runs.peers.snapshot());
    assert_eq!(single.drops.snapshot(), runs.drops.snapshot());
    // Something was delivered, moved and dropped, so the comparison meant something.
    assert!(s_blue.traffic.snapshot().rx_packets >= 6);
    assert_eq!(s_blue.fdb.lookup(mac(5)), Some(ip("10.0.0.3")));
    assert!(s_blue.drops.total() >= 3);
}

#[test]
fn storm_control_limits_floods_only() {
    let mut limited = settings("storm", 42);
    limited.bum_rate = Some(3);
    let net = std::sync::Arc::new(vxnet_dataplane::network::Network::new(
        limited,
        ip("10.0.0.1"),
        PORT,
        vec![ip("10.0.0.2")],
    ));
    let fwd = forwarder(vec![net.clone()], false);
    let now = Some(1_000_000_000);
    let broadcast = frame(MacAddr::BROADCAST, mac(1), 60);
    let actions: Vec<_> = (0..5)
        .map(|_| fwd.from_tap_at(0, &broadcast, false, now))
        .collect();
    assert_eq!(actions[..3], [TapAction::Flood; 3]);
    assert_eq!(
        actions[3..],
        [TapAction::Drop(DropReason::BumRateLimited); 2]
    );
    assert_eq!(net.drops.get(DropReason::BumRateLimited), 2);
    // Known unicast is never limited.
    fwd.from_wire(0, from("10.0.0.2"), &vxlan(42, &frame(mac(1), mac(3), 100)));
    assert_eq!(
        fwd.from_tap_at(0, &frame(mac(3), mac(1), 100), false, now),
        TapAction::Unicast(SocketAddr::new(ip("10.0.0.2"), PORT))
    );
    // A third of a second later one more frame may go.
    assert_eq!(
        fwd.from_tap_at(0, &broadcast, false, Some(1_334_000_000)),
        TapAction::Flood
    );
}
