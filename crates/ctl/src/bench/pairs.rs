//! The overlays measured on one topology, each with its own VNI, UDP port and subnet, so that
//! they run side by side: the kernel pair (kernel vxlan at both ends), the vxnet pair (vxnet at
//! both ends) and the mixed pair both ways (vxnet sending to kernel vxlan, and kernel vxlan
//! sending to vxnet; host a always sends).

use std::net::Ipv4Addr;
use std::path::Path;

use serde::Serialize;
use vxnet_dataplane::control::client::request;
use vxnet_dataplane::control::proto::{Request, StatsReport};

use super::topology::{link_mtu, Topology, Underlay, MIXED, MIXED_REVERSE, SHARED};
use crate::netns::addressing::Subnet;
use crate::netns::{engine, ip, Cleanup, NetnsError};

/// What runs at one end of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Kernel,
    Vxnet,
}

/// One pair; its name, label, VNI and port go into the report as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) struct PairSpec {
    /// The key in the JSON report.
    pub name: &'static str,
    /// The row name in the table.
    pub label: &'static str,
    pub vni: u32,
    /// UDP port of the pair's VXLAN (both ends).
    pub port: u16,
    #[serde(skip)]
    pub underlay: Underlay,
    /// The block of `--subnet` its overlay addresses come from.
    #[serde(skip)]
    pub overlay_block: usize,
    /// Host a's end, host b's end.
    #[serde(skip)]
    pub ends: [End; 2],
    /// Both (vxnet) ends encrypt: ESP-in-UDP with one network key.
    #[serde(skip)]
    pub encrypted: bool,
    /// Flags of this pair's `vxnet run`s on top of the bench's.
    #[serde(skip)]
    pub run_args: &'static [&'static str],
}

impl PairSpec {
    /// The overlay address of host `i` (0 = a, 1 = b).
    pub(super) fn overlay(&self, subnet: &Subnet, i: usize) -> Ipv4Addr {
        subnet.host(self.overlay_block, i)
    }

    fn dev(&self, end: End) -> String {
        match end {
            End::Kernel => format!("kvx{}", self.vni),
            End::Vxnet => format!("vx{}", self.vni),
        }
    }
}

/// Measured in this order in every round.
pub(super) const PAIRS: [PairSpec; 4] = [
    PairSpec {
        name: "kernel",
        label: "kernel",
        vni: 42,
        port: 4789,
        underlay: SHARED,
        overlay_block: 3,
        ends: [End::Kernel, End::Kernel],
        encrypted: false,
        run_args: &[],
    },
    PairSpec {
        name: "vxnet",
        label: "vxnet",
        vni: 43,
        port: 4790,
        underlay: SHARED,
        overlay_block: 4,
        ends: [End::Vxnet, End::Vxnet],
        encrypted: false,
        run_args: &[],
    },
    PairSpec {
        name: "mixed",
        label: "mixed (vxnet→kernel)",
        vni: 44,
        port: 4791,
        underlay: MIXED,
        overlay_block: 5,
        ends: [End::Vxnet, End::Kernel],
        encrypted: false,
        run_args: &[],
    },
    PairSpec {
        name: "mixed_reverse",
        label: "mixed (kernel→vxnet)",
        vni: 45,
        port: 4792,
        underlay: MIXED_REVERSE,
        overlay_block: 6,
        ends: [End::Kernel, End::Vxnet],
        encrypted: false,
        run_args: &[],
    },
];

/// `vxnet bench --encrypted`: the vxnet pair again, encrypted (`--key-file`), on the same
/// underlay, measured after the others in every round. Its engines listen for ESP on their own
/// port, as the plain vxnet pair's hold 4500 on the same addresses.
pub(super) const ENCRYPTED: PairSpec = PairSpec {
    name: "vxnet_encrypted",
    label: "vxnet encrypted (ESP)",
    vni: 46,
    port: 4793,
    underlay: SHARED,
    overlay_block: 7,
    ends: [End::Vxnet, End::Vxnet],
    encrypted: true,
    run_args: &[],
};

/// `vxnet bench --socket-path`: the vxnet pair again on the socket transmit path, on the same
/// underlay, beside the vxnet pair's tunnel-GSO path. Its overlay takes the encrypted pair's
/// block of `--subnet` (the two options exclude each other).
pub(super) const SOCKET_PATH: PairSpec = PairSpec {
    name: "vxnet_socket",
    label: "vxnet (socket path)",
    vni: 47,
    port: 4794,
    overlay_block: 7,
    underlay: SHARED,
    ends: [End::Vxnet, End::Vxnet],
    encrypted: false,
    run_args: &["--no-tunnel-gso"],
};
/// The encrypted pair's ESP-in-UDP port.
const ENCRYPTED_ESP_PORT: u16 = 4510;

