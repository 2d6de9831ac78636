//! Join tokens, shaped like Docker swarm's: `VXNET-1-<cluster_id>-<secret>-<role>-<endpoints>`.
//!
//! The endpoints part is base64url (no padding) of the comma-separated `HOST:PORT` list (prefixed
//! `https://` for a store reached over TLS, and `auth;` before that when the store has etcd
//! authentication and the cluster's roles: the token's secret is then also its join user's etcd
//! password, see `roles.rs`), so a token alone is enough to find the store. base64url may itself contain `-`, which is why it comes last
//! and the token is split at most six ways. The store keeps only a SHA-256 of each secret.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Error, Result};

const PREFIX: &str = "VXNET";
const VERSION: &str = "1";
const TLS_SCHEME: &str = "https://";
const AUTH_MARK: &str = "auth;";

/// What a token lets its holder become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub cluster_id: String,
    pub secret: String,
    pub role: Role,
    /// `HOST:PORT` entries, without scheme.
    pub endpoints: Vec<String>,
    /// The store is reached over TLS (`https://`).
    pub tls: bool,
    /// The store has authentication on: join by request as the token's join user.
    pub auth: bool,
}

impl Token {
    pub fn new(cluster_id: &str, role: Role, endpoints: &[String], tls: bool) -> Token {
        Token {
            cluster_id: cluster_id.to_owned(),
            secret: super::random_hex(20),
            role,
            endpoints: endpoints.to_vec(),
            tls,
            auth: false,
        }
    }

    /// The same token for a store with authentication on (or not).
    pub fn with_auth(mut self, auth: bool) -> Token {
        self.auth = auth;
        self
    }

    pub fn parse(s: &str) -> Result<Token> {
        let parts: Vec<&str> = s.trim().splitn(6, '-').collect();
        let [prefix, version, cluster_id, secret, role, eps] = parts.as_slice() else {
            return Err(Error::BadToken(
                "expected VXNET-1-<cluster>-<secret>-<role>-<store>".into(),
            ));
        };
        if *prefix != PREFIX || *version != VERSION {
            return Err(Error::BadToken(format!(
                "unknown token format {prefix}-{version}"
            )));
        }
        let hexish = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit());
        if !hexish(cluster_id) || !hexish(secret) {
            return Err(Error::BadToken("cluster id and secret must be hex".into()));
        }
        let role = match *role {
            "M" => Role::Manager,
            "W" => Role::Worker,
            other => return Err(Error::BadToken(format!("unknown role {other:?}"))),
        };
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(eps)
            .map_err(|e| Error::BadToken(format!("store part: {e}")))?;
        let list = String::from_utf8(decoded)
            .map_err(|_| Error::BadToken("store part is not text".into()))?;
        let (list, auth) = match list.strip_prefix(AUTH_MARK) {
            Some(rest) => (rest.to_owned(), true),
            None => (list, false),
        };
        let (list, tls) = match list.strip_prefix(TLS_SCHEME) {
            Some(rest) => (rest.to_owned(), true),
            None => (list, false),
        };
        let endpoints: Vec<String> = list
            .split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err(Error::BadToken("no store endpoints".into()));
        }
        Ok(Token {
            cluster_id: cluster_id.to_string(),
            secret: secret.to_string(),
            role,
            endpoints,
            tls,
            auth,
        })
    }

    /// The hex SHA-256 of the secret, which is all the store ever sees.
    pub fn secret_hash(&self) -> String {
        hash_secret(&self.secret)
    }
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two hashes without an early exit, so timing does not leak how much of a guess matched.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.role {
            Role::Manager => "M",
            Role::Worker => "W",
        };
        let scheme = if self.tls { TLS_SCHEME } else { "" };
        let auth = if self.auth { AUTH_MARK } else { "" };
        let eps = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{auth}{scheme}{}", self.endpoints.join(",")));
        write!(
            f,
            "{PREFIX}-{VERSION}-{}-{}-{role}-{eps}",
            self.cluster_id, self.secret
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let eps = vec!["127.0.0.1:2379".to_string(), "[::1]:2379".to_string()];
        let t = Token::new("00ff", Role::Worker, &eps, false);
        let parsed = Token::parse(&t.to_string()).unwrap();
        assert_eq!(parsed, t);
        let t = Token::new("00ff", Role::Manager, &eps, true);
        let parsed = Token::parse(&t.to_string()).unwrap();
        assert_eq!(parsed, t);
        assert!(parsed.tls);
        assert!(!parsed.auth);
        let t = Token::new("00ff", Role::Worker, &eps, true).with_auth(true);
        let parsed = Token::parse(&t.to_string()).unwrap();
        assert_eq!(parsed, t);
        assert!(parsed.auth && parsed.tls);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Token::parse("hello").is_err());
        assert!(Token::parse("VXNET-2-aa-bb-W-MTI3LjAuMC4xOjE").is_err());
        assert!(Token::parse("VXNET-1-aa-zz-W-MTI3LjAuMC4xOjE").is_err());
        assert!(Token::parse("VXNET-1-aa-bb-X-MTI3LjAuMC4xOjE").is_err());
    }

    #[test]
    fn constant_time_compare() {
        assert!(hashes_equal("abc", "abc"));
        assert!(!hashes_equal("abc", "abd"));
        assert!(!hashes_equal("abc", "ab"));
    }
}
