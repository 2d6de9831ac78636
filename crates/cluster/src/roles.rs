//! etcd roles and users for a cluster in an authenticated store, so etcd itself — not the
//! client — decides what a node may change.
//!
//! `cluster init` given the store's admin identity (etcd's `root` role) lays out, for cluster `C`
//! (prefix `P = /vxnet/C/`, join requests under `J = /vxnet-join/C/`):
//!
//! | role                 | grants                                                        | held by |
//! |----------------------|---------------------------------------------------------------|---------|
//! | `vxnet-C-manager`    | readwrite `P*`                                                 | managers |
//! | `vxnet-C-worker`     | read `P*`                                                      | workers |
//! | `vxnet-C-node-N`     | readwrite the keys `P nodes/N` and `P members/N`, and `P node/N/*` | node N alone |
//! | `vxnet-C-joiner`     | read the key `P meta`; write `J*` (write-only: no one's request can be read back) | the join users |
//!
//! Users: `vxnet-C-join-worker` and `vxnet-C-join-manager`, whose passwords are the tokens'
//! secrets (so a token is the credential, and rotating it changes the password), and one
//! `vxnet-C-node-N` per admitted node with a password the node chose. A joining node writes a
//! request under `J` (see [`crate::admission`]); a manager engine holding the admin identity
//! checks its secret against `meta`, writes `nodes/N`, creates the node's user and role and
//! grants it `vxnet-C-worker` or `vxnet-C-manager`. So a worker can publish its MACs, claim
//! addresses and publish endpoints under its own prefix `node/N/` and keep its own node and
//! member records, and nothing else: networks, VNIs, network keys, `meta` (tokens) and other
//! nodes' records (their MACs, address claims and endpoints included) are out of its reach
//! whatever its state dir says. Join requests live outside `P` because every member reads all
//! of `P`.
//!
//! Clusters laid out before node-scoped records gave workers readwrite on `P macs/*` and
//! `P ipam/*`, so any worker could overwrite another node's MAC or delete its address claim.
//! [`upgrade`], run by every manager engine holding the admin identity when it starts, grants each
//! node role its `P node/N/` prefix and revokes those two grants; re-running it is harmless.
//!
//! Only etcd's root role may manage users, so admitting nodes, rotating tokens and removing a
//! node's user need the admin identity; managers that joined with a token can do everything else.

use etcd_client::{
    Client, Permission, PermissionType, RoleRevokePermissionOptions, UserAddOptions,
};

use super::store::{Retry, Store};
use super::token::Role;
use super::{scoped, Error, Result};

pub(crate) fn manager_role(cluster_id: &str) -> String {
    format!("vxnet-{cluster_id}-manager")
}

pub(crate) fn worker_role(cluster_id: &str) -> String {
    format!("vxnet-{cluster_id}-worker")
}

pub(crate) fn joiner_role(cluster_id: &str) -> String {
    format!("vxnet-{cluster_id}-joiner")
}

/// The user (and role) of one admitted node.
pub(crate) fn node_user(cluster_id: &str, node_id: &str) -> String {
    format!("vxnet-{cluster_id}-node-{node_id}")
}

/// The user a token of `role` logs in as (its password is the token's secret).
pub(crate) fn join_user(cluster_id: &str, role: Role) -> String {
    format!("vxnet-{cluster_id}-join-{role}")
}

/// Where join requests go: outside the cluster prefix, which every member reads.
pub(crate) fn join_prefix(cluster_id: &str) -> String {
    format!("/vxnet-join/{cluster_id}/")
}

fn shared_role(cluster_id: &str, role: Role) -> String {
    match role {
        Role::Manager => manager_role(cluster_id),
        Role::Worker => worker_role(cluster_id),
    }
}

/// etcd's answer "already exists" to an add: the layout is being re-applied, which is fine.
fn exists(e: &Error) -> bool {
    e.to_string().contains("already exists")
}

fn ok_if_exists(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if exists(&e) => Ok(()),
        other => other,
    }
}

async fn auth<T, F, Fut>(store: &Store, call: F) -> Result<()>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    store.call(Retry::Idempotent, call).await.map(|_| ())
}

