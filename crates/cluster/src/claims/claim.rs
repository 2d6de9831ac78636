//! Claiming an address (a host's or an endpoint's) and publishing, withdrawing and listing
//! endpoints: the writes of [`super`]'s rule.

use std::collections::BTreeSet;
use std::net::IpAddr;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use ipnet::IpNet;

use super::focus::Focus;
use super::{AddressEntry, Holdings, Resolved};
use crate::ipam;
use crate::records::NetworkDef;
use crate::scoped::{self, AddressClaim, ClaimKind, EndpointRecord};
use crate::store::{Retry, Store};
use crate::{Error, Result};

/// Lost races before giving up; each loss means another node took an address.
const ATTEMPTS: usize = 64;

/// What a claimer wants to hold.
enum Holder<'a> {
    /// The node's own address (persistent).
    Host,
    /// An endpoint, written with its claim under `lease`.
    Endpoint {
        draft: &'a EndpointRecord,
        lease: i64,
    },
}

/// Either the host address held, or the endpoint published.
enum Held {
    Host(IpAddr),
    Endpoint(Box<EndpointRecord>),
}

/// The subnet of `def`, or why it has no addresses to hand out.
fn subnet_of(def: &NetworkDef) -> Result<IpNet> {
    ipam::subnet(def)?.ok_or_else(|| Error::NoSubnet(def.name.clone()))
}

/// Claims an address for `node_id` in `def` (the one given, or the next free one after the
/// address handed out last), as `holder`, and makes sure it won (see the module docs).
async fn claim(
    store: &Store,
    def: &NetworkDef,
    node_id: &str,
    want: Option<IpAddr>,
    holder: Holder<'_>,
) -> Result<Held> {
    let subnet = subnet_of(def)?;
    let network = def.name.as_str();
    if let Some(ip) = want {
        if !ipam::is_host_address(subnet, ip) {
            return Err(Error::AddressOutsideSubnet {
                address: ip,
                network: network.to_owned(),
                subnet: subnet.to_string(),
            });
        }
    }
    let mut tried = BTreeSet::new();
    for _ in 0..ATTEMPTS {
        let nodes = super::read_nodes(store).await?;
        let (h, r) = read(
            store,
            def,
            &nodes,
            &holder,
            want.into_iter().collect(),
            true,
        )
        .await?;
        // Held already: a restart, or the same attach again.
        match &holder {
            Holder::Host => {
                if let Some(a) = r.addresses.iter().find(|a| {
                    a.item.node == node_id
                        && a.item.kind == ClaimKind::Host
                        && want.is_none_or(|w| w == a.item.address)
                }) {
                    return Ok(Held::Host(a.item.address));
                }
            }
            Holder::Endpoint { draft, .. } => {
                if let Some(e) = r
                    .endpoints
                    .iter()
                    .find(|e| e.item.node == node_id && e.item.id == draft.id)
                {
                    return Ok(Held::Endpoint(Box::new(e.item.clone())));
                }
                if let Some(e) = r
                    .endpoints
                    .iter()
                    .find(|e| e.item.name.eq_ignore_ascii_case(&draft.name))
                {
                    return Err(Error::EndpointNameTaken {
                        name: draft.name.clone(),
                        network: network.to_owned(),
                        node: e.item.node.clone(),
                    });
                }
            }
        }
        let owner = |ip: IpAddr| r.addresses.iter().find(|a| a.item.address == ip);
        let ip = match want {
            Some(ip) => match owner(ip) {
                Some(a) => return Err(taken(network, &a.item)),
                None => ip,
            },
            None => {
                let mut busy: BTreeSet<IpAddr> = r
                    .addresses
                    .iter()
                    .map(|a| a.item.address)
                    .chain(tried.iter().copied())
                    .collect();
                match &holder {
                    // The full read listed every claimed address already.
                    Holder::Host => ipam::next_free(subnet, h.cursor, &busy).ok_or_else(|| {
                        Error::SubnetExhausted {
                            network: network.to_owned(),
                            subnet: subnet.to_string(),
                        }
                    })?,
                    Holder::Endpoint { .. } => {
                        next_unclaimed(store, def, &nodes, h.cursor, &mut busy).await?
                    }
                }
            }
        };
        let Some(revision) = put_claim(store, network, node_id, ip, subnet, &holder).await? else {
            // Our own key for this address exists already (a concurrent claim on this node).
            tried.insert(ip);
            continue;
        };
        let claim_key = scoped::addr_key(node_id, network, ip);
        let (_, after) = read(store, def, &nodes, &holder, vec![ip], false).await?;
        let won = after
            .addresses
            .iter()
            .find(|a| a.item.address == ip)
            .filter(|a| a.key == claim_key && a.create_revision == revision);
        match (&holder, won) {
            (Holder::Host, Some(_)) => {
                release_other_host_claims(store, &after, node_id, ip).await;
                return Ok(Held::Host(ip));
            }
            (Holder::Endpoint { draft, .. }, Some(_)) => {
                if let Some(e) = after
                    .endpoints
                    .iter()
                    .find(|e| e.item.node == node_id && e.item.id == draft.id)
                {
                    return Ok(Held::Endpoint(Box::new(e.item.clone())));
                }
                // Its address won but an earlier endpoint holds its name.
                withdraw_claim(store, node_id, network, ip, revision, Some(draft)).await?;
                let node = after
                    .endpoints
                    .iter()
                    .find(|e| e.item.name.eq_ignore_ascii_case(&draft.name))
                    .map_or_else(String::new, |e| e.item.node.clone());
                return Err(Error::EndpointNameTaken {
                    name: draft.name.clone(),
                    network: network.to_owned(),
                    node,
                });
            }
            (_, None) => {
                let endpoint = match &holder {
                    Holder::Endpoint { draft, .. } => Some(*draft),
                    Holder::Host => None,
                };
                withdraw_claim(store, node_id, network, ip, revision, endpoint).await?;
                if want.is_some() {
                    let winner = after.addresses.iter().find(|a| a.item.address == ip);
                    if let Some(a) = winner {
                        return Err(taken(network, &a.item));
                    }
                }
                tried.insert(ip);
            }
        }
    }
    Err(Error::Invalid(format!(
        "network {network}: gave up claiming an address after {ATTEMPTS} lost races"
    )))
}

