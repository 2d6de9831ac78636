//! Link, address and route requests over rtnetlink, for bridge mode and endpoint plumbing:
//! creating a bridge and veth pairs (the peer straight into another network namespace by fd),
//! ports, MTUs, aliases, addresses, the default route, deleting links, and listing them.
//!
//! Hand-built like [`super::rtnetlink`] (whose attribute walk it shares): the project keeps no
//! netlink crate, and the dozen fixed-shape messages below are each a few lines of
//! attribute appends. A [`Netlink`] socket talks to the namespace it was created in, so a
//! socket made by [`Netlink::open_in`] configures a container's namespace without this
//! process ever switching its own threads' namespaces for longer than the one `socket(2)`.

use std::io::{self, Read};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::Socket;

use super::rtnetlink::{error_reply, find_attr, socket, u16_at};

// linux/if_link.h, linux/veth.h, linux/rtnetlink.h values not all in the libc crate.
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NLA_F_NESTED: u16 = 0x8000;
/// nlmsghdr is 16 bytes; ifinfomsg 16; ifaddrmsg 8; rtmsg 12.
const NLMSG_HDR: usize = 16;
const IFINFO_LEN: usize = 16;
const RTMSG_LEN: usize = 12;
/// `RTA_DST` and `RTA_TABLE` (linux/rtnetlink.h).
const RTA_DST: u16 = 1;
const RTA_TABLE: u16 = 15;

/// One link as `RTM_GETLINK` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) index: u32,
    pub(crate) name: String,
    /// `bridge`, `veth`, `tun` …; `None` for devices without a kind (`lo`, NICs).
    pub(crate) kind: Option<String>,
    /// The bridge (or bond) it is a port of.
    pub(crate) master: Option<u32>,
    pub(crate) mtu: u32,
    pub(crate) mac: Option<[u8; 6]>,
    /// `ip link set DEV alias TEXT`: vxnet marks what it creates with it.
    pub(crate) alias: Option<String>,
    pub(crate) up: bool,
}

