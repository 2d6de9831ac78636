//! Checks of the values an attach request carries, before anything is created: each refusal
//! names the value and why, as one line.

use std::net::IpAddr;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::EndpointError;

/// A name or alias: one DNS label as the network's DNS service takes it
/// ([`vxnet_names::valid_label`]: letters, digits, hyphens and `_`, 1-63 bytes). No dots: a dot
/// would make a subdomain of the network's zone.
pub(crate) fn label(name: &str) -> Result<(), EndpointError> {
    vxnet_names::valid_label(name).map_err(|_| EndpointError::BadName(crate::text::printable(name)))
}

/// A container id (CNI: letters, digits, `_`, `.`, `-`; not empty). Bounded so records stay
/// small.
pub(super) fn container_id(id: &str) -> Result<(), EndpointError> {
    let ok = (1..=256).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EndpointError::BadContainerId(crate::text::printable(id)))
    }
}

/// An address asked for: CIDR with the network's prefix (a bare address takes it), inside
/// the subnet, not its own, broadcast or gateway address.
pub(super) fn address(text: &str, gateway: IpNet) -> Result<IpAddr, EndpointError> {
    let subnet = gateway.trunc();
    let bad = |why: String| EndpointError::BadAddress {
        address: crate::text::printable(text),
        why,
    };
    let (addr, prefix) = match text.parse::<IpNet>() {
        Ok(net) => (net.addr(), Some(net.prefix_len())),
        Err(_) => match text.parse::<IpAddr>() {
            Ok(addr) => (addr, None),
            Err(_) => return Err(bad("not an address in CIDR form".into())),
        },
    };
    if !subnet.contains(&addr) {
        return Err(bad(format!("outside the network's subnet {subnet}")));
    }
    if prefix.is_some_and(|p| p != subnet.prefix_len()) {
        return Err(bad(format!(
            "the network's prefix is /{}",
            subnet.prefix_len()
        )));
    }
    if addr == gateway.addr() {
        return Err(bad("that is the gateway (this host's address)".into()));
    }
    if let IpNet::V4(v4) = subnet {
        if subnet.prefix_len() < 31
            && (addr == IpAddr::V4(v4.network()) || addr == IpAddr::V4(v4.broadcast()))
        {
            return Err(bad("the subnet's own or broadcast address".into()));
        }
    }
    Ok(addr)
}

/// The endpoint's id: the first 16 hex digits of SHA-256 over the network, what identifies the
/// container (its id, or its namespace) and the interface name.
pub(super) fn endpoint_id(network: &str, owner: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{network}\0{owner}\0{ifname}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The host-side veth of endpoint `id`: `vxe` and 12 hex digits (15 bytes, the kernel's most).
pub(super) fn host_ifname(id: &str) -> String {
    format!("vxe{}", &id[..12.min(id.len())])
}

/// A MAC for endpoint `id` that stays the same when it is attached again: locally
/// administered unicast.
pub(super) fn stable_mac(id: &str) -> [u8; 6] {
    derived_mac(&format!("vxnet-endpoint-mac\0{id}"))
}

/// A locally administered unicast MAC from a hash of `seed`.
pub(crate) fn derived_mac(seed: &str) -> [u8; 6] {
    vxnet_encap::MacAddr::derived(seed.as_bytes()).0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for good in ["web", "redis-1", "a", "db_2", &"x".repeat(63)] {
            assert!(label(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "a.b", "a b", "ä", &"x".repeat(64), "a\nb"] {
            assert!(label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_checked_against_the_subnet() {
        let gw: IpNet = "10.5.0.1/24".parse().unwrap();
        assert_eq!(
            address("10.5.0.7/24", gw).unwrap(),
            "10.5.0.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            address("10.5.0.8", gw).unwrap(),
            "10.5.0.8".parse::<IpAddr>().unwrap()
        );
        for bad in [
            "10.6.0.7/24",
            "10.5.0.7/16",
            "10.5.0.1/24",
            "10.5.0.255",
            "10.5.0.0/24",
            "x",
            "fd00::1/64",
        ] {
            assert!(address(bad, gw).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_names_and_macs_are_stable_and_fit() {
        let id = endpoint_id("blue", "cid:abc", "eth0");
        assert_eq!(id.len(), 16);
        assert_eq!(id, endpoint_id("blue", "cid:abc", "eth0"));
        assert_ne!(id, endpoint_id("blue", "cid:abc", "eth1"));
        assert_eq!(host_ifname(&id).len(), 15);
        let mac = stable_mac(&id);
        assert_eq!(mac[0] & 0x03, 0x02);
    }
}