/// Probes for one address before reading the whole network (a subnet that crowded is rare).
const PROBES: usize = 8;

/// What a claim by `holder` needs to know, and how every reader decides it: for a host address
/// the whole network (once per node and network: its held address may be any); for an endpoint
/// only `ips`, its name and its own record (O(N) keys, see [`super::focus`]), with every node's
/// cursor when `cursor`.
async fn read(
    store: &Store,
    def: &NetworkDef,
    nodes: &BTreeSet<String>,
    holder: &Holder<'_>,
    ips: Vec<IpAddr>,
    cursor: bool,
) -> Result<(Holdings, Resolved)> {
    let subnet = subnet_of(def)?;
    let network = def.name.as_str();
    let h = match holder {
        Holder::Host => Holdings::read(store, network).await?,
        Holder::Endpoint { draft, .. } => {
            let focus = Focus {
                ips,
                name: Some(&draft.name),
                own: Some((&draft.node, &draft.id)),
                cursor,
            };
            Holdings::around(store, network, nodes, &focus).await?
        }
    };
    let r = h.resolve(network, subnet);
    Ok((h, r))
}

/// The first address after `cursor` that is neither `busy` nor claimed by any node, found by
/// probing candidates one by one (round-robin hands out addresses in order, so the first is
/// nearly always free); after [`PROBES`] taken ones, one read of the whole network lists them
/// all (and tells a full subnet).
async fn next_unclaimed(
    store: &Store,
    def: &NetworkDef,
    nodes: &BTreeSet<String>,
    cursor: Option<IpAddr>,
    busy: &mut BTreeSet<IpAddr>,
) -> Result<IpAddr> {
    let subnet = subnet_of(def)?;
    let network = def.name.as_str();
    let exhausted = || Error::SubnetExhausted {
        network: network.to_owned(),
        subnet: subnet.to_string(),
    };
    for _ in 0..PROBES {
        let ip = ipam::next_free(subnet, cursor, busy).ok_or_else(exhausted)?;
        let focus = Focus {
            ips: vec![ip],
            ..Focus::default()
        };
        let r = Holdings::around(store, network, nodes, &focus)
            .await?
            .resolve(network, subnet);
        if r.addresses.iter().all(|a| a.item.address != ip) {
            return Ok(ip);
        }
        busy.insert(ip);
    }
    let r = Holdings::read(store, network)
        .await?
        .resolve(network, subnet);
    busy.extend(r.addresses.iter().map(|a| a.item.address));
    ipam::next_free(subnet, cursor, busy).ok_or_else(exhausted)
}

