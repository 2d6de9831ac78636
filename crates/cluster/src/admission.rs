//! Joining an authenticated store (see [`crate::roles`]): the node asks, a manager admits.
//!
//! The joining node logs in as its token's join user (the password is the token's secret, so a
//! rotated token is refused by etcd itself), checks the secret against `meta`, and writes a
//! request — its node id, the secret, a password it chose — under the join prefix, which join
//! users may write but not read. A manager engine running with the admin identity
//! ([`Admitter`]) checks the secret against the role asked for, writes `nodes/<id>`, creates
//! the node's own etcd user with the chosen password and deletes the request. The node waits until
//! it can log in as that user and read its node record: from then on it uses only those
//! credentials, which the token never held.
//!
//! The admitter also deletes the users of nodes whose record is gone (`cluster leave`, `cluster
//! rm`), so a removed node's credentials stop working.

use std::net::IpAddr;
use std::time::Duration;

use etcd_client::{GetOptions, KeyValue};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::access::{Credentials, StoreAccess};
use super::records::{validate_node_id, NodeRecord};
use super::roles;
use super::store::{Retry, Store};
use super::token::{hash_secret, hashes_equal, Role, Token};
use super::{node, Error, Result};

/// How long `cluster join` waits for a manager to admit it.
pub(crate) const ADMIT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(300);
/// Removed nodes' users are looked for every this many polls of the admitter.
const GC_EVERY: u32 = 10;

/// What a joining node writes under the join prefix (never readable by other join users).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    pub node_id: String,
    pub role: Role,
    /// The token's secret, proving the role asked for.
    pub secret: String,
    /// The password of the node's own etcd user, chosen by the node.
    pub password: String,
    #[serde(default)]
    pub local: Option<IpAddr>,
}

