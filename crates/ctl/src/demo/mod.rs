//! `vxnet demo`: a two-host overlay on this machine. Two named network namespaces joined by a
//! veth pair (the underlay), `vxnet run` in each, VNI 42 between them; then ping, a TCP transfer
//! with vxnet's own sender and receiver, `fdb show`, and one captured underlay packet explained.
//! Everything is done by this binary itself (rtnetlink, its own ICMP echo and sockets), so a bare
//! machine without iproute2 or ping runs it. Everything it makes is removed at the end, on error,
//! and on Ctrl-C/SIGTERM.

pub mod packet;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use vxnet_dataplane::control::client::request;
use vxnet_dataplane::control::proto::{FdbTable, Request};
use vxnet_dataplane::sys::icmp::Pinger;
use vxnet_dataplane::sys::named_netns::NamedNetns;
use vxnet_dataplane::sys::packet::{CaptureError, PacketSocket};
use vxnet_encap::DEFAULT_PORT;

use crate::netns::addressing::{parse_prefix, Subnet};
use crate::netns::transfer::{self, Amount};
use crate::netns::{engine, in_netns, is_root, CleanOnDrop, Cleanup, NetnsError};

const VNI: u32 = 42;
const DEV: &str = "vx42";
const TCP_PORT: u16 = 5201;
const STEPS: usize = 7;
/// MTU of the underlay veths: an Ethernet's.
const UNDERLAY_MTU: u32 = 1500;
const DEFAULT_SUBNET: &str = "192.168.205.0/24";
/// Blocks of `--subnet`: the underlay, then the overlay.
const UNDERLAY_BLOCK: usize = 0;
const OVERLAY_BLOCK: usize = 1;
const ECHO_TIMEOUT: Duration = Duration::from_secs(2);
const ECHO_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Megabytes (10^6 bytes) to move over TCP across the overlay (1-100000).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub megabytes: u64,
    /// Names what the demo creates: the namespaces PREFIX-a and PREFIX-b, and the underlay veth
    /// ends in them (named the same). At most 13 bytes; a name already taken is an error.
    #[arg(long, default_value = "vxdemo", value_parser = parse_prefix)]
    pub prefix: String,
    /// IPv4 range of the demo's addresses: hosts .1 and .2 of its lower half on the underlay,
    /// the first two of its upper half on the overlay. A /29 or larger that no route of this
    /// host overlaps.
    #[arg(long, default_value = DEFAULT_SUBNET, value_parser = parse_subnet)]
    pub subnet: Subnet,
    /// Print the result summary as one JSON document on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
}

fn parse_subnet(text: &str) -> Result<Subnet, String> {
    Subnet::parse(text, 2)
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("vxnet demo needs root (it creates network namespaces and TAP devices)")]
    NotRoot,
    #[error("/dev/net/tun is missing: load the tun module (modprobe tun)")]
    NoTun,
    #[error("{0}")]
    Subnet(String),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("ping across the overlay failed: {0}")]
    Ping(String),
    #[error("capture: {0}")]
    Capture(#[from] CaptureError),
    #[error("fdb show: {0}")]
    Fdb(String),
}

#[derive(Debug, Serialize)]
pub struct PingSummary {
    pub transmitted: u32,
    pub received: u32,
    pub rtt_avg_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub namespaces: [String; 2],
    pub subnet: String,
    pub underlay: [String; 2],
    pub overlay: [String; 2],
    pub vni: u32,
    pub ping: PingSummary,
    pub tcp_bytes: u64,
    pub tcp_seconds: f64,
    pub tcp_gbit_per_s: f64,
    pub fdb_a: serde_json::Value,
    pub packet: packet::Explained,
}

/// Prints progress to stdout, or to stderr when stdout is reserved for JSON.
struct Progress {
    json: bool,
    step: usize,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.step += 1;
        self.say(&format!("[{}/{STEPS}] {what}", self.step));
    }

    fn say(&self, text: &str) {
        if self.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    fn block(&self, text: &str) {
        for line in text.lines() {
            self.say(&format!("    {line}"));
        }
    }
}

