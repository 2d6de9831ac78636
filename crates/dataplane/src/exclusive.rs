//! One engine per underlay address and port. The workers of one engine share the port with
//! SO_REUSEPORT, but the kernel lets *any* socket of the same user join such a group: a second
//! root engine on the same address and port would start without a word and take half of the
//! first one's traffic. So before binding, the engine
//! 1. claims `udp/ADDR:PORT` in its network namespace ([`Claim`]: another vxnet engine
//!    holding it is refused; the claim dies with the process, so a crash leaves nothing), and
//! 2. binds a probe socket *without* SO_REUSEPORT, which fails while anything at all holds the
//!    port (an older vxnet, a kernel vxlan device, any program), then closes it and binds the
//!    workers' sockets.
//!
//! A lock file keyed by address:port would collide across network namespaces (which share the
//! filesystem but not ports) and go stale on a crash; binding the first worker socket without
//! SO_REUSEPORT would keep the other workers out too.

use std::net::SocketAddr;

use crate::sys::claim::Claim;
use crate::sys::udp::{UdpError, UdpOptions, UdpSocket};

/// The engine's receive sockets, one per worker, and the claim that keeps the address theirs.
pub(crate) fn bind_worker_sockets(
    addr: SocketAddr,
    workers: usize,
    buffer_bytes: usize,
) -> Result<(Claim, Vec<UdpSocket>), UdpError> {
    let claim = Claim::take("udp", &addr.to_string()).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            UdpError::ServedByEngine { addr }
        } else {
            UdpError::Setup {
                addr,
                what: "claiming the address",
                source,
            }
        }
    })?;
    drop(UdpSocket::bind(addr, &UdpOptions::default())?);
    let sockets = (0..workers)
        .map(|_| {
            UdpSocket::bind(
                addr,
                &UdpOptions {
                    reuse_port: workers > 1,
                    buffer_bytes,
                    send_only: false,
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((claim, sockets))
}
