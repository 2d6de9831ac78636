//! vxnet's own TCP sender and receiver, so neither the demo nor the bench needs iperf3. Each end
//! runs on a thread that has entered one host's network namespace (its sockets stay there, so the
//! per-stream threads they hand them to need not enter it); the receiver checks every byte of every
//! stream against a pattern.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{join, on_thread_in, NetnsError};

/// A prime period, so that the pattern does not line up with any buffer or segment size.
const PERIOD: usize = 251;
const CHUNK: usize = 1 << 16;
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// How much to send: a byte count (split over the streams), or whatever fits in a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Bytes(u64),
    For(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferResult {
    /// Bytes received and checked, all streams together.
    pub bytes: u64,
    pub elapsed: Duration,
}

impl TransferResult {
    pub fn gbit_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        self.bytes as f64 * 8.0 / secs / 1e9
    }
}

/// `PERIOD` + `CHUNK` bytes of the pattern: any chunk at any stream offset is a sub-slice.
fn pattern() -> Vec<u8> {
    (0..PERIOD + CHUNK).map(|i| (i % PERIOD) as u8).collect()
}

fn failed(what: &str, e: impl std::fmt::Display) -> NetnsError {
    NetnsError::Transfer(format!("{what}: {e}"))
}

/// Sends `amount` over `streams` parallel connections from namespace `from` to `to_addr`,
/// received in namespace `to`. Times from the first connection to the last byte checked by the
/// receiver; fails unless every byte sent arrived intact.
pub fn run(
    from: &str,
    to: &str,
    to_addr: SocketAddr,
    amount: Amount,
    streams: usize,
) -> Result<TransferResult, NetnsError> {
    start(from, to, to_addr, amount, streams)?.finish()
}

/// A transfer under way (see [`start`]). Dropping it leaves its threads to end on their own:
/// they stop at the end of the data, when a socket fails, or after an I/O timeout.
#[derive(Debug)]
pub struct Transfer {
    receiver: JoinHandle<Result<u64, NetnsError>>,
    sender: JoinHandle<Result<u64, NetnsError>>,
    started: Instant,
}

/// [`run`], returning once the receiver listens and the sender has started, so the caller can
/// act while the data flows (then [`Transfer::finish`]).
pub fn start(
    from: &str,
    to: &str,
    to_addr: SocketAddr,
    amount: Amount,
    streams: usize,
) -> Result<Transfer, NetnsError> {
    let streams = streams.max(1);
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = on_thread_in(to, move || receive(to_addr, streams, ready_tx));
    match ready_rx.recv_timeout(IO_TIMEOUT) {
        Ok(()) => {}
        Err(_) => {
            // The receiver failed before listening: its error says why.
            join(receiver)?;
            return Err(NetnsError::Transfer("the receiver never started".into()));
        }
    }
    let started = Instant::now();
    let sender = on_thread_in(from, move || send(to_addr, amount, streams));
    Ok(Transfer {
        receiver,
        sender,
        started,
    })
}

impl Transfer {
    /// Waits for both ends; fails unless every byte sent arrived intact.
    pub fn finish(self) -> Result<TransferResult, NetnsError> {
        let sent = join(self.sender);
        let received = join(self.receiver);
        let sent = sent?;
        let got = received?;
        if got != sent {
            return Err(NetnsError::Transfer(format!(
                "only {got} of {sent} bytes arrived intact"
            )));
        }
        Ok(TransferResult {
            bytes: got,
            elapsed: self.started.elapsed(),
        })
    }
}

/// Runs `f` on each stream in its own thread; the sum of the results, or the first error.
fn each_stream<T: Send>(
    streams: Vec<T>,
    f: impl Fn(T) -> Result<u64, NetnsError> + Sync,
) -> Result<u64, NetnsError> {
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = streams
            .into_iter()
            .map(|s| scope.spawn(move || f(s)))
            .collect();
        let mut total = 0u64;
        for handle in handles {
            total += handle
                .join()
                .map_err(|_| NetnsError::Transfer("a stream thread panicked".into()))??;
        }
        Ok(total)
    })
}

