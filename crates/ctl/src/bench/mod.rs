//! `vxnet bench`: throughput, latency and CPU cost of vxnet against the kernel's vxlan, in one run
//! on one topology. Two namespaces joined by veths
//! ([`topology`]) carry four overlays at once ([`pairs`]): kernel↔kernel, vxnet↔vxnet,
//! vxnet→kernel and kernel→vxnet. Each round measures each pair in turn ([`measure`], [`cpu`]); the report gives
//! medians and the ratios against the kernel pair ([`report`]). Everything it makes is removed at
//! the end, on error, and on Ctrl-C/SIGTERM (then with a non-zero exit).

mod containers;
mod cpu;
mod extra;
mod measure;
mod method;
mod names;
mod pairs;
mod progress;
mod report;
mod rr;
mod topology;
mod wakeup;

use std::path::Path;
use std::time::Duration;

use clap::Args;

use crate::netns::addressing::{parse_prefix, Subnet};
use crate::netns::{find_in_path, is_root, CleanOnDrop, Cleanup, NetnsError};
pub use measure::ToolChoice;
use measure::{Meter, Tool, UdpStats};
use pairs::{EngineSettings, Pair};
use progress::Progress;
use report::{PairResult, Report, Round};

/// Pings per pair and round unless `--pings`: 500 (one second at 2 ms), fewer for 1-second runs.
const DEFAULT_PINGS: u32 = 500;
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Seconds per TCP measurement.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub seconds: u64,
    /// Rounds; each measures the pairs in turn (kernel, vxnet, mixed, mixed reverse, kernel, …). The report
    /// gives the median of the rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub repeat: u64,
    /// Pings per pair and round, 2 ms apart [default: 500, 250 with --seconds 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    pub pings: Option<u32>,
    /// TCP traffic generator: iperf3, or vxnet's own sender and receiver.
    #[arg(long, value_enum, default_value_t = ToolChoice::Auto)]
    pub tool: ToolChoice,
    /// Forwarding threads of every vxnet engine (`vxnet run --threads N`) [default: one per core].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: Option<u64>,
    /// Run the engines without TAP offloads and UDP GSO/GRO (`vxnet run --no-offloads`).
    #[arg(long, conflicts_with = "disable_offloads")]
    pub no_offloads: bool,
    /// Offloads the engines treat as refused by the kernel: a comma list of tap, gso, gro, uso,
    /// tunnel-gso (VXNET_DISABLE_OFFLOADS).
    #[arg(long, value_name = "LIST", value_parser = parse_offloads)]
    pub disable_offloads: Option<OffloadList>,
    /// MTU of the veths between the hosts (the kernel's vxlan and vxnet both give their overlay
    /// 50 bytes less). 9000 models a jumbo data-centre underlay, where per-datagram costs weigh
    /// less.
    #[arg(long, default_value_t = topology::DEFAULT_MTU,
          value_parser = clap::value_parser!(u32).range(topology::MIN_MTU..=topology::MAX_MTU))]
    pub underlay_mtu: u32,
    /// Also send UDP datagrams of SIZE payload bytes (iperf3 `-u -b 0 -l SIZE`, as fast as
    /// the sender can) across each pair for --seconds: offered and delivered packets per second
    /// and loss. Then again paced at the highest rate the kernel pair carried with less than
    /// 1 % loss in that round (its delivered rate, lowered by a fifth until the loss is under
    /// 1 %; the rate its sender reached, where that was less than asked), the same rate for
    /// every pair. Needs iperf3.
    #[arg(long, value_name = "SIZE", value_parser = clap::value_parser!(u32).range(16..=8950))]
    pub udp: Option<u32>,
    /// Also measure request/response latency across each pair, like netperf TCP_RR: 1-byte
    /// requests and answers on one TCP connection for --seconds, p50 and p99 of the round trips.
    #[arg(long)]
    pub rr: bool,
    /// Busy-poll window of every vxnet engine (`vxnet run --busy-poll USEC`) [default: the
    /// engine's].
    #[arg(long, value_name = "USEC", value_parser = vxnet_dataplane::tuning::parse_busy_poll)]
    pub busy_poll: Option<u32>,
    /// Add the vxnet pair again with the socket transmit path (`vxnet run --no-tunnel-gso`), to
    /// compare it with the tunnel-GSO path of the vxnet pair in one run (not with --encrypted).
    #[arg(long, conflicts_with = "encrypted")]
    pub socket_path: bool,
    /// Add the encrypted vxnet pair (ESP-in-UDP, AES-256-GCM, `vxnet run --key-file`) to the
    /// run, measured like the others on the same underlay.
    #[arg(long)]
    pub encrypted: bool,
    /// Names the namespaces the run creates: PREFIX-a and PREFIX-b (at most 13 bytes). A name
    /// already taken is an error.
    #[arg(long, default_value = "vxbench", value_parser = parse_prefix)]
    pub prefix: String,
    /// IPv4 range of every address of the run, cut into 8 equal blocks: the three underlays,
    /// then each pair's overlay. A /27 or larger that no route of this host overlaps.
    #[arg(long, default_value = topology::DEFAULT_SUBNET, value_parser = parse_subnet)]
    pub subnet: Subnet,
    /// Instead of the pairs: host to host and container to container across two hosts whose
    /// vxnet engines serve one network in bridge mode, a container (namespace) attached on each
    /// as `vxnet attach` does; one TCP stream and ping per path and round, and the ratio of the
    /// two (what the veth and bridge hop costs). The network is the second half of --subnet.
    #[arg(long, conflicts_with_all = ["udp", "rr", "socket_path", "encrypted"])]
    pub containers: bool,
    /// Print the results as one JSON document on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
}

