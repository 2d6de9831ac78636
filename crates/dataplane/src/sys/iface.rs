//! Interface configuration with the classic `SIOC*` ioctls on a throwaway datagram socket (no
//! `ip` subprocesses, no netlink dependency), plus `getifaddrs` lookups. The one link setting
//! no ioctl reaches, `gso_max_segs`, and the carrier state go through [`super::rtnetlink`].
//!
//! The ioctl address interface is the old one: [`set_ipv4`] *sets* the device's primary IPv4
//! address (a second call replaces it), whereas [`add_ipv6`] adds one more IPv6 address.

use std::ffi::{CStr, CString};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, ifreq_named, validate_ifname, InvalidIfName};

/// An interface operation that failed; prints as one line naming the device and the step.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    #[error(transparent)]
    InvalidName(#[from] InvalidIfName),
    #[error("interface {name:?}: cannot {op}: {source}")]
    Io {
        name: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("interface {name:?}: prefix length /{prefix} is out of range for {family}")]
    InvalidPrefix {
        name: String,
        prefix: u8,
        family: &'static str,
    },
}

impl IfaceError {
    /// The underlying OS error, if any (e.g. to test for ENODEV).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            IfaceError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn io_err<'a>(name: &'a str, op: &'static str) -> impl FnOnce(io::Error) -> IfaceError + 'a {
    move |source| IfaceError::Io {
        name: name.to_owned(),
        op,
        source,
    }
}

fn ctl_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments; no memory is passed.
    let fd = cvt(unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2), is open, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs one `ifreq` ioctl on an AF_INET control socket.
fn ifreq_ioctl(
    name: &str,
    op: &'static str,
    req: libc::c_ulong,
    ifr: &mut libc::ifreq,
) -> Result<(), IfaceError> {
    let sock = ctl_socket(libc::AF_INET).map_err(io_err(name, op))?;
    // SAFETY: every SIOC[GS]IF* request used in this module reads and/or writes exactly one
    // `struct ifreq`, and `ifr` is a valid, exclusively borrowed one for the whole call.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), req as _, ifr as *mut libc::ifreq) };
    cvt(ret).map(drop).map_err(io_err(name, op))
}

/// The interface index (`if_nametoindex`).
pub fn if_index(name: &str) -> Result<u32, IfaceError> {
    validate_ifname(name)?;
    let c = CString::new(name).map_err(|_| InvalidIfName {
        name: name.to_owned(),
        reason: "contains NUL",
    })?;
    // SAFETY: `c` is a valid NUL-terminated string that lives across the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io_err(name, "look up interface index")(
            io::Error::last_os_error(),
        ));
    }
    Ok(idx)
}

fn flags(name: &str) -> Result<libc::c_short, IfaceError> {
    validate_ifname(name)?;
    let mut ifr = ifreq_named(name);
    ifreq_ioctl(name, "read flags", libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the kernel stored the flags in `ifru_flags`.
    Ok(unsafe { ifr.ifr_ifru.ifru_flags })
}

/// Whether IFF_UP is set.
pub fn is_up(name: &str) -> Result<bool, IfaceError> {
    Ok(flags(name)? & libc::IFF_UP as libc::c_short != 0)
}

/// Sets or clears IFF_UP, keeping the other flags (read-modify-write).
pub fn set_up(name: &str, up: bool) -> Result<(), IfaceError> {
    let mut f = flags(name)?;
    if up {
        f |= libc::IFF_UP as libc::c_short;
    } else {
        f &= !(libc::IFF_UP as libc::c_short);
    }
    let mut ifr = ifreq_named(name);
    ifr.ifr_ifru.ifru_flags = f;
    ifreq_ioctl(name, "set flags", libc::SIOCSIFFLAGS, &mut ifr)
}

/// The MTU in bytes.
pub fn mtu(name: &str) -> Result<u32, IfaceError> {
    validate_ifname(name)?;
    let mut ifr = ifreq_named(name);
    ifreq_ioctl(name, "read MTU", libc::SIOCGIFMTU, &mut ifr)?;
    // SAFETY: SIOCGIFMTU succeeded, so the kernel stored the MTU in `ifru_mtu`.
    let m = unsafe { ifr.ifr_ifru.ifru_mtu };
    Ok(m.max(0) as u32)
}

pub fn set_mtu(name: &str, mtu: u32) -> Result<(), IfaceError> {
    validate_ifname(name)?;
    let mut ifr = ifreq_named(name);
    ifr.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu).map_err(|_| IfaceError::Io {
        name: name.to_owned(),
        op: "set MTU",
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })?;
    ifreq_ioctl(name, "set MTU", libc::SIOCSIFMTU, &mut ifr)
}