/// A netlink request message under construction: header, fixed part, attributes.
struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Message {
        let mut buf = vec![0u8; NLMSG_HDR];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        let flags = flags | libc::NLM_F_REQUEST as u16;
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(fixed);
        Message {
            buf,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    fn attr_u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    /// A NUL-terminated string attribute.
    fn attr_str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.attr(kind | NLA_F_NESTED, &[])
    }

    fn end(&mut self) -> &mut Self {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// Appends raw bytes inside the current nest (the peer's ifinfomsg of a veth).
    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; IFINFO_LEN] {
    let mut m = [0u8; IFINFO_LEN];
    m[0] = libc::AF_UNSPEC as u8;
    m[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

const CREATE: u16 = (libc::NLM_F_CREATE | libc::NLM_F_EXCL | libc::NLM_F_ACK) as u16;
const ACK: u16 = libc::NLM_F_ACK as u16;
const UP: u32 = libc::IFF_UP as u32;

/// A route-netlink socket bound to one network namespace.
#[derive(Debug)]
pub(crate) struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket in the calling thread's namespace.
    pub(crate) fn open() -> io::Result<Netlink> {
        Ok(Netlink {
            sock: socket()?,
            seq: 0,
        })
    }

    /// A socket in the namespace `ns` refers to: created on a short-lived thread that enters
    /// it, so no thread of the engine ever changes namespace.
    pub(crate) fn open_in(ns: BorrowedFd<'_>) -> io::Result<Netlink> {
        let raw = ns.as_raw_fd();
        let sock = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns(2) with an fd the caller keeps open (borrowed for this
                    // scope) and CLONE_NEWNET; it changes only this short-lived thread.
                    super::cvt(unsafe { libc::setns(raw, libc::CLONE_NEWNET) })?;
                    socket()
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
        })?;
        Ok(Netlink { sock, seq: 0 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends a request that asks for an acknowledgement and returns its verdict.
    fn ack(&mut self, msg: Message) -> io::Result<()> {
        let seq = self.next_seq();
        self.sock.send(&msg.finish(seq))?;
        let mut reply = vec![0u8; 8192];
        loop {
            let n = (&self.sock).read(&mut reply)?;
            let mut rest = &reply[..n];
            while let Some((one, next)) = split_message(rest) {
                rest = next;
                if seq_of(one) != Some(seq) {
                    continue;
                }
                if let Some(result) = error_reply(one) {
                    return result;
                }
            }
        }
    }

    /// Sends a request and collects every message of type `kind` in the reply (a dump, or one
    /// object), each as `parse` reads it.
    fn collect<T>(
        &mut self,
        msg: Message,
        kind: u16,
        parse: fn(&[u8]) -> Option<T>,
    ) -> io::Result<Vec<T>> {
        let seq = self.next_seq();
        self.sock.send(&msg.finish(seq))?;
        let mut reply = vec![0u8; 64 * 1024];
        let mut found = Vec::new();
        loop {
            let n = (&self.sock).read(&mut reply)?;
            let mut rest = &reply[..n];
            let mut multi = false;
            while let Some((one, next)) = split_message(rest) {
                rest = next;
                if seq_of(one) != Some(seq) {
                    continue;
                }
                multi |= u16_at(one, 6).unwrap_or(0) & libc::NLM_F_MULTI as u16 != 0;
                match u16_at(one, 4) {
                    Some(t) if t == libc::NLMSG_DONE as u16 => return Ok(found),
                    Some(t) if t == kind => found.extend(parse(one)),
                    _ => {
                        if let Some(result) = error_reply(one) {
                            result?;
                            return Ok(found);
                        }
                    }
                }
            }
            if !multi {
                return Ok(found);
            }
        }
    }

    fn links(&mut self, msg: Message) -> io::Result<Vec<Link>> {
        self.collect(msg, libc::RTM_NEWLINK, parse_link)
    }

    /// The destinations of the namespace's IPv4 routes in every table but `local` (which only
    /// mirrors the addresses the other tables route), default routes left out.
    pub(crate) fn ipv4_routes(&mut self) -> io::Result<Vec<(std::net::Ipv4Addr, u8)>> {
        let mut fixed = [0u8; RTMSG_LEN];
        fixed[0] = libc::AF_INET as u8;
        let msg = Message::new(libc::RTM_GETROUTE, libc::NLM_F_DUMP as u16, &fixed);
        let routes = self.collect(msg, libc::RTM_NEWROUTE, parse_ipv4_route)?;
        Ok(routes.into_iter().flatten().collect())
    }

    /// The link named `name`, or `None` when there is none.
    pub(crate) fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut msg = Message::new(libc::RTM_GETLINK, 0, &ifinfomsg(0, 0, 0));
        msg.attr_str(IFLA_IFNAME, name);
        match self.links(msg) {
            Ok(links) => Ok(links.into_iter().next()),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace.
    pub(crate) fn all_links(&mut self) -> io::Result<Vec<Link>> {
        let msg = Message::new(
            libc::RTM_GETLINK,
            libc::NLM_F_DUMP as u16,
            &ifinfomsg(0, 0, 0),
        );
        self.links(msg)
    }

    /// `ip link add NAME mtu MTU [address MAC] type bridge` plus an alias; fails with EEXIST
    /// when the name is taken.
    pub(crate) fn create_bridge(
        &mut self,
        name: &str,
        mtu: u32,
        mac: Option<[u8; 6]>,
        alias: &str,
    ) -> io::Result<()> {
        let mut msg = Message::new(libc::RTM_NEWLINK, CREATE, &ifinfomsg(0, 0, 0));
        msg.attr_str(IFLA_IFNAME, name).attr_u32(IFLA_MTU, mtu);
        if let Some(mac) = mac {
            msg.attr(IFLA_ADDRESS, &mac);
        }
        msg.begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "bridge")
            .end();
        self.ack(msg)?;
        self.mark(name, alias)
    }

    /// Sets the alias of the link just created as `name` (the kernel ignores IFLA_IFALIAS in a
    /// create request); if that fails the link is deleted again.
    fn mark(&mut self, name: &str, alias: &str) -> io::Result<()> {
        let link = self
            .link_by_name(name)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let mut msg = Message::new(libc::RTM_NEWLINK, ACK, &ifinfomsg(link.index, 0, 0));
        msg.attr_str(IFLA_IFALIAS, alias);
        let marked = self.ack(msg);
        if marked.is_err() {
            let _ = self.delete_link(link.index);
        }
        marked
    }

    /// A veth pair: `host` here (with `alias`), `peer` created directly in the namespace `ns`
    /// with `peer_mac`; both with `mtu`, both down. EEXIST when either name is taken (then
    /// neither end exists).
    pub(crate) fn create_veth(
        &mut self,
        host: &str,
        alias: &str,
        peer: &str,
        ns: BorrowedFd<'_>,
        peer_mac: [u8; 6],
        mtu: u32,
    ) -> io::Result<()> {
        let mut msg = Message::new(libc::RTM_NEWLINK, CREATE, &ifinfomsg(0, 0, 0));
        msg.attr_str(IFLA_IFNAME, host)
            .attr_u32(IFLA_MTU, mtu)
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER)
            .raw(&ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, peer)
            .attr_u32(IFLA_MTU, mtu)
            .attr(IFLA_ADDRESS, &peer_mac)
            .attr_u32(IFLA_NET_NS_FD, ns.as_raw_fd() as u32)
            .end()
            .end()
            .end();
        self.ack(msg)?;
        self.mark(host, alias)
    }

    /// Makes link `index` a port of `master` (0: of none), with `mtu`, up or down.
    pub(crate) fn set_link(
        &mut self,
        index: u32,
        master: Option<u32>,
        mtu: Option<u32>,
        up: Option<bool>,
    ) -> io::Result<()> {
        let (flags, change) = match up {
            Some(true) => (UP, UP),
            Some(false) => (0, UP),
            None => (0, 0),
        };
        let mut msg = Message::new(libc::RTM_NEWLINK, ACK, &ifinfomsg(index, flags, change));
        if let Some(master) = master {
            msg.attr_u32(IFLA_MASTER, master);
        }
        if let Some(mtu) = mtu {
            msg.attr_u32(IFLA_MTU, mtu);
        }
        self.ack(msg)
    }

    /// `ip link set DEV address MAC`.
    pub(crate) fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut msg = Message::new(libc::RTM_NEWLINK, ACK, &ifinfomsg(index, 0, 0));
        msg.attr(IFLA_ADDRESS, &mac);
        self.ack(msg)
    }

    /// `ip link del`: for a veth, both ends go.
    pub(crate) fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let msg = Message::new(libc::RTM_DELLINK, ACK, &ifinfomsg(index, 0, 0));
        self.ack(msg)
    }

    /// `ip addr add ADDR/PREFIX dev INDEX`; EEXIST when it is there already.
    pub(crate) fn add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let (family, bytes) = family_bytes(addr);
        let mut fixed = [0u8; 8];
        fixed[0] = family;
        fixed[1] = prefix;
        fixed[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut msg = Message::new(libc::RTM_NEWADDR, CREATE, &fixed);
        msg.attr(IFA_LOCAL, &bytes).attr(IFA_ADDRESS, &bytes);
        self.ack(msg)
    }

    /// `ip route add default via GATEWAY dev INDEX` (main table, boot protocol as `ip` uses).
    pub(crate) fn add_default_route(&mut self, gateway: IpAddr, index: u32) -> io::Result<()> {
        let (family, bytes) = family_bytes(gateway);
        let fixed = [
            family,
            0, // dst_len: default
            0,
            0,
            libc::RT_TABLE_MAIN,
            libc::RTPROT_BOOT,
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
            0, // rtm_flags (u32)
            0,
            0,
            0,
        ];
        let mut msg = Message::new(libc::RTM_NEWROUTE, CREATE, &fixed);
        msg.attr(RTA_GATEWAY, &bytes).attr_u32(RTA_OIF, index);
        self.ack(msg)
    }
}

fn family_bytes(addr: IpAddr) -> (u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    }
}