/// Binds a listener on `addr`, says so on `ready`, and accepts `count` connections, each
/// blocking with read timeouts. The accept has a deadline: a peer that never connects must not
/// hang the run.
pub(crate) fn listen_and_accept(
    addr: SocketAddr,
    count: usize,
    ready: mpsc::Sender<()>,
) -> Result<Vec<TcpStream>, NetnsError> {
    let listener = TcpListener::bind(addr).map_err(|e| failed("receiver bind", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| failed("receiver", e))?;
    let _ = ready.send(());
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut accepted = Vec::with_capacity(count);
    while accepted.len() < count {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
                    .map_err(|e| failed("receiver", e))?;
                accepted.push(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(failed("receiver accept", e)),
        }
    }
    Ok(accepted)
}

fn receive(addr: SocketAddr, streams: usize, ready: mpsc::Sender<()>) -> Result<u64, NetnsError> {
    let accepted = listen_and_accept(addr, streams, ready)?;
    let pattern = pattern();
    each_stream(accepted, |stream| receive_checked(stream, &pattern))
}

/// Reads one stream to its end, checking it against the pattern; the byte count.
fn receive_checked(mut stream: TcpStream, pattern: &[u8]) -> Result<u64, NetnsError> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(pos),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed("receiving", e)),
        };
        let phase = (pos % PERIOD as u64) as usize;
        if buf[..n] != pattern[phase..phase + n] {
            return Err(NetnsError::Transfer(format!(
                "corrupted data within bytes {pos}..{}",
                pos + n as u64
            )));
        }
        pos += n as u64;
    }
}

fn send(addr: SocketAddr, amount: Amount, streams: usize) -> Result<u64, NetnsError> {
    let mut connected = Vec::with_capacity(streams);
    for _ in 0..streams {
        let stream =
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| failed("connecting", e))?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .map_err(|e| failed("sender", e))?;
        connected.push(stream);
    }
    let pattern = pattern();
    let (limits, deadline) = match amount {
        Amount::Bytes(total) => (split(total, streams), None),
        Amount::For(time) => (vec![None; streams], Some(Instant::now() + time)),
    };
    let work: Vec<_> = connected.into_iter().zip(limits).collect();
    each_stream(work, |(stream, limit)| {
        send_pattern(stream, &pattern, limit, deadline)
    })
}

/// `total` bytes over `streams` streams, as evenly as can be.
fn split(total: u64, streams: usize) -> Vec<Option<u64>> {
    let n = streams as u64;
    (0..n)
        .map(|i| Some(total / n + u64::from(i < total % n)))
        .collect()
}

/// Writes the pattern until `limit` bytes or `deadline`, then closes the sending side.
fn send_pattern(
    mut stream: TcpStream,
    pattern: &[u8],
    limit: Option<u64>,
    deadline: Option<Instant>,
) -> Result<u64, NetnsError> {
    let limit = limit.unwrap_or(u64::MAX);
    let mut pos = 0u64;
    while pos < limit && deadline.is_none_or(|d| Instant::now() < d) {
        let n = (limit - pos).min(CHUNK as u64) as usize;
        let phase = (pos % PERIOD as u64) as usize;
        stream
            .write_all(&pattern[phase..phase + n])
            .map_err(|e| failed("sending", e))?;
        pos += n as u64;
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| failed("sender shutdown", e))?;
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_slices_continue_each_other() {
        let p = pattern();
        for pos in [0u64, 250, 251, 65_536, 1_000_003] {
            let phase = (pos % PERIOD as u64) as usize;
            assert_eq!(p[phase], (pos % PERIOD as u64) as u8);
            assert_eq!(
                p[phase + CHUNK - 1],
                ((pos + CHUNK as u64 - 1) % PERIOD as u64) as u8
            );
        }
    }

    #[test]
    fn bytes_split_over_streams_add_up() {
        assert_eq!(split(10, 4), [Some(3), Some(3), Some(2), Some(2)]);
        assert_eq!(split(7, 1), [Some(7)]);
        let total: u64 = split(1_000_003, 4).into_iter().flatten().sum();
        assert_eq!(total, 1_000_003);
    }

    #[test]
    fn rate_is_bits_per_second() {
        let r = TransferResult {
            bytes: 125_000_000,
            elapsed: Duration::from_secs(1),
        };
        assert!((r.gbit_per_s() - 1.0).abs() < 1e-9);
    }
}
