//! The ESP leg of a worker (encrypted networks, see [`crate::crypto`]).
//!
//! TAP → wire: frames of an encrypted network are planned like any other (classified, segmented,
//! wrapped in VXLAN, in [`tx`](super::tx)); [`EspTx::seal`] then takes those entries out of the
//! plan and, for each destination VTEP (one, or every flood peer), lays each VXLAN datagram out
//! with room for the ESP header, the inner UDP header and the trailer in the worker's ESP
//! buffers and seals it in place with the worker's SA for that peer. Segments of one superframe
//! have equal lengths, so their sealed packets do too: a run of them still goes out as one
//! `UDP_SEGMENT` send. The copy into the ESP buffer is the price of sealing a flood copy per
//! peer (each peer has its own key) and of the per-segment header room; it is ~5 % of the
//! AES-GCM pass it precedes.
//!
//! Wire → TAP: datagrams from the ESP socket (UDP GRO runs too) are authenticated and decrypted
//! in place ([`crate::crypto::receive`]) and then take the path plaintext VXLAN takes, as coming
//! from the SA's sender.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use vxnet_encap::esp::MAX_OVERHEAD;
use vxnet_encap::flow::{flow_hash, source_port_for};
use vxnet_encap::offload::{MAX_GSO_SEGMENTS, MAX_UDP_GSO_PAYLOAD};
use vxnet_encap::wire::{UdpPacket, UdpRepr, UDP_HEADER_LEN, VXLAN_HEADER_LEN};

use super::send::{EspPath, Sender};
use super::tx::{Planned, MAX_FRAME};
use super::{Worker, BATCH};
use crate::counters::{DropReason, Events};
use crate::crypto::inbound::EstablishBudget;
use crate::crypto::outbound::WorkerSeals;
use crate::crypto::receive::{receive_run, EspReceived, RunBuffers};
use crate::crypto::KEEPALIVE_INTERVAL_MS;
use crate::fdb::Millis;
use crate::forward::{Forwarder, WireAction, WireRun};
use crate::sys::tap::TapQueue;
use crate::sys::udp::UdpSocket;

/// ESP header and IV in front of the inner UDP header.
const ESP_HEADER: usize = 16;
/// In front of each VXLAN datagram in an ESP buffer: ESP header and IV, inner UDP header.
/// One ESP buffer: a full-size superframe's worth of segments and their ESP overhead.
const BUF_LEN: usize = MAX_FRAME + 2 * MAX_GSO_SEGMENTS * (VXLAN_HEADER_LEN + 146 + MAX_OVERHEAD);

/// The sealed length of a VXLAN datagram of `len` bytes: its UDP header and it, behind the ESP
/// header, padded, with trailer and ICV.
fn sealed_len(len: usize) -> usize {
    let payload = UDP_HEADER_LEN + len;
    payload + vxnet_encap::esp::wire::overhead(payload)
}

/// A worker's ESP sending side: its SAs and the buffers sealed packets are laid out in.
pub(super) struct EspTx {
    worker: usize,
    /// Per network (indexed like the TAPs); `None` for plaintext networks.
    seals: Vec<Option<WorkerSeals>>,
    bufs: Vec<Box<[u8]>>,
    /// Buffer being filled and the fill position in it.
    buf: usize,
    pos: usize,
    plan: Vec<Planned>,
    /// The VTEP each entry of `plan` goes to (what is counted; `dest` is its endpoint).
    vteps: Vec<IpAddr>,
    /// Flood targets of one entry, reused.
    targets: Vec<IpAddr>,
}

impl std::fmt::Debug for EspTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EspTx")
            .field("worker", &self.worker)
            .finish()
    }
}

impl EspTx {
    pub(super) fn new(forwarder: &Forwarder, worker: usize) -> Self {
        let seals: Vec<Option<WorkerSeals>> = forwarder
            .networks()
            .iter()
            .map(|n| n.crypto.as_ref().map(|_| WorkerSeals::default()))
            .collect();
        let any = seals.iter().any(Option::is_some);
        // Buffers only for a worker that serves an encrypted network.
        let count = if any { BATCH / 4 } else { 0 };
        EspTx {
            worker,
            seals,
            bufs: (0..count)
                .map(|_| vec![0u8; BUF_LEN].into_boxed_slice())
                .collect(),
            buf: 0,
            pos: 0,
            plan: Vec::with_capacity(if any { BATCH * 4 } else { 0 }),
            vteps: Vec::with_capacity(if any { BATCH * 4 } else { 0 }),
            targets: Vec::with_capacity(if any { 64 } else { 0 }),
        }
    }

