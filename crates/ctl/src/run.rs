//! `vxnet run`: flags (or a TOML file) → engine configuration → the engine, in the foreground.
//! With `--store`/`--token` (cluster mode) the networks come from the cluster instead: the node
//! joins (or resumes from `--state-dir`) before anything is created, and the engine then runs
//! with the cluster link as its control-plane task (`cluster::engine_link`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use ipnet::IpNet;
use vxnet_cluster::membership::{self, DEFAULT_TTL_SECS};
use vxnet_cluster::state::{StateDir, DEFAULT_STATE_DIR};
use vxnet_cluster::{access::parse_store, network, node};
use vxnet_dataplane::config::{
    load_file, resolve_remote, ConfigError, FileValues, DEFAULT_AGEING_SECS, DEFAULT_CONTROL_PATH,
    DEFAULT_ESP_PORT, DEFAULT_MAX_FDB,
};
use vxnet_dataplane::keyring::{load_key_file, KeyRing};
use vxnet_dataplane::tuning::{
    parse_bum_rate, parse_busy_poll, parse_min_pmtu, FileTuning, SourcePortRange, Tuning,
};
use vxnet_dataplane::{Engine, EngineConfig, EngineError, NetworkConfig};
use vxnet_encap::outer::{DfPolicy, OuterPolicy, TosPolicy, TtlPolicy};
use vxnet_encap::{Vni, DEFAULT_PORT};

