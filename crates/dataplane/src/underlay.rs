//! The tunnel-GSO transmit path's kernel side: one "underlay TAP" per underlay device, whose
//! ingress a tc redirect sends out of that device, and where each VTEP is reached (route,
//! device, next-hop MAC), kept current by following rtnetlink's change notifications.
//!
//! Workers write whole VXLAN superframes into an underlay TAP (see `worker::tunnel`); this
//! module answers "which TAP, which MACs, which MTU" for a VTEP address and says when the answer
//! may have changed (a generation number every change bumps, so a worker re-resolves what it
//! cached). Anything it cannot resolve (no route of its own, a local or non-Ethernet device,
//! a TAP as underlay, no neighbour entry yet) is "use the socket path" for that VTEP, with the
//! reason logged once when it changes.
//!
//! Isolation: each engine creates its own underlay TAPs (`vxgso%d`: the kernel picks a free
//! name, never an existing device) and redirects only from them, and never to a TUN/TAP device,
//! so two engines on one host never send into each other's TAPs. The TAPs are not persistent:
//! they and their tc objects vanish with the engine.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vxnet_encap::offload::tunnel_tx::TUNNEL_VNET_HDR_LEN;
use vxnet_encap::MacAddr;

use crate::counters::Events;
use crate::state::lock;
use crate::sys::iface;
use crate::sys::route::{self, Changes};
use crate::sys::tap::{Tap, TapConfig, TapQueue};

/// Name pattern of the underlay TAPs (the kernel fills in the number).
const TAP_NAME: &str = "vxgso%d";
/// How often the redirects are checked even without a notification (one may be lost).
const CHECK_EVERY: Duration = Duration::from_secs(2);
const ARPHRD_ETHER: u16 = 1;

/// One underlay TAP and the device its ingress is redirected to.
#[derive(Debug)]
pub(crate) struct UnderlayTap {
    pub(crate) queue: TapQueue,
    name: String,
    index: u32,
    target: u32,
    /// The target's MAC and MTU as last seen, so that a change is logged once (not once per
    /// VTEP or worker).
    seen: Mutex<([u8; 6], u32)>,
}

/// Where one VTEP is reached through the tunnel path.
#[derive(Debug, Clone)]
pub(crate) struct NextHop {
    pub(crate) tap: Arc<UnderlayTap>,
    pub(crate) src_mac: MacAddr,
    pub(crate) dst_mac: MacAddr,
    /// The underlay device's MTU: no segment may exceed it.
    pub(crate) mtu: u32,
    /// The neighbour entry is confirmed; otherwise the socket path sends now and then, which
    /// makes the kernel re-check it.
    pub(crate) confirmed: bool,
}

/// Engine-wide counts of the tunnel path (`vxnet stats`, the metrics endpoint).
#[derive(Debug, Default)]
pub(crate) struct UnderlayCounters {
    pub(crate) superframes: AtomicU64,
    pub(crate) segments: AtomicU64,
    /// Inner frame bytes sent through the path.
    pub(crate) bytes: AtomicU64,
    /// Superframes that went the socket way: no path to their VTEP, too big for it, refused.
    pub(crate) fallbacks: AtomicU64,
    /// Writes the kernel refused (the superframe went by the socket path instead).
    pub(crate) refused: AtomicU64,
    /// A VTEP's resolution changed (device, next-hop MAC, or to/from the socket path), or an
    /// underlay device's own MAC or MTU.
    pub(crate) path_changes: AtomicU64,
    /// Redirects found removed (a tc filter or qdisc deleted, an underlay TAP deleted or set
    /// down) and put back.
    pub(crate) redirects_restored: AtomicU64,
}

/// The counters as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelGsoReport {
    /// Whether the path is in use (false once the kernel refused it at run time).
    pub active: bool,
    /// The underlay TAPs and the devices they send out of, as "TAP>DEV".
    pub devices: Vec<String>,
    pub superframes: u64,
    pub segments: u64,
    pub bytes: u64,
    pub fallbacks: u64,
    pub refused: u64,
    pub path_changes: u64,
    pub redirects_restored: u64,
}

/// The engine's underlay TAPs and what the workers need to use them.
#[derive(Debug)]
pub(crate) struct Underlay {
    local: Ipv4Addr,
    /// Outer TTL when the policy leaves it to the system.
    pub(crate) default_ttl: u8,
    generation: AtomicU64,
    active: AtomicBool,
    /// Per underlay device index.
    taps: Mutex<HashMap<u32, Arc<UnderlayTap>>>,
    /// What each VTEP last resolved to, so a change is logged once (not once per worker).
    last: Mutex<HashMap<Ipv4Addr, String>>,
    /// Held while the redirects are checked and put back (by the follower and by workers
    /// whose writes failed), so that one repair is made and logged once.
    repairing: Mutex<()>,
    pub(crate) counters: UnderlayCounters,
}

