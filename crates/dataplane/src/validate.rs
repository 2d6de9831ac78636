//! Limits of every configurable value and the checks that enforce them, shared by `vxnet run`
//! flags, `--config` files (at start and on reload), networks added at run time and `fdb add`.
//! Each error names the value, what it belongs to and the valid range, so an operator can fix
//! it without reading the source; nothing out of range reaches the kernel (which would answer
//! "Invalid argument" or "Argument list too long" without saying why).

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

use thiserror::Error;

use crate::config::{EngineConfig, NetworkConfig};

/// TAP MTU: the kernel's `ETH_MIN_MTU` (the IPv4 minimum, RFC 791) to `ETH_MAX_MTU`. The upper
/// end is further bounded by the largest outer packet (65535 bytes) minus the VXLAN overhead,
/// checked when the TAP is opened; an MTU above the underlay's is allowed (path-MTU signalling).
pub(crate) const MTU: RangeInclusive<u32> = 68..=65535;
/// Forwarding threads: each takes one queue of every TAP, and the kernel's TUN driver allows at
/// most `MAX_TAP_QUEUES` (256) queues per device; one more fails with E2BIG.
pub(crate) const THREADS: RangeInclusive<usize> = 1..=256;
/// FDB ageing in seconds (the kernel's vxlan default is 300): 0 would expire every learned MAC
/// at once; the top (about 11.5 days) keeps the millisecond clock arithmetic far from overflow.
pub(crate) const AGEING_SECS: RangeInclusive<u64> = 1..=1_000_000;
/// Learned entries per network: at least one, at most 2^20 (a little over 100 MB of table per
/// network at the top; a segment with more stations wants more than one network).
pub(crate) const MAX_FDB: RangeInclusive<usize> = 1..=1 << 20;
/// UDP port: 0 would bind a random port peers cannot know.
pub(crate) const PORT: RangeInclusive<u16> = 1..=65535;
/// Outer source ports (`srcport MIN-MAX`): within this, MIN <= MAX. Below 1024 are the
/// well-known ports a service may need.
pub(crate) const SRCPORT: RangeInclusive<u16> = 1024..=65535;
/// Storm control, frames per second (`bum_rate`; absent: no limit). 0 would flood nothing; past
/// the top a flood is no longer a storm one could tell from traffic.
pub(crate) const BUM_RATE: RangeInclusive<u32> = 1..=100_000_000;
/// The path-MTU floor (`min_pmtu`): the kernel's own floor (`net.ipv4.route.min_pmtu`, 552)
/// up; a floor above the underlay's MTU follows no ICMP at all.
pub(crate) const MIN_PMTU: RangeInclusive<u32> = 552..=65535;
/// The busy-poll window (`busy_poll`), microseconds: 0 (sleep at once) up to 10 ms; past
/// that a worker would hold a core through gaps no exchange of packets has.
pub(crate) const BUSY_POLL_US: RangeInclusive<u32> = 0..=10_000;
/// A fixed outer TTL / hop limit (`ttl`; 0 is `auto`, the system default).
pub(crate) const TTL: RangeInclusive<u8> = 1..=255;
/// A fixed outer TOS / traffic class (`tos`): DSCP only, the two ECN bits 0 (RFC 6040: the
/// outer ECN field stays Not-ECT since vxnet does not copy CE back on decapsulation).
pub(crate) const TOS: RangeInclusive<u8> = 0..=252;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("{what} {value} is out of range (valid: {range})")]
    OutOfRange {
        what: String,
        value: String,
        range: String,
    },
    #[error("network name {0:?} is configured twice")]
    DuplicateName(String),
    #[error("network name {0:?} is not valid: 1-64 characters of a-z, A-Z, 0-9, '.', '_', '-'")]
    BadName(String),
    #[error("{what} {addr} is not a usable VTEP address: {reason}")]
    BadDestination {
        what: &'static str,
        addr: IpAddr,
        reason: &'static str,
    },
    #[error("network {network}: {source}")]
    KeyRing {
        network: String,
        source: crate::keyring::KeyRingError,
    },
    #[error("bridge of network {network}: {source}")]
    BadBridge {
        network: String,
        source: crate::sys::InvalidIfName,
    },
    #[error("bridge {0} is named by two networks (or is another network's TAP)")]
    SharedBridge(String),
    #[error("network {network}: pool {pool} needs a bridge (--bridge, bridge =)")]
    PoolWithoutBridge { network: String, pool: ipnet::IpNet },
    #[error(
        "network {network}: pool {pool} must lie inside the network's address subnet ({subnet})"
    )]
    PoolOutsideSubnet {
        network: String,
        pool: ipnet::IpNet,
        /// The `--address` subnet, or "no address" when there is none.
        subnet: String,
    },
    #[error("network {0}: the bridge must be named differently from the TAP")]
    BridgeIsTap(String),
    #[error("esp-port {0} is the VXLAN port too (they must differ: the engine tells ESP from VXLAN by port)")]
    EspPortIsVxlanPort(u16),
}

