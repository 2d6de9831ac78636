//! What goes into the outer IP header besides the addresses: the DF bit, the TTL (hop limit) and
//! the TOS (traffic class), as iproute2's `ip link add type vxlan df … ttl … tos …` set them.
//!
//! A fixed value applies to every packet and is a socket option; `inherit` is per packet and is
//! read here from the inner frame (an inner IPv4 or IPv6 header, after up to two VLAN tags).
//! The kernel's `vxlan_xmit_one` is the reference: with `df inherit` an inner IPv6 packet or an
//! inner IPv4 packet with DF gets DF, anything else (ARP, IPv4 without DF) does not; `ttl
//! inherit` takes the inner TTL / hop limit and falls back to the default for non-IP frames;
//! `tos inherit` takes the inner DSCP (0 for non-IP).
//!
//! ECN: the outer ECN bits stay Not-ECT. Copying ECT from the inner header (RFC 6040) is only
//! right when the decapsulator copies a CE mark back inwards, and a peer that does not would
//! erase the router's congestion signal; a Not-ECT outer packet is dropped rather than marked,
//! which the inner TCP sees as well.

use std::fmt;
use std::str::FromStr;

use crate::wire::EtherType;

/// The two ECN bits of a TOS / traffic-class byte.
pub const ECN_MASK: u8 = 0x03;

/// The outer DF bit (`df set|unset|inherit`). Over an IPv6 underlay, which has no DF bit, `set`
/// means the sender never fragments (IPV6_DONTFRAG) and `unset` lets it fragment at the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DfPolicy {
    /// DF on every packet: oversize packets are refused, never fragmented (RFC 7348 §4.3).
    #[default]
    Set,
    /// DF clear: routers on the path may fragment.
    Unset,
    /// DF from the inner packet (set for IPv6 and for IPv4 with DF, clear otherwise).
    Inherit,
}

/// The outer TTL / hop limit (`ttl N|auto|inherit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TtlPolicy {
    /// The system default (`net.ipv4.ip_default_ttl`, the route's hoplimit).
    #[default]
    Auto,
    /// This value, 1–255.
    Fixed(u8),
    /// The inner packet's TTL / hop limit; the default for non-IP frames.
    Inherit,
}

/// The outer TOS / traffic class (`tos N|inherit`): the DSCP bits; ECN stays Not-ECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TosPolicy {
    /// This value, ECN bits zero (0, 4, …, 252).
    Fixed(u8),
    /// The inner packet's DSCP (0 for non-IP frames).
    Inherit,
}

impl Default for TosPolicy {
    fn default() -> Self {
        TosPolicy::Fixed(0)
    }
}

/// The outer header policy of an engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OuterPolicy {
    pub df: DfPolicy,
    pub ttl: TtlPolicy,
    pub tos: TosPolicy,
}

/// The outer fields of one packet. `None` leaves the field to the socket (a fixed value or the
/// default): only `inherit` produces per-packet values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterFields {
    pub df: bool,
    pub ttl: Option<u8>,
    pub tos: Option<u8>,
}

/// The header fields `inherit` reads from an inner IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerIp {
    pub ipv6: bool,
    pub ttl: u8,
    /// The TOS / traffic-class byte, ECN included.
    pub tos: u8,
    /// IPv4 DF (always false for IPv6, which has none).
    pub df: bool,
}

const MAC_BYTES: usize = 12;
const MAX_VLAN_TAGS: usize = 2;

/// The inner IPv4/IPv6 header's TTL, TOS and DF, after up to two VLAN tags; `None` for non-IP
/// frames and frames too short to hold the fields.
pub fn inner_ip(frame: &[u8]) -> Option<InnerIp> {
    let be16 = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    let mut offset = MAC_BYTES;
    let mut ethertype = be16(offset)?;
    for _ in 0..MAX_VLAN_TAGS {
        if !matches!(ethertype, EtherType::VLAN | EtherType::QINQ) {
            break;
        }
        offset += 4;
        ethertype = be16(offset)?;
    }
    let l3 = frame.get(offset + 2..)?;
    match ethertype {
        EtherType::IPV4 if l3.len() >= 20 && l3[0] >> 4 == 4 => Some(InnerIp {
            ipv6: false,
            ttl: l3[8],
            tos: l3[1],
            df: l3[6] & 0x40 != 0,
        }),
        EtherType::IPV6 if l3.len() >= 40 && l3[0] >> 4 == 6 => Some(InnerIp {
            ipv6: true,
            ttl: l3[7],
            tos: (l3[0] << 4) | (l3[1] >> 4),
            df: false,
        }),
        _ => None,
    }
}