use crate::cli::named;
use crate::cluster::cli::StoreAccessArgs;
use crate::cluster::engine_link::{self, LinkOptions};
use crate::cluster::registry::StoreRegistry;
use crate::firewall::sync::{self, SyncOptions};
use crate::firewall::Probe;

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
    /// UDP destination (and listening) port [default: 4789, or the config file's `port`].
    #[arg(long, value_parser = vxnet_dataplane::config::parse_port)]
    pub port: Option<u16>,
    /// Encrypt the network (ESP-in-UDP, AES-256-GCM) with the 32-byte network key in FILE
    /// (`vxnet key generate --out FILE`; mode 0600). Every host of the network needs the same key;
    /// only authenticated packets are accepted.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// UDP port of encrypted networks (RFC 3948 ESP-in-UDP), sent to and listened on
    /// [default: 4500, or the config file's `esp_port`]. Bound only while an encrypted network
    /// is served, unless given: then at start, so ESP from a peer that encrypts a network this
    /// host serves in plaintext is heard and counted.
    #[arg(long, value_parser = vxnet_dataplane::config::parse_port)]
    pub esp_port: Option<u16>,
    /// Seconds a learned MAC lives without traffic [default: 300].
    #[arg(long)]
    pub ageing: Option<u64>,
    /// Do not learn MACs from received traffic (static entries only).
    #[arg(long)]
    pub no_learning: bool,
    /// Learned-entry limit per network; beyond it new MACs are flooded, not learned
    /// [default: 16384].
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
    /// TAP MAC address (default: derived from the host's machine id, --local and the VNI; in
    /// cluster mode from the node and network: either way it survives restarts).
    #[arg(long, value_parser = vxnet_dataplane::config::parse_unicast_mac)]
    pub mac: Option<vxnet_encap::MacAddr>,
    /// Bridge mode: serve the network through a Linux bridge of this name (created if missing)
    /// holding the TAP, `--address` and the endpoints `vxnet attach` adds. The bridge and the
    /// endpoints outlive an engine restart; `--cleanup` removes them when the engine stops.
    /// In cluster mode every network is bridged (on `vb-NAME`); this names the bridge of the
    /// single `--network`.
    #[arg(long, value_name = "NAME")]
    pub bridge: Option<String>,
    /// Bridge mode without a cluster: the part of the --address subnet this host gives to
    /// endpoints (hosts sharing the subnet need disjoint pools) [default: the whole subnet].
    #[arg(long, value_name = "CIDR", requires = "bridge")]
    pub pool: Option<IpNet>,
    /// On stop, remove the bridges vxnet created and every endpoint it attached (with their
    /// records), instead of keeping them for the next start.
    #[arg(long)]
    pub cleanup: bool,
    /// Control socket path [default: /run/vxnet/vxnet.sock]. Created mode 0600 (root and the
    /// engine's user only); requests are capped at 64 KiB and must arrive within 5 s.
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Let members of GROUP (name or gid) use the control socket too (mode 0660).
    #[arg(long, value_name = "GROUP")]
    pub control_group: Option<String>,
    /// Forwarding threads, each with its own TAP queue and socket [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Several networks from a TOML file ([[network]] tables); flags override its top-level keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Turn off TAP offloads and UDP GSO/GRO.
    #[arg(long)]
    pub no_offloads: bool,
    /// Never send TCP superframes whole through an underlay TAP (tunnel GSO, the default where
    /// the start-up probe succeeds): segment them in vxnet and send them through UDP sockets,
    /// as on kernels without it. Packets on the tunnel-GSO path skip the host's OUTPUT and
    /// POSTROUTING netfilter hooks.
    #[arg(long)]
    pub no_tunnel_gso: bool,
    /// Outer DF bit: set (default; never fragmented, too-big frames are answered with ICMP),
    /// unset (routers may fragment) or inherit (from the inner IPv4 header; IPv6 inside: set).
    #[arg(long, value_name = "set|unset|inherit", value_parser = named::<DfPolicy>(&["set", "unset", "inherit"]))]
    pub df: Option<DfPolicy>,
    /// Outer TTL / hop limit: 1-255, auto (the system default, as 0) or inherit (the inner
    /// packet's).
    #[arg(long, value_name = "N|auto|inherit", hide_possible_values = true,
          value_parser = named::<TtlPolicy>(&["auto", "inherit"]))]
    pub ttl: Option<TtlPolicy>,
    /// Outer TOS / traffic class: 0-252 with the ECN bits 0 (DSCP x 4; default 0) or inherit
    /// (the inner DSCP). The outer ECN bits stay Not-ECT.
    #[arg(long, value_name = "N|inherit", hide_possible_values = true,
          value_parser = named::<TosPolicy>(&["inherit"]))]
    pub tos: Option<TosPolicy>,
    /// Outer UDP source ports: each flow gets one port of MIN-MAX from a hash of its inner
    /// headers (default 49152-65535, the lowest MIN 1024).
    #[arg(long, value_name = "MIN-MAX")]
    pub srcport: Option<SourcePortRange>,
    /// Storm control: broadcast, multicast and unknown-unicast frames per second each network
    /// may flood (1-100000000; a token bucket per network shared by all workers, one second
    /// deep). Excess frames are dropped and counted as bum_rate_limited. Default: no limit.
    #[arg(long, value_name = "PPS", value_parser = parse_bum_rate)]
    pub bum_rate: Option<u32>,
    /// Path-MTU floor, in outer IP packet bytes (552-65535) [default: 1280, IPv6's minimum
    /// link MTU]: a path MTU the kernel learnt from ICMP below it is not followed (forged ICMP
    /// frag-needed cannot shrink the path into a black hole); at or above it, frames too big
    /// for the path are answered with ICMP into the TAP.
    #[arg(long, value_name = "BYTES", value_parser = parse_min_pmtu)]
    pub min_pmtu: Option<u32>,
    /// After traffic, each worker keeps polling its TAP queues and sockets for USEC
    /// microseconds (0-10000) before it sleeps, so the next packet of an exchange is taken
    /// without a wake-up: lower latency for a core's worth of CPU while traffic flows. Idle
    /// engines never spin [default: 0; see docs/performance.md for the measurement].
    #[arg(long, value_name = "USEC", value_parser = parse_busy_poll)]
    pub busy_poll: Option<u32>,
    /// Serve the counters in the Prometheus text format at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Cluster mode: the etcd store, etcd://HOST:PORT[,HOST:PORT] or https://… (default: the
    /// token's, or the one saved in --state-dir). Networks, peers and addresses then come from the
    /// cluster.
    #[arg(long)]
    pub store: Option<String>,
    /// Cluster mode: TLS and credentials for the store (kept in --state-dir at the first join).
    #[command(flatten)]
    pub store_access: StoreAccessArgs,
    /// Cluster mode: join token, needed on the first start only (later starts resume from
    /// --state-dir).
    #[arg(long)]
    pub token: Option<String>,
    /// Cluster mode: serve this network (repeat for several; waits for ones not created yet).
    /// Default: every network of the cluster, including ones created later.
    #[arg(long = "network")]
    pub networks: Vec<String>,
    /// State directory: what must outlive the engine (encrypted networks' replay floors, so
    /// ESP captured before a restart is refused after it; attached endpoints) and in cluster
    /// mode the node's membership (node id, cluster, token). When it holds a membership,
    /// `vxnet run` without --vni/--config serves the cluster (a restart needs no cluster flags).
    #[arg(long, env = "VXNET_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Cluster mode: neither publish this host's TAP MACs nor install the other members' as
    /// static FDB entries (unicast to a MAC not yet learned is then flooded).
    #[arg(long)]
    pub no_publish_macs: bool,
    /// Cluster mode: membership lease in seconds; a host that dies leaves the other hosts' peer
    /// lists this long after.
    #[arg(long, default_value_t = DEFAULT_TTL_SECS, value_parser = clap::value_parser!(i64).range(2..=3600))]
    pub lease_ttl: i64,
    /// Cluster mode: open the VXLAN port to the members only (vxnet's nftables table, as
    /// `vxnet firewall apply --backend nftables`), creating it if missing. Without this flag an
    /// nftables firewall already applied is still kept in step with the members.
    #[arg(long)]
    pub firewall: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Cluster(#[from] vxnet_cluster::Error),
}

