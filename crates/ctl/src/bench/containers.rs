//! `vxnet bench --containers`: what the bridge hop costs a container. Hosts a and b (namespaces
//! joined by a veth, [`topology`](super::topology)) run vxnet engines serving one network in
//! bridge mode; a container (a namespace of its own) is attached on each host through the
//! engine's attach path, as `vxnet attach` does. Each round measures one TCP stream and ping
//! host to host over the overlay (gateway address to gateway address: bridge, TAP, vxnet and
//! back, no veth) and container to container (the same plus a veth and a bridge port at each
//! end), alternating which goes first; the report gives the medians and the ratio of the two.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::Serialize;
use vxnet_dataplane::control::client::request;
use vxnet_dataplane::control::proto::{AttachRequest, Endpoint, Request};

use super::measure::{warmup_pings, Meter, PingStats, Throughput, Tool};
use super::pairs::EngineSettings;
use super::progress::Progress;
use super::report::{median, RunInfo};
use super::topology::{self, Topology, SHARED};
use super::{BenchArgs, BenchError, REACH_TIMEOUT};
use crate::netns::addressing::Subnet;
use crate::netns::{engine, Cleanup, NetnsError};

const VNI: u32 = 48;
/// The network's name as the engine calls the one network of its command line.
const NETWORK: &str = "vni48";

/// The network's subnet: the second half of `--subnet` (its first block carries the underlay),
/// so that even the smallest `--subnet` (a /27) leaves room for two gateways and two containers.
fn network(subnet: &Subnet) -> Ipv4Net {
    let first = subnet.block(topology::BLOCKS as usize / 2);
    Ipv4Net::new(first.network(), subnet.block_len() - 2).unwrap_or(first)
}

/// Address `k` of the network: 0 and 1 are the gateways of hosts a and b, 2 and 3 their
/// containers.
fn address(net: Ipv4Net, k: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1 + k)
}

/// The figures of one path in one round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct PathRound {
    pub round: usize,
    pub tcp_gbit_per_s: f64,
    pub tcp_bytes: u64,
    pub ping_p50_ms: f64,
    pub ping_p99_ms: f64,
    pub pings_received: u32,
}

impl PathRound {
    fn new(round: usize, tcp: Throughput, ping: PingStats) -> Self {
        PathRound {
            round,
            tcp_gbit_per_s: tcp.gbit_per_s,
            tcp_bytes: tcp.bytes,
            ping_p50_ms: ping.p50_ms,
            ping_p99_ms: ping.p99_ms,
            pings_received: ping.received,
        }
    }
}

/// One path: host to host or container to container, its medians and rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct PathResult {
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
    pub tcp_gbit_per_s: f64,
    pub ping_p50_ms: f64,
    pub ping_p99_ms: f64,
    pub rounds: Vec<PathRound>,
}

impl PathResult {
    fn new(from: Ipv4Addr, to: Ipv4Addr, rounds: Vec<PathRound>) -> Self {
        let of = |f: fn(&PathRound) -> f64| median(rounds.iter().map(f).collect()).unwrap_or(0.0);
        PathResult {
            from,
            to,
            tcp_gbit_per_s: of(|r| r.tcp_gbit_per_s),
            ping_p50_ms: of(|r| r.ping_p50_ms),
            ping_p99_ms: of(|r| r.ping_p99_ms),
            rounds,
        }
    }
}

/// Containers' figure over the hosts' (`None` where the hosts' is zero).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct PathRatios {
    pub tcp_gbit_per_s: Option<f64>,
    pub ping_p50_ms: Option<f64>,
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct ContainersReport {
    #[serde(flatten)]
    pub run: RunInfo,
    /// Host a, host b, container a, container b.
    pub namespaces: [String; 4],
    pub underlay_mtu: u32,
    /// Of the containers' interfaces (the network's MTU, as the engine set it).
    pub endpoint_mtu: u32,
    pub engine: EngineSettings,
    pub method: String,
    pub hosts: PathResult,
    pub containers: PathResult,
    /// containers / hosts.
    pub ratios: PathRatios,
}

impl ContainersReport {
    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        let ns = &self.namespaces;
        let _ = writeln!(
            out,
            "vxnet bench --containers: host to host and container to container over one vxnet \
             network in bridge mode (hosts {} / {}, containers {} / {})",
            ns[0], ns[1], ns[2], ns[3]
        );
        let _ = writeln!(out, "{}", self.run.describe(" (1 stream)", "path"));
        let _ = writeln!(
            out,
            "engine: {}; underlay: veth MTU {}; endpoint MTU {}\n",
            self.engine.describe(),
            self.underlay_mtu,
            self.endpoint_mtu
        );
        let _ = writeln!(
            out,
            "{:<26} {:>12} {:>12} {:>12}",
            "path", "TCP Gbit/s", "ping p50 ms", "ping p99 ms"
        );
        for (name, p) in [
            ("host to host", &self.hosts),
            ("container to container", &self.containers),
        ] {
            let _ = writeln!(
                out,
                "{name:<26} {:>12.2} {:>12.3} {:>12.3}",
                p.tcp_gbit_per_s, p.ping_p50_ms, p.ping_p99_ms
            );
        }
        let shown = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        let _ = writeln!(
            out,
            "{:<26} {:>12} {:>12}",
            "containers / hosts",
            shown(self.ratios.tcp_gbit_per_s),
            shown(self.ratios.ping_p50_ms)
        );
        let _ = writeln!(out, "\nmethod: {}", self.method);
        out
    }
}

