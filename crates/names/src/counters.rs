//! What the name service did, counted: read by `vxnet stats` and the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $field:ident,)*) => {
        /// Counters of one engine's name service (all networks together). Relaxed atomics: each
        /// is an independent tally, read for display only.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $field: AtomicU64,)*
        }

        impl Counters {
            /// Every counter with its name, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Queries received (before any check).
    queries,
    /// Answered from the network's names (with addresses, or NODATA).
    answered,
    /// NXDOMAIN for a name in a network's domain or a bare name nobody holds.
    nxdomain,
    /// Sent on to the host's resolvers.
    forwarded,
    /// Replies from the host's resolvers passed back to the client.
    forward_replies,
    /// SERVFAIL because the resolvers timed out, failed, or too many queries were in flight.
    servfail,
    /// Forwarding attempts that timed out (each retry counts).
    forward_timeouts,
    /// Replies from an upstream that matched no query in flight (late, spoofed or garbled).
    upstream_bogus,
    /// FORMERR: a packet that does not parse, or not exactly one question.
    formerr,
    /// REFUSED: from an address outside the network, a class other than IN, zone transfers.
    refused,
    /// NOTIMP: an opcode other than QUERY.
    notimp,
    /// Answers cut to the header and question with TC set (too large for the client's UDP size).
    truncated,
    /// Dropped without reply: shorter than a header, or a response sent to us.
    dropped,
    /// Dropped by the per-source rate limit.
    rate_limited,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
