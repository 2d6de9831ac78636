//! The source-port sockets a worker sends from.

use crate::sys::udp::UdpSocket;

/// The sockets packets leave from, one per stripe of the dynamic port range (RFC 7348 §5: the
/// source port is a hash of the inner flow, in 49152–65535). A flow always maps to one stripe,
/// so it keeps one port; different flows spread over the range for underlay ECMP/RSS.
#[derive(Debug)]
pub struct SourcePorts {
    pub(super) sockets: Vec<UdpSocket>,
}

impl SourcePorts {
    pub fn new(sockets: Vec<UdpSocket>) -> Self {
        SourcePorts { sockets }
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    pub fn ports(&self) -> Vec<u16> {
        self.sockets.iter().map(|s| s.local_addr().port()).collect()
    }

    /// The socket for an inner flow hash: the stripe its hashed port falls in.
    pub(super) fn index_for(&self, hash: u32) -> usize {
        crate::source_port::index_for(hash, self.sockets.len())
    }
}
