//! A per-source query rate limit: a token bucket per client address, in a bounded table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::counters::Counters;

/// Token buckets keyed by source address.
///
/// The table holds at most `max_sources` addresses; when a new one arrives at a full table, the
/// buckets that have refilled completely (idle clients, indistinguishable from new ones) are
/// forgotten first; if none has, the new source shares a single overflow bucket, so a spoofed
/// flood from many addresses cannot grow memory or starve the clients already known.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
    overflow: Bucket,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl RateLimiter {
    /// `rate` queries per second per source, bursts of `burst`, at most `max_sources` tracked.
    pub fn new(rate: u32, burst: u32, max_sources: usize, now: Instant) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
            overflow: Bucket {
                tokens: f64::from(burst.max(1)),
                at: now,
            },
        }
    }

    /// Whether a query from `source` at `now` may be served (a refusal is counted).
    pub fn allow(&mut self, source: IpAddr, now: Instant, counters: &Counters) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            self.buckets.retain(|_, bucket| {
                let idle = now.saturating_duration_since(bucket.at).as_secs_f64();
                bucket.tokens + idle * rate < burst
            });
        }
        let allowed = if self.buckets.len() < self.max_sources || self.buckets.contains_key(&source)
        {
            let bucket = self.buckets.entry(source).or_insert(Bucket {
                tokens: burst,
                at: now,
            });
            bucket.take(now, rate, burst)
        } else {
            self.overflow.take(now, rate, burst)
        };
        if !allowed {
            Counters::bump(&counters.rate_limited);
        }
        allowed
    }

    /// Sources tracked.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}