/// Engine settings passed to every `vxnet run` of the bench, for per-technique comparisons.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(super) struct EngineSettings {
    /// `--threads N`; `None` = the engine's default (one per core).
    pub threads: Option<u64>,
    /// `--no-offloads`.
    pub no_offloads: bool,
    /// `VXNET_DISABLE_OFFLOADS` (any of tap, gso, gro, uso, tunnel-gso).
    pub disable_offloads: Vec<String>,
    /// `--busy-poll USEC`; `None` = the engine's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_poll: Option<u32>,
}

impl EngineSettings {
    pub(super) fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(n) = self.threads {
            args.extend(["--threads".to_string(), n.to_string()]);
        }
        if self.no_offloads {
            args.push("--no-offloads".into());
        }
        if let Some(us) = self.busy_poll {
            args.extend(["--busy-poll".to_string(), us.to_string()]);
        }
        args
    }

    pub(super) fn env(&self) -> Vec<(String, String)> {
        if self.disable_offloads.is_empty() {
            return Vec::new();
        }
        vec![(
            vxnet_dataplane::engine::DISABLE_ENV.into(),
            self.disable_offloads.join(","),
        )]
    }

    /// As flags of `vxnet bench`, for the report.
    pub(super) fn describe(&self) -> String {
        let mut parts = vec![match self.threads {
            Some(n) => format!("--threads {n}"),
            None => "default threads".into(),
        }];
        if self.no_offloads {
            parts.push("--no-offloads".into());
        } else if !self.disable_offloads.is_empty() {
            parts.push(format!(
                "--disable-offloads {}",
                self.disable_offloads.join(",")
            ));
        } else {
            parts.push("offloads on".into());
        }
        if let Some(us) = self.busy_poll {
            parts.push(format!("--busy-poll {us}"));
        }
        parts.join(", ")
    }
}

/// A pair ready for traffic from host a to [`Pair::target`].
#[derive(Debug)]
pub(super) struct Pair {
    pub spec: PairSpec,
    pub engines: Vec<engine::Engine>,
    /// Host b's overlay address, where host a sends.
    pub target: Ipv4Addr,
    /// Of the overlay device at host a and host b, read back from the kernel once they are up.
    pub overlay_mtu: [u32; 2],
}

impl Pair {
    pub(super) fn target(&self) -> Ipv4Addr {
        self.target
    }

    pub(super) fn vxnet_pids(&self) -> Vec<u32> {
        self.engines.iter().map(|e| e.pid).collect()
    }

    /// The transmit path each engine reports now (host a's first); "?" where it does not answer.
    /// An engine's path is that of its plaintext superframes: an encrypted network's ESP packets
    /// are sealed one per segment and leave through its UDP socket (in `UDP_SEGMENT` sends)
    /// whatever it is, so the encrypted pair's path is `esp`.
    pub(super) fn tx_paths(&self) -> Vec<String> {
        self.engines
            .iter()
            .map(|e| match stats(e) {
                None => "?".to_string(),
                Some(_) if self.spec.encrypted => "esp".to_string(),
                Some(s) => s.tx_path,
            })
            .collect()
    }
}

pub(super) fn build(
    cleanup: &Cleanup,
    topo: &Topology,
    exe: &Path,
    settings: &EngineSettings,
    socket_path: bool,
    encrypted: bool,
) -> Result<Vec<Pair>, NetnsError> {
    let args = settings.args();
    let env = settings.env();
    let mut pairs = Vec::new();
    let key = if encrypted {
        Some(write_key(&topo.dir)?)
    } else {
        None
    };
    let specs = PAIRS
        .into_iter()
        .chain(socket_path.then_some(SOCKET_PATH))
        .chain(encrypted.then_some(ENCRYPTED));
    for spec in specs {
        let mut engines = Vec::new();
        for (i, end) in spec.ends.into_iter().enumerate() {
            let ns = &topo.ns[i];
            let local = &topo.underlay_addr(spec.underlay, i).to_string();
            let remote = &topo.underlay_addr(spec.underlay, 1 - i).to_string();
            let address = topo.subnet.cidr(spec.overlay_block, i);
            match end {
                End::Kernel => kernel_vxlan(&spec, ns, local, remote, &address)?,
                End::Vxnet => {
                    let mut run_args: Vec<String> = [
                        "--vni",
                        &spec.vni.to_string(),
                        "--dev",
                        &spec.dev(End::Vxnet),
                        "--port",
                        &spec.port.to_string(),
                        "--local",
                        local,
                        "--remote",
                        remote,
                        "--address",
                        &address,
                    ]
                    .map(String::from)
                    .to_vec();
                    run_args.extend(args.iter().cloned());
                    run_args.extend(spec.run_args.iter().map(|a| a.to_string()));
                    if let (true, Some(key)) = (spec.encrypted, &key) {
                        run_args.extend([
                            "--key-file".to_string(),
                            key.display().to_string(),
                            "--esp-port".to_string(),
                            ENCRYPTED_ESP_PORT.to_string(),
                        ]);
                    }
                    let host = format!("{}-{}", spec.name, ['a', 'b'][i]);
                    let launch = engine::Launch {
                        host: &host,
                        namespace: ns,
                        args: &run_args,
                        env: &env,
                        dir: &topo.dir,
                    };
                    engines.push(engine::start(cleanup, exe, &launch)?);
                }
            }
        }
        let mut overlay_mtu = [0; 2];
        for (i, end) in spec.ends.into_iter().enumerate() {
            overlay_mtu[i] = link_mtu(&topo.ns[i], &spec.dev(end))?;
        }
        pairs.push(Pair {
            spec,
            engines,
            target: spec.overlay(&topo.subnet, 1),
            overlay_mtu,
        });
    }
    Ok(pairs)
}

