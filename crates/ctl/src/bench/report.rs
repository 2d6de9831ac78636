//! The results: per round, per pair (median over the rounds), ratios against the kernel pair, and
//! how each figure was measured — as a table or as one JSON document.

use serde::{Serialize, Serializer};

use super::cpu::Usage;
use super::extra::Extra;
use super::measure::{PingStats, Throughput, Tool};
pub(super) use super::method::Method;
use super::pairs::{EngineSettings, PairSpec};

/// How the rounds are combined into one figure per pair.
pub(super) const STATISTIC: &str = "median";

mod text;

/// The figures of one pair in one round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Round {
    pub round: usize,
    #[serde(flatten)]
    pub figures: Figures,
    pub tcp_x1_bytes: u64,
    pub vxnet_cpu_s: Option<f64>,
    pub machine_cpu_s: f64,
    pub pings_sent: u32,
    pub pings_received: u32,
}

impl Round {
    pub(super) fn new(
        round: usize,
        x1: Throughput,
        x4: Throughput,
        ping: PingStats,
        cpu: Usage,
        extra: Extra,
    ) -> Self {
        let gb = x1.bytes as f64 / 1e9;
        let per_gb = |s: f64| (gb > 0.0).then(|| s / gb);
        Round {
            round,
            figures: Figures {
                tcp_x1_gbit_per_s: x1.gbit_per_s,
                tcp_x4_gbit_per_s: x4.gbit_per_s,
                ping_p50_ms: ping.p50_ms,
                ping_p99_ms: ping.p99_ms,
                vxnet_cpu_s_per_gb: cpu.vxnet_s.and_then(per_gb),
                machine_cpu_s_per_gb: per_gb(cpu.machine_s),
                extra,
            },
            tcp_x1_bytes: x1.bytes,
            vxnet_cpu_s: cpu.vxnet_s,
            machine_cpu_s: cpu.machine_s,
            pings_sent: ping.sent,
            pings_received: ping.received,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Figures {
    pub tcp_x1_gbit_per_s: f64,
    pub tcp_x4_gbit_per_s: f64,
    pub ping_p50_ms: f64,
    pub ping_p99_ms: f64,
    /// `None` for the kernel pair (no vxnet process).
    pub vxnet_cpu_s_per_gb: Option<f64>,
    pub machine_cpu_s_per_gb: Option<f64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Figures {
    fn median_of(rounds: &[Round]) -> Self {
        let of = |f: fn(&Figures) -> Option<f64>| {
            median(rounds.iter().filter_map(|r| f(&r.figures)).collect())
        };
        Figures {
            tcp_x1_gbit_per_s: of(|f| Some(f.tcp_x1_gbit_per_s)).unwrap_or(0.0),
            tcp_x4_gbit_per_s: of(|f| Some(f.tcp_x4_gbit_per_s)).unwrap_or(0.0),
            ping_p50_ms: of(|f| Some(f.ping_p50_ms)).unwrap_or(0.0),
            ping_p99_ms: of(|f| Some(f.ping_p99_ms)).unwrap_or(0.0),
            vxnet_cpu_s_per_gb: of(|f| f.vxnet_cpu_s_per_gb),
            machine_cpu_s_per_gb: of(|f| f.machine_cpu_s_per_gb),
            extra: Extra::median_of(rounds.iter().map(|r| &r.figures.extra)),
        }
    }
}

/// Median; the mean of the middle two for an even count; `None` for no values.
pub(super) fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct PairResult {
    #[serde(flatten)]
    pub spec: PairSpec,
    pub vxnet_processes: usize,
    /// Of the overlay device at host a and at host b.
    pub overlay_mtu: [u32; 2],
    /// The transmit path of each vxnet engine at the end of the run (host a's first):
    /// tunnel-gso or socket.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tx_paths: Vec<String>,
    /// Medians over the rounds.
    #[serde(flatten)]
    pub figures: Figures,
    pub rounds: Vec<Round>,
}

impl PairResult {
    pub(super) fn new(
        spec: PairSpec,
        vxnet_processes: usize,
        overlay_mtu: [u32; 2],
        tx_paths: Vec<String>,
        rounds: Vec<Round>,
    ) -> Self {
        PairResult {
            spec,
            vxnet_processes,
            overlay_mtu,
            tx_paths,
            figures: Figures::median_of(&rounds),
            rounds,
        }
    }
}

/// A pair's figure divided by the kernel pair's (`None` where either is missing or zero).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Ratios {
    /// The pair divided (the key in the JSON).
    #[serde(skip)]
    pub pair: &'static str,
    pub tcp_x1_gbit_per_s: Option<f64>,
    pub tcp_x4_gbit_per_s: Option<f64>,
    pub ping_p50_ms: Option<f64>,
    pub ping_p99_ms: Option<f64>,
    /// Only between two vxnet pairs (the kernel pair has no vxnet process to measure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vxnet_cpu_s_per_gb: Option<f64>,
    pub machine_cpu_s_per_gb: Option<f64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Ratios {
    fn of(name: &'static str, pair: &Figures, kernel: &Figures) -> Self {
        let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        };
        let both = |f: fn(&Figures) -> f64| div(Some(f(pair)), Some(f(kernel)));
        Ratios {
            pair: name,
            tcp_x1_gbit_per_s: both(|f| f.tcp_x1_gbit_per_s),
            tcp_x4_gbit_per_s: both(|f| f.tcp_x4_gbit_per_s),
            ping_p50_ms: both(|f| f.ping_p50_ms),
            ping_p99_ms: both(|f| f.ping_p99_ms),
            vxnet_cpu_s_per_gb: div(pair.vxnet_cpu_s_per_gb, kernel.vxnet_cpu_s_per_gb),
            machine_cpu_s_per_gb: div(pair.machine_cpu_s_per_gb, kernel.machine_cpu_s_per_gb),
            extra: Extra::ratio(&pair.extra, &kernel.extra),
        }
    }
}

/// How a run measured, in both reports (`bench` and `bench --containers`): the traffic tool,
/// the length of a TCP run, the pings, the rounds and how they are combined.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct RunInfo {
    pub tool: &'static str,
    pub tool_detail: String,
    pub seconds: u64,
    pub repeat: usize,
    pub pings: u32,
    /// How rounds are combined: always "median" (the mean of the middle two for an even count).
    pub statistic: &'static str,
}

impl RunInfo {
    /// What `args` ask for with `tool`; pings default to 250 a second of TCP run, at most
    /// [`DEFAULT_PINGS`](super::DEFAULT_PINGS).
    pub(super) fn new(args: &super::BenchArgs, tool: &Tool, tool_detail: String) -> RunInfo {
        RunInfo {
            tool: tool.name(),
            tool_detail,
            seconds: args.seconds,
            repeat: args.repeat as usize,
            pings: args
                .pings
                .unwrap_or_else(|| super::DEFAULT_PINGS.min(250 * args.seconds as u32)),
            statistic: STATISTIC,
        }
    }

    /// The report's line about the method: `tcp` qualifies the TCP run, `what` names what the
    /// rounds alternate (pairs, paths).
    pub(super) fn describe(&self, tcp: &str, what: &str) -> String {
        let rounds = if self.repeat == 1 { "round" } else { "rounds" };
        format!(
            "tool: {}; {} s per TCP run{tcp}, {} pings per {what}, {} {rounds} alternating the \
             {what}s, {} of the rounds",
            self.tool_detail, self.seconds, self.pings, self.repeat, self.statistic
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Report {
    #[serde(flatten)]
    pub run: RunInfo,
    pub namespaces: [String; 2],
    /// Of every veth between the hosts.
    pub underlay_mtu: u32,
    pub engine: EngineSettings,
    /// What the first vxnet engine reported it runs with.
    pub engine_workers: Option<usize>,
    pub engine_offloads: Option<Vec<String>>,
    pub method: Method,
    /// This machine's thread wake-up round trip (see `wakeup`), measured before the pairs.
    pub wakeup_round_trip_us: Option<f64>,
    /// Keyed by pair name, in measuring order: kernel, vxnet, mixed, mixed_reverse.
    #[serde(serialize_with = "by_name")]
    pub pairs: Vec<PairResult>,
    /// Keyed by pair name (vxnet, mixed, mixed_reverse): against the kernel pair.
    #[serde(serialize_with = "by_name")]
    pub ratios: Vec<Ratios>,
    /// With `--encrypted`: the encrypted pair against the plain vxnet pair of the same run, the
    /// cost of ESP itself (the kernel ratios mix it with everything else vxnet costs).
    pub encrypted_vs_vxnet: Option<Ratios>,
}

trait Named {
    fn key(&self) -> &'static str;
}

impl Named for PairResult {
    fn key(&self) -> &'static str {
        self.spec.name
    }
}

impl Named for Ratios {
    fn key(&self) -> &'static str {
        self.pair
    }
}

fn by_name<T: Named + Serialize, S: Serializer>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(items.iter().map(|item| (item.key(), item)))
}

/// Ratios of every pair but the kernel pair (the first) against it.
pub(super) fn ratios(pairs: &[PairResult]) -> Vec<Ratios> {
    let Some((kernel, others)) = pairs.split_first() else {
        return Vec::new();
    };
    others
        .iter()
        .map(|p| Ratios::of(p.spec.name, &p.figures, &kernel.figures))
        .collect()
}

/// The encrypted pair divided by the plain vxnet pair, when both were measured.
pub(super) fn encrypted_vs_vxnet(pairs: &[PairResult]) -> Option<Ratios> {
    let find = |name: &str| pairs.iter().find(|p| p.spec.name == name);
    let (encrypted, plain) = (find(ENCRYPTED_PAIR)?, find(PLAIN_PAIR)?);
    Some(Ratios::of(
        ENCRYPTED_PAIR,
        &encrypted.figures,
        &plain.figures,
    ))
}

const PLAIN_PAIR: &str = "vxnet";
const ENCRYPTED_PAIR: &str = super::pairs::ENCRYPTED.name;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::pairs::PAIRS;

    fn round(i: usize, x1: f64, p50: f64, vxnet_s: Option<f64>) -> Round {
        Round::new(
            i,
            Throughput {
                gbit_per_s: x1,
                bytes: 2_000_000_000,
            },
            Throughput {
                gbit_per_s: x1 * 1.5,
                bytes: 3_000_000_000,
            },
            PingStats {
                sent: 100,
                received: 100,
                p50_ms: p50,
                p99_ms: p50 * 2.0,
            },
            Usage {
                vxnet_s,
                machine_s: 4.0,
            },
            Extra::default(),
        )
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn cpu_per_gb_uses_the_single_stream_bytes() {
        let r = round(1, 8.0, 0.1, Some(1.0));
        assert_eq!(r.figures.vxnet_cpu_s_per_gb, Some(0.5));
        assert_eq!(r.figures.machine_cpu_s_per_gb, Some(2.0));
    }

    #[test]
    fn ratios_are_quotients_of_the_medians() {
        let kernel = PairResult::new(
            PAIRS[0],
            0,
            [1450; 2],
            Vec::new(),
            vec![round(1, 10.0, 0.01, None), round(2, 12.0, 0.03, None)],
        );
        let vxnet = PairResult::new(
            PAIRS[1],
            2,
            [1450; 2],
            Vec::new(),
            vec![round(1, 5.0, 0.1, Some(1.0))],
        );
        let pairs = vec![kernel, vxnet];
        let r = ratios(&pairs);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].pair, "vxnet");
        assert_eq!(r[0].tcp_x1_gbit_per_s, Some(5.0 / 11.0));
        assert_eq!(r[0].ping_p50_ms, Some(0.1 / 0.02));
        assert_eq!(r[0].machine_cpu_s_per_gb, Some(1.0));
        assert_eq!(pairs[0].figures.vxnet_cpu_s_per_gb, None);
    }

