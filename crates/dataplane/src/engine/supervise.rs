//! The workers' supervisor: a worker that is gone while no one asked it to stop is noticed, and
//! the workers are started again the way a reload starts a generation.
//!
//! How a worker can go: it returns (an error from a system call it cannot carry on after, or a
//! panic), or the kernel kills its thread alone: a kernel BUG inside one of its system calls
//! (hardened usercopy in `recvmmsg` was one) ends that task (`make_task_dead`) without a
//! signal and without unwinding. Nothing in Rust notices the second: the thread's `JoinHandle`
//! never gets a result (`is_finished` stays false, `join` would panic), its TAP queue and socket
//! go unread. Only its kernel thread id disappears, so each worker reports that id when it
//! starts and the supervisor asks the kernel about it (`tgkill` with signal 0) every second.
//! What such a worker held is released for it as far as that is sound ([`WorkerThread`]'s
//! `abandon`).
//!
//! Locks: a thread killed inside a system call while holding a `std::sync::Mutex` leaves it
//! locked for good (no unwinding, so no poisoning either), and every thread that takes it later
//! waits forever. The workers' per-packet path takes no lock (the forwarder, peers and key rings
//! are `ArcSwap` snapshots, the counters atomics). Evicted source-port sockets are closed, and
//! an outbound SA's SPI drawn, outside their locks. Three steps still hold a lock across a
//! system call (docs/operating.md, "A worker that vanishes"): binding a new source-port socket
//! (under the pool's clock hand, so two workers never bind one slot), an ESP replay floor's
//! `pwrite` (under the SA's window) and logging (stderr's lock); a worker killed there would
//! leave the others stuck,
//! which this supervisor does not detect (they still exist), and the restart would then wait
//! for them forever.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{lock, Core, EngineError};
use crate::forward::Forwarder;
use crate::sys::thread::{thread_exists, Handed};

/// How often the workers are checked: a lost worker black-holes its share of the traffic
/// until then. One lock and one system call per worker: nothing next to forwarding.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// More restarts than this within [`RESTART_WINDOW`] stop the engine with an error, for the
/// service manager to restart it whole (the systemd unit has `Restart=on-failure`): workers
/// that keep dying are not fixed by restarting them.
pub(super) const MAX_RESTARTS: usize = 5;
pub(super) const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// One worker of the current generation.
#[derive(Debug)]
pub(super) struct WorkerThread {
    /// Its number in the generation (the `K` of its thread name `vxnet-worker-K`).
    pub(super) index: usize,
    pub(super) handle: JoinHandle<std::io::Result<()>>,
    /// The kernel's id of its thread (0 until it runs) and the fds it owns (its clones of the
    /// TAP queues, sockets and stop eventfd, and its path-MTU probe: see `Worker::new`).
    pub(super) handed: Handed,
    /// The generation it serves (whose networks list its outbound SAs).
    pub(super) forwarder: Arc<Forwarder>,
}

const VANISHED: &str = "vanished: the kernel ended its thread (the kernel log, dmesg, may say why)";

/// How a worker no one asked to stop is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    /// It returned (an error) or panicked: it can be joined.
    Returned,
    /// Its thread no longer exists but never returned: the kernel ended it.
    Vanished,
}

