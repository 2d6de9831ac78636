//! Control-socket request lines (`vxnet_dataplane::control::proto::parse_request`) and the
//! `fdb` requests they carry (`control::fdb::handle`), run one after another against an engine's
//! forwarding state with two networks (VNI 42 with the configured remote 10.0.0.2, and 43), and
//! against a model of the `bridge fdb` rules written out again here.
//!
//! Input: lines. A line `learn VNI MAC IP` stands for a frame from IP with source MAC (what
//! learning does on receive), so requests meet learned entries too; every other line is a
//! request as a client would send it.
//!
//! Properties: nothing panics; a decoded request encodes and decodes to itself; every reply is
//! one line of JSON that decodes; each request succeeds exactly when the model says it must, and
//! leaves the table (entries, kinds, counts) and the flood list exactly as the model does; the
//! limits hold.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use vxnet_dataplane::control::proto::{parse_request, FdbTable, Reply, Request};
use vxnet_dataplane::fuzzing::{
    fdb_learned, fdb_request, network, EntryKind, Forwarder, NetworkSpec,
};
use vxnet_encap::{MacAddr, Vni};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const VNIS: [u32; 2] = [42, 43];
/// `--max-fdb`, small so that the limits are reached.
const MAX: usize = 3;
const NOW: u64 = 5_000;

/// What one network should hold.
#[derive(Debug, Default, Clone)]
struct Model {
    entries: BTreeMap<MacAddr, (IpAddr, EntryKind)>,
    configured: Vec<IpAddr>,
    appended: Vec<IpAddr>,
}

impl Model {
    fn count(&self, kind: EntryKind) -> usize {
        self.entries.values().filter(|(_, k)| *k == kind).count()
    }

    fn flood(&self) -> Vec<IpAddr> {
        let mut all: Vec<IpAddr> = self
            .configured
            .iter()
            .chain(&self.appended)
            .copied()
            .collect();
        all.retain(|ip| *ip != LOCAL);
        all.sort();
        all.dedup();
        all
    }

    /// The `bridge fdb` rules (see `control/fdb.rs`); `Err(())` where the engine must refuse.
    fn apply(&mut self, op: Op, mac: MacAddr, dst: Option<IpAddr>) -> Result<(), ()> {
        let statics = self.count(EntryKind::Static);
        match (op, mac.is_zero(), dst) {
            (Op::Add, true, Some(dst)) if self.flood().is_empty() => self.appended.push(dst),
            (Op::Append, true, Some(dst)) => {
                if !self.flood().contains(&dst) {
                    if self.appended.len() >= MAX {
                        return Err(());
                    }
                    self.appended.push(dst);
                }
            }
            (Op::Add, false, Some(dst)) if !self.entries.contains_key(&mac) && statics < MAX => {
                self.entries.insert(mac, (dst, EntryKind::Static));
            }
            (Op::Replace, false, Some(dst)) => {
                let was_static = matches!(self.entries.get(&mac), Some((_, EntryKind::Static)));
                if !was_static && statics >= MAX {
                    return Err(());
                }
                self.entries.insert(mac, (dst, EntryKind::Static));
            }
            (Op::Del, true, None) if !self.appended.is_empty() => self.appended.clear(),
            (Op::Del, true, Some(dst)) if self.appended.contains(&dst) => {
                self.appended.retain(|ip| *ip != dst);
            }
            (Op::Del, false, None) if self.entries.contains_key(&mac) => {
                self.entries.remove(&mac);
            }
            (Op::Del, false, Some(dst)) if self.entries.get(&mac).map(|e| e.0) == Some(dst) => {
                self.entries.remove(&mac);
            }
            _ => return Err(()),
        }
        Ok(())
    }

