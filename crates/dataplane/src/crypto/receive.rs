//! Datagrams from the ESP-in-UDP socket (one, or a UDP GRO run of them) to authenticated VXLAN
//! packets, or counted drops. No I/O: the worker hands the datagrams in (they are decrypted in
//! place), the forwarder then treats each VXLAN packet as coming from its SA's sender.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::Ordering;

use vxnet_encap::esp::{classify, establish, EspDropReason, EspError, Opened, UdpEncapKind};
use vxnet_encap::wire::UDP_HEADER_LEN;

use super::inbound::{EstablishBudget, InboundSa};
use crate::counters::{DropCounters, DropReason};
use crate::fdb::Millis;
use crate::forward::Forwarder;

/// What became of a datagram received on the ESP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EspReceived {
    /// Authenticated and decrypted in place: `datagram[vxlan]` is the VXLAN packet (header and
    /// inner frame) of network `network`, sent by the VTEP `sender` (its configured address).
    Vxlan {
        network: usize,
        sender: IpAddr,
        vxlan: Range<usize>,
    },
    /// An RFC 3948 NAT keepalive: nothing to deliver.
    Keepalive,
    /// Dropped and counted.
    Drop(DropReason),
}

/// The drop counter of an ESP error on receive.
pub fn drop_reason(error: &EspError) -> DropReason {
    match error.drop_reason() {
        EspDropReason::Malformed => DropReason::EspMalformed,
        EspDropReason::UnknownSpi => DropReason::EspUnknownSpi,
        EspDropReason::Replay => DropReason::EspReplay,
        EspDropReason::Auth => DropReason::EspAuth,
        EspDropReason::BeyondWindow => DropReason::EspBeyondWindow,
    }
}

fn dropped(drops: &DropCounters, reason: DropReason) -> EspReceived {
    drops.count(reason);
    EspReceived::Drop(reason)
}

/// Scratch space of [`receive_run`], kept by the worker so that a run allocates nothing.
#[derive(Debug)]
pub struct RunBuffers {
    /// The packets of one SPI's stretch of the run, as ranges of the run.
    packets: Vec<Range<usize>>,
    results: Vec<Result<Opened, EspError>>,
}

impl RunBuffers {
    /// Room for runs of `packets` packets (a UDP GRO read holds at most 64) before any grows.
    pub fn with_capacity(packets: usize) -> Self {
        RunBuffers {
            packets: Vec::with_capacity(packets),
            results: Vec::with_capacity(packets),
        }
    }

    /// Opens the stretch in `packets` with `sa` (results in `results`); the SA's sender.
    fn open_with(
        &mut self,
        sa: &InboundSa,
        data: &mut [u8],
        forwarder: &Forwarder,
        now: Millis,
    ) -> IpAddr {
        sa.open_run(
            data,
            &self.packets,
            &forwarder.floors,
            now,
            &mut self.results,
        );
        sa.sender()
    }
}

/// The SPI of an ESP packet; `None` for a NAT keepalive, IKE or something malformed.
fn esp_spi(packet: &[u8]) -> Option<u32> {
    match classify(packet) {
        // `classify` checked the length.
        Ok(UdpEncapKind::Esp) => Some(u32::from_be_bytes([
            packet[0], packet[1], packet[2], packet[3],
        ])),
        _ => None,
    }
}

