//! One datagram from the ESP-in-UDP socket to an authenticated VXLAN packet, or a counted drop.
//! No I/O: the worker hands the datagram in (and decrypts it in place), the forwarder then treats
//! the VXLAN packet as coming from the SA's sender.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::Ordering;

use vxnet_encap::esp::{classify, establish, EspDropReason, EspError, UdpEncapKind};
use vxnet_encap::wire::UDP_HEADER_LEN;

use super::inbound::{EstablishBudget, InboundSa};
use super::NetworkCrypto;
use crate::counters::{DropCounters, DropReason};
use crate::fdb::Millis;
use crate::forward::Forwarder;
use crate::network::Network;

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

/// Authenticates and decrypts `datagram` (from `source`) in place. An SPI no network knows yet
/// is tried against the encrypted networks' keys and peers (`esp::establish`, `scratch` holds the
/// trial), within `budget`.
pub fn receive(
    forwarder: &Forwarder,
    now: Millis,
    source: SocketAddr,
    datagram: &mut [u8],
    scratch: &mut [u8],
    budget: &mut EstablishBudget,
) -> EspReceived {
    match classify(datagram) {
        Ok(UdpEncapKind::Esp) => {}
        Ok(UdpEncapKind::NatKeepalive) => return EspReceived::Keepalive,
        // IKE (behind the non-ESP marker) is not spoken here: keys are static or the cluster's.
        Ok(UdpEncapKind::NonEsp) | Err(_) => {
            return dropped(&forwarder.drops, DropReason::EspMalformed)
        }
    }
    // `classify` checked the length.
    let spi = u32::from_be_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]);
    let networks = forwarder.networks();
    let mut any_encrypted = false;
    for (index, network) in networks.iter().enumerate() {
        let Some(crypto) = &network.crypto else {
            continue;
        };
        any_encrypted = true;
        let opened = crypto.inbound.with(spi, |sa| {
            open(forwarder, index, network, crypto, sa, source, datagram, now)
        });
        if let Some(result) = opened {
            return result;
        }
    }
    if !any_encrypted {
        // The mixed-peers case from this side: a peer encrypts a network this host serves in
        // plaintext (or serves none of).
        if forwarder.esp_log.allow(now) {
            tracing::warn!(
                from = %source,
                "ESP-in-UDP received, but no network here is encrypted: a peer has a key for a network this host serves in plaintext (give it --key-file / key_file too); dropped"
            );
        }
        return dropped(&forwarder.drops, DropReason::EspNoKey);
    }
    if !budget.take(now) {
        return dropped(&forwarder.drops, DropReason::EspEstablishLimited);
    }
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
                return open(
                    forwarder, index, network, crypto, &sa, source, datagram, now,
                );
            }
            Err(EspError::UnknownSpi { .. } | EspError::BadIcv) => continue,
            Err(e) => return dropped(&forwarder.drops, drop_reason(&e)),
        }
    }
    if forwarder.esp_log.allow(now) {
        tracing::info!(
            from = %source,
            spi = format!("{spi:#010x}"),
            "ESP with an SPI no key and peer of an encrypted network here verifies (another key, or forged); dropped"
        );
    }
    dropped(&forwarder.drops, DropReason::EspUnknownSpi)
}

#[allow(clippy::too_many_arguments)]
fn open(
    forwarder: &Forwarder,
    index: usize,
    network: &Network,
    crypto: &NetworkCrypto,
    sa: &InboundSa,
    source: SocketAddr,
    datagram: &mut [u8],
    now: Millis,
) -> EspReceived {
    match sa.open(datagram, &forwarder.floors, now) {
        Ok(opened) => {
            crypto.counters.decrypted.fetch_add(1, Ordering::Relaxed);
            let sender = sa.sender();
            if crypto.saw_endpoint(sender, source, forwarder.esp_port()) {
                tracing::info!(
                    network = %network.settings.name,
                    peer = %sender,
                    endpoint = %source,
                    "peer endpoint moved (authenticated packet from a new address or port)"
                );
            }
            // The plaintext starts with the VXLAN packet's own UDP header.
            let start = opened.payload.start + UDP_HEADER_LEN;
            if start > opened.payload.end {
                return dropped(&network.drops, DropReason::EspMalformed);
            }
            EspReceived::Vxlan {
                network: index,
                sender,
                vxlan: start..opened.payload.end,
            }
        }
        Err(e) => dropped(&network.drops, drop_reason(&e)),
    }
}