/// Benchmarks other than the tunnel's.
#[derive(Debug, clap::Subcommand)]
pub enum BenchMode {
    /// Name convergence at scale: simulated hosts on a real etcd publish endpoints; how fast
    /// every host sees each name appear and go, store writes and watch events per change,
    /// one engine's memory per 1000 endpoints, and a host's resync after a restart.
    Names(names::NamesBenchArgs),
}

impl BenchArgs {
    /// What every `vxnet run` of the bench gets from the flags.
    fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            threads: self.threads,
            no_offloads: self.no_offloads,
            disable_offloads: self
                .disable_offloads
                .clone()
                .map(|l| l.0)
                .unwrap_or_default(),
            busy_poll: self.busy_poll,
        }
    }
}

fn parse_subnet(text: &str) -> Result<Subnet, String> {
    Subnet::parse(text, topology::BLOCKS)
}

/// A validated `--disable-offloads` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffloadList(Vec<String>);

use vxnet_dataplane::engine::DISABLEABLE_OFFLOADS as OFFLOADS;

fn parse_offloads(text: &str) -> Result<OffloadList, String> {
    let mut list = Vec::new();
    for item in text.split(',').map(str::trim) {
        if !OFFLOADS.contains(&item) {
            return Err(format!(
                "unknown offload '{item}' (expected a comma list of {})",
                OFFLOADS.join(", ")
            ));
        }
        if !list.iter().any(|x| x == item) {
            list.push(item.to_string());
        }
    }
    Ok(OffloadList(list))
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("vxnet bench needs root (it creates network namespaces, veths and TAP devices)")]
    NotRoot,
    #[error("/dev/net/tun is missing: load the tun module (modprobe tun)")]
    NoTun,
    #[error("`{tool}` is not installed or not on PATH ({why})")]
    MissingTool {
        tool: &'static str,
        why: &'static str,
    },
    #[error("{0}")]
    Tool(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("the {pair} pair does not pass traffic: no ping reply from {target}")]
    Unreachable { pair: &'static str, target: String },
    #[error("{pair} pair, {what}: {message}")]
    Measure {
        pair: &'static str,
        what: &'static str,
        message: String,
    },
    #[error("{0}")]
    Output(String),
    #[error("{0}")]
    Subnet(String),
}

/// Tools needed besides the optional iperf3.
const NEEDED: [(&str, &str); 2] = [
    ("ip", "iproute2: namespaces, veths, kernel vxlan"),
    ("ping", "iputils-ping: latency"),
];

pub fn run(mut args: BenchArgs) -> Result<(), BenchError> {
    if let Some(BenchMode::Names(names)) = args.mode.take() {
        return names::run(names).map_err(BenchError::Output);
    }
    if !is_root() {
        return Err(BenchError::NotRoot);
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(BenchError::NoTun);
    }
    for (tool, why) in NEEDED {
        if find_in_path(tool).is_none() {
            return Err(BenchError::MissingTool { tool, why });
        }
    }
    let (tool, tool_detail) = measure::choose(args.tool).map_err(BenchError::Tool)?;
    // Before anything is created: a refused subnet leaves the machine as it was.
    args.subnet.check_unrouted().map_err(BenchError::Subnet)?;
    if args.udp.is_some() && tool.name() != "iperf3" {
        return Err(BenchError::MissingTool {
            tool: "iperf3",
            why: "--udp sends with iperf3",
        });
    }
    let exe = std::env::current_exe()
        .map_err(|e| NetnsError::Setup(format!("cannot find the vxnet executable: {e}")))?;
    let cleanup = Cleanup::default();
    cleanup.install_signal_handler("vxnet bench")?;
    let guard = CleanOnDrop(&cleanup);
    let mut progress = Progress::new();
    progress.note(&format!("traffic tool: {tool_detail}"));
    if args.containers {
        let result = containers::bench(&args, tool, tool_detail, &exe, &cleanup, &mut progress);
        finish(guard, &mut progress);
        return print(&result?, args.json, containers::ContainersReport::render);
    }
    let result = bench(&args, tool, tool_detail, &exe, &cleanup, &mut progress);
    finish(guard, &mut progress);
    print(&result?, args.json, Report::render)
}