fn taken(network: &str, a: &AddressEntry) -> Error {
    Error::AddressTaken {
        address: a.address,
        network: network.to_owned(),
        owner: match &a.endpoint {
            Some(e) => format!("endpoint {e} on node {}", a.node),
            None => format!("node {}", a.node),
        },
    }
}

/// Writes the claim on `ip` (with the endpoint record, under its lease) and this node's cursor in
/// one create-only transaction; the revision it was written at, or `None` when this node's key
/// for the address (or the endpoint's) exists already.
async fn put_claim(
    store: &Store,
    network: &str,
    node_id: &str,
    ip: IpAddr,
    subnet: IpNet,
    holder: &Holder<'_>,
) -> Result<Option<i64>> {
    let claim_key = store.key(&scoped::addr_key(node_id, network, ip));
    let mut when = vec![Compare::create_revision(
        claim_key.clone(),
        CompareOp::Equal,
        0,
    )];
    let mut ops = vec![TxnOp::put(
        store.key(&scoped::cursor_key(node_id, network)),
        ip.to_string(),
        None,
    )];
    let (claim, lease) = match holder {
        Holder::Host => (
            AddressClaim {
                node: node_id.to_owned(),
                kind: ClaimKind::Host,
                endpoint: None,
            },
            None,
        ),
        Holder::Endpoint { draft, lease } => {
            let record = EndpointRecord {
                node: node_id.to_owned(),
                network: network.to_owned(),
                addresses: vec![IpNet::new(ip, subnet.prefix_len())
                    .map_err(|e| Error::Invalid(e.to_string()))?
                    .to_string()],
                ..(*draft).clone()
            };
            record.validate()?;
            let ep_key = store.key(&scoped::endpoint_key(node_id, network, &record.id));
            when.push(Compare::create_revision(
                ep_key.clone(),
                CompareOp::Equal,
                0,
            ));
            ops.push(TxnOp::put(
                ep_key,
                serde_json::to_vec(&record)?,
                Some(PutOptions::new().with_lease(*lease)),
            ));
            ops.push(TxnOp::put(
                store.key(&scoped::name_key(
                    node_id,
                    network,
                    &record.name,
                    &record.id,
                )),
                Vec::new(),
                Some(PutOptions::new().with_lease(*lease)),
            ));
            (
                AddressClaim {
                    node: node_id.to_owned(),
                    kind: ClaimKind::Endpoint,
                    endpoint: Some(record.id.clone()),
                },
                Some(*lease),
            )
        }
    };
    ops.push(TxnOp::put(
        claim_key,
        serde_json::to_vec(&claim)?,
        lease.map(|l| PutOptions::new().with_lease(l)),
    ));
    let resp = store
        .txn(Retry::IfNotSent, Txn::new().when(when).and_then(ops))
        .await?;
    Ok(resp
        .succeeded()
        .then(|| resp.header().map_or(0, |h| h.revision())))
}

/// Deletes this node's claim on `ip` (and the endpoint written with it, with its name index) if
/// it is still the one written at `revision`.
async fn withdraw_claim(
    store: &Store,
    node_id: &str,
    network: &str,
    ip: IpAddr,
    revision: i64,
    endpoint: Option<&EndpointRecord>,
) -> Result<()> {
    let claim_key = store.key(&scoped::addr_key(node_id, network, ip));
    let mut ops = vec![TxnOp::delete(claim_key.clone(), None)];
    if let Some(e) = endpoint {
        ops.push(TxnOp::delete(
            store.key(&scoped::endpoint_key(node_id, network, &e.id)),
            None,
        ));
        ops.push(TxnOp::delete(
            store.key(&scoped::name_key(node_id, network, &e.name, &e.id)),
            None,
        ));
    }
    let txn = Txn::new()
        .when([Compare::create_revision(
            claim_key,
            CompareOp::Equal,
            revision,
        )])
        .and_then(ops);
    store.txn(Retry::Idempotent, txn).await?;
    Ok(())
}

