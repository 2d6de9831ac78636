//! The figures of `vxnet bench names` and their text form.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::engine::EngineWeight;
use super::member::Member;
use super::NamesBenchArgs;

/// Convergence of one kind of change (a name appearing, or going), in milliseconds from the
/// moment the host's store call returned.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Latencies {
    /// Over every (host, endpoint) pair; 0 when the host saw the change before the call
    /// returned.
    pub(super) pair_p50_ms: f64,
    pub(super) pair_p99_ms: f64,
    /// Until every host has it, per endpoint.
    pub(super) everywhere_p50_ms: f64,
    pub(super) everywhere_p99_ms: f64,
    pub(super) everywhere_max_ms: f64,
    /// (host, endpoint) pairs that never saw the change within the settling time.
    pub(super) missing: u64,
}

pub(super) fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

impl Latencies {
    /// `changed[k]`: when endpoint `ep<k>`'s change returned (`None`: not changed); `seen`:
    /// what one host noted, by endpoint id.
    pub(super) fn collect(
        members: &[Arc<Member>],
        changed: &[Option<Instant>],
        seen: impl Fn(&Member) -> HashMap<String, Instant>,
    ) -> Latencies {
        let mut pairs: Vec<u32> = Vec::new();
        let mut everywhere: Vec<u32> = vec![0; changed.len()];
        let mut missing = 0;
        for m in members {
            let noted = seen(m);
            for (k, at) in changed.iter().enumerate() {
                let Some(at) = at else { continue };
                match noted.get(&format!("ep{k}")) {
                    Some(when) => {
                        let us = when.saturating_duration_since(*at).as_micros();
                        let us = u32::try_from(us).unwrap_or(u32::MAX);
                        pairs.push(us);
                        everywhere[k] = everywhere[k].max(us);
                    }
                    None => {
                        missing += 1;
                        everywhere[k] = u32::MAX;
                    }
                }
            }
        }
        let mut everywhere: Vec<u32> = changed
            .iter()
            .zip(everywhere)
            .filter(|(at, _)| at.is_some())
            .map(|(_, us)| us)
            .collect();
        pairs.sort_unstable();
        everywhere.sort_unstable();
        Latencies {
            pair_p50_ms: percentile(&pairs, 50.0),
            pair_p99_ms: percentile(&pairs, 99.0),
            everywhere_p50_ms: percentile(&everywhere, 50.0),
            everywhere_p99_ms: percentile(&everywhere, 99.0),
            everywhere_max_ms: percentile(&everywhere, 100.0),
            missing,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct NamesReport {
    pub(super) hosts: u64,
    pub(super) endpoints: u64,
    pub(super) rate: u64,
    pub(super) concurrency: u64,
    pub(super) ttl: u64,
    /// Every host connected, leased, read the prefix and watching.
    pub(super) join_secs: f64,
    /// How long the engine's publish call took (claim, record, checks): p50 and p99.
    pub(super) publish_p50_ms: f64,
    pub(super) publish_p99_ms: f64,
    /// From the publish call (the attach asking the store) to each host seeing the record.
    pub(super) appear_from_call: Latencies,
    /// Store revisions (write transactions) per endpoint published.
    pub(super) writes_per_change: f64,
    /// Watch events delivered per endpoint published, all hosts together.
    pub(super) events_per_change: f64,
    pub(super) appear: Latencies,
    pub(super) withdrawn: u64,
    pub(super) vanish: Latencies,
    /// One host restarting: connection, lease, full read and decode, watch.
    pub(super) resync_secs: f64,
    /// Endpoints the restarted host knew at the end of its resync.
    pub(super) resync_endpoints: usize,
    /// Store calls of the driver (publish, withdraw) tried again after the store did not
    /// answer within its bound.
    pub(super) store_retries: u64,
    pub(super) engine: EngineWeight,
}

impl NamesReport {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        args: &NamesBenchArgs,
        join_secs: f64,
        publish_ms: (f64, f64),
        appear_from_call: Latencies,
        writes_per_change: f64,
        events_per_change: f64,
        appear: Latencies,
        vanish: Latencies,
        resync_secs: f64,
        resync_endpoints: usize,
        store_retries: u64,
    ) -> NamesReport {
        NamesReport {
            hosts: args.hosts,
            endpoints: args.endpoints,
            rate: args.rate,
            concurrency: args.concurrency,
            ttl: args.ttl,
            join_secs,
            publish_p50_ms: publish_ms.0,
            publish_p99_ms: publish_ms.1,
            appear_from_call,
            writes_per_change,
            events_per_change,
            appear,
            withdrawn: args.withdraw.min(args.endpoints),
            vanish,
            resync_secs,
            resync_endpoints,
            store_retries,
            engine: EngineWeight::default(),
        }
    }

    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} hosts, {} endpoints published at {}/s ({} in flight), lease TTL {} s",
            self.hosts, self.endpoints, self.rate, self.concurrency, self.ttl
        );
        let _ = writeln!(out, "hosts joined in {:.1} s", self.join_secs);
        let row = |out: &mut String, what: &str, l: &Latencies| {
            let _ = writeln!(
                out,
                "{what:<22} per host p50 {:>8.1} ms  p99 {:>8.1} ms | everywhere p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms | missing {}",
                l.pair_p50_ms,
                l.pair_p99_ms,
                l.everywhere_p50_ms,
                l.everywhere_p99_ms,
                l.everywhere_max_ms,
                l.missing
            );
        };
        let _ = writeln!(
            out,
            "publish call (claim + record + checks): p50 {:.1} ms  p99 {:.1} ms",
            self.publish_p50_ms, self.publish_p99_ms
        );
        row(&mut out, "appears (from call)", &self.appear_from_call);
        row(&mut out, "appears (from return)", &self.appear);
        row(
            &mut out,
            &format!("name goes ({})", self.withdrawn),
            &self.vanish,
        );
        let _ = writeln!(
            out,
            "per endpoint published: {:.2} store writes, {:.0} watch events ({:.2} per host)",
            self.writes_per_change,
            self.events_per_change,
            self.events_per_change / self.hosts.max(1) as f64
        );
        let _ = writeln!(
            out,
            "one host restarting: resynchronised in {:.2} s ({} endpoints)",
            self.resync_secs, self.resync_endpoints
        );
        let _ = writeln!(
            out,
            "store calls tried again after the store did not answer in time: {}",
            self.store_retries
        );
        let _ = writeln!(
            out,
            "one engine: {:.0} KiB per 1000 endpoints; per rebuild (CPU), view {:.1} ms + names {:.1} ms; a full read is {:.1} MiB",
            self.engine.rss_kib_per_1000,
            self.engine.view_ms,
            self.engine.names_ms,
            self.engine.full_read_bytes as f64 / (1024.0 * 1024.0)
        );
        out
    }
}
