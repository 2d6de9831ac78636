//! `vxnet demo`: a two-host overlay on this machine. Two network namespaces joined by a veth pair
//! (the underlay), `vxnet run` in each, VNI 42 between them; then ping, a TCP transfer with
//! vxnet's own sender/receiver, `fdb show`, and one captured underlay packet explained. Everything
//! it makes is removed at the end, on error, and on Ctrl-C/SIGTERM.

pub mod packet;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use vxnet_dataplane::control::client::request;
use vxnet_dataplane::control::proto::{FdbTable, Request};
use vxnet_dataplane::sys::enter_named_netns_for_current_thread;
use vxnet_dataplane::sys::packet::{CaptureError, PacketSocket};
use vxnet_encap::DEFAULT_PORT;

use crate::netns::transfer::{self, Amount};
use crate::netns::{engine, in_namespace, ip, is_root, CleanOnDrop, Cleanup, NetnsError};

const VNI: u32 = 42;
const DEV: &str = "vx42";
const UNDERLAY: [&str; 2] = ["192.168.205.10", "192.168.205.11"];
const UNDERLAY_PREFIX: u8 = 24;
const OVERLAY: [&str; 2] = ["172.17.0.2", "172.17.0.3"];
const OVERLAY_PREFIX: u8 = 24;
const TCP_PORT: u16 = 5201;
const STEPS: usize = 7;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Megabytes (10^6 bytes) to move over TCP across the overlay.
    #[arg(long, default_value_t = 200)]
    pub megabytes: u64,
    /// Print the result summary as one JSON document on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("vxnet demo needs root (it creates network namespaces and TAP devices)")]
    NotRoot,
    #[error("/dev/net/tun is missing: load the tun module (modprobe tun)")]
    NoTun,
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