impl OuterPolicy {
    /// Whether any field is taken from the inner packet (per-packet work and control messages).
    pub fn inherits(&self) -> bool {
        self.df == DfPolicy::Inherit
            || self.ttl == TtlPolicy::Inherit
            || self.tos == TosPolicy::Inherit
    }

    /// DF for a packet when the policy does not depend on it; `None` for `inherit`.
    pub fn fixed_df(&self) -> Option<bool> {
        match self.df {
            DfPolicy::Set => Some(true),
            DfPolicy::Unset => Some(false),
            DfPolicy::Inherit => None,
        }
    }

    /// The outer fields for the packet carrying `frame` (for a superframe: every segment of it,
    /// since all share the inner header's TTL, TOS and DF).
    pub fn fields(&self, frame: &[u8]) -> OuterFields {
        if !self.inherits() {
            return OuterFields {
                df: self.df == DfPolicy::Set,
                ttl: None,
                tos: None,
            };
        }
        let inner = inner_ip(frame);
        OuterFields {
            df: match self.df {
                DfPolicy::Set => true,
                DfPolicy::Unset => false,
                DfPolicy::Inherit => inner.is_some_and(|ip| ip.ipv6 || ip.df),
            },
            ttl: match self.ttl {
                TtlPolicy::Inherit => inner.map(|ip| ip.ttl).filter(|ttl| *ttl > 0),
                _ => None,
            },
            tos: match self.tos {
                TosPolicy::Inherit => Some(inner.map_or(0, |ip| ip.tos & !ECN_MASK)),
                TosPolicy::Fixed(_) => None,
            },
        }
    }
}

/// A value that does not parse; the message names what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyParseError(String);

impl FromStr for DfPolicy {
    type Err = PolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "set" => Ok(DfPolicy::Set),
            "unset" => Ok(DfPolicy::Unset),
            "inherit" => Ok(DfPolicy::Inherit),
            _ => Err(PolicyParseError(format!(
                "invalid df {s:?}: expected set, unset or inherit"
            ))),
        }
    }
}

impl fmt::Display for DfPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DfPolicy::Set => "set",
            DfPolicy::Unset => "unset",
            DfPolicy::Inherit => "inherit",
        })
    }
}

/// A number in decimal or `0x` hex, as iproute2 takes them.
fn parse_u8(s: &str) -> Option<u8> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl FromStr for TtlPolicy {
    type Err = PolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inherit" => Ok(TtlPolicy::Inherit),
            // iproute2: "0 or auto means use whatever default value".
            "auto" | "0" => Ok(TtlPolicy::Auto),
            _ => match parse_u8(s) {
                Some(ttl) if ttl > 0 => Ok(TtlPolicy::Fixed(ttl)),
                _ => Err(PolicyParseError(format!(
                    "invalid ttl {s:?}: expected 1-255, auto (or 0) or inherit"
                ))),
            },
        }
    }
}

impl fmt::Display for TtlPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TtlPolicy::Auto => f.write_str("auto"),
            TtlPolicy::Fixed(ttl) => write!(f, "{ttl}"),
            TtlPolicy::Inherit => f.write_str("inherit"),
        }
    }
}

impl FromStr for TosPolicy {
    type Err = PolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "inherit" {
            return Ok(TosPolicy::Inherit);
        }
        match parse_u8(s) {
            Some(tos) if tos & ECN_MASK == 0 => Ok(TosPolicy::Fixed(tos)),
            Some(_) => Err(PolicyParseError(format!(
                "invalid tos {s:?}: its two low (ECN) bits must be 0, i.e. DSCP x 4 in 0-252"
            ))),
            None => Err(PolicyParseError(format!(
                "invalid tos {s:?}: expected 0-252 (DSCP x 4, decimal or 0x hex) or inherit"
            ))),
        }
    }
}

