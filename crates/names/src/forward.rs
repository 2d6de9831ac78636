//! Forwarding to the host's resolvers, as a state machine the I/O loop drives.
//!
//! Every query in flight gets its own random ID (the client's is restored on the way back), is
//! sent to one upstream at a time, moves to the next upstream when its deadline passes, and ends
//! in SERVFAIL when every attempt has timed out. The table is bounded: past `max_inflight` a
//! query is answered SERVFAIL at once rather than queued, so a flood cannot grow memory.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};

use crate::answer::{same_question, servfail, truncated, ForwardRequest};
use crate::counters::Counters;

/// Limits of the forwarder.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The host's resolvers, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// Queries in flight at once (all clients together).
    pub max_inflight: usize,
    /// How long one attempt waits for its upstream.
    pub timeout: Duration,
    /// Attempts per query (each goes to the next upstream, wrapping around).
    pub attempts: usize,
}

impl ForwardConfig {
    /// The resolvers of a `resolv.conf` text with glibc's defaults (5 s timeout, 2 attempts,
    /// or its `options timeout:N attempts:N`), capped at 3 s per attempt: the client's own
    /// resolver is waiting behind us with the same kind of timeout.
    pub fn from_resolv_conf(text: &str) -> Self {
        let mut upstreams = Vec::new();
        let mut timeout = 5;
        let mut attempts = 2;
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // A link-local IPv6 resolver carries its interface (`fe80::1%eth0`), which
                    // this engine's sockets cannot follow: such a line is skipped.
                    if let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) {
                        upstreams.push(SocketAddr::new(ip, 53));
                    }
                }
                Some("options") => {
                    for option in words {
                        let number = |prefix: &str| option.strip_prefix(prefix)?.parse().ok();
                        if let Some(n) = number("timeout:") {
                            timeout = n;
                        }
                        if let Some(n) = number("attempts:") {
                            attempts = n;
                        }
                    }
                }
                _ => {}
            }
        }
        ForwardConfig {
            upstreams,
            max_inflight: 256,
            timeout: Duration::from_secs(timeout.clamp(1, 3)),
            attempts: attempts.clamp(1, 5) as usize,
        }
    }
}

/// A query to send to an upstream resolver now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The forwarder's ID of the query (its wire ID).
    pub id: u16,
    /// Where to send it.
    pub upstream: SocketAddr,
    /// The query with the forwarder's ID.
    pub bytes: Vec<u8>,
    /// When to call [`Forwarder::timeout`] if no reply came.
    pub deadline: Instant,
}

/// What the forwarder wants done next for one query.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<C> {
    /// Send a query (the first attempt or a retry).
    Send(Send),
    /// Reply to the client (an upstream's answer, or SERVFAIL).
    Reply(C, Vec<u8>),
}

struct Pending<C> {
    client: C,
    request: ForwardRequest,
    attempt: usize,
}

/// Queries in flight to the host's resolvers, for clients identified by `C` (the I/O loop's
/// handle: a UDP source, a TCP connection).
pub struct Forwarder<C> {
    config: ForwardConfig,
    pending: HashMap<u16, Pending<C>>,
}

impl<C> Forwarder<C> {
    /// No query in flight.
    pub fn new(config: ForwardConfig) -> Self {
        Forwarder {
            config,
            pending: HashMap::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ForwardConfig {
        &self.config
    }

    /// Queries in flight.
    pub fn inflight(&self) -> usize {
        self.pending.len()
    }

    /// Starts forwarding `request` for `client`. `random` picks the wire ID (give it fresh
    /// randomness: the ID is what keeps an off-path attacker from answering for the upstream).
    pub fn start(
        &mut self,
        client: C,
        request: ForwardRequest,
        now: Instant,
        random: u16,
        counters: &Counters,
    ) -> Step<C> {
        if self.config.upstreams.is_empty() || self.pending.len() >= self.config.max_inflight {
            Counters::bump(&counters.servfail);
            return Step::Reply(client, servfail(&request.request));
        }
        // Probe from the random start for a free ID; the table holds far fewer than 65536.
        let mut id = random;
        while self.pending.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.pending.insert(
            id,
            Pending {
                client,
                request,
                attempt: 0,
            },
        );
        Step::Send(self.send(id, now))
    }

    fn send(&self, id: u16, now: Instant) -> Send {
        let pending = &self.pending[&id];
        let upstreams = &self.config.upstreams;
        let mut bytes = pending.request.raw.clone();
        bytes[..2].copy_from_slice(&id.to_be_bytes());
        Send {
            id,
            upstream: upstreams[pending.attempt % upstreams.len()],
            bytes,
            deadline: now + self.config.timeout,
        }
    }

    /// A datagram or TCP message from `from` for query `id`. Returns the client's reply, or
    /// `None` (counted) when it answers no query in flight: an unknown ID, another upstream than
    /// the one asked, not a response, or another question.
    pub fn reply(
        &mut self,
        id: u16,
        from: SocketAddr,
        bytes: &[u8],
        counters: &Counters,
    ) -> Option<(C, Vec<u8>)> {
        let matches = self.pending.get(&id).is_some_and(|pending| {
            let upstreams = &self.config.upstreams;
            let asked = upstreams[pending.attempt % upstreams.len()];
            asked == from
                && Message::from_vec(bytes).is_ok_and(|reply| {
                    reply.metadata.id == id
                        && reply.metadata.message_type == MessageType::Response
                        && reply.queries.len() == 1
                        && pending
                            .request
                            .request
                            .queries
                            .first()
                            .is_some_and(|q| same_question(q, &reply.queries[0]))
                })
        });
        if !matches {
            Counters::bump(&counters.upstream_bogus);
            return None;
        }
        let pending = self.pending.remove(&id)?;
        Counters::bump(&counters.forward_replies);
        if bytes.len() > pending.request.limit {
            // The upstream sent more than the client can take over its transport.
            Counters::bump(&counters.truncated);
            return Some((
                pending.client,
                truncated(&pending.request.request, ResponseCode::NoError),
            ));
        }
        let mut reply = bytes.to_vec();
        reply[..2].copy_from_slice(&pending.request.request.metadata.id.to_be_bytes());
        Some((pending.client, reply))
    }

    /// Query `id`'s deadline passed without a reply: the next attempt, or SERVFAIL once every
    /// attempt has timed out. `None` when the query already ended.
    pub fn timeout(&mut self, id: u16, now: Instant, counters: &Counters) -> Option<Step<C>> {
        let pending = self.pending.get_mut(&id)?;
        Counters::bump(&counters.forward_timeouts);
        pending.attempt += 1;
        if pending.attempt < self.config.attempts {
            return Some(Step::Send(self.send(id, now)));
        }
        let pending = self.pending.remove(&id)?;
        Counters::bump(&counters.servfail);
        Some(Step::Reply(
            pending.client,
            servfail(&pending.request.request),
        ))
    }

    /// Ends query `id` as SERVFAIL at once (its socket failed).
    pub fn fail(&mut self, id: u16, counters: &Counters) -> Option<(C, Vec<u8>)> {
        let pending = self.pending.remove(&id)?;
        Counters::bump(&counters.servfail);
        Some((pending.client, servfail(&pending.request.request)))
    }
}
