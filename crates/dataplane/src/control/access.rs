//! Who may talk to the control socket. The file mode (0600/0660) is the first gate; this is the
//! second, checked on every connection with the kernel's record of the peer (SO_PEERCRED and
//! SO_PEERGROUPS), so a socket made reachable by mistake (a `chmod 666`, a bind mount into a
//! container) still answers only root, the engine's own user and `--control-group` members.

use crate::sys::creds::{self, PeerCredentials};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Access {
    /// The engine's effective uid (root, or the service user of an engine given capabilities).
    owner: u32,
    group: Option<u32>,
}

impl Access {
    pub(crate) fn new(group: Option<u32>) -> Access {
        Access {
            owner: creds::effective_uid(),
            group,
        }
    }

    /// `Ok` when `peer` may send requests; else the one-line reason it is told.
    pub(crate) fn check(&self, peer: &PeerCredentials) -> Result<(), String> {
        if peer.uid == 0 || peer.uid == self.owner {
            return Ok(());
        }
        match self.group {
            Some(gid) if peer.in_group(gid) => Ok(()),
            Some(gid) => Err(format!(
                "permission denied: uid {} is neither root nor in the control group (gid {gid})",
                peer.uid
            )),
            None => Err(format!(
                "permission denied: uid {} is not root (start the engine with --control-group GROUP to let a group in)",
                peer.uid
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> PeerCredentials {
        PeerCredentials {
            pid: 1,
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn root_owner_and_group_members_only() {
        let root_only = Access {
            owner: 0,
            group: None,
        };
        assert!(root_only.check(&peer(0, 0, &[])).is_ok());
        let e = root_only.check(&peer(65534, 65534, &[])).unwrap_err();
        assert!(e.contains("uid 65534"), "{e}");
        let grouped = Access {
            owner: 0,
            group: Some(900),
        };
        assert!(grouped.check(&peer(1000, 900, &[])).is_ok());
        assert!(grouped.check(&peer(1000, 1000, &[4, 900])).is_ok());
        assert!(grouped.check(&peer(1000, 1000, &[4])).is_err());
        let service = Access {
            owner: 998,
            group: None,
        };
        assert!(service.check(&peer(998, 998, &[])).is_ok());
        assert!(service.check(&peer(997, 998, &[])).is_err());
    }
}
