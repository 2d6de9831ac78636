//! Facts about the inner Ethernet frame that forwarding decisions need.
//!
//! The forwarder looks at a handful of fixed offsets per frame, so these are read directly. The
//! full decode for display is `vxnet explain`'s own (in the `vxnet` crate): nothing on the packet
//! path needs it, so this crate has no run-time dependency on a general packet parser.

use crate::error::{DecapError, Layer};
use crate::mac::MacAddr;
use crate::wire::{EtherType, EthernetPacket, ETHERNET_HEADER_LEN};

/// An 802.1Q (or 802.1ad) tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: u16,
    pub priority: u8,
    pub drop_eligible: bool,
    pub vlan_id: u16,
}

/// A checked view of an inner frame: at least an Ethernet header long.
#[derive(Debug, Clone, Copy)]
pub struct InnerFrame<'a> {
    frame: &'a [u8],
}

impl<'a> InnerFrame<'a> {
    pub fn new(frame: &'a [u8]) -> Result<Self, DecapError> {
        EthernetPacket::new_checked(frame, Layer::InnerEthernet)?;
        Ok(InnerFrame { frame })
    }

    fn ethernet(&self) -> EthernetPacket<&'a [u8]> {
        // Length checked in `new`.
        EthernetPacket::new_unchecked(self.frame)
    }

    pub fn destination(&self) -> MacAddr {
        self.ethernet().destination()
    }

    pub fn source(&self) -> MacAddr {
        self.ethernet().source()
    }

    /// The EtherType right after the MAC addresses (0x8100 for a tagged frame).
    pub fn ethertype(&self) -> u16 {
        self.ethernet().ethertype()
    }

    /// Broadcast and multicast destinations are flooded (unknown unicast too, by the caller's FDB).
    pub fn is_flooded_by_address(&self) -> bool {
        self.destination().is_multicast()
    }

    pub fn is_vlan_tagged(&self) -> bool {
        matches!(self.ethertype(), EtherType::VLAN | EtherType::QINQ)
    }

    /// The outermost VLAN tag. `Err` when the frame says it is tagged but is too short to hold
    /// the tag; `Ok(None)` when it is untagged.
    pub fn vlan_tag(&self) -> Result<Option<VlanTag>, DecapError> {
        if !self.is_vlan_tagged() {
            return Ok(None);
        }
        let payload = self.ethernet().payload();
        if payload.len() < 4 {
            return Err(DecapError::Truncated {
                layer: Layer::InnerVlan,
                required: ETHERNET_HEADER_LEN + 4,
                actual: ETHERNET_HEADER_LEN + payload.len(),
            });
        }
        let tci = u16::from_be_bytes([payload[0], payload[1]]);
        Ok(Some(VlanTag {
            tpid: self.ethertype(),
            priority: (tci >> 13) as u8,
            drop_eligible: tci & 0x1000 != 0,
            vlan_id: tci & 0x0FFF,
        }))
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.frame
    }

    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Never true: construction requires an Ethernet header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_a_tagged_broadcast() {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0x42, 0xac, 0x11, 0, 2]);
        frame.extend_from_slice(&[0x81, 0x00, 0xA0, 0x2A, 0x08, 0x06]);
        let inner = InnerFrame::new(&frame).unwrap();
        assert!(inner.destination().is_broadcast());
        assert!(inner.is_flooded_by_address());
        assert_eq!(inner.source().to_string(), "02:42:ac:11:00:02");
        assert!(inner.is_vlan_tagged());
        assert_eq!(
            inner.vlan_tag().unwrap(),
            Some(VlanTag {
                tpid: 0x8100,
                priority: 5,
                drop_eligible: false,
                vlan_id: 42
            })
        );
        assert!(matches!(
            InnerFrame::new(&frame[..16]).unwrap().vlan_tag(),
            Err(DecapError::Truncated {
                layer: Layer::InnerVlan,
                required: 18,
                actual: 16
            })
        ));
    }

    #[test]
    fn short_frame_is_reported() {
        assert_eq!(
            InnerFrame::new(&[0u8; 13]).err(),
            Some(DecapError::Truncated {
                layer: Layer::InnerEthernet,
                required: 14,
                actual: 13
            })
        );
    }
}