pub fn run(args: DemoArgs) -> Result<(), DemoError> {
    if !is_root() {
        return Err(DemoError::NotRoot);
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(DemoError::NoTun);
    }
    // Before anything is created: a refused subnet leaves the machine as it was.
    args.subnet.check_unrouted().map_err(DemoError::Subnet)?;
    let exe = std::env::current_exe()
        .map_err(|e| DemoError::Setup(format!("cannot find the vxnet executable: {e}")))?;
    let cleanup = Cleanup::default();
    cleanup.install_signal_handler("vxnet demo")?;
    let guard = CleanOnDrop(&cleanup);
    let mut progress = Progress {
        json: args.json,
        step: 0,
    };
    let report = demo(&args, &exe, &cleanup, &mut progress)?;
    progress.step("removing the namespaces, processes and files it made");
    drop(guard);
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| DemoError::Setup(format!("cannot encode the report: {e}")))?;
        println!("{text}");
    } else {
        progress.say(&format!(
            "done: {:.2} Gbit/s over the overlay, ping rtt avg {}",
            report.tcp_gbit_per_s,
            report
                .ping
                .rtt_avg_ms
                .map_or("-".to_string(), |ms| format!("{ms:.3} ms"))
        ));
    }
    Ok(())
}

/// The demo's two hosts: namespace names (also the names of their underlay veth ends) and
/// addresses.
struct Hosts {
    ns: [String; 2],
    underlay: [Ipv4Addr; 2],
    overlay: [Ipv4Addr; 2],
    prefix_len: u8,
}

impl Hosts {
    fn new(args: &DemoArgs) -> Hosts {
        let s = &args.subnet;
        Hosts {
            ns: [format!("{}-a", args.prefix), format!("{}-b", args.prefix)],
            underlay: [0, 1].map(|i| s.host(UNDERLAY_BLOCK, i)),
            overlay: [0, 1].map(|i| s.host(OVERLAY_BLOCK, i)),
            prefix_len: s.block_len(),
        }
    }
}

fn setup(what: String) -> impl FnOnce(std::io::Error) -> DemoError {
    move |e| DemoError::Setup(format!("{what}: {e}"))
}

/// The underlay: the namespaces, a veth pair between them (its ends named after them, each
/// created straight inside its namespace), an address on each end, up.
fn build_underlay(hosts: &Hosts, cleanup: &Cleanup) -> Result<(), DemoError> {
    let ns: Vec<NamedNetns> = hosts
        .ns
        .iter()
        .map(|name| cleanup.add_namespace(name))
        .collect::<Result<_, _>>()?;
    let [a, b] = &hosts.ns;
    ns[0]
        .links()
        .and_then(|mut links| links.veth(a, "vxnet demo underlay", b, &ns[1], UNDERLAY_MTU))
        .map_err(setup(format!("creating the veth pair {a} <-> {b}")))?;
    for ((host, name), addr) in ns.iter().zip(&hosts.ns).zip(hosts.underlay) {
        host.links()
            .and_then(|mut links| {
                links.add_address(name, addr.into(), hosts.prefix_len)?;
                links.up(name)
            })
            .map_err(setup(format!("configuring {name}")))?;
    }
    Ok(())
}