/// Removes what the run made (before the report is printed, so that it ends the output).
fn finish(guard: CleanOnDrop<'_>, progress: &mut Progress) {
    progress.status("removing the namespaces, processes and files it made");
    drop(guard);
    progress.clear();
}

/// The report on stdout: one JSON document, or the table.
fn print<R: serde::Serialize>(
    report: &R,
    json: bool,
    render: fn(&R) -> String,
) -> Result<(), BenchError> {
    if json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| BenchError::Output(format!("cannot encode the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", render(report));
    }
    Ok(())
}

fn bench(
    args: &BenchArgs,
    tool: Tool,
    tool_detail: String,
    exe: &Path,
    cleanup: &Cleanup,
    progress: &mut Progress,
) -> Result<Report, BenchError> {
    progress.status("timing a thread wake-up round trip");
    let wakeup_round_trip_us = wakeup::round_trip_us();
    let ns = topology::names(&args.prefix);
    progress.status(&format!(
        "building namespaces {} and {} (underlay MTU {}, addresses from {})",
        ns[0], ns[1], args.underlay_mtu, args.subnet
    ));
    let topo = topology::build(
        cleanup,
        &args.prefix,
        args.subnet,
        args.underlay_mtu,
        &topology::ALL,
    )?;
    let settings = args.engine_settings();
    progress.status(&format!(
        "starting the kernel vxlan links and the vxnet engines ({})",
        settings.describe()
    ));
    let pairs = pairs::build(
        cleanup,
        &topo,
        exe,
        &settings,
        args.socket_path,
        args.encrypted,
    )?;
    let engine = pairs::engine_report(&pairs);
    let run = report::RunInfo::new(args, &tool, tool_detail);
    let pings = run.pings;
    let mut meter = Meter::start(cleanup, &topo, tool, args.seconds, pings)?;
    for pair in &pairs {
        progress.status(&format!(
            "checking the {} pair passes traffic",
            pair.spec.name
        ));
        if !meter.wait_reachable(pair.target(), REACH_TIMEOUT) {
            return Err(BenchError::Unreachable {
                pair: pair.spec.name,
                target: pair.target().to_string(),
            });
        }
    }
    let repeat = run.repeat;
    let mut rounds: Vec<Vec<Round>> = pairs.iter().map(|_| Vec::new()).collect();
    let measurements = 3 + usize::from(args.udp.is_some()) + usize::from(args.rr);
    progress.count_steps(repeat * pairs.len() * measurements);
    for r in 1..=repeat {
        // Set by the kernel pair, measured first in every round, for the pairs after it.
        let mut pace = None;
        for (pair, results) in pairs.iter().zip(&mut rounds) {
            let at = format!("round {r}/{repeat}, {} pair", pair.spec.name);
            let round = measure_pair(&mut meter, pair, args, (r, &mut pace), &at, progress)?;
            results.push(round);
        }
    }
    let results: Vec<PairResult> = pairs
        .iter()
        .zip(rounds)
        .map(|(p, r)| PairResult::new(p.spec, p.engines.len(), p.overlay_mtu, p.tx_paths(), r))
        .collect();
    let mut method =
        report::Method::new(run.tool, args.seconds, pings, measure::warmup_pings(pings));
    method.udp = args.udp.map(|size| {
        format!(
            "iperf3 -u -b 0 -l {size} from host a to host b for {} s: offered = the sender's \
             datagrams per second, delivered = the receiver's (less those lost), loss = lost / \
             sent; ratios of rates against the kernel pair. Paced: the same with iperf3 -b at \
             the highest rate the kernel pair carried in the round with < 1 % loss (its \
             delivered rate, times 0.8 until its loss was under 1 %, at most {} tries; the \
             rate its sender reached, where that was less than asked), the same rate offered \
             to every pair",
            args.seconds, PACE_TRIES
        )
    });
    method.rr = args.rr.then(|| {
        format!(
            "1-byte request, 1-byte answer, one TCP connection (TCP_NODELAY) from host a to \
             host b for {} s after {} unrecorded round trips; nearest-rank p50 and p99, \
             transactions per second",
            args.seconds,
            rr::WARMUP
        )
    });
    Ok(Report {
        run,
        namespaces: topo.ns.clone(),
        underlay_mtu: topo.mtu,
        engine: settings,
        engine_workers: engine.as_ref().map(|e| e.workers),
        engine_offloads: engine.map(|e| e.offloads.iter().map(|o| o.name().to_string()).collect()),
        method,
        wakeup_round_trip_us,
        ratios: report::ratios(&results),
        encrypted_vs_vxnet: report::encrypted_vs_vxnet(&results),
        pairs: results,
    })
}

