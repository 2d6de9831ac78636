//! What changed in the membership between two views, for the engine's log: who joined, and who
//! left and why, so an operator reading the journal sees "node X left: lease expired" rather
//! than a changed peer list.

use crate::view::{ClusterView, Member};

/// Why a member that was alive is no longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// Still a node of the cluster, but its registration is gone: its lease expired (the host
    /// or its engine died, or lost the store for longer than the lease) or its engine stopped.
    LeaseEnded,
    /// Its node record is gone too: `vxnet cluster leave` on it, or `vxnet cluster rm`.
    Removed,
}

impl Departure {
    pub fn describe(self) -> &'static str {
        match self {
            Departure::LeaseEnded => {
                "lease ended (engine stopped, or host down or cut off for longer than the lease)"
            }
            Departure::Removed => "left or was removed from the cluster (cluster leave / rm)",
        }
    }
}

/// One change of membership between two views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    Joined(&'a Member),
    Left(&'a Member, Departure),
}

/// The members alive in `new` that were not in `old`, and those alive in `old` that are not in
/// `new`, with why.
pub fn changes<'a>(old: &'a ClusterView, new: &'a ClusterView) -> Vec<Change<'a>> {
    let alive = |v: &'a ClusterView, id: &str| v.alive().any(|m| m.node_id == id);
    let mut out: Vec<Change<'a>> = new
        .alive()
        .filter(|m| !alive(old, &m.node_id))
        .map(Change::Joined)
        .collect();
    for gone in old.alive().filter(|m| !alive(new, &m.node_id)) {
        let known = new.members.iter().any(|m| m.node_id == gone.node_id);
        let why = if known {
            Departure::LeaseEnded
        } else {
            Departure::Removed
        };
        out.push(Change::Left(gone, why));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, alive: bool) -> Member {
        Member {
            node_id: id.into(),
            vtep: Some("10.0.0.1".parse().unwrap()),
            networks: vec![],
            role: None,
            alive,
            key_epochs: Default::default(),
        }
    }

    fn view(members: Vec<Member>) -> ClusterView {
        ClusterView {
            members,
            ..ClusterView::default()
        }
    }

    #[test]
    fn joined_and_left_with_why() {
        let old = view(vec![
            member("a", true),
            member("b", true),
            member("c", true),
        ]);
        let new = view(vec![
            member("a", true),
            member("b", false),
            member("d", true),
        ]);
        let c = changes(&old, &new);
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(matches!(c[0], Change::Joined(m) if m.node_id == "d"));
        assert!(matches!(c[1], Change::Left(m, Departure::LeaseEnded) if m.node_id == "b"));
        assert!(matches!(c[2], Change::Left(m, Departure::Removed) if m.node_id == "c"));
        assert!(changes(&new, &new).is_empty());
    }
}