/// A fresh network key for the encrypted pair, in the run's directory (removed with it), mode
/// 0600 as the engine insists.
fn write_key(dir: &Path) -> Result<std::path::PathBuf, NetnsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("encrypted-pair.key");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| NetnsError::Setup(format!("writing {}: {e}", path.display())))?;
    writeln!(file, "{}", crate::key::generate().to_hex())
        .map_err(|e| NetnsError::Setup(format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// `ip link add … type vxlan` with the pair's VNI and port, like the kernel pair of
/// benchmark-method.md, its address, up.
fn kernel_vxlan(
    spec: &PairSpec,
    ns: &str,
    local: &str,
    remote: &str,
    address: &str,
) -> Result<(), NetnsError> {
    let dev = spec.dev(End::Kernel);
    ip(&[
        "-n",
        ns,
        "link",
        "add",
        &dev,
        "type",
        "vxlan",
        "id",
        &spec.vni.to_string(),
        "dstport",
        &spec.port.to_string(),
        "local",
        local,
        "remote",
        remote,
        "dev",
        spec.underlay.dev,
    ])?;
    ip(&["-n", ns, "addr", "add", address, "dev", &dev])?;
    ip(&["-n", ns, "link", "set", &dev, "up"])?;
    Ok(())
}

/// What the first vxnet engine says it runs with (workers, offloads in use).
pub(super) fn engine_report(pairs: &[Pair]) -> Option<StatsReport> {
    stats(pairs.iter().flat_map(|p| &p.engines).next()?)
}

fn stats(engine: &engine::Engine) -> Option<StatsReport> {
    let value = request(&engine.control, &Request::Stats).ok()?;
    serde_json::from_value(value).ok()
}

#[cfg(test)]
mod tests {
    use super::super::topology::BLOCKS;
    use super::*;

    #[test]
    fn pairs_do_not_share_vni_port_or_subnet() {
        // --encrypted and --socket-path exclude each other: they share a block.
        for extra in [ENCRYPTED, SOCKET_PATH] {
            let all: Vec<PairSpec> = PAIRS.into_iter().chain([extra]).collect();
            let underlays = [SHARED, MIXED, MIXED_REVERSE].map(|u| u.block);
            for (i, a) in all.iter().enumerate() {
                assert!(!underlays.contains(&a.overlay_block));
                assert!(a.overlay_block < BLOCKS as usize);
                for b in &all[i + 1..] {
                    assert_ne!(a.vni, b.vni);
                    assert_ne!(a.port, b.port);
                    assert_ne!(a.overlay_block, b.overlay_block);
                }
            }
        }
        let subnet = Subnet::parse("10.9.0.0/24", BLOCKS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(PAIRS[1].overlay(&subnet, 1), Ipv4Addr::new(10, 9, 0, 130));
    }

    #[test]
    fn settings_become_flags_and_environment() {
        let s = EngineSettings {
            threads: Some(1),
            no_offloads: false,
            disable_offloads: vec!["gso".into(), "gro".into()],
            busy_poll: Some(50),
        };
        assert_eq!(s.args(), ["--threads", "1", "--busy-poll", "50"]);
        assert_eq!(
            s.env(),
            [("VXNET_DISABLE_OFFLOADS".to_string(), "gso,gro".to_string())]
        );
        assert!(EngineSettings::default().args().is_empty());
        assert!(EngineSettings::default().env().is_empty());
    }
}
