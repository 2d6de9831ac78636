//! Worker generations: the forwarder and worker threads serving one set of networks, replaced
//! as a whole when the set changes.

use std::sync::Arc;

use super::supervise::WorkerThread;
use super::{lock, new_eventfd, Core, EngineError, Running};
use crate::network::Network;
use crate::offload::{Offload, Offloads};
use crate::sys::tap::TapQueue;
use crate::sys::udp::UdpSocket;
use crate::worker::{Worker, WorkerConfig};

/// What a generation uses: the probed `offloads`, and TSO (USO) when every TAP accepted it;
/// `taps` gives each TAP's (tso, uso). UDP GSO is listed while it is in use: the engine state
/// drops it from the report the moment the kernel refuses it.
fn offloads_in_use(
    offloads: &Offloads,
    taps: impl Iterator<Item = (bool, bool)> + Clone,
) -> Vec<Offload> {
    let mut in_use = Vec::new();
    if offloads.vnet_hdr {
        in_use.extend([Offload::TapVnetHdr, Offload::GroCoalescing]);
        if taps.clone().all(|(tso, _)| tso) {
            in_use.push(Offload::Tso);
        }
        if taps.clone().all(|(tso, uso)| tso && uso) {
            in_use.push(Offload::Uso);
        }
    }
    if offloads.gso.in_use() {
        in_use.push(Offload::UdpGso);
    }
    if offloads.gro {
        in_use.push(Offload::UdpGro);
    }
    if offloads.vnet_hdr && offloads.tunnel.is_some() && in_use.contains(&Offload::Tso) {
        in_use.push(Offload::TunnelGso);
    }
    in_use
}

