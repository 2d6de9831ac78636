//! The blocking client side, for `vxnet` subcommands.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::proto::Reply;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("no vxnet engine at {path} (is `vxnet run` running? --control PATH): {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Something that is no socket is at the path: a wrong `--control`, not a stopped engine.
    #[error("{path} is {what}, not a vxnet control socket (--control PATH)")]
    NotASocket { path: PathBuf, what: &'static str },
    /// The socket is there (an engine is), this user may not use it.
    #[error("the vxnet engine at {path} does not let this user in (permission denied): {advice}")]
    Denied { path: PathBuf, advice: String },
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: malformed reply: {message}")]
    Protocol { path: PathBuf, message: String },
    #[error("{0}")]
    Engine(String),
}

/// What to do about a control socket this user may not connect to, from its owner, group and
/// mode (or its folder's, when the socket itself cannot be looked at).
fn denied_advice(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        let folder = path.parent().unwrap_or(Path::new("/"));
        return format!(
            "its folder {} is closed to this user; run as root, or open the folder to the engine's control group",
            folder.display()
        );
    };
    let mode = meta.mode() & 0o777;
    let group = crate::sys::creds::group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string());
    if mode & 0o060 == 0o060 && meta.gid() != 0 {
        format!(
            "its socket is mode {mode:04o}, group {group}: join group {group} (`usermod -aG {group} $USER`, then log in again) or run as root"
        )
    } else {
        format!(
            "its socket is mode {mode:04o} (root and the engine's user only): run as root, or start the engine with --control-group GROUP and join that group"
        )
    }
}

/// Sends one request and returns the reply's data. Generic over the request type so that a
/// client built against a newer request vocabulary (the CNI plugin) shares this exchange.
pub fn request<R: serde::Serialize + ?Sized>(
    path: &Path,
    request: &R,
) -> Result<serde_json::Value, ClientError> {
    let io = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| {
        use std::os::unix::fs::FileTypeExt;
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError::Denied {
                path: path.to_path_buf(),
                advice: denied_advice(path),
            }
        } else if let Some(meta) = std::fs::metadata(path)
            .ok()
            .filter(|m| !m.file_type().is_socket())
        {
            ClientError::NotASocket {
                path: path.to_path_buf(),
                what: super::socket::kind_of(&meta),
            }
        } else {
            ClientError::Connect {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut line = serde_json::to_string(request).map_err(|e| ClientError::Protocol {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    line.push('\n');
    let written = stream.write_all(line.as_bytes());
    let mut reply = String::new();
    let read = BufReader::new(stream).read_line(&mut reply);
    // An engine that refuses us (permissions, size) answers and closes without reading the
    // request, so the write may fail while its one-line reply is waiting to be read.
    if reply.is_empty() {
        written.map_err(io)?;
        read.map_err(io)?;
    }
    match serde_json::from_str::<Reply>(&reply) {
        Ok(Reply::Ok { data }) => Ok(data),
        Ok(Reply::Error { message }) => Err(ClientError::Engine(message)),
        Err(e) => Err(ClientError::Protocol {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_is_no_socket_is_named_for_what_it_is() {
        let dir = std::env::temp_dir().join(format!("vxnet-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("regular");
        std::fs::write(&file, "").unwrap();
        for (path, what) in [(&dir, "is a directory"), (&file, "is a regular file")] {
            let e = request(path, &serde_json::json!("stats")).unwrap_err();
            let message = e.to_string();
            assert!(message.contains(what), "{message}");
            assert!(message.contains("not a vxnet control socket"), "{message}");
        }
        // Nothing there at all: no engine runs there.
        let e = request(&dir.join("none.sock"), &serde_json::json!("stats")).unwrap_err();
        assert!(e.to_string().starts_with("no vxnet engine at"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
