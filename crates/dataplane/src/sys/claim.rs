//! Names only one engine may hold at a time within a network namespace: a UDP address:port, a
//! TAP. A claim is an abstract Unix socket bound to `vxnet/KIND/NAME`. Abstract socket names
//! are scoped like the things they guard (per network namespace, so engines in two namespaces
//! never collide), binding one is atomic (a second bind fails with EADDRINUSE), and the kernel
//! releases it when the holder exits however it exits — no lock file, nothing stale to clean
//! up after a crash, nothing on a filesystem that namespaces may or may not share. A state file
//! on that filesystem is held with [`lock_file`] instead.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// A held claim; released on drop.
#[derive(Debug)]
pub(crate) struct Claim {
    // Read by `Debug` (what a log of the claim shows) and the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    name: String,
    _socket: UnixDatagram,
}

impl Claim {
    /// Claims `kind/name` in this thread's network namespace; `ErrorKind::AddrInUse` when
    /// another process (or this one) holds it.
    pub(crate) fn take(kind: &str, name: &str) -> io::Result<Claim> {
        let full = format!("vxnet/{kind}/{name}");
        let address = SocketAddr::from_abstract_name(full.as_bytes())?;
        let socket = UnixDatagram::bind_addr(&address)?;
        Ok(Claim {
            name: full,
            _socket: socket,
        })
    }

    #[cfg(test)]
    fn name(&self) -> &str {
        &self.name
    }
}

/// Locks `file` for this process (an exclusive `flock`, not waiting): `Ok(false)` when another
/// process holds it. For a state file that engines in different network namespaces could share
/// (a claim is per namespace; the filesystem is not): the lock goes with the file's last fd,
/// so a crash leaves nothing stale either.
pub(crate) fn lock_file(file: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a descriptor `file` owns and keeps open for the call; no memory is
    // passed to the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_held_once_until_dropped() {
        let name = format!("test-{}", std::process::id());
        let first = Claim::take("unit", &name).unwrap();
        let second = Claim::take("unit", &name).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
        let other = Claim::take("unit", &format!("{name}-other")).unwrap();
        drop(first);
        let again = Claim::take("unit", &name).unwrap();
        assert_eq!(again.name(), format!("vxnet/unit/{name}"));
        drop(other);
    }
}
