//! vxnet's own TCP sender and receiver, so the demo needs no iperf3. Each runs on a thread that
//! has entered one host's network namespace; the receiver checks every byte against a pattern.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vxnet_dataplane::sys::enter_named_netns_for_current_thread;

use super::DemoError;

/// A prime period, so that the pattern does not line up with any buffer or segment size.
const PERIOD: usize = 251;
const CHUNK: usize = 1 << 16;
const IO_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferResult {
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

fn failed(what: &str, e: impl std::fmt::Display) -> DemoError {
    DemoError::Transfer(format!("{what}: {e}"))
}

fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, DemoError> + Send + 'static,
) -> JoinHandle<Result<T, DemoError>> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_named_netns_for_current_thread(&ns)
            .map_err(|e| failed(&format!("entering namespace {ns}"), e))?;
        f()
    })
}

fn join<T>(handle: JoinHandle<Result<T, DemoError>>) -> Result<T, DemoError> {
    handle
        .join()
        .map_err(|_| DemoError::Transfer("a transfer thread panicked".into()))?
}

/// Sends `bytes` from namespace `from` to `to_addr`, received in namespace `to`. Times from the
/// connection to the last byte checked by the receiver.
pub fn run(
    from: &str,
    to: &str,
    to_addr: SocketAddr,
    bytes: u64,
) -> Result<TransferResult, DemoError> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = in_namespace(to, move || receive(to_addr, bytes, ready_tx));
    match ready_rx.recv_timeout(IO_TIMEOUT) {
        Ok(()) => {}
        Err(_) => {
            // The receiver failed before listening: its error says why.
            join(receiver)?;
            return Err(DemoError::Transfer("the receiver never started".into()));
        }
    }
    let start = Instant::now();
    let sender = in_namespace(from, move || send(to_addr, bytes));
    let sent = join(sender);
    let received = join(receiver);
    sent?;
    let got = received?;
    if got != bytes {
        return Err(DemoError::Transfer(format!(
            "only {got} of {bytes} bytes arrived intact"
        )));
    }
    Ok(TransferResult {
        bytes,
        elapsed: start.elapsed(),
    })
}

fn receive(addr: SocketAddr, bytes: u64, ready: mpsc::Sender<()>) -> Result<u64, DemoError> {
    let listener = TcpListener::bind(addr).map_err(|e| failed("receiver bind", e))?;
    // Non-blocking accept with a deadline: a sender that never connects must not hang the demo.
    listener
        .set_nonblocking(true)
        .map_err(|e| failed("receiver", e))?;
    let _ = ready.send(());
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(failed("receiver accept", e)),
        }
    };
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| failed("receiver", e))?;
    let pattern = pattern();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < bytes {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed("receiving", e)),
        };
        let phase = (pos % PERIOD as u64) as usize;
        if buf[..n] != pattern[phase..phase + n] {
            return Err(DemoError::Transfer(format!(
                "corrupted data within bytes {pos}..{}",
                pos + n as u64
            )));
        }
        pos += n as u64;
    }
    Ok(pos)
}

fn send(addr: SocketAddr, bytes: u64) -> Result<(), DemoError> {
    let mut stream =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| failed("connecting", e))?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| failed("sender", e))?;
    let pattern = pattern();
    let mut pos = 0u64;
    while pos < bytes {
        let n = (bytes - pos).min(CHUNK as u64) as usize;
        let phase = (pos % PERIOD as u64) as usize;
        stream
            .write_all(&pattern[phase..phase + n])
            .map_err(|e| failed("sending", e))?;
        pos += n as u64;
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| failed("sender shutdown", e))?;
    Ok(())
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
    fn rate_is_bits_per_second() {
        let r = TransferResult {
            bytes: 125_000_000,
            elapsed: Duration::from_secs(1),
        };
        assert!((r.gbit_per_s() - 1.0).abs() < 1e-9);
    }
}
