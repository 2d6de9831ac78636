//! The `vxnet` command line. Kept thin: each subcommand delegates to its module, and any error is
//! printed as a single `error: …` line with a non-zero exit status (contract in shared/notes/cli.md).
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vxnet::{bench, cluster, demo, explain, firewall, run, show};

#[derive(Debug, Parser)]
#[command(name = "vxnet", version, about = "vxnet: a userspace VXLAN data plane")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show the VXLAN double wrap layer by layer: a worked example, or the packets of a capture.
    Explain(explain::ExplainArgs),
    /// Run the engine in the foreground (until SIGINT/SIGTERM).
    Run(Box<run::RunArgs>),
    /// Show or change the forwarding database of a running engine.
    Fdb(show::FdbArgs),
    /// Remote VTEPs with per-peer counters.
    Peers(show::ControlArgs),
    /// Per-network counters and drops by reason.
    Stats(show::ControlArgs),
    /// Networks served by the running engine.
    Networks(show::ControlArgs),
    /// The etcd-backed cluster: init, join, rotate, status, leave, rm.
    Cluster(cluster::cli::ClusterArgs),
    /// Named overlay networks stored in the cluster.
    Network(cluster::cli::NetworkArgs),
    /// Open/close the VXLAN port for cluster members in the host firewall.
    Firewall(firewall::cli::FirewallArgs),
    /// A two-host overlay in network namespaces on this machine: ping, TCP rate, a packet explained.
    Demo(demo::DemoArgs),
    /// Throughput, latency and CPU of vxnet against the kernel's vxlan, one run, one topology.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help / --version: print as clap formats them, exit 0.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Keep the one-line error contract for usage errors too (clap's own is multi-line).
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("error: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let res: Result<(), String> = match cli.cmd {
        Cmd::Explain(a) => explain::run(a).map_err(|e| e.to_string()),
        Cmd::Run(a) => run::run(*a).map_err(|e| e.to_string()),
        Cmd::Fdb(a) => show::fdb(a).map_err(|e| e.to_string()),
        Cmd::Peers(a) => show::peers(a).map_err(|e| e.to_string()),
        Cmd::Stats(a) => show::stats(a).map_err(|e| e.to_string()),
        Cmd::Networks(a) => show::networks(a).map_err(|e| e.to_string()),
        Cmd::Cluster(a) => cluster::cli::run_cluster(a).map_err(|e| e.to_string()),
        Cmd::Network(a) => cluster::cli::run_network(a).map_err(|e| e.to_string()),
        Cmd::Firewall(a) => firewall::cli::run(a).map_err(|e| e.to_string()),
        Cmd::Demo(a) => demo::run(a).map_err(|e| e.to_string()),
        Cmd::Bench(a) => bench::run(a).map_err(|e| e.to_string()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error chain held.
            eprintln!("error: {}", e.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
