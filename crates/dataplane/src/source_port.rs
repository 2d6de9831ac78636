//! Which outer UDP source port the engine sends a flow from (RFC 7348 §5: a hash of the inner
//! flow, in the dynamic range 49152–65535).
//!
//! The engine does not pick a port per packet: it binds one socket per stripe of the range and
//! sends each flow from the socket of the stripe its hashed port falls in, so every packet of a
//! flow keeps one port and flows spread over the range for underlay ECMP/RSS. The port a flow
//! really leaves from is therefore the port that stripe's socket got: the first free port of the
//! stripe. The workers, the engine's socket set-up and `vxnet explain` all use these functions.

use std::ops::RangeInclusive;

use vxnet_encap::flow::{source_port_for, SOURCE_PORT_RANGE};

/// Source-port sockets per engine: stripes of 1024 ports over 49152–65535.
pub const SOCKETS: usize = 16;

fn span() -> usize {
    (*SOURCE_PORT_RANGE.end() - *SOURCE_PORT_RANGE.start()) as usize + 1
}

/// The ports stripe `k` (of [`SOCKETS`]) binds its socket from, the first free one.
pub fn stripe(k: usize) -> RangeInclusive<u16> {
    let first = *SOURCE_PORT_RANGE.start() as usize;
    let width = span() / SOCKETS;
    let start = first + k * width;
    start as u16..=(start + width - 1) as u16
}

/// The socket (of `sockets` bound) that carries an inner flow with this hash: the stripe its
/// hashed port falls in.
pub fn index_for(hash: u32, sockets: usize) -> usize {
    let offset = (source_port_for(hash) - *SOURCE_PORT_RANGE.start()) as usize;
    (offset * sockets / span()).min(sockets.saturating_sub(1))
}

/// The stripe an engine with all [`SOCKETS`] sockets bound sends this flow from: its first port,
/// unless another program held that port when the engine started.
pub fn stripe_for_flow(hash: u32) -> RangeInclusive<u16> {
    stripe(index_for(hash, SOCKETS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_tile_the_dynamic_range() {
        assert_eq!(stripe(0), 49152..=50175);
        assert_eq!(stripe(5), 54272..=55295);
        assert_eq!(*stripe(SOCKETS - 1).end(), 65535);
        for k in 1..SOCKETS {
            assert_eq!(*stripe(k - 1).end() + 1, *stripe(k).start());
        }
    }

    #[test]
    fn a_flow_is_sent_from_the_stripe_of_its_hashed_port() {
        for hash in [0u32, 1, 0x8000_0000, 0xdead_beef, u32::MAX] {
            let hashed = source_port_for(hash);
            assert!(stripe_for_flow(hash).contains(&hashed), "hash {hash:#x}");
            assert!(index_for(hash, 3) < 3);
        }
    }
}
