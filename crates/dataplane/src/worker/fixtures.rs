//! What the worker's unit tests plan and send with: one network, VNI 42, on a forwarder.

use std::sync::Arc;

use vxnet_encap::Vni;

use crate::forward::Forwarder;
use crate::network::{Network, NetworkSettings};

pub(super) const PORT: u16 = 4789;

/// A forwarder at `local` serving VNI 42 (TAP MTU `mtu`) that floods to `peers`.
pub(super) fn forwarder(local: &str, peers: &[&str], mtu: u32) -> Forwarder {
    let local = local.parse().unwrap();
    let settings = NetworkSettings {
        name: "blue".into(),
        vni: Vni::new(42).unwrap(),
        dev: "vx42".into(),
        mtu,
        allow_vlan: false,
        learning: true,
        max_fdb: 1024,
        bum_rate: None,
    };
    let peers = peers.iter().map(|p| p.parse().unwrap()).collect();
    let network = Network::new(settings, local, PORT, peers);
    Forwarder::new(vec![Arc::new(network)], local, PORT, false)
}