/// Why a VTEP is not reached through the tunnel path (then: the socket path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoPath {
    /// The next hop has no usable neighbour entry (yet, or any more): the socket path's sends
    /// make the kernel resolve it, and the entry's announcement brings the VTEP back. Normal
    /// at start and after a flush, so not worth a log line of its own.
    Unresolved(Ipv4Addr),
    Other(String),
}

impl From<String> for NoPath {
    fn from(reason: String) -> Self {
        NoPath::Other(reason)
    }
}

impl Underlay {
    /// The start-up probe: the path is offered when an underlay TAP with the tunnel header can
    /// be created and redirected (CAP_NET_ADMIN, Linux 6.17+ for the header size, clsact,
    /// u32 and mirred). The probe's TAP is kept: it serves the device the local address
    /// routes through.
    pub(crate) fn probe(local: Ipv4Addr) -> Result<Underlay, String> {
        let underlay = Underlay {
            local,
            default_ttl: default_ttl(),
            generation: AtomicU64::new(0),
            active: AtomicBool::new(true),
            taps: Mutex::new(HashMap::new()),
            last: Mutex::new(HashMap::new()),
            repairing: Mutex::new(()),
            counters: UnderlayCounters::default(),
        };
        let (device, _) = iface::device_for_local_address(local.into())
            .ok_or_else(|| format!("{local} is on no local device"))?;
        let target = iface::if_index(&device).map_err(|e| e.to_string())?;
        let seen = eligible(target)?;
        underlay.tap_for(target, seen)?;
        Ok(underlay)
    }

