//! One measurement across one pair, host a → host b: TCP throughput at the receiver (iperf3, or
//! vxnet's own sender and receiver) and ping round-trip times.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::ValueEnum;

use super::rr::RrStats;
use super::topology::Topology;
use crate::netns::transfer::{self, Amount};
use crate::netns::{find_in_path, in_namespace, Cleanup, NetnsError};

const TCP_PORT: u16 = 5201;
/// The request/response server's port (beside iperf3's).
const RR_PORT: u16 = 5202;
/// Pings 2 ms apart, as benchmark-method.md suggests.
const PING_INTERVAL: &str = "0.002";
const PING_INTERVAL_S: f64 = 0.002;
/// Slack on top of the nominal duration of a tool run before it is killed.
const TOOL_SLACK: Duration = Duration::from_secs(20);
/// How long a UDP run waits after its client returns, for the flood's tail to drain (see
/// [`Meter::udp`]).
const UDP_DRAIN: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ToolChoice {
    /// iperf3 when it is on PATH, else builtin.
    Auto,
    /// iperf3; an error when it is not on PATH.
    Iperf3,
    /// vxnet's own TCP sender and receiver (every byte checked).
    Builtin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tool {
    Iperf3(PathBuf),
    Builtin,
}

impl Tool {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Tool::Iperf3(_) => "iperf3",
            Tool::Builtin => "builtin",
        }
    }
}