impl WorkerThread {
    /// Waits for the thread to return (it was told to stop, or has returned); how it failed.
    /// A thread the kernel ended since the supervisor last looked (a stop within that second)
    /// is not waited for: its result never comes, and `join` would panic.
    pub(super) fn join(self) -> Option<String> {
        if self.gone() == Some(Gone::Vanished) {
            self.abandon();
            return Some(VANISHED.into());
        }
        match self.handle.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("it panicked".into()),
        }
    }

    /// `None` while the worker runs.
    fn gone(&self) -> Option<Gone> {
        if self.handle.is_finished() {
            return Some(Gone::Returned);
        }
        let tid = self.handed.tid();
        if tid == 0 || thread_exists(tid) {
            return None;
        }
        // A returning thread is finished before its kernel thread ends, so asked again now,
        // "not finished" is for good.
        Some(if self.handle.is_finished() {
            Gone::Returned
        } else {
            Gone::Vanished
        })
    }

    /// Lets go of a worker the kernel ended, releasing for it what it held outside its own
    /// memory:
    /// - the thread is never joined: it will not write a result, so `join` would panic (and
    ///   `Drop` would only detach it);
    /// - its fds are closed. While its networks are served they do no harm (most are more fds
    ///   of the queues and sockets the next worker serves), but a TAP queue's fd kept the TAP,
    ///   with its address, after its network was removed, so a reload that rebuilds a network
    ///   found the device taken and failed, leaving the network down. (A kernel BUG inside a
    ///   system call on one of them may also leave the kernel's own reference to that file
    ///   behind, which no close releases);
    /// - its outbound SAs leave the list (`vxnet sa show`): it seals nothing more, but its
    ///   references to them, which keep an SA listed, are never dropped.
    ///
    /// Its memory stays until the engine exits: the `Worker` (packet and ESP buffers, several
    /// MB, its SAs, a reference to its generation's networks) and its stack. Freeing it
    /// would mean dropping, from this thread, state the dead thread's frames still borrow
    /// mutably, possibly half-updated (it was killed inside a system call, a batch half
    /// built): there is no sound way to tell Rust that a thread's borrows ended with it, and
    /// memory is all it is. Losses are rare (each is a kernel BUG) and more than five a minute
    /// stop the engine. What it held of shared state stays held too: a source-port socket it
    /// was sending on stays bound (the pool's flows hashed there leave from the next port).
    fn abandon(self) {
        let tid = self.handed.tid();
        std::mem::forget(self.handle);
        for network in self.forwarder.networks() {
            if let Some(crypto) = &network.crypto {
                crypto.outbound.forget_thread(tid);
            }
        }
        let closed = self.handed.close_orphans();
        tracing::debug!(
            worker = self.index,
            tid,
            closed,
            "fds of the lost worker closed"
        );
    }
}

/// When the workers were restarted, within the last [`RESTART_WINDOW`].
#[derive(Debug, Default)]
struct Restarts(VecDeque<Instant>);

impl Restarts {
    /// Records a restart at `now`; `false` (nothing recorded) when there were already
    /// [`MAX_RESTARTS`] within the window.
    fn allow(&mut self, now: Instant) -> bool {
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RESTART_WINDOW)
        {
            self.0.pop_front();
        }
        if self.0.len() >= MAX_RESTARTS {
            return false;
        }
        self.0.push_back(now);
        true
    }
}

impl Core {
    /// Takes the workers that are gone out of the current generation (one `error` line each)
    /// and, if there were any, starts the workers again. An error stops the engine.
    fn check_workers(&self, restarts: &mut Restarts) -> Result<(), EngineError> {
        let mut running = lock(&self.running);
        if running.shut_down {
            return Ok(());
        }
        // (worker, thread id, what became of it)
        let mut lost = Vec::new();
        for worker in std::mem::take(&mut running.workers) {
            let Some(gone) = worker.gone() else {
                running.workers.push(worker);
                continue;
            };
            let (index, tid) = (worker.index, worker.handed.tid());
            let what = match gone {
                Gone::Returned => {
                    let why = worker.join().unwrap_or_else(|| "it returned".into());
                    format!("stopped without being asked to: {why}")
                }
                Gone::Vanished => {
                    worker.abandon();
                    VANISHED.to_string()
                }
            };
            lost.push((index, tid, what));
        }
        if lost.is_empty() {
            return Ok(());
        }
        let restart = restarts.allow(Instant::now());
        let then = if restart {
            "restarting the workers"
        } else {
            "too many restarts: the engine stops"
        };
        for (index, tid, what) in lost {
            tracing::error!("worker {index} (thread id {tid}) {what}; {then}");
        }
        if !restart {
            return Err(EngineError::WorkersFailing {
                restarts: MAX_RESTARTS,
                window_secs: RESTART_WINDOW.as_secs(),
            });
        }
        self.state.worker_restarts.fetch_add(1, Ordering::Relaxed);
        self.start_generation(&mut running)?;
        tracing::info!("workers restarted: forwarding again");
        Ok(())
    }
}

/// Checks the workers every [`CHECK_EVERY`] for as long as the engine runs; returns only the
/// error that must stop it.
pub(super) async fn supervise(core: Arc<Core>) -> EngineError {
    let mut restarts = Restarts::default();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = core.check_workers(&mut restarts) {
            return e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_five_restarts_a_minute() {
        let mut restarts = Restarts::default();
        let t0 = Instant::now();
        for k in 0..MAX_RESTARTS {
            assert!(restarts.allow(t0 + Duration::from_secs(k as u64)));
        }
        assert!(!restarts.allow(t0 + Duration::from_secs(30)));
        // The first one is a minute old: room for one more.
        assert!(restarts.allow(t0 + RESTART_WINDOW));
        assert!(!restarts.allow(t0 + RESTART_WINDOW));
    }
}
