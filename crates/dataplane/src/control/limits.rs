//! Bounds that keep the control socket from being a way to hurt the engine: a request size cap,
//! a deadline per exchange, a bounded number of open connections (the oldest is closed to make
//! room), and accept errors (EMFILE, ENFILE, ENOBUFS …) backed off rather than retried in a
//! busy loop. Each refusal is counted and shown by `vxnet stats` (`control`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::proto::ControlStats;

/// Longest request line accepted, newline included. A request is a few hundred bytes; this is
/// generous for any future one and small enough that a hostile client costs nothing.
pub(crate) const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A client must finish sending its request within this time, and take the reply within it.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once. A new one beyond this closes the oldest: real exchanges last
/// milliseconds, so the oldest is the one most likely to be idle, and a flood of idle
/// connections can never lock `vxnet stats` out.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Accept-error back-off: first pause and ceiling.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What the control socket refused, by reason.
#[derive(Debug, Default)]
pub(crate) struct ControlCounters {
    pub refused: AtomicU64,
    pub oversized: AtomicU64,
    pub timed_out: AtomicU64,
    pub evicted: AtomicU64,
    pub accept_errors: AtomicU64,
}

impl ControlCounters {
    pub(crate) fn snapshot(&self) -> ControlStats {
        ControlStats {
            refused: self.refused.load(Relaxed),
            oversized: self.oversized.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            evicted: self.evicted.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// The open connections, oldest first, each with the signal that closes it early.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    inner: Mutex<SlotsInner>,
}

#[derive(Debug, Default)]
struct SlotsInner {
    next_id: u64,
    open: VecDeque<(u64, Arc<Notify>)>,
}

/// One admitted connection; leaving frees its place.
#[derive(Debug)]
pub(crate) struct Slot {
    id: u64,
    evict: Arc<Notify>,
    slots: Arc<Slots>,
}

impl Slot {
    /// Completes when a newer connection needed this one's place.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.open.retain(|(id, _)| *id != self.id);
    }
}

impl Slots {
    /// Admits a connection, closing the oldest when [`MAX_CONNECTIONS`] are open; true in the
    /// second element when one was closed.
    pub(crate) fn admit(self: &Arc<Self>) -> (Slot, bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = false;
        while inner.open.len() >= MAX_CONNECTIONS {
            if let Some((_, notify)) = inner.open.pop_front() {
                // `notify_one` keeps a permit, so a task not yet waiting still sees it.
                notify.notify_one();
                evicted = true;
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let evict = Arc::new(Notify::new());
        inner.open.push_back((id, Arc::clone(&evict)));
        (
            Slot {
                id,
                evict,
                slots: Arc::clone(self),
            },
            evicted,
        )
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .len()
    }
}

/// Exponential back-off for accept errors, reset by the next success.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    current: Option<Duration>,
}

impl Backoff {
    /// The pause before the next accept; the first of a run of errors is `true` in the second
    /// element (to log it once, not at every retry).
    pub(crate) fn pause(&mut self) -> (Duration, bool) {
        let first = self.current.is_none();
        let pause = self
            .current
            .map_or(BACKOFF_FIRST, |d| (d * 2).min(BACKOFF_MAX));
        self.current = Some(pause);
        (pause, first)
    }

    /// An accept succeeded; true when it ends a run of errors.
    pub(crate) fn reset(&mut self) -> bool {
        self.current.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_connection_makes_room() {
        let slots = Arc::new(Slots::default());
        let mut held: Vec<Slot> = (0..MAX_CONNECTIONS)
            .map(|_| {
                let (slot, evicted) = slots.admit();
                assert!(!evicted);
                slot
            })
            .collect();
        assert_eq!(slots.open(), MAX_CONNECTIONS);
        let (newest, evicted) = slots.admit();
        assert!(evicted);
        assert_eq!(slots.open(), MAX_CONNECTIONS);
        // The first one got the signal (a permit is stored, so this does not wait).
        let oldest = held.remove(0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let got = runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(100), oldest.evicted())
                .await
                .is_ok()
        });
        assert!(got, "the oldest connection was not told to close");
        drop(oldest);
        drop(held);
        assert_eq!(slots.open(), 1);
        drop(newest);
        assert_eq!(slots.open(), 0);
    }

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.pause(), (BACKOFF_FIRST, true));
        assert_eq!(b.pause(), (BACKOFF_FIRST * 2, false));
        for _ in 0..20 {
            b.pause();
        }
        assert_eq!(b.pause().0, BACKOFF_MAX);
        assert!(b.reset());
        assert!(!b.reset());
        assert_eq!(b.pause(), (BACKOFF_FIRST, true));
    }
}
