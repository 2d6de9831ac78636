//! Capturing link-layer frames with an `AF_PACKET` socket, so `vxnet demo` (and tests) can show a
//! real VXLAN packet from the underlay without tcpdump or libpcap.
//!
//! Only the socket set-up is `unsafe`; recognising the wanted frame is plain slice code.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::{cvt, validate_ifname, InvalidIfName};

/// Every protocol (`ETH_P_ALL`), in network byte order as `socket(2)` and `sockaddr_ll` want it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
/// Big enough for the largest frame a packet socket sees: a 64 KiB GSO superframe (IP length
/// 65535) behind an Ethernet header and two VLAN tags. Anything longer is cut.
const CAPTURE_BUFFER: usize = 65_535 + 14 + 8 + 1;
const IPPROTO_UDP: u8 = 17;

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error(transparent)]
    Name(#[from] InvalidIfName),
    #[error("no interface named {0}")]
    NoSuchInterface(String),
    #[error("cannot open a packet socket on {ifname}: {source}")]
    Socket { ifname: String, source: io::Error },
    #[error("no UDP packet to or from port {port} seen on {ifname} within {timeout:?}")]
    Timeout {
        ifname: String,
        port: u16,
        timeout: Duration,
    },
}

/// A frame as captured on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The Ethernet frame, from the destination MAC on.
    pub frame: Vec<u8>,
    /// Set when the frame was longer than the capture buffer and was cut.
    pub truncated: bool,
}

/// A packet socket bound to one interface of the calling thread's network namespace. It sees
/// frames in both directions from the moment it is opened.
#[derive(Debug)]
pub struct PacketSocket {
    socket: socket2::Socket,
    ifname: String,
}

impl PacketSocket {
    /// Opens and binds the socket. Needs CAP_NET_RAW.
    pub fn open(ifname: &str) -> Result<PacketSocket, CaptureError> {
        validate_ifname(ifname)?;
        let c_name =
            CString::new(ifname).map_err(|_| CaptureError::NoSuchInterface(ifname.into()))?;
        // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if index == 0 {
            return Err(CaptureError::NoSuchInterface(ifname.into()));
        }
        let socket_err = |source| CaptureError::Socket {
            ifname: ifname.into(),
            source,
        };
        // SAFETY: socket(2) takes only integers; the result is checked before use.
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL_BE),
            )
        })
        .map_err(socket_err)?;
        // SAFETY: `fd` was just returned by socket(2), is open, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `sockaddr_ll` is a plain C struct of integers and a byte array; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL_BE;
        addr.sll_ifindex = index as i32;
        // SAFETY: `addr` is a fully initialised `sockaddr_ll` and the length passed is its size;
        // the kernel only reads it during the call.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map_err(socket_err)?;
        Ok(PacketSocket {
            socket: socket2::Socket::from(fd),
            ifname: ifname.into(),
        })
    }

    /// Waits up to `timeout` for a frame carrying IPv4 or IPv6 UDP from or to `udp_port`.
    pub fn next_udp(&mut self, udp_port: u16, timeout: Duration) -> Result<Captured, CaptureError> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; CAPTURE_BUFFER];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(&mut buf, left)? {
                Some(captured) if is_udp_port(&captured.frame, udp_port) => return Ok(captured),
                Some(_) => {}
                None => {
                    return Err(CaptureError::Timeout {
                        ifname: self.ifname.clone(),
                        port: udp_port,
                        timeout,
                    })
                }
            }
        }
    }

    /// The next frame of any kind, or `None` when none came within `timeout` (so a caller can
    /// check for Ctrl-C between frames).
    pub fn next_frame(&mut self, timeout: Duration) -> Result<Option<Captured>, CaptureError> {
        let mut buf = vec![0u8; CAPTURE_BUFFER];
        self.read_frame(&mut buf, timeout)
    }

    fn read_frame(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<Option<Captured>, CaptureError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket
                .set_read_timeout(Some(left))
                .map_err(|source| CaptureError::Socket {
                    ifname: self.ifname.clone(),
                    source,
                })?;
            match self.socket.read(buf) {
                Ok(n) => {
                    return Ok(Some(Captured {
                        frame: buf[..n].to_vec(),
                        truncated: n == buf.len(),
                    }))
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(source) => {
                    return Err(CaptureError::Socket {
                        ifname: self.ifname.clone(),
                        source,
                    })
                }
            }
        }
    }
}

/// Whether an Ethernet frame carries UDP (IPv4 or IPv6 without extension headers) with `port` as
/// its source or destination port.
pub(crate) fn is_udp_port(frame: &[u8], port: u16) -> bool {
    let Some(ethertype) = frame.get(12..14) else {
        return false;
    };
    let ip = &frame[14..];
    let udp = match ethertype {
        [0x08, 0x00] => {
            let Some(&first) = ip.first() else {
                return false;
            };
            let header_len = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4 || header_len < 20 || ip.get(9) != Some(&IPPROTO_UDP) {
                return false;
            }
            ip.get(header_len..)
        }
        [0x86, 0xdd] => {
            if ip.get(6) != Some(&IPPROTO_UDP) {
                return false;
            }
            ip.get(40..)
        }
        _ => None,
    };
    match udp.and_then(|u| u.get(..4)) {
        Some(ports) => {
            let src = u16::from_be_bytes([ports[0], ports[1]]);
            let dst = u16::from_be_bytes([ports[2], ports[3]]);
            src == port || dst == port
        }
        None => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ipv4_udp(src_port: u16, dst_port: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = IPPROTO_UDP;
        f[34..36].copy_from_slice(&src_port.to_be_bytes());
        f[36..38].copy_from_slice(&dst_port.to_be_bytes());
        f
    }

    #[test]
    fn recognises_udp_by_port() {
        assert!(is_udp_port(&ipv4_udp(50000, 4789), 4789));
        assert!(is_udp_port(&ipv4_udp(4789, 50000), 4789));
        assert!(!is_udp_port(&ipv4_udp(50000, 53), 4789));
        let mut tcp = ipv4_udp(50000, 4789);
        tcp[14 + 9] = 6;
        assert!(!is_udp_port(&tcp, 4789));
        // Short and odd frames never panic.
        for len in 0..42 {
            let _ = is_udp_port(&ipv4_udp(1, 4789)[..len], 4789);
        }
        let mut v6 = vec![0u8; 14 + 40 + 8];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[14 + 6] = IPPROTO_UDP;
        v6[56..58].copy_from_slice(&4789u16.to_be_bytes());
        assert!(is_udp_port(&v6, 4789));
    }

    #[test]
    fn unknown_interface_is_an_error() {
        assert!(matches!(
            PacketSocket::open("vxnet-nope0"),
            Err(CaptureError::NoSuchInterface(_))
        ));
        assert!(PacketSocket::open("a/b").is_err());
    }
}
