//! The source-port sockets packets leave from: one socket per port of the `srcport` range,
//! bound on first use, shared by every worker.
//!
//! RFC 7348 §5: the outer UDP source port is a hash of the inner flow, so that ECMP and RSS in
//! the underlay spread flows while every packet of one flow keeps one port. A userspace sender
//! cannot choose the source port per `sendmsg` (it is the socket's), and the ways around that
//! lose more than they gain: a raw or packet socket writes its own UDP header but gets no UDP
//! GSO (one syscall per datagram instead of per 64 KB superframe), and a BPF rewrite of the port
//! on the egress device depends on that device. So each port gets its own socket: a flow's
//! hash picks the port ([`SourcePortRange::port_for`]), the port's socket is bound when the
//! first packet needs it, and UDP GSO works unchanged.
//!
//! Cost: one file descriptor and about 2.7 KB of kernel memory (socket, inode, file, dentry; 4.7
//! KB with SO_REUSEPORT, used only with `df inherit`) per port in use. The number open at once is
//! capped (`cap`, from the file-descriptor limit; by default the whole range fits): past it the
//! least recently used socket is closed (a clock sweep), and [`SourcePorts::close_idle`] closes
//! sockets no flow used since its last call, so memory follows the ports in use. A flow keeps
//! its port across such closes: the port is a function of the flow, not of the socket. Only when
//! another program holds a port does a flow hashed to it leave from the next free port.
//!
//! With `df inherit` a port has two sockets (DF and no DF, both SO_REUSEPORT), as DF is a
//! socket property. Sockets are `Arc`s in `ArcSwapOption` slots, so a worker sending on one
//! while another closes it only delays the close.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use vxnet_encap::outer::OuterPolicy;

use crate::counters::SourcePortCounters;
use crate::sys::udp::{UdpError, UdpOptions, UdpSocket};
use crate::tuning::SourcePortRange;

/// Ports after a hashed one tried when another program holds it.
const FALLBACK_TRIES: usize = 32;

/// How the pool is set up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourcePortConfig {
    pub(crate) local: IpAddr,
    pub(crate) range: SourcePortRange,
    /// The VXLAN listening port: never bound as a source port (with SO_REUSEPORT a source-port
    /// socket would join the receive sockets' group and take their traffic).
    pub(crate) listen_port: u16,
    pub(crate) policy: OuterPolicy,
    /// Most sockets open at once.
    pub(crate) cap: usize,
    /// Send buffer of each socket.
    pub(crate) send_buffer: usize,
    /// The path MTU assumed when the kernel cannot tell: the underlay device's MTU.
    pub(crate) fallback_mtu: u32,
    /// The path-MTU floor (`--min-pmtu`): what the kernel learnt below it is not followed.
    pub(crate) min_pmtu: u32,
}

#[derive(Debug)]
pub(crate) struct SourcePorts {
    config: SourcePortConfig,
    /// 1, or 2 with `df inherit` (slot `2 * offset + df`).
    variants: usize,
    slots: Box<[ArcSwapOption<UdpSocket>]>,
    /// Set on use, cleared by the clock hand and by `close_idle`.
    used: Box<[AtomicBool]>,
    open: AtomicUsize,
    /// The clock hand; held while a socket is bound or closed.
    hand: Mutex<usize>,
    stats: Arc<SourcePortCounters>,
}

impl SourcePorts {
    pub(crate) fn new(config: SourcePortConfig) -> Self {
        let variants = if config.policy.fixed_df().is_some() {
            1
        } else {
            2
        };
        let slots = config.range.len() * variants;
        SourcePorts {
            config,
            variants,
            slots: (0..slots).map(|_| ArcSwapOption::empty()).collect(),
            used: (0..slots).map(|_| AtomicBool::new(false)).collect(),
            open: AtomicUsize::new(0),
            hand: Mutex::new(0),
            stats: Arc::default(),
        }
    }

    /// The outer DF / TTL / TOS policy the sockets are set up for.
    pub(crate) fn policy(&self) -> &OuterPolicy {
        &self.config.policy
    }

    pub(crate) fn range(&self) -> SourcePortRange {
        self.config.range
    }

    pub(crate) fn cap(&self) -> usize {
        self.config.cap
    }

    pub(crate) fn fallback_mtu(&self) -> u32 {
        self.config.fallback_mtu
    }

    pub(crate) fn min_pmtu(&self) -> u32 {
        self.config.min_pmtu
    }

    /// Sockets open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The pool's counters (shared with the engine state, for `vxnet stats`).
    pub(crate) fn counters(&self) -> &Arc<SourcePortCounters> {
        &self.stats
    }

    /// The slot of a flow with this hash that needs DF `df` (pure arithmetic, for planning).
    pub(super) fn slot_for(&self, hash: u32, df: bool) -> usize {
        let offset = usize::from(self.config.range.port_for(hash) - self.config.range.min);
        self.slot(offset, df)
    }

    fn slot(&self, offset: usize, df: bool) -> usize {
        if self.variants == 2 {
            2 * offset + usize::from(df)
        } else {
            offset
        }
    }