fn in_range<T>(
    what: impl Into<String>,
    value: T,
    range: &RangeInclusive<T>,
) -> Result<(), ValidationError>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        return Ok(());
    }
    Err(ValidationError::OutOfRange {
        what: what.into(),
        value: value.to_string(),
        range: format!("{}-{}", range.start(), range.end()),
    })
}

/// The engine-wide values of `config` (networks are checked by [`network`]).
pub(crate) fn engine(config: &EngineConfig) -> Result<(), ValidationError> {
    in_range("threads", config.threads, &THREADS)?;
    in_range("port", config.port, &PORT)?;
    in_range("esp-port", config.esp_port, &PORT)?;
    if config.esp_port == config.port {
        return Err(ValidationError::EspPortIsVxlanPort(config.esp_port));
    }
    in_range("ageing", config.ageing_secs, &AGEING_SECS)?;
    in_range("max-fdb", config.max_fdb, &MAX_FDB)?;
    tuning(&config.tuning)?;
    check_local(config.local)
}

/// `srcport`, `ttl`, `tos` and the default `bum_rate`. Flags and files are checked when parsed
/// (with these ranges); this catches values built in code, e.g. by the cluster control plane.
pub(crate) fn tuning(tuning: &crate::tuning::Tuning) -> Result<(), ValidationError> {
    use vxnet_encap::outer::{TosPolicy, TtlPolicy, ECN_MASK};
    let r = tuning.srcport;
    if !SRCPORT.contains(&r.min) || r.min > r.max {
        return Err(ValidationError::OutOfRange {
            what: "srcport".into(),
            value: r.to_string(),
            range: format!(
                "MIN-MAX within {}-{}, MIN <= MAX",
                SRCPORT.start(),
                SRCPORT.end()
            ),
        });
    }
    if let TtlPolicy::Fixed(ttl) = tuning.outer.ttl {
        in_range("ttl", ttl, &TTL)?;
    }
    if let TosPolicy::Fixed(tos) = tuning.outer.tos {
        if !TOS.contains(&tos) || tos & ECN_MASK != 0 {
            return Err(ValidationError::OutOfRange {
                what: "tos".into(),
                value: format!("{tos:#04x}"),
                range: format!("{}-{} with the ECN bits 0", TOS.start(), TOS.end()),
            });
        }
    }
    if let Some(rate) = tuning.bum_rate {
        in_range("bum-rate", rate, &BUM_RATE)?;
    }
    Ok(())
}

