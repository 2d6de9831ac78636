//! ICMP echo over a raw IPv4 socket (needs CAP_NET_RAW), so that `vxnet demo` pings across its
//! overlay without the `ping` program. A raw socket is used rather than an unprivileged "ping"
//! socket because a new namespace allows those to no group (`net.ipv4.ping_group_range`).
//! The socket belongs to the namespace of the thread that opened it.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use vxnet_encap::checksum::checksum;

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
const ICMP_HEADER_LEN: usize = 8;
/// As much data as ping sends by default.
const PAYLOAD_LEN: usize = 56;

/// Sends echo requests and waits for their replies, one at a time.
#[derive(Debug)]
pub struct Pinger {
    sock: Socket,
    id: u16,
    seq: u16,
}

impl Pinger {
    /// A raw ICMP socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Pinger> {
        let sock = Socket::new(Domain::IPV4, Type::RAW.cloexec(), Some(Protocol::ICMPV4))?;
        Ok(Pinger {
            sock,
            // The raw socket sees every ICMP message of the namespace: the identifier tells ours.
            id: std::process::id() as u16,
            seq: 0,
        })
    }

    /// One echo request to `dst`; the round-trip time of its reply, or `None` when no reply came
    /// within `timeout`.
    pub fn echo(&mut self, dst: Ipv4Addr, timeout: Duration) -> io::Result<Option<Duration>> {
        self.seq = self.seq.wrapping_add(1);
        let request = echo_request(self.id, self.seq);
        let sent = Instant::now();
        self.sock
            .send_to(&request, &SocketAddrV4::new(dst, 0).into())?;
        let deadline = sent + timeout;
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let n = match super::read_within(&self.sock, &mut buf, left) {
                Ok(Some(n)) => n,
                Ok(None) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if is_reply(&buf[..n], dst, &request) {
                return Ok(Some(sent.elapsed()));
            }
        }
    }
}

/// An echo request: type, code, checksum, identifier, sequence number, then a fixed pattern.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut msg = vec![0u8; ICMP_HEADER_LEN + PAYLOAD_LEN];
    msg[0] = ECHO_REQUEST;
    msg[4..6].copy_from_slice(&id.to_be_bytes());
    msg[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in msg[ICMP_HEADER_LEN..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let sum = checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// Whether `packet` (IPv4 header included, as a raw socket delivers it) is the reply from
/// `from` to `request`: same identifier, sequence number and data, valid checksum.
fn is_reply(packet: &[u8], from: Ipv4Addr, request: &[u8]) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let header_len = usize::from(first & 0x0f) * 4;
    let Some(src) = packet.get(12..16) else {
        return false;
    };
    let Some(icmp) = packet.get(header_len..) else {
        return false;
    };
    Ipv4Addr::new(src[0], src[1], src[2], src[3]) == from
        && icmp.len() == request.len()
        && icmp[0] == ECHO_REPLY
        && icmp[1] == 0
        && icmp[4..8] == request[4..8]
        && icmp[ICMP_HEADER_LEN..] == request[ICMP_HEADER_LEN..]
        && checksum(icmp) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply the target's kernel would send: its IPv4 header, type 0, checksum redone.
    fn reply_to(request: &[u8], from: Ipv4Addr) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        ip.extend_from_slice(&from.octets());
        ip.extend_from_slice(&[10, 0, 0, 1]);
        let mut icmp = request.to_vec();
        icmp[0] = ECHO_REPLY;
        icmp[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        ip.extend_from_slice(&icmp);
        ip
    }

    #[test]
    fn requests_checksum_to_zero_and_only_their_reply_matches() {
        let request = echo_request(0x1234, 7);
        assert_eq!(request.len(), 64);
        assert_eq!(checksum(&request), 0);
        let from = Ipv4Addr::new(10, 0, 0, 2);
        let reply = reply_to(&request, from);
        assert!(is_reply(&reply, from, &request));
        assert!(!is_reply(&reply, Ipv4Addr::new(10, 0, 0, 3), &request));
        assert!(!is_reply(&reply, from, &echo_request(0x1234, 8)));
        assert!(!is_reply(&reply, from, &echo_request(0x1235, 7)));
        let mut damaged = reply.clone();
        damaged[30] ^= 1;
        assert!(!is_reply(&damaged, from, &request));
        assert!(!is_reply(&reply[..30], from, &request));
        assert!(!is_reply(&[], from, &request));
    }
}