/// Default worker count: one per core, as multi-queue TAPs and SO_REUSEPORT spread flows.
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
}

/// Cluster mode is asked for by any of its flags, or implied when no static network is given
/// and the state dir holds a cluster membership (`vxnet cluster join` then `vxnet run --local IP`,
/// and a restart, need no cluster flags).
pub fn cluster_mode(args: &RunArgs) -> bool {
    if args.store.is_some()
        || args.token.is_some()
        || !args.networks.is_empty()
        || args.store_access.options().given()
    {
        return true;
    }
    args.vni.is_none()
        && args.config.is_none()
        && StateDir::new(&args.state_dir)
            .load()
            .is_ok_and(|s| s.is_some())
}

/// The engine-wide part of the configuration; `file` holds `--config` values (static mode).
fn engine_config(
    args: &RunArgs,
    file: FileValues,
    networks: Vec<NetworkConfig>,
    local: Option<IpAddr>,
) -> Result<EngineConfig, RunError> {
    let local =
        args.local.or(file.local).or(local).ok_or_else(|| {
            RunError::Usage("--local is required (the local VTEP address)".into())
        })?;
    let config = EngineConfig {
        local,
        port: args.port.or(file.port).unwrap_or(DEFAULT_PORT),
        esp_port: args.esp_port.or(file.esp_port).unwrap_or(DEFAULT_ESP_PORT),
        bind_esp: args.esp_port.or(file.esp_port).is_some(),
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
        control_group: args.control_group.clone().or(file.control_group),
        threads: args
            .threads
            .or(file.threads)
            .unwrap_or_else(default_threads),
        offloads: !args.no_offloads && file.offloads.unwrap_or(true),
        tunnel_gso: !args.no_tunnel_gso,
        tuning: tuning(args, &file.tuning),
        state_dir: Some(args.state_dir.clone()),
    };
    Ok(config)
}

/// `--df`/`--ttl`/`--tos`/`--srcport`/`--bum-rate`, each over the config file's key.
fn tuning(args: &RunArgs, file: &FileTuning) -> Tuning {
    Tuning {
        outer: OuterPolicy {
            df: args.df.or(file.df).unwrap_or_default(),
            ttl: args.ttl.or(file.ttl).unwrap_or_default(),
            tos: args.tos.or(file.tos).unwrap_or_default(),
        },
        srcport: args.srcport.or(file.srcport).unwrap_or_default(),
        bum_rate: args.bum_rate.or(file.bum_rate),
        min_pmtu: args
            .min_pmtu
            .or(file.min_pmtu)
            .unwrap_or(vxnet_dataplane::tuning::DEFAULT_MIN_PMTU),
        busy_poll_us: args
            .busy_poll
            .or(file.busy_poll_us)
            .unwrap_or(vxnet_dataplane::tuning::DEFAULT_BUSY_POLL_US),
    }
}

