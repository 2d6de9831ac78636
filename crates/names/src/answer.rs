//! One query in, one decision out: a reply, a query to forward, or a silent drop.
//!
//! Scope: the caller says which network's socket the query arrived on; a source outside that
//! network's subnets is REFUSED, and only that network's names are answered. Names:
//! - `NAME` (one label): the network's names and aliases, else NXDOMAIN. Bare names are never
//!   forwarded, so another network's container names cannot leak through the host's resolvers.
//! - `NAME.NETWORK`: the same; any other name under a known network's domain (this one's or
//!   another's) is NXDOMAIN.
//! - reverse names of an address in a served network's subnet: PTR `NAME.NETWORK.` or NXDOMAIN.
//! - everything else: forwarded.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::counters::Counters;
use crate::table::{NetworkNames, Zones};

/// TTL of every local answer and of the negative-caching SOA. A few seconds: a recreated
/// container's new address is followed at once (Docker's embedded DNS answers with 600 s).
pub const TTL: u32 = 5;

/// The EDNS UDP payload this service advertises and never exceeds over UDP (the DNS flag day
/// 2020 value: fits the IPv6 minimum MTU without fragments, and any overlay MTU).
pub const UDP_PAYLOAD: u16 = 1232;

/// A DNS message without EDNS fits 512 bytes over UDP (RFC 1035).
const PLAIN_UDP: usize = 512;

/// The largest DNS message TCP can frame (two-byte length prefix).
const MAX_TCP: usize = 65_535;

/// How the query arrived (and its reply leaves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagram: answers larger than the client's size are truncated (TC).
    Udp,
    /// Stream: answers up to 64 KiB.
    Tcp,
}

/// What to do with one query.
#[derive(Debug)]
pub enum Decision {
    /// Send these bytes back to the client.
    Reply(Vec<u8>),
    /// Not a name of ours: ask the host's resolvers (see [`crate::Forwarder`]).
    Forward(Box<ForwardRequest>),
    /// Send nothing (counted).
    Drop,
}

/// A query to pass on to the host's resolvers.
#[derive(Debug, Clone)]
pub struct ForwardRequest {
    /// The parsed query: for the SERVFAIL or TC reply the service may have to make itself.
    pub request: Message,
    /// The query as received (its ID is rewritten before it leaves).
    pub raw: Vec<u8>,
    /// The largest reply the client takes over its transport.
    pub limit: usize,
}

