//! UDP sockets for the underlay, with batched I/O (`recvmmsg`/`sendmmsg`) and UDP GSO/GRO.
//!
//! Batch objects ([`RecvBatch`], [`SendBatch`]) allocate their buffers, iovecs, socket addresses
//! and control-message space once; `recv`/`send` only rewrite them in place, so the steady state
//! does no heap allocation per packet or per call.
//!
//! GSO fall-back: [`UdpSocket::probe_gso`] only shows that the kernel knows UDP_SEGMENT. A send can
//! still fail at run time with EIO (xfrm path; before Linux 6.11 also an egress device without
//! checksum offload) or EINVAL (no UDP checksums on the socket, segment count/size limits); the
//! engine then sends the segments as separate datagrams (`crate::offload` keeps that decision).

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::cmsg::{self, CmsgBuf, IpField};
use super::cvt;

/// `SO_MEMINFO` (asm-generic/socket.h; libc does not name it) and the length of the array it
/// fills (`SK_MEMINFO_VARS`).
const SO_MEMINFO: libc::c_int = 55;
const SK_MEMINFO_VARS: usize = 9;

/// Options for [`UdpSocket::bind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpOptions {
    /// Set SO_REUSEPORT so one socket per worker can share the port (the kernel spreads flows).
    pub reuse_port: bool,
    /// Requested send and receive buffer size in bytes; 0 keeps the kernel default. Set with
    /// SO_*BUFFORCE (ignores `net.core.[rw]mem_max`), falling back to SO_*BUF (capped) when not
    /// permitted.
    pub buffer_bytes: usize,
    /// A socket that only sends (source ports): before it is bound, a filter drops every
    /// datagram sent to it and its receive buffer is minimal; `buffer_bytes` is the send buffer
    /// only.
    pub send_only: bool,
}

/// Socket setup errors; each prints as one line naming the address.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error("UDP address {addr} is already in use (another vxnet or a kernel VXLAN device?)")]
    AddrInUse { addr: SocketAddr },
    #[error(
        "UDP address {addr} is already served by another vxnet engine in this network namespace"
    )]
    ServedByEngine { addr: SocketAddr },
    #[error("cannot bind UDP socket to {addr}: address is not local to this host")]
    AddrNotAvailable { addr: SocketAddr },
    #[error("cannot bind UDP socket to {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot set up UDP socket for {addr} ({what}): {source}")]
    Setup {
        addr: SocketAddr,
        what: &'static str,
        source: io::Error,
    },
}

/// A nonblocking, close-on-exec UDP socket (IPv6 sockets are V6ONLY).
#[derive(Debug)]
pub struct UdpSocket {
    sock: Socket,
    local: SocketAddr,
    /// The SO_RXQ_OVFL total already counted. The kernel's total is the socket's, so every
    /// clone shares this: a new generation of workers (a reload) takes up where the last left
    /// instead of counting the socket's earlier drops again.
    overflows_counted: Arc<AtomicU32>,
}

pub(super) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is one `int` read from a live local, and its exact size is passed.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    cvt(ret).map(drop)
}

