//! Frames and networks for the forwarding-core tests.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use vxnet_dataplane::forward::Forwarder;
use vxnet_dataplane::network::{Network, NetworkSettings};
use vxnet_encap::encap::encapsulate_to_vec;
use vxnet_encap::{Encapsulation, MacAddr, Vni};

pub const PORT: u16 = 4789;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn from(s: &str) -> SocketAddr {
    SocketAddr::new(ip(s), 40000)
}

pub fn mac(last: u8) -> MacAddr {
    MacAddr([0x02, 0x42, 0xac, 0x11, 0, last])
}

/// An untagged IPv4 frame of `len` bytes.
pub fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(len, 0x5a);
    f
}

pub fn tagged(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
    let mut f = frame(dst, src, len);
    f.splice(12..12, [0x81, 0x00, 0x00, 0x2a]);
    f.truncate(len);
    f
}

pub fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    encapsulate_to_vec(inner, &Encapsulation::vxlan(Vni::new(vni).unwrap())).unwrap()
}

pub fn settings(name: &str, vni: u32) -> NetworkSettings {
    NetworkSettings {
        name: name.into(),
        vni: Vni::new(vni).unwrap(),
        dev: format!("vx{vni}"),
        mtu: 1450,
        allow_vlan: false,
        learning: true,
        max_fdb: 1024,
        bum_rate: None,
    }
}

pub fn network(vni: u32, remotes: &[&str]) -> Arc<Network> {
    Arc::new(Network::new(
        settings(&format!("net{vni}"), vni),
        ip("10.0.0.1"),
        PORT,
        remotes.iter().map(|r| ip(r)).collect(),
    ))
}

pub fn forwarder(networks: Vec<Arc<Network>>, accept_any: bool) -> Forwarder {
    Forwarder::new(networks, ip("10.0.0.1"), PORT, accept_any)
}
