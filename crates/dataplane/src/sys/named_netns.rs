//! Named network namespaces made the way iproute2's `ip netns add` makes them: an empty file
//! `/run/netns/NAME` with a new namespace bind-mounted on it. The mount keeps the namespace alive
//! without any process in it, and `ip netns exec NAME …`, `ip -n NAME …` and
//! [`super::enter_named_netns_for_current_thread`] all find it there. Deleting unmounts and
//! removes the file; the kernel frees the namespace, and every link in it, once no process,
//! thread or open fd uses it any more.
//!
//! [`Links`] configures links over rtnetlink in such a namespace (or in the caller's), so that
//! `vxnet demo` builds its hosts without running `ip`.

use std::ffi::{CStr, CString};
use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::link::Netlink;
use super::netns::Netns;
use super::{cvt, unshare_netns_for_current_thread};

/// Where iproute2 keeps named namespaces.
pub const RUN_DIR: &str = "/run/netns";
const RUN_DIR_C: &CStr = c"/run/netns";
/// Longest file name (`NAME_MAX`).
const MAX_NAME_LEN: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum NamedNetnsError {
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("a network namespace named {0} exists already")]
    Exists(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },
}

fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> NamedNetnsError + 'a {
    move |source| NamedNetnsError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// `/run/netns/NAME` for a plain file name.
fn path_of(name: &str) -> Result<PathBuf, NamedNetnsError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 255 bytes")
    } else if name == "." || name == ".." || name.contains(['/', '\0']) {
        Some("not a plain file name")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NamedNetnsError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(Path::new(RUN_DIR).join(name)),
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

fn mount(source: &CStr, target: &CStr, flags: libc::c_ulong) -> io::Result<()> {
    // SAFETY: `source`, `target` and the file system type are NUL-terminated strings alive across
    // the call; a null `data` is allowed for bind mounts and propagation changes, which read none.
    cvt(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            c"none".as_ptr(),
            flags,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// Makes `/run/netns` a shared mount point, as iproute2 does, so that a namespace mounted in it
/// is seen from other mount namespaces (`ip netns exec` runs its command in one) and back.
fn shared_run_dir() -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(RUN_DIR)?;
    let mut bound = false;
    loop {
        match mount(c"", RUN_DIR_C, libc::MS_SHARED | libc::MS_REC) {
            Ok(()) => return Ok(()),
            // EINVAL: not a mount point yet; binding the folder onto itself makes it one.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !bound => {
                mount(RUN_DIR_C, RUN_DIR_C, libc::MS_BIND | libc::MS_REC)?;
                bound = true;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A named network namespace, held open: what acts on it reaches the namespace that was
/// created or checked, whatever happens to the name meanwhile.
#[derive(Debug)]
pub struct NamedNetns {
    name: String,
    ns: Netns,
}

impl NamedNetns {
    /// `ip netns add NAME`: a new, empty network namespace (only `lo`, down). Fails with
    /// [`NamedNetnsError::Exists`] when the name is taken, leaving that namespace alone.
    pub fn create(name: &str) -> Result<NamedNetns, NamedNetnsError> {
        let path = path_of(name)?;
        shared_run_dir().map_err(io_error("preparing", Path::new(RUN_DIR)))?;
        // The mount point, created exclusively: an existing namespace is never replaced.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(NamedNetnsError::Exists(name.to_string()))
            }
            Err(e) => return Err(io_error("creating", &path)(e)),
        }
        let target = c_path(&path).map_err(io_error("creating", &path))?;
        // A thread of its own moves into the new namespace and mounts it; the mount keeps the
        // namespace once the thread is gone, and no other thread ever changes namespace.
        let mounted = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    unshare_netns_for_current_thread()?;
                    mount(c"/proc/thread-self/ns/net", &target, libc::MS_BIND)
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        });
        if let Err(e) = mounted {
            let _ = std::fs::remove_file(&path);
            return Err(io_error("mounting a new network namespace on", &path)(e));
        }
        NamedNetns::open(name)
    }

    /// The existing namespace `name`.
    pub fn open(name: &str) -> Result<NamedNetns, NamedNetnsError> {
        let path = path_of(name)?;
        let ns = Netns::open(&path).map_err(|e| NamedNetnsError::Io {
            what: "opening",
            path: path.display().to_string(),
            source: io::Error::other(e.to_string()),
        })?;
        Ok(NamedNetns {
            name: name.to_string(),
            ns,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A netlink socket inside this namespace (made on a short-lived thread).
    pub fn links(&self) -> io::Result<Links> {
        Ok(Links {
            nl: Netlink::open_in(self.ns.as_fd())?,
        })
    }
}

/// `ip netns del NAME`: unmounts and removes `/run/netns/NAME`. The namespace itself goes when
/// nothing uses it any more. A name that is not there is no error.
pub fn delete(name: &str) -> Result<(), NamedNetnsError> {
    let path = path_of(name)?;
    let c = c_path(&path).map_err(io_error("deleting", &path))?;
    // MNT_DETACH: a thread still inside (or an fd to it) does not keep the name.
    // SAFETY: `c` is a NUL-terminated path alive across the call; umount2(2) reads nothing else.
    match cvt(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) }) {
        // EINVAL: not a mount point (a half-made namespace); ENOENT: not there.
        Err(e) if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {
            return Err(io_error("unmounting", &path)(e));
        }
        _ => {}
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("removing", &path)(e)),
        _ => Ok(()),
    }
}

/// Links, addresses and routes of one namespace, by link name.
#[derive(Debug)]
pub struct Links {
    nl: Netlink,
}

impl Links {
    /// In the calling thread's namespace.
    pub fn here() -> io::Result<Links> {
        Ok(Links {
            nl: Netlink::open()?,
        })
    }

    fn index(&mut self, name: &str) -> io::Result<u32> {
        match self.nl.link_by_name(name)? {
            Some(link) => Ok(link.index),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no link named {name}"),
            )),
        }
    }

    /// `ip link set NAME up`.
    pub fn up(&mut self, name: &str) -> io::Result<()> {
        let index = self.index(name)?;
        self.nl.set_link(index, None, None, Some(true))
    }

    /// `ip addr add ADDR/PREFIX dev NAME`.
    pub fn add_address(&mut self, name: &str, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let index = self.index(name)?;
        self.nl.add_address(index, addr, prefix)
    }

    /// A veth pair, both ends down with `mtu`: `name` here (with `alias`), `peer` created straight
    /// in `peer_ns`, so neither end ever appears in a third namespace. Its MAC is derived from
    /// the two names (locally administered), so a run is reproducible.
    pub fn veth(
        &mut self,
        name: &str,
        alias: &str,
        peer: &str,
        peer_ns: &NamedNetns,
        mtu: u32,
    ) -> io::Result<()> {
        let mac = derived_mac(&[peer_ns.name(), peer]);
        self.nl
            .create_veth(name, alias, peer, peer_ns.ns.as_fd(), mac, mtu)
    }

    /// The MTU of link `name`.
    pub fn mtu(&mut self, name: &str) -> io::Result<u32> {
        match self.nl.link_by_name(name)? {
            Some(link) => Ok(link.mtu),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no link named {name}"),
            )),
        }
    }

    /// Destinations of the namespace's IPv4 routes, without default routes and the `local`
    /// table (which mirrors the addresses the main table routes).
    pub fn ipv4_routes(&mut self) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        self.nl.ipv4_routes()
    }
}

