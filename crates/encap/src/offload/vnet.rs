//! `struct virtio_net_hdr` (10 bytes, no `num_buffers`), as a TAP opened with `IFF_VNET_HDR` puts
//! in front of every frame it returns and expects in front of every frame written to it.
//!
//! The fields are in the *host's* byte order (the legacy virtio convention TUN uses unless
//! `TUNSETVNETLE/BE` is called), hence `from_ne_bytes`. On a TAP, `csum_start` and `hdr_len` count
//! from the start of the Ethernet header.

use std::ops::Range;

use crate::error::{Layer, OffloadError};

/// Size of `struct virtio_net_hdr` (the engine must set `TUNSETVNETHDRSZ` to this, the default).
pub const VIRTIO_NET_HDR_LEN: usize = 10;

/// A header that claims nothing: no checksum offload, no GSO. Frames the coalescer does not merge
/// go to the TAP behind this header and the kernel verifies their checksums itself.
pub const ZERO_VNET_HDR: [u8; VIRTIO_NET_HDR_LEN] = [0; VIRTIO_NET_HDR_LEN];

pub mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Range<usize> = 2..4;
    pub const GSO_SIZE: Range<usize> = 4..6;
    pub const CSUM_START: Range<usize> = 6..8;
    pub const CSUM_OFFSET: Range<usize> = 8..10;
}

/// The parsed `virtio_net_hdr`. Plain data: every combination of values is representable, and
/// [`prepare_for_wire`](super::prepare_for_wire) decides which ones it accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// The checksum from `csum_start` to the end still has to be computed and stored at
    /// `csum_start + csum_offset`; that field holds the folded pseudo-header sum meanwhile.
    pub const FLAG_NEEDS_CSUM: u8 = 1;
    /// The checksum has been verified (receive side only).
    pub const FLAG_DATA_VALID: u8 = 2;

    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    pub const GSO_UDP: u8 = 3;
    pub const GSO_TCPV6: u8 = 4;
    pub const GSO_UDP_L4: u8 = 5;
    /// Or-ed into `gso_type`: the superframe carries CWR, which must stay on the first segment.
    pub const GSO_ECN: u8 = 0x80;

    /// Parses the first [`VIRTIO_NET_HDR_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, OffloadError> {
        match bytes.get(..VIRTIO_NET_HDR_LEN) {
            Some(b) => {
                let mut a = [0u8; VIRTIO_NET_HDR_LEN];
                a.copy_from_slice(b);
                Ok(Self::from_bytes(a))
            }
            None => Err(OffloadError::Truncated {
                layer: Layer::VirtioNet,
                required: VIRTIO_NET_HDR_LEN,
                actual: bytes.len(),
            }),
        }
    }

    pub const fn from_bytes(b: [u8; VIRTIO_NET_HDR_LEN]) -> Self {
        // Host byte order, unlike every wire header (see the module docs).
        const fn ne16(b: &[u8; VIRTIO_NET_HDR_LEN], field: Range<usize>) -> u16 {
            u16::from_ne_bytes([b[field.start], b[field.start + 1]])
        }
        VirtioNetHdr {
            flags: b[field::FLAGS],
            gso_type: b[field::GSO_TYPE],
            hdr_len: ne16(&b, field::HDR_LEN),
            gso_size: ne16(&b, field::GSO_SIZE),
            csum_start: ne16(&b, field::CSUM_START),
            csum_offset: ne16(&b, field::CSUM_OFFSET),
        }
    }

    pub fn to_bytes(&self) -> [u8; VIRTIO_NET_HDR_LEN] {
        let mut b = [0u8; VIRTIO_NET_HDR_LEN];
        b[field::FLAGS] = self.flags;
        b[field::GSO_TYPE] = self.gso_type;
        b[field::HDR_LEN].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[field::GSO_SIZE].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[field::CSUM_START].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[field::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Writes the header into the first [`VIRTIO_NET_HDR_LEN`] bytes of `out`.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), OffloadError> {
        let available = out.len();
        match out.get_mut(..VIRTIO_NET_HDR_LEN) {
            Some(b) => {
                b.copy_from_slice(&self.to_bytes());
                Ok(())
            }
            None => Err(OffloadError::OutputTooSmall {
                required: VIRTIO_NET_HDR_LEN,
                available,
            }),
        }
    }

    pub const fn needs_csum(&self) -> bool {
        self.flags & Self::FLAG_NEEDS_CSUM != 0
    }

    /// `gso_type` without the ECN bit.
    pub const fn gso_kind(&self) -> u8 {
        self.gso_type & !Self::GSO_ECN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_native_endian() {
        let hdr = VirtioNetHdr {
            flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
            gso_type: VirtioNetHdr::GSO_TCPV4 | VirtioNetHdr::GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let bytes = hdr.to_bytes();
        assert_eq!(&bytes[4..6], &1448u16.to_ne_bytes());
        assert_eq!(VirtioNetHdr::parse(&bytes), Ok(hdr));
        assert_eq!(hdr.gso_kind(), VirtioNetHdr::GSO_TCPV4);
        assert!(hdr.needs_csum());
    }

    #[test]
    fn short_input_and_output_are_errors() {
        for len in 0..VIRTIO_NET_HDR_LEN {
            assert_eq!(
                VirtioNetHdr::parse(&vec![0; len]),
                Err(OffloadError::Truncated {
                    layer: Layer::VirtioNet,
                    required: 10,
                    actual: len
                })
            );
            assert_eq!(
                VirtioNetHdr::default().emit(&mut vec![0; len]),
                Err(OffloadError::OutputTooSmall {
                    required: 10,
                    available: len
                })
            );
        }
    }
}
