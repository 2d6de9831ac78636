//! Names only one engine may hold at a time within a network namespace: a UDP address:port, a
//! TAP. A claim is an abstract Unix socket bound to `vxnet/KIND/NAME`. Abstract socket names
//! are scoped like the things they guard (per network namespace, so engines in two namespaces
//! never collide), binding one is atomic (a second bind fails with EADDRINUSE), and the kernel
//! releases it when the holder exits however it exits — no lock file, nothing stale to clean
//! up after a crash, nothing on a filesystem that namespaces may or may not share.

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
