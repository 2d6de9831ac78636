//! USO: an application behind vxnet's TAP sends UDP with `UDP_SEGMENT` (one send, many
//! datagrams). With USO granted on the TAP (kernel 6.2+), vxnet reads the whole run as one
//! GSO_UDP_L4 superframe and cuts it back into the application's datagrams itself; every
//! datagram must arrive at a vxnet peer and at the kernel's vxlan exactly as sent — same
//! boundaries, same bytes. With USO refused the kernel cuts them before the TAP instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod offload_common;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload_common::datagrams::{Datagrams, Order, Pattern};
use offload_common::*;
use vxnet_dataplane::sys::udp::{Outgoing, SendBatch, UdpOptions, UdpSocket};
use vxnet_tests::*;

/// Datagrams per `UDP_SEGMENT` send: 31 of `FULL` bytes and a shorter tail.
const PER_SEND: u64 = 32;
const FULL: usize = 1000;
const SENDS: u64 = 150;
const DATAGRAMS: Datagrams = Datagrams {
    per_run: PER_SEND,
    runs: SENDS,
    full: FULL,
    tail: 500,
    pattern: Pattern::Hashed,
};

/// Sends `SENDS` runs of `PER_SEND` datagrams to `dest` from inside `ns`, each run in one
/// `UDP_SEGMENT` send of `FULL`-byte segments (tail shorter); waits for each run to arrive
/// before the next (at most 1 s), so socket buffers never overflow and a loss is a failure.
fn send(ns: &str, dest: SocketAddr, got: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    in_netns(ns, move || {
        let local = SocketAddr::new(
            match dest {
                SocketAddr::V4(_) => "0.0.0.0".parse().unwrap(),
                SocketAddr::V6(_) => "::".parse().unwrap(),
            },
            0,
        );
        let sock = UdpSocket::bind(local, &UdpOptions::default()).expect("bind sender");
        let mut batch = SendBatch::new(1, 1);
        let mut run = vec![0u8; (PER_SEND as usize - 1) * FULL + DATAGRAMS.tail];
        for s in 0..SENDS {
            for (k, chunk) in run.chunks_mut(FULL).enumerate() {
                DATAGRAMS.fill(s * PER_SEND + k as u64, chunk);
            }
            let parts = [run.as_slice()];
            let msg = Outgoing {
                dest,
                parts: &parts,
                segment_size: Some(FULL as u16),
                ttl: None,
                tos: None,
            };
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match batch.send(&sock, std::slice::from_ref(&msg)) {
                    Ok(1) => break,
                    Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
                        panic!("UDP_SEGMENT send: {e}")
                    }
                    _ if Instant::now() > deadline => panic!("send stalled"),
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            DATAGRAMS.await_run(&got, s);
        }
    })
}

/// UDP_SEGMENT runs from host a to `to`, every datagram checked.
fn udp_segment_transfer(t: &Trio, to: usize, port: u16) {
    let got = Arc::new(AtomicU64::new(0));
    let rx = DATAGRAMS.receive(&t.host(to).ns, addr(to, port), Order::Any, Arc::clone(&got));
    send(&t.host(A).ns, addr(to, port), got).join().unwrap();
    let (intact, problem) = rx.join().unwrap();
    assert_eq!(problem, None, "a -> {to}");
    assert_eq!(intact, SENDS * PER_SEND, "a -> {to}: datagrams lost");
}

#[test]
fn uso_superframes_are_cut_into_the_senders_datagrams() {
    let Some(t) = trio("uso", Family::V4, 1500, &[], "") else {
        return;
    };
    if !uso_granted(&t.a) {
        return;
    }
    t.ping(A, B);
    t.ping(A, KERNEL);
    udp_segment_transfer(&t, B, 6001);
    udp_segment_transfer(&t, KERNEL, 6002);
    let superframes = t.a.network(VNI).uso_superframes;
    let segments = t.a.network(VNI).uso_segments;
    assert!(superframes > 0, "no USO superframe reached vxnet");
    // Every datagram went through vxnet's USO segmenter, none through the kernel's.
    assert_eq!(segments, 2 * SENDS * PER_SEND, "{superframes} superframes");
    assert!(t.a.network(VNI).gso_batches > 0);
    t.assert_no_drops(&[]);
}

#[test]
fn uso_refused_falls_back_to_the_kernel_cutting_datagrams() {
    let Some(t) = trio_without_uso("uso_off") else {
        return;
    };
    let offloads = t.a.offloads();
    assert!(offloads.contains(&Offload::Tso), "{offloads:?}");
    t.ping(A, B);
    t.ping(A, KERNEL);
    udp_segment_transfer(&t, B, 6003);
    udp_segment_transfer(&t, KERNEL, 6004);
    assert_eq!(t.a.network(VNI).uso_superframes, 0);
    t.assert_no_drops(&[]);
}
