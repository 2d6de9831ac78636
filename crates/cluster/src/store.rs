//! etcd access: the connection, bounded calls, and the cluster's key prefix. Everything of one
//! cluster lives under `/vxnet/<cluster_id>/`; the records and their keys are in
//! [`records`](crate::records).

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue};
use serde::de::DeserializeOwned;

use super::records::{MemberRecord, Meta, NetworkDef, NodeRecord};
use super::{Error, Result};

/// Every store call is bounded: the balanced gRPC channel otherwise waits forever for an endpoint
/// to come back, and a CLI command or the membership loop must notice an outage instead.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to the cluster's part of the store.
#[derive(Clone)]
pub struct Store {
    client: Client,
    endpoints: Vec<String>,
    cluster_id: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("endpoints", &self.endpoints)
            .field("cluster_id", &self.cluster_id)
            .finish()
    }
}

/// Parses `etcd://H:P[,H:P]` (also a bare `H:P,H:P`) into `HOST:PORT` entries.
pub fn parse_store_url(url: &str) -> Result<Vec<String>> {
    let rest = url
        .strip_prefix("etcd://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let eps: Vec<String> = rest
        .split(',')
        .map(str::trim)
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
    Ok(eps)
}

pub fn prefix(cluster_id: &str) -> String {
    format!("/vxnet/{cluster_id}/")
}

impl Store {
    /// Connects to `endpoints` and checks that the store answers (the client itself connects lazily).
    pub async fn connect(endpoints: &[String], cluster_id: &str) -> Result<Store> {
        let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(OP_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let joined = endpoints.join(",");
        let client = bounded(&joined, Client::connect(urls, Some(opts))).await?;
        let store = Store {
            client,
            endpoints: endpoints.to_vec(),
            cluster_id: cluster_id.to_owned(),
        };
        // A cheap read proves the store is there; errors surface now rather than mid-command.
        store.get_raw(&store.key("meta")).await?;
        Ok(store)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn prefix(&self) -> String {
        prefix(&self.cluster_id)
    }

    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix())
    }

    /// The raw client, for the membership loop's leases and watches.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs a store call under [`OP_TIMEOUT`], mapping both timeouts and transport errors to
    /// [`Error::Unreachable`].
    pub async fn op<T, F>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        bounded(&self.endpoints.join(","), fut).await
    }

    pub async fn get_raw(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut c = self.client();
        let mut resp = self.op(c.get(key, None)).await?;
        Ok(resp.take_kvs().into_iter().next())
    }

    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get_raw(key).await? {
            Some(kv) => decode(&kv).map(Some),
            None => Ok(None),
        }
    }

    /// All keys under `<prefix><sub>`, and the store revision they were read at.
    pub async fn list(&self, sub: &str) -> Result<(Vec<KeyValue>, i64)> {
        let mut c = self.client();
        let mut resp = self
            .op(c.get(self.key(sub), Some(GetOptions::new().with_prefix())))
            .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.take_kvs(), rev))
    }

    pub async fn meta(&self) -> Result<Meta> {
        self.get_json(&self.key("meta"))
            .await?
            .ok_or_else(|| Error::NoCluster(self.cluster_id.clone()))
    }

    pub async fn networks(&self) -> Result<Vec<NetworkDef>> {
        let (kvs, _) = self.list("networks/").await?;
        let mut nets = kvs
            .iter()
            .map(decode)
            .collect::<Result<Vec<NetworkDef>>>()?;
        nets.sort();
        Ok(nets)
    }

    pub async fn members(&self) -> Result<Vec<MemberRecord>> {
        let (kvs, _) = self.list("members/").await?;
        kvs.iter().map(decode).collect()
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let (kvs, _) = self.list("nodes/").await?;
        kvs.iter().map(decode).collect()
    }
}

async fn bounded<T, F>(endpoints: &str, fut: F) -> Result<T>
where
    F: Future<Output = Result<T, etcd_client::Error>>,
{
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(endpoints, e)),
        Err(_) => Err(Error::Unreachable {
            endpoints: endpoints.to_owned(),
            reason: format!("no answer within {}s", OP_TIMEOUT.as_secs()),
        }),
    }
}

/// Transport-level failures mean "store unreachable"; anything else is a real etcd answer.
fn classify(endpoints: &str, e: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) => Error::Unreachable {
            endpoints: endpoints.to_owned(),
            reason: e.to_string(),
        },
        E::GRpcStatus(ref s)
            if matches!(
                s.code(),
                tonic_code::UNAVAILABLE | tonic_code::DEADLINE_EXCEEDED | tonic_code::UNKNOWN
            ) =>
        {
            Error::Unreachable {
                endpoints: endpoints.to_owned(),
                reason: s.message().to_owned(),
            }
        }
        other => Error::Etcd(other),
    }
}

mod tonic_code {
    pub const UNAVAILABLE: tonic::Code = tonic::Code::Unavailable;
    pub const DEADLINE_EXCEEDED: tonic::Code = tonic::Code::DeadlineExceeded;
    pub const UNKNOWN: tonic::Code = tonic::Code::Unknown;
}

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(kv.value()).map_err(|source| Error::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            parse_store_url("etcd://127.0.0.1:2379,h:1").unwrap(),
            vec!["127.0.0.1:2379", "h:1"]
        );
        assert!(parse_store_url("etcd://").is_err());
        assert!(parse_store_url("etcd://host").is_err());
        assert!(parse_store_url("etcd://host:99999").is_err());
    }
}
