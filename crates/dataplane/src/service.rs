//! The service manager's view of the engine (systemd `Type=notify`): READY=1 once the workers
//! run and the control socket is served, RELOADING=1 … READY=1 around a reload, STOPPING=1 on
//! the way out. Without `$NOTIFY_SOCKET` (not started by systemd) each call does nothing.

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager ($NOTIFY_SOCKET): {e}");
    }
}

/// The engine forwards and answers on its control socket.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts (systemd waits for the next READY=1 before `systemctl reload` returns; the
/// timestamp is what `Type=notify-reload` asks for).
pub(crate) fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}
