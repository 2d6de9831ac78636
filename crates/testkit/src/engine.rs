//! A `vxnet run` under test and what it reports, read through the engine's own report types
//! (a misspelt counter is a compile error, not a zero).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use vxnet_dataplane::control::proto::{NetworkStats, PeerRow, StatsReport};
use vxnet_dataplane::counters::{DropReason, TrafficSnapshot};
use vxnet_dataplane::offload::Offload;

use crate::lab::{Host, Lab};
use crate::process::{run, vxnet_bin, wait_for, Proc};

/// Sets SO_NO_CHECK on every AF_INET/AF_INET6 datagram socket of process `argv[1]`, through
/// copies of its fds taken with pidfd_getfd(2); prints how many.
const REFUSE_GSO: &str = r#"
import ctypes, os, socket, sys
pid = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd = 438  # the same number on every architecture
SO_NO_CHECK = 11
pidfd = os.pidfd_open(pid)
changed = 0
for name in os.listdir(f"/proc/{pid}/fd"):
    if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
        continue
    fd = libc.syscall(SYS_pidfd_getfd, pidfd, int(name), 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"pidfd_getfd {name}")
    s = socket.socket(fileno=fd)
    if s.family in (socket.AF_INET, socket.AF_INET6) and s.type == socket.SOCK_DGRAM:
        s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        changed += 1
    s.close()
print(changed)
"#;

/// A running `vxnet run`.
#[derive(Debug)]
pub struct Vxnet {
    pub proc: Proc,
    pub control: PathBuf,
}

impl Vxnet {
    /// Starts `vxnet run --control CONTROL ARGS` behind `launcher` (`ip netns exec NS`, or
    /// `nsenter --net=…` for a namespace whose /sys is not remounted), its output in `log` and
    /// its state beside it (`LOG.state`, never the host's /var/lib/vxnet); waits until the
    /// control socket answers.
    pub fn launch(launcher: &[&str], control: PathBuf, log: PathBuf, args: &str) -> Vxnet {
        let file = std::fs::File::create(&log).unwrap();
        let (program, launcher_args) = launcher.split_first().expect("a launcher command");
        let child = std::process::Command::new(program)
            .args(launcher_args)
            .arg(vxnet_bin())
            .args(["run", "--control"])
            .arg(&control)
            .args(args.split_whitespace())
            .env("VXNET_STATE_DIR", log.with_extension("state"))
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let v = Vxnet {
            proc: Proc { child, log },
            control,
        };
        let up = wait_for(Duration::from_secs(10), || {
            v.control.exists() && v.ctl("networks").status.success()
        });
        assert!(up, "vxnet did not start: {}", v.proc.log_text());
        v
    }

    /// Runs a client subcommand (`fdb show --json`, …) against this engine.
    pub fn ctl(&self, args: &str) -> Output {
        run(&format!(
            "{} {args} --control {}",
            vxnet_bin().display(),
            self.control.display()
        ))
    }

    pub fn json(&self, args: &str) -> serde_json::Value {
        let out = self.ctl(&format!("{args} --json"));
        assert!(
            out.status.success(),
            "vxnet {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub(crate) fn wait_ready(&mut self) {
        let ok = wait_for(Duration::from_secs(5), || {
            self.ctl("networks").status.success()
        });
        assert!(
            ok,
            "control socket never answered: {}",
            self.proc.log_text()
        );
    }

    /// `vxnet stats --json`, as the engine's own report type.
    pub fn stats(&self) -> StatsReport {
        let json = self.json("stats");
        serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("vxnet stats --json is not a StatsReport ({e}): {json}"))
    }

    /// The counters of network `vni` from `vxnet stats --json`.
    pub fn network(&self, vni: u32) -> NetworkStats {
        let report = self.stats();
        let vnis: Vec<u32> = report.networks.iter().map(|n| n.vni).collect();
        report
            .networks
            .into_iter()
            .find(|n| n.vni == vni)
            .unwrap_or_else(|| panic!("no network {vni} in vxnet stats (networks: {vnis:?})"))
    }