/// A locally administered unicast MAC from an FNV-1a hash of `parts`.
fn derived_mac(parts: &[&str]) -> [u8; 6] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.bytes().chain([0])) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let b = hash.to_be_bytes();
    [0x02, b[1], b[2], b[3], b[4], b[5]]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        assert!(path_of("vxdemo-a").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(
                matches!(path_of(bad), Err(NamedNetnsError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(path_of(&"n".repeat(256)).is_err());
    }

    #[test]
    fn derived_macs_are_local_unicast_and_differ() {
        let a = derived_mac(&["ns-a", "eth0"]);
        assert_eq!(a[0], 0x02);
        assert_ne!(a, derived_mac(&["ns-b", "eth0"]));
        assert_eq!(a, derived_mac(&["ns-a", "eth0"]));
    }

    /// Deletes the test's namespaces, also when an assertion fails.
    struct Delete(Vec<String>);

    impl Drop for Delete {
        fn drop(&mut self) {
            for name in &self.0 {
                let _ = delete(name);
            }
        }
    }

    /// Needs root: two real named namespaces joined by a veth, configured, a route found, deleted.
    #[test]
    fn create_configure_and_delete() {
        let names = ["a", "b"].map(|h| format!("vxnet-unit-{}-{h}", std::process::id()));
        let _delete = Delete(names.to_vec());
        let a = NamedNetns::create(&names[0]).unwrap();
        let b = NamedNetns::create(&names[1]).unwrap();
        assert!(matches!(
            NamedNetns::create(&names[0]),
            Err(NamedNetnsError::Exists(_))
        ));
        let mut links = a.links().unwrap();
        links.veth("va", "vxnet unit", "vb", &b, 1400).unwrap();
        links
            .add_address("va", "10.251.7.1".parse().unwrap(), 24)
            .unwrap();
        links.up("va").unwrap();
        assert_eq!(links.mtu("va").unwrap(), 1400);
        assert_eq!(b.links().unwrap().mtu("vb").unwrap(), 1400);
        let routes = links.ipv4_routes().unwrap();
        assert_eq!(routes, vec![(Ipv4Addr::new(10, 251, 7, 0), 24)]);
        assert!(links.up("no-such-link").is_err());
        for name in &names {
            delete(name).unwrap();
            assert!(!Path::new(RUN_DIR).join(name).exists());
            delete(name).unwrap();
        }
    }
}
