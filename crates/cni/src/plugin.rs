//! The commands: parse the environment and the configuration, ask the engine, print the
//! result. The engine makes the veth, moves it into the namespace, sets its address and route
//! and claims the address; the plugin never touches a namespace itself.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde_json::Value;
use vxnet_dataplane::config::DEFAULT_CONTROL_PATH;

use crate::delegate::Ipam;
use vxnet_dataplane::control::proto::{
    AttachRequest, Attachment, DetachRequest, Endpoint, GcReport, GcRequest, Request, Status,
};

use crate::engine::Engine;
use crate::env::{self, same_file, Command, Env, Target};
use crate::spec::{
    check_version, spec_identifier, CniResult, Code, Interface, IpConfig, NetConf, PluginError,
    Route, VersionInfo, LATEST, SUPPORTED_VERSIONS,
};

/// Larger configurations are refused (a runtime's is a few KiB; GC's list grows by ~100 bytes
/// per container).
const MAX_CONFIG_BYTES: usize = 4 << 20;

/// What the process prints on stdout and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit: u8,
}

/// Runs one command: `var` reads the environment, `stdin` is the configuration.
pub fn run(var: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    // Errors are in the config's version when it is one we speak, else in our newest.
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .and_then(|v| check_version(&v).ok())
        .unwrap_or(LATEST);
    match dispatch(var, stdin) {
        Ok(Some(out)) => Outcome {
            stdout: format!("{out}\n"),
            exit: 0,
        },
        Ok(None) => Outcome {
            stdout: String::new(),
            exit: 0,
        },
        Err(e) => Outcome {
            stdout: format!("{}\n", e.to_json(version)),
            exit: 1,
        },
    }
}

fn dispatch(
    var: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<Value>, PluginError> {
    if env::command(var)? == Command::Version {
        return Ok(Some(version(stdin)));
    }
    let (raw, conf) = parse_config(stdin)?;
    let env = env::parse(var)?;
    let version = check_version(&conf.cni_version)?;
    let control = conf
        .control
        .as_deref()
        .unwrap_or(Path::new(DEFAULT_CONTROL_PATH));
    let engine = Engine { control };
    let cx = Context {
        raw: &raw,
        conf: &conf,
        env: &env,
        engine,
    };
    match (env.command, &env.target) {
        (Command::Add, Some(t)) => add(&cx, t, version).map(Some),
        (Command::Del, Some(t)) => del(&cx, t).map(|()| None),
        (Command::Check, Some(t)) => check(&cx, t).map(|()| None),
        (Command::Status, _) => status(&cx).map(|()| None),
        (Command::Gc, _) => gc(&cx).map(|()| None),
        _ => Err(PluginError::new(
            Code::InvalidEnvironment,
            "no attachment given",
        )),
    }
}

struct Context<'a> {
    raw: &'a Value,
    conf: &'a NetConf,
    env: &'a Env,
    engine: Engine<'a>,
}

/// VERSION: the spec versions spoken, in the caller's version when it is one of them.
fn version(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned));
    let info = VersionInfo {
        cni_version: asked
            .and_then(|v| check_version(&v).ok())
            .unwrap_or(LATEST)
            .to_owned(),
        supported_versions: SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
    };
    serde_json::to_value(info).unwrap_or(Value::Null)
}

