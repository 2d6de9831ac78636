//! USO: an application behind vxnet's TAP sends UDP with `UDP_SEGMENT` (one send, many
//! datagrams). With USO granted on the TAP (kernel 6.2+), vxnet reads the whole run as one
//! GSO_UDP_L4 superframe and cuts it back into the application's datagrams itself; every
//! datagram must arrive at a vxnet peer and at the kernel's vxlan exactly as sent — same
//! boundaries, same bytes. With USO refused the kernel cuts them before the TAP instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod offload_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload_common::*;
use vxnet_dataplane::sys::udp::{Outgoing, SendBatch, UdpOptions, UdpSocket};
use vxnet_tests::*;

/// Datagrams per `UDP_SEGMENT` send: 31 of `FULL` bytes and a shorter tail.
const PER_SEND: u64 = 32;
const FULL: usize = 1000;
const TAIL: usize = 500;
const SENDS: u64 = 150;

fn datagram_len(seq: u64) -> usize {
    if seq % PER_SEND == PER_SEND - 1 {
        TAIL
    } else {
        FULL
    }
}

/// Deterministic pseudo-random bytes, so a receiver can check every byte without a copy.
fn pattern_byte(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (i as u8)
}

/// Datagram `seq`: its number, then pattern bytes that depend on it.
fn fill(seq: u64, buf: &mut [u8]) {
    buf[..8].copy_from_slice(&seq.to_be_bytes());
    for (k, b) in buf[8..].iter_mut().enumerate() {
        *b = pattern_byte(seq * 4096 + k as u64);
    }
}

/// Receives until `SENDS * PER_SEND` datagrams came or 3 s pass without one; counts arrivals in
/// `got` (for the sender's pacing) and returns (intact datagrams, first problem if any).
fn receive(
    ns: &str,
    addr: SocketAddr,
    got: Arc<AtomicU64>,
) -> std::thread::JoinHandle<(u64, Option<String>)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = in_netns(ns, move || {
        let sock = std::net::UdpSocket::bind(addr).expect("bind receiver");
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        ready_tx.send(()).unwrap();
        let total = SENDS * PER_SEND;
        let mut seen = vec![false; total as usize];
        let mut intact = 0;
        let mut buf = vec![0u8; 65536];
        let mut expect = vec![0u8; FULL];
        while intact < total {
            let Ok(n) = sock.recv(&mut buf) else {
                break;
            };
            got.fetch_add(1, Ordering::Relaxed);
            if n < 8 {
                return (intact, Some(format!("runt datagram of {n} bytes")));
            }
            let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
            if seq >= total || seen[seq as usize] {
                return (
                    intact,
                    Some(format!("unexpected or duplicate datagram {seq}")),
                );
            }
            let len = datagram_len(seq);
            if n != len {
                return (
                    intact,
                    Some(format!("datagram {seq}: {n} bytes, sent {len}")),
                );
            }
            fill(seq, &mut expect[..len]);
            if buf[..n] != expect[..len] {
                return (intact, Some(format!("datagram {seq}: bytes differ")));
            }
            seen[seq as usize] = true;
            intact += 1;
        }
        (intact, None)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("receiver ready");
    handle
}

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
        let mut run = vec![0u8; (PER_SEND as usize - 1) * FULL + TAIL];
        for s in 0..SENDS {
            for (k, chunk) in run.chunks_mut(FULL).enumerate() {
                fill(s * PER_SEND + k as u64, chunk);
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
            let want = (s + 1) * PER_SEND;
            let deadline = Instant::now() + Duration::from_secs(1);
            while got.load(Ordering::Relaxed) < want && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    })
}

/// UDP_SEGMENT runs from host a to `to`, every datagram checked.
fn udp_segment_transfer(t: &Trio, to: usize, port: u16) {
    let got = Arc::new(AtomicU64::new(0));
    let rx = receive(&t.host(to).ns, addr(to, port), Arc::clone(&got));
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
    if !kernel_has_uso() {
        // Nothing to test below 6.2, but the engine must not claim USO.
        assert!(!t.a.offloads().contains(&Offload::Uso));
        return;
    }
    assert!(
        t.a.offloads().contains(&Offload::Uso),
        "{:?}",
        t.a.offloads()
    );
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
    let Some(t) = trio(
        "uso_off",
        Family::V4,
        1500,
        &[("VXNET_DISABLE_OFFLOADS", "uso")],
        "",
    ) else {
        return;
    };
    let offloads = t.a.offloads();
    assert!(!offloads.contains(&Offload::Uso), "{offloads:?}");
    assert!(offloads.contains(&Offload::Tso), "{offloads:?}");
    t.ping(A, B);
    t.ping(A, KERNEL);
    udp_segment_transfer(&t, B, 6003);
    udp_segment_transfer(&t, KERNEL, 6004);
    assert_eq!(t.a.network(VNI).uso_superframes, 0);
    t.assert_no_drops(&[]);
}
