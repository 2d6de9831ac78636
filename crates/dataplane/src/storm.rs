//! Storm control (`--bum-rate PPS`): at most so many broadcast, multicast and unknown-unicast
//! frames per second are taken from a network's TAP for flooding; the rest are dropped and
//! counted (`bum_rate_limited`).
//!
//! One bucket per network, shared by every worker without a lock: the generic cell rate
//! algorithm, a token bucket kept as a single "theoretical arrival time" in an `AtomicU64`.
//! Each admitted frame moves it one interval (1/PPS s) on; a frame is refused while it lies more
//! than the bucket depth ahead of now. The depth is one second of frames, the averaging window
//! switches use for storm control: a burst of PPS frames passes at once, a sustained flood at PPS.
//! No clock is read here; the caller passes nanoseconds since a fixed epoch. The same limiter
//! paces the ICMP too-big replies of path-MTU signalling.

use std::sync::atomic::{AtomicU64, Ordering};

const NANOS_PER_SEC: u64 = 1_000_000_000;

#[derive(Debug)]
pub struct RateLimiter {
    rate: u32,
    /// Nanoseconds per frame, rounded up (so the rate is never exceeded).
    interval: u64,
    /// How far ahead of now the arrival time may run: the bucket depth less one frame.
    tolerance: u64,
    /// Theoretical arrival time of the next frame, in the caller's nanoseconds.
    tat: AtomicU64,
}

impl RateLimiter {
    /// A bucket for `rate` frames per second (at least 1), `rate` deep.
    pub fn new(rate: u32) -> Self {
        let rate = rate.max(1);
        let interval = NANOS_PER_SEC.div_ceil(u64::from(rate));
        RateLimiter {
            rate,
            interval,
            tolerance: interval * (u64::from(rate) - 1),
            tat: AtomicU64::new(0),
        }
    }

    /// Frames per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Whether one more frame may be flooded at `now` (nanoseconds, non-decreasing per caller;
    /// callers on several threads may be slightly out of step, which costs at most the skew).
    pub fn admit(&self, now: u64) -> bool {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance {
                return false;
            }
            match self.tat.compare_exchange_weak(
                tat,
                start + self.interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn admitted(limiter: &RateLimiter, from: u64, until: u64, step: u64) -> usize {
        (from..until)
            .step_by(step as usize)
            .filter(|t| limiter.admit(*t))
            .count()
    }

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let l = RateLimiter::new(1000);
        // A flood of one frame per microsecond for 3 s: the depth (1000) at once, then 1000/s.
        let n = admitted(&l, 0, 3_000 * MS, 1_000);
        assert!((3990..=4001).contains(&n), "{n}");
    }

    #[test]
    fn traffic_under_the_rate_always_passes() {
        let l = RateLimiter::new(100);
        // 50 frames per second for 10 s.
        assert_eq!(admitted(&l, 0, 10_000 * MS, 20 * MS), 500);
    }

    #[test]
    fn an_idle_bucket_refills_to_its_depth_only() {
        let l = RateLimiter::new(10);
        assert_eq!(admitted(&l, 0, MS, 1), 10);
        // An hour of silence does not store an hour of frames.
        let hour = 3_600_000 * MS;
        assert_eq!(admitted(&l, hour, hour + MS, 1), 10);
    }

    #[test]
    fn shared_by_threads_the_total_holds() {
        let l = std::sync::Arc::new(RateLimiter::new(5000));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let l = std::sync::Arc::clone(&l);
                std::thread::spawn(move || admitted(&l, 0, 1_000 * MS, 10_000))
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        // One second of depth plus one second at the rate, over four threads.
        assert!((9_990..=10_001).contains(&total), "{total}");
    }
}
