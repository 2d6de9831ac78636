//! Network namespaces named by a path (`/run/netns/NAME`, `/proc/PID/ns/net`), held as file
//! descriptors so that every later step acts on the namespace that was checked, never on
//! whatever the path points to by then.
//!
//! A path from a control request is hostile until proven otherwise: it is first opened with
//! `O_PATH` (which opens nothing: no FIFO blocks, no device driver runs), must be a file of the
//! namespace filesystem, must be a network namespace (`NS_GET_NSTYPE`), and must not be the
//! engine's own namespace; only then is it reopened readable for `setns(2)` and
//! `IFLA_NET_NS_FD`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::cvt;

/// `NSFS_MAGIC` (linux/magic.h).
const NSFS_MAGIC: libc::c_long = 0x6e73_6673;
/// `NS_GET_NSTYPE` = `_IO(0xb7, 0x3)` (linux/nsfs.h).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Why a path does not name a usable network namespace.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetnsError {
    #[error("no network namespace at {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("{path} is not a network namespace")]
    NotNetns { path: String },
    #[error("{path} is the engine's own network namespace")]
    OwnNamespace { path: String },
}

/// An open network namespace and its identity (device and inode of its nsfs file: two paths
/// to one namespace give the same identity).
#[derive(Debug)]
pub(crate) struct Netns {
    fd: OwnedFd,
    pub(crate) id: NetnsId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NetnsId {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl std::fmt::Display for NetnsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn open_raw(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated path alive across the call; open(2) passes no other memory.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by open(2) and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn identity(fd: BorrowedFd<'_>) -> io::Result<NetnsId> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the call and `st` is a valid, exclusively borrowed stat buffer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(NetnsId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

fn is_nsfs(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: `statfs` is plain old data; all-zero is a valid value for fstatfs to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the call and `st` is a valid, exclusively borrowed buffer.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_type as libc::c_long == NSFS_MAGIC)
}

/// The identity of the calling thread's network namespace.
pub(crate) fn own_netns_id() -> io::Result<NetnsId> {
    let fd = open_raw(Path::new("/proc/thread-self/ns/net"), libc::O_RDONLY)?;
    identity(fd.as_fd())
}

impl Netns {
    /// Opens and checks the namespace at `path` (see the module documentation).
    pub(crate) fn open(path: &Path) -> Result<Netns, NetnsError> {
        let shown = || path.display().to_string();
        let open_err = |source| NetnsError::Open {
            path: shown(),
            source,
        };
        if !path.is_absolute() {
            return Err(open_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an absolute path",
            )));
        }
        let probe = open_raw(path, libc::O_PATH).map_err(open_err)?;
        if !is_nsfs(probe.as_fd()).map_err(open_err)? {
            return Err(NetnsError::NotNetns { path: shown() });
        }
        // The same file, now readable (setns needs that); it is an nsfs file, so opening it
        // has no side effect.
        let reopen = Path::new("/proc/self/fd").join(probe.as_raw_fd().to_string());
        let fd = open_raw(&reopen, libc::O_RDONLY).map_err(open_err)?;
        if !is_nsfs(fd.as_fd()).map_err(open_err)? {
            return Err(NetnsError::NotNetns { path: shown() });
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and returns the CLONE_NEW* type; `fd` is an
        // open nsfs file (checked above), the only kind of file this request number is for.
        let kind =
            cvt(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) }).map_err(open_err)?;
        if kind != libc::CLONE_NEWNET {
            return Err(NetnsError::NotNetns { path: shown() });
        }
        let id = identity(fd.as_fd()).map_err(open_err)?;
        if own_netns_id().map_err(open_err)? == id {
            return Err(NetnsError::OwnNamespace { path: shown() });
        }
        Ok(Netns { fd, id })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_other_network_namespaces_open() {
        assert!(matches!(
            Netns::open(Path::new("/proc/self/ns/net")),
            Err(NetnsError::OwnNamespace { .. })
        ));
        assert!(matches!(
            Netns::open(Path::new("/proc/self/ns/uts")),
            Err(NetnsError::NotNetns { .. })
        ));
        assert!(matches!(
            Netns::open(Path::new("/dev/null")),
            Err(NetnsError::NotNetns { .. })
        ));
        assert!(matches!(
            Netns::open(Path::new("/nonexistent/netns")),
            Err(NetnsError::Open { .. })
        ));
        assert!(matches!(
            Netns::open(Path::new("relative")),
            Err(NetnsError::Open { .. })
        ));
    }
}
