//! Path-MTU signalling on the send side: what a worker knows of the path MTU to each VTEP, and
//! the ICMP too-big replies it writes into the TAP for frames that do not fit.
//!
//! The kernel does the discovery: every outer packet carries DF (`--df set`), a router that
//! cannot forward one answers with ICMP frag-needed / packet-too-big to the source-port socket
//! that sent it, and the kernel records the lower path MTU for that destination (a route
//! exception; it expires after `net.ipv4.route.mtu_expires`, 10 min). A worker reads that MTU
//! (connect + IP_MTU, see `sys::udp_path::PathMtuProbe`) when it first sends to a VTEP, again
//! every [`REFRESH_MS`], and at once when the kernel refuses a send as too big. Before each
//! send it compares the outer datagram (for a GSO send: one segment, not the whole send) with
//! that MTU; a frame that does not fit is dropped (`drops.too_big`) and, with DF, answered like
//! a router would.
//!
//! **The floor.** Anyone who can guess a source port can send ICMP frag-needed for it (the
//! kernel checks nothing else), and the kernel takes any MTU down to its own floor of 552. A
//! path MTU below `--min-pmtu` (default 1280) is therefore not followed: the worker keeps the
//! last path MTU it followed for that VTEP (the underlay's MTU if none) and says so in a log
//! line. For the kernel not to refuse those sends itself, the DF sockets are in
//! `IP_PMTUDISC_PROBE` mode (DF set, the learnt path MTU not enforced: see
//! `sys::udp_path`), so the path MTU is enforced here, where the floor is, and frames that do
//! not fit it are answered into the TAP whatever the kernel learnt.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, BorrowedFd};

use vxnet_encap::icmp::{inner_mtu, too_big_reply, MAX_REPLY_LEN};
use vxnet_encap::offload::ZERO_VNET_HDR;
use vxnet_encap::wire::VXLAN_HEADER_LEN;

use crate::counters::Events;
use crate::crypto::LogLimit;
use crate::fdb::Millis;
use crate::forward::Forwarder;
use crate::storm::RateLimiter;
use crate::sys::tap::TapQueue;
use crate::sys::udp_path::PathMtuProbe;

/// How long a path MTU read from the kernel is used before it is read again: how soon a
/// router's ICMP is followed (the kernel does not refuse sends above it, see the module doc).
pub(super) const REFRESH_MS: Millis = 1_000;
/// VTEPs remembered per worker; the table starts over when full.
const MAX_KNOWN: usize = 4096;
/// ICMP replies per second per worker (a bucket one second deep), like the kernel's
/// `icmp_msgs_per_sec` it keeps a flood of oversize frames from becoming a flood of replies.
const REPLIES_PER_SEC: u32 = 200;
const UDP_HEADER: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Known {
    mtu: u32,
    checked: Millis,
}

pub(super) struct PathMtus {
    probe: Option<PathMtuProbe>,
    known: HashMap<IpAddr, Known>,
    /// Used when the kernel cannot be asked: the underlay device's MTU.
    fallback: u32,
    /// `--min-pmtu`: a path MTU the kernel reports below it is not followed.
    floor: u32,
    ignored_log: LogLimit,
    ipv6: bool,
    replies: RateLimiter,
    reply: Box<[u8]>,
}

impl PathMtus {
    /// Probes from `local`, with a port from `probe_ports` where the kernel allows (outside
    /// the source-port range); `fallback` when the kernel cannot be asked.
    pub(super) fn new(
        local: IpAddr,
        fallback: u32,
        floor: u32,
        probe_ports: RangeInclusive<u16>,
    ) -> Self {
        let probe = match PathMtuProbe::new(local, probe_ports) {
            Ok(probe) => Some(probe),
            Err(e) => {
                tracing::warn!(
                    "cannot ask the kernel for path MTUs ({e}); using the underlay MTU {fallback}"
                );
                None
            }
        };
        PathMtus {
            probe,
            known: HashMap::with_capacity(64),
            fallback,
            floor,
            ignored_log: LogLimit::default(),
            ipv6: local.is_ipv6(),
            replies: RateLimiter::new(REPLIES_PER_SEC),
            reply: vec![0u8; ZERO_VNET_HDR.len() + MAX_REPLY_LEN].into_boxed_slice(),
        }
    }