/// Caps how many segments the kernel puts in one GSO packet sent through this device
/// (`ip link set NAME gso_max_segs SEGS`): TCP then builds superframes of at most `segs`
/// segments. One `RTM_NEWLINK` request with `IFLA_GSO_MAX_SEGS`, acknowledged by the kernel.
pub fn set_gso_max_segs(name: &str, segs: u32) -> Result<(), IfaceError> {
    let index = if_index(name)?;
    super::rtnetlink::set_gso_max_segs(index, segs).map_err(io_err(name, "set gso_max_segs"))
}

/// The device's `tx_dropped` counter (for a TAP: frames dropped because the queue towards
/// the process reading it was full), through rtnetlink in this thread's namespace (sysfs shows
/// the namespace it was mounted in, which an engine in a namespace need not see); `None` when
/// it cannot be read.
pub(crate) fn tx_dropped(name: &str) -> Option<u64> {
    link_state(name).ok()?.tx_dropped
}

pub use super::rtnetlink::LinkState;

/// The device's carrier (also while it is down; for a TAP: whether any process has a queue
/// attached) and rtnetlink kind.
pub fn link_state(name: &str) -> Result<LinkState, IfaceError> {
    let index = if_index(name)?;
    super::rtnetlink::link_state(index).map_err(io_err(name, "read the link state"))
}

/// [`link_state`] of the device with index `index`, plus its type, flags, MTU and MAC.
pub(crate) fn link_state_of(index: u32) -> io::Result<LinkState> {
    super::rtnetlink::link_state(index)
}

/// The name of device `index`, if it exists.
pub(crate) fn if_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname writes at most.
    let ret = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if ret.is_null() {
        return None;
    }
    // SAFETY: on success `buf` holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The Ethernet (MAC) address.
pub fn hw_addr(name: &str) -> Result<[u8; 6], IfaceError> {
    validate_ifname(name)?;
    let mut ifr = ifreq_named(name);
    ifreq_ioctl(name, "read hardware address", libc::SIOCGIFHWADDR, &mut ifr)?;
    // SAFETY: SIOCGIFHWADDR succeeded, so the kernel stored a sockaddr in `ifru_hwaddr`.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, &b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = b as u8;
    }
    Ok(mac)
}

/// Sets the Ethernet (MAC) address; done before the device is brought up.
pub(crate) fn set_hw_addr(name: &str, mac: [u8; 6]) -> Result<(), IfaceError> {
    validate_ifname(name)?;
    let mut ifr = ifreq_named(name);
    let mut sa_data = [0 as libc::c_char; 14];
    for (d, b) in sa_data.iter_mut().zip(mac) {
        *d = b as libc::c_char;
    }
    ifr.ifr_ifru.ifru_hwaddr = libc::sockaddr {
        sa_family: libc::ARPHRD_ETHER,
        sa_data,
    };
    ifreq_ioctl(name, "set hardware address", libc::SIOCSIFHWADDR, &mut ifr)
}

/// An AF_INET `sockaddr` built field by field (port 0), so no pointer casts are needed to put it
/// into the `ifreq` union.
fn sockaddr_v4(addr: Ipv4Addr) -> libc::sockaddr {
    let mut sa_data = [0 as libc::c_char; 14];
    // sa_data of a sockaddr_in: 2 bytes port, then the address in network order.
    for (d, b) in sa_data[2..6].iter_mut().zip(addr.octets()) {
        *d = b as libc::c_char;
    }
    libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data,
    }
}

/// Sets the primary IPv4 address and its prefix (SIOCSIFADDR then SIOCSIFNETMASK, which also
/// installs the prefix route and adjusts the broadcast address).
pub fn set_ipv4(name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), IfaceError> {
    validate_ifname(name)?;
    if prefix > 32 {
        return Err(IfaceError::InvalidPrefix {
            name: name.to_owned(),
            prefix,
            family: "IPv4",
        });
    }
    let mut ifr = ifreq_named(name);
    ifr.ifr_ifru.ifru_addr = sockaddr_v4(addr);
    ifreq_ioctl(name, "set IPv4 address", libc::SIOCSIFADDR, &mut ifr)?;

    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let mut ifr = ifreq_named(name);
    ifr.ifr_ifru.ifru_netmask = sockaddr_v4(Ipv4Addr::from(mask));
    ifreq_ioctl(name, "set IPv4 netmask", libc::SIOCSIFNETMASK, &mut ifr)
}