/// Decides what to do with `packet`, received from `source` on `network`'s socket over
/// `transport`. `seed` shuffles addresses (any value; a fresh one per query spreads the load the
/// way Docker shuffles an alias shared by several containers).
pub fn answer(
    zones: &Zones,
    network: &str,
    source: IpAddr,
    packet: &[u8],
    transport: Transport,
    seed: u64,
    counters: &Counters,
) -> Decision {
    Counters::bump(&counters.queries);
    // Shorter than a header: not even an ID to answer with. A response (QR set) sent to a
    // server is never answered: replying would let two servers bounce packets forever.
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        Counters::bump(&counters.dropped);
        return Decision::Drop;
    }
    let request = match Message::from_vec(packet) {
        Ok(request) => request,
        Err(_) => {
            Counters::bump(&counters.formerr);
            return Decision::Reply(header_only(packet, ResponseCode::FormErr));
        }
    };
    let limit = client_limit(&request, transport);
    let reply = |response: Message| Decision::Reply(encode(&request, response, limit, counters));
    if request.metadata.op_code != OpCode::Query {
        Counters::bump(&counters.notimp);
        return reply(response_to(&request, ResponseCode::NotImp));
    }
    if request.queries.len() != 1 {
        Counters::bump(&counters.formerr);
        return reply(response_to(&request, ResponseCode::FormErr));
    }
    if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
        Counters::bump(&counters.formerr);
        return reply(response_to(&request, ResponseCode::BADVERS));
    }
    let query = &request.queries[0];
    let Some(names) = zones
        .network(network)
        .filter(|names| names.contains(source))
    else {
        Counters::bump(&counters.refused);
        return reply(response_to(&request, ResponseCode::Refused));
    };
    let qtype = query.query_type();
    if query.query_class() != DNSClass::IN || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        Counters::bump(&counters.refused);
        return reply(response_to(&request, ResponseCode::Refused));
    }
    match classify(zones, names, query.name()) {
        Local::Forward => {
            Counters::bump(&counters.forwarded);
            Decision::Forward(Box::new(ForwardRequest {
                raw: packet.to_vec(),
                request,
                limit,
            }))
        }
        Local::Unknown => {
            Counters::bump(&counters.nxdomain);
            reply(negative(&request, names, ResponseCode::NXDomain))
        }
        Local::Addresses(addresses) => {
            Counters::bump(&counters.answered);
            let mut shuffled: Vec<IpAddr> = addresses
                .iter()
                .copied()
                .filter(|a| match qtype {
                    RecordType::A => a.is_ipv4(),
                    RecordType::AAAA => a.is_ipv6(),
                    RecordType::ANY => true,
                    _ => false,
                })
                .collect();
            shuffle(&mut shuffled, seed);
            let records = shuffled.into_iter().map(|address| {
                let data = match address {
                    IpAddr::V4(v4) => RData::A(A(v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                };
                Record::from_rdata(query.name().clone(), TTL, data)
            });
            reply(positive(&request, names, records.collect()))
        }
        Local::Pointer(target) => {
            Counters::bump(&counters.answered);
            let records = matches!(qtype, RecordType::PTR | RecordType::ANY)
                .then(|| Record::from_rdata(query.name().clone(), TTL, RData::PTR(PTR(target))));
            reply(positive(&request, names, records.into_iter().collect()))
        }
    }
}

/// Where a query name belongs.
enum Local<'a> {
    Forward,
    Unknown,
    Addresses(&'a [IpAddr]),
    Pointer(Name),
}

fn classify<'a>(zones: &Zones, names: &'a NetworkNames, qname: &Name) -> Local<'a> {
    let labels: Vec<String> = qname
        .iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect();
    if let Some(address) = reverse_address(qname, &labels) {
        if !zones.is_overlay_address(address) {
            return Local::Forward;
        }
        return match names
            .name_of(address)
            .and_then(|name| ptr_target(names, name))
        {
            Some(target) => Local::Pointer(target),
            None => Local::Unknown,
        };
    }
    let found = |name: &str| names.lookup(name).map_or(Local::Unknown, Local::Addresses);
    match labels.as_slice() {
        [] => Local::Forward,
        [bare] => found(bare),
        [name, domain] if names.domain() == Some(domain.as_str()) => found(name),
        [.., last] if zones.is_network_domain(last) => Local::Unknown,
        _ => Local::Forward,
    }
}

/// The address of a full-length reverse name (`d.c.b.a.in-addr.arpa`, 32 nibbles of
/// `ip6.arpa`); shorter reverse names are zones above single addresses and are forwarded.
fn reverse_address(qname: &Name, labels: &[String]) -> Option<IpAddr> {
    let [.., kind, arpa] = labels else {
        return None;
    };
    if arpa != "arpa" || (kind != "in-addr" && kind != "ip6") {
        return None;
    }
    let mut fqdn = qname.clone();
    fqdn.set_fqdn(true);
    let net = fqdn.parse_arpa_name().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

fn ptr_target(names: &NetworkNames, name: &str) -> Option<Name> {
    let text = match names.domain() {
        Some(domain) => format!("{name}.{domain}."),
        None => format!("{name}."),
    };
    Name::from_ascii(text).ok()
}

fn client_limit(request: &Message, transport: Transport) -> usize {
    match (transport, &request.edns) {
        (Transport::Tcp, _) => MAX_TCP,
        (Transport::Udp, None) => PLAIN_UDP,
        (Transport::Udp, Some(edns)) => {
            usize::from(edns.max_payload().clamp(PLAIN_UDP as u16, UDP_PAYLOAD))
        }
    }
}

/// A reply to `request` with its question, RD/CD copied, RA set (other names are forwarded),
/// and an OPT record when the query had one.
pub(crate) fn response_to(request: &Message, code: ResponseCode) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.recursion_available = true;
    response.metadata.response_code = code;
    // The question is echoed only when there is exactly one: a reply to a hundred questions
    // (FORMERR) must not be a hundred times larger than it needs to be.
    if request.queries.len() == 1 {
        response.add_queries(request.queries.iter().cloned());
    }
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        response.set_edns(edns);
    }
    response
}