impl UdpSocket {
    pub fn bind(addr: SocketAddr, opts: &UdpOptions) -> Result<UdpSocket, UdpError> {
        let setup = |what: &'static str| move |source| UdpError::Setup { addr, what, source };
        let sock = Socket::new(
            Domain::for_address(addr),
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        )
        .map_err(setup("socket"))?;
        if addr.is_ipv6() {
            // Keep IPv4 and IPv6 underlays on separate, explicit sockets.
            sock.set_only_v6(true).map_err(setup("IPV6_V6ONLY"))?;
        }
        if opts.reuse_port {
            sock.set_reuse_port(true).map_err(setup("SO_REUSEPORT"))?;
        }
        if opts.send_only {
            super::udp_path::make_send_only(&sock).map_err(setup("send-only filter"))?;
        }
        if opts.buffer_bytes > 0 {
            let size = opts.buffer_bytes.min(libc::c_int::MAX as usize / 2);
            // SO_*BUFFORCE ignores net.core.[rw]mem_max but needs CAP_NET_ADMIN; without it the
            // plain option gets what the limit allows.
            let force = |name, what_force, what, plain: fn(&Socket, usize) -> io::Result<()>| {
                match setsockopt_int(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    name,
                    size as libc::c_int,
                ) {
                    Ok(()) => Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        plain(&sock, size).map_err(setup(what))
                    }
                    Err(e) => Err(setup(what_force)(e)),
                }
            };
            if !opts.send_only {
                force(
                    libc::SO_RCVBUFFORCE,
                    "SO_RCVBUFFORCE",
                    "SO_RCVBUF",
                    Socket::set_recv_buffer_size,
                )?;
            }
            force(
                libc::SO_SNDBUFFORCE,
                "SO_SNDBUFFORCE",
                "SO_SNDBUF",
                Socket::set_send_buffer_size,
            )?;
        }
        sock.bind(&addr.into())
            .map_err(|source| match source.raw_os_error() {
                Some(libc::EADDRINUSE) => UdpError::AddrInUse { addr },
                Some(libc::EADDRNOTAVAIL) => UdpError::AddrNotAvailable { addr },
                _ => UdpError::Bind { addr, source },
            })?;
        let local = sock
            .local_addr()
            .map_err(setup("getsockname"))?
            .as_socket()
            .unwrap_or(addr);
        Ok(UdpSocket {
            sock,
            local,
            overflows_counted: Arc::default(),
        })
    }

    /// Another fd for the same socket (same port, options and buffers).
    pub(crate) fn try_clone(&self) -> io::Result<UdpSocket> {
        Ok(UdpSocket {
            sock: self.sock.try_clone()?,
            local: self.local,
            overflows_counted: Arc::clone(&self.overflows_counted),
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The kernel's effective buffer sizes (it doubles what was asked), `(recv, send)`.
    pub fn buffer_sizes(&self) -> io::Result<(usize, usize)> {
        Ok((self.sock.recv_buffer_size()?, self.sock.send_buffer_size()?))
    }

    /// Turns on UDP_GRO: the kernel may then hand over several same-size datagrams from one
    /// sender as one buffer, with the segment size in a cmsg ([`Received::gro_segment_size`]).
    /// Receive buffers must then be large (64 KiB), or coalesced data is truncated.
    pub fn enable_gro(&self) -> io::Result<()> {
        setsockopt_int(self.sock.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1)
    }

    /// The socket's running count of datagrams dropped for want of receive-buffer space (the
    /// kernel's `sk_drops`, from SO_MEMINFO), so those drops can be counted instead of
    /// vanishing. Read once per wake-up of a worker rather than asked of every datagram with SO_RXQ_OVFL:
    /// that cmsg is copied straight out of the datagram's `sk_buff`, and on kernels with
    /// hardened usercopy a VXLAN datagram of a kernel VTEP that carries a TCP segment of this
    /// host sits in a clone the check refuses, so once the count was non-zero (after a flood)
    /// the kernel hit `BUG at mm/usercopy.c` in `put_cmsg` and killed the worker thread
    /// (6.18; see docs/performance.md).
    pub(crate) fn receive_drops(&self) -> io::Result<u32> {
        let mut info = [0u32; SK_MEMINFO_VARS];
        let mut len = size_of::<[u32; SK_MEMINFO_VARS]>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `info`, a live local of that size,
        // and stores the length it wrote in `len`.
        let ret = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        cvt(ret)?;
        let drops = libc::SK_MEMINFO_DROPS as usize;
        if (len as usize) < (drops + 1) * size_of::<u32>() {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        Ok(info[drops])
    }

    /// The drops not yet counted, given the socket's running `total` of overflows (from
    /// [`receive_drops`](Self::receive_drops)); `total` then counts as counted, for this fd and
    /// its clones.
    pub(crate) fn new_overflows(&self, total: u32) -> u32 {
        total.wrapping_sub(self.overflows_counted.swap(total, Ordering::Relaxed))
    }

    /// Whether this kernel supports UDP_SEGMENT (sets the socket default segment size to 0,
    /// i.e. "off", which is also the initial state; per-message cmsgs then choose the size).
    pub fn probe_gso(&self) -> bool {
        setsockopt_int(self.sock.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, 0).is_ok()
    }

    /// One datagram, for control traffic and tests (the data path uses [`SendBatch`]).
    pub fn send_to(&self, buf: &[u8], dest: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(buf, &dest.into())
    }

    /// The underlying socket2 socket, for options not wrapped here.
    pub(crate) fn socket(&self) -> &Socket {
        &self.sock
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is a plain C struct of integers and raw pointers; all-zero (null pointers,
    // zero lengths) is a valid value.
    unsafe { std::mem::zeroed() }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: `sockaddr_storage` is plain integer data; all-zero is a valid (AF_UNSPEC) value.
    unsafe { std::mem::zeroed() }
}

/// Decodes an AF_INET/AF_INET6 address the kernel wrote into `ss`.
fn storage_to_socket_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match ss.ss_family as libc::c_int {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: `sockaddr_storage` is large and aligned enough for any sockaddr, and the
            // kernel stored an AF_INET address, so its prefix is a valid `sockaddr_in`.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for an AF_INET6 address and `sockaddr_in6`.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// One datagram from the last [`RecvBatch::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    pub data: &'a [u8],
    pub source: SocketAddr,
    /// With UDP_GRO: `data` is several datagrams of this size back to back (the last may be
    /// shorter). `None`: `data` is one datagram.
    pub gro_segment_size: Option<u16>,
    /// The datagram did not fit the buffer and was cut (MSG_TRUNC); the buffer size is too small.
    pub truncated: bool,
}

/// Preallocated state for `recvmmsg`: `batch` buffers of `buf_size` bytes each.
pub struct RecvBatch {
    buf_size: usize,
    bufs: Box<[u8]>,
    iovecs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf]>,
    hdrs: Box<[libc::mmsghdr]>,
    count: usize,
}

// SAFETY: the raw pointers inside `iovecs`/`hdrs` only ever point into this struct's own boxed
// allocations (which do not move when the struct moves) and are rewritten before every use, so
// moving the batch to another thread cannot create aliasing with anything else.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("batch", &self.hdrs.len())
            .field("buf_size", &self.buf_size)
            .field("count", &self.count)
            .finish()
    }
}

impl RecvBatch {
    /// `batch` and `buf_size` are clamped to at least 1. With GRO on use `buf_size` ≥ 65536.
    pub fn new(batch: usize, buf_size: usize) -> RecvBatch {
        let batch = batch.clamp(1, 1024);
        let buf_size = buf_size.max(1);
        let empty_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        RecvBatch {
            buf_size,
            bufs: vec![0u8; batch * buf_size].into_boxed_slice(),
            iovecs: vec![empty_iov; batch].into_boxed_slice(),
            addrs: vec![zeroed_storage(); batch].into_boxed_slice(),
            cmsgs: vec![CmsgBuf::default(); batch].into_boxed_slice(),
            hdrs: vec![zeroed_mmsghdr(); batch].into_boxed_slice(),
            count: 0,
        }
    }

    /// Receives up to `capacity()` datagrams without blocking. `Err(WouldBlock)` when nothing is
    /// queued; EINTR is returned as is for the caller's loop.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        let bs = self.buf_size;
        for ((((iov, buf), addr), cm), hdr) in self
            .iovecs
            .iter_mut()
            .zip(self.bufs.chunks_exact_mut(bs))
            .zip(self.addrs.iter_mut())
            .zip(self.cmsgs.iter_mut())
            .zip(self.hdrs.iter_mut())
        {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = bs;
            let m = &mut hdr.msg_hdr;
            m.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            m.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_iov = iov;
            m.msg_iovlen = 1;
            m.msg_control = cm.0.as_mut_ptr().cast();
            m.msg_controllen = cmsg::BUF_LEN as _;
            m.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: every header points at this batch's own iovec, buffer, address and control space,
        // all valid for writes of the stated lengths and not otherwise borrowed during the call;
        // `vlen` equals the number of initialised headers.
        let ret = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = cvt(ret)? as usize;
        self.count = n;
        Ok(n)
    }

    fn received_len(&self, i: usize) -> usize {
        (self.hdrs[i].msg_len as usize).min(self.buf_size)
    }

    /// Datagram `i` of the last `recv`. Panics if `i >= len()`.
    pub fn datagram(&self, i: usize) -> Received<'_> {
        assert!(i < self.count, "datagram index {i} out of {}", self.count);
        let len = self.received_len(i);
        let m = &self.hdrs[i].msg_hdr;
        // `msg_controllen` is size_t on glibc but socklen_t on musl.
        #[allow(clippy::unnecessary_cast)]
        let controllen = (m.msg_controllen as usize).min(cmsg::BUF_LEN);
        Received {
            data: &self.bufs[i * self.buf_size..][..len],
            source: storage_to_socket_addr(&self.addrs[i], m.msg_namelen)
                .unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))),
            gro_segment_size: cmsg::decode_udp_gro(&self.cmsgs[i].0[..controllen]),
            truncated: m.msg_flags & libc::MSG_TRUNC != 0,
        }
    }

    /// The received bytes of datagram `i`, writable (e.g. to coalesce in place). Panics if
    /// `i >= len()`.
    pub fn datagram_mut(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.count, "datagram index {i} out of {}", self.count);
        let len = self.received_len(i);
        &mut self.bufs[i * self.buf_size..][..len]
    }

    pub fn iter(&self) -> impl Iterator<Item = Received<'_>> + '_ {
        (0..self.count).map(move |i| self.datagram(i))
    }
}