    /// The outer source address.
    pub(crate) fn local(&self) -> Ipv4Addr {
        self.local
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    pub(crate) fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// The kernel refused a well-formed write: the path goes out of use for good (logged once).
    pub(crate) fn refused(&self, error: &std::io::Error) {
        Events::bump(&self.counters.refused);
        if self.active.swap(false, Relaxed) {
            tracing::warn!("tunnel GSO write refused by the kernel ({error}); using the socket path from now on");
        }
    }

    /// A write into `tap` failed (the superframe goes by the socket path). `EINVAL`, or `EIO`
    /// from a TAP that is up: the kernel refuses the path. `EBADFD`: the TAP was deleted;
    /// `EIO` from a TAP that is down: someone set it down. Those are repaired now rather than
    /// when the notification arrives or at the periodic check.
    pub(crate) fn write_failed(&self, tap: &UnderlayTap, error: &std::io::Error) {
        let down = || iface::link_state_of(tap.index).is_ok_and(|l| !l.up);
        match error.raw_os_error() {
            Some(libc::EBADFD) => self.device_removed(tap.index),
            Some(libc::EIO) if down() => self.restore_redirects(),
            Some(libc::EINVAL | libc::EIO) => self.refused(error),
            _ => tracing::debug!(tap = %tap.name, "underlay TAP write failed: {error}"),
        }
    }

    /// The underlay TAP redirected to device `target` (whose MAC and MTU are `seen`), created
    /// on first use.
    fn tap_for(&self, target: u32, seen: ([u8; 6], u32)) -> Result<Arc<UnderlayTap>, String> {
        if let Some(tap) = lock(&self.taps).get(&target) {
            return Ok(Arc::clone(tap));
        }
        let tap = Tap::open(&TapConfig {
            name: TAP_NAME.to_string(),
            vnet_hdr: true,
            queues: 1,
        })
        .map_err(|e| e.to_string())?;
        let name = tap.name().to_string();
        let queue = tap
            .into_queues()
            .pop()
            .ok_or_else(|| "no TAP queue".to_string())?;
        queue
            .set_vnet_hdr_len(TUNNEL_VNET_HDR_LEN)
            .map_err(|e| format!("the kernel takes no tunnel GSO header on a TAP: {e}"))?;
        // No addresses and no IPv6: the stack has nothing to send into it.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        iface::set_up(&name, true).map_err(|e| e.to_string())?;
        let index = iface::if_index(&name).map_err(|e| e.to_string())?;
        route::redirect_ingress(index, target).map_err(|e| {
            format!("cannot redirect {name} to device {target} (tc clsact/u32/mirred): {e}")
        })?;
        tracing::debug!(tap = %name, device = target, "underlay TAP for tunnel GSO created");
        let tap = Arc::new(UnderlayTap {
            queue,
            name,
            index,
            target,
            seen: Mutex::new(seen),
        });
        lock(&self.taps).insert(target, Arc::clone(&tap));
        Ok(tap)
    }

    /// Where `vtep` is reached, or why it is not (then: the socket path). Logs a change: the
    /// device and next-hop MAC, not the TAP (a TAP replaced for the same device is no change).
    pub(crate) fn resolve(&self, vtep: Ipv4Addr) -> Result<NextHop, NoPath> {
        let result = self.lookup(vtep);
        let summary = match &result {
            Ok(hop) => format!("via {} to {}", target_name(hop.tap.target), hop.dst_mac),
            Err(NoPath::Unresolved(next)) => {
                tracing::debug!(%vtep, "tunnel GSO: socket path until {next} is resolved");
                return result;
            }
            Err(NoPath::Other(reason)) => format!("socket path: {reason}"),
        };
        // Logged after the lock is released: a worker whose thread the kernel ends inside the
        // write must not leave it held (see engine::supervise).
        let changed = {
            let mut last = lock(&self.last);
            (last.get(&vtep) != Some(&summary))
                .then(|| last.insert(vtep, summary.clone()).is_some())
        };
        if let Some(before) = changed {
            if before {
                Events::bump(&self.counters.path_changes);
            }
            tracing::info!(%vtep, "tunnel GSO: {summary}");
        }
        result
    }

    fn lookup(&self, vtep: Ipv4Addr) -> Result<NextHop, NoPath> {
        let route = route::route_get(vtep, self.local).map_err(|e| format!("no route: {e}"))?;
        if !route.is_unicast() {
            return Err(NoPath::Other(
                "the route is not a unicast one (local or unreachable)".into(),
            ));
        }
        let (mac, mtu) = eligible(route.oif)?;
        let next = route.gateway.unwrap_or(vtep);
        let neighbour = route::neighbour(route.oif, next)
            .map_err(|e| e.to_string())?
            .filter(|n| n.usable())
            .ok_or(NoPath::Unresolved(next))?;
        Ok(NextHop {
            tap: self.tap_for(route.oif, (mac, mtu))?,
            src_mac: MacAddr(mac),
            dst_mac: MacAddr(neighbour.mac),
            mtu,
            confirmed: neighbour.confirmed(),
        })
    }

    /// The counters and devices as reported.
    pub(crate) fn report(&self) -> TunnelGsoReport {
        let c = &self.counters;
        TunnelGsoReport {
            active: self.active(),
            devices: lock(&self.taps)
                .values()
                .map(|t| format!("{}>{}", t.name, target_name(t.target)))
                .collect(),
            superframes: c.superframes.load(Relaxed),
            segments: c.segments.load(Relaxed),
            bytes: c.bytes.load(Relaxed),
            fallbacks: c.fallbacks.load(Relaxed),
            refused: c.refused.load(Relaxed),
            path_changes: c.path_changes.load(Relaxed),
            redirects_restored: c.redirects_restored.load(Relaxed),
        }
    }

    fn restore_redirects(&self) {
        let _repairing = lock(&self.repairing);
        let taps: Vec<Arc<UnderlayTap>> = lock(&self.taps).values().cloned().collect();
        let mut restored = false;
        for tap in taps {
            // Set down, the TAP refuses writes (EIO); without its filter, what is written
            // into it goes nowhere.
            let down = match iface::link_state_of(tap.index) {
                Ok(link) => !link.up,
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                    self.tap_deleted(tap.target);
                    continue;
                }
                Err(_) => false,
            };
            let unfiltered = !route::has_ingress_filter(tap.index).unwrap_or(true);
            if !down && !unfiltered {
                continue;
            }
            Events::bump(&self.counters.redirects_restored);
            restored = true;
            let what = if down {
                "set down"
            } else {
                "its redirect removed"
            };
            let mut put_back = Ok(());
            if down {
                put_back = iface::set_up(&tap.name, true).map_err(|e| e.to_string());
            }
            if unfiltered && put_back.is_ok() {
                put_back =
                    route::redirect_ingress(tap.index, tap.target).map_err(|e| e.to_string());
            }
            match put_back {
                Ok(()) => {
                    tracing::warn!(tap = %tap.name, "tunnel GSO: underlay TAP {} {what} by someone else; put back", tap.name)
                }
                Err(e) => {
                    tracing::warn!(tap = %tap.name, "tunnel GSO: underlay TAP {} {what} by someone else and cannot be put back ({e}): its VTEPs get a new one", tap.name);
                    lock(&self.taps).remove(&tap.target);
                    retire(&tap);
                }
            }
        }
        if restored {
            self.generation.fetch_add(1, Relaxed);
        }
    }
}

impl Underlay {
    /// Device `index` is gone. An underlay device takes its TAP with it, quietly: its VTEPs
    /// are resolved again and each logs where it goes now. One of our TAPs deleted by someone
    /// else is replaced (the next resolution makes a new one), said once and counted.
    fn device_removed(&self, index: u32) {
        let mut taps = lock(&self.taps);
        if let Some(tap) = taps.remove(&index) {
            drop(taps);
            tracing::debug!(tap = %tap.name, "underlay device {index} removed");
            retire(&tap);
            return;
        }
        let target = taps.values().find(|t| t.index == index).map(|t| t.target);
        drop(taps);
        if let Some(target) = target {
            self.tap_deleted(target);
        }
    }

