//! Worker generations: the forwarder and worker threads serving one set of networks, replaced
//! as a whole when the set changes.

use std::sync::Arc;

use super::{lock, new_eventfd, Core, EngineError, Running};
use crate::network::Network;
use crate::sys::tap::TapQueue;
use crate::worker::Worker;

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
        self.state
            .publish(Arc::clone(&forwarder), self.offloads_in_use(running));

        let stop = Arc::new(new_eventfd()?);
        running.stop = Arc::clone(&stop);
        // Each worker reports from its own thread once it runs, so "started" (READY=1 for
        // systemd, the end of a reload) means forwarding, not merely spawned.
        let (running_tx, running_rx) = std::sync::mpsc::channel::<()>();
        for (w, socket) in self.sockets.iter().enumerate() {
            let clone_err = |source| EngineError::Io {
                what: "duplicating a worker fd",
                source,
            };
            // Worker w takes queue w of every network's TAP.
            let taps = running
                .served
                .iter()
                .filter_map(|s| s.queues.get(w))
                .map(TapQueue::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(clone_err)?;
            let worker = Worker::new(
                Arc::clone(&forwarder),
                taps,
                socket.try_clone().map_err(clone_err)?,
                Arc::clone(&self.source_ports),
                Arc::clone(&stop),
                self.state.epoch,
                self.setup.offloads,
            );
            let handle = std::thread::Builder::new()
                .name(format!("vxnet-worker-{w}"))
                .spawn({
                    let running_tx = running_tx.clone();
                    move || {
                        let _ = running_tx.send(());
                        worker.run()
                    }
                })
                .map_err(|source| EngineError::Io {
                    what: "spawning a worker",
                    source,
                })?;
            running.workers.push(handle);
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

    fn offloads_in_use(&self, running: &Running) -> Vec<String> {
        let offloads = self.setup.offloads;
        let mut in_use = Vec::new();
        if offloads.vnet_hdr {
            in_use.extend(["tap-vnet-hdr", "gro-coalescing"]);
            if running.served.iter().all(|s| s.tso) {
                in_use.push("tso");
            }
            if running.served.iter().all(|s| s.tso && s.uso) {
                in_use.push("uso");
            }
        }
        if offloads.gso {
            in_use.push("udp-gso");
        }
        if offloads.gro {
            in_use.push("udp-gro");
        }
        in_use.into_iter().map(String::from).collect()
    }

    /// Stops the workers and waits for them; their TAP and socket clones close with them.
    fn stop_workers(running: &mut Running) {
        let _ = running.stop.notify();
        for handle in running.workers.drain(..) {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("worker failed: {e}"),
                Err(_) => tracing::error!("worker panicked"),
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
