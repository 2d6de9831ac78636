//! TAP → wire, the wide way: a TCP superframe read from the TAP leaves whole, outer headers in
//! front, through the engine's underlay TAP (see [`crate::underlay`]) instead of being cut into
//! MSS-sized datagrams and sent through a socket.
//!
//! Per VTEP the worker caches where it is reached (underlay TAP, MACs, device MTU) until the
//! underlay's generation moves (any route, neighbour, link or tc change). Whatever the path
//! cannot carry goes the socket way, which is always correct: a VTEP with no path (counted as a
//! fallback), a superframe whose segments would not fit the path MTU (the socket path answers
//! it with ICMP or fragments as the DF policy says), and, once a second per VTEP whose
//! neighbour entry is not confirmed, one superframe to make the kernel re-check the neighbour
//! (packets written into the TAP never touch the neighbour table, so nothing else would).

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use vxnet_encap::offload::tunnel_tx::{wrap_superframe, OuterIpv4, TunnelFrame, TUNNEL_PREFIX_LEN};
use vxnet_encap::offload::VirtioNetHdr;
use vxnet_encap::outer::{OuterFields, OuterPolicy, TosPolicy, TtlPolicy};
use vxnet_encap::Vni;

use crate::counters::Events;
use crate::fdb::Millis;
use crate::sys::route;
use crate::underlay::{NextHop, Underlay};

/// How long a VTEP without a path waits before it is resolved again (changes the kernel
/// announces re-resolve it at once).
const RETRY_MS: Millis = 1000;
/// How often a VTEP whose neighbour entry is unconfirmed sends one superframe by the socket.
const CONFIRM_MS: Millis = 1000;
/// VTEPs remembered per worker before the cache starts over.
const MAX_PATHS: usize = 4096;

#[derive(Debug)]
enum Path {
    /// `kicked`: when a superframe last went by the socket to make the kernel check an
    /// unconfirmed neighbour entry (`None`: not since it was resolved).
    Tap {
        hop: NextHop,
        kicked: Option<Millis>,
    },
    Socket {
        since: Millis,
    },
}

/// What the worker asks for one superframe.
#[derive(Debug, Clone, Copy)]
pub(super) struct Whole<'a> {
    pub(super) hdr: &'a VirtioNetHdr,
    pub(super) frame: &'a [u8],
    pub(super) dest: SocketAddr,
    pub(super) vni: Vni,
    pub(super) src_port: u16,
    pub(super) outer: OuterFields,
    /// The path MTU to `dest` the kernel reports.
    pub(super) path_mtu: u32,
}

/// What one whole send took: what the socket path would have counted for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Carried {
    pub(super) segments: usize,
    pub(super) bytes: usize,
}

/// A worker's side of the tunnel path.
#[derive(Debug)]
pub(super) struct TunnelTx {
    underlay: Arc<Underlay>,
    policy: OuterPolicy,
    generation: u64,
    paths: HashMap<Ipv4Addr, Path>,
    /// Outer IPv4 ID of the next superframe's first segment.
    ident: u16,
    prefix: Box<[u8; TUNNEL_PREFIX_LEN]>,
}

impl TunnelTx {
    pub(super) fn new(underlay: Arc<Underlay>, policy: OuterPolicy, worker: usize) -> Self {
        TunnelTx {
            generation: underlay.generation(),
            underlay,
            policy,
            paths: HashMap::new(),
            // Workers start far apart so their IDs do not collide for one VTEP.
            ident: (worker as u16).wrapping_mul(0x3fff),
            prefix: Box::new([0; TUNNEL_PREFIX_LEN]),
        }
    }

    /// Writes `whole` into the underlay TAP. `None`: it must go the socket way (counted).
    pub(super) fn send(&mut self, whole: &Whole<'_>, now: Millis) -> Option<Carried> {
        let carried = self.try_send(whole, now);
        if carried.is_none() {
            Events::bump(&self.underlay.counters.fallbacks);
        }
        carried
    }

    fn try_send(&mut self, whole: &Whole<'_>, now: Millis) -> Option<Carried> {
        if !self.underlay.active() {
            return None;
        }
        let vtep = route::ipv4(whole.dest.ip())?;
        let generation = self.underlay.generation();
        if generation != self.generation || self.paths.len() >= MAX_PATHS {
            self.paths.clear();
            self.generation = generation;
        }
        let stale = match self.paths.get(&vtep) {
            None => true,
            Some(Path::Socket { since }) => now.saturating_sub(*since) >= RETRY_MS,
            Some(Path::Tap { .. }) => false,
        };
        if stale {
            let path = match self.underlay.resolve(vtep) {
                // An unconfirmed entry sends its first superframe by the socket at once, so
                // that the kernel starts checking it now rather than a second later.
                Ok(hop) => Path::Tap { hop, kicked: None },
                Err(_) => Path::Socket { since: now },
            };
            self.paths.insert(vtep, path);
        }
        let Some(Path::Tap { hop, kicked }) = self.paths.get_mut(&vtep) else {
            return None;
        };
        if !hop.confirmed && kicked.is_none_or(|k| now.saturating_sub(k) >= CONFIRM_MS) {
            *kicked = Some(now);
            return None;
        }
        let outer = OuterIpv4 {
            src_mac: hop.src_mac,
            dst_mac: hop.dst_mac,
            src: self.underlay.local(),
            dst: vtep,
            src_port: whole.src_port,
            dst_port: whole.dest.port(),
            ttl: whole.outer.ttl.unwrap_or(match self.policy.ttl {
                TtlPolicy::Fixed(ttl) => ttl,
                TtlPolicy::Auto | TtlPolicy::Inherit => self.underlay.default_ttl,
            }),
            tos: whole.outer.tos.unwrap_or(match self.policy.tos {
                TosPolicy::Fixed(tos) => tos,
                TosPolicy::Inherit => 0,
            }),
            df: whole.outer.df,
            ident: self.ident,
            vni: whole.vni,
        };
        let TunnelFrame {
            segments,
            segment_ip_len,
            idents,
            inner_hdr_len,
        } = wrap_superframe(whole.hdr, whole.frame, &outer, &mut self.prefix).ok()?;
        if segment_ip_len > hop.mtu.min(whole.path_mtu) as usize {
            return None;
        }
        let parts = [IoSlice::new(&self.prefix[..]), IoSlice::new(whole.frame)];
        if let Err(e) = hop.tap.queue.writev(&parts) {
            self.underlay.write_failed(&hop.tap, &e);
            return None;
        }
        self.ident = self.ident.wrapping_add(idents);
        let c = &self.underlay.counters;
        Events::bump(&c.superframes);
        c.segments.fetch_add(segments as u64, Relaxed);
        c.bytes.fetch_add(whole.frame.len() as u64, Relaxed);
        Some(Carried {
            segments,
            // What the socket path counts (inner frame bytes): the segments' inner frames.
            bytes: whole.frame.len() + (segments - 1) * inner_hdr_len,
        })
    }
}
