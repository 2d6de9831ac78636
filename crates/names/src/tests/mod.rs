//! The answers and the bad input of the name service, end to end through the wire format.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use proptest::prelude::*;

use crate::*;

const BLUE_CLIENT: &str = "10.7.0.50";

fn zones() -> Zones {
    let mut blue = NetworkNames::new(
        "blue",
        vec![
            "10.7.0.0/24".parse().unwrap(),
            "fd00:7::/64".parse().unwrap(),
        ],
    );
    let add = |names: &mut NetworkNames, name: &str, aliases: &[&str], addresses: &[&str]| {
        names
            .insert(&Entry {
                name: name.into(),
                aliases: aliases.iter().map(|a| (*a).into()).collect(),
                addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            })
            .unwrap();
    };
    add(&mut blue, "web1", &["web"], &["10.7.0.2", "fd00:7::2"]);
    add(&mut blue, "web2", &["web"], &["10.7.0.3"]);
    add(&mut blue, "hosta", &[], &["10.7.0.1"]);
    let mut red = NetworkNames::new("red", vec!["10.8.0.0/24".parse().unwrap()]);
    add(&mut red, "secret", &["hidden"], &["10.8.0.2"]);
    let mut zones = Zones::new();
    zones.add(blue);
    zones.add(red);
    zones.reserve("green");
    zones
}