impl Core {
    /// Stops the current workers (if any) and starts a generation serving `running.served`.
    /// Workers pause for the time it takes to join and spawn threads (about a millisecond);
    /// packets arriving meanwhile wait in the socket and TAP queues.
    pub(super) fn start_generation(&self, running: &mut Running) -> Result<(), EngineError> {
        Self::stop_workers(running);
        let networks: Vec<Arc<Network>> = running
            .served
            .iter()
            .map(|s| Arc::clone(&s.network))
            .collect();
        let forwarder = Arc::new(self.state.forwarder().with_networks(networks));
        let offloads = offloads_in_use(
            &self.setup.offloads,
            running.served.iter().map(|s| (s.tso, s.uso)),
        );
        self.state.publish(Arc::clone(&forwarder), offloads);

        running.stop = new_eventfd()?;
        // Each worker reports from its own thread once it runs, so "started" (READY=1 for
        // systemd, the end of a reload) means forwarding, not merely spawned.
        let esp = lock(&self.esp);
        let esp_sockets = esp.as_ref().map(|e| e.sockets.as_slice()).unwrap_or(&[]);
        let (running_tx, running_rx) = std::sync::mpsc::channel::<()>();
        for (w, socket) in self.sockets.iter().enumerate() {
            let clone_err = |source| EngineError::Io {
                what: "duplicating a worker fd",
                source,
            };
            // Worker w takes queue w of every network's TAP.
            let (taps, uso): (Vec<_>, Vec<_>) = running
                .served
                .iter()
                .filter_map(|s| s.queues.get(w).map(|q| (q, s.uso)))
                .unzip();
            let taps = taps
                .into_iter()
                .map(TapQueue::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(clone_err)?;
            let (worker, handed) = Worker::new(WorkerConfig {
                forwarder: Arc::clone(&forwarder),
                taps,
                uso,
                socket: socket.try_clone().map_err(clone_err)?,
                esp_socket: esp_sockets
                    .get(w)
                    .map(UdpSocket::try_clone)
                    .transpose()
                    .map_err(clone_err)?,
                index: w,
                source_ports: Arc::clone(&self.source_ports),
                stop: running.stop.try_clone().map_err(clone_err)?,
                epoch: self.state.epoch,
                offloads: self.setup.offloads.clone(),
                busy_poll: self.setup.busy_poll,
            });
            let handle = std::thread::Builder::new()
                .name(format!("vxnet-worker-{w}"))
                .spawn({
                    let running_tx = running_tx.clone();
                    move || {
                        worker.run(|| {
                            let _ = running_tx.send(());
                        })
                    }
                })
                .map_err(|source| EngineError::Io {
                    what: "spawning a worker",
                    source,
                })?;
            running.workers.push(WorkerThread {
                index: w,
                handle,
                handed,
                forwarder: Arc::clone(&forwarder),
            });
        }
        drop(running_tx);
        // Ends early only if a worker died before reporting (it is joined, and its error
        // logged, at the next stop).
        for _ in 0..running.workers.len() {
            if running_rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .is_err()
            {
                break;
            }
        }
        Ok(())
    }

    /// Binds the ESP-in-UDP port if it is not yet (the first encrypted network); the workers get
    /// their sockets with the next generation.
    pub(super) fn ensure_esp(&self) -> Result<(), crate::sys::udp::UdpError> {
        let mut esp = lock(&self.esp);
        if esp.is_none() {
            *esp = Some(super::start::bind_esp(&self.setup)?);
            tracing::info!(port = self.setup.esp_port, "ESP-in-UDP port bound");
        }
        Ok(())
    }

    /// Stops the workers and waits for them; their TAP and socket clones close with them.
    /// A worker whose thread the kernel killed is never among them: the supervisor took it out
    /// (joining it would wait for a result that never comes).
    fn stop_workers(running: &mut Running) {
        let _ = running.stop.notify();
        for worker in running.workers.drain(..) {
            let index = worker.index;
            if let Some(failure) = worker.join() {
                tracing::error!("worker {index} failed: {failure}");
            }
        }
    }

    /// Stops forwarding for good and closes every TAP.
    pub(super) fn shut_down(&self) {
        let mut running = lock(&self.running);
        Self::stop_workers(&mut running);
        running.served.clear();
        running.shut_down = true;
    }

    pub(super) fn network(&self, name: &str) -> Option<Arc<Network>> {
        self.state
            .forwarder()
            .networks()
            .iter()
            .find(|n| n.settings.name == name)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::UdpGso;

    fn offloads(vnet_hdr: bool, gso: bool, gro: bool) -> Offloads {
        Offloads {
            vnet_hdr,
            gso: UdpGso::new(gso),
            gro,
            tunnel: None,
        }
    }

    #[test]
    fn tso_and_uso_only_when_every_tap_took_them() {
        use Offload::*;
        let all = offloads(true, true, true);
        assert_eq!(
            offloads_in_use(&all, [(true, true), (true, true)].into_iter()),
            [TapVnetHdr, GroCoalescing, Tso, Uso, UdpGso, UdpGro]
        );
        assert_eq!(
            offloads_in_use(&all, [(true, true), (true, false)].into_iter()),
            [TapVnetHdr, GroCoalescing, Tso, UdpGso, UdpGro]
        );
        assert_eq!(
            offloads_in_use(&all, [(false, false), (true, true)].into_iter()),
            [TapVnetHdr, GroCoalescing, UdpGso, UdpGro]
        );
        // No networks yet: nothing refused them.
        assert_eq!(
            offloads_in_use(&all, std::iter::empty()),
            [TapVnetHdr, GroCoalescing, Tso, Uso, UdpGso, UdpGro]
        );
    }

    #[test]
    fn without_the_vnet_header_only_socket_offloads() {
        assert_eq!(
            offloads_in_use(&offloads(false, true, true), [(true, true)].into_iter()),
            [Offload::UdpGso, Offload::UdpGro]
        );
        assert_eq!(
            offloads_in_use(&offloads(false, false, false), [(true, true)].into_iter()),
            []
        );
        let refused = offloads(true, true, false);
        refused.gso.refused();
        assert!(!offloads_in_use(&refused, std::iter::empty()).contains(&Offload::UdpGso));
    }
}