/// One datagram to send with [`SendBatch::send`].
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub dest: SocketAddr,
    /// Gathered into one datagram (e.g. `[vxlan_header, frame]`), no copy.
    pub parts: &'a [&'a [u8]],
    /// UDP GSO: the kernel cuts the payload into datagrams of this size (last may be shorter).
    /// Total payload ≤ 65507 (IPv4) and at most 64 segments is safe.
    pub segment_size: Option<u16>,
    /// Outer TTL / hop limit of this datagram (all its segments); `None`: the socket's.
    pub ttl: Option<u8>,
    /// Outer TOS / traffic class of this datagram (all its segments); `None`: the socket's.
    pub tos: Option<u8>,
}

impl<'a> Outgoing<'a> {
    /// A datagram (or GSO run) with the socket's TTL and TOS.
    pub fn new(dest: SocketAddr, parts: &'a [&'a [u8]], segment_size: Option<u16>) -> Self {
        Outgoing {
            dest,
            parts,
            segment_size,
            ttl: None,
            tos: None,
        }
    }
}

/// Writes the control messages of `msg` into `buf`; returns the bytes used.
fn encode_control(buf: &mut [u8], msg: &Outgoing<'_>) -> usize {
    let ipv4 = msg.dest.is_ipv4();
    let mut used = 0;
    if let Some(seg) = msg.segment_size {
        used += cmsg::encode_udp_segment(&mut buf[used..], seg).unwrap_or(0);
    }
    for (field, value) in [(IpField::Ttl, msg.ttl), (IpField::Tos, msg.tos)] {
        if let Some(value) = value {
            used += cmsg::encode_ip_field(&mut buf[used..], ipv4, field, value).unwrap_or(0);
        }
    }
    used
}