    /// The probe's socket, if there is one (the worker's own fd, see `Worker::new`).
    pub(super) fn probe_fd(&self) -> Option<BorrowedFd<'_>> {
        self.probe.as_ref().map(AsFd::as_fd)
    }

    /// The path MTU (outer IP packet bytes) to `dest`, read from the kernel when unknown or
    /// older than [`REFRESH_MS`].
    pub(super) fn get(&mut self, dest: SocketAddr, now: Millis) -> u32 {
        match self.known.get(&dest.ip()) {
            Some(k) if now.saturating_sub(k.checked) < REFRESH_MS => k.mtu,
            _ => self.refresh(dest, now),
        }
    }

    /// Reads the path MTU to `dest` from the kernel now; one below the floor is not followed
    /// (the last one followed stays).
    pub(super) fn refresh(&mut self, dest: SocketAddr, now: Millis) -> u32 {
        let read = self
            .probe
            .as_ref()
            .and_then(|p| p.path_mtu(dest).ok())
            .filter(|mtu| *mtu > 0)
            .unwrap_or(self.fallback);
        let kept = self.known.get(&dest.ip()).map_or(self.fallback, |k| k.mtu);
        let mtu = self.follow(read, kept, dest, now);
        if self.known.len() >= MAX_KNOWN {
            self.known.clear();
        }
        self.known.insert(dest.ip(), Known { mtu, checked: now });
        mtu
    }

    /// The path MTU to use when the kernel says `read` and `kept` was used so far.
    fn follow(&self, read: u32, kept: u32, dest: SocketAddr, now: Millis) -> u32 {
        // Below the underlay's own MTU and the floor: learnt from ICMP (a route's own MTU is
        // the device's, or one an operator set).
        if read >= self.floor.min(self.fallback) {
            return read;
        }
        if self.ignored_log.allow(now) {
            tracing::warn!(
                peer = %dest.ip(),
                learnt = read,
                min_pmtu = self.floor,
                using = kept,
                "the kernel's path MTU to this VTEP is below --min-pmtu (most likely forged ICMP frag-needed); not followed"
            );
        }
        kept
    }

    /// Whether a datagram of `payload` UDP bytes (VXLAN header and frame) fits `mtu`.
    pub(super) fn fits(&self, mtu: u32, payload: usize) -> bool {
        let outer_ip = if self.ipv6 { 40 } else { 20 };
        payload + UDP_HEADER + outer_ip <= mtu as usize
    }

    /// Answers the frame in `datagram` (one VXLAN datagram: the header, then the frame) that
    /// did not fit `mtu`, writing the ICMP reply into TAP `network` when one is due and the rate
    /// allows. Returns whether a reply was written.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer(
        &mut self,
        forwarder: &Forwarder,
        taps: &[TapQueue],
        network: usize,
        vnet_hdr: bool,
        datagram: &[u8],
        mtu: u32,
        now_ns: u64,
    ) -> bool {
        let Some(frame) = datagram.get(VXLAN_HEADER_LEN..) else {
            return false;
        };
        let report = inner_mtu(mtu as usize, self.ipv6, frame);
        let head = if vnet_hdr { ZERO_VNET_HDR.len() } else { 0 };
        let Some(len) = too_big_reply(frame, report, &mut self.reply[head..]) else {
            return false;
        };
        if !self.replies.admit(now_ns) {
            return false;
        }
        self.reply[..head].copy_from_slice(&ZERO_VNET_HDR[..head]);
        super::tap_sink::write_tap(
            forwarder,
            taps,
            network,
            &[IoSlice::new(&self.reply[..head + len])],
        );
        if let Some(n) = forwarder.networks().get(network) {
            Events::bump(&n.events.too_big_replies);
        }
        true
    }
}

impl std::fmt::Debug for PathMtus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathMtus")
            .field("known", &self.known.len())
            .field("fallback", &self.fallback)
            .finish()
    }
}