    /// What learning must do with a frame from `from` with source `mac`.
    fn learn(&mut self, mac: MacAddr, from: IpAddr) {
        if !mac.is_unicast() {
            return;
        }
        match self.entries.get(&mac) {
            Some((_, EntryKind::Static)) => {}
            Some(_) => {
                self.entries.insert(mac, (from, EntryKind::Learned));
            }
            None if self.count(EntryKind::Learned) < MAX => {
                self.entries.insert(mac, (from, EntryKind::Learned));
            }
            None => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Append,
    Replace,
    Del,
}

fn forwarder() -> Forwarder {
    let networks = VNIS
        .iter()
        .map(|&vni| {
            let spec = NetworkSpec {
                vni: Vni::new(vni).expect("VNI in range"),
                mtu: 1450,
                allow_vlan: false,
                learning: true,
                max_fdb: MAX,
            };
            let remotes = if vni == 42 { vec![REMOTE] } else { Vec::new() };
            network(spec, LOCAL, 4789, remotes)
        })
        .collect();
    Forwarder::new(networks, LOCAL, 4789, false)
}

pub fn check(data: &[u8]) {
    let fwd = forwarder();
    let mut models: Vec<Model> = VNIS
        .iter()
        .map(|&vni| Model {
            configured: if vni == 42 { vec![REMOTE] } else { Vec::new() },
            ..Model::default()
        })
        .collect();
    for line in data.split_inclusive(|b| *b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"learn ") {
            learn(&fwd, &mut models, rest);
        } else {
            request(&fwd, &mut models, line);
        }
        assert_state(&fwd, &models);
    }
}

/// `learn VNI MAC IP`: what the receive path does for such a frame.
fn learn(fwd: &Forwarder, models: &mut [Model], rest: &[u8]) {
    let text = String::from_utf8_lossy(rest);
    let mut words = text.split_whitespace();
    let (Some(vni), Some(mac), Some(ip)) = (words.next(), words.next(), words.next()) else {
        return;
    };
    let (Ok(vni), Ok(mac), Ok(from)) = (vni.parse::<u32>(), mac.parse::<MacAddr>(), ip.parse())
    else {
        return;
    };
    let Some(i) = VNIS.iter().position(|v| *v == vni) else {
        return;
    };
    fwd.networks()[i].fdb.learn(NOW, mac, from);
    models[i].learn(mac, from);
}

fn request(fwd: &Forwarder, models: &mut [Model], line: &[u8]) {
    let Ok(request) = parse_request(line) else {
        return;
    };
    let encoded = serde_json::to_string(&request).expect("a request encodes");
    assert_eq!(
        parse_request(encoded.as_bytes()).ok().as_ref(),
        Some(&request),
        "{encoded}"
    );
    let expected = expect(models, &request);
    let reply = fdb_request(fwd, NOW, request.clone());
    let text = serde_json::to_string(&reply).expect("a reply encodes");
    assert!(!text.contains('\n'));
    let decoded: Reply = serde_json::from_str(&text).expect("a reply decodes");
    assert_eq!(decoded, reply);
    match (&reply, expected) {
        (Reply::Ok { data }, Some(Ok(()))) => {
            if let Request::FdbShow { .. } = request {
                let tables: Vec<FdbTable> =
                    serde_json::from_value(data.clone()).expect("fdb show reply");
                assert!(!tables.is_empty());
            }
        }
        (Reply::Error { message }, Some(Err(()))) => {
            assert!(
                !message.is_empty() && !message.contains('\n'),
                "{message:?}"
            );
        }
        (_, None) => {}
        (reply, Some(want)) => panic!("{request:?}: got {reply:?}, the model says {want:?}"),
    }
}

/// What the model says of `request` (and applies it); None for requests it does not judge.
fn expect(models: &mut [Model], request: &Request) -> Option<Result<(), ()>> {
    let (op, mac, dst, vni) = match request {
        Request::FdbShow { vni: None } => return Some(Ok(())),
        Request::FdbShow { vni: Some(v) } => return Some(network_of(*v).map(|_| ())),
        Request::FdbAdd { mac, dst, vni } => (Op::Add, mac, Some(*dst), vni),
        Request::FdbAppend { mac, dst, vni } => (Op::Append, mac, Some(*dst), vni),
        Request::FdbReplace { mac, dst, vni } => (Op::Replace, mac, Some(*dst), vni),
        Request::FdbDel { mac, dst, vni } => (Op::Del, mac, *dst, vni),
        // Not fdb requests: answered elsewhere.
        _ => {
            assert!(!request.is_fdb(), "{request:?} is an fdb request");
            return None;
        }
    };
    // Two networks: a request must name one.
    let Some(i) = vni.and_then(|v| network_of(v).ok()) else {
        return Some(Err(()));
    };
    let Ok(mac) = mac.parse::<MacAddr>() else {
        return Some(Err(()));
    };
    if !mac.is_zero() && mac.is_multicast() {
        return Some(Err(()));
    }
    if let Some(dst) = dst {
        // The rule spelt out again, not `validate::destination` itself: an oracle that calls
        // the code under test checks nothing.
        let unicast = match dst {
            IpAddr::V4(v4) => {
                v4.octets()[0] != 0
                    && !v4.is_loopback()
                    && !v4.is_multicast()
                    && v4 != Ipv4Addr::BROADCAST
            }
            IpAddr::V6(_) => false,
        };
        if !unicast || dst == LOCAL {
            return Some(Err(()));
        }
    }
    Some(models[i].apply(op, mac, dst))
}

fn network_of(vni: u32) -> Result<usize, ()> {
    VNIS.iter().position(|v| *v == vni).ok_or(())
}

fn assert_state(fwd: &Forwarder, models: &[Model]) {
    for (n, model) in fwd.networks().iter().zip(models) {
        let rows: Vec<(String, IpAddr, EntryKind)> = n
            .fdb
            .rows(NOW)
            .into_iter()
            .map(|r| (r.mac, r.dst, r.kind))
            .collect();
        let want: Vec<(String, IpAddr, EntryKind)> = model
            .entries
            .iter()
            .map(|(mac, (dst, kind))| (mac.to_string(), *dst, *kind))
            .collect();
        assert_eq!(
            rows, want,
            "VNI {}: the table differs from the model",
            n.settings.vni
        );
        assert_eq!(fdb_learned(&n.fdb), model.count(EntryKind::Learned));
        assert_eq!(n.fdb.static_count(), model.count(EntryKind::Static));
        assert!(fdb_learned(&n.fdb) <= MAX && n.fdb.static_count() <= MAX);
        let flood: Vec<IpAddr> = n.peers().flood.iter().map(|a| a.ip()).collect();
        assert_eq!(flood, model.flood(), "VNI {}: flood list", n.settings.vni);
        // Accepted from: flood destinations and static entries' destinations, nothing else.
        let peers = n.peers();
        let statics = model.entries.values().filter(|e| e.1 == EntryKind::Static);
        let mut allowed: Vec<IpAddr> = flood.iter().copied().chain(statics.map(|e| e.0)).collect();
        allowed.sort();
        allowed.dedup();
        assert_eq!(
            peers.allowed, allowed,
            "VNI {}: accepted peers",
            n.settings.vni
        );
    }
}
