//! Hosts in network namespaces on this machine, as `vxnet demo` and `vxnet bench` build them: what
//! they create and its removal ([`cleanup`]), their names and addresses ([`addressing`]),
//! `vxnet run` started inside a namespace ([`engine`]), and vxnet's own byte-checked TCP sender
//! and receiver ([`transfer`]).

pub mod addressing;
pub mod cleanup;
pub mod engine;
pub mod transfer;

use std::thread::JoinHandle;

use vxnet_dataplane::sys::enter_named_netns_for_current_thread;

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

/// Runs `f` on a new thread inside the named namespace: the sockets it opens and the processes
/// it starts belong to that namespace (and stay there when handed to other threads), while no
/// other thread of this process changes namespace.
pub fn on_thread_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, NetnsError> + Send + 'static,
) -> JoinHandle<Result<T, NetnsError>> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_named_netns_for_current_thread(&ns)
            .map_err(|e| NetnsError::Setup(format!("entering namespace {ns}: {e}")))?;
        f()
    })
}

/// The result of a thread started by [`on_thread_in`].
pub fn join<T>(handle: JoinHandle<Result<T, NetnsError>>) -> Result<T, NetnsError> {
    handle
        .join()
        .map_err(|_| NetnsError::Setup("a thread inside a namespace panicked".into()))?
}

/// [`on_thread_in`], waited for.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, NetnsError> + Send + 'static,
) -> Result<T, NetnsError> {
    join(on_thread_in(ns, f))
}