/// The tool to use and why, in words for the user.
pub(super) fn choose(choice: ToolChoice) -> Result<(Tool, String), String> {
    let found = find_in_path("iperf3");
    match (choice, found) {
        (ToolChoice::Builtin, _) => Ok((Tool::Builtin, "builtin, as --tool asked".into())),
        (ToolChoice::Iperf3 | ToolChoice::Auto, Some(path)) => {
            let why = format!("iperf3 ({})", path.display());
            Ok((Tool::Iperf3(path), why))
        }
        (ToolChoice::Iperf3, None) => Err("--tool iperf3: iperf3 is not on PATH".into()),
        (ToolChoice::Auto, None) => Ok((
            Tool::Builtin,
            "builtin (vxnet's own TCP sender/receiver): iperf3 is not on PATH".into(),
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Throughput {
    pub gbit_per_s: f64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct UdpStats {
    pub offered_pps: f64,
    pub delivered_pps: f64,
    pub loss_percent: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PingStats {
    pub sent: u32,
    pub received: u32,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Runs measurements from one namespace to another of a topology; tool processes are registered
/// with the cleanup.
pub(super) struct Meter<'a> {
    cleanup: &'a Cleanup,
    topo: &'a Topology,
    /// The sender's namespace and the receiver's.
    ns: [String; 2],
    /// Sets this meter's files and processes apart from another's on the same topology.
    tag: &'static str,
    tool: Tool,
    seconds: u64,
    pings: u32,
    runs: u32,
}

impl<'a> Meter<'a> {
    /// From host a to host b; starts the iperf3 server on host b when iperf3 is the tool.
    pub(super) fn start(
        cleanup: &'a Cleanup,
        topo: &'a Topology,
        tool: Tool,
        seconds: u64,
        pings: u32,
    ) -> Result<Self, NetnsError> {
        Self::between(cleanup, topo, topo.ns.clone(), "", tool, seconds, pings)
    }

    /// From namespace `ns[0]` to `ns[1]`, with its own iperf3 server in `ns[1]`; `tag` names
    /// its files and processes apart from another meter's.
    pub(super) fn between(
        cleanup: &'a Cleanup,
        topo: &'a Topology,
        ns: [String; 2],
        tag: &'static str,
        tool: Tool,
        seconds: u64,
        pings: u32,
    ) -> Result<Self, NetnsError> {
        if let Tool::Iperf3(iperf3) = &tool {
            let log = topo.dir.join(format!("{tag}iperf3-server.log"));
            let port = TCP_PORT.to_string();
            let cmd = in_namespace(&ns[1], iperf3, &["-s", "-p", &port]);
            let name = format!("{tag}iperf3 server");
            let pid = cleanup.spawn(&name, cmd, &log)?;
            wait_listening(cleanup, &name, pid, &log)?;
        }
        Ok(Meter {
            cleanup,
            topo,
            ns,
            tag,
            tool,
            seconds,
            pings,
            runs: 0,
        })
    }

    pub(super) fn seconds(&self) -> u64 {
        self.seconds
    }

    /// A fresh file stem in the run's directory for one tool run's output.
    fn stem(&mut self, what: &str) -> PathBuf {
        self.runs += 1;
        self.topo
            .dir
            .join(format!("{:03}-{}{what}", self.runs, self.tag))
    }

    /// TCP from host a to `target` over `streams` connections for `--seconds`; the receiver's rate.
    pub(super) fn tcp(&mut self, target: Ipv4Addr, streams: usize) -> Result<Throughput, String> {
        match self.tool.clone() {
            Tool::Iperf3(iperf3) => self.iperf3(&iperf3, target, streams),
            Tool::Builtin => {
                let to = SocketAddr::new(target.into(), TCP_PORT);
                let amount = Amount::For(Duration::from_secs(self.seconds));
                let r = transfer::run(&self.ns[0], &self.ns[1], to, amount, streams)
                    .map_err(|e| e.to_string())?;
                Ok(Throughput {
                    gbit_per_s: r.gbit_per_s(),
                    bytes: r.bytes,
                })
            }
        }
    }

    fn iperf3(
        &mut self,
        iperf3: &Path,
        target: Ipv4Addr,
        streams: usize,
    ) -> Result<Throughput, String> {
        let args = [
            "-c".to_string(),
            target.to_string(),
            "-p".into(),
            TCP_PORT.to_string(),
            "-t".into(),
            self.seconds.to_string(),
            "-P".into(),
            streams.to_string(),
            "-J".into(),
        ];
        let out = self.iperf3_json(iperf3, &args)?;
        parse_iperf3(&out).map_err(|e| format!("iperf3: {e}"))
    }

    /// iperf3's JSON report of one client run with `args`, retried while the server is busy
    /// with the previous one.
    fn iperf3_json(&mut self, iperf3: &Path, args: &[String]) -> Result<String, String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let timeout = Duration::from_secs(self.seconds) + TOOL_SLACK;
        // The server takes a moment to finish the previous test; it answers "busy" until then.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let stem = self.stem("iperf3");
            let cmd = in_namespace(&self.ns[0], iperf3, &args);
            let out = self
                .cleanup
                .run_captured("iperf3 client", cmd, &stem, timeout)
                .map_err(|e| e.to_string())?;
            match iperf3_error(&out.stdout) {
                Some(e) if e.contains("busy") && attempts < 5 => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Some(e) => {
                    let why = out.stderr.lines().next().unwrap_or("no output").to_string();
                    return Err(format!("iperf3: {e}: {why}"));
                }
                None => return Ok(out.stdout),
            }
        }
    }

    /// UDP datagrams of `size` payload bytes from host a to `target` for `--seconds`, as fast
    /// as the sender can (iperf3 `-u -b 0`) or paced at `pps` datagrams per second: offered and
    /// delivered packets per second, loss.
    pub(super) fn udp(
        &mut self,
        target: Ipv4Addr,
        size: u32,
        pps: Option<f64>,
    ) -> Result<UdpStats, String> {
        let Tool::Iperf3(iperf3) = self.tool.clone() else {
            return Err("UDP needs iperf3".into());
        };
        let args = [
            "-c".to_string(),
            target.to_string(),
            "-p".into(),
            TCP_PORT.to_string(),
            "-u".into(),
            "-b".into(),
            // iperf3's rate counts the datagrams' payload, in bits per second.
            pps.map_or("0".into(), |pps| {
                ((pps * f64::from(size) * 8.0).round() as u64)
                    .max(1)
                    .to_string()
            }),
            "-l".into(),
            size.to_string(),
            "-t".into(),
            self.seconds.to_string(),
            "-J".into(),
        ];
        let out = self.iperf3_json(&iperf3, &args);
        // The flood's tail is still queued (the TAP's queue, the engines' sockets) when the
        // client returns, and may reach the server after the next test has set up (another
        // TAP queue carries its control connection ahead of it). iperf3 3.12's UDP server takes
        // the first datagram on its port as the new client's and answers that one's (dead)
        // port, and the new client then waits for ever: seen as "iperf3 client did not finish"
        // in the vxnet pair's paced run right after the unpaced one. A few thousand queued
        // frames drain in tens of milliseconds.
        std::thread::sleep(UDP_DRAIN);
        parse_iperf3_udp(&out?)
    }

    /// `--rr`: request/response round trips from host a to `target` for `--seconds`.
    pub(super) fn rr(&mut self, target: Ipv4Addr) -> Result<RrStats, String> {
        let to = SocketAddr::new(target.into(), RR_PORT);
        let time = Duration::from_secs(self.seconds);
        super::rr::run(&self.ns[0], &self.ns[1], to, time).map_err(|e| e.to_string())
    }

    /// `--pings` pings from host a to `target`, after a few unrecorded ones (caches, wake-ups).
    pub(super) fn ping(&mut self, target: Ipv4Addr) -> Result<PingStats, String> {
        let warmup = warmup_pings(self.pings);
        let total = warmup + self.pings;
        let deadline = (f64::from(total) * PING_INTERVAL_S).ceil() as u64 + 5;
        let args = [
            "-n".to_string(),
            "-c".into(),
            total.to_string(),
            "-i".into(),
            PING_INTERVAL.into(),
            "-w".into(),
            deadline.to_string(),
            target.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stem = self.stem("ping");
        let cmd = in_namespace(&self.ns[0], Path::new("ping"), &args);
        let out = self
            .cleanup
            .run_captured(
                "ping",
                cmd,
                &stem,
                Duration::from_secs(deadline) + TOOL_SLACK,
            )
            .map_err(|e| e.to_string())?;
        let mut rtts = reply_times(&out.stdout, warmup);
        if rtts.is_empty() {
            let why = out
                .stderr
                .lines()
                .next()
                .unwrap_or("no replies")
                .to_string();
            return Err(format!("ping {target}: {why}"));
        }
        rtts.sort_by(f64::total_cmp);
        Ok(PingStats {
            sent: self.pings,
            received: rtts.len() as u32,
            p50_ms: quantile(&rtts, 0.50),
            p99_ms: quantile(&rtts, 0.99),
        })
    }

    /// Pings `target` until it answers (ARP and the FDBs filled), for up to `timeout`.
    pub(super) fn wait_reachable(&mut self, target: Ipv4Addr, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let target = target.to_string();
        while Instant::now() < deadline {
            let stem = self.stem("reach");
            let cmd = in_namespace(
                &self.ns[0],
                Path::new("ping"),
                &["-n", "-c", "1", "-W", "1", &target],
            );
            let answered = self
                .cleanup
                .run_captured("ping", cmd, &stem, Duration::from_secs(5))
                .is_ok_and(|out| out.status.success());
            if answered {
                return true;
            }
        }
        false
    }
}

/// Pings sent before the recorded ones, to leave caches and wake-up paths warm.
pub(super) fn warmup_pings(pings: u32) -> u32 {
    (pings / 10).max(5)
}

/// Waits until the iperf3 server listens. Its own "listening" line sits in a stdio buffer when
/// stdout is a file, so the socket tables of its namespace (seen through its PID) are read instead.
fn wait_listening(cleanup: &Cleanup, name: &str, pid: u32, log: &Path) -> Result<(), NetnsError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let tables = ["tcp", "tcp6"]
            .map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).unwrap_or_default());
        if tables.iter().any(|t| listens_on(t, TCP_PORT)) {
            return Ok(());
        }
        if cleanup.exited(name) {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let why = text.lines().last().unwrap_or("exited").to_string();
            return Err(NetnsError::Setup(format!("iperf3 server: {why}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(NetnsError::Setup(
        "iperf3 server: not listening after 10 s".into(),
    ))
}

/// Whether a `/proc/net/tcp{,6}` table has a socket in LISTEN (state 0A) on `port`.
fn listens_on(table: &str, port: u16) -> bool {
    let port = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&port) && f[3] == "0A"
    })
}

/// iperf3's own error in its `-J` output, or why the output cannot be read.
fn iperf3_error(json: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Err(e) => Some(format!("unreadable output ({e})")),
        Ok(v) => v.get("error").and_then(|e| e.as_str()).map(str::to_string),
    }
}

