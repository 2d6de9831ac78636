//! What the tunnel-GSO path asks of rtnetlink: the route and neighbour to a VTEP, the ingress
//! redirect of the underlay TAP (`tc qdisc add dev TAP clsact; tc filter add dev TAP ingress
//! u32 match u32 0 0 action mirred egress redirect dev UNDERLAY`), and a subscription to the changes that
//! make any of them stale. Hand-built messages like [`super::rtnetlink`]'s (no netlink crate
//! for a handful of fixed requests); replies are parsed with its attribute walker.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::Socket;

use super::rtnetlink::{error_reply, find_attr, socket, transact, u16_at};

/// nlmsghdr, then the family's fixed header.
const NLMSG_HDR: usize = 16;
const RTMSG_LEN: usize = 12;
const NDMSG_LEN: usize = 12;
const TCMSG_LEN: usize = 20;

/// Attribute types the kernel headers define and the libc crate does not.
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
/// `TCA_U32_SEL`, `TCA_U32_ACT` and `TC_U32_TERMINAL` (linux/pkt_cls.h).
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TC_U32_TERMINAL: u8 = 1;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
const TC_ACT_STOLEN: i32 = 4;
const TCA_EGRESS_REDIR: i32 = 1;
const NLA_F_NESTED: u16 = 0x8000;
/// `TC_H_CLSACT` and its ingress minor (`TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`).
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
const TC_H_CLSACT_INGRESS: u32 = 0xFFFF_FFF2;
/// The priority of the one filter vxnet puts on its underlay TAP.
const FILTER_PRIO: u32 = 1;

/// A message of `kind` with `flags`: header, fixed part, attributes; lengths filled in.
struct Message(Vec<u8>);

impl Message {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Self {
        let mut b = vec![0u8; NLMSG_HDR];
        b[4..6].copy_from_slice(&kind.to_ne_bytes());
        b[6..8].copy_from_slice(&flags.to_ne_bytes());
        b[8..12].copy_from_slice(&1u32.to_ne_bytes());
        b.extend_from_slice(fixed);
        Message(b)
    }

    fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize((self.0.len() + 3) & !3, 0);
        self
    }

    /// Opens a nested attribute; [`Message::close`] writes its length.
    fn open(&mut self, kind: u16) -> usize {
        let at = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn close(&mut self, at: usize) -> &mut Self {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn acked(reply: &[u8]) -> io::Result<()> {
    error_reply(reply).unwrap_or_else(|| Err(io::ErrorKind::InvalidData.into()))
}

fn u32_attr(attrs: &[u8], kind: u16) -> Option<u32> {
    find_attr(attrs, kind)
        .and_then(|v| v.get(..4))
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn reply_of(reply: &[u8], kind: u16, fixed: usize) -> io::Result<&[u8]> {
    if let Some(result) = error_reply(reply) {
        result?;
        return Err(io::ErrorKind::InvalidData.into());
    }
    if u16_at(reply, 4) != Some(kind) || reply.len() < NLMSG_HDR + fixed {
        return Err(io::ErrorKind::InvalidData.into());
    }
    Ok(reply)
}

/// The kernel's answer to `ip route get DST from SRC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    /// `RTN_*`: 1 unicast, 2 local, others (blackhole, unreachable …).
    pub(crate) kind: u8,
    pub(crate) oif: u32,
    /// The next hop when it is not the destination itself.
    pub(crate) gateway: Option<Ipv4Addr>,
}

impl Route {
    pub(crate) fn is_unicast(&self) -> bool {
        self.kind == libc::RTN_UNICAST
    }
}

/// The route the kernel would use from `src` (unspecified: any) to `dst`.
pub(crate) fn route_get(dst: Ipv4Addr, src: Ipv4Addr) -> io::Result<Route> {
    let mut fixed = [0u8; RTMSG_LEN];
    fixed[0] = libc::AF_INET as u8;
    fixed[1] = 32; // rtm_dst_len
    if !src.is_unspecified() {
        fixed[2] = 32; // rtm_src_len
    }
    let mut msg = Message::new(libc::RTM_GETROUTE, libc::NLM_F_REQUEST as u16, &fixed);
    msg.attr(libc::RTA_DST, &dst.octets());
    if !src.is_unspecified() {
        msg.attr(libc::RTA_SRC, &src.octets());
    }
    let reply = transact(&msg.finish(), 4096)?;
    let reply = reply_of(&reply, libc::RTM_NEWROUTE, RTMSG_LEN)?;
    let attrs = &reply[NLMSG_HDR + RTMSG_LEN..];
    Ok(Route {
        kind: reply[NLMSG_HDR + 7],
        oif: u32_attr(attrs, libc::RTA_OIF).ok_or(io::ErrorKind::InvalidData)?,
        gateway: find_attr(attrs, libc::RTA_GATEWAY)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(Ipv4Addr::from),
    })
}

/// A neighbour entry: its hardware address and `NUD_*` state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Neighbour {
    pub(crate) mac: [u8; 6],
    pub(crate) state: u16,
}

impl Neighbour {
    /// Confirmed recently (or never needs confirming): no reason to make the kernel look.
    pub(crate) fn confirmed(&self) -> bool {
        self.state & (libc::NUD_REACHABLE | libc::NUD_PERMANENT | libc::NUD_NOARP) != 0
    }

    /// Holds an address the kernel itself would still send to.
    pub(crate) fn usable(&self) -> bool {
        self.confirmed() || self.state & (libc::NUD_STALE | libc::NUD_DELAY | libc::NUD_PROBE) != 0
    }
}

/// The neighbour entry of `ip` on device `ifindex`; `Ok(None)` when there is none (yet).
pub(crate) fn neighbour(ifindex: u32, ip: Ipv4Addr) -> io::Result<Option<Neighbour>> {
    let mut fixed = [0u8; NDMSG_LEN];
    fixed[0] = libc::AF_INET as u8;
    fixed[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    let mut msg = Message::new(libc::RTM_GETNEIGH, libc::NLM_F_REQUEST as u16, &fixed);
    msg.attr(libc::NDA_DST, &ip.octets());
    let reply = transact(&msg.finish(), 4096)?;
    let reply = match reply_of(&reply, libc::RTM_NEWNEIGH, NDMSG_LEN) {
        Ok(reply) => reply,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let state = u16_at(reply, NLMSG_HDR + 8).unwrap_or(0);
    let mac = find_attr(&reply[NLMSG_HDR + NDMSG_LEN..], libc::NDA_LLADDR)
        .and_then(|v| <[u8; 6]>::try_from(v).ok());
    Ok(mac.map(|mac| Neighbour { mac, state }))
}

fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> [u8; TCMSG_LEN] {
    let mut fixed = [0u8; TCMSG_LEN];
    fixed[0] = libc::AF_UNSPEC as u8;
    fixed[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    fixed[8..12].copy_from_slice(&handle.to_ne_bytes());
    fixed[12..16].copy_from_slice(&parent.to_ne_bytes());
    fixed[16..20].copy_from_slice(&info.to_ne_bytes());
    fixed
}

/// Makes every frame written into device `from` (a TAP's ingress) leave through device `to`
/// unchanged: a `clsact` qdisc (kept if present) and one filter matching everything with a
/// mirred egress redirect (`tc filter add dev FROM ingress prio 1 protocol all u32 match u32 0 0
/// action mirred egress redirect dev TO`). u32 rather than matchall: kernels built without
/// `CONFIG_NET_CLS_MATCHALL` (like the 6.18 vxnet is developed on) have u32.
pub(crate) fn redirect_ingress(from: u32, to: u32) -> io::Result<()> {
    let create = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE) as u16;
    let mut qdisc = Message::new(
        libc::RTM_NEWQDISC,
        create | libc::NLM_F_EXCL as u16,
        &tcmsg(from, 0xFFFF_0000, TC_H_CLSACT, 0),
    );
    qdisc.attr(TCA_KIND, b"clsact\0");
    match acked(&transact(&qdisc.finish(), 1024)?) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        other => other?,
    }
    let protocol = u32::from((libc::ETH_P_ALL as u16).to_be());
    let info = (FILTER_PRIO << 16) | protocol;
    let mut filter = Message::new(
        libc::RTM_NEWTFILTER,
        create | libc::NLM_F_EXCL as u16,
        &tcmsg(from, 0, TC_H_CLSACT_INGRESS, info),
    );
    filter.attr(TCA_KIND, b"u32\0");
    let options = filter.open(TCA_OPTIONS);
    // struct tc_u32_sel (16 bytes: flags, offshift, nkeys, pad, offmask, off, offoff, hoff,
    // hmask) and one all-zero struct tc_u32_key (mask 0, value 0 at offset 0): matches all.
    let mut sel = [0u8; 32];
    sel[0] = TC_U32_TERMINAL;
    sel[2] = 1;
    filter.attr(TCA_U32_SEL, &sel);
    let actions = filter.open(TCA_U32_ACT);
    let first = filter.open(1);
    filter.attr(TCA_ACT_KIND, b"mirred\0");
    let act_options = filter.open(TCA_ACT_OPTIONS);
    // struct tc_mirred: tc_gen (index, capab, action, refcnt, bindcnt), eaction, ifindex.
    let mut parms = [0u8; 28];
    parms[8..12].copy_from_slice(&TC_ACT_STOLEN.to_ne_bytes());
    parms[20..24].copy_from_slice(&TCA_EGRESS_REDIR.to_ne_bytes());
    parms[24..28].copy_from_slice(&to.to_ne_bytes());
    filter.attr(TCA_MIRRED_PARMS, &parms);
    filter
        .close(act_options)
        .close(first)
        .close(actions)
        .close(options);
    acked(&transact(&filter.finish(), 1024)?)
}

/// Whether device `ifindex` still has an ingress filter (vxnet's: nobody else uses its TAP).
pub(crate) fn has_ingress_filter(ifindex: u32) -> io::Result<bool> {
    let msg = Message::new(
        libc::RTM_GETTFILTER,
        (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
        &tcmsg(ifindex, 0, TC_H_CLSACT_INGRESS, 0),
    );
    let sock = socket()?;
    sock.send(&msg.finish())?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut found = false;
    loop {
        let n = (&sock).read(&mut buf)?;
        for (kind, body) in messages(&buf[..n]) {
            match kind {
                k if k == libc::NLMSG_DONE as u16 => return Ok(found),
                k if k == libc::NLMSG_ERROR as u16 => {
                    if let Some(Err(e)) = error_reply(body) {
                        // A device without the clsact qdisc has no ingress to dump.
                        return if e.raw_os_error() == Some(libc::EINVAL) {
                            Ok(false)
                        } else {
                            Err(e)
                        };
                    }
                }
                k if k == libc::RTM_NEWTFILTER => found = true,
                _ => {}
            }
        }
    }
}

/// The messages in one netlink read: (type, the whole message).
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = buf
            .get(0..4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
        if len < NLMSG_HDR || len > buf.len() {
            return None;
        }
        let kind = u16_at(buf, 4)?;
        let msg = &buf[..len];
        buf = buf.get((len + 3) & !3..).unwrap_or(&[]);
        Some((kind, msg))
    })
}

/// One change the kernel announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) kind: u16,
    /// The device it concerns (links, neighbours, tc objects); 0 for routes and addresses.
    pub(crate) ifindex: u32,
}

