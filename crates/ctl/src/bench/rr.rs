//! `vxnet bench --rr`: request/response latency, like netperf's TCP_RR. One TCP connection from
//! host a to host b; host a writes a 1-byte request, host b answers with 1 byte, host a waits
//! for it before the next request. Each round trip is timed; after a warm-up, the p50 and p99 of
//! those times and the transactions per second over `--seconds`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::netns::transfer::listen_and_accept;
use crate::netns::NetnsError;
use crate::netns::{join, on_thread_in};

/// Round trips before the timed ones (caches, wake-up paths, the FDB).
pub(super) const WARMUP: usize = 200;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RrStats {
    pub transactions: u64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn failed(what: &str, e: impl std::fmt::Display) -> NetnsError {
    NetnsError::Transfer(format!("request/response {what}: {e}"))
}

/// Round trips from namespace `from` to `to_addr` (served in namespace `to`) for `time`.
pub(super) fn run(
    from: &str,
    to: &str,
    to_addr: SocketAddr,
    time: Duration,
) -> Result<RrStats, NetnsError> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = on_thread_in(to, move || serve(to_addr, ready_tx));
    if ready_rx.recv_timeout(IO_TIMEOUT).is_err() {
        join(server)?;
        return Err(failed("server", "never listened"));
    }
    let client = on_thread_in(from, move || ask(to_addr, time));
    let rtts = join(client);
    let served = join(server);
    let mut rtts = rtts?;
    served?;
    if rtts.is_empty() {
        return Err(failed("client", "no round trip completed"));
    }
    let transactions = rtts.len() as u64;
    let busy: f64 = rtts.iter().sum();
    rtts.sort_by(f64::total_cmp);
    Ok(RrStats {
        transactions,
        per_s: transactions as f64 / (busy / 1e3).max(1e-9),
        p50_ms: super::measure::quantile(&rtts, 0.50),
        p99_ms: super::measure::quantile(&rtts, 0.99),
    })
}

/// Answers every byte with a byte until the client closes.
fn serve(addr: SocketAddr, ready: mpsc::Sender<()>) -> Result<(), NetnsError> {
    let mut stream = listen_and_accept(addr, 1, ready)?
        .pop()
        .ok_or_else(|| failed("server", "no connection"))?;
    stream.set_nodelay(true).map_err(|e| failed("server", e))?;
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) => stream.write_all(&byte).map_err(|e| failed("answer", e))?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(failed("server read", e)),
        }
    }
}

/// Round-trip times in ms, the warm-up left out.
fn ask(addr: SocketAddr, time: Duration) -> Result<Vec<f64>, NetnsError> {
    let mut stream =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| failed("connect", e))?;
    stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| failed("client", e))?;
    let mut rtts = Vec::with_capacity(1 << 16);
    let mut byte = [0u8; 1];
    let mut deadline = None;
    for i in 0usize.. {
        if i == WARMUP {
            deadline = Some(Instant::now() + time);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let start = Instant::now();
        stream
            .write_all(&[i as u8])
            .map_err(|e| failed("request", e))?;
        stream
            .read_exact(&mut byte)
            .map_err(|e| failed("response", e))?;
        if byte[0] != i as u8 {
            return Err(failed("response", "answer to another request"));
        }
        if i >= WARMUP {
            rtts.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(rtts)
}