async fn role_add(store: &Store, name: &str) -> Result<()> {
    let name = name.to_owned();
    ok_if_exists(
        auth(store, |mut c| {
            let name = name.clone();
            async move { c.role_add(name).await }
        })
        .await,
    )
}

async fn grant(store: &Store, role: &str, perm: Permission) -> Result<()> {
    let role = role.to_owned();
    auth(store, |mut c| {
        let (role, perm) = (role.clone(), perm.clone());
        async move { c.role_grant_permission(role, perm).await }
    })
    .await
}

/// Creates `user` (or keeps it: a node joining again, a re-applied layout) and grants it
/// `roles`, then revokes `revoke`; the password is set last, so whoever waits to log in with it
/// (a joining node) never gets in before the user's roles are final.
async fn set_user(
    store: &Store,
    user: &str,
    password: &str,
    roles: &[String],
    revoke: Option<&str>,
) -> Result<()> {
    let u = user.to_owned();
    // A password nobody knows until the real one is set.
    let placeholder = super::random_hex(24);
    let added = auth(store, |mut c| {
        let (u, p) = (u.clone(), placeholder.clone());
        async move { c.user_add(u, p, Some(UserAddOptions::new())).await }
    })
    .await;
    ok_if_exists(added)?;
    for role in roles {
        let role = role.clone();
        auth(store, |mut c| {
            let (u, role) = (u.clone(), role.clone());
            async move { c.user_grant_role(u, role).await }
        })
        .await?;
    }
    if let Some(role) = revoke {
        let role = role.to_owned();
        let revoked = auth(store, |mut c| {
            let (u, r) = (u.clone(), role.clone());
            async move { c.user_revoke_role(u, r).await }
        })
        .await;
        match revoked {
            Err(e) if e.to_string().contains("not granted") => {}
            other => other?,
        }
    }
    set_password(store, user, password).await
}

/// Changes `user`'s password; etcd refuses it to anyone but the admin.
pub(crate) async fn set_password(store: &Store, user: &str, password: &str) -> Result<()> {
    let (u, p) = (user.to_owned(), password.to_owned());
    auth(store, |mut c| {
        let (u, p) = (u.clone(), p.clone());
        async move { c.user_change_password(u, p).await }
    })
    .await
}

/// Whether `store` is reached with etcd's admin (root) identity: only it may list roles once
/// authentication is on.
pub(crate) async fn is_admin(store: &Store) -> bool {
    auth(store, |mut c| async move { c.role_list().await })
        .await
        .is_ok()
}

/// The shared roles and the two join users (passwords: the tokens' secrets). Re-applying is
/// harmless.
pub(crate) async fn provision(
    store: &Store,
    manager_secret: &str,
    worker_secret: &str,
) -> Result<()> {
    let id = store.cluster_id().to_owned();
    let prefix = store.prefix();
    let (m, w, j) = (manager_role(&id), worker_role(&id), joiner_role(&id));
    for role in [&m, &w, &j] {
        role_add(store, role).await?;
    }
    grant(
        store,
        &m,
        Permission::read_write(prefix.clone()).with_prefix(),
    )
    .await?;
    grant(store, &w, Permission::read(prefix.clone()).with_prefix()).await?;
    grant(store, &j, Permission::read(store.key("meta"))).await?;
    grant(
        store,
        &j,
        Permission::new(PermissionType::Write, join_prefix(&id)).with_prefix(),
    )
    .await?;
    set_user(
        store,
        &join_user(&id, Role::Manager),
        manager_secret,
        std::slice::from_ref(&j),
        None,
    )
    .await?;
    set_user(
        store,
        &join_user(&id, Role::Worker),
        worker_secret,
        &[j],
        None,
    )
    .await
}

/// Removes everything [`provision`] made (a store whose authentication turned out to be off).
pub(crate) async fn unprovision(store: &Store) {
    let id = store.cluster_id().to_owned();
    for user in [join_user(&id, Role::Manager), join_user(&id, Role::Worker)] {
        let _ = auth(store, |mut c| {
            let user = user.clone();
            async move { c.user_delete(user).await }
        })
        .await;
    }
    for role in [manager_role(&id), worker_role(&id), joiner_role(&id)] {
        let _ = auth(store, |mut c| {
            let role = role.clone();
            async move { c.role_delete(role).await }
        })
        .await;
    }
}