/// Offered and delivered rates of a UDP run, from `iperf3 -u -J`: the sender's packets over its
/// time, and the receiver's (its packets less those lost) over its time.
fn parse_iperf3_udp(json: &str) -> Result<UdpStats, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("unreadable output ({e})"))?;
    let (sent, received) = (&v["end"]["sum_sent"], &v["end"]["sum_received"]);
    let field = |o: &serde_json::Value, k: &str| o[k].as_f64();
    match (
        field(sent, "packets"),
        field(sent, "seconds"),
        field(received, "packets"),
        field(received, "lost_packets"),
        field(received, "seconds"),
    ) {
        (Some(offered), Some(s_secs), Some(seen), Some(lost), Some(r_secs))
            if s_secs > 0.0 && r_secs > 0.0 =>
        {
            Ok(UdpStats {
                offered_pps: offered / s_secs,
                delivered_pps: (seen - lost).max(0.0) / r_secs,
                loss_percent: if seen > 0.0 {
                    100.0 * lost / seen
                } else {
                    100.0
                },
            })
        }
        _ => Err("iperf3: no end.sum_sent/sum_received packet counts in its report".into()),
    }
}

/// The receiver's rate and byte count from `iperf3 -J`, or iperf3's own error.
fn parse_iperf3(json: &str) -> Result<Throughput, String> {
    if let Some(error) = iperf3_error(json) {
        return Err(error);
    }
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("unreadable output ({e})"))?;
    let received = &v["end"]["sum_received"];
    match (
        received["bits_per_second"].as_f64(),
        received["bytes"].as_u64(),
    ) {
        (Some(bps), Some(bytes)) => Ok(Throughput {
            gbit_per_s: bps / 1e9,
            bytes,
        }),
        _ => Err("no end.sum_received in its report".into()),
    }
}