/// The first netlink message of `buf` and what follows it (4-aligned).
fn split_message(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = buf
        .get(0..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
    if len < NLMSG_HDR || len > buf.len() {
        return None;
    }
    let next = ((len + 3) & !3).min(buf.len());
    Some((&buf[..len], &buf[next..]))
}

fn seq_of(msg: &[u8]) -> Option<u32> {
    msg.get(8..12)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn u32_of(bytes: &[u8]) -> Option<u32> {
    bytes
        .get(0..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn text_of(bytes: &[u8]) -> String {
    let text = bytes.split(|&b| b == 0).next().unwrap_or(bytes);
    String::from_utf8_lossy(text).into_owned()
}

/// One RTM_NEWLINK message as a [`Link`]; `None` if it is too short to be one.
fn parse_link(msg: &[u8]) -> Option<Link> {
    let info = msg.get(NLMSG_HDR..NLMSG_HDR + IFINFO_LEN)?;
    let index = u32_of(&info[4..8])?;
    let flags = u32_of(&info[8..12])?;
    let attrs = msg.get(NLMSG_HDR + IFINFO_LEN..)?;
    Some(Link {
        index,
        name: find_attr(attrs, IFLA_IFNAME).map(text_of)?,
        kind: find_attr(attrs, IFLA_LINKINFO)
            .and_then(|i| find_attr(i, IFLA_INFO_KIND))
            .map(text_of),
        master: find_attr(attrs, IFLA_MASTER)
            .and_then(u32_of)
            .filter(|&m| m != 0),
        mtu: find_attr(attrs, IFLA_MTU).and_then(u32_of).unwrap_or(0),
        mac: find_attr(attrs, IFLA_ADDRESS).and_then(|m| m.try_into().ok()),
        alias: find_attr(attrs, IFLA_IFALIAS).map(text_of),
        up: flags & UP != 0,
    })
}

/// One RTM_NEWROUTE message: `Some(Some((dst, len)))` for a non-default route outside the
/// `local` table, `Some(None)` for one to skip, `None` when it does not parse.
fn parse_ipv4_route(msg: &[u8]) -> Option<Option<(std::net::Ipv4Addr, u8)>> {
    let fixed = msg.get(NLMSG_HDR..NLMSG_HDR + RTMSG_LEN)?;
    let (family, dst_len) = (fixed[0], fixed[1]);
    let attrs = msg.get(NLMSG_HDR + RTMSG_LEN..)?;
    // The table id: RTA_TABLE when the kernel gives it (tables above 255), rtm_table otherwise.
    let table = find_attr(attrs, RTA_TABLE)
        .and_then(u32_of)
        .unwrap_or(u32::from(fixed[4]));
    if family != libc::AF_INET as u8 || dst_len == 0 || table == u32::from(libc::RT_TABLE_LOCAL) {
        return Some(None);
    }
    let dst: [u8; 4] = find_attr(attrs, RTA_DST)?.try_into().ok()?;
    Some(Some((dst.into(), dst_len)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_get_their_lengths() {
        let mut msg = Message::new(libc::RTM_NEWLINK, 0, &ifinfomsg(7, 0, 0));
        msg.begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end();
        let bytes = msg.finish(9);
        assert_eq!(u32_of(&bytes).unwrap() as usize, bytes.len());
        assert_eq!(seq_of(&bytes), Some(9));
        let attrs = &bytes[NLMSG_HDR + IFINFO_LEN..];
        let info = find_attr(attrs, IFLA_LINKINFO).unwrap();
        assert_eq!(text_of(find_attr(info, IFLA_INFO_KIND).unwrap()), "veth");
    }

    #[test]
    fn loopback_is_listed_and_found() {
        let mut nl = Netlink::open().unwrap();
        let lo = nl.link_by_name("lo").unwrap().unwrap();
        assert_eq!((lo.index, lo.kind.as_deref()), (1, None));
        assert!(nl.all_links().unwrap().iter().any(|l| l.name == "lo"));
        assert_eq!(nl.link_by_name("no-such-dev0").unwrap(), None);
    }
}