/// Authenticates and decrypts in place the datagrams of `data` (from `source`): one datagram, or a
/// UDP GRO run of them every `size` bytes (the last one possibly shorter). Consecutive packets
/// under one known SPI are opened together ([`InboundSa::open_run`]: the SA is looked up, its
/// window locked and its counters moved once for them all). An SPI no network knows yet is tried
/// against the encrypted networks' keys and peers (`esp::establish`, `scratch` holds the trial),
/// within `budget`. `each` gets `data` and what became of each datagram, in order (a `Vxlan`
/// range is within `data`).
#[allow(clippy::too_many_arguments)]
pub fn receive_run(
    forwarder: &Forwarder,
    now: Millis,
    source: SocketAddr,
    data: &mut [u8],
    size: usize,
    scratch: &mut [u8],
    budget: &mut EstablishBudget,
    bufs: &mut RunBuffers,
    mut each: impl FnMut(&mut [u8], EspReceived),
) {
    let size = size.max(1);
    let mut start = 0;
    while start < data.len() {
        let end = (start + size).min(data.len());
        let Some(spi) = esp_spi(&data[start..end]) else {
            let received = not_esp(forwarder, &data[start..end]);
            each(data, received);
            start = end;
            continue;
        };
        // This packet and the ones after it under the same SPI.
        bufs.packets.clear();
        bufs.packets.push(start..end);
        let mut next = end;
        while next < data.len() {
            let packet = next..(next + size).min(data.len());
            if esp_spi(&data[packet.clone()]) != Some(spi) {
                break;
            }
            next = packet.end;
            bufs.packets.push(packet);
        }
        if open_known(forwarder, now, source, spi, data, bufs, &mut each) {
            start = next;
            continue;
        }
        // An SPI no network knows yet: the first packet may establish it; the next ones then
        // find it.
        bufs.packets.truncate(1);
        establish_and_open(
            forwarder, now, source, data, scratch, budget, bufs, &mut each,
        );
        start = end;
    }
}

/// What a datagram on the ESP port that is not ESP is.
fn not_esp(forwarder: &Forwarder, datagram: &[u8]) -> EspReceived {
    match classify(datagram) {
        Ok(UdpEncapKind::NatKeepalive) => EspReceived::Keepalive,
        // IKE (behind the non-ESP marker) is not spoken here: keys are static or the cluster's.
        _ => dropped(&forwarder.drops, DropReason::EspMalformed),
    }
}

/// Opens `bufs.packets` with the inbound SA of `spi`, if a network has one.
fn open_known(
    forwarder: &Forwarder,
    now: Millis,
    source: SocketAddr,
    spi: u32,
    data: &mut [u8],
    bufs: &mut RunBuffers,
    each: &mut impl FnMut(&mut [u8], EspReceived),
) -> bool {
    for (index, network) in forwarder.networks().iter().enumerate() {
        let Some(crypto) = &network.crypto else {
            continue;
        };
        let opened = crypto
            .inbound
            .with(spi, |sa| bufs.open_with(sa, data, forwarder, now));
        if let Some(sender) = opened {
            let opened = OpenedBy {
                network: index,
                sender,
            };
            opened.hand_on(forwarder, source, data, bufs, each);
            return true;
        }
    }
    false
}