/// A netlink socket subscribed to link, address, route, neighbour and tc changes of this
/// network namespace.
#[derive(Debug)]
pub(crate) struct Changes {
    sock: Socket,
    buf: Vec<u8>,
}

impl Changes {
    pub(crate) fn subscribe() -> io::Result<Changes> {
        let sock = socket()?;
        let groups = libc::RTMGRP_LINK
            | libc::RTMGRP_NEIGH
            | libc::RTMGRP_TC
            | libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV4_ROUTE;
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = groups as u32;
        // SAFETY: `addr` is a live sockaddr_nl and the length passed is its size.
        let ret = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        super::cvt(ret)?;
        let _ = sock.set_recv_buffer_size(1 << 20);
        Ok(Changes {
            sock,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Waits up to `timeout` for changes. `Ok(None)`: nothing happened. An overflowed socket
    /// (`ENOBUFS`: changes were lost) reports one change of kind 0, meaning "anything".
    pub(crate) fn wait(&mut self, timeout: Duration) -> io::Result<Option<Vec<Change>>> {
        let n = match super::read_within(&self.sock, &mut self.buf, timeout) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(None),
            // A socket with a receive timeout is not restarted after a stop: a debugger or
            // tracer attaching (gdb, strace) interrupts it. Nothing was read.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                return Ok(Some(vec![Change {
                    kind: 0,
                    ifindex: 0,
                }]))
            }
            Err(e) => return Err(e),
        };
        Ok(Some(
            messages(&self.buf[..n])
                .map(|(kind, msg)| {
                    // ifinfomsg, ndmsg and tcmsg all keep the device index at offset 4.
                    let ifindex = match kind {
                        libc::RTM_NEWLINK
                        | libc::RTM_DELLINK
                        | libc::RTM_NEWNEIGH
                        | libc::RTM_DELNEIGH
                        | libc::RTM_NEWQDISC
                        | libc::RTM_DELQDISC
                        | libc::RTM_NEWTFILTER
                        | libc::RTM_DELTFILTER => msg
                            .get(NLMSG_HDR + 4..NLMSG_HDR + 8)
                            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
                        _ => 0,
                    };
                    Change { kind, ifindex }
                })
                .collect(),
        ))
    }
}

/// `IpAddr` → the IPv4 address the tunnel path handles (IPv6 underlays keep the socket path).
pub(crate) fn ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_lengths() {
        let mut m = Message::new(44, 5, &[0; 4]);
        let outer = m.open(2);
        m.attr(1, b"abc\0");
        let inner = m.open(3);
        m.attr(7, &[1, 2, 3, 4, 5]);
        m.close(inner).close(outer);
        let b = m.finish();
        assert_eq!(
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize,
            b.len()
        );
        let attrs = &b[20..];
        let outer = find_attr(attrs, 2).unwrap();
        assert_eq!(find_attr(outer, 1), Some(&b"abc\0"[..]));
        let inner = find_attr(outer, 3).unwrap();
        assert_eq!(find_attr(inner, 7), Some(&[1, 2, 3, 4, 5][..]));
        assert_eq!(messages(&b).count(), 1);
        assert_eq!(messages(&b[..10]).count(), 0);
    }

    #[test]
    fn loopback_routes_are_local() {
        let route = route_get(Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED).unwrap();
        assert_eq!(route.kind, libc::RTN_LOCAL);
        assert!(!route.is_unicast());
    }
}
