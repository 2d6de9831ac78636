//! Which outer UDP source port the engine sends a flow from, for tools that show it (`vxnet
//! explain`) and must agree with the workers.
//!
//! Every flow leaves from the port its inner-flow hash picks in the engine's `srcport` range
//! (default 49152–65535): the workers bind one socket per port on demand (see
//! `worker::source_ports`). The one exception is a port another program held when the flow's
//! socket was opened; the flow then leaves from the next free port after it.

use std::ops::RangeInclusive;

use crate::tuning::SourcePortRange;

/// The source port of a flow with inner-flow hash `hash` (`vxnet_encap::flow_hash`) in `range`.
pub fn port_for_flow(hash: u32, range: &SourcePortRange) -> u16 {
    range.port_for(hash)
}

/// The ports a flow with this hash may leave from under the default range, as a range: since
/// the source port became exact per flow this is that single port. Kept for callers written
/// when the engine had one socket per 1024-port stripe.
pub fn stripe_for_flow(hash: u32) -> RangeInclusive<u16> {
    let port = port_for_flow(hash, &SourcePortRange::default());
    port..=port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_range_agrees_with_the_encap_crates_mapping() {
        for hash in [0u32, 1, 0x8000_0000, 0xdead_beef, u32::MAX] {
            let port = vxnet_encap::source_port_for(hash);
            assert_eq!(port_for_flow(hash, &SourcePortRange::default()), port);
            assert_eq!(stripe_for_flow(hash), port..=port);
        }
    }
}
