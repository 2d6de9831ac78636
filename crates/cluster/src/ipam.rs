//! Address pools of networks with a `--subnet`: which addresses a subnet hands out and in what
//! order. Claims live under each node's own prefix (`node/<id>/addrs/<network>/<ip>`) and the
//! earliest claim of an address wins (see [`crate::claims`]); host addresses are persistent, so a
//! node that restarts (same node id) gets the address it had. The old layout's
//! `ipam/<network>/<ip>` → node id keys are still read (and still win where they are older).
//!
//! Addresses are handed out round-robin: the next free one after the address handed out last in
//! the network (by any node), so an address just released is not given to the next endpoint
//! while peers' ARP caches still map it to the old MAC.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::records::NetworkDef;
use super::store::Store;
use super::{Error, Result};

/// How many addresses of a subnet are handed out: all of a /16, and a /64 stays finite.
const MAX_CANDIDATES: usize = 1 << 16;

/// The old layout's claims of `network` (read only; see [`crate::claims`]).
pub fn prefix(network: &str) -> String {
    format!("ipam/{network}/")
}

/// The subnet of `def`, if it has one that parses.
pub fn subnet(def: &NetworkDef) -> Result<Option<IpNet>> {
    def.subnet
        .as_deref()
        .map(|s| {
            s.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| Error::Invalid(format!("network {}: bad subnet {s:?}", def.name)))
        })
        .transpose()
}

/// Host addresses of `subnet` in order: IPv4 without the network and broadcast addresses (except
/// in /31 and /32), IPv6 without the subnet-router anycast address.
pub fn candidates(subnet: IpNet) -> impl Iterator<Item = IpAddr> {
    let network = subnet.network();
    let skip_network = matches!(subnet, IpNet::V6(_)) && subnet.prefix_len() < 127;
    subnet
        .hosts()
        .filter(move |ip| !(skip_network && *ip == network))
        .take(MAX_CANDIDATES)
}

/// Whether `ip` is an address of `subnet` a host or endpoint may hold (not its network,
/// broadcast or subnet-router anycast address).
pub fn is_host_address(subnet: IpNet, ip: IpAddr) -> bool {
    if !subnet.contains(&ip) {
        return false;
    }
    let edge = subnet.prefix_len() < subnet.max_prefix_len().saturating_sub(1);
    match subnet {
        IpNet::V4(_) => !edge || (ip != subnet.network() && ip != subnet.broadcast()),
        IpNet::V6(_) => !edge || ip != subnet.network(),
    }
}

/// The first candidate of `subnet` after `last` (wrapping round) that is not `busy`; from the
/// start when `last` is `None` or outside the subnet.
pub fn next_free(subnet: IpNet, last: Option<IpAddr>, busy: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let last = last.filter(|l| subnet.contains(l));
    let after = candidates(subnet).skip_while(move |ip| Some(*ip) <= last);
    let before = candidates(subnet).take_while(move |ip| Some(*ip) <= last);
    after.chain(before).find(|ip| !busy.contains(ip))
}

/// Claims `ip` as `node_id`'s host address on `def` unless another node holds it. True when
/// `node_id` holds it now.
pub async fn claim(store: &Store, def: &NetworkDef, ip: IpAddr, node_id: &str) -> Result<bool> {
    match super::claims::host_address(store, def, node_id, Some(ip)).await {
        Ok(_) => Ok(true),
        Err(Error::AddressTaken { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// This node's address on `def` (with the subnet's prefix length): the one it held before, or a
/// newly claimed free one. `None` when the network has no subnet.
pub async fn address_for(store: &Store, def: &NetworkDef, node_id: &str) -> Result<Option<IpNet>> {
    super::claims::host_address(store, def, node_id, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn candidates_skip_special_addresses() {
        let v4: Vec<IpAddr> = candidates("10.1.0.0/30".parse().unwrap()).collect();
        assert_eq!(v4, vec![ip("10.1.0.1"), ip("10.1.0.2")]);
        let v6: Vec<IpAddr> = candidates("fd00::/126".parse().unwrap()).collect();
        assert_eq!(v6[0], ip("fd00::1"));
        assert_eq!(candidates("10.1.0.0/16".parse().unwrap()).count(), 65534);
    }

    #[test]
    fn round_robin_after_the_last_handed_out() {
        let subnet: IpNet = "10.1.0.0/29".parse().unwrap();
        let busy: BTreeSet<IpAddr> = [ip("10.1.0.1"), ip("10.1.0.3")].into_iter().collect();
        assert_eq!(next_free(subnet, None, &busy), Some(ip("10.1.0.2")));
        // .2 was handed out last and released: not reused while others are free.
        assert_eq!(
            next_free(subnet, Some(ip("10.1.0.2")), &busy),
            Some(ip("10.1.0.4"))
        );
        assert_eq!(
            next_free(subnet, Some(ip("10.1.0.6")), &busy),
            Some(ip("10.1.0.2"))
        );
        // A cursor from another (re-created) subnet starts from the beginning.
        assert_eq!(
            next_free(subnet, Some(ip("10.9.0.1")), &busy),
            Some(ip("10.1.0.2"))
        );
        let full: BTreeSet<IpAddr> = candidates(subnet).collect();
        assert_eq!(next_free(subnet, Some(ip("10.1.0.2")), &full), None);
        // A /16 holds 65534 endpoints, and the last one is found.
        let big: IpNet = "10.2.0.0/16".parse().unwrap();
        assert_eq!(
            next_free(big, Some(ip("10.2.255.253")), &BTreeSet::new()),
            Some(ip("10.2.255.254"))
        );
        assert_eq!(
            next_free(big, Some(ip("10.2.255.254")), &BTreeSet::new()),
            Some(ip("10.2.0.1"))
        );
    }

    #[test]
    fn host_addresses_exclude_network_and_broadcast() {
        let s: IpNet = "10.1.0.0/24".parse().unwrap();
        assert!(is_host_address(s, ip("10.1.0.1")));
        assert!(!is_host_address(s, ip("10.1.0.0")));
        assert!(!is_host_address(s, ip("10.1.0.255")));
        assert!(!is_host_address(s, ip("10.1.1.1")));
        assert!(is_host_address(
            "10.1.0.0/31".parse().unwrap(),
            ip("10.1.0.0")
        ));
        assert!(!is_host_address("fd00::/64".parse().unwrap(), ip("fd00::")));
        assert!(is_host_address("fd00::/64".parse().unwrap(), ip("fd00::1")));
    }
}
