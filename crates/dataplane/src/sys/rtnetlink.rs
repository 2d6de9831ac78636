//! The two link requests no ioctl covers, each one hand-built rtnetlink message (no netlink
//! dependency for two messages): setting `gso_max_segs`, and reading a device's state: its
//! carrier, which for a TUN/TAP device is on exactly while some process has a queue attached
//! (the driver turns it on at TUNSETIFF and off when the last queue closes) — whether the device
//! is up or not — and its counters.
//!
//! A netlink socket talks to the network namespace of the thread that created it, so both
//! work for engines running on a thread inside another namespace (unlike `/sys/class/net`,
//! which shows the namespace sysfs was mounted in).

use std::io::{self, Read};

use socket2::{Domain, Protocol, Socket, Type};

/// `IFLA_CARRIER`, `IFLA_LINKINFO` and, nested in the latter, `IFLA_INFO_KIND`
/// (linux/if_link.h); not in the libc crate.
const IFLA_CARRIER: u16 = 33;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
/// `IFLA_ADDRESS` and `IFLA_MTU` (linux/if_link.h).
const IFLA_ADDRESS: u16 = 1;
const IFLA_MTU: u16 = 4;
/// `IFLA_STATS64` (linux/if_link.h): a `struct rtnl_link_stats64` of u64 counters, in which
/// `tx_dropped` is the eighth.
const IFLA_STATS64: u16 = 23;
const STATS64_TX_DROPPED: usize = 7 * 8;
/// nlmsghdr (16 bytes) then ifinfomsg (16 bytes); attributes follow.
const LINK_HEADER_LEN: usize = 32;

pub(super) fn socket() -> io::Result<Socket> {
    Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::RAW.cloexec(),
        Some(Protocol::from(libc::NETLINK_ROUTE)),
    )
}

/// A link message (`RTM_NEWLINK`, `RTM_GETLINK`) for device `index` with one optional u32
/// attribute; native endian, as netlink is.
fn link_message(kind: u16, flags: u16, index: u32, attr: Option<(u16, u32)>) -> Vec<u8> {
    let len = LINK_HEADER_LEN + if attr.is_some() { 8 } else { 0 };
    let mut msg = vec![0u8; len];
    msg[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&kind.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
    msg[16] = libc::AF_UNSPEC as u8; // ifi_family
    msg[20..24].copy_from_slice(&(index as i32).to_ne_bytes()); // ifi_index
    if let Some((kind, value)) = attr {
        msg[32..34].copy_from_slice(&8u16.to_ne_bytes()); // rta_len
        msg[34..36].copy_from_slice(&kind.to_ne_bytes());
        msg[36..40].copy_from_slice(&value.to_ne_bytes());
    }
    msg
}

/// Sends `msg` to the kernel (port id 0: no address needed) and returns the first reply.
pub(super) fn transact(msg: &[u8], reply_capacity: usize) -> io::Result<Vec<u8>> {
    let sock = socket()?;
    sock.send(msg)?;
    let mut reply = vec![0u8; reply_capacity];
    let n = (&sock).read(&mut reply)?;
    reply.truncate(n);
    Ok(reply)
}

pub(super) fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    buf.get(at..at + 2)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
}

/// `Some(Err)` for an NLMSG_ERROR reply carrying a negative errno, `Some(Ok)` for one carrying
/// 0 (an acknowledgement), `None` for any other message.
pub(super) fn error_reply(reply: &[u8]) -> Option<io::Result<()>> {
    if u16_at(reply, 4)? != libc::NLMSG_ERROR as u16 {
        return None;
    }
    let code = reply
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))?;
    Some(if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-code))
    })
}

