//! The keys of one encrypted network: a small ring of network keys, each tagged with its epoch,
//! one of which senders use. Static mode fills it from a key file (one key, epoch 0); cluster
//! mode from the store, where rotation adds a key to every host's ring before anyone sends with
//! it and drops the old one after (so a ring holds at most [`MAX_KEYS`]: old, current, next).
//!
//! Receivers accept every key of the ring: the SPI's top 2 bits carry the epoch's low bits
//! (`vxnet_encap::esp::Spi::for_epoch`), so no two keys of one ring may share them.
//!
//! Key files are read by [`load_key_file`]: the one loader of `--key-file`, `key_file = "…"` and
//! `vxnet key check`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use thiserror::Error;
use vxnet_encap::esp::{KeyEpoch, KeyParseError, NetworkKey};

/// Keys one ring holds at most: the one being retired, the one in use, the one coming.
pub const MAX_KEYS: usize = 3;

/// The keys an encrypted network accepts, and which of them it sends with.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRing {
    /// Every key accepted on receive, by epoch.
    pub keys: Vec<(KeyEpoch, NetworkKey)>,
    /// The epoch of the key new outbound SAs are sealed with; one of `keys`.
    pub send: KeyEpoch,
}

// `NetworkKey`'s equality is a true equivalence (a constant-time byte comparison).
impl Eq for KeyRing {}

/// Why a key ring cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyRingError {
    #[error("the key ring is empty")]
    Empty,
    #[error("the key ring holds {count} keys (at most {MAX_KEYS}: old, current, next)")]
    TooMany { count: usize },
    #[error("the send epoch {0} is not in the key ring")]
    SendNotInRing(u32),
    #[error("epochs {a} and {b} of the key ring share an SPI tag (epoch mod 4), so a receiver could not tell them apart")]
    TagClash { a: u32, b: u32 },
}

impl KeyRing {
    /// The ring of a static key file: that key alone, epoch 0.
    pub fn single(key: NetworkKey) -> Self {
        KeyRing {
            keys: vec![(KeyEpoch(0), key)],
            send: KeyEpoch(0),
        }
    }

    pub fn validate(&self) -> Result<(), KeyRingError> {
        if self.keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        if self.keys.len() > MAX_KEYS {
            return Err(KeyRingError::TooMany {
                count: self.keys.len(),
            });
        }
        if self.get(self.send).is_none() {
            return Err(KeyRingError::SendNotInRing(self.send.0));
        }
        for (i, (a, _)) in self.keys.iter().enumerate() {
            if let Some((b, _)) = self.keys[..i].iter().find(|(b, _)| b.tag() == a.tag()) {
                return Err(KeyRingError::TagClash { a: b.0, b: a.0 });
            }
        }
        Ok(())
    }

    pub fn get(&self, epoch: KeyEpoch) -> Option<&NetworkKey> {
        self.keys.iter().find(|(e, _)| *e == epoch).map(|(_, k)| k)
    }

    /// The key outbound SAs use, `None` only for a ring that fails [`validate`](Self::validate).
    pub fn send_key(&self) -> Option<&NetworkKey> {
        self.get(self.send)
    }

    /// The epochs, in ring order (for logs and `vxnet sa show`; never the keys).
    pub fn epochs(&self) -> Vec<u32> {
        self.keys.iter().map(|(e, _)| e.0).collect()
    }
}

/// Why a key file cannot be used. Each message names the file and what to do.
#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("key file {path} does not exist (create one with `vxnet key generate --out {path}`)")]
    Missing { path: String },
    #[error("cannot read key file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is not a regular file")]
    NotAFile { path: String },
    #[error(
        "key file {path} is accessible by group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    TooOpen { path: String, mode: u32 },
    #[error("key file {path}: {source}")]
    Malformed { path: String, source: KeyParseError },
    #[error("key file {path} already exists; not overwriting it")]
    Exists { path: String },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create folder {folder} for key file {path}: {source}")]
    Folder {
        path: String,
        folder: String,
        source: std::io::Error,
    },
}

/// Reads a network key from `path`: the file must exist, be a regular file readable by its owner
/// only (as ssh insists for private keys: a network key others can read lets them decrypt and
/// forge the overlay's traffic), and hold 64 hex digits (surrounding whitespace allowed).
pub fn load_key_file(path: &Path) -> Result<NetworkKey, KeyFileError> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing { path: shown })
        }
        Err(source) => {
            return Err(KeyFileError::Unreadable {
                path: shown,
                source,
            })
        }
    };
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile { path: shown });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen { path: shown, mode });
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Unreadable {
        path: shown.clone(),
        source,
    })?;
    NetworkKey::from_hex(&text).map_err(|source| KeyFileError::Malformed {
        path: shown,
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(b: u8) -> NetworkKey {
        NetworkKey::from_bytes([b; 32])
    }

    #[test]
    fn ring_rules() {
        KeyRing::single(key(1)).validate().unwrap();
        let ring = |epochs: &[u32], send: u32| KeyRing {
            keys: epochs
                .iter()
                .map(|e| (KeyEpoch(*e), key(*e as u8)))
                .collect(),
            send: KeyEpoch(send),
        };
        ring(&[4, 5, 6], 5).validate().unwrap();
        assert_eq!(ring(&[], 0).validate(), Err(KeyRingError::Empty));
        assert_eq!(
            ring(&[1, 2, 3, 4], 2).validate(),
            Err(KeyRingError::TooMany { count: 4 })
        );
        assert_eq!(
            ring(&[1, 2], 3).validate(),
            Err(KeyRingError::SendNotInRing(3))
        );
        assert_eq!(
            ring(&[1, 5], 5).validate(),
            Err(KeyRingError::TagClash { a: 1, b: 5 })
        );
        let r = ring(&[7, 8], 8);
        assert_eq!(r.send_key(), Some(&key(8)));
        assert_eq!(r.epochs(), vec![7, 8]);
        assert!(!format!("{r:?}").contains("0808"), "Debug never shows keys");
    }
}