/// Gives node `node_id` its own user with `password`: its own node and member records, and the
/// shared role of `role`.
pub(crate) async fn add_node(
    store: &Store,
    node_id: &str,
    role: Role,
    password: &str,
) -> Result<()> {
    let id = store.cluster_id().to_owned();
    let name = node_user(&id, node_id);
    role_add(store, &name).await?;
    grant_node_keys(store, node_id).await?;
    // A manager joining again as a worker must not keep the manager role.
    let other = match role {
        Role::Manager => Role::Worker,
        Role::Worker => Role::Manager,
    };
    set_user(
        store,
        &name,
        password,
        &[name.clone(), shared_role(&id, role)],
        Some(&shared_role(&id, other)),
    )
    .await
}

/// Node `node_id`'s own keys for its role: its node and member records, and everything under
/// its prefix `node/<node_id>/` (the trailing slash keeps `node/ab` from covering `node/abc`).
async fn grant_node_keys(store: &Store, node_id: &str) -> Result<()> {
    let name = node_user(store.cluster_id(), node_id);
    for sub in ["nodes/", "members/"] {
        grant(
            store,
            &name,
            Permission::read_write(store.key(&format!("{sub}{node_id}"))),
        )
        .await?;
    }
    grant(
        store,
        &name,
        Permission::read_write(store.key(&scoped::node_prefix(node_id))).with_prefix(),
    )
    .await
}

/// Brings a cluster's roles from the old layout to node-scoped records: every admitted node's
/// role gets its `node/N/` prefix, and the worker role loses readwrite on `macs/` and `ipam/`
/// (the old layout's keys stay readable and are still read). Needs the admin identity.
pub(crate) async fn upgrade(store: &Store) -> Result<()> {
    for id in node_users(store).await? {
        grant_node_keys(store, &id).await?;
    }
    let worker = worker_role(store.cluster_id());
    for sub in ["macs/", "ipam/"] {
        let (role, key) = (worker.clone(), store.key(sub));
        let revoked = auth(store, |mut c| {
            let (role, key) = (role.clone(), key.clone());
            let opts = RoleRevokePermissionOptions::new().with_prefix();
            async move { c.role_revoke_permission(role, key, Some(opts)).await }
        })
        .await;
        match revoked {
            // Already revoked, or a cluster provisioned with the new layout.
            Err(e) if e.to_string().contains("not granted") => {}
            other => other?,
        }
    }
    Ok(())
}

/// Deletes node `node_id`'s user and role, so a removed node's credentials stop working.
pub(crate) async fn remove_node(store: &Store, node_id: &str) -> Result<()> {
    let name = node_user(store.cluster_id(), node_id);
    for role in [false, true] {
        let n = name.clone();
        let r = if role {
            auth(store, |mut c| {
                let n = n.clone();
                async move { c.role_delete(n).await }
            })
            .await
        } else {
            auth(store, |mut c| {
                let n = n.clone();
                async move { c.user_delete(n).await }
            })
            .await
        };
        match r {
            Err(e) if e.to_string().contains("not found") => {}
            other => other?,
        }
    }
    Ok(())
}

/// The node ids that have a user in the store.
pub(crate) async fn node_users(store: &Store) -> Result<Vec<String>> {
    let prefix = node_user(store.cluster_id(), "");
    let resp = store
        .call(
            Retry::Idempotent,
            |mut c| async move { c.user_list().await },
        )
        .await?;
    Ok(resp
        .users()
        .iter()
        .filter_map(|u| u.strip_prefix(&prefix).map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_scoped_to_the_cluster() {
        assert_eq!(manager_role("ab"), "vxnet-ab-manager");
        assert_eq!(worker_role("ab"), "vxnet-ab-worker");
        assert_eq!(node_user("ab", "0f"), "vxnet-ab-node-0f");
        assert_eq!(join_user("ab", Role::Worker), "vxnet-ab-join-worker");
        // Outside /vxnet/ab/, which every member may read.
        assert!(!join_prefix("ab").starts_with(&crate::store::prefix("ab")));
    }
}