fn demo(
    args: &DemoArgs,
    exe: &Path,
    cleanup: &Cleanup,
    progress: &mut Progress,
) -> Result<DemoReport, DemoError> {
    let hosts = Hosts::new(args);
    let ns = &hosts.ns;
    let len = hosts.prefix_len;
    progress.step(&format!(
        "underlay: namespaces {} ({}/{len}) and {} ({}/{len}) joined by a veth pair",
        ns[0], hosts.underlay[0], ns[1], hosts.underlay[1]
    ));
    build_underlay(&hosts, cleanup)?;
    let dir = std::env::temp_dir().join(format!("{}-{}", args.prefix, std::process::id()));
    cleanup.make_dir(&dir)?;

    progress.step(&format!(
        "overlay: vxnet run in each, VNI {VNI}, {DEV} {}/{len} and {}/{len}",
        hosts.overlay[0], hosts.overlay[1]
    ));
    let mut controls = Vec::new();
    for (i, host) in ["a", "b"].into_iter().enumerate() {
        let args = [
            "--vni",
            &VNI.to_string(),
            "--dev",
            DEV,
            "--local",
            &hosts.underlay[i].to_string(),
            "--remote",
            &hosts.underlay[1 - i].to_string(),
            "--address",
            &format!("{}/{len}", hosts.overlay[i]),
        ]
        .map(String::from);
        let launch = engine::Launch {
            host,
            namespace: &ns[i],
            args: &args,
            env: &[],
            dir: &dir,
        };
        let started = engine::start(cleanup, exe, &launch)?;
        progress.say(&format!(
            "    host {host}: vxnet pid {}, control {}",
            started.pid,
            started.control.display()
        ));
        controls.push(started.control);
    }

    let target = hosts.overlay[1];
    progress.step(&format!(
        "ping {} -> {target} across the overlay (vxnet's own ICMP echo)",
        hosts.overlay[0]
    ));
    let ping = ping(&ns[0], target, 3)?;
    progress.block(&ping.1);

    progress.step(&format!(
        "TCP: {} MB from host a to {target}:{TCP_PORT} (vxnet's own sender and receiver)",
        args.megabytes
    ));
    let bytes = args.megabytes.saturating_mul(1_000_000);
    let to = SocketAddr::new(target.into(), TCP_PORT);
    let result = transfer::run(&ns[0], &ns[1], to, Amount::Bytes(bytes), 1)?;
    progress.say(&format!(
        "    {} bytes in {:.2} s = {:.2} Gbit/s, every byte checked",
        result.bytes,
        result.elapsed.as_secs_f64(),
        result.gbit_per_s()
    ));

    progress.step("vxnet fdb show on host a");
    let fdb_a = request(&controls[0], &Request::FdbShow { vni: None })
        .map_err(|e| DemoError::Fdb(e.to_string()))?;
    let tables: Vec<FdbTable> =
        serde_json::from_value(fdb_a.clone()).map_err(|e| DemoError::Fdb(e.to_string()))?;
    progress.block(&crate::show::render_fdb(&tables));

    progress.step(&format!(
        "one VXLAN packet captured on host b's underlay ({}), layer by layer",
        ns[1]
    ));
    let explained = capture_ping(ns, target)?;
    progress.block(&explained.render());

    Ok(DemoReport {
        namespaces: ns.clone(),
        subnet: args.subnet.to_string(),
        underlay: hosts.underlay.map(|a| a.to_string()),
        overlay: hosts.overlay.map(|a| a.to_string()),
        vni: VNI,
        ping: ping.0,
        tcp_bytes: result.bytes,
        tcp_seconds: result.elapsed.as_secs_f64(),
        tcp_gbit_per_s: result.gbit_per_s(),
        fdb_a,
        packet: explained,
    })
}

/// Sends `count` ICMP echo requests from namespace `ns` to `target`, 200 ms apart; the summary
/// and one line per request. Fails when no reply came.
fn ping(ns: &str, target: Ipv4Addr, count: u32) -> Result<(PingSummary, String), DemoError> {
    let rtts = in_netns(ns, move || {
        let mut pinger = Pinger::open()
            .map_err(|e| NetnsError::Setup(format!("opening an ICMP socket: {e}")))?;
        let mut rtts = Vec::new();
        for seq in 1..=count {
            if seq > 1 {
                std::thread::sleep(ECHO_INTERVAL);
            }
            let rtt = pinger
                .echo(target, ECHO_TIMEOUT)
                .map_err(|e| NetnsError::Setup(format!("sending an echo request: {e}")))?;
            rtts.push(rtt);
        }
        Ok(rtts)
    })
    .map_err(|e| DemoError::Ping(e.to_string()))?;
    let (summary, text) = summarize(target, &rtts);
    if summary.received == 0 {
        return Err(DemoError::Ping(format!(
            "no reply from {target} to {count} echo requests"
        )));
    }
    Ok((summary, text))
}

