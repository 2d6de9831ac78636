//! Hosts in network namespaces on this machine, as `vxnet demo` and `vxnet bench` build them: what
//! they create and its removal ([`cleanup`]), `vxnet run` started inside a namespace ([`engine`]),
//! and vxnet's own byte-checked TCP sender and receiver ([`transfer`]).

pub mod cleanup;
pub mod engine;
pub mod transfer;

pub use cleanup::{find_in_path, in_namespace, ip, is_root, CleanOnDrop, Cleanup};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{0}")]
    Setup(String),
    #[error("vxnet on host {host} did not start: {message}")]
    Engine { host: String, message: String },
    #[error("TCP transfer: {0}")]
    Transfer(String),
}
