//! `vxnet cni install`: the CNI plugin (`vxnet-cni`, installed beside `vxnet`) into the
//! runtimes' plugin directory and one conflist for a network into their configuration
//! directory, for podman, containerd (`ctr run --cni`), cnitool and CRI runtimes.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use vxnet_cni::install::{self, Installed, DEFAULT_BIN_DIR, DEFAULT_CONF_DIR, PLUGIN_NAME};
use vxnet_dataplane::config::DEFAULT_CONTROL_PATH;
use vxnet_dataplane::control::client::{request, ClientError};
use vxnet_dataplane::control::proto::{NetworkInfo, Request};

#[derive(Debug, Args)]
pub struct CniArgs {
    #[command(subcommand)]
    pub cmd: CniCmd,
}

#[derive(Debug, Subcommand)]
pub enum CniCmd {
    /// Install the CNI plugin and exactly one conflist for a network, so that runtimes
    /// (podman --network NET, ctr run --cni, cnitool) attach containers through this engine.
    Install(InstallArgs),
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The vxnet network containers join (the conflist's name).
    #[arg(long, value_name = "NET")]
    pub network: String,
    /// Where runtimes look for plugin binaries (their CNI_PATH).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BIN_DIR)]
    pub dir: PathBuf,
    /// Where runtimes read network configurations; the conflist is 10-vxnet-NET.conflist.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CONF_DIR)]
    pub conf_dir: PathBuf,
    /// The engine's control socket, written into the conflist (the plugin asks this engine).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_PATH)]
    pub control: PathBuf,
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("the CNI plugin {0} is missing (it is installed beside vxnet; build or install both)")]
    NoPlugin(PathBuf),
    #[error("the engine at {control} does not serve network {network:?} (it serves: {served})")]
    NotServed {
        control: PathBuf,
        network: String,
        served: String,
    },
    #[error("cannot resolve {0}: {1}")]
    Path(PathBuf, std::io::Error),
    #[error(transparent)]
    Install(#[from] install::InstallError),
    #[error(transparent)]
    Engine(#[from] ClientError),
    #[error("cannot print: {0}")]
    Print(#[from] serde_json::Error),
}

pub fn run(args: CniArgs) -> Result<(), CniError> {
    match args.cmd {
        CniCmd::Install(a) => run_install(&a),
    }
}

/// `vxnet-cni` beside this executable (target/debug in a build, /usr/bin in a package).
fn plugin_binary() -> Result<PathBuf, CniError> {
    let exe = std::env::current_exe().map_err(|e| CniError::Path("vxnet".into(), e))?;
    let plugin = exe.with_file_name(PLUGIN_NAME);
    if plugin.is_file() {
        Ok(plugin)
    } else {
        Err(CniError::NoPlugin(plugin))
    }
}

/// Refuses a network the running engine does not serve; an engine that is not running (yet)
/// is fine: the conflist can be installed before it starts.
fn check_served(control: &Path, network: &str) -> Result<(), CniError> {
    match request(control, &Request::Networks) {
        Ok(value) => {
            let served: Vec<NetworkInfo> = serde_json::from_value(value)?;
            if served.iter().any(|n| n.name == network) {
                return Ok(());
            }
            let names: Vec<&str> = served.iter().map(|n| n.name.as_str()).collect();
            Err(CniError::NotServed {
                control: control.to_path_buf(),
                network: network.to_owned(),
                served: if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
            })
        }
        Err(e @ ClientError::Connect { .. }) => {
            eprintln!("note: {e}; installing anyway");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn run_install(a: &InstallArgs) -> Result<(), CniError> {
    // The conflist is read by processes with other working directories.
    let control =
        std::path::absolute(&a.control).map_err(|e| CniError::Path(a.control.clone(), e))?;
    install::check_network_name(&a.network)?;
    let plugin = plugin_binary()?;
    check_served(&control, &a.network)?;
    let done = install::install(&plugin, &a.network, &a.dir, &a.conf_dir, &control)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        print!("{}", render(&done, &control));
    }
    Ok(())
}

fn render(done: &Installed, control: &Path) -> String {
    let mut out = format!(
        "plugin   {}\nconflist {} (network {}, control {})\n",
        done.plugin.display(),
        done.conflist.display(),
        done.network,
        control.display()
    );
    for old in &done.removed {
        out.push_str(&format!(
            "removed  {} (an older vxnet conflist of {})\n",
            old.display(),
            done.network
        ));
    }
    if done.first != done.conflist {
        out.push_str(&format!(
            "note: {} sorts first in its directory: runtimes that read only one file (ctr) use it\n",
            done.first.display()
        ));
    }
    out
}