/// Per-request lines and the summary, from each request's round-trip time (`None`: no reply).
fn summarize(target: Ipv4Addr, rtts: &[Option<Duration>]) -> (PingSummary, String) {
    let mut text = String::new();
    for (seq, rtt) in (1..).zip(rtts) {
        text += &match rtt {
            Some(rtt) => format!(
                "reply from {target}: icmp_seq={seq} time={:.3} ms\n",
                ms(*rtt)
            ),
            None => format!(
                "no reply from {target}: icmp_seq={seq} (waited {} s)\n",
                ECHO_TIMEOUT.as_secs()
            ),
        };
    }
    let answered: Vec<f64> = rtts.iter().flatten().map(|d| ms(*d)).collect();
    let summary = PingSummary {
        transmitted: rtts.len() as u32,
        received: answered.len() as u32,
        rtt_avg_ms: (!answered.is_empty())
            .then(|| answered.iter().sum::<f64>() / answered.len() as f64),
    };
    text += &format!(
        "{} sent, {} received, rtt avg {}\n",
        summary.transmitted,
        summary.received,
        summary
            .rtt_avg_ms
            .map_or("-".to_string(), |avg| format!("{avg:.3} ms"))
    );
    (summary, text)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Opens a packet socket on host b's underlay link (the socket stays in b's namespace), pings
/// once from a, and explains the first VXLAN frame seen.
fn capture_ping(ns: &[String; 2], target: Ipv4Addr) -> Result<packet::Explained, DemoError> {
    let link = ns[1].clone();
    let mut socket = in_netns(&ns[1], move || {
        PacketSocket::open(&link).map_err(|e| NetnsError::Setup(format!("capture: {e}")))
    })?;
    ping(&ns[0], target, 1)?;
    let captured = socket.next_udp(DEFAULT_PORT, Duration::from_secs(5))?;
    packet::explain_frame(&captured.frame)
        .map_err(|e| DemoError::Setup(format!("the captured frame does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_lines_and_summary() {
        let target = Ipv4Addr::new(192, 168, 205, 130);
        let rtts = [
            Some(Duration::from_micros(300)),
            None,
            Some(Duration::from_micros(500)),
        ];
        let (s, text) = summarize(target, &rtts);
        assert_eq!((s.transmitted, s.received), (3, 2));
        assert!((s.rtt_avg_ms.unwrap_or(0.0) - 0.4).abs() < 1e-9);
        assert!(text.contains("reply from 192.168.205.130: icmp_seq=1 time=0.300 ms"));
        assert!(text.contains("no reply from 192.168.205.130: icmp_seq=2"));
        assert!(text.ends_with("3 sent, 2 received, rtt avg 0.400 ms\n"));
        let (none, _) = summarize(target, &[None]);
        assert_eq!((none.received, none.rtt_avg_ms), (0, None));
    }

    #[test]
    fn hosts_come_from_the_subnet_and_prefix() {
        let args = DemoArgs {
            megabytes: 1,
            prefix: "vxt".into(),
            subnet: parse_subnet("10.99.0.0/29").unwrap_or_else(|e| panic!("{e}")),
            json: false,
        };
        let hosts = Hosts::new(&args);
        assert_eq!(hosts.ns, ["vxt-a", "vxt-b"]);
        assert_eq!(
            hosts.underlay,
            [Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2)]
        );
        assert_eq!(
            hosts.overlay,
            [Ipv4Addr::new(10, 99, 0, 5), Ipv4Addr::new(10, 99, 0, 6)]
        );
        assert_eq!(hosts.prefix_len, 30);
    }
}