/// One network's own values (the VNI is range-checked when parsed: [`vxnet_encap::Vni`]).
pub(crate) fn network(network: &NetworkConfig) -> Result<(), ValidationError> {
    name(&network.name)?;
    if let Some(mtu) = network.mtu {
        in_range(format!("mtu of network {}", network.name), mtu, &MTU)?;
    }
    if let Some(rate) = network.bum_rate {
        in_range(
            format!("bum_rate of network {}", network.name),
            rate,
            &BUM_RATE,
        )?;
    }
    if let Some(bridge) = &network.bridge {
        crate::sys::validate_ifname(bridge).map_err(|source| ValidationError::BadBridge {
            network: network.name.clone(),
            source,
        })?;
        if *bridge == network.dev {
            return Err(ValidationError::BridgeIsTap(network.name.clone()));
        }
    }
    if let Some(pool) = network.pool {
        if network.bridge.is_none() {
            return Err(ValidationError::PoolWithoutBridge {
                network: network.name.clone(),
                pool,
            });
        }
        let inside = network.address.is_some_and(|a| {
            a.trunc().contains(&pool.trunc()) && pool.prefix_len() >= a.prefix_len()
        });
        if !inside {
            return Err(ValidationError::PoolOutsideSubnet {
                network: network.name.clone(),
                pool,
                subnet: network
                    .address
                    .map_or_else(|| "no address".to_owned(), |a| a.trunc().to_string()),
            });
        }
    }
    if let Some(ring) = &network.encryption {
        ring.validate().map_err(|source| ValidationError::KeyRing {
            network: network.name.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Network names go into log lines, control replies and (in cluster mode) store keys, so they
/// are kept to a plain, printable set.
pub(crate) fn name(name: &str) -> Result<(), ValidationError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::BadName(name.to_string()))
    }
}

/// Names, VNIs and devices are each unique among `networks`.
pub(crate) fn unique_names(networks: &[NetworkConfig]) -> Result<(), ValidationError> {
    for (i, n) in networks.iter().enumerate() {
        if networks[..i].iter().any(|other| other.name == n.name) {
            return Err(ValidationError::DuplicateName(n.name.clone()));
        }
        // Two networks on one bridge would be one broadcast domain.
        if let Some(bridge) = &n.bridge {
            if networks[..i]
                .iter()
                .any(|o| o.bridge.as_ref() == Some(bridge) || o.dev == *bridge)
                || networks[i + 1..].iter().any(|o| o.dev == *bridge)
            {
                return Err(ValidationError::SharedBridge(bridge.clone()));
            }
        }
    }
    Ok(())
}

/// Why `addr` cannot be a unicast VTEP at all (`None` when it can).
fn not_unicast(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) if v4.is_unspecified() => Some("unspecified"),
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("in 0.0.0.0/8 (\"this network\")"),
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("multicast"),
        IpAddr::V4(v4) if v4 == Ipv4Addr::BROADCAST => Some("broadcast"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("IPv4-mapped (give the IPv4 address with an IPv4 --local)")
        }
        _ => None,
    }
}

/// The local VTEP address: unicast (the engine binds and sends from it).
pub(crate) fn check_local(local: IpAddr) -> Result<(), ValidationError> {
    match not_unicast(local) {
        Some(reason) => Err(ValidationError::BadDestination {
            what: "local address",
            addr: local,
            reason,
        }),
        None => Ok(()),
    }
}

/// A destination VTEP (`--remote`, `remotes`, `fdb add --dst`): a unicast address other than
/// this engine's own VTEP. Each destination is also an accepted sender, and a frame sent to our
/// own address or to loopback would come back into our own TAP and teach us our own MACs.
pub(crate) fn destination(
    what: &'static str,
    addr: IpAddr,
    local: IpAddr,
) -> Result<(), ValidationError> {
    let reason = if addr == local {
        Some("it is this engine's own VTEP (--local)")
    } else {
        not_unicast(addr)
    };
    match reason {
        Some(reason) => Err(ValidationError::BadDestination { what, addr, reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn destinations_must_be_unicast_and_not_our_own() {
        let local = ip("10.0.0.1");
        for bad in [
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "239.1.1.1",
            "127.0.0.1",
            "127.9.9.9",
            "10.0.0.1",
        ] {
            let e = destination("fdb destination", ip(bad), local).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        destination("remote", ip("10.0.0.2"), local).unwrap();
        let local6 = ip("fd00::1");
        for bad in ["::", "::1", "ff02::1", "::ffff:10.0.0.2", "fd00::1"] {
            assert!(destination("remote", ip(bad), local6).is_err(), "{bad}");
        }
        destination("remote", ip("fd00::2"), local6).unwrap();
    }

    #[test]
    fn range_errors_name_the_range() {
        let e = in_range("mtu of network blue", 67u32, &MTU).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mtu of network blue 67 is out of range (valid: 68-65535)"
        );
        assert!(in_range("threads", 257usize, &THREADS).is_err());
        assert!(in_range("threads", 256usize, &THREADS).is_ok());
        assert!(in_range("port", 0u16, &PORT).is_err());
    }

    #[test]
    fn names_are_plain() {
        for good in ["blue", "vni42", "a.b_c-d", &"x".repeat(64)] {
            name(good).unwrap();
        }
        for bad in ["", "a b", "a/b", "ünï", &"x".repeat(65), "a\nb"] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
    }
}