/// The containers' namespaces: `PREFIX-ca` on host a, `PREFIX-cb` on host b.
fn container_names(prefix: &str) -> [String; 2] {
    [format!("{prefix}-ca"), format!("{prefix}-cb")]
}

pub(super) fn bench(
    args: &BenchArgs,
    tool: Tool,
    tool_detail: String,
    exe: &Path,
    cleanup: &Cleanup,
    progress: &mut Progress,
) -> Result<ContainersReport, BenchError> {
    let hosts = topology::names(&args.prefix);
    let containers = container_names(&args.prefix);
    progress.status(&format!(
        "building hosts {} and {} and containers {} and {} (underlay MTU {}, addresses from {})",
        hosts[0], hosts[1], containers[0], containers[1], args.underlay_mtu, args.subnet
    ));
    let topo = topology::build(
        cleanup,
        &args.prefix,
        args.subnet,
        args.underlay_mtu,
        &[SHARED],
    )?;
    for name in &containers {
        cleanup.add_namespace(name)?;
    }
    let settings = args.engine_settings();
    progress.status(&format!(
        "starting the vxnet engines ({}) and attaching the containers",
        settings.describe()
    ));
    let net = network(&topo.subnet);
    let mut endpoint_mtu = 0;
    for (i, container) in containers.iter().enumerate() {
        let engine = start_engine(cleanup, &topo, exe, &settings, net, i)?;
        let endpoint = attach(&engine, container, net, i)?;
        endpoint_mtu = endpoint.mtu;
    }
    let run = RunInfo::new(args, &tool, tool_detail);
    let (tool_name, seconds, pings) = (run.tool, run.seconds, run.pings);
    let warmup = warmup_pings(pings);
    let mut meters = [
        (
            Meter::start(cleanup, &topo, tool.clone(), seconds, pings)?,
            address(net, 1),
        ),
        (
            Meter::between(
                cleanup,
                &topo,
                containers.clone(),
                "containers-",
                tool,
                seconds,
                pings,
            )?,
            address(net, 3),
        ),
    ];
    const PATHS: [&str; 2] = ["host to host", "container to container"];
    for ((meter, target), path) in meters.iter_mut().zip(PATHS) {
        progress.status(&format!("checking {path} passes traffic"));
        if !meter.wait_reachable(*target, REACH_TIMEOUT) {
            return Err(BenchError::Unreachable {
                pair: path,
                target: target.to_string(),
            });
        }
    }
    let repeat = run.repeat;
    let mut rounds: [Vec<PathRound>; 2] = Default::default();
    progress.count_steps(repeat * 2 * 2);
    for r in 1..=repeat {
        // Alternating which path goes first, so neither always runs on a machine the other
        // has just warmed up (or heated).
        let order = if r % 2 == 1 { [0, 1] } else { [1, 0] };
        for k in order {
            let (meter, target) = &mut meters[k];
            let failed = |what: &'static str| {
                move |message: String| BenchError::Measure {
                    pair: PATHS[k],
                    what,
                    message,
                }
            };
            let at = format!("round {r}/{repeat}, {}", PATHS[k]);
            progress.step(&format!("{at}: TCP for {seconds} s"));
            let tcp = meter.tcp(*target, 1).map_err(failed("TCP"))?;
            progress.step(&format!("{at}: ping"));
            let ping = meter.ping(*target).map_err(failed("ping"))?;
            rounds[k].push(PathRound::new(r, tcp, ping));
        }
    }
    let [host_rounds, container_rounds] = rounds;
    let hosts_result = PathResult::new(address(net, 0), address(net, 1), host_rounds);
    let containers_result = PathResult::new(address(net, 2), address(net, 3), container_rounds);
    let ratios = PathRatios {
        tcp_gbit_per_s: ratio(
            containers_result.tcp_gbit_per_s,
            hosts_result.tcp_gbit_per_s,
        ),
        ping_p50_ms: ratio(containers_result.ping_p50_ms, hosts_result.ping_p50_ms),
    };
    let [ha, hb] = hosts;
    let [ca, cb] = containers;
    Ok(ContainersReport {
        run,
        namespaces: [ha, hb, ca, cb],
        underlay_mtu: topo.mtu,
        endpoint_mtu,
        engine: settings,
        method: format!(
            "host to host: from host a's gateway address to host b's (bridge, TAP, vxnet, \
             underlay and back); container to container: from the container on host a to the \
             one on host b (the same plus a veth and a bridge port at each end). Per round and \
             path: one TCP stream for {seconds} s, rate at the receiver ({tool_name}), then \
             {pings} pings 2 ms apart after {warmup} unrecorded ones (nearest-rank p50, p99); \
             ratios are the containers' figure over the hosts'"
        ),
        hosts: hosts_result,
        containers: containers_result,
        ratios,
    })
}