fn demo(
    args: &DemoArgs,
    exe: &Path,
    cleanup: &Cleanup,
    progress: &mut Progress,
) -> Result<DemoReport, DemoError> {
    let pid = std::process::id();
    let ns = [format!("vxdemo-{pid}-a"), format!("vxdemo-{pid}-b")];
    let dir = std::env::temp_dir().join(format!("vxdemo-{pid}"));
    cleanup.make_dir(&dir)?;

    progress.step(&format!(
        "underlay: namespaces {} ({}) and {} ({}) joined by a veth pair",
        ns[0], UNDERLAY[0], ns[1], UNDERLAY[1]
    ));
    for name in &ns {
        cleanup.add_namespace(name)?;
    }
    // Created straight inside the namespaces: nothing appears in the caller's namespace.
    ip(&[
        "link", "add", "eth0", "netns", &ns[0], "type", "veth", "peer", "name", "eth0", "netns",
        &ns[1],
    ])?;
    for (name, addr) in ns.iter().zip(UNDERLAY) {
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ip(&["-n", name, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{addr}/{UNDERLAY_PREFIX}"),
            "dev",
            "eth0",
        ])?;
    }

    progress.step(&format!(
        "overlay: vxnet run in each, VNI {VNI}, {DEV} {}/{OVERLAY_PREFIX} and {}/{OVERLAY_PREFIX}",
        OVERLAY[0], OVERLAY[1]
    ));
    let mut controls = Vec::new();
    for (i, host) in ["a", "b"].into_iter().enumerate() {
        let args = [
            "--vni",
            &VNI.to_string(),
            "--dev",
            DEV,
            "--local",
            UNDERLAY[i],
            "--remote",
            UNDERLAY[1 - i],
            "--address",
            &format!("{}/{OVERLAY_PREFIX}", OVERLAY[i]),
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

    progress.step(&format!(
        "ping {} -> {} across the overlay",
        OVERLAY[0], OVERLAY[1]
    ));
    let ping = ping(&ns[0], OVERLAY[1], 3)?;
    progress.block(&ping.1);

    progress.step(&format!(
        "TCP: {} MB from host a to {}:{TCP_PORT} (vxnet's own sender and receiver)",
        args.megabytes, OVERLAY[1]
    ));
    let target = SocketAddr::new(
        OVERLAY[1]
            .parse()
            .map_err(|e| DemoError::Setup(format!("bad overlay address: {e}")))?,
        TCP_PORT,
    );
    let bytes = args.megabytes.saturating_mul(1_000_000);
    let result = transfer::run(&ns[0], &ns[1], target, Amount::Bytes(bytes), 1)?;
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

    progress.step("one VXLAN packet captured on host b's underlay (eth0), layer by layer");
    let explained = capture_ping(&ns, OVERLAY[1])?;
    progress.block(&explained.render());

    Ok(DemoReport {
        namespaces: ns,
        underlay: UNDERLAY.map(String::from),
        overlay: OVERLAY.map(String::from),
        vni: VNI,
        ping: ping.0,
        tcp_bytes: result.bytes,
        tcp_seconds: result.elapsed.as_secs_f64(),
        tcp_gbit_per_s: result.gbit_per_s(),
        fdb_a,
        packet: explained,
    })
}

/// Runs ping inside `ns`; returns the summary and ping's own output.
fn ping(ns: &str, target: &str, count: u32) -> Result<(PingSummary, String), DemoError> {
    let out = in_namespace(
        ns,
        Path::new("ping"),
        &["-c", &count.to_string(), "-i", "0.2", "-W", "2", target],
    )
    .output()
    .map_err(|e| DemoError::Ping(format!("cannot run ping: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = parse_ping(&text);
    if !out.status.success() || summary.received == 0 {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(DemoError::Ping(
            why.lines()
                .next()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{} of {} replies", summary.received, count)),
        ));
    }
    Ok((summary, text))
}

/// Reads iputils ping's summary lines.
fn parse_ping(text: &str) -> PingSummary {
    let mut summary = PingSummary {
        transmitted: 0,
        received: 0,
        rtt_avg_ms: None,
    };
    for line in text.lines() {
        if line.contains("packets transmitted") {
            let numbers: Vec<u32> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            if let [tx, rx, ..] = numbers[..] {
                summary.transmitted = tx;
                summary.received = rx;
            }
        } else if let Some(values) = line.split(" = ").nth(1).filter(|_| line.starts_with("rtt")) {
            summary.rtt_avg_ms = values.split('/').nth(1).and_then(|v| v.parse().ok());
        }
    }
    summary
}

/// Opens a packet socket in host b's namespace (the socket stays there), pings once from a,
/// and explains the first VXLAN frame seen.
fn capture_ping(ns: &[String; 2], target: &str) -> Result<packet::Explained, DemoError> {
    let b = ns[1].clone();
    let socket = std::thread::spawn(move || {
        enter_named_netns_for_current_thread(&b)
            .map_err(|e| DemoError::Setup(format!("entering namespace {b}: {e}")))?;
        PacketSocket::open("eth0").map_err(DemoError::from)
    })
    .join()
    .map_err(|_| DemoError::Setup("the capture thread panicked".into()))??;
    let mut socket = socket;
    ping(&ns[0], target, 1)?;
    let captured = socket.next_udp(DEFAULT_PORT, Duration::from_secs(5))?;
    packet::explain_frame(&captured.frame)
        .map_err(|e| DemoError::Setup(format!("the captured frame does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ping_summary() {
        let text = "PING 172.17.0.3 (172.17.0.3) 56(84) bytes of data.\n\
                    64 bytes from 172.17.0.3: icmp_seq=1 ttl=64 time=0.321 ms\n\n\
                    --- 172.17.0.3 ping statistics ---\n\
                    3 packets transmitted, 3 received, 0% packet loss, time 402ms\n\
                    rtt min/avg/max/mdev = 0.215/0.268/0.321/0.043 ms\n";
        let s = parse_ping(text);
        assert_eq!((s.transmitted, s.received), (3, 3));
        assert_eq!(s.rtt_avg_ms, Some(0.268));
    }
}
