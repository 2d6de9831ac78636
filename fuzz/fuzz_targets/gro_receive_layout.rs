//! Where the headers of an inner frame are, read independently of the code under test (shared
//! by the `gro_receive` checks).

use vxnet_encap::checksum::{self, Sum};

const ETHERNET: usize = 14;

/// Where the headers of an Ethernet [+ 802.1Q] + IPv4/IPv6 + TCP/UDP frame are: an independent
/// reading of the layout, so the checks do not trust the code they check.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub l3: usize,
    pub ipv6: bool,
    pub l4: usize,
    pub tcp: bool,
    /// End of the TCP/UDP header.
    pub hdr_len: usize,
    /// End of the IP packet.
    pub end: usize,
}

impl Layout {
    pub fn parse(frame: &[u8]) -> Option<Layout> {
        let be16 = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
        let mut l3 = ETHERNET;
        let mut ethertype = be16(12)?;
        if ethertype == 0x8100 {
            l3 += 4;
            ethertype = be16(16)?;
        }
        let (ipv6, protocol, l4, end) = match ethertype {
            0x0800 => {
                let vihl = *frame.get(l3)?;
                let ihl = usize::from(vihl & 0x0F) * 4;
                let total = usize::from(be16(l3 + 2)?);
                let fragment = be16(l3 + 6)? & 0x3FFF != 0;
                if vihl >> 4 != 4 || ihl < 20 || total < ihl || fragment {
                    return None;
                }
                (false, *frame.get(l3 + 9)?, l3 + ihl, l3 + total)
            }
            0x86DD => {
                if *frame.get(l3)? >> 4 != 6 {
                    return None;
                }
                let payload = usize::from(be16(l3 + 4)?);
                (true, *frame.get(l3 + 6)?, l3 + 40, l3 + 40 + payload)
            }
            _ => return None,
        };
        let hdr_len = match protocol {
            6 => l4 + usize::from(*frame.get(l4 + 12)? >> 4) * 4,
            17 => l4 + 8,
            _ => return None,
        };
        let min_hdr_len = l4 + if protocol == 6 { 20 } else { 8 };
        if end > frame.len() || hdr_len > end || hdr_len < min_hdr_len {
            return None;
        }
        Some(Layout {
            l3,
            ipv6,
            l4,
            tcp: protocol == 6,
            hdr_len,
            end,
        })
    }

    pub fn checksum_field(&self) -> usize {
        self.l4 + if self.tcp { 16 } else { 6 }
    }

    pub fn pseudo_header(&self, frame: &[u8]) -> Sum {
        let addrs = if self.ipv6 {
            &frame[self.l3 + 8..self.l3 + 40]
        } else {
            &frame[self.l3 + 12..self.l3 + 20]
        };
        Sum::new()
            .add_bytes(addrs)
            .add_u16(if self.tcp { 6 } else { 17 })
            .add_u32((self.end - self.l4) as u32)
    }

    /// The IPv4 header checksum (if IPv4) and the TCP/UDP checksum verify.
    pub fn checksums_verify(&self, frame: &[u8]) -> bool {
        let ip_ok = self.ipv6 || checksum::verifies(Sum::new().add_bytes(&frame[self.l3..self.l4]));
        ip_ok && self.l4_checksum_verifies(frame)
    }

    pub fn l4_checksum_verifies(&self, frame: &[u8]) -> bool {
        let sum = self
            .pseudo_header(frame)
            .add_bytes(&frame[self.l4..self.end]);
        checksum::verifies(sum)
    }
}
