//! ARP requests and neighbour solicitations from the TAP answered from the network's
//! neighbour table (see [`crate::neighbors`]) instead of being flooded to every VTEP, and
//! replies that contradict the table dropped.

use std::io::IoSlice;

use vxnet_encap::neighbor::{self, Neighbor, MAX_REPLY_LEN};
use vxnet_encap::offload::ZERO_VNET_HDR;

use crate::counters::Events;
use crate::forward::Forwarder;
use crate::sys::tap::TapQueue;

pub(super) struct NeighborAnswers {
    reply: Box<[u8]>,
}

impl NeighborAnswers {
    pub(super) fn new() -> Self {
        NeighborAnswers {
            reply: vec![0u8; ZERO_VNET_HDR.len() + MAX_REPLY_LEN].into_boxed_slice(),
        }
    }

    /// Looks at `frame`, just read from network `index`'s TAP. True when it was consumed:
    /// answered (the reply written back into the TAP) or dropped as a spoofed claim. False when
    /// it goes on as before (flooded if it is a request for an unknown address).
    pub(super) fn intercept(
        &mut self,
        forwarder: &Forwarder,
        taps: &[TapQueue],
        index: usize,
        vnet_hdr: bool,
        frame: &[u8],
    ) -> bool {
        let Some(network) = forwarder.networks().get(index) else {
            return false;
        };
        // No table (static mode without hosts): not even a parse on the packet path.
        if network.neighbors.is_empty() {
            return false;
        }
        match neighbor::parse(frame) {
            Ok(Neighbor::Request(request)) => {
                let owner = match network.neighbors.lookup(request.target) {
                    // The owner asking about its own address (a conflict check) is not told
                    // it is at its own MAC: that request goes on as it came.
                    Some(owner) if owner.mac != request.requester_mac => owner,
                    _ => {
                        Events::bump(&network.events.neighbor_flooded);
                        return false;
                    }
                };
                if owner.here {
                    // The owner is on the bridge with the TAP and has this request already: it
                    // answers, and nothing goes to the other VTEPs. A reply from here would
                    // leave the TAP with the owner's MAC as its source, and the bridge would
                    // then send the owner's traffic to the TAP instead of to the owner.
                    Events::bump(&network.events.neighbor_answered);
                    return true;
                }
                let head = if vnet_hdr { ZERO_VNET_HDR.len() } else { 0 };
                let Some(len) = neighbor::reply(frame, owner.mac, &mut self.reply[head..]) else {
                    return false;
                };
                self.reply[..head].copy_from_slice(&ZERO_VNET_HDR[..head]);
                super::tap_sink::write_tap(
                    forwarder,
                    taps,
                    index,
                    &[IoSlice::new(&self.reply[..head + len])],
                );
                Events::bump(&network.events.neighbor_answered);
                true
            }
            Ok(Neighbor::Claim { ip, mac }) => {
                let spoofed = network
                    .neighbors
                    .lookup(ip)
                    .is_some_and(|recorded| recorded.mac != mac);
                if spoofed {
                    Events::bump(&network.events.neighbor_spoofed);
                }
                spoofed
            }
            Err(_) => false,
        }
    }
}
