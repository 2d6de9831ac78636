//! The `vxnet` command line. Kept thin: each subcommand delegates to its module, and any error is
//! printed as a single `error: …` line with a non-zero exit status (the reference is docs/cli.md).
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use vxnet::cli::{Cli, Cmd};
use vxnet::{
    attach, bench, cluster, cni, demo, explain, firewall, key, name, reload, run, sa, show,
};

/// Keeps the one-line error contract for usage errors: clap's message spans several lines (the
/// missing arguments are listed below the first, its suggestion and the usage follow). They
/// become one line, keeping what helps: `error: unrecognized subcommand 'stat'; a similar
/// subcommand exists: 'stats'; usage: vxnet <COMMAND>`.
fn usage_error(text: &str) -> String {
    let (mut message, mut tips, mut usage) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(tip) = line.strip_prefix("tip: ") {
            tips.push(tip);
        } else if let Some(first) = line.strip_prefix("Usage: ") {
            usage.push(first);
        } else if line.starts_with("For more information") {
            // The hint clap ends with; `--help` is a given.
        } else if usage.is_empty() {
            message.push(line);
        } else {
            // A further usage form, indented under the first.
            usage.push(line);
        }
    }
    let mut out = match message.join(" ").trim_start_matches("error: ") {
        "" => "invalid arguments".to_owned(),
        line => line.to_owned(),
    };
    for tip in tips {
        out.push_str("; ");
        out.push_str(tip);
    }
    if !usage.is_empty() {
        out.push_str("; usage: ");
        out.push_str(&usage.join(" | "));
    }
    out
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
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Bare `vxnet` or a bare group (`vxnet fdb`): the help, on stderr, exit 2 as clap.
            eprint!("{}", e.render());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {}", usage_error(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    let res: Result<(), Failed> = match cli.cmd {
        Cmd::Explain(a) => explain::run(a).map_err(|e| Failed {
            usage: matches!(e, explain::ExplainError::KeysWithoutCapture),
            message: e.to_string(),
        }),
        Cmd::Run(a) => run::run(*a).map_err(|e| Failed {
            usage: matches!(e, run::RunError::Usage(_)),
            message: e.to_string(),
        }),
        Cmd::Fdb(a) => show::fdb(a).map_err(failed),
        Cmd::Peers(a) => show::peers(a).map_err(failed),
        Cmd::Stats(a) => show::stats(a).map_err(failed),
        Cmd::Networks(a) => show::networks(a).map_err(failed),
        Cmd::Attach(a) => attach::attach(a).map_err(failed),
        Cmd::Detach(a) => attach::detach(a).map_err(failed),
        Cmd::Endpoints(a) => attach::endpoints(a).map_err(failed),
        Cmd::Reload(a) => reload::run(a).map_err(failed),
        Cmd::Sa(a) => sa::run(a).map_err(failed),
        Cmd::Name(a) => name::run(a).map_err(failed),
        Cmd::Cluster(a) => cluster::cli::run_cluster(a).map_err(failed),
        Cmd::Network(a) => cluster::cli::run_network(a).map_err(failed),
        Cmd::Cni(a) => cni::run(a).map_err(failed),
        Cmd::Firewall(a) => firewall::cli::run(a).map_err(failed),
        Cmd::Demo(a) => demo::run(a).map_err(failed),
        Cmd::Bench(a) => bench::run(a).map_err(failed),
        Cmd::Key(a) => key::run(a).map_err(failed),
        Cmd::Completions(a) => {
            vxnet::cli::completions(&a).map_err(|e| failed(format!("cannot write output: {e}")))
        }
        Cmd::Man(a) => vxnet::man::write_pages(&a.dir)
            .map(|_| ())
            .map_err(|e| failed(format!("writing man pages to {}: {e}", a.dir.display()))),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error chain held.
            eprintln!("error: {}", e.message.replace('\n', " "));
            // Options that parse but do not go together are usage errors too: 2, as clap's.
            ExitCode::from(if e.usage { 2 } else { 1 })
        }
    }
}

/// Why a command failed, and whether it was its options (exit 2) rather than what it met (1).
struct Failed {
    message: String,
    usage: bool,
}

fn failed(e: impl std::fmt::Display) -> Failed {
    Failed {
        message: e.to_string(),
        usage: false,
    }
}
