//! How a node reaches the store: endpoints, TLS (a CA to verify etcd, optionally a client
//! certificate) and etcd credentials. Given once (`cluster init`, `cluster join`, the first
//! `vxnet run --token`) and kept in the state dir with mode 0600, so later commands and restarts
//! need none of it.

use std::fmt;
use std::path::{Path, PathBuf};

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use super::{Error, Result};

/// TLS material, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Tls {
    /// The CA that signed etcd's server certificate. Required: no system roots are built in, and
    /// an etcd cluster has its own CA anyway.
    pub ca: Vec<u8>,
    /// Client certificate and key, for an etcd started with `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// Endpoints (`HOST:PORT`) and how to talk to them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreAccess {
    pub endpoints: Vec<String>,
    pub tls: Option<Tls>,
    pub credentials: Option<Credentials>,
}

// Keys and passwords never reach a log line.
impl fmt::Debug for StoreAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreAccess")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls.is_some())
            .field(
                "client_cert",
                &self.tls.as_ref().is_some_and(|t| t.identity.is_some()),
            )
            .field("user", &self.credentials.as_ref().map(|c| &c.user))
            .finish()
    }
}

/// The `--store-*` options as given on the command line (paths, not contents yet).
#[derive(Debug, Clone, Default)]
pub struct AccessOptions {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// `VXNET_STORE_PASSWORD`, when set.
    pub password_env: Option<String>,
}

impl AccessOptions {
    /// Whether any option was given (they then replace what the state dir holds).
    pub fn given(&self) -> bool {
        self.ca.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.user.is_some()
            || self.password_file.is_some()
    }

    /// Reads the files and checks the combination for `endpoints`, over TLS when `tls` (an
    /// `https://` store).
    pub fn load(&self, endpoints: Vec<String>, tls: bool) -> Result<StoreAccess> {
        let usage = |m: &str| Err(Error::Invalid(m.to_owned()));
        let tls = match (tls, &self.ca) {
            (true, Some(ca)) => {
                let identity = match (&self.cert, &self.key) {
                    (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                    (None, None) => None,
                    _ => return usage("--store-cert and --store-key go together"),
                };
                Some(Tls {
                    ca: read(ca)?,
                    identity,
                })
            }
            (true, None) => {
                return usage(
                    "an https:// store needs --store-ca FILE (the CA of etcd's certificate)",
                )
            }
            (false, _) if self.ca.is_some() || self.cert.is_some() || self.key.is_some() => {
                return usage("--store-ca/--store-cert/--store-key need an https:// store")
            }
            (false, _) => None,
        };
        let credentials = match &self.user {
            Some(user) => {
                let password = match (&self.password_file, &self.password_env) {
                    (Some(f), _) => String::from_utf8(read(f)?)
                        .map_err(|_| Error::Invalid(format!("{}: not text", f.display())))?
                        .trim_end_matches(['\r', '\n'])
                        .to_owned(),
                    (None, Some(p)) => p.clone(),
                    (None, None) => return usage(
                        "--store-user needs a password: --store-password-file FILE or VXNET_STORE_PASSWORD",
                    ),
                };
                Some(Credentials {
                    user: user.clone(),
                    password,
                })
            }
            None if self.password_file.is_some() => {
                return usage("--store-password-file needs --store-user")
            }
            None => None,
        };
        Ok(StoreAccess {
            endpoints,
            tls,
            credentials,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Parses `etcd://H:P[,H:P]`, `http://…` (plain) or `https://…` (TLS), also a bare `H:P,H:P`, into
/// `HOST:PORT` entries and whether TLS is asked for.
pub fn parse_store(url: &str) -> Result<(Vec<String>, bool)> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("https://") {
        (r, true)
    } else {
        let r = url
            .strip_prefix("etcd://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or(url);
        (r, false)
    };
    let eps: Vec<String> = rest
        .split(',')
        .map(str::trim)
        // `https://a:1,https://b:2` as etcdctl writes it.
        .map(|e| e.strip_prefix("https://").unwrap_or(e))
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    let valid = |e: &String| match e.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && port.parse::<u16>().is_ok() && !host.contains('/')
        }
        None => false,
    };
    if eps.is_empty() || !eps.iter().all(valid) {
        return Err(Error::BadEndpoint(url.to_owned()));
    }
    Ok((eps, tls))
}

impl StoreAccess {
    /// Plain http, no credentials.
    pub fn plain(endpoints: &[String]) -> StoreAccess {
        StoreAccess {
            endpoints: endpoints.to_vec(),
            ..StoreAccess::default()
        }
    }

    /// Neither TLS nor a password: anyone who can reach etcd can change the cluster.
    pub fn is_open(&self) -> bool {
        self.tls.is_none() && self.credentials.is_none()
    }

    /// The store as the CLI names it: `https://H:P,H:P` or `etcd://H:P,H:P`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "etcd" };
        format!("{scheme}://{}", self.endpoints.join(","))
    }

    /// The one warning for an open store, for `vxnet run` and `cluster init`/`join`.
    pub fn warn_if_open(&self) {
        if self.is_open() {
            tracing::warn!(
                store = %self.url(),
                "the store is plain http without authentication: anyone who can reach etcd can add members, redirect traffic and change networks; use https:// with --store-ca (and --store-cert/--store-key) and --store-user"
            );
        }
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect()
    }

    /// etcd-client options for this access on top of `base`.
    pub(crate) fn options(&self, mut base: ConnectOptions) -> ConnectOptions {
        if let Some(tls) = &self.tls {
            let mut opts = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca));
            if let Some((cert, key)) = &tls.identity {
                opts = opts.identity(Identity::from_pem(cert, key));
            }
            base = base.with_tls(opts);
        }
        if let Some(c) = &self.credentials {
            // etcd's auth tokens expire (5 min by default); an engine runs for months.
            base = base
                .with_user(c.user.clone(), c.password.clone())
                .with_auto_token_refresh(true);
        }
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        let (eps, tls) = parse_store("etcd://127.0.0.1:2379,h:1").unwrap();
        assert_eq!(eps, vec!["127.0.0.1:2379", "h:1"]);
        assert!(!tls);
        let (eps, tls) = parse_store("https://a:1,https://b:2").unwrap();
        assert_eq!(eps, vec!["a:1", "b:2"]);
        assert!(tls);
        assert!(parse_store("etcd://").is_err());
        assert!(parse_store("etcd://host").is_err());
        assert!(parse_store("etcd://host:99999").is_err());
    }

    #[test]
    fn option_combinations() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "secret\n").unwrap();
        let eps = vec!["h:1".to_string()];
        let o = |ca: bool, user: bool, pw: bool| AccessOptions {
            ca: ca.then(|| f.clone()),
            user: user.then(|| "u".to_string()),
            password_file: pw.then(|| f.clone()),
            ..AccessOptions::default()
        };
        assert!(o(false, false, false).load(eps.clone(), true).is_err());
        assert!(o(true, false, false).load(eps.clone(), false).is_err());
        assert!(o(false, true, false).load(eps.clone(), false).is_err());
        assert!(o(false, false, true).load(eps.clone(), false).is_err());
        let a = o(true, true, true).load(eps.clone(), true).unwrap();
        assert_eq!(a.credentials.as_ref().unwrap().password, "secret");
        assert_eq!(a.url(), "https://h:1");
        assert!(!a.is_open());
        assert!(!format!("{a:?}").contains("secret"));
        assert!(StoreAccess::plain(&eps).is_open());
    }
}
