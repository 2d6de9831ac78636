//! `vxnet`: one binary, one subcommand per job (see the CLI contract). Each subcommand lives in its
//! own module; this file only parses and dispatches, and turns an error into one `error:` line.

mod explain;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vxnet",
    version,
    about = "A userspace VXLAN (RFC 7348) data plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the VXLAN double wrap layer by layer: a worked example, or the packets of a capture.
    Explain(explain::ExplainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Explain(args) => explain::run(args).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