    /// The source port of `slot` (the hashed one; a bound socket may hold a neighbour of it).
    pub(super) fn port_of(&self, slot: usize) -> u16 {
        self.port_and_df(slot).0
    }

    fn port_and_df(&self, slot: usize) -> (u16, bool) {
        let (offset, df) = if self.variants == 2 {
            (slot / 2, slot % 2 == 1)
        } else {
            (slot, self.config.policy.fixed_df().unwrap_or(true))
        };
        (self.config.range.min + offset as u16, df)
    }

    /// The socket of `slot`, bound now if it is not open. `None` when no port near the hashed
    /// one could be bound (the caller counts the packets as send errors).
    pub(super) fn get(&self, slot: usize) -> Option<Arc<UdpSocket>> {
        let used = self.used.get(slot)?;
        if !used.load(Ordering::Relaxed) {
            used.store(true, Ordering::Relaxed);
        }
        if let Some(socket) = self.slots[slot].load_full() {
            return Some(socket);
        }
        self.open_slot(slot)
    }

    /// Binds the slot's socket under the clock hand, so two workers opening one slot at once
    /// never both bind: the second would find the port taken by the first's socket and move to
    /// a nearby port, a socket counted as bound and the port as busy, which `bound == open`
    /// (stats) would then no longer say. That bind is the one system call under this lock (a
    /// worker the kernel ends inside it leaves the lock held: see engine::supervise); the
    /// sockets evicted for it are closed after the lock is released.
    fn open_slot(&self, slot: usize) -> Option<Arc<UdpSocket>> {
        let mut closed = Vec::new();
        let mut hand = self.hand.lock().unwrap_or_else(|e| e.into_inner());
        // Another worker may have opened it while this one waited.
        if let Some(opened) = self.slots[slot].load_full() {
            return Some(opened);
        }
        while self.open.load(Ordering::Relaxed) >= self.config.cap.max(1) {
            if !self.evict_one(&mut hand, &mut closed) {
                break;
            }
        }
        let (port, df) = self.port_and_df(slot);
        let socket = self.bind_near(port, df)?;
        self.slots[slot].store(Some(Arc::clone(&socket)));
        self.used[slot].store(true, Ordering::Relaxed);
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.open.store(open as u64, Ordering::Relaxed);
        drop(hand);
        drop(closed);
        Some(socket)
    }

    /// Binds `port`, or when another program holds it the next free port of the range after it
    /// (an open slot of ours on the way is shared instead).
    fn bind_near(&self, port: u16, df: bool) -> Option<Arc<UdpSocket>> {
        let range = self.config.range;
        let offset = usize::from(port - range.min);
        let tries = FALLBACK_TRIES.min(range.len());
        for k in 0..tries {
            let candidate_offset = (offset + k) % range.len();
            let candidate = range.min + candidate_offset as u16;
            if k > 0 {
                if let Some(shared) = self.slots[self.slot(candidate_offset, df)]
                    .load_full()
                    .filter(|s| s.local_addr().port() == candidate)
                {
                    return Some(shared);
                }
            }
            if candidate == self.config.listen_port {
                continue;
            }
            match self.bind(candidate, df) {
                Ok(socket) => {
                    self.stats.bound.fetch_add(1, Ordering::Relaxed);
                    if k > 0 {
                        self.stats.port_busy.fetch_add(1, Ordering::Relaxed);
                    }
                    return Some(Arc::new(socket));
                }
                Err(UdpError::AddrInUse { .. }) => continue,
                Err(e) => {
                    tracing::warn!("cannot open a source-port socket: {e}");
                    return None;
                }
            }
        }
        tracing::warn!(
            port,
            "no free source port among {tries} from {port}: packets of flows hashed there are dropped"
        );
        None
    }

    fn bind(&self, port: u16, df: bool) -> Result<UdpSocket, UdpError> {
        let addr = SocketAddr::new(self.config.local, port);
        let socket = UdpSocket::bind(
            addr,
            &UdpOptions {
                reuse_port: self.variants == 2,
                buffer_bytes: self.config.send_buffer,
                send_only: true,
            },
        )?;
        socket
            .set_outer(&self.config.policy, df)
            .map_err(|source| UdpError::Setup {
                addr,
                what: "setting the outer DF/TTL/TOS",
                source,
            })?;
        Ok(socket)
    }

