//! Numbered UDP datagrams for the tests that send runs of them through an offload (offload_uso:
//! one `UDP_SEGMENT` send a run; offload_udp_gro: a burst of plain sends a run) and the receiver
//! that checks every one. A datagram starts with its number (8 bytes, big endian), then bytes
//! that follow from the number, so the receiver checks every byte without a copy of what was sent.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vxnet_encap::checksum;
use vxnet_encap::wire::UDP_HEADER_LEN;
use vxnet_tests::*;

/// How a datagram's bytes after its number follow from the number (each test keeps the one it
/// was written with, so its traffic is what it always was).
#[derive(Debug, Clone, Copy)]
pub enum Pattern {
    /// Every byte a hash of its place in the whole stream (`number * 4096 + offset`).
    Hashed,
    /// The number's hash, a byte of it per offset (mod 8), xored with the offset.
    Spread,
}

/// What the receiver requires of the arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Each datagram must be the next in sequence.
    AsSent,
    /// Any order, but each datagram exactly once.
    Any,
}

/// `runs` runs of `per_run` datagrams of `full` bytes, the last of each run `tail` bytes.
#[derive(Debug, Clone, Copy)]
pub struct Datagrams {
    pub per_run: u64,
    pub runs: u64,
    pub full: usize,
    pub tail: usize,
    pub pattern: Pattern,
}

impl Datagrams {
    pub fn total(&self) -> u64 {
        self.per_run * self.runs
    }

    /// Length of datagram `seq`.
    pub fn len(&self, seq: u64) -> usize {
        if seq % self.per_run == self.per_run - 1 {
            self.tail
        } else {
            self.full
        }
    }

    /// Writes datagram `seq` into `buf` (its length).
    pub fn fill(&self, seq: u64, buf: &mut [u8]) {
        buf[..8].copy_from_slice(&seq.to_be_bytes());
        for (k, b) in buf[8..].iter_mut().enumerate() {
            *b = match self.pattern {
                Pattern::Hashed => {
                    let i = seq * 4096 + k as u64;
                    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (i as u8)
                }
                Pattern::Spread => {
                    (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (k % 8 * 8)) as u8 ^ k as u8
                }
            };
        }
    }

    /// How many of the datagrams from `from` to `to` (IPv4) would carry, as the checksum a kernel
    /// leaves for a NIC to finish (the folded pseudo-header sum, `CHECKSUM_PARTIAL`), a value
    /// that is also their complete, correct checksum: about 1 in 65 535, depending on the source
    /// port. A receiver has nothing to complete in those.
    pub fn partial_checksums_that_verify(&self, from: SocketAddr, to: SocketAddr) -> u64 {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (from.ip(), to.ip()) else {
            panic!("IPv4 only: {from} -> {to}");
        };
        let mut buf = vec![0u8; self.full.max(self.tail)];
        let verifying = (0..self.total()).filter(|&seq| {
            let len = self.len(seq);
            self.fill(seq, &mut buf[..len]);
            let udp_len = (UDP_HEADER_LEN + len) as u16;
            let pseudo = checksum::pseudo_header_v4(src, dst, 17, udp_len.into());
            let sum = [from.port(), to.port(), udp_len, pseudo.fold()]
                .into_iter()
                .fold(pseudo, checksum::Sum::add_u16)
                .add_bytes(&buf[..len]);
            checksum::verifies(sum)
        });
        verifying.count() as u64
    }

    /// For a sender: waits until run `run` has arrived (as `got` counts), at most 1 s, so no
    /// socket buffer overflows and a loss is a failure.
    pub fn await_run(&self, got: &AtomicU64, run: u64) {
        let want = (run + 1) * self.per_run;
        let deadline = Instant::now() + Duration::from_secs(1);
        while got.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Binds a socket on `addr` in `ns` (returns once it is bound) and receives until every
    /// datagram came intact in `order`, counting arrivals in `got` for the sender's pacing.
    /// Returns (intact datagrams, the first problem: a wrong, duplicate or damaged datagram, or
    /// 3 s without one before the last).
    pub fn receive(
        self,
        ns: &str,
        addr: SocketAddr,
        order: Order,
        got: Arc<AtomicU64>,
    ) -> JoinHandle<(u64, Option<String>)> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = in_netns(ns, move || {
            let sock = std::net::UdpSocket::bind(addr).expect("bind receiver");
            sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            ready_tx.send(()).unwrap();
            let total = self.total();
            let mut seen = vec![false; total as usize];
            let mut buf = vec![0u8; 65536];
            let mut expect = vec![0u8; self.full.max(self.tail)];
            for intact in 0..total {
                let Ok(n) = sock.recv(&mut buf) else {
                    let problem = format!("{intact} of {total} datagrams came, then none for 3 s");
                    return (intact, Some(problem));
                };
                got.fetch_add(1, Ordering::Relaxed);
                let next = (order == Order::AsSent).then_some(intact);
                if let Err(problem) = self.check(&buf[..n], next, &mut seen, &mut expect) {
                    return (intact, Some(problem));
                }
            }
            (total, None)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("receiver ready");
        handle
    }

    /// Checks one received datagram: `next` if it must be that one, else any not `seen` yet;
    /// its length and every byte. Marks it seen.
    fn check(
        &self,
        got: &[u8],
        next: Option<u64>,
        seen: &mut [bool],
        expect: &mut [u8],
    ) -> Result<(), String> {
        let n = got.len();
        let Some(number) = got.get(..8) else {
            return Err(format!("runt datagram of {n} bytes"));
        };
        let seq = u64::from_be_bytes(number.try_into().unwrap());
        if let Some(next) = next.filter(|&next| next != seq) {
            return Err(format!(
                "expected datagram {next}, got {n} bytes numbered {seq}"
            ));
        }
        if seq >= self.total() || seen[seq as usize] {
            return Err(format!("unexpected or duplicate datagram {seq}"));
        }
        let len = self.len(seq);
        if n != len {
            return Err(format!("datagram {seq}: {n} bytes, sent {len}"));
        }
        self.fill(seq, &mut expect[..len]);
        if *got != expect[..len] {
            return Err(format!("datagram {seq}: bytes differ"));
        }
        seen[seq as usize] = true;
        Ok(())
    }
}