/// A node has one host address per network: the others it claimed (an earlier `--address`) are
/// released once a new one is held. Old-layout keys a worker may no longer delete stay (readers
/// ignore them once the node is gone), so failures are only logged.
async fn release_other_host_claims(store: &Store, r: &Resolved, node_id: &str, keep: IpAddr) {
    for a in &r.addresses {
        let mine = a.item.node == node_id && a.item.kind == ClaimKind::Host;
        if mine && a.item.address != keep {
            let key = store.key(&a.key);
            if let Err(e) = store
                .txn(
                    Retry::Idempotent,
                    Txn::new().and_then([TxnOp::delete(key.clone(), None)]),
                )
                .await
            {
                tracing::debug!(%key, error = %e, "could not release an earlier host address");
            }
        }
    }
}

/// This node's host address on `def` (with the subnet's prefix length): `want` if given (an
/// error if another holds it), else the one it holds already, else the next free one. `None` when
/// the network has no subnet.
pub async fn host_address(
    store: &Store,
    def: &NetworkDef,
    node_id: &str,
    want: Option<IpAddr>,
) -> Result<Option<IpNet>> {
    let Some(subnet) = ipam::subnet(def)? else {
        return Ok(None);
    };
    match claim(store, def, node_id, want, Holder::Host).await? {
        Held::Host(ip) => Ok(Some(
            IpNet::new(ip, subnet.prefix_len()).map_err(|e| Error::Invalid(e.to_string()))?,
        )),
        Held::Endpoint(_) => Err(Error::Invalid("claimed an endpoint for a host".into())),
    }
}

/// Publishes endpoint `draft` of node `node_id` on `def`: claims `want` (or the next free address,
/// round-robin) and writes the record with its claim in one transaction under `lease` (the
/// engine's membership lease, so the endpoint goes with its host). `draft.addresses`, `node` and
/// `network` are filled in here. Idempotent: an endpoint of this node with the same id is
/// returned as it is. Errors: [`Error::AddressTaken`], [`Error::EndpointNameTaken`],
/// [`Error::SubnetExhausted`], [`Error::AddressOutsideSubnet`], [`Error::NoSubnet`].
pub async fn publish_endpoint(
    store: &Store,
    def: &NetworkDef,
    lease: i64,
    draft: &EndpointRecord,
    want: Option<IpAddr>,
) -> Result<EndpointRecord> {
    match claim(
        store,
        def,
        &draft.node,
        want,
        Holder::Endpoint { draft, lease },
    )
    .await?
    {
        Held::Endpoint(e) => Ok(*e),
        Held::Host(_) => Err(Error::Invalid(
            "claimed a host address for an endpoint".into(),
        )),
    }
}

/// Withdraws endpoint `id` of node `node_id` in `network` and releases its addresses, in one
/// transaction. `Ok(None)` when there is no such endpoint (withdrawing twice is fine).
pub async fn withdraw_endpoint(
    store: &Store,
    node_id: &str,
    network: &str,
    id: &str,
) -> Result<Option<EndpointRecord>> {
    let ep_key = store.key(&scoped::endpoint_key(node_id, network, id));
    let Some(kv) = store.get_raw(&ep_key).await? else {
        return Ok(None);
    };
    let record: Option<EndpointRecord> = serde_json::from_slice(kv.value()).ok();
    // Its name index goes either way (only an index: deleting it twice is harmless).
    let names: Vec<TxnOp> = record
        .iter()
        .map(|r| {
            let key = store.key(&scoped::name_key(node_id, network, &r.name, id));
            TxnOp::delete(key, None)
        })
        .collect();
    let mut ops = vec![TxnOp::delete(ep_key.clone(), None)];
    ops.extend(names.iter().cloned());
    let mut when = vec![Compare::create_revision(
        ep_key.clone(),
        CompareOp::Equal,
        kv.create_revision(),
    )];
    for ip in record.iter().flat_map(EndpointRecord::ips) {
        // Its claims were written in the same transaction: same create revision.
        let claim_key = store.key(&scoped::addr_key(node_id, network, ip));
        when.push(Compare::create_revision(
            claim_key.clone(),
            CompareOp::Equal,
            kv.create_revision(),
        ));
        ops.push(TxnOp::delete(claim_key, None));
    }
    let txn = Txn::new()
        .when(when)
        .and_then(ops)
        .or_else([vec![TxnOp::delete(ep_key, None)], names].concat());
    store.txn(Retry::Idempotent, txn).await?;
    Ok(record)
}