    #[test]
    fn encrypted_pair_is_also_divided_by_the_plain_vxnet_pair() {
        let kernel = PairResult::new(
            PAIRS[0],
            0,
            [1450; 2],
            Vec::new(),
            vec![round(1, 10.0, 0.01, None)],
        );
        let vxnet = PairResult::new(
            PAIRS[1],
            2,
            [1450; 2],
            Vec::new(),
            vec![round(1, 8.0, 0.1, Some(1.0))],
        );
        let encrypted = PairResult::new(
            crate::bench::pairs::ENCRYPTED,
            2,
            [1405; 2],
            Vec::new(),
            vec![round(1, 6.0, 0.2, Some(1.5))],
        );
        assert_eq!(encrypted_vs_vxnet(&[kernel.clone(), vxnet.clone()]), None);
        let pairs = vec![kernel, vxnet, encrypted];
        let r = encrypted_vs_vxnet(&pairs).expect("both vxnet pairs measured");
        assert_eq!(r.tcp_x1_gbit_per_s, Some(6.0 / 8.0));
        assert_eq!(r.ping_p50_ms, Some(0.2 / 0.1));
        assert!(r.vxnet_cpu_s_per_gb.is_some());
        let report = report_of(pairs, 1500);
        let v: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(v["encrypted_vs_vxnet"]["tcp_x1_gbit_per_s"], 0.75);
        assert!(v["ratios"]["vxnet"].get("vxnet_cpu_s_per_gb").is_none());
        assert!(report.render().contains("ratio vxnet_encrypted/vxnet"));
    }

