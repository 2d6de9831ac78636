//! The source-port sockets a worker sends from.

use vxnet_encap::flow::{source_port_for, SOURCE_PORT_RANGE};
use vxnet_encap::outer::OuterPolicy;

use crate::sys::udp::UdpSocket;

/// The sockets packets leave from, one per stripe of the dynamic port range (RFC 7348 §5: the
/// source port is a hash of the inner flow, in 49152–65535). A flow always maps to one stripe,
/// so it keeps one port; different flows spread over the range for underlay ECMP/RSS.
///
/// DF is a socket property: with `df inherit` every stripe has a second socket without DF.
#[derive(Debug)]
pub struct SourcePorts {
    pub(super) sockets: Vec<UdpSocket>,
    /// The sockets without DF, when the policy needs both kinds (`df inherit`); stripe `k` is
    /// socket `sockets.len() + k`.
    no_df: Vec<UdpSocket>,
    policy: OuterPolicy,
}

impl SourcePorts {
    pub fn new(sockets: Vec<UdpSocket>, no_df: Vec<UdpSocket>, policy: OuterPolicy) -> Self {
        SourcePorts {
            sockets,
            no_df,
            policy,
        }
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

    /// The outer DF / TTL / TOS policy these sockets were set up for.
    pub fn policy(&self) -> &OuterPolicy {
        &self.policy
    }

    /// The socket for an inner flow hash: the stripe its hashed port falls in, with DF or not.
    pub(super) fn index_for(&self, hash: u32, df: bool) -> usize {
        let span = (*SOURCE_PORT_RANGE.end() - *SOURCE_PORT_RANGE.start()) as usize + 1;
        let offset = (source_port_for(hash) - *SOURCE_PORT_RANGE.start()) as usize;
        let stripe = (offset * self.sockets.len() / span).min(self.sockets.len().saturating_sub(1));
        if !df && stripe < self.no_df.len() {
            self.sockets.len() + stripe
        } else {
            stripe
        }
    }

    pub(super) fn socket(&self, index: usize) -> Option<&UdpSocket> {
        self.sockets
            .get(index)
            .or_else(|| self.no_df.get(index.checked_sub(self.sockets.len())?))
    }
}
