//! UDP coalescing on the receive side: bursts of small datagrams from a vxnet peer and from the
//! kernel's vxlan reach engine `a`, which (its TAP having taken USO) writes consecutive datagrams
//! of one flow to the TAP as one `GSO_UDP_L4` superframe; the host kernel cuts them back. Every
//! datagram must reach a plain socket behind `a` intact and in order: IPv4 and IPv6, on an
//! encrypted network (the ESP receive path ends in the same TAP sink), and in bridge mode, where
//! the host forwards the superframe across its bridge to a container, which gets the datagrams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod esp_common;
mod offload_common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use offload_common::datagrams::{Datagrams, Order, Pattern};
use offload_common::*;
use vxnet_tests::*;

/// Datagrams per burst (sent back to back), the last one shorter; bursts per transfer.
const BURST: u64 = 64;
const BURSTS: u64 = 60;
const DATAGRAMS: Datagrams = Datagrams {
    per_run: BURST,
    runs: BURSTS,
    full: 64,
    tail: 40,
    pattern: Pattern::Spread,
};

/// Sends the bursts from a connected socket in `ns` (so IPv4 IDs count up by one, as a connected
/// UDP socket's do), waiting for each burst to arrive (at most 1 s) before the next, so no socket
/// buffer overflows and a loss is a failure. Returns the socket's address.
fn send(ns: &str, dest: SocketAddr, got: Arc<AtomicU64>) -> std::thread::JoinHandle<SocketAddr> {
    in_netns(ns, move || {
        let any = if dest.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let sock = std::net::UdpSocket::bind(any).expect("bind sender");
        sock.connect(dest).unwrap();
        let mut buf = [0u8; DATAGRAMS.full];
        for burst in 0..BURSTS {
            for seq in burst * BURST..(burst + 1) * BURST {
                let len = DATAGRAMS.len(seq);
                DATAGRAMS.fill(seq, &mut buf[..len]);
                sock.send(&buf[..len]).expect("send");
            }
            DATAGRAMS.await_run(&got, burst);
        }
        sock.local_addr().unwrap()
    })
}

/// The bursts from `from` to a socket on `to` (inner address `dest`), every datagram checked;
/// `engine` is the receiving one, whose log a failure shows. Returns the sender's address.
fn bursts(from: &Host, to: &Host, dest: SocketAddr, engine: &Vxnet) -> SocketAddr {
    let got = Arc::new(AtomicU64::new(0));
    let rx = DATAGRAMS.receive(&to.ns, dest, Order::AsSent, Arc::clone(&got));
    let sender = send(&from.ns, dest, got).join().unwrap();
    let (in_order, problem) = rx.join().unwrap();
    assert_eq!(problem, None, "-> {dest}\n{}", engine.proc.log_text());
    assert_eq!(in_order, BURST * BURSTS);
    sender
}

/// The bursts from host `from` to a socket behind engine `a`.
fn bursts_to_a(t: &Trio, from: usize, port: u16) {
    bursts(t.host(from), t.host(A), addr(A, port), &t.a);
}

#[test]
fn datagram_bursts_are_coalesced_and_arrive_intact_in_order() {
    let Some(t) = trio("udp_gro", Family::V4, 1500, &[], "") else {
        return;
    };
    if !uso_granted(&t.a) {
        return;
    }
    t.ping(B, A);
    t.ping(KERNEL, A);
    bursts_to_a(&t, B, 6101);
    let n = t.a.network(VNI);
    eprintln!(
        "vxnet -> a: {} superframes <- {} datagrams",
        n.udp_coalesced_superframes, n.udp_coalesced_datagrams
    );
    assert!(
        n.udp_coalesced_superframes > 0,
        "no datagrams were coalesced"
    );
    assert!(n.udp_coalesced_datagrams >= 2 * n.udp_coalesced_superframes);
    // The kernel's vxlan sends every datagram alone; they may or may not meet in one GRO read.
    bursts_to_a(&t, KERNEL, 6102);
    let after = t.a.network(VNI);
    eprintln!(
        "+ kernel -> a: {} superframes <- {} datagrams",
        after.udp_coalesced_superframes, after.udp_coalesced_datagrams
    );
    t.assert_no_drops(&[]);
}