/// The configuration: JSON (else code 6), a supported version (else 1), the fields vxnet
/// needs with the right types (else 7).
fn parse_config(stdin: &[u8]) -> Result<(Value, NetConf), PluginError> {
    if stdin.len() > MAX_CONFIG_BYTES {
        return Err(PluginError::new(
            Code::Decode,
            format!("configuration larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
        PluginError::new(
            Code::Decode,
            format!("configuration on stdin is not JSON: {e}"),
        )
    })?;
    if !raw.is_object() {
        return Err(PluginError::new(
            Code::Decode,
            "configuration on stdin is not a JSON object",
        ));
    }
    match raw.get("cniVersion") {
        Some(Value::String(v)) => check_version(v)?,
        _ => {
            return Err(PluginError::new(
                Code::InvalidConfig,
                "configuration has no \"cniVersion\" string",
            ))
        }
    };
    if raw.get("plugins").is_some() {
        return Err(PluginError::new(
            Code::InvalidConfig,
            "got a whole conflist; a runtime passes one plugin's configuration",
        ));
    }
    let conf: NetConf = serde_json::from_value(raw.clone())
        .map_err(|e| PluginError::new(Code::InvalidConfig, format!("configuration: {e}")))?;
    if !spec_identifier(&conf.name) {
        return Err(PluginError::new(
            Code::InvalidConfig,
            format!("network name {:?} is not a CNI name", conf.name),
        ));
    }
    if conf.control.as_deref().is_some_and(|p| !p.is_absolute()) {
        return Err(PluginError::new(
            Code::InvalidConfig,
            "\"control\" must be an absolute path to the engine's control socket",
        ));
    }
    Ok((raw, conf))
}

/// A DNS label (what the engine's names must be); `None` for anything else.
fn dns_label(s: &str) -> Option<&str> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then_some(s)
}

/// The container's name: podman's `K8S_POD_NAME`, else the container id (Docker's 12-digit
/// short form for a 64-digit id); a name DNS cannot carry is left out, with a log line.
fn container_name<'a>(env: &'a Env, container_id: &'a str) -> Option<&'a str> {
    let given = env
        .args
        .iter()
        .find(|(k, _)| k == "K8S_POD_NAME")
        .map(|(_, v)| v.as_str());
    let candidate = given.unwrap_or(if container_id.len() == 64 {
        &container_id[..12]
    } else {
        container_id
    });
    let name = dns_label(candidate);
    if name.is_none() {
        eprintln!("vxnet-cni: name {candidate:?} is not a DNS label; the endpoint has none");
    }
    name
}

fn add(cx: &Context<'_>, t: &Target, version: &str) -> Result<Value, PluginError> {
    let netns = t.netns.as_deref().unwrap_or(Path::new(""));
    env::check_netns(netns)?;
    let network = cx.conf.name.as_str();
    let served = cx.engine.served(network)?;
    if let Some(ep) = cx
        .engine
        .find(network, &served, &t.container_id, &t.ifname)?
    {
        return Err(PluginError::new(
            Code::AlreadyAttached,
            format!(
                "container {} already has {} in network {network} ({}): DEL it first",
                t.container_id, t.ifname, ep.address
            ),
        ));
    }
    let aliases: Vec<String> = cx
        .conf
        .runtime_config
        .aliases
        .as_ref()
        .and_then(|a| a.get(network))
        .into_iter()
        .flatten()
        .filter(|a| {
            let ok = dns_label(a).is_some();
            if !ok {
                eprintln!("vxnet-cni: alias {a:?} is not a DNS label; left out");
            }
            ok
        })
        .cloned()
        .collect();
    let ipam = Ipam::resolve(cx.raw, &cx.env.path)?;
    let leased = ipam.as_ref().map(Ipam::add).transpose()?;
    let attached = leased
        .as_ref()
        .map(one_address)
        .transpose()
        .and_then(|address| {
            cx.engine.ask::<Endpoint>(&Request::Attach(AttachRequest {
                network: network.to_owned(),
                netns: env::engine_visible(netns).display().to_string(),
                ifname: Some(t.ifname.clone()),
                name: container_name(cx.env, &t.container_id).map(str::to_owned),
                aliases,
                address: address.map(|a| a.to_string()),
                mac: None,
                container_id: Some(t.container_id.clone()),
            }))
        });
    let ep = match attached {
        Ok(ep) => ep,
        Err(e) => {
            // Nothing left behind: the lease goes back (the engine undoes its own part).
            if let Some(ipam) = &ipam {
                if let Err(undo) = ipam.call("DEL", &[]) {
                    eprintln!("vxnet-cni: releasing the IPAM lease after a failed ADD: {undo}");
                }
            }
            return Err(e);
        }
    };
    let mut ours = endpoint_result(&ep, netns, version);
    if ours.dns.is_empty() {
        ours.dns = cx.conf.dns.clone().unwrap_or_default();
    }
    let result = match &cx.conf.prev_result {
        Some(prev) => {
            let mut prev = parse_result(prev)?;
            prev.extend(ours);
            prev
        }
        None => ours,
    };
    serde_json::to_value(result.for_version(version))
        .map_err(|e| PluginError::new(Code::Io, e.to_string()))
}

/// The one address an IPAM result gives (vxnet endpoints have one address per network).
fn one_address(r: &CniResult) -> Result<IpNet, PluginError> {
    match r.ips.as_slice() {
        [one] => Ok(one.address),
        ips => Err(PluginError::new(
            Code::InvalidConfig,
            format!(
                "the IPAM plugin gave {} addresses; a vxnet endpoint takes exactly one",
                ips.len()
            ),
        )),
    }
}

fn parse_result(v: &Value) -> Result<CniResult, PluginError> {
    serde_json::from_value(v.clone())
        .map_err(|e| PluginError::new(Code::InvalidConfig, format!("prevResult: {e}")))
}

/// The spec's result for an endpoint: its interface in the sandbox, its address with the
/// gateway, the default route via the gateway, and the network's DNS once it has names.
fn endpoint_result(ep: &Endpoint, netns: &Path, version: &str) -> CniResult {
    let default = match ep.gateway {
        IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
        IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
    };
    CniResult {
        cni_version: version.to_owned(),
        interfaces: vec![Interface {
            name: ep.ifname.clone(),
            mac: Some(ep.mac.clone()),
            mtu: Some(ep.mtu),
            sandbox: Some(netns.display().to_string()),
            extra: Default::default(),
        }],
        ips: vec![IpConfig {
            address: ep.address,
            gateway: Some(ep.gateway),
            interface: Some(0),
            extra: Default::default(),
        }],
        routes: vec![Route {
            dst: default,
            gw: Some(ep.gateway),
            extra: Default::default(),
        }],
        dns: ep.dns.clone().map(Into::into).unwrap_or_default(),
    }
}

fn del(cx: &Context<'_>, t: &Target) -> Result<(), PluginError> {
    let network = cx.conf.name.as_str();
    // A config error is reported before anything is released.
    let ipam = Ipam::resolve(cx.raw, &cx.env.path)?;
    let detached = cx.engine.ask::<Value>(&Request::Detach(DetachRequest {
        network: network.to_owned(),
        container_id: Some(t.container_id.clone()),
        ifname: Some(t.ifname.clone()),
        ..DetachRequest::default()
    }));
    if let Err(e) = detached {
        // A network the engine no longer serves has nothing left to remove here.
        match cx.engine.served(network) {
            Err(gone) if gone.code == Code::InvalidConfig => {
                eprintln!("vxnet-cni: DEL: {gone}; nothing to remove");
            }
            _ => return Err(e),
        }
    }
    if let Some(ipam) = ipam {
        ipam.call("DEL", &[])?;
    }
    Ok(())
}

fn check_failed(msg: String) -> PluginError {
    PluginError::new(Code::EngineRefused, format!("CHECK: {msg}"))
}

fn check(cx: &Context<'_>, t: &Target) -> Result<(), PluginError> {
    let netns = t.netns.as_deref().unwrap_or(Path::new(""));
    let prev = cx.conf.prev_result.as_ref().ok_or_else(|| {
        PluginError::new(Code::InvalidConfig, "CHECK needs the prevResult of the ADD")
    })?;
    let prev = parse_result(prev)?;
    env::check_netns(netns)?;
    let network = cx.conf.name.as_str();
    let served = cx.engine.served(network)?;
    if let Some(ipam) = Ipam::resolve(cx.raw, &cx.env.path)? {
        ipam.call("CHECK", &[])?;
    }
    let ep = cx
        .engine
        .find(network, &served, &t.container_id, &t.ifname)?
        .ok_or_else(|| {
            PluginError::new(
                Code::UnknownContainer,
                format!(
                    "container {} has no {} in network {network}",
                    t.container_id, t.ifname
                ),
            )
        })?;
    if !same_file(&env::runtime_path(Path::new(&ep.netns)), netns) {
        return Err(check_failed(format!(
            "the endpoint is in {}, not in {}",
            ep.netns,
            netns.display()
        )));
    }
    let index = prev
        .interfaces
        .iter()
        .position(|i| {
            i.name == t.ifname
                && i.sandbox
                    .as_deref()
                    .is_some_and(|s| same_file(Path::new(s), netns))
        })
        .ok_or_else(|| {
            check_failed(format!(
                "prevResult has no interface {} in {}",
                t.ifname,
                netns.display()
            ))
        })?;
    let iface = &prev.interfaces[index];
    if iface
        .mac
        .as_deref()
        .is_some_and(|m| !m.eq_ignore_ascii_case(&ep.mac))
    {
        return Err(check_failed(format!(
            "{} has MAC {}, prevResult says {}",
            t.ifname,
            ep.mac,
            iface.mac.as_deref().unwrap_or_default()
        )));
    }
    if !prev
        .ips
        .iter()
        .any(|ip| ip.interface == Some(index) && ip.address == ep.address)
    {
        return Err(check_failed(format!(
            "{} has address {}, which prevResult does not list",
            t.ifname, ep.address
        )));
    }
    Ok(())
}

fn status(cx: &Context<'_>) -> Result<(), PluginError> {
    let network = cx.conf.name.as_str();
    let ready = cx
        .engine
        .ask::<Status>(&Request::Status {
            network: Some(network.to_owned()),
        })
        .map_err(|e| PluginError::new(Code::NotReady, format!("engine unreachable: {e}")))?;
    if ready.state != "ready" {
        return Err(PluginError::new(
            Code::LimitedConnectivity,
            format!(
                "engine degraded: {}",
                ready.reason.as_deref().unwrap_or("no reason given")
            ),
        ));
    }
    cx.engine
        .served(network)
        .map_err(|e| PluginError::new(Code::NotReady, e.msg))?;
    match Ipam::resolve(cx.raw, &cx.env.path)? {
        Some(ipam) if ipam.speaks_1_1() => ipam.call("STATUS", &[]),
        _ => Ok(()),
    }
}

fn gc(cx: &Context<'_>) -> Result<(), PluginError> {
    let network = cx.conf.name.as_str();
    let valid = cx.conf.valid_attachments.as_ref().ok_or_else(|| {
        // Without the list, "release everything not in it" would release everything.
        PluginError::new(
            Code::InvalidConfig,
            "GC needs \"cni.dev/valid-attachments\"",
        )
    })?;
    let ipam = Ipam::resolve(cx.raw, &cx.env.path)?;
    let report: GcReport = cx.engine.ask(&Request::EndpointGc(GcRequest {
        network: network.to_owned(),
        valid: valid
            .iter()
            .map(|a| Attachment {
                container_id: a.container_id.clone(),
                ifname: a.ifname.clone(),
            })
            .collect(),
    }))?;
    if !report.released.is_empty() {
        eprintln!(
            "vxnet-cni: GC released {} endpoint(s) of network {network}",
            report.released.len()
        );
    }
    match ipam {
        Some(ipam) if ipam.speaks_1_1() => ipam.call("GC", &[])?,
        // An IPAM plugin older than GC releases by DEL, one released endpoint at a time.
        Some(ipam) => {
            for ep in &report.released {
                if let Some(id) = ep.container_id.as_deref() {
                    ipam.call(
                        "DEL",
                        &[
                            ("CNI_CONTAINERID", id),
                            ("CNI_IFNAME", &ep.ifname),
                            ("CNI_NETNS", ""),
                        ],
                    )?;
                }
            }
        }
        None => {}
    }
    Ok(())
}