/// Adds an IPv6 address with its prefix length (SIOCSIFADDR with `struct in6_ifreq` on an
/// AF_INET6 socket). Fails with EEXIST if the address is already there.
pub fn add_ipv6(name: &str, addr: Ipv6Addr, prefix: u8) -> Result<(), IfaceError> {
    if prefix > 128 {
        return Err(IfaceError::InvalidPrefix {
            name: name.to_owned(),
            prefix,
            family: "IPv6",
        });
    }
    let ifindex = if_index(name)?;
    let mut req = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        ifr6_prefixlen: u32::from(prefix),
        ifr6_ifindex: ifindex as libc::c_int,
    };
    let op = "add IPv6 address";
    let sock = ctl_socket(libc::AF_INET6).map_err(io_err(name, op))?;
    // SAFETY: on an AF_INET6 socket SIOCSIFADDR reads one `struct in6_ifreq`; `req` is one and lives
    // across the call.
    let ret = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFADDR as _,
            &mut req as *mut libc::in6_ifreq,
        )
    };
    cvt(ret).map(drop).map_err(io_err(name, op))
}

/// Owns the list from `getifaddrs` and frees it on drop.
struct IfAddrs(*mut libc::ifaddrs);

impl IfAddrs {
    fn get() -> io::Result<IfAddrs> {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs stores a list head (or NULL) through the valid out-pointer.
        cvt(unsafe { libc::getifaddrs(&mut head) })?;
        Ok(IfAddrs(head))
    }

    /// Calls `f(name, addr)` for each entry carrying an IPv4/IPv6 address.
    fn for_each(&self, mut f: impl FnMut(&CStr, IpAddr)) {
        let mut cur = self.0;
        while !cur.is_null() {
            // SAFETY: `cur` is a non-null node of the list getifaddrs returned, which stays alive
            // until `self` is dropped.
            let ifa = unsafe { &*cur };
            if !ifa.ifa_name.is_null() {
                // SAFETY: `ifa_name` is a non-null NUL-terminated string owned by the list.
                let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
                // SAFETY: `ifa_addr` is NULL or points to a sockaddr owned by the list, sized
                // according to its family.
                if let Some(ip) = unsafe { sockaddr_ip(ifa.ifa_addr) } {
                    f(name, ip);
                }
            }
            cur = ifa.ifa_next;
        }
    }
}

impl Drop for IfAddrs {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from getifaddrs and is freed exactly once, here.
            unsafe { libc::freeifaddrs(self.0) };
        }
    }
}

/// Reads the IP out of a sockaddr of family AF_INET or AF_INET6.
///
/// # Safety
/// `sa` must be NULL or point to a valid sockaddr whose storage is at least as large as its
/// family's struct (true for everything getifaddrs returns).
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null and valid per the caller's contract; `sa_family` is the common prefix.
    let family = unsafe { (*sa).sa_family } as libc::c_int;
    match family {
        libc::AF_INET => {
            // SAFETY: family is AF_INET, so the storage holds a `sockaddr_in`; read unaligned to
            // not rely on the allocation's alignment.
            let sin = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in>()) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: family is AF_INET6, so the storage holds a `sockaddr_in6`.
            let sin6 = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in6>()) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// The interface holding local address `ip`, and its MTU — e.g. to size the TAP MTU as underlay
/// MTU − 50 (IPv4) / − 70 (IPv6). `None` if no interface has that address (or on lookup failure).
pub fn device_for_local_address(ip: IpAddr) -> Option<(String, u32)> {
    let addrs = IfAddrs::get().ok()?;
    let mut found = None;
    addrs.for_each(|name, a| {
        if found.is_none() && a == ip {
            found = Some(name.to_string_lossy().into_owned());
        }
    });
    let name = found?;
    let m = mtu(&name).ok()?;
    Some((name, m))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_v4_layout() {
        let sa = sockaddr_v4(Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(sa.sa_family as i32, libc::AF_INET);
        let bytes: Vec<u8> = sa.sa_data[..6].iter().map(|&c| c as u8).collect();
        assert_eq!(bytes, [0, 0, 192, 0, 2, 7]);
    }

    #[test]
    fn loopback_lookups() {
        // Unprivileged and side-effect free: only reads the loopback device.
        let (name, m) = device_for_local_address(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        assert_eq!(name, "lo");
        assert!(m >= 1280);
        assert_eq!(mtu("lo").unwrap(), m);
        assert!(if_index("lo").unwrap() >= 1);
        assert!(is_up("lo").unwrap());
        assert_eq!(
            device_for_local_address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254))),
            None
        );
        let err = mtu("vxnonexist0").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
        assert!(err.to_string().contains("vxnonexist0"));
    }
}
