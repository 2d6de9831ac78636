//! `vxnet attach`, `vxnet detach`, `vxnet endpoints`: clients of the running engine, which does
//! the work (namespace checks, veth, address, route, records). The client only turns
//! `--netns NAME` and `--pid PID` into namespace paths.

use clap::Args;
use vxnet_dataplane::control::client::request;
use vxnet_dataplane::control::proto::{
    AttachRequest, DetachRequest, Endpoint, EndpointList, GcReport, Request,
};

use crate::show::{ControlArgs, ShowError};

/// Which namespace: by name, by path, or by a process in it.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct NamespaceArgs {
    /// The network namespace: a name (`ip netns add NAME` makes /run/netns/NAME) or a path.
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Option<String>,
    /// The network namespace of process PID (/proc/PID/ns/net).
    #[arg(long)]
    pub pid: Option<u32>,
}

impl NamespaceArgs {
    fn path(&self) -> Option<String> {
        match (&self.netns, self.pid) {
            (Some(ns), _) if ns.contains('/') => Some(ns.clone()),
            (Some(ns), _) => Some(format!("/run/netns/{ns}")),
            (None, Some(pid)) => Some(format!("/proc/{pid}/ns/net")),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The network (served by this engine in bridge mode).
    #[arg(long)]
    pub network: String,
    #[command(flatten)]
    pub namespace: NamespaceArgs,
    /// The interface inside the namespace.
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
    /// The endpoint's name in the network (a DNS label) [default: the namespace's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Another name of the endpoint (repeat for several).
    #[arg(long = "alias", value_name = "ALIAS")]
    pub aliases: Vec<String>,
    /// The address, in CIDR form with the network's prefix [default: the next free one].
    #[arg(long, value_name = "CIDR")]
    pub address: Option<String>,
    /// The interface's MAC [default: derived from the endpoint, the same on every attach].
    #[arg(long)]
    pub mac: Option<String>,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// The network.
    #[arg(long)]
    pub network: String,
    /// The network namespace (name or path) whose endpoints to detach.
    #[arg(long, value_name = "NAME|PATH", conflicts_with_all = ["pid", "name"])]
    pub netns: Option<String>,
    /// The network namespace of process PID.
    #[arg(long, conflicts_with = "name")]
    pub pid: Option<u32>,
    /// The endpoint's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only the endpoint with this interface in the namespace.
    #[arg(long)]
    pub ifname: Option<String>,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, Args)]
pub struct EndpointsArgs {
    /// Only this network's endpoints.
    #[arg(long)]
    pub network: Option<String>,
    #[command(flatten)]
    pub control: ControlArgs,
}

pub fn attach(args: AttachArgs) -> Result<(), ShowError> {
    let req = AttachRequest {
        network: args.network,
        netns: args.namespace.path().unwrap_or_default(),
        ifname: Some(args.ifname),
        name: args.name,
        aliases: args.aliases,
        address: args.address,
        mac: args.mac,
        container_id: None,
    };
    let value = request(&args.control.control, &Request::Attach(req))?;
    if args.control.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let e: Endpoint = serde_json::from_value(value)?;
    println!(
        "attached {} to {}: {} {} via {} ({} in {}, host side {})",
        e.name, e.network, e.address, e.mac, e.gateway, e.ifname, e.netns, e.host_ifname
    );
    Ok(())
}

pub fn detach(args: DetachArgs) -> Result<(), ShowError> {
    let namespace = NamespaceArgs {
        netns: args.netns,
        pid: args.pid,
    };
    let req = DetachRequest {
        network: args.network,
        container_id: None,
        netns: namespace.path(),
        name: args.name,
        ifname: args.ifname,
    };
    let value = request(&args.control.control, &Request::Detach(req))?;
    if args.control.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let report: GcReport = serde_json::from_value(value)?;
    if report.released.is_empty() {
        println!("nothing attached there (already detached)");
    }
    for e in report.released {
        println!("detached {} from {} ({})", e.name, e.network, e.address);
    }
    Ok(())
}

pub fn endpoints(args: EndpointsArgs) -> Result<(), ShowError> {
    let value = request(
        &args.control.control,
        &Request::Endpoints {
            network: args.network,
        },
    )?;
    if args.control.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let list: EndpointList = serde_json::from_value(value)?;
    print!("{}", render(&list.endpoints));
    Ok(())
}

/// One line per endpoint, aligned.
pub fn render(endpoints: &[Endpoint]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<16} {:<20} {:<18} {:<17} {:<16} {:<10} aliases\n",
        "network", "name", "address", "mac", "node", "since"
    );
    for e in endpoints {
        let _ = writeln!(
            out,
            "{:<16} {:<20} {:<18} {:<17} {:<16} {:<10} {}",
            e.network,
            e.name,
            e.address.to_string(),
            e.mac,
            e.node,
            e.since,
            e.aliases.join(",")
        );
    }
    out
}
