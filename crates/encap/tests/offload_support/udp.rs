//! UDP datagrams as a sender's socket makes them, and the kernel's cut of a `GSO_UDP_L4`
//! superframe written to a TAP (`__udp_gso_segment`), written here independently of the crate.

use super::*;

/// One datagram of a flow: IPv4 with DF and ID `BASE_ID + index` (a connected socket's), or IPv6.
#[derive(Clone, Copy)]
pub struct Dgram {
    pub v6: bool,
    pub sport: u16,
    pub index: u16,
}

impl Dgram {
    pub fn v4(index: u16) -> Self {
        Dgram {
            v6: false,
            sport: 40000,
            index,
        }
    }
    pub fn v6(index: u16) -> Self {
        Dgram {
            v6: true,
            ..Self::v4(index)
        }
    }
}

/// An Ethernet + IP + UDP frame with valid checksums.
pub fn udp_frame(d: Dgram, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let mut out = Vec::new();
    if d.v6 {
        eth.ipv6(V6_A, V6_B, 64)
            .udp(d.sport, 5301)
            .write(&mut out, payload)
            .unwrap();
    } else {
        eth.ipv4(V4_A, V4_B, 64)
            .udp(d.sport, 5301)
            .write(&mut out, payload)
            .unwrap();
        out[18..20].copy_from_slice(&BASE_ID.wrapping_add(d.index).to_be_bytes());
        out[20..22].copy_from_slice(&0x4000u16.to_be_bytes());
        refresh_ipv4_checksum(&mut out);
    }
    out
}

/// `count` datagrams of one flow, `size` payload bytes each (distinct contents), the last
/// `last` bytes long.
pub fn flow(v6: bool, count: usize, size: usize, last: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let len = if i + 1 == count { last } else { size };
            let d = Dgram {
                v6,
                ..Dgram::v4(i as u16)
            };
            udp_frame(d, &payload_of(len, i as u8))
        })
        .collect()
}

/// The UDP checksum a correct sender puts in `frame` (etherparse's, not the crate's).
pub fn udp_checksum_of(frame: &[u8]) -> u16 {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        panic!("not UDP")
    };
    match p.net.as_ref().unwrap() {
        NetSlice::Ipv4(ip) => udp
            .to_header()
            .calc_checksum_ipv4_raw(
                ip.header().source(),
                ip.header().destination(),
                udp.payload(),
            )
            .unwrap(),
        NetSlice::Ipv6(ip) => udp
            .to_header()
            .calc_checksum_ipv6_raw(
                ip.header().source(),
                ip.header().destination(),
                udp.payload(),
            )
            .unwrap(),
        NetSlice::Arp(_) => panic!("arp"),
    }
}

/// Cuts a coalescer's `GSO_UDP_L4` write the way the kernel does: checks the virtio-net header
/// (and that the checksum field holds the pseudo-header sum), then per `gso_size` of payload the
/// headers with the IP and UDP lengths set, IPv4 ID first + index, both checksums computed.
pub fn kernel_split(write: &[u8]) -> Vec<Vec<u8>> {
    let hdr = VirtioNetHdr::parse(write).unwrap();
    let sf = &write[VIRTIO_NET_HDR_LEN..];
    let v6 = u16::from_be_bytes([sf[12], sf[13]]) == 0x86dd;
    let l4 = l4_offset(v6);
    assert_eq!(hdr.flags, VirtioNetHdr::FLAG_NEEDS_CSUM);
    assert_eq!(hdr.gso_type, VirtioNetHdr::GSO_UDP_L4);
    assert_eq!(usize::from(hdr.csum_start), l4);
    assert_eq!(hdr.csum_offset, 6);
    assert_eq!(usize::from(hdr.hdr_len), l4 + 8);
    let gso = usize::from(hdr.gso_size);
    let udp_len = sf.len() - l4;
    assert_eq!(
        usize::from(u16::from_be_bytes([sf[l4 + 4], sf[l4 + 5]])),
        udp_len
    );
    // What Linux leaves for CHECKSUM_PARTIAL: the folded pseudo-header sum, not complemented.
    let pseudo = if v6 {
        pseudo_header_v6(V6_A.into(), V6_B.into(), 17, udp_len as u32)
    } else {
        pseudo_header_v4(V4_A.into(), V4_B.into(), 17, udp_len as u32)
    };
    assert_eq!(u16::from_be_bytes([sf[l4 + 6], sf[l4 + 7]]), pseudo.fold());
    // The kernel's own limits on such a TAP write (virtio_net_hdr_to_skb, __udp_gso_segment).
    assert!(udp_len - 8 <= gso * 64);
    assert!(
        udp_len > 8 + gso,
        "a GSO_UDP_L4 skb of one segment is refused"
    );
    let first_id = u16::from_be_bytes([sf[18], sf[19]]);
    sf[l4 + 8..]
        .chunks(gso)
        .enumerate()
        .map(|(i, payload)| {
            let mut f = sf[..l4 + 8].to_vec();
            f.extend_from_slice(payload);
            let len = (8 + payload.len()) as u16;
            f[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
            if v6 {
                f[18..20].copy_from_slice(&len.to_be_bytes());
            } else {
                f[16..18].copy_from_slice(&(20 + len).to_be_bytes());
                f[18..20].copy_from_slice(&first_id.wrapping_add(i as u16).to_be_bytes());
                refresh_ipv4_checksum(&mut f);
            }
            let c = udp_checksum_of(&f);
            f[l4 + 6..l4 + 8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
            f
        })
        .collect()
}

/// What the host gets from the coalescer's writes, as frames: superframes cut by
/// [`kernel_split`], single datagrams unwrapped, as-is frames unchanged.
pub fn delivered(writes: &[(bool, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (coalesced, bytes) in writes {
        if !coalesced {
            out.push(bytes.clone());
        } else if bytes[..VIRTIO_NET_HDR_LEN] == [0; VIRTIO_NET_HDR_LEN] {
            out.push(bytes[VIRTIO_NET_HDR_LEN..].to_vec());
        } else {
            out.extend(kernel_split(bytes));
        }
    }
    out
}

/// The UDP coalescer's fast path must decide exactly like the full checks.
pub fn assert_udp_fast_path_agrees(frames: &[Vec<u8>]) {
    let mut fast = UdpCoalescer::default();
    let mut full = UdpCoalescer::default();
    full.set_fast_path(false);
    let a = coalesce_all(&mut fast, frames);
    let b = coalesce_all(&mut full, frames);
    assert_eq!(a, b);
    assert_eq!(fast.stats(), full.stats());
}