fn query(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

fn ask_raw(
    zones: &Zones,
    source: &str,
    packet: &[u8],
    transport: Transport,
) -> (Decision, Counters) {
    let counters = Counters::default();
    let decision = answer(
        zones,
        "blue",
        source.parse().unwrap(),
        packet,
        transport,
        7,
        &counters,
    );
    (decision, counters)
}

fn reply_of(decision: Decision) -> (Message, usize) {
    match decision {
        Decision::Reply(bytes) => (Message::from_vec(&bytes).unwrap(), bytes.len()),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn ask(message: &Message) -> Message {
    let (decision, _) = ask_raw(
        &zones(),
        BLUE_CLIENT,
        &message.to_vec().unwrap(),
        Transport::Udp,
    );
    reply_of(decision).0
}

fn addresses(reply: &Message) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = reply
        .answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn names_aliases_and_name_dot_network_answer_every_address() {
    for name in ["web1", "WEB1.", "web1.blue.", "web1.BLUE"] {
        let reply = ask(&query(name, RecordType::A));
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert!(reply.metadata.authoritative);
        assert_eq!(addresses(&reply), ips(&["10.7.0.2"]), "{name}");
        assert!(reply.answers.iter().all(|r| r.ttl == TTL));
    }
    assert_eq!(
        addresses(&ask(&query("web", RecordType::A))),
        ips(&["10.7.0.2", "10.7.0.3"])
    );
    assert_eq!(
        addresses(&ask(&query("web.blue", RecordType::AAAA))),
        ips(&["fd00:7::2"])
    );
    // The host's own name on its gateway address.
    assert_eq!(
        addresses(&ask(&query("hosta", RecordType::A))),
        ips(&["10.7.0.1"])
    );
}

#[test]
fn addresses_are_shuffled_per_answer() {
    let mut blue = NetworkNames::new("blue", vec!["10.7.0.0/24".parse().unwrap()]);
    for i in 2..12 {
        blue.insert(&Entry {
            name: format!("w{i}"),
            aliases: vec!["shared".into()],
            addresses: vec![format!("10.7.0.{i}").parse().unwrap()],
        })
        .unwrap();
    }
    let mut zones = Zones::new();
    zones.add(blue);
    let packet = query("shared", RecordType::A).to_vec().unwrap();
    let orders: std::collections::HashSet<Vec<IpAddr>> = (0..8)
        .map(|seed| {
            let decision = answer(
                &zones,
                "blue",
                BLUE_CLIENT.parse().unwrap(),
                &packet,
                Transport::Udp,
                seed,
                &Counters::default(),
            );
            let reply = reply_of(decision).0;
            reply
                .answers
                .iter()
                .filter_map(|r| r.data.ip_addr())
                .collect()
        })
        .collect();
    assert!(orders.len() > 1, "eight answers came in one order");
    assert!(orders.iter().all(|order| order.len() == 10));
}

#[test]
fn ptr_names_the_container_first() {
    let reply = ask(&query("2.0.7.10.in-addr.arpa.", RecordType::PTR));
    let RData::PTR(target) = &reply.answers[0].data else {
        panic!("{reply:?}")
    };
    assert_eq!(target.0.to_ascii(), "web1.blue.");
    let v6 = Name::from(IpAddr::from(
        "fd00:7::2".parse::<std::net::Ipv6Addr>().unwrap(),
    ));
    let reply = ask(&query(&v6.to_ascii(), RecordType::PTR));
    assert_eq!(reply.answers.len(), 1, "{reply:?}");
    // An overlay address nobody holds: NXDOMAIN, not forwarded.
    let reply = ask(&query("99.0.7.10.in-addr.arpa.", RecordType::PTR));
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    // Another network's address is not answered from this network.
    let reply = ask(&query("2.0.8.10.in-addr.arpa.", RecordType::PTR));
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn unknown_and_other_networks_names_are_nxdomain_with_a_short_soa() {
    for name in [
        "nobody",
        "nobody.blue",
        "a.web1.blue",
        "secret",
        "hidden",
        "secret.red",
        "x.green",
        "web1.red",
    ] {
        let reply = ask(&query(name, RecordType::A));
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}"
        );
        assert!(reply.answers.is_empty());
        assert!(reply.authorities.iter().all(|r| r.ttl == TTL));
    }
    // A name that exists but has no address of the type asked: NODATA.
    let reply = ask(&query("web2", RecordType::AAAA));
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty() && !reply.authorities.is_empty());
    let reply = ask(&query("web2", RecordType::MX));
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
}

#[test]
fn queries_are_scoped_to_the_network_of_their_source() {
    let packet = query("web1", RecordType::A).to_vec().unwrap();
    for outsider in ["10.8.0.2", "192.0.2.1", "fd00:8::1"] {
        let (decision, counters) = ask_raw(&zones(), outsider, &packet, Transport::Udp);
        assert_eq!(
            reply_of(decision).0.metadata.response_code,
            ResponseCode::Refused
        );
        assert_eq!(
            counters
                .snapshot()
                .iter()
                .find(|c| c.0 == "refused")
                .unwrap()
                .1,
            1
        );
    }
    let counters = Counters::default();
    let decision = answer(
        &zones(),
        "red",
        "10.8.0.9".parse().unwrap(),
        &packet,
        Transport::Udp,
        1,
        &counters,
    );
    assert_eq!(
        reply_of(decision).0.metadata.response_code,
        ResponseCode::NXDomain
    );
}

#[test]
fn other_names_are_forwarded_as_received() {
    let packet = query("example.org.", RecordType::A).to_vec().unwrap();
    let (decision, counters) = ask_raw(&zones(), BLUE_CLIENT, &packet, Transport::Udp);
    let Decision::Forward(request) = decision else {
        panic!("{decision:?}")
    };
    assert_eq!(request.raw, packet);
    assert_eq!(request.limit, 512);
    assert_eq!(
        counters
            .forwarded
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let reverse = query("1.2.0.192.in-addr.arpa", RecordType::PTR)
        .to_vec()
        .unwrap();
    assert!(matches!(
        ask_raw(&zones(), BLUE_CLIENT, &reverse, Transport::Udp).0,
        Decision::Forward(_)
    ));
}

/// Twenty addresses behind one alias, 56 bytes of answer each over the question.
fn big_zones() -> Zones {
    let mut blue = NetworkNames::new(
        "blue",
        vec![
            "fd00:7::/64".parse().unwrap(),
            "10.7.0.0/24".parse().unwrap(),
        ],
    );
    for i in 2..42 {
        blue.insert(&Entry {
            name: format!("n{i}"),
            aliases: vec!["many".into()],
            addresses: vec![format!("fd00:7::{i:x}").parse().unwrap()],
        })
        .unwrap();
    }
    let mut zones = Zones::new();
    zones.add(blue);
    zones
}

#[test]
fn answers_over_512_bytes_are_truncated_over_udp_and_whole_over_tcp() {
    let zones = big_zones();
    let plain = query("many", RecordType::AAAA).to_vec().unwrap();
    let (decision, counters) = ask_raw(&zones, BLUE_CLIENT, &plain, Transport::Udp);
    let (reply, len) = reply_of(decision);
    assert!(reply.metadata.truncation && reply.answers.is_empty() && len <= 512);
    assert_eq!(reply.queries.len(), 1);
    assert_eq!(
        counters
            .truncated
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    let (reply, len) = reply_of(ask_raw(&zones, BLUE_CLIENT, &plain, Transport::Tcp).0);
    assert!(!reply.metadata.truncation && len > 512);
    assert_eq!(reply.answers.len(), 40);

    // With EDNS the client's size counts, up to our 1232 bytes.
    let mut with_edns = query("many", RecordType::AAAA);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    with_edns.set_edns(edns);
    let (reply, len) = reply_of(
        ask_raw(
            &zones,
            BLUE_CLIENT,
            &with_edns.to_vec().unwrap(),
            Transport::Udp,
        )
        .0,
    );
    assert!(!reply.metadata.truncation && len > 512 && len <= usize::from(UDP_PAYLOAD));
    assert_eq!(
        reply.edns.as_ref().map(Edns::max_payload),
        Some(UDP_PAYLOAD)
    );
}

#[test]
fn a_hundred_questions_are_formerr() {
    let mut message = query("web1", RecordType::A);
    for i in 0..99 {
        message.add_query(Query::query(
            Name::from_ascii(format!("q{i}")).unwrap(),
            RecordType::A,
        ));
    }
    let (reply, _) = reply_of(
        ask_raw(
            &zones(),
            BLUE_CLIENT,
            &message.to_vec().unwrap(),
            Transport::Udp,
        )
        .0,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    let mut none = query("web1", RecordType::A);
    none.queries.clear();
    let (reply, _) = reply_of(
        ask_raw(
            &zones(),
            BLUE_CLIENT,
            &none.to_vec().unwrap(),
            Transport::Udp,
        )
        .0,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn names_over_255_bytes_are_formerr() {
    // Header with one question, then five 63-byte labels (320 bytes of name).
    let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        packet.push(63);
        packet.extend_from_slice(&[b'a'; 63]);
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    let (decision, counters) = ask_raw(&zones(), BLUE_CLIENT, &packet, Transport::Udp);
    let (reply, _) = reply_of(decision);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(reply.metadata.id, 0x1234);
    assert!(reply.metadata.recursion_desired);
    assert_eq!(
        counters.formerr.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn other_opcodes_versions_classes_and_responses() {
    let mut notify = query("web1", RecordType::A);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(ask(&notify).metadata.response_code, ResponseCode::NotImp);
    let mut v1 = query("web1", RecordType::A);
    let mut edns = Edns::new();
    edns.set_version(1);
    v1.set_edns(edns);
    // BADVERS and BADSIG share the code 16.
    assert_eq!(u16::from(ask(&v1).metadata.response_code), 16);
    let mut chaos = query("version.bind", RecordType::TXT);
    chaos.queries[0].set_query_class(hickory_proto::rr::DNSClass::CH);
    assert_eq!(ask(&chaos).metadata.response_code, ResponseCode::Refused);
    assert_eq!(
        ask(&query("blue", RecordType::AXFR)).metadata.response_code,
        ResponseCode::Refused
    );
    // A response sent to the server, and a runt, get nothing back.
    let mut response = query("web1", RecordType::A).to_vec().unwrap();
    response[2] |= 0x80;
    assert!(matches!(
        ask_raw(&zones(), BLUE_CLIENT, &response, Transport::Udp).0,
        Decision::Drop
    ));
    assert!(matches!(
        ask_raw(&zones(), BLUE_CLIENT, &[1, 2, 3], Transport::Udp).0,
        Decision::Drop
    ));
}

proptest! {
    #[test]
    fn any_bytes_get_a_reply_a_forward_or_a_drop_and_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600)
    ) {
        let (decision, _) = ask_raw(&zones(), BLUE_CLIENT, &bytes, Transport::Udp);
        if let Decision::Reply(reply) = decision {
            prop_assert!(reply.len() <= 512);
            prop_assert_eq!(&reply[..2], &bytes[..2]);
        }
    }

    #[test]
    fn every_prefix_of_a_good_query_is_handled(cut in 0usize..40) {
        let packet = query("web1.blue", RecordType::A).to_vec().unwrap();
        let cut = cut.min(packet.len());
        let _ = ask_raw(&zones(), BLUE_CLIENT, &packet[..cut], Transport::Udp);
    }
}

mod forward;