    /// Drops for `reason` on network `vni`, or engine-wide ones (`None`). Every reason is in the
    /// report, zeros included, so a missing one fails the test.
    pub fn drops(&self, vni: Option<u32>, reason: DropReason) -> u64 {
        let drops = match vni {
            Some(vni) => self.network(vni).drops,
            None => self.stats().drops,
        };
        *drops
            .get(&reason)
            .unwrap_or_else(|| panic!("no {reason} in the drops of {vni:?}: {drops:?}"))
    }

    /// The offloads the engine reports in use (`vxnet stats --json`), sorted.
    pub fn offloads(&self) -> Vec<Offload> {
        let mut v = self.stats().offloads;
        v.sort();
        v
    }

    /// Whether the start-up log says `offloads in use: …` naming exactly `offloads`, in the
    /// order the engine reports them (`none` for none).
    pub fn logged_offloads_in_use(&self, offloads: &[Offload]) -> bool {
        let names: Vec<&str> = offloads.iter().map(|o| o.name()).collect();
        let line = match names.is_empty() {
            true => "offloads in use: none".to_string(),
            false => format!("offloads in use: {}", names.join(", ")),
        };
        self.proc.log_text().lines().any(|l| l.ends_with(&line))
    }

    /// `vxnet peers --json`, as the engine's own report type.
    pub fn peers(&self) -> Vec<PeerRow> {
        let json = self.json("peers");
        serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("vxnet peers --json is not a list of PeerRow ({e}): {json}"))
    }

    /// The traffic counters of peer `peer` (zeros while the engine does not list it).
    pub fn peer(&self, peer: IpAddr) -> TrafficSnapshot {
        self.peers()
            .into_iter()
            .find(|p| p.address == peer)
            .map(|p| p.traffic)
            .unwrap_or_default()
    }

    /// Makes the kernel refuse this engine's `UDP_SEGMENT` sends from now on, as a path through
    /// an IPsec transform would: its UDP sockets are switched to sending without checksums
    /// (SO_NO_CHECK, taken over with pidfd_getfd(2)), and the kernel rejects GSO on such a
    /// socket with EINVAL (`udp_send_skb`). Single datagrams still go, with a zero UDP checksum
    /// (valid over IPv4). Kernels since 6.11 segment in software where the egress device lacks
    /// checksum offload, and this kernel builds no xfrm transforms, so this is the refusal
    /// left to provoke from outside; the engine sees the same errno either way.
    pub fn refuse_udp_gso(&self) {
        let out = std::process::Command::new("python3")
            .args(["-c", REFUSE_GSO, &self.pid().to_string()])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "making the kernel refuse UDP GSO: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let changed = String::from_utf8_lossy(&out.stdout);
        assert!(
            changed.trim().parse::<u32>().is_ok_and(|n| n > 0),
            "no UDP socket of pid {} changed: {changed}",
            self.pid()
        );
    }

    /// The engine's PID.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// Runs `[prefix] vxnet run --control SOCK ARGS` in `host` (bounded: an engine that wrongly
/// starts would otherwise keep the test waiting) and checks the start-up error contract:
/// a non-zero exit, exactly one stderr line, `error: ` naming each of `must_name`, nothing on
/// stdout, and neither the TAP `dev` nor the control socket left behind.
pub fn refuses_to_start(
    lab: &Lab,
    host: &Host,
    case: &str,
    prefix: &str,
    args: &str,
    dev: &str,
    must_name: &[&str],
) {
    let control = lab.dir.join(format!("{case}.sock"));
    let cmd = format!(
        "{prefix} timeout 10 {} run --control {} {args}",
        vxnet_bin().display(),
        control.display()
    );
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &host.ns, "sh", "-c", &cmd])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{case}: exited 0\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{case}: expected exactly one stderr line, got:\n{stderr}"
    );
    assert!(lines[0].starts_with("error: "), "{case}: {stderr}");
    for word in must_name {
        assert!(
            lines[0].contains(word),
            "{case}: the error should name {word:?}: {stderr}"
        );
    }
    assert!(stdout.is_empty(), "{case}: unexpected stdout: {stdout}");
    assert!(
        !host.sh(&format!("ip link show {dev}")).status.success(),
        "{case}: TAP {dev} left behind"
    );
    assert!(
        !control.exists(),
        "{case}: control socket {} left behind",
        control.display()
    );
}