/// The payload of the first attribute of type `kind` in `attrs` (rtattr list, 4-aligned).
pub(super) fn find_attr(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0)?);
        let this = u16_at(attrs, 2)? & 0x3fff; // without NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if len < 4 || len > attrs.len() {
            return None;
        }
        if this == kind {
            return Some(&attrs[4..len]);
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

/// `ip link set DEV gso_max_segs SEGS` for device `index`, acknowledged by the kernel.
pub(crate) fn set_gso_max_segs(index: u32, segs: u32) -> io::Result<()> {
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let msg = link_message(
        libc::RTM_NEWLINK,
        flags,
        index,
        Some((libc::IFLA_GSO_MAX_SEGS, segs)),
    );
    error_reply(&transact(&msg, 256)?).unwrap_or_else(|| Err(io::ErrorKind::InvalidData.into()))
}

/// What `RTM_GETLINK` says about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub carrier: bool,
    /// The rtnetlink kind (`tun` for TUN/TAP, `veth`, `vxlan` …); `None` for devices without
    /// one (physical NICs, `lo`).
    pub kind: Option<String>,
    /// `ARPHRD_*` (1 for Ethernet, 772 for loopback).
    pub link_type: u16,
    /// IFF_UP.
    pub up: bool,
    pub mtu: Option<u32>,
    /// The hardware address, when it is an Ethernet one.
    pub mac: Option<[u8; 6]>,
    /// The device's `tx_dropped` counter (for a TAP: frames dropped because the queue towards
    /// the process reading it was full).
    pub tx_dropped: Option<u64>,
}

/// The carrier, kind and counters of device `index`.
pub(crate) fn link_state(index: u32) -> io::Result<LinkState> {
    let msg = link_message(libc::RTM_GETLINK, libc::NLM_F_REQUEST as u16, index, None);
    // A link dump of one device: statistics and all attributes, a few kB.
    let reply = transact(&msg, 64 * 1024)?;
    if let Some(result) = error_reply(&reply) {
        result?;
        return Err(io::ErrorKind::InvalidData.into());
    }
    if u16_at(&reply, 4) != Some(libc::RTM_NEWLINK) || reply.len() < LINK_HEADER_LEN {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let attrs = &reply[LINK_HEADER_LEN..];
    let carrier = match find_attr(attrs, IFLA_CARRIER) {
        Some([value, ..]) => *value != 0,
        _ => return Err(io::ErrorKind::InvalidData.into()),
    };
    let kind = find_attr(attrs, IFLA_LINKINFO)
        .and_then(|info| find_attr(info, IFLA_INFO_KIND))
        .map(|k| String::from_utf8_lossy(k.split(|&b| b == 0).next().unwrap_or(k)).into_owned());
    let link_type = u16_at(&reply, 18).unwrap_or(0);
    let flags = reply
        .get(24..28)
        .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let mtu = find_attr(attrs, IFLA_MTU)
        .and_then(|v| v.get(..4))
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let mac = find_attr(attrs, IFLA_ADDRESS).and_then(|v| <[u8; 6]>::try_from(v).ok());
    let tx_dropped = find_attr(attrs, IFLA_STATS64)
        .and_then(|v| v.get(STATS64_TX_DROPPED..STATS64_TX_DROPPED + 8))
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_ne_bytes);
    Ok(LinkState {
        carrier,
        kind,
        link_type,
        up: flags & libc::IFF_UP as u32 != 0,
        mtu,
        mac,
        tx_dropped,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_found_and_bad_lengths_stop_the_walk() {
        // rta(len 5, type 3, one byte) + padding, rta(len 8, type 33, u32 1)
        let mut attrs = vec![5, 0, 3, 0, 0xaa, 0, 0, 0];
        attrs.extend_from_slice(&[8, 0, 33, 0, 1, 0, 0, 0]);
        let attrs: Vec<u8> = attrs
            .chunks(2)
            .flat_map(|c| {
                let v = u16::from_le_bytes([c[0], c[1]]);
                v.to_ne_bytes()
            })
            .collect();
        assert_eq!(find_attr(&attrs, 3), Some(&attrs[4..5]));
        assert_eq!(find_attr(&attrs, 33).map(|v| v[0]), Some(1));
        assert_eq!(find_attr(&attrs, 7), None);
        assert_eq!(find_attr(&[200, 0, 33, 0], 33), None);
        assert_eq!(find_attr(&[], 33), None);
    }

    #[test]
    fn loopback_is_no_tap() {
        // Every namespace has `lo` at index 1: no rtnetlink kind.
        let lo = link_state(1).unwrap();
        assert_eq!(lo.kind, None);
        assert!(lo.tx_dropped.is_some(), "no IFLA_STATS64 for lo");
        assert!(link_state(u32::MAX >> 1).is_err());
    }
}