pub fn config_from_args(args: &RunArgs) -> Result<EngineConfig, RunError> {
    let mut file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileValues::default(),
    };
    let mut networks = std::mem::take(&mut file.networks);
    if args.key_file.is_some() && args.vni.is_none() {
        return Err(RunError::Usage(
            "--key-file encrypts the --vni network; in --config give each [[network]] its own key_file".into(),
        ));
    }
    // Read before anything is created: a missing, short or open key file is one error line.
    let encryption = match &args.key_file {
        Some(path) => Some(KeyRing::single(
            load_key_file(path).map_err(ConfigError::from)?,
        )),
        None => None,
    };
    match (args.vni, &args.dev) {
        (Some(vni), Some(dev)) => networks.push(NetworkConfig {
            name: format!("vni{vni}"),
            vni,
            dev: dev.clone(),
            address: args.address,
            remotes: args.remotes.clone(),
            mtu: args.mtu,
            allow_vlan: args.allow_vlan,
            mac: args.mac,
            bum_rate: None,
            encryption,
            bridge: args.bridge.clone(),
            pool: args.pool,
            hosts: Vec::new(),
        }),
        (None, None) => {
            if !args.remotes.is_empty() || args.address.is_some() || args.bridge.is_some() {
                return Err(RunError::Usage(
                    "--remote/--address/--bridge need --vni and --dev (or use [[network]] in --config)"
                        .into(),
                ));
            }
        }
        (Some(_), None) => return Err(RunError::Usage("--vni needs --dev".into())),
        (None, Some(_)) => return Err(RunError::Usage("--dev needs --vni".into())),
    }
    if args.no_publish_macs {
        return Err(RunError::Usage(
            "--no-publish-macs is for cluster mode (--store/--token)".into(),
        ));
    }
    if args.firewall {
        return Err(RunError::Usage(
            "--firewall is for cluster mode (--store/--token); with static peers use `vxnet firewall apply --peer IP`".into(),
        ));
    }
    // Nothing at all (a bare `vxnet run`): everything one network needs, in one line, rather
    // than "--local is required" first and "no network configured" on the next try.
    if networks.is_empty() && args.local.is_none() && file.local.is_none() {
        return Err(RunError::Usage(
            "no network configured: give --vni VNI --dev DEV --local IP (and --remote IP per peer), or --config FILE".into(),
        ));
    }
    let config = engine_config(args, file, networks, None)?;
    config.validate()?;
    if config.networks.is_empty() {
        return Err(ConfigError::NoNetworks.into());
    }
    Ok(config)
}

pub fn run(args: RunArgs) -> Result<(), RunError> {
    check_state_dir(&args.state_dir)?;
    if cluster_mode(&args) {
        return run_cluster(args);
    }
    let config = config_from_args(&args)?;
    let metrics = args.metrics.map(Engine::bind_metrics).transpose()?;
    let mut engine = Engine::start(config.clone())?;
    if let Some(listener) = metrics {
        engine.serve_metrics(listener);
    }
    engine.serve_endpoints(Some(&args.state_dir), None)?;
    engine.set_cleanup(args.cleanup);
    if args.config.is_some() {
        // SIGHUP and `vxnet reload` re-read flags and file exactly as at start.
        engine.reload_from(config, move || {
            config_from_args(&args).map_err(|e| e.to_string())
        });
    }
    engine.run_until_signal()?;
    Ok(())
}

