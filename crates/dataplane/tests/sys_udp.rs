//! Batched UDP I/O, GSO and GRO on the loopback interface (127.0.0.1 / ::1 only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use vxnet_dataplane::sys::poll::PollSet;
use vxnet_dataplane::sys::udp::{Outgoing, RecvBatch, SendBatch, UdpError, UdpOptions, UdpSocket};

fn bind(addr: &str) -> UdpSocket {
    UdpSocket::bind(addr.parse().unwrap(), &UdpOptions::default()).unwrap()
}

/// One received datagram: bytes, source, GRO segment size.
type Got = (Vec<u8>, SocketAddr, Option<u16>);

/// Receives until `want` payload bytes have arrived (or 5 s pass); returns
/// `(recv calls, datagrams as (len, source, gro size))`.
fn recv_all(sock: &UdpSocket, batch: &mut RecvBatch, want: usize) -> (usize, Vec<Got>) {
    let mut set = PollSet::new();
    let i = set.add(sock.as_fd());
    let end = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut total = 0;
    let mut calls = 0;
    while total < want {
        assert!(Instant::now() < end, "timed out with {total}/{want} bytes");
        match batch.recv(sock) {
            Ok(n) => {
                calls += 1;
                for d in batch.iter().take(n) {
                    assert!(!d.truncated);
                    total += d.data.len();
                    got.push((d.data.to_vec(), d.source, d.gro_segment_size));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                set.wait(Some(Duration::from_millis(100))).unwrap();
                let _ = set.is_ready(i);
            }
            Err(e) => panic!("recvmmsg: {e}"),
        }
    }
    (calls, got)
}

#[test]
fn batch_of_datagrams_round_trips_in_one_recv() {
    let rx = bind("127.0.0.1:0");
    let tx = bind("127.0.0.1:0");
    let mut rb = RecvBatch::new(32, 2048);
    assert_eq!(rb.recv(&rx).unwrap_err().kind(), io::ErrorKind::WouldBlock);

    const N: usize = 16;
    let header = *b"VXLANHDR";
    let frames: Vec<Vec<u8>> = (0..N).map(|i| vec![i as u8; 100 + i * 10]).collect();
    let parts: Vec<[&[u8]; 2]> = frames.iter().map(|f| [&header[..], &f[..]]).collect();
    let msgs: Vec<Outgoing<'_>> = parts
        .iter()
        .map(|p| Outgoing {
            dest: rx.local_addr(),
            parts: p,
            segment_size: None,
            ttl: None,
            tos: None,
        })
        .collect();
    // Deliberately smaller than the batch: SendBatch must grow once and still send everything.
    let mut sb = SendBatch::new(4, 1);
    let mut sent = 0;
    while sent < N {
        sent += sb.send(&tx, &msgs[sent..]).unwrap();
    }

    let want: usize = frames.iter().map(|f| f.len() + header.len()).sum();
    let (calls, got) = recv_all(&rx, &mut rb, want);
    assert_eq!(
        calls, 1,
        "loopback delivers the whole batch to one recvmmsg"
    );
    assert_eq!(got.len(), N);
    for (i, (data, src, gro)) in got.iter().enumerate() {
        assert_eq!(&data[..8], &header);
        assert_eq!(&data[8..], &frames[i][..]);
        assert_eq!(*src, tx.local_addr());
        assert_eq!(*gro, None);
    }

    // In-place mutation of a received buffer.
    sb.send(
        &tx,
        &[Outgoing {
            dest: rx.local_addr(),
            parts: &[b"abc"],
            segment_size: None,
            ttl: None,
            tos: None,
        }],
    )
    .unwrap();
    let mut set = PollSet::new();
    set.add(rx.as_fd());
    set.wait(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(rb.recv(&rx).unwrap(), 1);
    rb.datagram_mut(0)[0] = b'X';
    assert_eq!(rb.datagram(0).data, b"Xbc");
}

#[test]
fn gso_send_is_split_without_gro_and_coalesced_with_gro() {
    let tx = bind("127.0.0.1:0");
    assert!(
        tx.probe_gso(),
        "UDP_SEGMENT must be supported on this kernel"
    );
    const SEG: usize = 1200;
    const K: usize = 8;
    let payload: Vec<u8> = (0..SEG * K).map(|i| (i % 251) as u8).collect();
    let mut sb = SendBatch::new(8, 2);

    // Receiver without GRO: the kernel segments, K datagrams of SEG bytes.
    let plain = bind("127.0.0.1:0");
    let mut rb = RecvBatch::new(64, 65536);
    let n = sb
        .send(
            &tx,
            &[Outgoing {
                dest: plain.local_addr(),
                parts: &[&payload[..SEG / 2], &payload[SEG / 2..]],
                segment_size: Some(SEG as u16),
                ttl: None,
                tos: None,
            }],
        )
        .unwrap();
    assert_eq!(n, 1);
    let (_, got) = recv_all(&plain, &mut rb, payload.len());
    assert_eq!(got.len(), K);
    for (i, (data, src, gro)) in got.iter().enumerate() {
        assert_eq!(data.len(), SEG);
        assert_eq!(&data[..], &payload[i * SEG..(i + 1) * SEG]);
        assert_eq!(*src, tx.local_addr());
        assert_eq!(*gro, None);
    }

    // Receiver with GRO: fewer, larger reads carrying the segment size; same bytes in total.
    let gro = bind("127.0.0.1:0");
    gro.enable_gro().unwrap();
    sb.send(
        &tx,
        &[Outgoing {
            dest: gro.local_addr(),
            parts: &[&payload],
            segment_size: Some(SEG as u16),
            ttl: None,
            tos: None,
        }],
    )
    .unwrap();
    let (_, got) = recv_all(&gro, &mut rb, payload.len());
    println!(
        "GRO receive: {} datagram(s), sizes {:?}, segment sizes {:?}",
        got.len(),
        got.iter().map(|g| g.0.len()).collect::<Vec<_>>(),
        got.iter().map(|g| g.2).collect::<Vec<_>>()
    );
    assert!(got.len() < K);
    assert!(got.iter().any(|g| g.2 == Some(SEG as u16)));
    let joined: Vec<u8> = got.iter().flat_map(|g| g.0.clone()).collect();
    assert_eq!(joined, payload);
}

#[test]
fn ipv6_loopback_batch() {
    let rx = match UdpSocket::bind("[::1]:0".parse().unwrap(), &UdpOptions::default()) {
        Ok(s) => s,
        Err(UdpError::AddrNotAvailable { .. }) => {
            eprintln!("SKIP ipv6_loopback_batch: ::1 not configured");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let tx = bind("[::1]:0");
    let mut sb = SendBatch::new(2, 1);
    let msgs = [
        Outgoing {
            dest: rx.local_addr(),
            parts: &[b"one"],
            segment_size: None,
            ttl: None,
            tos: None,
        },
        Outgoing {
            dest: rx.local_addr(),
            parts: &[b"two"],
            segment_size: None,
            ttl: None,
            tos: None,
        },
    ];
    assert_eq!(sb.send(&tx, &msgs).unwrap(), 2);
    let mut rb = RecvBatch::new(4, 1500);
    let (_, got) = recv_all(&rx, &mut rb, 6);
    assert_eq!(got[0].0, b"one");
    assert_eq!(got[1].0, b"two");
    assert_eq!(got[0].1, tx.local_addr());
    // V6ONLY: the same port number is still free on IPv4.
    let port = rx.local_addr().port();
    UdpSocket::bind(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &UdpOptions::default(),
    )
    .unwrap();
}

#[test]
fn second_bind_without_reuse_port_is_addr_in_use() {
    let first = bind("127.0.0.1:0");
    let addr = first.local_addr();
    match UdpSocket::bind(addr, &UdpOptions::default()) {
        Err(UdpError::AddrInUse { addr: a }) => {
            assert_eq!(a, addr);
            let msg = UdpError::AddrInUse { addr: a }.to_string();
            assert!(msg.contains(&addr.to_string()), "{msg}");
        }
        other => panic!("expected AddrInUse, got {other:?}"),
    }

    let opts = UdpOptions {
        reuse_port: true,
        buffer_bytes: 0,
        send_only: false,
    };
    let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let b = UdpSocket::bind(a.local_addr(), &opts).unwrap();
    assert_eq!(a.local_addr(), b.local_addr());

    let e = UdpSocket::bind("192.0.2.1:0".parse().unwrap(), &UdpOptions::default()).unwrap_err();
    assert!(matches!(e, UdpError::AddrNotAvailable { .. }), "{e}");
}

#[test]
fn big_buffers_are_applied() {
    let opts = UdpOptions {
        reuse_port: false,
        buffer_bytes: 4 << 20,
        send_only: false,
    };
    let s = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let (r, w) = s.buffer_sizes().unwrap();
    println!("effective buffers: recv {r} send {w}");
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        // SO_*BUFFORCE bypasses rmem_max/wmem_max; the kernel doubles the value.
        assert!(r >= 4 << 20 && w >= 4 << 20, "recv {r} send {w}");
    }
}
