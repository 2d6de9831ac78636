//! The node's state directory: one `state.json` (node id, cluster id, store endpoints, token, role)
//! plus `view.json`, the last cluster view seen, so `cluster status` can answer while the store is
//! down, and how to reach the store when it is secured (`store-ca.pem`, `store-cert.pem`,
//! `store-key.pem`, `store-password`: copies, so the originals may move). The directory is 0700 and
//! files 0600 because the token, key and password are credentials; every write goes to a temp file
//! that is renamed over the old one, so a crash never leaves a half-written file.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::access::{Credentials, StoreAccess, Tls};
use super::token::Role;
use super::{Error, Result};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/vxnet";
const STATE_FILE: &str = "state.json";
const VIEW_FILE: &str = "view.json";
const NODE_ID_FILE: &str = "node_id";
const CA_FILE: &str = "store-ca.pem";
const CERT_FILE: &str = "store-cert.pem";
const KEY_FILE: &str = "store-key.pem";
const PASSWORD_FILE: &str = "store-password";
const ACCESS_FILES: [&str; 4] = [CA_FILE, CERT_FILE, KEY_FILE, PASSWORD_FILE];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub node_id: String,
    pub cluster_id: String,
    /// `HOST:PORT` entries, without scheme.
    pub endpoints: Vec<String>,
    pub token: String,
    pub role: Role,
    #[serde(default)]
    pub local: Option<IpAddr>,
    /// The store is reached over TLS (`store-ca.pem`, maybe a client certificate, in the dir).
    #[serde(default)]
    pub tls: bool,
    /// The etcd user (its password is in `store-password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_user: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Creates the directory if needed and tightens it to 0700 either way.
    fn ensure(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&self.dir))
    }

    /// The node id: random, created on first use and never changed, so a node keeps its identity
    /// across restarts and re-joins.
    pub fn node_id(&self) -> Result<String> {
        let path = self.dir.join(NODE_ID_FILE);
        match fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        if let Some(state) = self.load()? {
            return Ok(state.node_id);
        }
        let id = super::random_hex(8);
        self.write_atomic(NODE_ID_FILE, format!("{id}\n").as_bytes())?;
        Ok(id)
    }

    /// `Ok(None)` when the node has not joined a cluster yet.
    pub fn load(&self) -> Result<Option<NodeState>> {
        self.read_json(STATE_FILE)
    }

    pub fn require(&self) -> Result<NodeState> {
        self.load()?
            .ok_or_else(|| Error::NotJoined(self.dir.clone()))
    }

    pub fn save(&self, state: &NodeState) -> Result<()> {
        self.write_atomic(STATE_FILE, &serde_json::to_vec_pretty(state)?)
    }

    /// Saves `state` with `access` (its endpoints, TLS files and credentials); files the access
    /// does not need any more are removed.
    pub fn save_with_access(&self, state: &NodeState, access: &StoreAccess) -> Result<()> {
        let mut state = state.clone();
        state.endpoints = access.endpoints.clone();
        state.tls = access.tls.is_some();
        state.store_user = access.credentials.as_ref().map(|c| c.user.clone());
        let tls = access.tls.as_ref();
        let files: [(&str, Option<&[u8]>); 4] = [
            (CA_FILE, tls.map(|t| t.ca.as_slice())),
            (
                CERT_FILE,
                tls.and_then(|t| t.identity.as_ref().map(|i| i.0.as_slice())),
            ),
            (
                KEY_FILE,
                tls.and_then(|t| t.identity.as_ref().map(|i| i.1.as_slice())),
            ),
            (
                PASSWORD_FILE,
                access.credentials.as_ref().map(|c| c.password.as_bytes()),
            ),
        ];
        for (name, content) in files {
            match content {
                Some(bytes) => self.write_atomic(name, bytes)?,
                None => self.remove(name)?,
            }
        }
        self.save(&state)
    }

    /// How `state`'s store is reached: its endpoints with the TLS files and password kept here.
    pub fn access(&self, state: &NodeState) -> Result<StoreAccess> {
        let tls = if state.tls {
            let ca = self.read_file(CA_FILE)?.ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: the store is https but {CA_FILE} is missing",
                    self.dir.display()
                ))
            })?;
            let identity = match (self.read_file(CERT_FILE)?, self.read_file(KEY_FILE)?) {
                (Some(c), Some(k)) => Some((c, k)),
                _ => None,
            };
            Some(Tls { ca, identity })
        } else {
            None
        };
        let credentials = match &state.store_user {
            Some(user) => {
                let password = self.read_file(PASSWORD_FILE)?.ok_or_else(|| {
                    Error::Invalid(format!(
                        "{}: store user {user} but {PASSWORD_FILE} is missing",
                        self.dir.display()
                    ))
                })?;
                Some(Credentials {
                    user: user.clone(),
                    password: String::from_utf8_lossy(&password).into_owned(),
                })
            }
            None => None,
        };
        Ok(StoreAccess {
            endpoints: state.endpoints.clone(),
            tls,
            credentials,
        })
    }

    fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Forgets the cluster (membership, token, cached view) but keeps the node id, so a later
    /// join is the same node again. Missing files are fine: the goal is their absence.
    pub fn forget_membership(&self) -> Result<()> {
        if let Some(state) = self.load()? {
            // A state dir from before the node_id file existed keeps its identity this way.
            if !self.dir.join(NODE_ID_FILE).exists() {
                self.write_atomic(NODE_ID_FILE, format!("{}\n", state.node_id).as_bytes())?;
            }
        }
        for name in [STATE_FILE, VIEW_FILE].into_iter().chain(ACCESS_FILES) {
            self.remove(name)?;
        }
        Ok(())
    }

    pub fn load_view<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.read_json(VIEW_FILE)
    }

    pub fn save_view<T: Serialize>(&self, view: &T) -> Result<()> {
        self.write_atomic(VIEW_FILE, &serde_json::to_vec_pretty(view)?)
    }

    fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| Error::Corrupt {
                        key: path.display().to_string(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.ensure()?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            // The mode above only applies to new files; a stale temp file keeps its old mode.
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(&path)(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("s"));
        let id = dir.node_id().unwrap();
        assert_eq!(dir.node_id().unwrap(), id);
        let st = NodeState {
            node_id: id,
            cluster_id: "ab".into(),
            endpoints: vec!["127.0.0.1:1".into()],
            token: "t".into(),
            role: Role::Worker,
            local: None,
            tls: false,
            store_user: None,
        };
        dir.save(&st).unwrap();
        assert_eq!(dir.load().unwrap(), Some(st.clone()));
        let mode = fs::metadata(dir.state_file()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        // Forgetting the membership keeps the node id, also when only state.json recorded it.
        dir.save_view(&serde_json::json!({})).unwrap();
        fs::remove_file(dir.path().join(NODE_ID_FILE)).unwrap();
        dir.forget_membership().unwrap();
        assert_eq!(dir.load().unwrap(), None);
        assert!(!dir.path().join(VIEW_FILE).exists());
        assert_eq!(dir.node_id().unwrap(), st.node_id);
        dir.forget_membership().unwrap();
    }

    #[test]
    fn access_is_kept_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("s"));
        let st = NodeState {
            node_id: "n".into(),
            cluster_id: "ab".into(),
            endpoints: vec![],
            token: "t".into(),
            role: Role::Worker,
            local: None,
            tls: false,
            store_user: None,
        };
        let access = StoreAccess {
            endpoints: vec!["h:1".into()],
            tls: Some(Tls {
                ca: b"CA".to_vec(),
                identity: Some((b"CERT".to_vec(), b"KEY".to_vec())),
            }),
            credentials: Some(Credentials {
                user: "u".into(),
                password: "pw".into(),
            }),
        };
        dir.save_with_access(&st, &access).unwrap();
        let saved = dir.require().unwrap();
        assert!(saved.tls);
        assert_eq!(dir.access(&saved).unwrap(), access);
        for name in ACCESS_FILES.into_iter().chain([STATE_FILE]) {
            let mode = fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let text = fs::read_to_string(dir.state_file()).unwrap();
        assert!(
            !text.contains("pw"),
            "the password stays out of state.json: {text}"
        );
        // Back to plain: the secrets go.
        dir.save_with_access(&saved, &StoreAccess::plain(&["h:1".into()]))
            .unwrap();
        assert!(!dir.path().join(KEY_FILE).exists());
        assert!(dir.access(&dir.require().unwrap()).unwrap().is_open());
    }
}