/// Host `i`'s engine: the network in bridge mode, the host's gateway address on the bridge, the
/// other host as its one remote; records in the run's directory.
fn start_engine(
    cleanup: &Cleanup,
    topo: &Topology,
    exe: &Path,
    settings: &EngineSettings,
    net: Ipv4Net,
    i: usize,
) -> Result<engine::Engine, NetnsError> {
    let host = format!("containers-{}", ['a', 'b'][i]);
    let state = topo.dir.join(format!("{host}-state"));
    let mut args: Vec<String> = [
        "--vni".to_string(),
        VNI.to_string(),
        "--dev".into(),
        format!("vx{VNI}"),
        "--bridge".into(),
        format!("vb{VNI}"),
        "--address".into(),
        format!("{}/{}", address(net, i as u32), net.prefix_len()),
        "--local".into(),
        topo.underlay_addr(SHARED, i).to_string(),
        "--remote".into(),
        topo.underlay_addr(SHARED, 1 - i).to_string(),
        "--state-dir".into(),
        state.display().to_string(),
    ]
    .to_vec();
    args.extend(settings.args());
    let launch = engine::Launch {
        host: &host,
        namespace: &topo.ns[i],
        args: &args,
        env: &settings.env(),
        dir: &topo.dir,
    };
    engine::start(cleanup, exe, &launch)
}

/// Attaches namespace `ns` to the network on host `i`'s engine, as `vxnet attach` does.
fn attach(
    engine: &engine::Engine,
    ns: &str,
    net: Ipv4Net,
    i: usize,
) -> Result<Endpoint, NetnsError> {
    let req = AttachRequest {
        network: NETWORK.into(),
        netns: format!("/run/netns/{ns}"),
        ifname: Some("eth0".into()),
        name: Some(format!("container-{}", ['a', 'b'][i])),
        aliases: Vec::new(),
        address: Some(format!(
            "{}/{}",
            address(net, 2 + i as u32),
            net.prefix_len()
        )),
        mac: None,
        container_id: None,
    };
    let failed = |e: String| NetnsError::Setup(format!("attaching {ns}: {e}"));
    let value =
        request(&engine.control, &Request::Attach(req)).map_err(|e| failed(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_holds_both_gateways_and_containers_outside_the_underlay() {
        for text in ["192.168.250.0/24", "10.9.0.0/27"] {
            let subnet = Subnet::parse(text, topology::BLOCKS).unwrap_or_else(|e| panic!("{e}"));
            let net = network(&subnet);
            let underlay = subnet.block(SHARED.block);
            for k in 0..4 {
                let a = address(net, k);
                assert!(net.contains(&a) && a != net.broadcast(), "{text}: {a}");
                assert!(!underlay.contains(&a), "{text}: {a}");
            }
        }
        let subnet =
            Subnet::parse("10.9.0.0/24", topology::BLOCKS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(network(&subnet).to_string(), "10.9.0.128/25");
        assert_eq!(address(network(&subnet), 3), Ipv4Addr::new(10, 9, 0, 132));
    }

    #[test]
    fn the_table_shows_both_paths_and_their_ratio() {
        let round = |gbit: f64, ms: f64| PathRound {
            round: 1,
            tcp_gbit_per_s: gbit,
            tcp_bytes: 1,
            ping_p50_ms: ms,
            ping_p99_ms: ms,
            pings_received: 10,
        };
        let at = |k: u8| Ipv4Addr::new(10, 9, 0, k);
        let hosts = PathResult::new(at(1), at(2), vec![round(8.0, 0.1), round(10.0, 0.3)]);
        let containers = PathResult::new(at(3), at(4), vec![round(6.3, 0.2)]);
        assert_eq!((hosts.tcp_gbit_per_s, hosts.ping_p50_ms), (9.0, 0.2));
        let report = ContainersReport {
            run: RunInfo {
                tool: "iperf3",
                tool_detail: "iperf3".into(),
                seconds: 4,
                repeat: 2,
                pings: 10,
                statistic: super::super::report::STATISTIC,
            },
            namespaces: ["a", "b", "ca", "cb"].map(String::from),
            underlay_mtu: 1500,
            endpoint_mtu: 1450,
            engine: EngineSettings::default(),
            method: "m".into(),
            ratios: PathRatios {
                tcp_gbit_per_s: ratio(containers.tcp_gbit_per_s, hosts.tcp_gbit_per_s),
                ping_p50_ms: ratio(containers.ping_p50_ms, hosts.ping_p50_ms),
            },
            hosts,
            containers,
        };
        let text = report.render();
        assert!(
            text.contains("host to host                       9.00        0.200"),
            "{text}"
        );
        assert!(
            text.contains("container to container             6.30"),
            "{text}"
        );
        assert!(
            text.contains("containers / hosts                 0.70         1.00"),
            "{text}"
        );
        assert_eq!(ratio(1.0, 0.0), None);
    }
}
