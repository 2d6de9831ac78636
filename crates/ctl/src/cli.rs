//! The `vxnet` command line as clap definitions, in the library so that the reference in
//! `docs/cli.md`, the man pages and the shell completions are all made from the same tree
//! (`tests/cli_docs.rs` checks the committed reference against it).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

use crate::{bench, cluster, cni, demo, explain, firewall, run, show};

#[derive(Debug, Parser)]
#[command(name = "vxnet", version, about = "vxnet: a userspace VXLAN data plane")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
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
    /// Join a network namespace (a container) to a bridge-mode network: a veth, an address, the
    /// default route via this host's address on the network. A namespace given by name gets
    /// /etc/netns/NAME/resolv.conf pointing at the network's DNS service (removed on detach).
    Attach(crate::attach::AttachArgs),
    /// Remove an attached endpoint (its veth, address claim and record); gone already is fine.
    Detach(crate::attach::DetachArgs),
    /// Attached endpoints: name, aliases, network, address, MAC, host, since.
    Endpoints(crate::attach::EndpointsArgs),
    /// Make the running engine re-read its --config (as SIGHUP does).
    Reload(show::ControlArgs),
    /// Security associations of encrypted networks (like `ip xfrm state`).
    Sa(crate::sa::SaArgs),
    /// Names answered by the networks' DNS service: add, rm, ls.
    Name(crate::name::NameArgs),
    /// The etcd-backed cluster: init, join, rotate, status, leave, rm.
    Cluster(cluster::cli::ClusterArgs),
    /// Named overlay networks stored in the cluster.
    Network(cluster::cli::NetworkArgs),
    /// Containers through CNI: install the plugin and a network's conflist.
    Cni(cni::CniArgs),
    /// Open/close the VXLAN port for cluster members in the host firewall.
    Firewall(firewall::cli::FirewallArgs),
    /// A two-host overlay in network namespaces on this machine: ping, TCP rate, a packet explained.
    Demo(demo::DemoArgs),
    /// Throughput, latency and CPU of vxnet against the kernel's vxlan, one run, one topology
    /// (`bench names`: name convergence at scale on a real etcd).
    #[command(args_conflicts_with_subcommands = true)]
    Bench(bench::BenchArgs),
    /// Network keys for encrypted overlays: generate one, check a key file.
    Key(crate::key::KeyArgs),
    /// Print a shell completion script (e.g. `vxnet completions bash > /etc/bash_completion.d/vxnet`).
    Completions(CompletionsArgs),
    /// Write man pages for vxnet and every subcommand (vxnet.1, vxnet-fdb-show.1, ...) and for
    /// the configuration file (vxnet.toml.5) into a directory (e.g. `vxnet man --dir
    /// /usr/local/share/man/man1`).
    Man(ManArgs),
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing). The configuration file's page,
    /// vxnet.toml.5, goes into the sibling man5 directory when DIR is a man1 directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// `vxnet completions SHELL`: the script on stdout (`| head` closing it early is no error).
pub fn completions(args: &CompletionsArgs) -> std::io::Result<()> {
    use std::io::Write;
    let mut cmd = Cli::command();
    // Into a buffer first: clap_complete panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "vxnet", &mut script);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}

/// The subcommands documented: all but clap's own `help`.
pub(crate) fn documented(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// The command-line reference (`docs/cli.md`): each command's `--help`, generated from the clap
/// definitions so it cannot drift from them.
pub fn reference_markdown() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = String::from(
        "# The `vxnet` command line\n\n\
         Generated from the clap definitions (`crates/ctl/src/cli.rs` and the modules it names);\n\
         `cargo test -p vxnet --test cli_docs` fails when this file is out of date, and\n\
         `VXNET_UPDATE_DOCS=1 cargo test -p vxnet --test cli_docs` rewrites it. The same text is\n\
         `vxnet COMMAND --help`; `vxnet man --dir DIR` writes it as man pages and\n\
         `vxnet completions SHELL` prints shell completions.\n\n\
         Conventions: every command that prints state takes `--json` (one JSON document on\n\
         stdout); errors are one line on stderr starting with `error:`, with a non-zero exit\n\
         status (2 for usage errors); option names follow iproute2's `ip link add type vxlan`\n\
         and `bridge fdb` where one exists.\n",
    );
    reference_section(&mut out, &cmd, &["vxnet"]);
    out
}

/// Exactly what `vxnet PATH… --help` prints.
fn help_text(path: &[&str]) -> String {
    let mut argv = path.to_vec();
    argv.push("--help");
    match Cli::command().try_get_matches_from(argv) {
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => e.to_string(),
        _ => String::new(),
    }
}

fn reference_section(out: &mut String, cmd: &clap::Command, path: &[&str]) {
    // `vxnet` and its commands at level 2, deeper subcommands below them.
    let heading = "#".repeat(path.len().clamp(2, 4));
    let _ = writeln!(out, "\n{heading} `{}`\n", path.join(" "));
    let _ = writeln!(out, "```text\n{}\n```", help_text(path).trim_end());
    for sub in documented(cmd) {
        let mut sub_path = path.to_vec();
        sub_path.push(sub.get_name());
        reference_section(out, sub, &sub_path);
    }
}

/// A value parser for a type parsed by `FromStr` that has named values (`--df set|unset|inherit`,
/// `--ttl N|auto|inherit`): the names are clap's possible values, so every shell's completion
/// offers them, while parsing (numbers included) and its error stay the type's own.
#[derive(Debug)]
pub(crate) struct Named<T> {
    names: &'static [&'static str],
    parsed: std::marker::PhantomData<fn() -> T>,
}

impl<T> Clone for Named<T> {
    fn clone(&self) -> Self {
        Named {
            names: self.names,
            parsed: std::marker::PhantomData,
        }
    }
}

/// [`Named`] for `names`.
pub(crate) fn named<T>(names: &'static [&'static str]) -> Named<T> {
    Named {
        names,
        parsed: std::marker::PhantomData,
    }
}

impl<T> TypedValueParser for Named<T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        text.parse().map_err(|e| {
            let name = arg.map(|a| a.to_string()).unwrap_or_default();
            clap::Error::raw(
                ErrorKind::InvalidValue,
                format!("invalid value '{text}' for '{name}': {e}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.names.iter().copied().map(PossibleValue::new)))
    }
}
