//! The key ring of an encrypted network, as stored at `keys/<network>`: up to three 32-byte
//! network keys, each with its epoch, of which one (`send`) is used to send and all are accepted.
//!
//! A rotation is two writes of this one record (see [`rotation`](crate::rotation)):
//! 1. **publish**: a fresh key with epoch `send + 1` is appended, accept-only;
//! 2. **switch**: once every live member serving the network has acknowledged holding it (or
//!    after a bounded wait), `send` moves to it and keys older than the previous send key are
//!    dropped, leaving `{previous, new}`.
//!
//! So the ring is `{N}` after creation, `{N-1, N}` between rotations and `{N-1, N, N+1}` while
//! one is under way: at most three consecutive epochs, whose 2-bit SPI tags are therefore
//! distinct. The record is checked like every other ([`NetworkKeys::validate`]); a record that
//! fails is skipped with a warning and engines keep the ring they have.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use vxnet_encap::esp::{KeyEpoch, NetworkKey, NETWORK_KEY_LEN};

use super::records::{validate_name, RecordError};

/// At most this many keys are held (all accepted, one used to send), as Docker does.
pub const MAX_KEYS: usize = 3;
/// The rotation interval of `network create --encrypted` without `--key-rotation`.
pub const DEFAULT_ROTATION: Duration = Duration::from_secs(12 * 3600);
/// Shorter intervals are refused: a rotation waits for every member's acknowledgement, and a
/// record rewritten every few milliseconds would only load etcd.
pub const MIN_ROTATION: Duration = Duration::from_secs(1);
/// The first epoch of a new network (0 is a static key file's).
pub const FIRST_EPOCH: u32 = 1;

/// A network key as its 64 hex digits in JSON. `Debug` never shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredKey(pub NetworkKey);

// NetworkKey's comparison is total; it only lacks the marker.
impl Eq for StoredKey {}

impl Serialize for StoredKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_hex())
    }
}

impl<'de> Deserialize<'de> for StoredKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        NetworkKey::from_hex(&text)
            .map(StoredKey)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub epoch: u32,
    pub key: StoredKey,
    /// When the key was generated (seconds since the Unix epoch).
    pub created: u64,
}

/// `keys/<network>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkKeys {
    pub network: String,
    /// Ascending, consecutive epochs.
    pub keys: Vec<KeyEntry>,
    /// The epoch senders use.
    pub send: u32,
    /// Rotate automatically once the send key has been in use this long.
    pub rotation_secs: u64,
    /// When `send` last changed (or the ring was created).
    pub switched: u64,
}