fn positive(request: &Message, names: &NetworkNames, answers: Vec<Record>) -> Message {
    if answers.is_empty() {
        // The name exists but holds nothing of this type: NODATA, with the SOA for caching.
        return negative(request, names, ResponseCode::NoError);
    }
    let mut response = response_to(request, ResponseCode::NoError);
    response.metadata.authoritative = true;
    response.insert_answers(answers);
    response
}

/// NXDOMAIN or NODATA, with the network's SOA so resolvers cache the answer for [`TTL`] only.
fn negative(request: &Message, names: &NetworkNames, code: ResponseCode) -> Message {
    let mut response = response_to(request, code);
    response.metadata.authoritative = true;
    if let Some(domain) = names.domain() {
        let zone = Name::from_ascii(format!("{domain}."));
        let mname = Name::from_ascii(format!("ns.{domain}."));
        let rname = Name::from_ascii(format!("hostmaster.{domain}."));
        if let (Ok(zone), Ok(mname), Ok(rname)) = (zone, mname, rname) {
            let ttl = TTL as i32;
            let soa = SOA::new(mname, rname, 1, ttl, ttl, ttl, TTL);
            response.add_authority(Record::from_rdata(zone, TTL, RData::SOA(soa)));
        }
    }
    response
}

/// Encodes `response`, or its header and question with TC set when it exceeds `limit`.
fn encode(request: &Message, response: Message, limit: usize, counters: &Counters) -> Vec<u8> {
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => bytes,
        _ => {
            Counters::bump(&counters.truncated);
            truncated(request, response.metadata.response_code)
        }
    }
}

/// The header and question of `request` with TC set: the client retries over TCP.
pub(crate) fn truncated(request: &Message, code: ResponseCode) -> Vec<u8> {
    let mut response = response_to(request, code);
    response.metadata.truncation = true;
    response
        .to_vec()
        .unwrap_or_else(|_| header_of(request.metadata.id, ResponseCode::ServFail))
}

/// SERVFAIL for `request` (the resolvers failed or did not answer in time).
pub(crate) fn servfail(request: &Message) -> Vec<u8> {
    response_to(request, ResponseCode::ServFail)
        .to_vec()
        .unwrap_or_else(|_| header_of(request.metadata.id, ResponseCode::ServFail))
}

/// A bare header answering a packet that did not parse: its ID and opcode, no question.
fn header_only(packet: &[u8], code: ResponseCode) -> Vec<u8> {
    let mut bytes = header_of(u16::from_be_bytes([packet[0], packet[1]]), code);
    // Opcode and RD copied from the query, as a resolver expects of any reply.
    bytes[2] |= packet[2] & 0x79;
    bytes
}

fn header_of(id: u16, code: ResponseCode) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Response, OpCode::Query);
    message.metadata.response_code = code;
    let [hi, lo] = id.to_be_bytes();
    // Twelve bytes cannot fail to encode; the literal keeps this path free of unwraps.
    message
        .to_vec()
        .unwrap_or_else(|_| vec![hi, lo, 0x80, code.low(), 0, 0, 0, 0, 0, 0, 0, 0])
}

/// Fisher-Yates with SplitMix64: the order only spreads load, it guards nothing.
fn shuffle(items: &mut [IpAddr], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let j = (z % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// A query for tests and the forwarder's own checks.
pub(crate) fn same_question(a: &Query, b: &Query) -> bool {
    a.query_type() == b.query_type()
        && a.query_class() == b.query_class()
        && a.name().eq_ignore_root(b.name())
}
