//! Per-socket options of the underlay send path: the outer DF bit, TTL and TOS, send-only
//! source-port sockets, and what the kernel knows of the path MTU to a peer.
//!
//! DF is a socket property (IPv4 has no per-packet DF control message), so a socket is either
//! "DF" (IP_PMTUDISC_PROBE: DF on every datagram, GSO segments included, never fragmented at
//! the source) or "no DF" (IP_PMTUDISC_DONT: the kernel fragments at the source when it must,
//! routers may fragment). Without either the kernel default (IP_PMTUDISC_WANT) sets DF only on
//! datagrams that fit the path MTU, which leaves UDP GSO segments (the send is larger than the
//! MTU as a whole) without DF. Over IPv6 the same choice is IPV6_DONTFRAG plus
//! IPV6_MTU_DISCOVER.
//!
//! PROBE rather than DO: DO also refuses (EMSGSIZE) every datagram larger than the path MTU the
//! kernel learnt from ICMP, and that ICMP can be forged by anyone who guesses a source port
//! (down to the kernel's floor of 552 bytes). With PROBE the kernel still learns the path MTU
//! (and [`PathMtuProbe`] reads it), but does not enforce it: the workers do, with a floor
//! below which they do not follow it (`--min-pmtu`, see `worker::pmtu`).

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use socket2::{Domain, Protocol, Socket, Type};
use vxnet_encap::outer::{OuterPolicy, TosPolicy, TtlPolicy};

use super::cvt;
use super::udp::{setsockopt_int, UdpSocket};

/// The receive buffer of a send-only socket: the smallest the kernel allows (it rounds up).
const SEND_ONLY_RCVBUF: usize = 1;
/// `IP_LOCAL_PORT_RANGE` (linux/in.h; not in libc yet): a per-socket ephemeral port range, the
/// low port in the low 16 bits, the high port in the high 16 bits. Applies to IPv6 sockets too.
const IP_LOCAL_PORT_RANGE: libc::c_int = 51;

impl UdpSocket {
    /// Applies the fixed parts of `policy` and the DF state `df` to this socket: DF through
    /// IP(V6)_MTU_DISCOVER (and IPV6_DONTFRAG), a fixed TTL and TOS as socket defaults. Fields
    /// the policy inherits are left to per-packet control messages.
    pub fn set_outer(&self, policy: &OuterPolicy, df: bool) -> io::Result<()> {
        let fd = self.as_raw_fd();
        let sock = self.socket();
        if self.local_addr().is_ipv4() {
            let mode = if df {
                libc::IP_PMTUDISC_PROBE
            } else {
                libc::IP_PMTUDISC_DONT
            };
            setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, mode)?;
            if let TtlPolicy::Fixed(ttl) = policy.ttl {
                sock.set_ttl(u32::from(ttl))?;
            }
            if let TosPolicy::Fixed(tos) = policy.tos {
                sock.set_tos(u32::from(tos))?;
            }
        } else {
            let mode = if df {
                libc::IPV6_PMTUDISC_PROBE
            } else {
                libc::IPV6_PMTUDISC_DONT
            };
            setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, mode)?;
            setsockopt_int(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_DONTFRAG,
                libc::c_int::from(df),
            )?;
            if let TtlPolicy::Fixed(hops) = policy.ttl {
                sock.set_unicast_hops_v6(u32::from(hops))?;
            }
            if let TosPolicy::Fixed(tclass) = policy.tos {
                sock.set_tclass_v6(u32::from(tclass))?;
            }
        }
        Ok(())
    }
}

/// Makes a socket that only sends (a source-port socket), before it is bound: every datagram
/// addressed to its port is dropped by a filter before it is queued, and its receive buffer is
/// minimal, so traffic sent to the port costs no memory. ICMP errors still reach the socket's
/// protocol handler, so the kernel still learns the path MTU from frag-needed messages about
/// what it sent.
pub(super) fn make_send_only(sock: &Socket) -> io::Result<()> {
    // Classic BPF "ret #0": accept zero bytes of every packet, i.e. drop it.
    let drop_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    sock.attach_filter(&drop_all)?;
    sock.set_recv_buffer_size(SEND_ONLY_RCVBUF)
}

/// Asks the kernel for the path MTU to peers: a UDP socket connected to each in turn, then
/// IP_MTU / IPV6_MTU, which is the route's MTU including what ICMP frag-needed / packet-too-big
/// messages taught it (the kernel's PMTU exceptions) and `ip route … mtu` settings.
#[derive(Debug)]
pub(crate) struct PathMtuProbe {
    sock: Socket,
    ipv4: bool,
}

impl PathMtuProbe {
    /// A probe for peers of the family of `local`, bound to `local`, so the route is looked up
    /// for the same source address the data takes. Its port is taken from `ports` where the
    /// kernel allows choosing (IP_LOCAL_PORT_RANGE, Linux 6.3+), so it does not hold one of the
    /// source ports; elsewhere from the usual ephemeral range.
    pub(crate) fn new(local: IpAddr, ports: RangeInclusive<u16>) -> io::Result<PathMtuProbe> {
        let sock = Socket::new(
            Domain::for_address(SocketAddr::new(local, 0)),
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        )?;
        if local.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        let range = u32::from(*ports.start()) | (u32::from(*ports.end()) << 16);
        // Best effort: an older kernel says ENOPROTOOPT and the probe takes any free port.
        let _ = setsockopt_int(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            IP_LOCAL_PORT_RANGE,
            range as libc::c_int,
        );
        sock.bind(&SocketAddr::new(local, 0).into())?;
        // Nothing is ever sent or received on it.
        sock.set_recv_buffer_size(SEND_ONLY_RCVBUF)?;
        Ok(PathMtuProbe {
            sock,
            ipv4: local.is_ipv4(),
        })
    }

    /// The path MTU (IP packet bytes) to `peer`. Two syscalls: `connect` looks the route up
    /// afresh (a cached route would not show a PMTU learned since), `getsockopt` reads it.
    pub(crate) fn path_mtu(&self, peer: SocketAddr) -> io::Result<u32> {
        self.sock.connect(&peer.into())?;
        let (level, name) = if self.ipv4 {
            (libc::IPPROTO_IP, libc::IP_MTU)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU)
        };
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` is a live, writable `int` and `len` holds its exact size; the kernel
        // writes at most `len` bytes into it and updates `len`.
        let ret = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        cvt(ret)?;
        u32::try_from(value).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
    }
}

impl AsFd for PathMtuProbe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Raises this process's soft limit on open files to its hard limit (allowed without privilege)
/// and returns the new soft limit: the source-port sockets take one descriptor each.
pub(crate) fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live, writable `rlimit`; the kernel fills it in.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid `rlimit` read by the kernel only.
        if cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) }).is_ok() {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}
