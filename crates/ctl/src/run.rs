//! `vxnet run`: flags (or a TOML file) → engine configuration → the engine, in the foreground.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use ipnet::IpNet;
use vxnet_dataplane::config::{
    load_file, ConfigError, DEFAULT_AGEING_SECS, DEFAULT_CONTROL_PATH, DEFAULT_MAX_FDB,
};
use vxnet_dataplane::{Engine, EngineConfig, EngineError, NetworkConfig};
use vxnet_encap::{Vni, DEFAULT_PORT};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// VXLAN Network Identifier of the single network (0..16777215).
    #[arg(long)]
    pub vni: Option<Vni>,
    /// TAP device name (created, or opened when it exists as a persistent TAP).
    #[arg(long)]
    pub dev: Option<String>,
    /// Local VTEP address: the UDP socket binds here.
    #[arg(long)]
    pub local: Option<IpAddr>,
    /// Peer VTEP (address or host name); repeat for several. BUM traffic is replicated to each.
    #[arg(long = "remote")]
    pub remotes: Vec<String>,
    /// Address for the TAP, in CIDR form (e.g. 10.1.0.1/24).
    #[arg(long)]
    pub address: Option<IpNet>,
    /// UDP destination (and listening) port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Seconds a learned MAC lives without traffic.
    #[arg(long)]
    pub ageing: Option<u64>,
    /// Do not learn MACs from received traffic (static entries only).
    #[arg(long)]
    pub no_learning: bool,
    /// Learned-entry limit per network; beyond it new MACs are flooded, not learned.
    #[arg(long)]
    pub max_fdb: Option<usize>,
    /// TAP MTU (default: underlay MTU - 50 over IPv4, - 70 over IPv6).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Accept VXLAN from any sender, like the kernel (default: known peers only).
    #[arg(long)]
    pub accept_any: bool,
    /// Allow 802.1Q-tagged inner frames (dropped by default, RFC 7348).
    #[arg(long)]
    pub allow_vlan: bool,
    /// Control socket path.
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Forwarding threads (each with its own TAP queue and socket).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Several networks from a TOML file ([[network]] tables); flags override its top-level keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Turn off TAP offloads and UDP GSO/GRO.
    #[arg(long)]
    pub no_offloads: bool,
    /// Serve the counters in the Prometheus text format at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Usage(String),
}

/// Default worker count: one per core, as multi-queue TAPs and SO_REUSEPORT spread flows.
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
}

pub fn config_from_args(args: &RunArgs) -> Result<EngineConfig, RunError> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => Default::default(),
    };
    let mut networks = file.networks;
    match (args.vni, &args.dev) {
        (Some(vni), Some(dev)) => networks.push(NetworkConfig {
            name: format!("vni{vni}"),
            vni,
            dev: dev.clone(),
            address: args.address,
            remotes: args.remotes.clone(),
            mtu: args.mtu,
            allow_vlan: args.allow_vlan,
        }),
        (None, None) => {
            if !args.remotes.is_empty() || args.address.is_some() {
                return Err(RunError::Usage(
                    "--remote/--address need --vni and --dev (or use [[network]] in --config)"
                        .into(),
                ));
            }
        }
        (Some(_), None) => return Err(RunError::Usage("--vni needs --dev".into())),
        (None, Some(_)) => return Err(RunError::Usage("--dev needs --vni".into())),
    }
    let local = args
        .local
        .or(file.local)
        .ok_or_else(|| RunError::Usage("--local is required (the local VTEP address)".into()))?;
    let config = EngineConfig {
        local,
        port: args.port.or(file.port).unwrap_or(DEFAULT_PORT),
        networks,
        ageing_secs: args
            .ageing
            .or(file.ageing_secs)
            .unwrap_or(DEFAULT_AGEING_SECS),
        learning: !args.no_learning && file.learning.unwrap_or(true),
        max_fdb: args.max_fdb.or(file.max_fdb).unwrap_or(DEFAULT_MAX_FDB),
        accept_any: args.accept_any || file.accept_any.unwrap_or(false),
        control: args
            .control
            .clone()
            .or(file.control)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_PATH)),
        threads: args
            .threads
            .or(file.threads)
            .unwrap_or_else(default_threads),
        offloads: !args.no_offloads && file.offloads.unwrap_or(true),
    };
    config.validate()?;
    Ok(config)
}

pub fn run(args: RunArgs) -> Result<(), RunError> {
    let config = config_from_args(&args)?;
    let mut engine = Engine::start(config)?;
    if let Some(addr) = args.metrics {
        engine.bind_metrics(addr)?;
    }
    engine.run_until_signal()?;
    Ok(())
}