    /// True when network `index` is encrypted (its frames must never leave in plaintext).
    pub(super) fn encrypted(&self, index: usize) -> bool {
        matches!(self.seals.get(index), Some(Some(_)))
    }

    /// Follows key-ring changes; call once per batch.
    pub(super) fn refresh(&mut self, forwarder: &Forwarder) {
        for (seals, network) in self.seals.iter_mut().zip(forwarder.networks()) {
            if let (Some(seals), Some(crypto)) = (seals, &network.crypto) {
                seals.refresh(crypto);
            }
        }
    }

    /// Sends `plan` (ranges of `bufs`): the entries of plaintext networks by `sender` as
    /// always, those of encrypted networks sealed and sent from `esp_socket`. ICMP too-big
    /// replies go into `taps.0` (with a virtio-net header when `taps.1`).
    pub(super) fn dispatch(
        &mut self,
        forwarder: &Forwarder,
        sender: &mut Sender,
        taps: (&[TapQueue], bool),
        esp_socket: Option<&UdpSocket>,
        bufs: &[Box<[u8]>],
        plan: &mut [Planned],
    ) {
        if !self.seals.iter().any(Option::is_some) {
            sender.send(forwarder, taps.0, taps.1, bufs, plan);
            return;
        }
        // Plaintext entries first; only those reach the plain sender.
        plan.sort_unstable_by_key(|p| self.encrypted(p.network));
        let plain = plan
            .iter()
            .take_while(|p| !self.encrypted(p.network))
            .count();
        let (plain_plan, esp_plan) = plan.split_at_mut(plain);
        sender.send(forwarder, taps.0, taps.1, bufs, plain_plan);
        let Some(socket) = esp_socket else {
            for p in esp_plan.iter() {
                count_drop(forwarder, p.network, DropReason::SendError);
            }
            return;
        };
        self.refresh(forwarder);
        for p in esp_plan.iter() {
            self.seal_entry(forwarder, sender, taps, socket, bufs, p);
        }
        self.flush(forwarder, sender, socket);
    }

    /// Seals one planned entry once per destination VTEP whose path it fits.
    fn seal_entry(
        &mut self,
        forwarder: &Forwarder,
        sender: &mut Sender,
        taps: (&[TapQueue], bool),
        socket: &UdpSocket,
        bufs: &[Box<[u8]>],
        p: &Planned,
    ) {
        let Some(network) = forwarder.networks().get(p.network) else {
            return;
        };
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        match p.dest {
            Some(dest) => targets.push(dest.ip()),
            None => {
                let local_is_v4 = forwarder.local().is_ipv4();
                for dest in network.peers().flood.iter() {
                    if dest.is_ipv4() == local_is_v4 {
                        targets.push(dest.ip());
                    } else {
                        network.drops.count(DropReason::WrongFamily);
                    }
                }
            }
        }
        let Some(data) = bufs.get(p.buf).and_then(|b| b.get(p.start..p.end)) else {
            self.targets = targets;
            return;
        };
        let seg_len = match p.segment_size {
            Some(size) if p.segments > 1 => usize::from(size),
            _ => data.len(),
        };
        let first = &data[..seg_len.min(data.len())];
        for vtep in &targets {
            let endpoint = match &network.crypto {
                Some(crypto) => crypto.endpoint(*vtep, forwarder.esp_port()),
                None => continue,
            };
            let gso = match sender.esp_path(forwarder, taps, p, first, seg_len, endpoint) {
                EspPath::Fits => sender.gso(),
                EspPath::Fragment => false,
                EspPath::TooBig => continue,
            };
            self.seal_copy(forwarder, sender, socket, p, *vtep, data, seg_len, gso);
        }
        self.targets = targets;
    }