/// The first packet of `bufs.packets` under an SPI no network knows: tried against every
/// encrypted network's keys and peers, opened if one verifies it.
#[allow(clippy::too_many_arguments)]
fn establish_and_open(
    forwarder: &Forwarder,
    now: Millis,
    source: SocketAddr,
    data: &mut [u8],
    scratch: &mut [u8],
    budget: &mut EstablishBudget,
    bufs: &mut RunBuffers,
    each: &mut impl FnMut(&mut [u8], EspReceived),
) {
    let Some(packet) = bufs.packets.first().cloned() else {
        return;
    };
    let networks = forwarder.networks();
    if !networks.iter().any(|n| n.crypto.is_some()) {
        // The mixed-peers case from this side: a peer encrypts a network this host serves in
        // plaintext (or serves none of).
        if forwarder.esp_log.allow(now) {
            tracing::warn!(
                from = %source,
                "ESP-in-UDP received, but no network here is encrypted: a peer has a key for a network this host serves in plaintext (give it --key-file / key_file too); dropped"
            );
        }
        each(data, dropped(&forwarder.drops, DropReason::EspNoKey));
        return;
    }
    if !budget.take(now) {
        each(
            data,
            dropped(&forwarder.drops, DropReason::EspEstablishLimited),
        );
        return;
    }
    let datagram = &data[packet.clone()];
    for (index, network) in networks.iter().enumerate() {
        let Some(crypto) = &network.crypto else {
            continue;
        };
        let ring = crypto.ring();
        let peers = network.peers();
        let from = source.ip();
        // The packet's source first (no NAT in between, the usual case), then the other peers:
        // behind a NAT the SA's sender is a configured peer whose packets come from elsewhere.
        let first = (forwarder.accept_any() || peers.allows(from)).then_some(from);
        let candidates = first.into_iter().chain(
            peers
                .allowed
                .iter()
                .copied()
                .filter(move |ip| Some(*ip) != first),
        );
        let keys = ring.keys.iter().map(|(epoch, key)| (*epoch, key));
        match establish(datagram, keys, candidates, forwarder.local(), scratch) {
            Ok(sa) => {
                let vni = network.settings.vni.get();
                let sa = crypto
                    .inbound
                    .insert(InboundSa::new(sa, vni, &forwarder.floors, now));
                crypto
                    .counters
                    .sas_established
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    network = %network.settings.name,
                    spi = %sa.id().spi,
                    peer = %sa.sender(),
                    from = %source,
                    epoch = sa.id().epoch.0,
                    "inbound SA established"
                );
                let opened = OpenedBy {
                    network: index,
                    sender: bufs.open_with(&sa, data, forwarder, now),
                };
                opened.hand_on(forwarder, source, data, bufs, each);
                return;
            }
            Err(EspError::UnknownSpi { .. } | EspError::BadIcv) => continue,
            Err(e) => {
                each(data, dropped(&forwarder.drops, drop_reason(&e)));
                return;
            }
        }
    }
    if forwarder.esp_log.allow(now) {
        let spi = esp_spi(datagram).unwrap_or_default();
        tracing::info!(
            from = %source,
            spi = format!("{spi:#010x}"),
            "ESP with an SPI no key and peer of an encrypted network here verifies (another key, or forged); dropped"
        );
    }
    each(data, dropped(&forwarder.drops, DropReason::EspUnknownSpi));
}

/// Packets an inbound SA of network `network`, sent by `sender`, has just opened.
struct OpenedBy {
    network: usize,
    sender: IpAddr,
}

impl OpenedBy {
    /// Counts what `bufs.results` holds (once for the run), follows the sender's endpoint and
    /// hands each packet on.
    fn hand_on(
        self,
        forwarder: &Forwarder,
        source: SocketAddr,
        data: &mut [u8],
        bufs: &RunBuffers,
        each: &mut impl FnMut(&mut [u8], EspReceived),
    ) {
        let Some(network) = forwarder.networks().get(self.network) else {
            return;
        };
        let Some(crypto) = &network.crypto else {
            return;
        };
        let decrypted = bufs.results.iter().filter(|r| r.is_ok()).count() as u64;
        if decrypted > 0 {
            crypto
                .counters
                .decrypted
                .fetch_add(decrypted, Ordering::Relaxed);
            if crypto.saw_endpoint(self.sender, source, forwarder.esp_port()) {
                tracing::info!(
                    network = %network.settings.name,
                    peer = %self.sender,
                    endpoint = %source,
                    "peer endpoint moved (authenticated packet from a new address or port)"
                );
            }
        }
        for (packet, result) in bufs.packets.iter().zip(&bufs.results) {
            let received = match result {
                Ok(opened) => {
                    // The plaintext starts with the VXLAN packet's own UDP header.
                    let start = packet.start + opened.payload.start + UDP_HEADER_LEN;
                    let end = packet.start + opened.payload.end;
                    if start > end {
                        dropped(&network.drops, DropReason::EspMalformed)
                    } else {
                        EspReceived::Vxlan {
                            network: self.network,
                            sender: self.sender,
                            vxlan: start..end,
                        }
                    }
                }
                Err(e) => dropped(&network.drops, drop_reason(e)),
            };
            each(data, received);
        }
    }
}
