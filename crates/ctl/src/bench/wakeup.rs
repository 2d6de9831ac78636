//! What one thread waking another costs on this machine: the floor under vxnet's added latency.
//!
//! The kernel's vxlan answers a ping without waking anything but `ping`; a round trip through two
//! vxnet engines also wakes the sending worker, the receiving worker and the sending worker again.
//! On bare metal a wake-up is a few microseconds; in a VM whose idle vCPUs halt without polling it
//! is an interrupt and a VM exit, tens of microseconds. Measured here so the ping ratios can be
//! read against the machine they ran on.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Round trips measured (after as many unrecorded ones as [`WARMUP`]).
const ROUND_TRIPS: usize = 2000;
const WARMUP: usize = 200;

/// Median time for a message to go to another thread and its answer to come back, both threads
/// asleep until woken (two wake-ups), in microseconds. None if the echo thread cannot start.
pub(super) fn round_trip_us() -> Option<f64> {
    let (to_echo, echo_rx) = mpsc::sync_channel::<u32>(0);
    let (echo_tx, from_echo) = mpsc::sync_channel::<u32>(0);
    let echo = std::thread::Builder::new()
        .name("vxbench-echo".into())
        .spawn(move || {
            while let Ok(n) = echo_rx.recv() {
                if echo_tx.send(n).is_err() {
                    break;
                }
            }
        })
        .ok()?;
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let start = Instant::now();
        to_echo.send(i as u32).ok()?;
        from_echo.recv().ok()?;
        if i >= WARMUP {
            samples.push(start.elapsed());
        }
    }
    drop(to_echo);
    let _ = echo.join();
    samples.sort_unstable();
    let median: Duration = samples.get(samples.len() / 2).copied()?;
    Some(median.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_round_trip_takes_some_time() {
        let us = super::round_trip_us().unwrap();
        assert!(us > 0.0 && us < 1e6, "{us}");
    }
}
