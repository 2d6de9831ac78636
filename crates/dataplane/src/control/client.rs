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
    let mut stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_path_buf(),
        source,
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