/// A `--state-dir` that exists must be a directory: checked before anything is made, where the
/// endpoint records would otherwise fail to load only once the engine runs, without the path.
/// A missing one is fine (made when something is first kept).
fn check_state_dir(dir: &Path) -> Result<(), RunError> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(RunError::Usage(format!(
            "state directory {} is not a directory (--state-dir, VXNET_STATE_DIR)",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Flags that make no sense with cluster-provided networks, checked before anything is touched.
fn check_cluster_args(args: &RunArgs) -> Result<(), RunError> {
    let usage = |m: &str| Err(RunError::Usage(m.into()));
    if args.vni.is_some() || args.config.is_some() {
        return usage("--vni and --config are for static networks; with --store/--token the networks come from the cluster (use --network NAME)");
    }
    if args.key_file.is_some() {
        return usage("--key-file is for static networks; a cluster network is encrypted with `vxnet network create NAME --encrypted` (its keys come from the store)");
    }
    for name in &args.networks {
        network::validate_name(name).map_err(vxnet_cluster::Error::from)?;
    }
    if args.networks.len() != 1 {
        if args.dev.is_some() {
            return usage("--dev needs exactly one --network (TAPs are named vx-NAME otherwise)");
        }
        if args.bridge.is_some() {
            return usage(
                "--bridge needs exactly one --network (bridges are named vb-NAME otherwise)",
            );
        }
        if args.address.is_some() {
            return usage("--address needs exactly one --network (networks with a --subnet get an address allocated)");
        }
    }
    Ok(())
}

fn run_cluster(args: RunArgs) -> Result<(), RunError> {
    check_cluster_args(&args)?;
    let store = args.store.as_deref().map(parse_store).transpose()?;
    let dir = StateDir::new(&args.state_dir);
    let saved_local = dir.load()?.and_then(|st| st.local);
    // Checked before joining, so a missing flag leaves nothing behind.
    let config = engine_config(&args, FileValues::default(), Vec::new(), saved_local)?;
    // Before joining, as every other check: a port in use leaves nothing behind.
    let metrics = args.metrics.map(Engine::bind_metrics).transpose()?;
    let probe = Probe::detect();
    if args.firewall {
        sync::check_create(probe).map_err(RunError::Usage)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| {
            RunError::Engine(EngineError::Io {
                what: "starting the join runtime",
                source,
            })
        })?;
    // Joining first: a wrong or revoked token is refused before any device or socket exists.
    // The store connection is not kept: its background tasks live on this runtime, and the link
    // reconnects on the engine's.
    let (state, access) = runtime.block_on(async {
        let (store, state) = node::join_or_resume_at(
            &dir,
            args.token.as_deref(),
            store,
            &args.store_access.options(),
            Some(config.local),
        )
        .await?;
        // A second engine of this node elsewhere (a cloned state dir) is refused before any
        // device exists; the membership checks again, atomically, when it registers.
        membership::check_free(&store, &state.node_id, config.local).await?;
        Ok::<_, vxnet_cluster::Error>((state, store.access().clone()))
    })?;
    access.warn_if_open();
    drop(runtime);
    tracing::info!(
        cluster = %state.cluster_id,
        node = %state.node_id,
        role = %state.role,
        state_dir = %dir.path().display(),
        "cluster membership ready"
    );
    if let Some(notice) = sync::static_backend_notice(probe) {
        tracing::info!("{notice}");
    }
    // Unresolvable --remotes are the engine's to report when it adds the networks.
    let static_peers = args
        .remotes
        .iter()
        .filter_map(|r| resolve_remote(r, config.local).ok())
        .collect();
    let registry = Arc::new(StoreRegistry::new(&state.node_id));
    let opts = LinkOptions {
        registry: Arc::clone(&registry),
        node_id: state.node_id,
        cluster_id: state.cluster_id,
        access,
        vtep: config.local,
        networks: args.networks.clone(),
        dev: args.dev.clone(),
        address: args.address,
        remotes: args.remotes.clone(),
        mtu: args.mtu,
        allow_vlan: args.allow_vlan,
        mac: args.mac,
        bridge: args.bridge.clone(),
        publish_macs: !args.no_publish_macs,
        ttl_secs: args.lease_ttl,
        firewall: SyncOptions {
            static_peers,
            // Both ports: a cluster network may be made encrypted at any time, and the table's
            // ports are fixed when it is created (only its peer sets follow the members).
            create_ports: if args.firewall {
                vec![config.port, config.esp_port]
            } else {
                Vec::new()
            },
        },
    };
    let mut engine = Engine::start(config)?;
    if let Some(listener) = metrics {
        engine.serve_metrics(listener);
    }
    engine.serve_endpoints(Some(dir.path()), Some(registry))?;
    engine.set_cleanup(args.cleanup);
    let control = engine.control();
    engine.run_until_signal_with(engine_link::run(opts, control))?;
    Ok(())
}
