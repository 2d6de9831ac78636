//! The flow hash behind the outer UDP source port.
//!
//! RFC 7348 §5: the source port SHOULD be a hash of the inner headers, in the dynamic range, so
//! that ECMP and RSS in the underlay spread flows while every packet of one flow keeps one port
//! (one path, no reordering). Like the kernel's flow dissector we hash L3 addresses + protocol +
//! L4 ports when there are any, and fall back to the MAC addresses and EtherType otherwise.
//! Fixed-offset reads keep this at a few nanoseconds per frame.

use std::ops::RangeInclusive;

use crate::wire::ethernet::{self, vlan_field, EtherType, VLAN_ID_MASK, VLAN_TAG_LEN};
use crate::wire::{
    at, be16, ipv4, ipv6, Ipv4Packet, Ipv6Packet, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
    IPPROTO_UDPLITE, IPV4_HEADER_LEN, IPV6_HEADER_LEN,
};

/// The dynamic port range the source port is drawn from (RFC 6335).
pub const SOURCE_PORT_RANGE: RangeInclusive<u16> = 49152..=65535;

/// Destination and source MAC: what a frame without IP is hashed by (with its EtherType).
const MAC_BYTES: usize = ethernet::field::SOURCE.end;
const MAX_VLAN_TAGS: usize = 2;
/// Source and destination port: the first four bytes of every protocol [`has_ports`] names.
const PORTS_LEN: usize = 4;

/// FxHash-style absorption with a murmur3 finaliser: cheap per word, full avalanche at the end.
struct FlowHasher(u64);

impl FlowHasher {
    const SEED: u64 = 0x243F_6A88_85A3_08D3;
    const K: u64 = 0x517C_C1B7_2722_0A95;

    fn write(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }

    fn write_bytes(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.write(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    fn finish(self) -> u32 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        h ^= h >> 33;
        h as u32
    }
}

fn has_ports(protocol: u8) -> bool {
    matches!(
        protocol,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE
    )
}

/// A 32-bit hash of the inner frame's flow. Total: any input gives a value.
pub fn flow_hash(frame: &[u8]) -> u32 {
    let mut hasher = FlowHasher(FlowHasher::SEED);
    // Where the EtherType (or the TPID of a tag standing in its place) is.
    let mut offset = ethernet::field::ETHERTYPE.start;
    let mut ethertype = be16(frame, offset);
    let mut tags = 0;
    while let Some(EtherType::VLAN | EtherType::QINQ) = ethertype {
        if tags == MAX_VLAN_TAGS {
            break;
        }
        if let Some(tci) = be16(frame, offset + vlan_field::TCI.start) {
            hasher.write((tci & VLAN_ID_MASK) as u64);
        }
        offset += VLAN_TAG_LEN;
        ethertype = be16(frame, offset);
        tags += 1;
    }
    let l3 = offset + ethernet::field::ETHERTYPE.len();
    match ethertype {
        Some(EtherType::IPV4) if frame.len() >= l3 + IPV4_HEADER_LEN => {
            let ip = Ipv4Packet::new_unchecked(&frame[l3..]);
            let (ihl, protocol) = (ip.header_len(), ip.protocol());
            hasher.write_bytes(&frame[at(l3, ipv4::field::ADDRS)]);
            hasher.write(protocol as u64);
            let l4 = l3 + ihl;
            if !ip.is_fragment()
                && ihl >= IPV4_HEADER_LEN
                && has_ports(protocol)
                && frame.len() >= l4 + PORTS_LEN
            {
                hasher.write_bytes(&frame[l4..l4 + PORTS_LEN]);
            }
        }
        Some(EtherType::IPV6) if frame.len() >= l3 + IPV6_HEADER_LEN => {
            let ip = Ipv6Packet::new_unchecked(&frame[l3..]);
            let next_header = ip.next_header();
            hasher.write_bytes(&frame[at(l3, ipv6::field::ADDRS)]);
            hasher.write(next_header as u64);
            let l4 = l3 + IPV6_HEADER_LEN;
            if has_ports(next_header) && frame.len() >= l4 + PORTS_LEN {
                hasher.write_bytes(&frame[l4..l4 + PORTS_LEN]);
            } else {
                // Without ports the flow label is the sender's own flow identity.
                hasher.write(ip.flow_label() as u64);
            }
        }
        _ => {
            hasher.write_bytes(&frame[..frame.len().min(MAC_BYTES)]);
            hasher.write(ethertype.unwrap_or(0) as u64);
        }
    }
    hasher.finish()
}

/// Maps a hash onto [`SOURCE_PORT_RANGE`] by multiply-shift (as the kernel's
/// `udp_flow_src_port` does), which is uniform without a division.
pub const fn source_port_for(hash: u32) -> u16 {
    let span = (*SOURCE_PORT_RANGE.end() - *SOURCE_PORT_RANGE.start()) as u64 + 1;
    *SOURCE_PORT_RANGE.start() + ((hash as u64 * span) >> 32) as u16
}

/// The outer UDP source port for `frame`.
pub fn source_port(frame: &[u8]) -> u16 {
    source_port_for(flow_hash(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[172, 17, 0, 2, 172, 17, 0, 3]);
        f.extend_from_slice(&src_port.to_be_bytes());
        f.extend_from_slice(&dst_port.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn same_flow_same_port_regardless_of_payload_and_ip_id() {
        let a = tcp_frame(40000, 80, b"hello");
        let mut b = tcp_frame(40000, 80, b"another segment entirely");
        b[14 + 4] = 0x99; // IP ID changes per packet; must not move the flow.
        assert_eq!(source_port(&a), source_port(&b));
    }

    #[test]
    fn different_flows_spread_over_the_range() {
        let mut buckets = [0u32; 16];
        let flows = 16_000u32;
        for port in 0..flows {
            let p = source_port(&tcp_frame(10_000 + port as u16, 80, b""));
            assert!(SOURCE_PORT_RANGE.contains(&p));
            buckets[((p - 49152) / 1024) as usize] += 1;
        }
        // Uniform would be 1000 per bucket; allow generous statistical slack.
        for count in buckets {
            assert!((800..1200).contains(&count), "skewed buckets: {buckets:?}");
        }
    }

    #[test]
    fn range_ends_are_reachable() {
        assert_eq!(source_port_for(0), 49152);
        assert_eq!(source_port_for(u32::MAX), 65535);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_hash_into_range(frame in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            proptest::prop_assert!(SOURCE_PORT_RANGE.contains(&source_port(&frame)));
        }
    }
}
