//! Node lifecycle: creating a cluster, joining it with a token, rotating tokens, resuming from the
//! state dir after a restart, and the status report.

use std::net::IpAddr;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::access::{AccessOptions, Credentials, StoreAccess};
use super::records::{Meta, NodeRecord};
use super::state::{NodeState, StateDir};
use super::store::{Retry, Store};
use super::token::{hashes_equal, Role, Token};
use super::view::ClusterView;
use super::{admission, roles, Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitOutcome {
    pub cluster_id: String,
    pub node_id: String,
    pub manager_token: String,
    pub worker_token: String,
}

/// Creates a cluster in a plain-http store and makes this node its first manager.
pub async fn init(
    dir: &StateDir,
    endpoints: &[String],
    cluster_id: Option<&str>,
    local: Option<IpAddr>,
) -> Result<InitOutcome> {
    init_with(dir, &StoreAccess::plain(endpoints), cluster_id, local).await
}

/// Creates a cluster in the store `access` reaches and makes this node its first manager; the
/// access is kept in `dir`.
pub async fn init_with(
    dir: &StateDir,
    access: &StoreAccess,
    cluster_id: Option<&str>,
    local: Option<IpAddr>,
) -> Result<InitOutcome> {
    let endpoints = &access.endpoints;
    let tls = access.tls.is_some();
    if let Some(st) = dir.load()? {
        return Err(Error::AlreadyJoined(dir.path().to_owned(), st.cluster_id));
    }
    let cluster_id = match cluster_id {
        Some(c) if !c.is_empty() && c.bytes().all(|b| b.is_ascii_hexdigit()) => {
            c.to_ascii_lowercase()
        }
        Some(c) => return Err(Error::Invalid(format!("cluster id {c:?} must be hex"))),
        None => super::random_hex(8),
    };
    let store = Store::connect_with(access, &cluster_id).await?;
    // Given etcd's admin identity, the cluster gets its own roles and users (see `roles`).
    let identity =
        access.credentials.is_some() || access.tls.as_ref().is_some_and(|t| t.identity.is_some());
    let admin = identity && roles::is_admin(&store).await;
    let mut manager = Token::new(&cluster_id, Role::Manager, endpoints, tls).with_auth(admin);
    let mut worker = Token::new(&cluster_id, Role::Worker, endpoints, tls).with_auth(admin);
    let mut meta = Meta {
        cluster_id: cluster_id.clone(),
        created: super::now_secs(),
        manager_secret_sha256: manager.secret_hash(),
        worker_secret_sha256: worker.secret_hash(),
        auth: admin,
    };
    let meta_key = store.key("meta");
    let txn = Txn::new()
        .when([Compare::create_revision(
            meta_key.clone(),
            CompareOp::Equal,
            0,
        )])
        .and_then([TxnOp::put(
            meta_key.clone(),
            serde_json::to_vec(&meta)?,
            None,
        )]);
    if !store.txn(Retry::IfNotSent, txn).await?.succeeded() {
        return Err(Error::ClusterExists(cluster_id));
    }
    if admin {
        roles::provision(&store, &manager.secret, &worker.secret).await?;
        if !auth_enforced(access, &worker).await? {
            // A client certificate alone passes as admin while authentication is off: roles
            // would protect nothing, and join users could not log in.
            roles::unprovision(&store).await;
            meta.auth = false;
            store
                .put(&meta_key, serde_json::to_vec(&meta)?, None)
                .await?;
            manager.auth = false;
            worker.auth = false;
        }
    }
    let node_id = dir.node_id()?;
    register_node(&store, &node_id, Role::Manager, local).await?;
    dir.save_with_access(
        &NodeState {
            node_id: node_id.clone(),
            cluster_id: cluster_id.clone(),
            endpoints: endpoints.to_vec(),
            token: manager.to_string(),
            role: Role::Manager,
            local,
            tls,
            store_user: None,
        },
        access,
    )?;
    Ok(InitOutcome {
        cluster_id,
        node_id,
        manager_token: manager.to_string(),
        worker_token: worker.to_string(),
    })
}

/// Whether etcd enforces authentication: the join user `token` names can log in only then.
async fn auth_enforced(access: &StoreAccess, token: &Token) -> Result<bool> {
    let joiner = StoreAccess {
        credentials: Some(Credentials {
            user: roles::join_user(&token.cluster_id, token.role),
            password: token.secret.clone(),
        }),
        ..access.clone()
    };
    match Store::connect_with(&joiner, &token.cluster_id).await {
        Ok(_) => Ok(true),
        Err(Error::StoreRefused(m)) if m.contains("not enabled") => Ok(false),
        Err(e) => Err(e),
    }
}

async fn register_node(
    store: &Store,
    node_id: &str,
    role: Role,
    local: Option<IpAddr>,
) -> Result<()> {
    let rec = NodeRecord {
        node_id: node_id.to_owned(),
        role,
        local,
        joined: super::now_secs(),
    };
    store
        .put(
            &store.key(&format!("nodes/{node_id}")),
            serde_json::to_vec(&rec)?,
            None,
        )
        .await?;
    Ok(())
}

/// Checks a token against the store's hashes. A wrong secret and a rotated-away one look the same
/// from here, and the message says so.
pub async fn verify_token(store: &Store, token: &Token) -> Result<()> {
    let meta = match store.meta().await {
        Ok(m) => m,
        Err(Error::NoCluster(id)) => {
            return Err(Error::TokenRefused(format!("no cluster {id} in the store")))
        }
        Err(e) => return Err(e),
    };
    let expected = match token.role {
        Role::Manager => &meta.manager_secret_sha256,
        Role::Worker => &meta.worker_secret_sha256,
    };
    if hashes_equal(&token.secret_hash(), expected) {
        Ok(())
    } else {
        Err(Error::TokenRefused(format!(
            "wrong or revoked {} token for cluster {}",
            token.role, token.cluster_id
        )))
    }
}

/// Joins with `token` over the store's plain http, recording the node in the store and its state
/// in `dir`.
pub async fn join(dir: &StateDir, token: &str, local: Option<IpAddr>) -> Result<NodeState> {
    join_with(dir, token, &AccessOptions::default(), None, local).await
}

/// Joins with `token`, reaching the store with `options` (TLS files, credentials) at the token's
/// endpoints, or at `store` (`--store`) when given; the access is kept in `dir`.
pub async fn join_with(
    dir: &StateDir,
    token: &str,
    options: &AccessOptions,
    store: Option<(Vec<String>, bool)>,
    local: Option<IpAddr>,
) -> Result<NodeState> {
    let token = Token::parse(token)?;
    if let Some(st) = dir.load()? {
        if st.cluster_id != token.cluster_id {
            return Err(Error::AlreadyJoined(dir.path().to_owned(), st.cluster_id));
        }
    }
    let (endpoints, tls) = store.unwrap_or_else(|| (token.endpoints.clone(), token.tls));
    let access = options.load(endpoints, tls)?;
    let (node_id, access) = if token.auth && access.credentials.is_none() {
        // An authenticated store: ask a manager, and keep only this node's own credentials.
        let node_id = dir.node_id()?;
        let (_, access) = admission::request(&access, &token, &node_id, local).await?;
        (node_id, access)
    } else {
        let store = Store::connect_with(&access, &token.cluster_id).await?;
        verify_token(&store, &token).await?;
        let node_id = dir.node_id()?;
        register_node(&store, &node_id, token.role, local).await?;
        (node_id, access)
    };
    let state = NodeState {
        node_id,
        cluster_id: token.cluster_id.clone(),
        endpoints: access.endpoints.clone(),
        token: token.to_string(),
        role: token.role,
        local,
        tls: access.tls.is_some(),
        store_user: access.credentials.as_ref().map(|c| c.user.clone()),
    };
    dir.save_with_access(&state, &access)?;
    Ok(state)
}

/// For a restart, and for `vxnet run --token`: joins with `token` if the state dir has no
/// cluster yet, otherwise resumes from the saved state. A resumed node is accepted because it is
/// recorded under `nodes/`, so rotating tokens does not cut off nodes that already joined.
pub async fn join_or_resume(
    dir: &StateDir,
    token: Option<&str>,
    local: Option<IpAddr>,
) -> Result<(Store, NodeState)> {
    join_or_resume_at(dir, token, None, &AccessOptions::default(), local).await
}

/// Like [`join_or_resume`], but when `store` is given (`vxnet run --store URL`: endpoints and
/// whether https) the store is reached there, whatever the token or the saved state say (a store
/// that moved), and `options` (`--store-*`), when given, replace the saved TLS files and
/// credentials for this run. A first join keeps them in `dir`.
pub async fn join_or_resume_at(
    dir: &StateDir,
    token: Option<&str>,
    store: Option<(Vec<String>, bool)>,
    options: &AccessOptions,
    local: Option<IpAddr>,
) -> Result<(Store, NodeState)> {
    let (state, access) = match (dir.load()?, token) {
        (Some(st), _) => {
            let saved = dir.access(&st)?;
            let (endpoints, tls) =
                store.unwrap_or_else(|| (saved.endpoints.clone(), saved.tls.is_some()));
            let access = if options.given() || tls != saved.tls.is_some() {
                let mut access = options.load(endpoints, tls)?;
                if options.user.is_none() {
                    // New TLS files alone keep the saved etcd user: for a node admitted to an
                    // authenticated store it is the only identity it has.
                    access.credentials = saved.credentials;
                }
                access
            } else {
                StoreAccess { endpoints, ..saved }
            };
            (st, access)
        }
        (None, Some(t)) => {
            let st = join_with(dir, t, options, store, local).await?;
            let access = dir.access(&st)?;
            (st, access)
        }
        (None, None) => return Err(Error::NotJoined(dir.path().to_owned())),
    };
    let store = Store::connect_with(&access, &state.cluster_id).await?;
    let key = store.key(&format!("nodes/{}", state.node_id));
    if store.get_raw(&key).await?.is_none() {
        return Err(Error::NotMember(state.node_id, state.cluster_id));
    }
    Ok((store, state))
}

/// Connects to the store of the cluster this node joined.
pub async fn connect(dir: &StateDir) -> Result<(Store, NodeState)> {
    let state = dir.require()?;
    let store = Store::connect_with(&dir.access(&state)?, &state.cluster_id).await?;
    Ok((store, state))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RotateOutcome {
    pub manager_token: Option<String>,
    pub worker_token: Option<String>,
}

/// Issues new secrets for the chosen roles; tokens with the old secrets are refused from then on.
pub async fn rotate(dir: &StateDir, manager: bool, worker: bool) -> Result<RotateOutcome> {
    let (store, mut state) = connect(dir).await?;
    if state.role != Role::Manager {
        return Err(Error::NotManager(state.role.to_string()));
    }
    let (manager, worker) = if manager || worker {
        (manager, worker)
    } else {
        (true, true)
    };
    let mut meta = store.meta().await?;
    let mut out = RotateOutcome::default();
    for (role, chosen) in [(Role::Manager, manager), (Role::Worker, worker)] {
        if !chosen {
            continue;
        }
        let t =
            Token::new(&state.cluster_id, role, &state.endpoints, state.tls).with_auth(meta.auth);
        if meta.auth {
            // The old secret stops working as an etcd password now, so etcd itself refuses
            // the old token (and only the admin identity may do this).
            roles::set_password(
                &store,
                &roles::join_user(&state.cluster_id, role),
                &t.secret,
            )
            .await?;
        }
        match role {
            Role::Manager => {
                meta.manager_secret_sha256 = t.secret_hash();
                out.manager_token = Some(t.to_string());
            }
            Role::Worker => {
                meta.worker_secret_sha256 = t.secret_hash();
                out.worker_token = Some(t.to_string());
            }
        }
    }
    store
        .put(&store.key("meta"), serde_json::to_vec(&meta)?, None)
        .await?;
    if let Some(t) = &out.manager_token {
        state.token = t.clone();
        dir.save(&state)?;
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub node_id: String,
    pub role: Role,
    /// `healthy`, or `degraded` when the store could not be reached and `view` is the cached one.
    pub store: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    pub endpoints: Vec<String>,
    /// Per encrypted network, the key epoch senders use now (from the store; empty when the
    /// store is down, as the cached view holds no keys).
    #[serde(default)]
    pub key_epochs: std::collections::BTreeMap<String, u32>,
    pub view: ClusterView,
}

/// Reads the whole cluster; if the store is unreachable falls back to the view cached by the
/// last successful status, marked degraded.
pub async fn status(dir: &StateDir) -> Result<Status> {
    let state = dir.require()?;
    let fresh = async {
        let store = Store::connect_with(&dir.access(&state)?, &state.cluster_id).await?;
        let (kvs, rev) = store.list("").await?;
        Ok::<_, Error>(ClusterView::from_etcd(&state.cluster_id, &kvs, rev))
    };
    let (view, store_error) = match fresh.await {
        Ok(view) => {
            // Best effort: a read-only state dir must not turn a healthy status into an error.
            if let Err(e) = dir.save_view(&view) {
                tracing::warn!(error = %e, "could not cache the cluster view");
            }
            (view, None)
        }
        Err(e) if e.is_unreachable() => {
            let mut view: ClusterView = dir.load_view()?.unwrap_or_else(|| ClusterView {
                cluster_id: state.cluster_id.clone(),
                ..ClusterView::default()
            });
            view.store_healthy = false;
            (view, Some(e.to_string()))
        }
        Err(e) => return Err(e),
    };
    Ok(Status {
        node_id: state.node_id,
        role: state.role,
        store: if store_error.is_none() {
            "healthy"
        } else {
            "degraded"
        }
        .into(),
        store_error,
        endpoints: state.endpoints,
        key_epochs: view
            .networks
            .iter()
            .filter_map(|n| Some((n.name.clone(), view.key_ring(&n.name)?.send)))
            .collect(),
        view,
    })
}
