//! What a failed etcd call means: etcd's answer (a refusal, compaction, a stale token), a request
//! that never left, or an outcome nobody knows; and the error the caller gets for it.

use crate::Error;

/// What a failed call tells about the store.
pub(super) enum Class {
    /// etcd answered (a refusal, a missing key, a permission error): not the endpoint's fault.
    Answer,
    /// The connection could not be made: the request never left, another endpoint may serve it.
    NotSent,
    /// The endpoint failed mid-call (reset, timeout, no leader): the outcome is unknown.
    Unknown,
}

pub(super) fn classify(e: &etcd_client::Error) -> Class {
    use etcd_client::Error as E;
    if never_sent(e) {
        return Class::NotSent;
    }
    match e {
        E::TransportError(_) | E::IoError(_) => Class::Unknown,
        E::GRpcStatus(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    // A connection closed under the call, e.g. a TLS handshake etcd refused.
                    | tonic::Code::Cancelled
            ) =>
        {
            Class::Unknown
        }
        _ => Class::Answer,
    }
}

/// etcd's answer to a read at a revision it has compacted away.
pub(super) fn compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::OutOfRange && s.message().contains("compacted"))
}

/// etcd's answer to a token issued before its auth store last changed.
pub(super) fn stale_token(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("revision of auth store is old"))
}

/// etcd's answer as an error; refused credentials and permissions get their own, since they
/// are the operator's to fix.
pub(super) fn answer(e: etcd_client::Error) -> Error {
    if let etcd_client::Error::GRpcStatus(s) = &e {
        if s.code() == tonic::Code::PermissionDenied {
            return Error::StoreDenied(s.message().to_owned());
        }
        let auth = match s.code() {
            tonic::Code::Unauthenticated => true,
            // "authentication failed", "user name is empty", "invalid auth token".
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
                let m = s.message();
                m.contains("auth") || m.contains("user name")
            }
            _ => false,
        };
        if auth {
            return Error::StoreRefused(s.message().to_owned());
        }
    }
    Error::Etcd(e)
}

/// The error with its sources (tonic's "transport error" alone does not say a certificate was
/// refused), each once.
pub(super) fn chain(e: &etcd_client::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    parts.join(": ")
}

/// True when the error chain holds a failed TCP connect (refused, unreachable, timed out while
/// connecting): the request was never written to any socket.
fn never_sent(e: &etcd_client::Error) -> bool {
    use std::io::ErrorKind as K;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable
            ) {
                return true;
            }
        }
        // hyper-util's connector error; its io::Error source is not always exposed.
        if err.to_string().starts_with("tcp connect error") {
            return true;
        }
        source = err.source();
    }
    false
}