    /// The underlay TAP serving device `target` was deleted by someone else (found by its
    /// notification, a failed write or a check, whichever first: said and counted once).
    fn tap_deleted(&self, target: u32) {
        let Some(tap) = lock(&self.taps).remove(&target) else {
            return;
        };
        Events::bump(&self.counters.redirects_restored);
        self.generation.fetch_add(1, Relaxed);
        tracing::warn!(tap = %tap.name, "tunnel GSO: underlay TAP {} deleted by someone else; its VTEPs get a new one", tap.name);
    }

    /// Device `index` changed: when it is an underlay device whose MAC or MTU moved, that is
    /// logged once and counted (the workers pick the new values up when they re-resolve).
    fn device_changed(&self, index: u32) {
        let Some(tap) = lock(&self.taps).get(&index).cloned() else {
            return;
        };
        let Ok(eligible) = eligible(index) else {
            return;
        };
        let (mac, mtu) = std::mem::replace(&mut *lock(&tap.seen), eligible);
        let mut what = Vec::new();
        if mac != eligible.0 {
            what.push(format!(
                "MAC {} (was {})",
                MacAddr(eligible.0),
                MacAddr(mac)
            ));
        }
        if mtu != eligible.1 {
            what.push(format!("MTU {} (was {mtu})", eligible.1));
        }
        if !what.is_empty() {
            Events::bump(&self.counters.path_changes);
            tracing::info!(
                "tunnel GSO: underlay device {} changed: {}",
                target_name(index),
                what.join(", ")
            );
        }
    }
}

/// Follows the kernel's changes for as long as the engine holds `underlay`: any change makes the
/// workers re-resolve; an underlay device gone takes its TAP with it; a redirect removed by
/// someone else is put back.
pub(crate) fn follow(underlay: Weak<Underlay>) -> std::io::Result<()> {
    let mut changes = Changes::subscribe()?;
    let step = Duration::from_millis(250);
    let mut since_check = Duration::ZERO;
    loop {
        let seen = changes.wait(step)?;
        let Some(underlay) = underlay.upgrade() else {
            return Ok(());
        };
        since_check += step;
        let Some(seen) = seen else {
            if since_check >= CHECK_EVERY {
                since_check = Duration::ZERO;
                underlay.restore_redirects();
            }
            continue;
        };
        underlay.generation.fetch_add(1, Relaxed);
        for change in &seen {
            match change.kind {
                libc::RTM_DELLINK => underlay.device_removed(change.ifindex),
                libc::RTM_NEWLINK => underlay.device_changed(change.ifindex),
                _ => {}
            }
        }
        // Kind 0: notifications were lost, anything may have changed. A NEWLINK may be one of
        // our TAPs set down.
        if seen.iter().any(|c| {
            matches!(
                c.kind,
                libc::RTM_DELQDISC | libc::RTM_DELTFILTER | libc::RTM_NEWLINK | 0
            )
        }) {
            underlay.restore_redirects();
        }
    }
}

/// Deletes an underlay TAP taken out of use now, rather than when the last worker that cached
/// it lets go (an idle worker may hold it for long): its writes fail from then on (`EBADFD`),
/// which sends the worker to resolve again.
fn retire(tap: &UnderlayTap) {
    let deleted = crate::sys::link::Netlink::open().and_then(|mut nl| nl.delete_link(tap.index));
    if let Err(e) = deleted {
        tracing::debug!(tap = %tap.name, "cannot delete a retired underlay TAP: {e}");
    }
}

/// The MAC and MTU of device `index` if the tunnel path may send out of it: an Ethernet device
/// that is up and is no TUN/TAP (another engine's TAP, or one of ours).
fn eligible(index: u32) -> Result<([u8; 6], u32), String> {
    let link = iface::link_state_of(index).map_err(|e| format!("device {index}: {e}"))?;
    let name = target_name(index);
    if link.link_type != ARPHRD_ETHER || link.kind.as_deref() == Some("tun") {
        return Err(format!(
            "{name} is not an Ethernet device vxnet may redirect to"
        ));
    }
    if !link.up {
        return Err(format!("{name} is down"));
    }
    match (link.mac, link.mtu) {
        (Some(mac), Some(mtu)) => Ok((mac, mtu)),
        _ => Err(format!("{name} has no MAC address or MTU")),
    }
}

fn target_name(index: u32) -> String {
    crate::sys::iface::if_name(index).unwrap_or_else(|| index.to_string())
}

/// `net.ipv4.ip_default_ttl`: what the socket path's packets get with `ttl auto`.
fn default_ttl() -> u8 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(64)
}