/// Reusable `sendmmsg` state. Grows only when a bigger batch (or more parts) than ever before
/// arrives; at steady state `send` allocates nothing.
pub struct SendBatch {
    hdrs: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    addrs: Vec<SockAddr>,
    cmsgs: Vec<CmsgBuf>,
}

// SAFETY: the raw pointers kept in `hdrs`/`iovecs` are written at the start of each `send` and
// only dereferenced (by the kernel) during it; between calls they are dead values never read, so
// moving the batch to another thread shares nothing.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("capacity", &self.hdrs.len())
            .field("iov_capacity", &self.iovecs.len())
            .finish()
    }
}

/// sendmmsg takes at most UIO_MAXIOV messages per call.
const MAX_SENDMMSG: usize = 1024;

impl SendBatch {
    /// Preallocates room for `batch` messages of up to `parts_per_msg` parts each.
    pub fn new(batch: usize, parts_per_msg: usize) -> SendBatch {
        let batch = batch.clamp(1, MAX_SENDMMSG);
        let empty_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let unspec = SockAddr::from(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
        SendBatch {
            hdrs: vec![zeroed_mmsghdr(); batch],
            iovecs: vec![empty_iov; batch * parts_per_msg.max(1)],
            addrs: vec![unspec; batch],
            cmsgs: vec![CmsgBuf::default(); batch],
        }
    }

    /// Sends `msgs` (at most 1024 per call) without blocking; returns how many were sent, which may
    /// be fewer than `msgs.len()` — the caller retries the rest. `Err(WouldBlock)` when the socket
    /// buffer is full before the first message. If a later message fails, the kernel returns the
    /// count so far and reports that error on the next call on this socket.
    pub fn send(&mut self, sock: &UdpSocket, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
        let msgs = &msgs[..msgs.len().min(MAX_SENDMMSG)];
        if msgs.is_empty() {
            return Ok(0);
        }
        let n = msgs.len();
        let total_parts: usize = msgs.iter().map(|m| m.parts.len()).sum();
        if self.hdrs.len() < n {
            self.hdrs.resize(n, zeroed_mmsghdr());
            self.addrs.resize(n, self.addrs[0].clone());
            self.cmsgs.resize(n, CmsgBuf::default());
        }
        if self.iovecs.len() < total_parts {
            let empty_iov = libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            self.iovecs.resize(total_parts, empty_iov);
        }

        let mut iov_off = 0;
        for (i, msg) in msgs.iter().enumerate() {
            let iovs = &mut self.iovecs[iov_off..iov_off + msg.parts.len()];
            for (iov, part) in iovs.iter_mut().zip(msg.parts) {
                // The kernel only reads send buffers; iovec just has no const variant.
                iov.iov_base = part.as_ptr() as *mut libc::c_void;
                iov.iov_len = part.len();
            }
            self.addrs[i] = SockAddr::from(msg.dest);
            let control_len = encode_control(&mut self.cmsgs[i].0, msg);
            let hdr = &mut self.hdrs[i];
            let m = &mut hdr.msg_hdr;
            m.msg_name = self.addrs[i].as_ptr() as *mut libc::c_void;
            m.msg_namelen = self.addrs[i].len();
            m.msg_iov = iovs.as_mut_ptr();
            m.msg_iovlen = msg.parts.len() as _;
            if control_len > 0 {
                m.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            } else {
                m.msg_control = std::ptr::null_mut();
            }
            m.msg_controllen = control_len as _;
            m.msg_flags = 0;
            hdr.msg_len = 0;
            iov_off += msg.parts.len();
        }

        // SAFETY: the first `n` headers point at iovecs, addresses and control data owned by `self`
        // and at caller slices borrowed for this call (`msgs`), all valid for reads of the stated
        // lengths for the whole call; the kernel writes only `msg_len`.
        let ret = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        Ok(cvt(ret)? as usize)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn storage_decoding() {
        for addr in [
            "192.0.2.1:4789".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:4789".parse().unwrap(),
        ] {
            let sa = SockAddr::from(addr);
            let len = sa.len();
            let ss: libc::sockaddr_storage = sa.as_storage();
            assert_eq!(storage_to_socket_addr(&ss, len), Some(addr));
            // A length too short for the family is refused rather than read past.
            assert_eq!(storage_to_socket_addr(&ss, 4), None);
        }
        assert_eq!(storage_to_socket_addr(&zeroed_storage(), 0), None);
    }
}
