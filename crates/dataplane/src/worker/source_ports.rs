//! The source-port sockets a worker sends from.

use crate::sys::udp::UdpSocket;

/// The sockets packets leave from, one per stripe of the dynamic port range (RFC 7348 §5: the
/// source port is a hash of the inner flow, in 49152–65535). A flow always maps to one stripe,
/// so it keeps one port; different flows spread over the range for underlay ECMP/RSS.
#[derive(Debug)]
pub(crate) struct SourcePorts {
    sockets: Vec<UdpSocket>,
}

impl SourcePorts {
    pub(crate) fn new(sockets: Vec<UdpSocket>) -> Self {
        SourcePorts { sockets }
    }

    pub(crate) fn len(&self) -> usize {
        self.sockets.len()
    }

    pub(crate) fn ports(&self) -> Vec<u16> {
        self.sockets.iter().map(|s| s.local_addr().port()).collect()
    }

    /// The socket of stripe `index` (see [`stripe_for`]).
    pub(super) fn socket(&self, index: usize) -> Option<&UdpSocket> {
        self.sockets.get(index)
    }
}

/// Which of `stripes` sockets carries an inner flow of hash `hash`: the stripe its hashed port
/// falls in (the rule `vxnet explain` shares, in [`crate::source_port`]).
pub(super) fn stripe_for(hash: u32, stripes: usize) -> usize {
    crate::source_port::index_for(hash, stripes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vxnet_encap::flow::source_port_for;

    #[test]
    fn stripes_follow_the_hashed_port() {
        for hash in [0u32, 1, 0x8000_0000, u32::MAX, 0xdead_beef] {
            let port = source_port_for(hash);
            let stripe = stripe_for(hash, 16);
            // 16 stripes of 1024 ports over 49152–65535.
            assert_eq!(stripe, (port as usize - 49152) / 1024, "hash {hash:#x}");
            assert_eq!(stripe_for(hash, 1), 0);
        }
        assert_eq!(stripe_for(7, 0), 0, "no sockets: index 0, which finds none");
    }
}
