//! The forwarder and the rate limit: upstreams that never answer, spoofed replies, floods.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use super::{ask_raw, query, zones, BLUE_CLIENT};
use crate::*;

fn forward_request(name: &str) -> ForwardRequest {
    let mut message = query(name, RecordType::A);
    message.metadata.id = 0xabcd;
    let raw = message.to_vec().unwrap();
    match ask_raw(&zones(), BLUE_CLIENT, &raw, Transport::Udp).0 {
        Decision::Forward(request) => *request,
        other => panic!("{other:?}"),
    }
}

fn upstreams() -> Vec<SocketAddr> {
    vec![
        "192.0.2.53:53".parse().unwrap(),
        "192.0.2.54:53".parse().unwrap(),
    ]
}

fn forwarder(max_inflight: usize) -> Forwarder<u32> {
    Forwarder::new(ForwardConfig {
        upstreams: upstreams(),
        max_inflight,
        timeout: Duration::from_secs(2),
        attempts: 2,
    })
}

#[test]
fn a_forwarder_that_never_answers_ends_in_servfail_after_each_upstream() {
    let counters = Counters::default();
    let mut forwarder = forwarder(4);
    let now = Instant::now();
    let Step::Send(first) = forwarder.start(1, forward_request("example.org"), now, 77, &counters)
    else {
        panic!()
    };
    assert_eq!(first.id, 77);
    assert_eq!(first.upstream, upstreams()[0]);
    assert_eq!(&first.bytes[..2], &77u16.to_be_bytes());
    let later = first.deadline;
    let Some(Step::Send(second)) = forwarder.timeout(77, later, &counters) else {
        panic!()
    };
    assert_eq!(second.upstream, upstreams()[1]);
    let Some(Step::Reply(client, bytes)) = forwarder.timeout(77, second.deadline, &counters) else {
        panic!()
    };
    assert_eq!(client, 1);
    let reply = Message::from_vec(&bytes).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(reply.metadata.id, 0xabcd);
    assert_eq!(forwarder.inflight(), 0);
    assert!(forwarder.timeout(77, second.deadline, &counters).is_none());
    assert_eq!(
        counters
            .forward_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn replies_are_matched_by_id_upstream_and_question() {
    let counters = Counters::default();
    let mut forwarder = forwarder(4);
    let Step::Send(sent) = forwarder.start(
        9,
        forward_request("example.org"),
        Instant::now(),
        5,
        &counters,
    ) else {
        panic!()
    };
    let mut good = Message::from_vec(&sent.bytes).unwrap();
    good.metadata.message_type = hickory_proto::op::MessageType::Response;
    let good = good.to_vec().unwrap();
    let mut other_question = query("evil.example", RecordType::A);
    other_question.metadata.id = 5;
    other_question.metadata.message_type = hickory_proto::op::MessageType::Response;
    let stranger: SocketAddr = "198.51.100.1:53".parse().unwrap();
    assert!(forwarder.reply(5, stranger, &good, &counters).is_none());
    assert!(forwarder
        .reply(
            5,
            sent.upstream,
            &other_question.to_vec().unwrap(),
            &counters
        )
        .is_none());
    assert!(forwarder
        .reply(6, sent.upstream, &good, &counters)
        .is_none());
    assert!(
        forwarder
            .reply(5, sent.upstream, &sent.bytes, &counters)
            .is_none(),
        "a query is no reply"
    );
    let (client, bytes) = forwarder.reply(5, sent.upstream, &good, &counters).unwrap();
    assert_eq!(client, 9);
    assert_eq!(&bytes[..2], &0xabcdu16.to_be_bytes());
    assert_eq!(
        counters
            .upstream_bogus
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
}

#[test]
fn the_inflight_table_is_bounded() {
    let counters = Counters::default();
    let mut forwarder = forwarder(2);
    let now = Instant::now();
    for client in 0..2 {
        assert!(matches!(
            forwarder.start(client, forward_request("a.example"), now, 1, &counters),
            Step::Send(_)
        ));
    }
    let Step::Reply(3, bytes) = forwarder.start(3, forward_request("a.example"), now, 1, &counters)
    else {
        panic!()
    };
    assert_eq!(
        Message::from_vec(&bytes).unwrap().metadata.response_code,
        ResponseCode::ServFail
    );
    let mut none = Forwarder::new(ForwardConfig {
        upstreams: vec![],
        ..forwarder.config().clone()
    });
    assert!(matches!(
        none.start(4, forward_request("a.example"), now, 1, &counters),
        Step::Reply(4, _)
    ));
}

#[test]
fn resolv_conf_gives_upstreams_and_bounded_timeouts() {
    let config = ForwardConfig::from_resolv_conf(
        "# comment\nsearch example\nnameserver 192.0.2.1\nnameserver fe80::1%eth0\nnameserver 2001:db8::1\noptions timeout:30 attempts:9 rotate\nnameserver bogus\n",
    );
    assert_eq!(
        config.upstreams,
        vec![
            "192.0.2.1:53".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(config.timeout, Duration::from_secs(3));
    assert_eq!(config.attempts, 5);
    assert!(ForwardConfig::from_resolv_conf("").upstreams.is_empty());
}

#[test]
fn a_flood_from_one_source_is_limited_and_others_still_served() {
    let counters = Counters::default();
    let start = Instant::now();
    let mut limiter = RateLimiter::new(100, 20, 2, start);
    let flooder: IpAddr = "10.7.0.66".parse().unwrap();
    let served = (0..1000)
        .filter(|_| limiter.allow(flooder, start, &counters))
        .count();
    assert_eq!(served, 20);
    assert_eq!(
        counters
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed),
        980
    );
    assert!(limiter.allow("10.7.0.2".parse().unwrap(), start, &counters));
    // A tenth of a second later the flooder has ten more.
    let later = start + Duration::from_millis(100);
    let served = (0..100)
        .filter(|_| limiter.allow(flooder, later, &counters))
        .count();
    assert_eq!(served, 10);
    // Spoofed sources beyond the table share one bucket; the table stays at its bound.
    for i in 0..1000u32 {
        let spoofed = IpAddr::from(std::net::Ipv4Addr::from(0x0a09_0000 + i));
        limiter.allow(spoofed, later, &counters);
    }
    assert!(limiter.sources() <= 2);
}