/// Asks to join with `token`, reaching the store as `base` says (endpoints, TLS) and logging in
/// as the token's join user; waits until a manager admitted this node and returns the node's own
/// access and store.
pub(crate) async fn request(
    base: &StoreAccess,
    token: &Token,
    node_id: &str,
    local: Option<IpAddr>,
) -> Result<(Store, StoreAccess)> {
    let cluster = &token.cluster_id;
    let refused = || {
        Error::TokenRefused(format!(
            "wrong or revoked {} token for cluster {cluster}",
            token.role
        ))
    };
    let joiner = StoreAccess {
        credentials: Some(Credentials {
            user: roles::join_user(cluster, token.role),
            password: token.secret.clone(),
        }),
        ..base.clone()
    };
    let store = match Store::connect_with(&joiner, cluster).await {
        Err(Error::StoreRefused(_)) => return Err(refused()),
        other => other?,
    };
    node::verify_token(&store, token).await?;
    let req = JoinRequest {
        node_id: node_id.to_owned(),
        role: token.role,
        secret: token.secret.clone(),
        password: super::random_hex(24),
        local,
    };
    let key = format!("{}{node_id}", roles::join_prefix(cluster));
    store.put(&key, serde_json::to_vec(&req)?, None).await?;
    let access = StoreAccess {
        credentials: Some(Credentials {
            user: roles::node_user(cluster, node_id),
            password: req.password,
        }),
        ..base.clone()
    };
    let record = store.key(&format!("nodes/{node_id}"));
    let deadline = tokio::time::Instant::now() + ADMIT_TIMEOUT;
    loop {
        // Refused until the user exists (or has the new password, for a node joining again).
        match Store::connect_with(&access, cluster).await {
            Ok(own) => {
                if own.get_raw(&record).await?.is_some() {
                    return Ok((own, access));
                }
            }
            // Refused: not admitted yet. Denied: roles still being granted by an admitter that
            // sets passwords first; either way, wait.
            Err(Error::StoreRefused(_) | Error::StoreDenied(_)) => {}
            Err(e) => return Err(e),
        }
        if tokio::time::Instant::now() >= deadline {
            // Withdrawn, so a manager that comes up later does not admit a node that gave up.
            let _ = store
                .call(Retry::Idempotent, |mut c| {
                    let key = key.clone();
                    async move { c.delete(key, None).await }
                })
                .await;
            return Err(Error::NotAdmitted(
                node_id.to_owned(),
                cluster.clone(),
                ADMIT_TIMEOUT.as_secs(),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Admits join requests and removes the users of removed nodes, while it lives. Runs on a
/// manager whose store access is the admin identity; aborted on drop.
#[derive(Debug)]
pub(crate) struct Admitter {
    task: JoinHandle<()>,
}

impl Admitter {
    /// Starts admitting if `store` is authenticated (meta says so) and reached as its admin.
    pub(crate) async fn start_if_admin(store: &Store) -> Option<Admitter> {
        let meta = store.meta().await.ok()?;
        if !meta.auth || !roles::is_admin(store).await {
            return None;
        }
        let store = store.clone();
        tracing::info!(
            "admitting nodes that join with a token (this node holds the store's admin identity)"
        );
        Some(Admitter {
            task: tokio::spawn(async move {
                let mut polls = 0u32;
                let mut upgraded = false;
                loop {
                    if !upgraded {
                        match roles::upgrade(&store).await {
                            Ok(()) => upgraded = true,
                            Err(e) => {
                                tracing::warn!(error = %e, "could not move node roles to node-scoped records; retrying")
                            }
                        }
                    }
                    if let Err(e) = admit_pending(&store).await {
                        tracing::debug!(error = %e, "admitting join requests failed; retrying");
                    }
                    if polls.is_multiple_of(GC_EVERY) {
                        if let Err(e) = remove_stale_users(&store).await {
                            tracing::debug!(error = %e, "removing users of removed nodes failed");
                        }
                    }
                    polls = polls.wrapping_add(1);
                    tokio::time::sleep(POLL).await;
                }
            }),
        })
    }
}

impl Drop for Admitter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pending(store: &Store) -> Result<Vec<KeyValue>> {
    let prefix = roles::join_prefix(store.cluster_id());
    let mut resp = store
        .call(Retry::Idempotent, |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    Ok(resp.take_kvs())
}

/// Admits every valid pending request; an invalid one is dropped with one warning. Returns how
/// many nodes were admitted.
pub(crate) async fn admit_pending(store: &Store) -> Result<usize> {
    let requests = pending(store).await?;
    if requests.is_empty() {
        return Ok(0);
    }
    let meta = store.meta().await?;
    let prefix = roles::join_prefix(store.cluster_id());
    let mut admitted = 0;
    for kv in requests {
        let key = kv.key_str().unwrap_or_default().to_owned();
        let id = key.strip_prefix(&prefix).unwrap_or_default();
        let checked = serde_json::from_slice::<JoinRequest>(kv.value())
            .map_err(|e| e.to_string())
            .and_then(|req| {
                validate_node_id(id).map_err(|e| e.to_string())?;
                if req.node_id != id {
                    return Err(format!("names node {:?}", req.node_id));
                }
                let expected = match req.role {
                    Role::Manager => &meta.manager_secret_sha256,
                    Role::Worker => &meta.worker_secret_sha256,
                };
                if !hashes_equal(&hash_secret(&req.secret), expected) {
                    return Err(format!("wrong or revoked {} secret", req.role));
                }
                Ok(req)
            });
        match checked {
            Ok(req) => {
                admit(store, &req).await?;
                tracing::info!(node = %req.node_id, role = %req.role, "admitted a node");
                admitted += 1;
            }
            Err(why) => tracing::warn!(key, why, "refusing a join request"),
        }
        store
            .call(Retry::Idempotent, |mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await?;
    }
    Ok(admitted)
}

/// The node record first, then the user: a user never exists without its record, so
/// [`remove_stale_users`] on another manager cannot take a just-admitted node's user away.
async fn admit(store: &Store, req: &JoinRequest) -> Result<()> {
    let rec = NodeRecord {
        node_id: req.node_id.clone(),
        role: req.role,
        local: req.local,
        joined: super::now_secs(),
    };
    store
        .put(
            &store.key(&format!("nodes/{}", req.node_id)),
            serde_json::to_vec(&rec)?,
            None,
        )
        .await?;
    roles::add_node(store, &req.node_id, req.role, &req.password).await
}

/// Deletes the etcd users of nodes that no longer have a node record.
pub(crate) async fn remove_stale_users(store: &Store) -> Result<()> {
    let users = roles::node_users(store).await?;
    if users.is_empty() {
        return Ok(());
    }
    let nodes: Vec<String> = store
        .list("nodes/")
        .await?
        .0
        .iter()
        .filter_map(|kv| Some(kv.key_str().ok()?.rsplit('/').next()?.to_owned()))
        .collect();
    for id in users.iter().filter(|u| !nodes.contains(u)) {
        roles::remove_node(store, id).await?;
        tracing::info!(node = %id, "removed the store user of a node that left");
    }
    Ok(())
}