impl fmt::Display for TosPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TosPolicy::Fixed(tos) => write!(f, "{tos:#04x}"),
            TosPolicy::Inherit => f.write_str("inherit"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ipv4(tos: u8, ttl: u8, df: bool) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let flags = if df { 0x40 } else { 0 };
        f.extend_from_slice(&[0x45, tos, 0, 20, 0, 1, flags, 0, ttl, 17, 0, 0]);
        f.extend_from_slice(&[10, 1, 0, 1, 10, 1, 0, 2]);
        f
    }

    fn ipv6(tclass: u8, hops: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(&[0x60 | (tclass >> 4), tclass << 4, 0, 0, 0, 0, 17, hops]);
        f.extend_from_slice(&[0; 32]);
        f
    }

    fn tagged(mut untagged: Vec<u8>) -> Vec<u8> {
        let ethertype = [untagged[12], untagged[13]];
        untagged.splice(12..14, [0x81, 0x00, 0x00, 0x05, ethertype[0], ethertype[1]]);
        untagged
    }

    const INHERIT: OuterPolicy = OuterPolicy {
        df: DfPolicy::Inherit,
        ttl: TtlPolicy::Inherit,
        tos: TosPolicy::Inherit,
    };

    #[test]
    fn inherit_reads_ipv4_and_ipv6_behind_tags() {
        let f = INHERIT.fields(&ipv4(0xb9, 17, true));
        assert_eq!(
            f,
            OuterFields {
                df: true,
                ttl: Some(17),
                tos: Some(0xb8)
            }
        );
        let f = INHERIT.fields(&tagged(ipv4(0x20, 3, false)));
        assert_eq!(
            f,
            OuterFields {
                df: false,
                ttl: Some(3),
                tos: Some(0x20)
            }
        );
        // IPv6 has no DF bit: like the kernel, inherit sets DF for it.
        let f = INHERIT.fields(&ipv6(0x2e, 9));
        assert_eq!(
            f,
            OuterFields {
                df: true,
                ttl: Some(9),
                tos: Some(0x2c)
            }
        );
    }

    #[test]
    fn inherit_falls_back_for_non_ip() {
        let arp = [
            vec![0xff; 6],
            vec![2, 0, 0, 0, 0, 1],
            vec![0x08, 0x06],
            vec![0; 28],
        ]
        .concat();
        let f = INHERIT.fields(&arp);
        assert_eq!(
            f,
            OuterFields {
                df: false,
                ttl: None,
                tos: Some(0)
            }
        );
        // Truncated IPv4 header: treated as non-IP, no panic.
        let f = INHERIT.fields(&ipv4(0, 64, true)[..20]);
        assert!(!f.df);
        assert_eq!(inner_ip(&[]), None);
    }

    #[test]
    fn fixed_policies_leave_values_to_the_socket() {
        let policy = OuterPolicy {
            df: DfPolicy::Unset,
            ttl: TtlPolicy::Fixed(9),
            tos: TosPolicy::Fixed(0x10),
        };
        assert!(!policy.inherits());
        assert_eq!(
            policy.fields(&ipv4(0xff, 1, true)),
            OuterFields {
                df: false,
                ttl: None,
                tos: None
            }
        );
        assert!(OuterPolicy::default().fields(&[]).df);
    }

    #[test]
    fn parsing_follows_iproute2_names_and_ranges() {
        assert_eq!("inherit".parse::<DfPolicy>(), Ok(DfPolicy::Inherit));
        assert!("on".parse::<DfPolicy>().is_err());
        assert_eq!("0".parse::<TtlPolicy>(), Ok(TtlPolicy::Auto));
        assert_eq!("255".parse::<TtlPolicy>(), Ok(TtlPolicy::Fixed(255)));
        assert_eq!("0x40".parse::<TtlPolicy>(), Ok(TtlPolicy::Fixed(64)));
        let e = "256".parse::<TtlPolicy>().unwrap_err().to_string();
        assert!(e.contains("1-255"), "{e}");
        assert_eq!("0xb8".parse::<TosPolicy>(), Ok(TosPolicy::Fixed(0xb8)));
        let e = "3".parse::<TosPolicy>().unwrap_err().to_string();
        assert!(e.contains("ECN"), "{e}");
        assert!("x".parse::<TosPolicy>().is_err());
        for text in ["set", "unset", "inherit"] {
            assert_eq!(text.parse::<DfPolicy>().unwrap().to_string(), text);
        }
        assert_eq!(TtlPolicy::Fixed(9).to_string(), "9");
        assert_eq!(TosPolicy::Fixed(0xb8).to_string(), "0xb8");
    }
}