/// Round-trip times in ms of the replies after the first `skip` sequence numbers.
fn reply_times(ping_output: &str, skip: u32) -> Vec<f64> {
    ping_output
        .lines()
        .filter_map(|line| {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .map(str::to_string)
            };
            let seq: u32 = field("icmp_seq=")?.parse().ok()?;
            let ms: f64 = field("time=")?.parse().ok()?;
            (seq > skip).then_some(ms)
        })
        .collect()
}

/// Nearest-rank quantile of sorted values (not empty).
pub(super) fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_receiver_side_of_iperf3() {
        let json = r#"{"start":{},"end":{"sum_sent":{"bytes":900,"bits_per_second":7.0e9},
            "sum_received":{"bytes":1250000000,"bits_per_second":9.5e9}}}"#;
        assert_eq!(
            parse_iperf3(json),
            Ok(Throughput {
                gbit_per_s: 9.5,
                bytes: 1_250_000_000
            })
        );
        let busy =
            r#"{"start":{},"end":{},"error":"the server is busy running a test. try again later"}"#;
        assert!(parse_iperf3(busy).unwrap_err().contains("busy"));
        assert!(parse_iperf3("").is_err());
    }

    #[test]
    fn reads_offered_and_delivered_udp_rates() {
        let json = r#"{"start":{},"end":{
            "sum_sent":{"seconds":2.0,"packets":200000,"lost_packets":0},
            "sum_received":{"seconds":2.5,"packets":200000,"lost_packets":50000}}}"#;
        let u = parse_iperf3_udp(json).unwrap();
        assert_eq!((u.offered_pps, u.delivered_pps), (100_000.0, 60_000.0));
        assert_eq!(u.loss_percent, 25.0);
        assert!(parse_iperf3_udp(r#"{"end":{}}"#).is_err());
        assert!(iperf3_error(r#"{"error":"busy"}"#).is_some());
        assert!(iperf3_error(json).is_none());
    }

    #[test]
    fn reads_ping_replies_after_the_warmup() {
        let out = "PING 10.43.0.2 (10.43.0.2) 56(84) bytes of data.\n\
                   64 bytes from 10.43.0.2: icmp_seq=1 ttl=64 time=1.50 ms\n\
                   64 bytes from 10.43.0.2: icmp_seq=2 ttl=64 time=0.120 ms\n\
                   64 bytes from 10.43.0.2: icmp_seq=3 ttl=64 time=0.095 ms\n\
                   \n--- 10.43.0.2 ping statistics ---\n\
                   3 packets transmitted, 3 received, 0% packet loss, time 4ms\n\
                   rtt min/avg/max/mdev = 0.095/0.571/1.500/0.657 ms\n";
        assert_eq!(reply_times(out, 1), [0.120, 0.095]);
        assert_eq!(reply_times(out, 0).len(), 3);
    }

    #[test]
    fn finds_listening_sockets() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
   0: 00000000000000000000000000000000:1451 00000000000000000000000000000000:0000 0A 0\n\
   1: 0100007F:1451 0100007F:9C40 01 0\n";
        assert!(listens_on(table, 5201));
        assert!(!listens_on(table, 5202));
        assert!(!listens_on(&table.replace(" 0A ", " 01 "), 5201));
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), 2.0);
    }

    #[test]
    fn builtin_when_asked_and_error_when_iperf3_is_forced_but_missing() {
        assert_eq!(choose(ToolChoice::Builtin).unwrap().0, Tool::Builtin);
        if find_in_path("iperf3").is_none() {
            assert!(choose(ToolChoice::Iperf3).is_err());
            assert_eq!(choose(ToolChoice::Auto).unwrap().0, Tool::Builtin);
        } else {
            assert_eq!(choose(ToolChoice::Auto).unwrap().0.name(), "iperf3");
        }
    }
}