/// Paced UDP runs of the kernel pair per round at most, each at 0.8 times the last rate, while
/// its loss is 1 % or more.
const PACE_TRIES: usize = 4;
const PACE_LOSS_PERCENT: f64 = 1.0;

/// The rate the kernel pair carried when asked for `asked` datagrams per second: its sender,
/// which runs the kernel's whole tunnel path in its own system call, may not reach the pace
/// (on two cores it sent 112 kpps when asked for 142), and the pairs after it must be offered
/// what it carried, not more (the same iperf3 pace gets 142 kpps out of a sender writing into a
/// TAP, which would compare vxnet at 1.27× the kernel pair's load).
fn carried_rate(asked: f64, paced: &UdpStats) -> f64 {
    asked.min(paced.offered_pps)
}

/// TCP ×1 (with the CPU accounting), TCP ×4, ping, then UDP and request/response when asked,
/// across one pair. `pace` is the round's paced UDP rate: the kernel pair (the first) sets it.
fn measure_pair(
    meter: &mut Meter<'_>,
    pair: &Pair,
    args: &BenchArgs,
    (round, pace): (usize, &mut Option<f64>),
    at: &str,
    progress: &mut Progress,
) -> Result<Round, BenchError> {
    let failed = |what: &'static str| {
        move |message: String| BenchError::Measure {
            pair: pair.spec.name,
            what,
            message,
        }
    };
    let target = pair.target();
    let pids = pair.vxnet_pids();
    let seconds = meter.seconds();
    progress.step(&format!("{at}: TCP x1 for {seconds} s"));
    let before = cpu::Snapshot::take(&pids).map_err(failed("CPU"))?;
    let x1 = meter.tcp(target, 1).map_err(failed("TCP x1"))?;
    let after = cpu::Snapshot::take(&pids).map_err(failed("CPU"))?;
    progress.step(&format!("{at}: TCP x4 for {seconds} s"));
    let x4 = meter.tcp(target, 4).map_err(failed("TCP x4"))?;
    progress.step(&format!("{at}: ping"));
    let ping = meter.ping(target).map_err(failed("ping"))?;
    let (udp, paced) = match args.udp {
        Some(size) => {
            progress.step(&format!("{at}: UDP {size} B for {seconds} s"));
            let udp = meter.udp(target, size, None).map_err(failed("UDP"))?;
            let mut rate = pace.unwrap_or(udp.delivered_pps);
            let mut tries = 0;
            let paced = loop {
                tries += 1;
                progress.status(&format!(
                    "{at}: UDP {size} B paced at {:.1} kpps",
                    rate / 1e3
                ));
                let paced = meter
                    .udp(target, size, Some(rate))
                    .map_err(failed("UDP paced"))?;
                if pace.is_some() || paced.loss_percent < PACE_LOSS_PERCENT || tries >= PACE_TRIES {
                    break paced;
                }
                rate *= 0.8;
            };
            pace.get_or_insert(carried_rate(rate, &paced));
            (Some(udp), Some(paced))
        }
        None => (None, None),
    };
    let mut rr_cpu = None;
    let rr = match args.rr {
        true => {
            progress.step(&format!("{at}: request/response for {seconds} s"));
            let before = cpu::Snapshot::take(&pids).map_err(failed("CPU"))?;
            let rr = meter.rr(target).map_err(failed("request/response"))?;
            let after = cpu::Snapshot::take(&pids).map_err(failed("CPU"))?;
            rr_cpu = after
                .since(&before)
                .vxnet_s
                .map(|s| s * 1e6 / rr.transactions.max(1) as f64);
            Some(rr)
        }
        false => None,
    };
    let mut extra = extra::Extra::new(udp, paced, rr);
    extra.rr_vxnet_cpu_us = rr_cpu;
    Ok(Round::new(round, x1, x4, ping, after.since(&before), extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_pairs_are_paced_at_what_the_kernel_pair_carried() {
        let run = |offered_pps| UdpStats {
            offered_pps,
            delivered_pps: offered_pps * 0.99,
            loss_percent: 0.8,
        };
        // The kernel pair's sender fell short of the pace: the others get what it sent.
        assert_eq!(carried_rate(142_000.0, &run(112_000.0)), 112_000.0);
        // A pacer slightly over the asked rate does not raise it.
        assert_eq!(carried_rate(100_000.0, &run(100_400.0)), 100_000.0);
    }

    #[test]
    fn offload_lists_are_checked_and_deduplicated() {
        assert_eq!(
            parse_offloads("gso,gro,gso"),
            Ok(OffloadList(vec!["gso".into(), "gro".into()]))
        );
        assert!(parse_offloads("tso").is_err());
        assert!(parse_offloads("").is_err());
    }
}
