//! `vxnet attach`, `vxnet detach`, `vxnet endpoints`: clients of the running engine, which does
//! the work (namespace checks, veth, address, route, records). The client only turns
//! `--netns NAME` and `--pid PID` into namespace paths.

use clap::Args;
use vxnet_dataplane::control::client::request;
use vxnet_dataplane::control::proto::{
    AttachRequest, DetachRequest, Dns, Endpoint, EndpointList, GcReport, Request,
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
    /// The name of a namespace given by name (`ip netns add NAME`), whose resolver
    /// configuration `ip netns exec` takes from /etc/netns/NAME/resolv.conf.
    fn named(&self) -> Option<&str> {
        self.netns.as_deref().filter(|ns| !ns.contains('/'))
    }

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
    let e: Endpoint = serde_json::from_value(value.clone())?;
    let resolver = e.dns.as_ref().map(|dns| {
        let text = resolv_conf(dns);
        let written = args
            .namespace
            .named()
            .map(|ns| (ns, write_resolv_conf(ns, &text)));
        (text, written)
    });
    if args.control.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "attached {} to {}: {} {} via {} ({} in {}, host side {})",
            e.name, e.network, e.address, e.mac, e.gateway, e.ifname, e.netns, e.host_ifname
        );
    }
    match resolver {
        Some((_, Some((ns, Ok(path))))) if !args.control.json => {
            println!("resolver: {} (for `ip netns exec {ns}`)", path.display())
        }
        Some((_, Some((_, Ok(_))))) => {}
        Some((text, written)) => {
            if let Some((_, Err(why))) = written {
                eprintln!("warning: {why}");
            }
            // Not a named namespace (or the file could not be written): say what to use.
            let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
            eprintln!(
                "resolver for the namespace's /etc/resolv.conf: {}",
                lines.join("; ")
            );
        }
        None => {}
    }
    Ok(())
}

/// Marks the resolver files `vxnet attach` writes, so `detach` removes only its own.
const RESOLV_MARK: &str = "# written by vxnet attach: the network's DNS service";

/// A resolv.conf pointing at the network's DNS service.
fn resolv_conf(dns: &Dns) -> String {
    let mut text = format!("{RESOLV_MARK}\n");
    for ns in &dns.nameservers {
        text.push_str(&format!("nameserver {ns}\n"));
    }
    if !dns.search.is_empty() {
        text.push_str(&format!("search {}\n", dns.search.join(" ")));
    }
    text
}

fn resolv_path(ns: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns")
        .join(ns)
        .join("resolv.conf")
}

/// /etc/netns/NS/resolv.conf, which `ip netns exec NS` mounts over /etc/resolv.conf. A file
/// someone else wrote there is left alone.
fn write_resolv_conf(ns: &str, text: &str) -> Result<std::path::PathBuf, String> {
    let path = resolv_path(ns);
    if let Ok(old) = std::fs::read_to_string(&path) {
        if !old.starts_with(RESOLV_MARK) {
            return Err(format!(
                "{} exists and was not written by vxnet: left as it is",
                path.display()
            ));
        }
    }
    let dir = path.parent().unwrap_or(std::path::Path::new("/etc/netns"));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Removes the resolver file `attach` wrote for named namespace `ns` (and its directory when
/// that is left empty); anything else there stays.
fn remove_resolv_conf(ns: &str) {
    let path = resolv_path(ns);
    let ours = std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(RESOLV_MARK));
    if ours && std::fs::remove_file(&path).is_ok() {
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

pub fn detach(args: DetachArgs) -> Result<(), ShowError> {
    let namespace = NamespaceArgs {
        netns: args.netns,
        pid: args.pid,
    };
    let named = namespace.named().map(str::to_string);
    let req = DetachRequest {
        network: args.network,
        container_id: None,
        netns: namespace.path(),
        name: args.name,
        ifname: args.ifname,
    };
    let value = request(&args.control.control, &Request::Detach(req))?;
    let report: GcReport = serde_json::from_value(value.clone())?;
    // The namespace has no endpoint of this network left: its resolver file goes too.
    if let Some(ns) = &named {
        remove_resolv_conf(ns);
    }
    if args.control.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
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
        "{:<16} {:<20} {:<18} {:<17} {:<16} {:<23} aliases\n",
        "network", "name", "address", "mac", "node", "since"
    );
    for e in endpoints {
        // The record keeps Unix seconds (`--json` shows them); people read a date.
        let since = vxnet_cluster::format_time(i64::try_from(e.since).unwrap_or(i64::MAX));
        let _ = writeln!(
            out,
            "{:<16} {:<20} {:<18} {:<17} {:<16} {since:<23} {}",
            e.network,
            e.name,
            e.address.to_string(),
            e.mac,
            e.node,
            e.aliases.join(",")
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_show_since_as_a_date() {
        let e: Endpoint = serde_json::from_value(serde_json::json!({
            "id": "x", "name": "web", "network": "blue", "address": "10.1.0.5/24",
            "gateway": "10.1.0.1", "mac": "02:00:00:00:00:05", "ifname": "eth0",
            "netns": "/run/netns/web", "node": "10.0.0.1", "since": 1_796_703_099u64, "mtu": 1450
        }))
        .unwrap();
        let text = render(&[e]);
        // Before: the Unix seconds, 1796703099.
        assert!(text.contains(" 2026-12-08 04:11:39 UTC "), "{text}");
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        let row = lines.next().unwrap();
        assert_eq!(header.find("aliases"), Some(row.len()), "{text}");
    }
}
