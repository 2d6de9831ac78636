//! The endpoints this host attached, kept in `<state dir>/endpoints.json` so that a restarted
//! engine knows them (and, in cluster mode, re-asserts their records), and the static-mode
//! address allocator over them.
//!
//! The file is rewritten whole (temporary file, fsync, rename) on every change: a crash leaves
//! the old or the new version, never half of one. Records that do not decode, or whose fields
//! disagree (an address outside its network's subnet, a name DNS cannot carry), are dropped
//! with one warning at load and never used.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::control::proto::Endpoint;

/// The file under the state dir.
const FILE: &str = "endpoints.json";
/// The largest subnet the allocator walks (the "up to /16"): 65536 addresses.
pub(super) const MAX_HOST_BITS: u8 = 16;

/// One endpoint as kept locally: the record plus the namespace it was made in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Entry {
    #[serde(flatten)]
    pub(super) endpoint: Endpoint,
    /// The namespace's identity (`dev:ino`), so that `/proc/PID/ns/net` and `/run/netns/X` of
    /// one namespace are recognised as one.
    pub(super) netns_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    endpoints: Vec<serde_json::Value>,
    /// The last address handed out per network: allocation goes on after it (round robin), so
    /// an address just released is not reused while peers' ARP caches still hold its MAC.
    #[serde(default)]
    cursors: BTreeMap<String, IpAddr>,
}

#[derive(Debug)]
pub(super) struct Book {
    path: Option<PathBuf>,
    pub(super) entries: BTreeMap<String, Entry>,
    cursors: BTreeMap<String, IpAddr>,
}

impl Book {
    /// A book that is never saved (engines started without a state dir: tests, `vxnet demo`).
    pub(super) fn in_memory() -> Book {
        Book {
            path: None,
            entries: BTreeMap::new(),
            cursors: BTreeMap::new(),
        }
    }

    /// Loads `<dir>/endpoints.json` (none yet is an empty book).
    pub(super) fn load(dir: &Path) -> std::io::Result<Book> {
        let path = dir.join(FILE);
        let mut book = Book {
            path: Some(path.clone()),
            ..Book::in_memory()
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(book),
            Err(e) => return Err(e),
        };
        let file: File = match serde_json::from_str(&text) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "endpoint records unreadable: starting without them");
                return Ok(book);
            }
        };
        let mut dropped = 0;
        for value in file.endpoints {
            match serde_json::from_value::<Entry>(value) {
                Ok(entry) if coherent(&entry.endpoint) => {
                    book.entries.insert(entry.endpoint.id.clone(), entry);
                }
                _ => dropped += 1,
            }
        }
        if dropped > 0 {
            tracing::warn!(path = %path.display(), dropped, "endpoint records that do not decode or disagree with themselves were dropped");
        }
        book.cursors = file.cursors;
        Ok(book)
    }

    /// Writes the book atomically; a book without a path does nothing.
    pub(super) fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = File {
            endpoints: self
                .entries
                .values()
                .filter_map(|e| serde_json::to_value(e).ok())
                .collect(),
            cursors: self.cursors.clone(),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        crate::files::write_atomic(path, &text)
    }

    pub(super) fn in_network<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a Entry> {
        self.entries
            .values()
            .filter(move |e| e.endpoint.network == network)
    }

    /// Whether `addr` is held by an endpoint of `network` here.
    pub(super) fn address_taken(&self, network: &str, addr: IpAddr) -> bool {
        self.in_network(network)
            .any(|e| e.endpoint.address.addr() == addr)
    }

    /// The next free address of `pool` (part of `subnet`) after the network's cursor (round
    /// robin), skipping the subnet's own and broadcast address, `gateway` and every address held
    /// here; the cursor moves on to it. `None` when the pool is full.
    pub(super) fn allocate(
        &mut self,
        network: &str,
        pool: IpNet,
        subnet: IpNet,
        gateway: IpAddr,
    ) -> Option<IpAddr> {
        let (IpNet::V4(v4), IpNet::V4(whole)) = (pool.trunc(), subnet.trunc()) else {
            return None;
        };
        let host_bits = 32 - u32::from(v4.prefix_len());
        if host_bits > u32::from(MAX_HOST_BITS) {
            return None;
        }
        let base = u32::from(v4.network());
        let size = 1u32 << host_bits;
        let start = match self.cursors.get(network) {
            Some(IpAddr::V4(last)) if v4.contains(last) => u32::from(*last) - base,
            _ => 0,
        };
        for step in 1..=size {
            let offset = (start + step) % size;
            let addr = std::net::Ipv4Addr::from(base + offset);
            // Not the subnet's own address, not its broadcast address.
            if addr == whole.network() || addr == whole.broadcast() {
                continue;
            }
            let addr = IpAddr::V4(addr);
            if addr == gateway || self.address_taken(network, addr) {
                continue;
            }
            self.cursors.insert(network.to_string(), addr);
            return Some(addr);
        }
        None
    }

    /// Forgets every endpoint of `network` (and its cursor), returning them; `None` when the
    /// book held nothing of it, so there is nothing to save (a state dir the network never used
    /// gets no file).
    pub(super) fn remove_network(&mut self, network: &str) -> Option<Vec<Entry>> {
        let ids: Vec<String> = self
            .in_network(network)
            .map(|e| e.endpoint.id.clone())
            .collect();
        let had_cursor = self.cursors.remove(network).is_some();
        if ids.is_empty() && !had_cursor {
            return None;
        }
        Some(
            ids.iter()
                .filter_map(|id| self.entries.remove(id))
                .collect(),
        )
    }
}

