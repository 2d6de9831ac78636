//! `--prefix` and `--subnet` of `vxnet demo` and `vxnet bench`: the names of the namespaces and
//! links a run creates, and the IPv4 range its underlay and overlay addresses come from; both
//! checked before anything is created, so that a run can sit beside other namespaces and
//! networks on the machine.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use vxnet_dataplane::sys::named_netns::Links;

/// Longest `--prefix`: `PREFIX-a` names a link too, and link names hold 15 bytes.
pub const MAX_PREFIX_LEN: usize = 13;

/// A `--prefix`: letters, digits, `-`, `_` and `.`, not starting with `.` or `-`, at most
/// [`MAX_PREFIX_LEN`] bytes.
pub fn parse_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the prefix is empty".into());
    }
    if text.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "'{text}' is {} bytes long; at most {MAX_PREFIX_LEN}, so that PREFIX-a fits in an \
             interface name (15 bytes)",
            text.len()
        ));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !text.bytes().all(allowed) || text.starts_with(['.', '-']) {
        return Err(format!(
            "'{text}': use letters, digits, '-', '_' and '.' (not first)"
        ));
    }
    Ok(text.to_string())
}

/// A `--subnet`, split into `blocks` equal parts (a power of two), each with room for two hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub net: Ipv4Net,
    block_len: u8,
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.net)
    }
}

impl Subnet {
    /// Parses `text` (host bits are cleared: `10.9.0.5/24` is `10.9.0.0/24`) for a run that
    /// needs `blocks` parts.
    pub fn parse(text: &str, blocks: u32) -> Result<Subnet, String> {
        let net: Ipv4Net = text
            .parse()
            .map_err(|_| format!("'{text}' is not an IPv4 subnet such as 10.99.0.0/24"))?;
        let net = net.trunc();
        let first = net.network();
        if first.is_loopback()
            || first.is_multicast()
            || first.is_broadcast()
            || first.octets()[0] == 0
            || first.octets()[0] >= 240
        {
            return Err(format!(
                "{net} is not a unicast range (loopback, multicast, reserved)"
            ));
        }
        // Each block needs a /30 at least: network, two hosts, broadcast.
        let block_len = net.prefix_len() + blocks.trailing_zeros() as u8;
        if block_len > 30 {
            return Err(format!(
                "{net} is too small: it must split into {blocks} parts of 4 addresses (a /{} \
                 or larger)",
                30 - blocks.trailing_zeros()
            ));
        }
        Ok(Subnet { net, block_len })
    }

    /// Block `i` (0-based) of the subnet.
    pub fn block(&self, i: usize) -> Ipv4Net {
        let size = 1u32 << (32 - self.block_len);
        let start = u32::from(self.net.network()) + size * i as u32;
        Ipv4Net::new(Ipv4Addr::from(start), self.block_len).unwrap_or(self.net)
    }

    /// Host `i` (0 = a, 1 = b) of block `block`: its first and second host addresses.
    pub fn host(&self, block: usize, i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.block(block).network()) + 1 + i as u32)
    }

    /// `ADDR/LEN` of host `i` in block `block`.
    pub fn cidr(&self, block: usize, i: usize) -> String {
        format!("{}/{}", self.host(block, i), self.block_len)
    }

    pub fn block_len(&self) -> u8 {
        self.block_len
    }

    /// Refuses the subnet when it overlaps a route of the calling thread's namespace (the
    /// host's routing tables, default routes aside): the run's addresses would shadow or be
    /// shadowed by a network the host really uses.
    pub fn check_unrouted(&self) -> Result<(), String> {
        let routes = Links::here()
            .and_then(|mut links| links.ipv4_routes())
            .map_err(|e| format!("cannot read this host's routes: {e}"))?;
        match overlapping(self.net, &routes) {
            Some(route) => Err(format!(
                "--subnet {} overlaps this host's route to {route}; choose a free range with \
                 --subnet",
                self.net
            )),
            None => Ok(()),
        }
    }
}

/// The first of `routes` that shares an address with `net`.
fn overlapping(net: Ipv4Net, routes: &[(Ipv4Addr, u8)]) -> Option<Ipv4Net> {
    routes
        .iter()
        .filter_map(|&(dst, len)| Ipv4Net::new(dst, len).ok().map(|r| r.trunc()))
        .find(|route| route.contains(&net.network()) || net.contains(&route.network()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_fit_interface_names() {
        assert_eq!(parse_prefix("vxdemo").unwrap(), "vxdemo");
        assert!(parse_prefix("abcdefghijklm").is_ok()); // 13 bytes
        let long = parse_prefix("abcdefghijklmn").unwrap_err();
        assert!(long.contains("at most 13"), "{long}");
        for bad in ["", "a/b", "a b", ".x", "-x", "é"] {
            assert!(parse_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subnets_split_into_blocks_of_two_hosts() {
        let s = Subnet::parse("192.168.205.7/24", 2).unwrap();
        assert_eq!(s.to_string(), "192.168.205.0/24");
        assert_eq!(s.block(1).to_string(), "192.168.205.128/25");
        assert_eq!(s.host(0, 0), Ipv4Addr::new(192, 168, 205, 1));
        assert_eq!(s.host(1, 1), Ipv4Addr::new(192, 168, 205, 130));
        assert_eq!(s.cidr(1, 0), "192.168.205.129/25");
        let b = Subnet::parse("10.9.0.0/27", 8).unwrap();
        assert_eq!(b.block(7).to_string(), "10.9.0.28/30");
        assert_eq!(b.host(7, 1), Ipv4Addr::new(10, 9, 0, 30));
        assert!(Subnet::parse("10.9.0.0/29", 2).is_ok());
        let small = Subnet::parse("10.9.0.0/30", 2).unwrap_err();
        assert!(
            small.contains("too small") && small.contains("/29"),
            "{small}"
        );
        assert!(Subnet::parse("10.9.0.0/28", 8).is_err());
        for bad in [
            "10.9.0.0",
            "10.9.0.0/33",
            "fd00::/64",
            "x",
            "127.0.0.0/24",
            "224.0.0.0/24",
        ] {
            assert!(Subnet::parse(bad, 2).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlaps_either_way_are_found() {
        let net: Ipv4Net = "10.77.0.0/26".parse().unwrap();
        let wide = [(Ipv4Addr::new(10, 77, 0, 0), 24)];
        assert_eq!(
            overlapping(net, &wide),
            Some("10.77.0.0/24".parse().unwrap())
        );
        let narrow = [(Ipv4Addr::new(10, 77, 0, 9), 32)];
        assert!(overlapping(net, &narrow).is_some());
        let apart = [
            (Ipv4Addr::new(10, 77, 0, 64), 26),
            (Ipv4Addr::new(10, 0, 0, 0), 16),
        ];
        assert_eq!(overlapping(net, &apart), None);
    }
}
