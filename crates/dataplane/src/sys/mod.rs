//! Everything that talks to the kernel below `std`: TAP devices, interface configuration ioctls,
//! batched UDP I/O and waiting. This is the only module of vxnet that contains `unsafe` (enforced:
//! every crate denies `unsafe_code`, only this module allows it); the rest of
//! the engine sees safe types (`Tap`, `TapQueue`, `UdpSocket`, `RecvBatch`, `SendBatch`, `PollSet`,
//! `EventFd`) and typed errors that print as one line.
//!
//! Linux only. The submodules each own one kernel facility:
//! - [`tap`]: `/dev/net/tun`, virtio-net header and offload negotiation;
//! - [`iface`]: `SIOC*` ioctls (flags, MTU, addresses) and `getifaddrs`;
//! - [`udp`]: sockets, `recvmmsg`/`sendmmsg`, UDP GSO/GRO;
//! - `claim`: one engine per UDP address and TAP (abstract Unix socket names), state files
//!   locked with `flock`;
//! - `udp_path`: outer DF/TTL/TOS socket options, send-only sockets, path-MTU queries;
//! - `cmsg`: pure encode/decode of ancillary data (no `unsafe`);
//! - `creds`: Unix-socket peer credentials, group lookup, socket file modes;
//! - [`poll`]: `poll(2)` and `eventfd(2)`;
//! - `rtnetlink`: the two link requests no ioctl covers (gso_max_segs, carrier);
//! - `link`: rtnetlink links, addresses and routes for bridge mode and endpoints (bridges,
//!   veth pairs into other namespaces, ports, aliases);
//! - `netns`: network namespaces opened by path and checked, held as fds;
//! - `route`: routes, neighbours, tc redirects and change notifications (tunnel GSO);
//! - [`packet`]: `AF_PACKET` capture of one frame (for `vxnet demo`);
//! - [`named_netns`]: named network namespaces as `ip netns add` makes them, and their links
//!   (for `vxnet demo` and `vxnet bench`);
//! - [`icmp`]: ICMP echo over a raw socket (`vxnet demo`'s ping);
//! - [`term`]: the terminal's width (for `vxnet explain`'s text view);
//! - `thread`: kernel thread ids, and whether a worker's thread still exists.

pub(crate) mod claim;
pub(crate) mod cmsg;
pub(crate) mod creds;
pub mod icmp;
pub mod iface;
pub(crate) mod link;
pub mod named_netns;
pub(crate) mod netns;
pub mod packet;
pub mod poll;
pub(crate) mod route;
mod rtnetlink;
pub mod tap;
pub mod term;
pub(crate) mod thread;
pub mod udp;
pub(crate) mod udp_path;

use std::io;

/// Longest interface name the kernel keeps (`IFNAMSIZ` minus the NUL).
pub(crate) const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Why an interface name was refused before it reached the kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid interface name {name:?}: {reason}")]
pub struct InvalidIfName {
    pub(crate) name: String,
    pub(crate) reason: &'static str,
}

/// Checks `name` the way the kernel's `dev_valid_name()` does, so that a long name is an error
/// instead of being silently cut at 15 bytes by a fixed-size `ifr_name`.
pub(crate) fn validate_ifname(name: &str) -> Result<(), InvalidIfName> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved name")
    } else if name
        .bytes()
        .any(|b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        Some("contains NUL, '/', ':' or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(InvalidIfName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Builds a zeroed `ifreq` carrying `name`. The name must already be validated.
pub(crate) fn ifreq_named(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is a plain C struct (a char array and a union of integers, sockaddrs and a
    // pointer); all-zero bytes are a valid value for every field.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(MAX_IFNAME_LEN))
    {
        *dst = src as libc::c_char;
    }
    ifr
}

/// Reads the NUL-terminated name back out of an `ifreq` (the kernel fills it in for `%d` names).
pub(crate) fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Moves the calling thread (only) into a new, anonymous network namespace.
///
/// Used by the integration tests to get a private, empty network stack: the namespace and every
/// device created in it disappear when the thread exits and the last fd into it is closed, so no
/// cleanup can be missed. Needs CAP_SYS_ADMIN.
pub fn unshare_netns_for_current_thread() -> io::Result<()> {
    // SAFETY: unshare(2) takes only flags; CLONE_NEWNET is allowed in a multi-threaded process and
    // affects only the calling thread.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map(drop)
}

/// Moves the calling thread (only) into the named network namespace (`ip netns add NAME` makes
/// `/run/netns/NAME`). Lets `vxnet demo` and the tests run a TCP sender or receiver inside a host
/// namespace on a thread of their own, without a helper process. Needs CAP_SYS_ADMIN.
pub fn enter_named_netns_for_current_thread(name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if name.contains('/') || name.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "namespace name must be a plain name",
        ));
    }
    let file = std::fs::File::open(std::path::Path::new("/run/netns").join(name))?;
    // SAFETY: setns(2) with a valid, open namespace fd (kept open by `file` for the call) and the
    // CLONE_NEWNET type; it changes only the calling thread's network namespace.
    cvt(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// One read from `sock` that waits at most `timeout`: `Ok(None)` when nothing came in time.
/// The netlink change watcher and the ICMP echo both wait this way.
pub(crate) fn read_within(
    sock: &socket2::Socket,
    buf: &mut [u8],
    timeout: std::time::Duration,
) -> io::Result<Option<usize>> {
    use std::io::Read;
    sock.set_read_timeout(Some(timeout))?;
    match (&*sock).read(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Turns a libc `-1 + errno` return into an `io::Result`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Same as [`cvt`] for calls returning `ssize_t`.
pub(crate) fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ifname_validation() {
        assert!(validate_ifname("vxt0").is_ok());
        assert!(validate_ifname("abcdefghijklmno").is_ok()); // 15 bytes
        assert!(validate_ifname("abcdefghijklmnop").is_err()); // 16 bytes
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("a/b").is_err());
        assert!(validate_ifname("a b").is_err());
        assert!(validate_ifname("..").is_err());
    }

    #[test]
    fn ifreq_name_round_trip() {
        let ifr = ifreq_named("vxt%d");
        assert_eq!(ifreq_name(&ifr), "vxt%d");
    }
}
