//! Waiting for readability with `poll(2)`, and an `eventfd(2)` to wake or stop workers.
//!
//! A worker waits on a handful of fds (TAP queue, UDP socket, wake-up eventfd); for so few,
//! poll is as fast as epoll and needs no registration state in the kernel.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{cvt, cvt_size};

/// A fixed set of fds to wait on for readability. The array is built once and reused.
///
/// The set stores fd numbers: the caller keeps the fds open while the set is used (a closed fd
/// shows up as "ready" with POLLNVAL, which is harmless but wasteful).
#[derive(Debug, Default, Clone)]
pub struct PollSet {
    fds: Vec<libc::pollfd>,
}

impl PollSet {
    pub fn new() -> PollSet {
        PollSet::default()
    }

    /// Adds `fd` and returns its index for [`PollSet::is_ready`].
    pub fn add(&mut self, fd: BorrowedFd<'_>) -> usize {
        self.fds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        self.fds.len() - 1
    }

    /// Waits until at least one fd is readable (or has an error/hangup) or `timeout` passes
    /// (`None`: forever). Returns the number of ready fds; 0 on timeout or on EINTR, so a signal
    /// just looks like a spurious wake-up.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        for p in &mut self.fds {
            p.revents = 0;
        }
        let ms = match timeout {
            None => -1,
            // Round up so a 0.5 ms timeout does not become a busy loop of 0 ms polls.
            Some(d) => d
                .as_nanos()
                .div_ceil(1_000_000)
                .min(libc::c_int::MAX as u128) as libc::c_int,
        };
        // SAFETY: `fds` is a valid array of `len` pollfd structs, exclusively borrowed for the call.
        let ret = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
        match cvt(ret) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Whether fd `index` was reported readable (or errored/hung up, which a read will reveal) by
    /// the last `wait`.
    pub fn is_ready(&self, index: usize) -> bool {
        self.fds.get(index).is_some_and(|p| {
            p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
        })
    }
}

/// A nonblocking eventfd used as a wake-up/stop signal: any thread calls `notify`, the worker
/// polling it wakes and calls `drain`.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: plain eventfd(2) call with constant flags; no memory is passed.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by eventfd(2), is open, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// Another fd for the same eventfd: a notification through either wakes those polling
    /// either.
    pub(crate) fn try_clone(&self) -> io::Result<EventFd> {
        Ok(EventFd {
            fd: self.fd.try_clone()?,
        })
    }

    /// Makes the fd readable. A counter already at its maximum (EAGAIN) is still signalled, so
    /// that is not an error.
    pub(crate) fn notify(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes exactly the 8 bytes of a live local u64, as eventfd requires.
        let ret = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        match cvt_size(ret) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Resets the fd to not readable; returns how many notifications were pending (0 if none).
    #[cfg(test)]
    fn drain(&self) -> io::Result<u64> {
        let mut value: u64 = 0;
        // SAFETY: reads exactly 8 bytes into a live local u64, as eventfd requires.
        let ret = unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        match cvt_size(ret) {
            Ok(_) => Ok(value),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits until `fd` can take a write (a full UDP send buffer drains), or `timeout` passes.
/// Returns whether it became writable. Workers use it as back-pressure instead of dropping.
pub(crate) fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, libc::c_int::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd, exclusively borrowed for the duration of the call.
    let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
    match cvt(ret) {
        Ok(n) => Ok(n > 0 && pfd.revents & libc::POLLOUT != 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Notified through one fd (the engine's), it wakes a poll on another (a worker's clone).
    #[test]
    fn eventfd_wakes_poll() {
        let ev = EventFd::new().unwrap();
        let mut set = PollSet::new();
        let i = set.add(ev.as_fd());
        assert_eq!(set.wait(Some(Duration::from_millis(10))).unwrap(), 0);
        assert!(!set.is_ready(i));

        let ev2 = ev.try_clone().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            ev2.notify().unwrap();
            ev2.notify().unwrap();
        });
        let start = Instant::now();
        assert_eq!(set.wait(Some(Duration::from_secs(5))).unwrap(), 1);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(set.is_ready(i));
        t.join().unwrap();
        assert_eq!(ev.drain().unwrap(), 2);
        assert_eq!(ev.drain().unwrap(), 0);
        assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), 0);
    }
}
