//! The `vxnet` command line. Kept thin: each subcommand delegates to its module, and any error is
//! printed as a single `error: …` line with a non-zero exit status (the reference is docs/cli.md).
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use vxnet::cli::{Cli, Cmd};
use vxnet::{attach, bench, cluster, demo, explain, firewall, key, reload, run, sa, show};

/// Keeps the one-line error contract for usage errors too: clap's own message spans several
/// lines (the missing arguments are listed below the first), followed by a usage block.
fn one_line_usage_error(text: &str) -> String {
    let message: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .collect();
    match message.join(" ").trim_start_matches("error: ") {
        "" => "invalid arguments".into(),
        line => line.to_owned(),
    }
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
            eprintln!("error: {}", one_line_usage_error(&e.to_string()));
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
        Cmd::Attach(a) => attach::attach(a).map_err(|e| e.to_string()),
        Cmd::Detach(a) => attach::detach(a).map_err(|e| e.to_string()),
        Cmd::Endpoints(a) => attach::endpoints(a).map_err(|e| e.to_string()),
        Cmd::Reload(a) => reload::run(a).map_err(|e| e.to_string()),
        Cmd::Sa(a) => sa::run(a).map_err(|e| e.to_string()),
        Cmd::Cluster(a) => cluster::cli::run_cluster(a).map_err(|e| e.to_string()),
        Cmd::Network(a) => cluster::cli::run_network(a).map_err(|e| e.to_string()),
        Cmd::Firewall(a) => firewall::cli::run(a).map_err(|e| e.to_string()),
        Cmd::Demo(a) => demo::run(a).map_err(|e| e.to_string()),
        Cmd::Bench(a) => bench::run(a).map_err(|e| e.to_string()),
        Cmd::Key(a) => key::run(a).map_err(|e| e.to_string()),
        Cmd::Completions(a) => {
            vxnet::cli::completions(&a).map_err(|e| format!("cannot write output: {e}"))
        }
        Cmd::Man(a) => vxnet::man::write_pages(&a.dir)
            .map(|_| ())
            .map_err(|e| format!("writing man pages to {}: {e}", a.dir.display())),
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