    /// Seals the datagrams of `data` (each `seg_len` long, the last possibly shorter) for
    /// `vtep`, in runs that fit one `UDP_SEGMENT` send.
    #[allow(clippy::too_many_arguments)]
    fn seal_copy(
        &mut self,
        forwarder: &Forwarder,
        sender: &mut Sender,
        socket: &UdpSocket,
        p: &Planned,
        vtep: IpAddr,
        data: &[u8],
        seg_len: usize,
        gso: bool,
    ) {
        let index = p.network;
        let Some(network) = forwarder.networks().get(index) else {
            return;
        };
        let Some(crypto) = &network.crypto else {
            return;
        };
        let stride = sealed_len(seg_len);
        let per_send = if gso {
            (MAX_UDP_GSO_PAYLOAD / stride).clamp(1, MAX_GSO_SEGMENTS)
        } else {
            1
        };
        let endpoint = crypto.endpoint(vtep, forwarder.esp_port());
        let local = forwarder.local();
        // The datagrams are segments of one frame: one flow, one source port.
        let port = data
            .get(VXLAN_HEADER_LEN..seg_len.min(data.len()))
            .map(flow_hash)
            .map(source_port_for)
            .unwrap_or(forwarder.port());
        let mut chunks = data.chunks(seg_len.max(1)).peekable();
        while chunks.peek().is_some() {
            // Room for a whole run in the current buffer, or the next one, or send first.
            let run_len = per_send * stride;
            if self.pos + run_len > BUF_LEN {
                self.buf += 1;
                self.pos = 0;
                if self.buf >= self.bufs.len() {
                    self.flush(forwarder, sender, socket);
                }
            }
            let run_start = self.pos;
            let mut count = 0;
            let mut inner_bytes = 0;
            let Some(seals) = self.seals.get_mut(index).and_then(Option::as_mut) else {
                return;
            };
            let Some(out_sa) = seals.sa_for(crypto, local, vtep, self.worker) else {
                network.drops.count(DropReason::SendError);
                return;
            };
            let buf = &mut self.bufs[self.buf];
            let mut sealed_bytes = 0;
            while count < per_send {
                let Some(datagram) = chunks.next() else {
                    break;
                };
                let pos = self.pos;
                let udp = pos + ESP_HEADER;
                let body = udp + UDP_HEADER_LEN;
                let end = body + datagram.len();
                buf[body..end].copy_from_slice(datagram);
                UdpRepr {
                    src_port: port,
                    dst_port: forwarder.port(),
                }
                .emit(
                    &mut UdpPacket::new_unchecked(&mut buf[udp..end]),
                    (end - udp) as u16,
                );
                match out_sa.sa.seal_in_place(buf, udp..end) {
                    Ok(sealed) => {
                        sealed_bytes += sealed.packet.len() as u64;
                        self.pos = sealed.packet.end;
                        count += 1;
                        inner_bytes += datagram.len().saturating_sub(VXLAN_HEADER_LEN);
                        // A shorter datagram ends the run (UDP_SEGMENT allows only the last one
                        // to be short).
                        if sealed.packet.len() != stride {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!("cannot seal: {e}");
                        network.drops.count(DropReason::SendError);
                    }
                }
            }
            if count == 0 {
                continue;
            }
            out_sa.sealed(count as u64, sealed_bytes);
            crypto
                .counters
                .encrypted
                .fetch_add(count as u64, Ordering::Relaxed);
            if count > 1 {
                Events::bump(&network.events.gso_batches);
            }
            self.plan.push(Planned {
                buf: self.buf,
                start: run_start,
                end: self.pos,
                network: index,
                dest: Some(endpoint),
                segment_size: (count > 1).then_some(stride as u16),
                segments: count,
                inner_bytes,
                socket: 0,
                outer: p.outer,
            });
            self.vteps.push(vtep);
        }
    }

    /// Sends what is sealed and starts the buffers over.
    fn flush(&mut self, forwarder: &Forwarder, sender: &mut Sender, socket: &UdpSocket) {
        sender.send_esp(forwarder, socket, &self.bufs, &self.plan, &self.vteps);
        self.plan.clear();
        self.vteps.clear();
        self.buf = 0;
        self.pos = 0;
    }
}

fn count_drop(forwarder: &Forwarder, network: usize, reason: DropReason) {
    if let Some(n) = forwarder.networks().get(network) {
        n.drops.count(reason);
    }
}

/// The ESP leg's receive side and timers.
#[derive(Debug)]
pub(super) struct EspRx {
    budget: EstablishBudget,
    /// Trial decryptions of unknown SPIs happen here, never in the received packet.
    scratch: Box<[u8]>,
    bufs: RunBuffers,
    next_keepalive: Millis,
}

impl EspRx {
    pub(super) fn new(now: Millis, encrypted: bool) -> Self {
        EspRx {
            budget: EstablishBudget::new(now),
            scratch: vec![0u8; if encrypted { MAX_FRAME } else { 0 }].into_boxed_slice(),
            bufs: RunBuffers::with_capacity(if encrypted { MAX_GSO_SEGMENTS } else { 0 }),
            next_keepalive: now,
        }
    }
}

impl EspRx {
    /// Authenticates and decrypts in place the ESP packets of `data` (one, or a UDP GRO run of
    /// them every `size` bytes) and classifies each VXLAN datagram (as coming from its SA's
    /// sender); `deliver` gets the network and the inner frame of each one to be delivered (see
    /// [`Worker::drain`](super::Worker::drain)).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_run(
        &mut self,
        forwarder: &Forwarder,
        now: Millis,
        source: SocketAddr,
        data: &mut [u8],
        size: usize,
        run: &mut WireRun,
        deliver: &mut impl FnMut(usize, &mut [u8]),
    ) {
        let EspRx {
            budget,
            scratch,
            bufs,
            ..
        } = self;
        let each = |data: &mut [u8], received| {
            let EspReceived::Vxlan {
                network,
                sender,
                vxlan,
            } = received
            else {
                return;
            };
            let action = forwarder.from_esp_run(now, network, sender, &data[vxlan.clone()], run);
            if let WireAction::Deliver { network, inner } = action {
                deliver(
                    network,
                    &mut data[vxlan.start + inner.start..vxlan.start + inner.end],
                );
            }
        };
        receive_run(
            forwarder, now, source, data, size, scratch, budget, bufs, each,
        );
    }
}