/// A record agrees with itself: its address in its own subnet (the gateway's), a name and
/// aliases DNS can carry, an interface name the kernel takes.
fn coherent(e: &Endpoint) -> bool {
    let subnet = e.address.trunc();
    subnet.contains(&e.gateway)
        && super::check::label(&e.name).is_ok()
        && e.aliases.iter().all(|a| super::check::label(a).is_ok())
        && crate::sys::validate_ifname(&e.ifname).is_ok()
        && crate::sys::validate_ifname(&e.host_ifname).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_round_robin_and_skips_what_is_held() {
        let mut book = Book::in_memory();
        let subnet: IpNet = "10.9.0.0/29".parse().unwrap();
        let gw: IpAddr = "10.9.0.1".parse().unwrap();
        let got: Vec<IpAddr> = (0..5)
            .map(|_| book.allocate("n", subnet, subnet, gw).unwrap())
            .collect();
        let want: Vec<IpAddr> = (2..=6)
            .map(|i| format!("10.9.0.{i}").parse().unwrap())
            .collect();
        // Nothing is held, so the cursor alone keeps the allocation moving: .2 … .6, then
        // around again without the network (.0), broadcast (.7) or gateway (.1) addresses.
        assert_eq!(got, want);
        assert_eq!(
            book.allocate("n", subnet, subnet, gw),
            Some("10.9.0.2".parse().unwrap())
        );
        // A pool: only its addresses, the subnet's broadcast address still skipped.
        let pool: IpNet = "10.9.0.6/31".parse().unwrap();
        assert_eq!(
            book.allocate("p", pool, subnet, gw),
            Some("10.9.0.6".parse().unwrap())
        );
        assert_eq!(
            book.allocate("p", pool, subnet, gw),
            Some("10.9.0.6".parse().unwrap())
        );
        // A /15 is larger than the allocator walks.
        let wide: IpNet = "10.0.0.0/15".parse().unwrap();
        assert_eq!(book.allocate("n", wide, wide, gw), None);
        // A /16 holds far more than 250.
        let big: IpNet = "10.20.0.0/16".parse().unwrap();
        let gw16: IpAddr = "10.20.0.1".parse().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(book.allocate("big", big, big, gw16).unwrap()));
        }
    }
}
