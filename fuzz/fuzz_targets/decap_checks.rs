//! Properties every input must satisfy: no panic anywhere, and whatever the decoders accept is
//! self-consistent (offsets inside the input, inner frame where the offsets say, and a re-wrap of
//! what was accepted decodes to the same VNI and inner frame).

use vxnet_encap::decap::OuterPacket;
use vxnet_encap::encap::encapsulate_to_vec;
use vxnet_encap::wire::{ETHERNET_HEADER_LEN, VXLAN_HEADER_LEN};
use vxnet_encap::{
    decapsulate, decapsulate_ethernet, decapsulate_ip, flow, Encapsulation, InnerFrame, Vni,
    SOURCE_PORT_RANGE,
};

pub fn check(data: &[u8]) {
    if let Ok(d) = decapsulate(data) {
        assert!(d.vni.get() <= Vni::MAX);
        assert!(d.flags & 0x08 != 0, "accepted without the I flag");
        assert!(d.inner.len() >= ETHERNET_HEADER_LEN);
        assert_eq!(d.inner, &data[VXLAN_HEADER_LEN..]);
        let again = encapsulate_to_vec(d.inner, &Encapsulation::vxlan(d.vni))
            .unwrap_or_else(|e| panic!("re-wrap of an accepted frame failed: {e}"));
        let back = decapsulate(&again).unwrap_or_else(|e| panic!("re-wrap does not decode: {e}"));
        assert_eq!((back.vni, back.inner), (d.vni, d.inner));
    }
    if let Ok(p) = decapsulate_ip(data) {
        check_outer(data, &p, 0);
    }
    if let Ok(p) = decapsulate_ethernet(data) {
        assert!(p.ethernet.is_some());
        check_outer(data, &p, ETHERNET_HEADER_LEN);
    }
    if let Ok(inner) = InnerFrame::new(data) {
        let _ = (inner.source(), inner.destination(), inner.ethertype());
        let _ = inner.is_flooded_by_address();
        if let Ok(Some(tag)) = inner.vlan_tag() {
            assert!(tag.vlan_id <= 0x0FFF);
        }
    }
    let port = flow::source_port(data);
    assert!(SOURCE_PORT_RANGE.contains(&port));
    let _ = flow::flow_hash(data);
}

fn check_outer(data: &[u8], p: &OuterPacket<'_>, ip_at: usize) {
    let o = p.offsets;
    assert_eq!(o.ip, ip_at);
    assert!(o.ip < o.udp && o.udp + 8 == o.vxlan && o.vxlan + VXLAN_HEADER_LEN == o.inner);
    assert!(o.inner + ETHERNET_HEADER_LEN <= o.end && o.end <= data.len());
    assert_eq!(p.vxlan.inner, &data[o.inner..o.end]);
    assert!(p.vxlan.vni.get() <= Vni::MAX);
}
