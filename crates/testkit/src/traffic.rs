//! Traffic between lab hosts: code run inside a namespace, and the byte-checked TCP transfer.
//! The transfer is `vxnet`'s own ([`vxnet::netns::transfer`], what `vxnet demo` and `vxnet
//! bench` measure with), so the tests and the tools check bytes one way.

use std::net::SocketAddr;
use std::time::Duration;

use vxnet::netns::transfer::{self, Amount, Transfer};

use crate::lab::Host;

/// Runs `f` on a thread inside host namespace `ns` (for Rust TCP senders/receivers in tests).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        vxnet_dataplane::sys::enter_named_netns_for_current_thread(&ns)
            .unwrap_or_else(|e| panic!("entering netns {ns}: {e}"));
        f()
    })
}

/// One HTTP/1.1 GET of `path` from `addr`, from inside namespace `ns`; returns (status line,
/// body).
pub fn http_get(ns: &str, addr: &'static str, path: &'static str) -> (String, String) {
    in_netns(ns, move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_string(), body.to_string())
    })
    .join()
    .unwrap()
}

/// Moves `len` pattern bytes over one TCP connection from `from` to `to` (listening on
/// `addr`), checks every byte and panics naming `what` when any is wrong or missing; returns
/// the time from the connection to the last byte checked.
pub fn transfer_checked(
    what: &str,
    from: &Host,
    to: &Host,
    addr: SocketAddr,
    len: u64,
) -> Duration {
    start_transfer(what, from, to, addr, len)
        .finish()
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .elapsed
}

/// [`transfer_checked`] that returns as soon as the data flows, for tests that act meanwhile;
/// finish it with [`Transfer::finish`], or drop it to abandon it (its threads end on their
/// own when the path goes away or their I/O times out).
pub fn start_transfer(what: &str, from: &Host, to: &Host, addr: SocketAddr, len: u64) -> Transfer {
    transfer::start(&from.ns, &to.ns, addr, Amount::Bytes(len), 1)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}