    /// Takes out the socket the clock hand finds unused since it last passed (second chance),
    /// into `closed` (closed when the caller drops it). Returns false when nothing is open.
    fn evict_one(&self, hand: &mut usize, closed: &mut Vec<Arc<UdpSocket>>) -> bool {
        if self.open.load(Ordering::Relaxed) == 0 {
            return false;
        }
        // Two rounds: the first may only clear use bits.
        for _ in 0..2 * self.slots.len() {
            let i = *hand;
            *hand = (*hand + 1) % self.slots.len();
            if self.slots[i].load().is_none() {
                continue;
            }
            if self.used[i].swap(false, Ordering::Relaxed) {
                continue;
            }
            closed.extend(self.close(i));
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Empties `slot`; its socket closes when the returned `Arc` (and any worker's) is dropped.
    fn close(&self, slot: usize) -> Option<Arc<UdpSocket>> {
        let socket = self.slots[slot].swap(None)?;
        let open = self.open.fetch_sub(1, Ordering::Relaxed) - 1;
        self.stats.open.store(open as u64, Ordering::Relaxed);
        Some(socket)
    }

    /// Closes every socket no flow used since the previous call; returns how many. Called
    /// periodically by the engine, so a socket lives one to two periods after its last use.
    pub(crate) fn close_idle(&self) -> usize {
        let hand = self.hand.lock().unwrap_or_else(|e| e.into_inner());
        let mut closed = Vec::new();
        for i in 0..self.slots.len() {
            if self.slots[i].load().is_none() || self.used[i].swap(false, Ordering::Relaxed) {
                continue;
            }
            closed.extend(self.close(i));
        }
        drop(hand);
        self.stats
            .idle_closed
            .fetch_add(closed.len() as u64, Ordering::Relaxed);
        closed.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vxnet_encap::outer::DfPolicy;

    fn pool(range: &str, cap: usize, df: DfPolicy) -> SourcePorts {
        SourcePorts::new(SourcePortConfig {
            local: "127.0.0.1".parse().unwrap(),
            range: range.parse().unwrap(),
            listen_port: 0,
            policy: OuterPolicy {
                df,
                ..OuterPolicy::default()
            },
            cap,
            send_buffer: 0,
            fallback_mtu: 1500,
            min_pmtu: 1280,
        })
    }

    /// A hash whose port is `port` in `range` (the inverse of the multiply-shift).
    fn hash_of(range: SourcePortRange, port: u16) -> u32 {
        let span = range.len() as u64;
        (u64::from(port - range.min) << 32).div_ceil(span) as u32
    }

    #[test]
    fn a_flow_leaves_from_its_hashed_port() {
        let p = pool("47100-47199", 1000, DfPolicy::Set);
        let range = p.range();
        for port in [47100, 47150, 47199] {
            let hash = hash_of(range, port);
            assert_eq!(range.port_for(hash), port);
            let s = p.get(p.slot_for(hash, true)).unwrap();
            assert_eq!(s.local_addr().port(), port);
            // Same flow, same socket.
            let again = p.get(p.slot_for(hash, true)).unwrap();
            assert!(Arc::ptr_eq(&s, &again));
        }
        assert_eq!(p.open(), 3);
    }

    #[test]
    fn the_cap_evicts_the_least_recently_used_and_idle_sockets_close() {
        let p = pool("47200-47299", 2, DfPolicy::Set);
        let range = p.range();
        let slot = |port| p.slot_for(hash_of(range, port), true);
        let a = p.get(slot(47200)).unwrap();
        let _b = p.get(slot(47201)).unwrap();
        drop(a);
        p.get(slot(47202)).unwrap();
        assert_eq!(p.open(), 2);
        assert_eq!(p.stats.evicted.load(Ordering::Relaxed), 1);
        // The evicted port is bound again when its flow comes back: the port stays the flow's.
        assert_eq!(p.get(slot(47200)).unwrap().local_addr().port(), 47200);
        assert_eq!(p.open(), 2);
        // Used since: kept once, then closed.
        assert_eq!(p.close_idle(), 0);
        assert_eq!(p.close_idle(), 2);
        assert_eq!(p.open(), 0);
    }

    #[test]
    fn a_port_held_elsewhere_falls_back_to_the_next_one() {
        let holder = std::net::UdpSocket::bind("127.0.0.1:47300").unwrap();
        let p = pool("47300-47309", 100, DfPolicy::Set);
        let slot = |port| p.slot_for(hash_of(p.range(), port), true);
        let s = p.get(slot(47300)).unwrap();
        assert_eq!(s.local_addr().port(), 47301);
        assert_eq!(p.stats.port_busy.load(Ordering::Relaxed), 1);
        // The flows hashed to 47301 find it taken (by that socket) and move on.
        assert_eq!(p.get(slot(47301)).unwrap().local_addr().port(), 47302);
        drop(s);
        p.close_idle();
        p.close_idle();
        assert_eq!(p.open(), 0);
        // Opened in the other order, 47300's flows share the socket of 47301.
        let t = p.get(slot(47301)).unwrap();
        assert_eq!(t.local_addr().port(), 47301);
        assert!(Arc::ptr_eq(&t, &p.get(slot(47300)).unwrap()));
        drop(holder);
    }

    #[test]
    fn inherit_gets_a_df_and_a_plain_socket_on_the_same_port() {
        let p = pool("47400-47409", 100, DfPolicy::Inherit);
        let hash = hash_of(p.range(), 47405);
        let df = p.get(p.slot_for(hash, true)).unwrap();
        let plain = p.get(p.slot_for(hash, false)).unwrap();
        assert!(!Arc::ptr_eq(&df, &plain));
        assert_eq!(df.local_addr().port(), 47405);
        assert_eq!(plain.local_addr().port(), 47405);
    }
}
