//! TAP → wire for encrypted networks: the path-MTU check made before sealing, and the sealed
//! ESP packets handed to the worker's ESP-in-UDP socket (with `UDP_SEGMENT` when a superframe
//! was sealed in a batch), counted like the plaintext sends of [`super`].

use std::net::{IpAddr, SocketAddr};

use super::{count_drop, count_unsent, recycle, send_all, Sender, Sent};
use crate::counters::DropReason;
use crate::fdb::Millis;
use crate::forward::Forwarder;
use crate::sys::tap::TapQueue;
use crate::sys::udp::{Outgoing, UdpSocket};
use crate::worker::tx::Planned;

impl Sender {
    /// Sends sealed ESP packets (see [`crate::worker::esp`]): each entry of `plan` to its `dest` (the
    /// peer's endpoint) from `socket`, the worker's ESP-in-UDP socket; `vteps[i]` is the VTEP
    /// entry `i` is for, which is what gets counted.
    pub(in crate::worker) fn send_esp(
        &mut self,
        forwarder: &Forwarder,
        socket: &UdpSocket,
        bufs: &[Box<[u8]>],
        plan: &[Planned],
        vteps: &[IpAddr],
    ) {
        if plan.is_empty() {
            return;
        }
        let mut slices: Vec<&[u8]> = recycle(std::mem::take(&mut self.packets));
        slices.extend(plan.iter().map(|p| &bufs[p.buf][p.start..p.end]));
        let mut out: Vec<Outgoing<'_>> = recycle(std::mem::take(&mut self.outgoing));
        self.sent.clear();
        for ((p, packet), vtep) in plan.iter().zip(&slices).zip(vteps) {
            let Some(dest) = p.dest else {
                continue;
            };
            out.push(Outgoing {
                dest,
                parts: std::slice::from_ref(packet),
                segment_size: p.segment_size,
                ttl: p.outer.ttl,
                tos: p.outer.tos,
            });
            self.sent.push(Sent {
                network: p.network,
                dest: *vtep,
                segments: p.segments,
                bytes: p.inner_bytes,
            });
        }
        self.refused.clear();
        send_all(
            forwarder,
            socket,
            &mut self.batch,
            &out,
            &self.sent,
            0,
            &mut self.refused,
        );
        // The path was checked before sealing ([`Sender::esp_path`]): what the kernel still
        // refuses is counted, and a UDP_SEGMENT refusal switches GSO off as for plaintext.
        let mut gso_refused = false;
        for &(i, errno) in &self.refused {
            gso_refused |= errno != libc::EMSGSIZE;
            count_unsent(forwarder, &self.sent[i]);
            // Read the path again before the next packet to it.
            self.pmtu
                .refresh(out[i].dest, self.epoch.elapsed().as_millis() as Millis);
        }
        if gso_refused {
            self.gso.refused();
        }
        self.outgoing = recycle(out);
        self.packets = recycle(slices);
    }

    /// The path-MTU check of an encrypted network, made before sealing: whether the VXLAN
    /// datagrams of `p` (each `datagram` bytes, `first` the first of them) fit the path to
    /// `endpoint` once ESP adds up to [`MAX_OVERHEAD`](vxnet_encap::esp::MAX_OVERHEAD) bytes.
    /// One that does not is, with DF, a counted `too_big` drop answered with ICMP into the TAP
    /// (reporting the MTU less the ESP overhead, so the inner sender's next packets fit);
    /// without DF it is sent datagram by datagram for the kernel to fragment.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::worker) fn esp_path(
        &mut self,
        forwarder: &Forwarder,
        taps: (&[TapQueue], bool),
        p: &Planned,
        first: &[u8],
        datagram: usize,
        endpoint: SocketAddr,
    ) -> EspPath {
        let gso = p.segments > 1;
        if !(p.outer.df || gso) {
            return EspPath::Fits;
        }
        let now = self.epoch.elapsed().as_millis() as Millis;
        let mtu = self.pmtu.get(endpoint, now);
        if self
            .pmtu
            .fits(mtu, datagram + vxnet_encap::esp::MAX_OVERHEAD)
        {
            return EspPath::Fits;
        }
        if !p.outer.df {
            return EspPath::Fragment;
        }
        count_drop(forwarder, p.network, DropReason::TooBig);
        let inner = mtu.saturating_sub(vxnet_encap::esp::MAX_OVERHEAD as u32);
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        self.pmtu
            .answer(forwarder, taps.0, p.network, taps.1, first, inner, now_ns);
        EspPath::TooBig
    }
}

/// What [`Sender::esp_path`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::worker) enum EspPath {
    Fits,
    /// Seal and send one datagram per send (no DF: the kernel fragments each).
    Fragment,
    /// Dropped and answered.
    TooBig,
}