    /// A report of a builtin-tool run over `pairs` on veths of `underlay_mtu`.
    fn report_of(pairs: Vec<PairResult>, underlay_mtu: u32) -> Report {
        Report {
            run: RunInfo {
                tool: "builtin",
                tool_detail: "builtin".into(),
                seconds: 1,
                repeat: 1,
                pings: 100,
                statistic: STATISTIC,
            },
            namespaces: ["a".into(), "b".into()],
            underlay_mtu,
            engine: EngineSettings::default(),
            engine_workers: Some(2),
            engine_offloads: Some(vec!["udp-gro".into()]),
            method: Method::new("builtin", 1, 100, 10),
            wakeup_round_trip_us: Some(47.9),
            ratios: ratios(&pairs),
            encrypted_vs_vxnet: encrypted_vs_vxnet(&pairs),
            pairs,
        }
    }

    #[test]
    fn json_keys_pairs_by_name_in_order() {
        let report = report_of(
            vec![
                PairResult::new(
                    PAIRS[0],
                    0,
                    [8950; 2],
                    Vec::new(),
                    vec![round(1, 10.0, 0.01, None)],
                ),
                PairResult::new(
                    PAIRS[1],
                    2,
                    [8950; 2],
                    Vec::new(),
                    vec![round(1, 5.0, 0.1, Some(1.0))],
                ),
            ],
            9000,
        );
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.find("\"kernel\":{").unwrap() < text.find("\"vxnet\":{").unwrap());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["pairs"]["vxnet"]["tcp_x1_gbit_per_s"], 5.0);
        assert_eq!(v["ratios"]["vxnet"]["tcp_x1_gbit_per_s"], 0.5);
        assert!(v["pairs"]["kernel"]["vxnet_cpu_s_per_gb"].is_null());
        let table = report.render();
        assert!(table.contains("ratio vxnet/kernel"), "{table}");
        assert!(table.contains("machine CPU: busy time"), "{table}");
        assert!(
            table.contains("machine: thread wake-up round trip 47.9 µs"),
            "{table}"
        );
        assert_eq!(v["wakeup_round_trip_us"], 47.9);
        assert_eq!(v["underlay_mtu"], 9000);
        assert_eq!(v["pairs"]["vxnet"]["overlay_mtu"][1], 8950);
        assert!(
            table.contains("underlay: veth MTU 9000; overlay MTU 8950\n"),
            "{table}"
        );
    }

    #[test]
    fn unequal_overlay_mtus_are_named_per_pair() {
        let report = report_of(
            vec![
                PairResult::new(
                    PAIRS[0],
                    0,
                    [1450; 2],
                    Vec::new(),
                    vec![round(1, 10.0, 0.01, None)],
                ),
                PairResult::new(
                    PAIRS[1],
                    2,
                    [1450, 1400],
                    Vec::new(),
                    vec![round(1, 5.0, 0.1, None)],
                ),
            ],
            1500,
        );
        assert_eq!(
            report.overlay_mtus(),
            "differs: kernel 1450/1450, vxnet 1450/1400"
        );
    }
}