/// The claimed addresses (with their owners) and the endpoints of `def`, as every reader decides
/// them, read from the store (an engine reads them from its view instead:
/// [`crate::ClusterView::endpoints_in`]).
pub async fn holders(
    store: &Store,
    def: &NetworkDef,
) -> Result<(Vec<AddressEntry>, Vec<EndpointRecord>)> {
    let Some(subnet) = ipam::subnet(def)? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let r = Holdings::read(store, &def.name)
        .await?
        .resolve(&def.name, subnet);
    let mut eps: Vec<EndpointRecord> = r.endpoints.into_iter().map(|e| e.item).collect();
    eps.sort();
    Ok((r.addresses.into_iter().map(|a| a.item).collect(), eps))
}

/// Puts endpoint `record` of its node back under `lease` (after an engine restart, or when the
/// membership had to take a new lease): a record still in the store (its old lease not yet
/// expired) is moved to `lease` with its claims in one transaction, keeping their create
/// revisions, so it keeps every address and name it won; one that is gone is published again
/// on the address it had, which fails with [`Error::AddressTaken`] when another node took the
/// address meanwhile. Returns the record as the store holds it.
pub async fn reassert_endpoint(
    store: &Store,
    def: &NetworkDef,
    lease: i64,
    record: &EndpointRecord,
) -> Result<EndpointRecord> {
    let node_id = record.node.as_str();
    let ep_key = store.key(&scoped::endpoint_key(node_id, &def.name, &record.id));
    if let Some(kv) = store.get_raw(&ep_key).await? {
        let held: Option<EndpointRecord> = serde_json::from_slice(kv.value()).ok();
        if let Some(held) = held.filter(|h| h.ips().eq(record.ips())) {
            if kv.lease() == lease {
                return Ok(held);
            }
            let revision = kv.create_revision();
            let mut when = vec![Compare::create_revision(
                ep_key.clone(),
                CompareOp::Equal,
                revision,
            )];
            let on_lease = || Some(PutOptions::new().with_lease(lease));
            let mut ops = vec![
                TxnOp::put(ep_key.clone(), kv.value().to_vec(), on_lease()),
                TxnOp::put(
                    store.key(&scoped::name_key(node_id, &def.name, &held.name, &held.id)),
                    Vec::new(),
                    on_lease(),
                ),
            ];
            let claim = AddressClaim {
                node: node_id.to_owned(),
                kind: ClaimKind::Endpoint,
                endpoint: Some(record.id.clone()),
            };
            for ip in held.ips() {
                let claim_key = store.key(&scoped::addr_key(node_id, &def.name, ip));
                when.push(Compare::create_revision(
                    claim_key.clone(),
                    CompareOp::Equal,
                    revision,
                ));
                ops.push(TxnOp::put(
                    claim_key,
                    serde_json::to_vec(&claim)?,
                    on_lease(),
                ));
            }
            let resp = store
                .txn(Retry::Idempotent, Txn::new().when(when).and_then(ops))
                .await?;
            if resp.succeeded() {
                return Ok(held);
            }
        }
        // Half gone (its claim expired first) or changed: written anew below.
        withdraw_endpoint(store, node_id, &def.name, &record.id).await?;
    }
    let want = record.ips().next();
    publish_endpoint(store, def, lease, record, want).await
}