/// A fresh random network key.
pub fn generate_key() -> NetworkKey {
    use rand::RngCore;
    let mut bytes = [0u8; NETWORK_KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    NetworkKey::from_bytes(bytes)
}

impl NetworkKeys {
    /// The ring of a network being created: one key, epoch [`FIRST_EPOCH`], used to send.
    pub fn new(network: &str, rotation: Duration) -> NetworkKeys {
        let now = crate::now_secs();
        NetworkKeys {
            network: network.to_owned(),
            keys: vec![KeyEntry {
                epoch: FIRST_EPOCH,
                key: StoredKey(generate_key()),
                created: now,
            }],
            send: FIRST_EPOCH,
            rotation_secs: rotation.as_secs().max(MIN_ROTATION.as_secs()),
            switched: now,
        }
    }

    /// The epoch published accept-only and not yet sent with, during a rotation.
    pub fn pending(&self) -> Option<u32> {
        self.keys
            .last()
            .map(|k| k.epoch)
            .filter(|&newest| newest > self.send)
    }

    /// The newest epoch held (what a member acknowledges).
    pub fn newest(&self) -> u32 {
        self.keys.last().map_or(self.send, |k| k.epoch)
    }

    /// The ring as the engine takes it: `(epoch, key)` ascending, and the send epoch.
    pub fn ring(&self) -> (Vec<(KeyEpoch, NetworkKey)>, KeyEpoch) {
        let keys = self
            .keys
            .iter()
            .map(|k| (KeyEpoch(k.epoch), k.key.0.clone()))
            .collect();
        (keys, KeyEpoch(self.send))
    }

    /// Whether the send key is due for rotation at `now` (seconds since the Unix epoch).
    pub fn due(&self, now: u64) -> bool {
        now.saturating_sub(self.switched) >= self.rotation_secs
    }

    /// Phase 1: a fresh key with the next epoch, accepted but not sent with. Keys that would
    /// make the ring longer than [`MAX_KEYS`] go first (never the send key).
    pub fn published(&self) -> NetworkKeys {
        let mut next = self.clone();
        let epoch = self.newest().saturating_add(1);
        next.keys.push(KeyEntry {
            epoch,
            key: StoredKey(generate_key()),
            created: crate::now_secs(),
        });
        while next.keys.len() > MAX_KEYS {
            next.keys.remove(0);
        }
        next
    }

    /// Phase 2: send with the pending key; only the previous send key stays accepted besides it
    /// (for members still sending with it until they apply this record).
    pub fn switched(&self) -> NetworkKeys {
        let mut next = self.clone();
        if let Some(epoch) = self.pending() {
            next.send = epoch;
            next.switched = crate::now_secs();
            let keep_from = self.send;
            next.keys.retain(|k| k.epoch >= keep_from);
        }
        next
    }

    /// Everything `decode` checks besides the key naming the network.
    pub fn validate(&self) -> Result<(), RecordError> {
        validate_name(&self.network)?;
        let bad = |why: String| Err(RecordError::BadKeys(why));
        if self.keys.is_empty() || self.keys.len() > MAX_KEYS {
            return bad(format!(
                "{} keys (1 to {MAX_KEYS} expected)",
                self.keys.len()
            ));
        }
        if self.keys[0].epoch < FIRST_EPOCH {
            return bad(format!("epoch {} (epochs start at 1)", self.keys[0].epoch));
        }
        for w in self.keys.windows(2) {
            if w[1].epoch != w[0].epoch.wrapping_add(1) {
                return bad(format!(
                    "epochs {} and {} are not consecutive",
                    w[0].epoch, w[1].epoch
                ));
            }
        }
        if !self.keys.iter().any(|k| k.epoch == self.send) {
            return bad(format!("the send epoch {} is not in the ring", self.send));
        }
        if self.keys.iter().filter(|k| k.epoch > self.send).count() > 1 {
            return bad("more than one key newer than the send key".into());
        }
        for (i, a) in self.keys.iter().enumerate() {
            if self.keys[i + 1..].iter().any(|b| b.key == a.key) {
                return bad(format!("epoch {} repeats an earlier key", a.epoch));
            }
        }
        if self.rotation_secs < MIN_ROTATION.as_secs() {
            return bad(format!("rotation interval {}s", self.rotation_secs));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_at_most_three_consecutive_keys() {
        let r = NetworkKeys::new("blue", DEFAULT_ROTATION);
        r.validate().unwrap();
        assert_eq!((r.send, r.pending(), r.keys.len()), (1, None, 1));
        let p = r.published();
        p.validate().unwrap();
        assert_eq!((p.send, p.pending()), (1, Some(2)));
        let s = p.switched();
        s.validate().unwrap();
        assert_eq!((s.send, s.pending()), (2, None));
        let epochs = |r: &NetworkKeys| r.keys.iter().map(|k| k.epoch).collect::<Vec<_>>();
        assert_eq!(epochs(&s), [1, 2]);
        let p = s.published();
        assert_eq!(epochs(&p), [1, 2, 3]);
        let s = p.switched();
        assert_eq!((epochs(&s), s.send), (vec![2, 3], 3));
        // The epoch tags of any ring are distinct.
        let tags: Vec<u8> = s
            .published()
            .ring()
            .0
            .iter()
            .map(|(e, _)| e.tag())
            .collect();
        assert_eq!(tags.len(), 3);
        assert!(tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2]);
        // Keys are fresh each time.
        assert_ne!(s.keys[0].key, s.keys[1].key);
        // Switching without a pending key changes nothing.
        assert_eq!(s.switched(), s);
    }

    #[test]
    fn invalid_rings_are_refused() {
        let good = NetworkKeys::new("blue", DEFAULT_ROTATION).published();
        let check = |f: &dyn Fn(&mut NetworkKeys)| {
            let mut r = good.clone();
            f(&mut r);
            r.validate().unwrap_err().to_string()
        };
        assert!(check(&|r| r.keys.clear()).contains("0 keys"));
        assert!(check(&|r| r.send = 7).contains("send epoch 7"));
        assert!(check(&|r| r.keys[1].epoch = 5).contains("not consecutive"));
        assert!(check(&|r| r.keys[1].key = r.keys[0].key.clone()).contains("repeats"));
        assert!(check(&|r| r.rotation_secs = 0).contains("rotation interval"));
        assert!(check(&|r| r.network = "a b".into()).contains("invalid network name"));
        assert!(check(&|r| *r = r.published()).contains("more than one key newer"));
        assert!(check(&|r| {
            r.keys[0].epoch = 0;
            r.keys[1].epoch = 1;
            r.send = 0;
        })
        .contains("epochs start at 1"));
        // The key never shows in Debug; the JSON form round-trips.
        assert!(!format!("{good:?}").contains(&good.keys[0].key.0.to_hex()));
        let json = serde_json::to_string(&good).unwrap();
        assert_eq!(serde_json::from_str::<NetworkKeys>(&json).unwrap(), good);
        let short = json.replace(&good.keys[0].key.0.to_hex(), "abcd");
        assert!(serde_json::from_str::<NetworkKeys>(&short).is_err());
    }

    #[test]
    fn due_after_the_interval() {
        let mut r = NetworkKeys::new("blue", Duration::from_secs(60));
        r.switched = 1000;
        assert!(!r.due(1059));
        assert!(r.due(1060));
        assert!(!r.due(10));
    }
}