/// A kernel vxlan peer as it ships (TX checksum offload on) over a veth without GRO: each
/// datagram reaches vxnet alone, its inner UDP checksum left as the pseudo-header sum for a NIC
/// that never comes. Such a datagram fails the coalescer's checksum check; completed only after
/// it had ended the pending superframe, every datagram of the flow went to the TAP alone.
#[test]
fn a_kernel_peers_datagrams_with_partial_checksums_are_coalesced() {
    let Some(lab) = Lab::lan("udp_gro_partial", 2, Family::V4) else {
        return;
    };
    let (a, b) = (lab.host(0).underlay, lab.host(1).underlay);
    lab.host(1)
        .kernel_vxlan_as_shipped("vx0", 42, &[a], "10.1.0.2/24");
    let vx = lab.vxnet(
        0,
        "a",
        &format!("--vni 42 --dev vx42 --local {a} --remote {b} --address 10.1.0.1/24"),
    );
    if !uso_granted(&vx) {
        return;
    }
    assert!(lab.host(0).ping("10.1.0.2", 2), "{}", vx.proc.log_text());
    let dest = "10.1.0.1:6104".parse().unwrap();
    let sender = bursts(lab.host(1), lab.host(0), dest, &vx);
    let n = vx.network(42);
    eprintln!(
        "kernel -> vxnet: {} superframes <- {} datagrams, {} partial checksums completed",
        n.udp_coalesced_superframes, n.udp_coalesced_datagrams, n.partial_checksums
    );
    // The few whose partial checksum happens to be the complete one too leave nothing to
    // complete (source port 47778 makes two such, 44532 one).
    let complete_already = DATAGRAMS.partial_checksums_that_verify(sender, dest);
    assert!(
        n.partial_checksums + complete_already >= BURST * BURSTS,
        "the kernel peer's datagrams did not come with partial checksums \
         ({complete_already} complete already): {n:?}"
    );
    // Back-to-back bursts from the kernel's vxlan meet in the engine's reads: most of them
    // merge (the one-by-one build merged almost none).
    assert!(
        n.udp_coalesced_datagrams >= BURST * BURSTS / 2,
        "{} of {} datagrams coalesced",
        n.udp_coalesced_datagrams,
        BURST * BURSTS
    );
}

#[test]
fn ipv6_datagram_bursts_are_coalesced_too() {
    let Some(t) = trio("udp_gro_v6", Family::V4, 1500, &[], "") else {
        return;
    };
    if !uso_granted(&t.a) {
        return;
    }
    for (i, address) in [(A, "fd42:7::1/64"), (B, "fd42:7::2/64")] {
        t.host(i)
            .must(&format!("ip addr add {address} dev vx42 nodad"));
    }
    assert!(t.host(B).ping("fd42:7::1", 3), "{}", t.a.proc.log_text());
    let dest: SocketAddr = "[fd42:7::1]:6105".parse().unwrap();
    bursts(t.host(B), t.host(A), dest, &t.a);
    assert!(t.a.network(VNI).udp_coalesced_superframes > 0);
    t.assert_no_drops(&[]);
}

#[test]
fn without_uso_datagrams_are_written_one_by_one() {
    let Some(t) = trio_without_uso("udp_gro_off") else {
        return;
    };
    t.ping(B, A);
    bursts_to_a(&t, B, 6103);
    let n = t.a.network(VNI);
    assert_eq!(n.udp_coalesced_superframes, 0);
    assert_eq!(n.udp_coalesced_datagrams, 0);
    t.assert_no_drops(&[]);
}

#[test]
fn encrypted_datagram_bursts_are_coalesced_too() {
    let Some(lab) = Lab::lan("udp_gro_esp", 2, Family::V4) else {
        return;
    };
    let key = esp_common::key_file(&lab, "net.key");
    let start = |i: usize, name: &str| {
        lab.vxnet(
            i,
            name,
            &format!(
                "--vni 42 --dev vx42 --local {} --remote {} --address 10.1.0.{}/24 --key-file {}",
                lab.host(i).underlay,
                lab.host(1 - i).underlay,
                i + 1,
                key.display()
            ),
        )
    };
    let a = start(0, "a");
    let _b = start(1, "b");
    if !kernel_has_uso() {
        return;
    }
    assert!(lab.host(1).ping("10.1.0.1", 3), "{}", a.proc.log_text());
    bursts(lab.host(1), lab.host(0), addr(A, 6104), &a);
    let n = a.network(VNI);
    let decrypted = n.esp.as_ref().map_or(0, |e| e.decrypted);
    assert!(decrypted >= BURST * BURSTS, "{n:?}");
    assert!(
        n.udp_coalesced_superframes > 0,
        "no datagrams were coalesced"
    );
}

#[test]
fn bridged_datagram_bursts_reach_a_container_intact() {
    let Some(mut lab) = Lab::lan("udp_gro_br", 2, Family::V4) else {
        return;
    };
    let c0 = lab.container("c0");
    let network = [Bridged {
        name: "blue",
        vni: 42,
        address: ["10.1.0.1/24", "10.1.0.2/24"],
        pool: Some(["10.1.0.128/25", "10.1.0.64/26"]),
    }];
    let a = lab.bridged_engine(0, &network, "");
    let _b = lab.bridged_engine(1, &network, "");
    if !kernel_has_uso() {
        return;
    }
    let endpoint = a.json(&format!("attach --network blue --netns {c0} --name web"));
    let ip = endpoint["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let container = Host {
        ns: c0.clone(),
        underlay: IpAddr::from([0, 0, 0, 0]),
        index: 0,
    };
    assert!(lab.host(1).ping(ip, 5), "{}", a.proc.log_text());
    bursts(
        lab.host(1),
        &container,
        format!("{ip}:6106").parse().unwrap(),
        &a,
    );
    assert!(a.network(VNI).udp_coalesced_superframes > 0);
}
