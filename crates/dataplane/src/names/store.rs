//! The names added at run time (`vxnet name add`), kept in `<state dir>/names.json` so that a
//! restarted engine answers them again.
//!
//! Written whole on every change (temporary file, fsync, rename), like the endpoint records. An
//! entry that no longer passes the checks (its network's subnet changed) is kept in the file
//! but refused at rebuild with one warning, as any other source's would be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{HostEntry, Sources};

const FILE: &str = "names.json";

/// Where the added names of state dir `dir` are kept.
pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The entries kept at `file`, by network; nothing when there is no file yet or it does not
/// decode (logged: the names can be added again).
pub(super) fn load(file: &Path) -> BTreeMap<String, Vec<HostEntry>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!(path = %file.display(), error = %e, "cannot read the added names: starting without them");
            return BTreeMap::new();
        }
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::warn!(path = %file.display(), error = %e, "added names unreadable: starting without them");
        BTreeMap::new()
    })
}

/// Writes every added name atomically; without a state dir, nothing.
pub(super) fn save(sources: &Sources) -> std::io::Result<()> {
    let Some(file) = &sources.file else {
        return Ok(());
    };
    let kept: BTreeMap<&String, Vec<&HostEntry>> = sources
        .added
        .iter()
        .filter(|(_, entries)| !entries.is_empty())
        .map(|(network, entries)| (network, entries.values().collect()))
        .collect();
    let text = serde_json::to_vec_pretty(&kept).map_err(std::io::Error::other)?;
    crate::files::write_atomic(file, &text)
}