impl Worker {
    /// Milliseconds until the next NAT keepalive is due (worker 0 of an engine with encrypted
    /// networks only), for the poll timeout.
    pub(super) fn keepalive_due_in(&self) -> Option<u64> {
        if self.index != 0 || self.esp_socket.is_none() || !self.esp_tx_any() {
            return None;
        }
        Some(self.esp_rx.next_keepalive.saturating_sub(self.now()))
    }

    fn esp_tx_any(&self) -> bool {
        self.forwarder.networks().iter().any(|n| n.is_encrypted())
    }

    /// RFC 3948 §4 NAT keepalives: one 0xFF byte from the ESP socket to every peer endpoint of
    /// every encrypted network, every [`KEEPALIVE_INTERVAL_MS`].
    pub(super) fn send_keepalives(&mut self) {
        let now = self.now();
        if now < self.esp_rx.next_keepalive {
            return;
        }
        self.esp_rx.next_keepalive = now + KEEPALIVE_INTERVAL_MS;
        let Some(socket) = self.esp_socket.as_ref() else {
            return;
        };
        let port = self.forwarder.esp_port();
        let local_is_v4 = self.forwarder.local().is_ipv4();
        for network in self.forwarder.networks() {
            let Some(crypto) = &network.crypto else {
                continue;
            };
            let peers = network.peers();
            let endpoints = peers
                .flood
                .iter()
                .map(|d| d.ip())
                .chain(crypto.endpoints().into_iter().map(|(vtep, _)| vtep))
                .filter(|ip| ip.is_ipv4() == local_is_v4);
            let mut sent: Vec<SocketAddr> = Vec::new();
            for vtep in endpoints {
                let endpoint = crypto.endpoint(vtep, port);
                if sent.contains(&endpoint) {
                    continue;
                }
                sent.push(endpoint);
                let _ = socket.socket().send_to(&[0xFF], &endpoint.into());
            }
        }
    }
}
