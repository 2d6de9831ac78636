//! Kernel thread ids: a worker reports its own, and the engine's supervisor asks the kernel
//! whether that thread still exists. A thread the kernel killed inside a system call (a BUG
//! in the kernel: `do_exit` of that one task) leaves no trace in Rust: no unwinding, no
//! result for its `JoinHandle`; only its thread id disappears.
//!
//! What such a thread owned is never dropped: its stack is not unwound. Its fds stay open in
//! the process's table, which its threads share, and they can matter (a TAP queue fd keeps the
//! TAP alive after its network is removed). [`hand_over`] keeps the numbers of fds handed to a
//! thread so that [`Handed::close_orphans`] can close them once that thread is gone without
//! having dropped them.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

/// The kernel's id of the calling thread (`gettid(2)`).
pub(crate) fn current_tid() -> i32 {
    // SAFETY: gettid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether thread `tid` of this process still exists: `tgkill(2)` with signal 0 checks
/// without sending anything. Only `ESRCH` (no such thread in this thread group) says it is
/// gone; any other error counts as alive, so a doubt never restarts the workers.
pub(crate) fn thread_exists(tid: i32) -> bool {
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: tgkill takes three integers and touches no memory; signal 0 is only a check.
    let ret = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, 0) };
    ret == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// What a thread and the one that handed it fds share.
#[derive(Debug, Default)]
struct Owner {
    /// The owning thread's kernel id, stored by it when it runs (0 until then).
    tid: AtomicI32,
    /// Set as the owner starts dropping the fds (see [`OwnerMark`]).
    dropping: AtomicBool,
}

/// Fds handed to one thread to own, as the thread that handed them over sees them: the
/// owner's kernel id and the fds' numbers.
#[derive(Debug)]
pub(crate) struct Handed {
    owner: Arc<Owner>,
    fds: Vec<RawFd>,
}

/// The owning thread's half of [`hand_over`]. It must be dropped before the fds: declared ahead
/// of them in the struct that holds both (a struct's fields are dropped in declaration order,
/// on a return and on a panic's unwinding alike).
#[derive(Debug)]
pub(crate) struct OwnerMark(Arc<Owner>);

/// `fds` are about to be moved to one thread (their clones made for it alone, so that thread is
/// their only owner); returns the handing thread's record of them and the owner's mark.
pub(crate) fn hand_over<'a>(fds: impl IntoIterator<Item = BorrowedFd<'a>>) -> (Handed, OwnerMark) {
    let owner = Arc::new(Owner::default());
    let fds = fds.into_iter().map(|fd| fd.as_raw_fd()).collect();
    (
        Handed {
            owner: Arc::clone(&owner),
            fds,
        },
        OwnerMark(owner),
    )
}

impl OwnerMark {
    /// Called by the owning thread first thing: it is the thread [`Handed`] watches.
    pub(crate) fn runs_here(&self) {
        self.0.tid.store(current_tid(), Ordering::SeqCst);
    }
}

impl Drop for OwnerMark {
    fn drop(&mut self) {
        self.0.dropping.store(true, Ordering::SeqCst);
    }
}

impl Handed {
    /// The owning thread's kernel id; 0 until it runs.
    pub(crate) fn tid(&self) -> i32 {
        self.owner.tid.load(Ordering::SeqCst)
    }

    /// Closes the fds if their owner's thread ran, no longer exists and never started dropping
    /// them: the kernel ended it. Returns how many were closed (0: the owner closes them, or
    /// already did, or may still be running).
    pub(crate) fn close_orphans(self) -> usize {
        let tid = self.tid();
        // The mark is read after the thread is known gone: a thread that no longer exists
        // stores nothing more.
        if tid == 0 || thread_exists(tid) || self.owner.dropping.load(Ordering::SeqCst) {
            return 0;
        }
        for &fd in &self.fds {
            // SAFETY: `fd` was open and owned by one `OwnedFd` of the owner's alone (`hand_over`
            // was given fds cloned for it). The owner closes it only by dropping that `OwnedFd`,
            // after dropping its `OwnerMark`, which it has not: so `fd` is still open and still
            // that one. Its thread no longer exists, so it never runs again: it will neither use
            // nor close `fd`, and its `OwnedFd` stays in memory nobody frees or reads (its
            // stack is never unwound). Taking ownership here is the drop it will never do, once
            // (`self` is consumed).
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        self.fds.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_exists_until_it_has_ended() {
        assert!(thread_exists(current_tid()));
        let tid = std::thread::spawn(current_tid).join().unwrap_or(0);
        assert_ne!(tid, 0);
        // The kernel reaps an ended thread of a group on its own (no zombie to wait for), a
        // moment after `join` returned (the tid is cleared first).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while thread_exists(tid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!thread_exists(tid));
    }

    /// A thread that ends without dropping what it owns (as one the kernel ends): its fds are
    /// closed for it; one that drops them keeps them its own business.
    #[test]
    fn fds_of_a_thread_gone_without_dropping_them_are_closed() {
        use std::io::Read;
        use std::os::fd::AsFd;
        use std::os::unix::net::UnixStream;

        for drops_them in [false, true] {
            let (ours, mut peer) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
            let given = ours.try_clone().unwrap_or_else(|e| panic!("{e}"));
            drop(ours);
            let (handed, mark) = hand_over([given.as_fd()]);
            std::thread::spawn(move || {
                mark.runs_here();
                // The mark first, as the owner's fields are declared.
                let owned = (mark, given);
                if !drops_them {
                    std::mem::forget(owned);
                }
            })
            .join()
            .unwrap_or_else(|_| panic!("the owner panicked"));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while thread_exists(handed.tid()) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert_eq!(handed.close_orphans(), if drops_them { 0 } else { 1 });
            // Every fd of the stream's other end is closed: the peer reads its end.
            peer.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                peer.read(&mut [0u8; 1]).ok(),
                Some(0),
                "drops_them: {drops_them}"
            );
        }
    }

    #[test]
    fn nothing_is_closed_for_a_thread_that_runs() {
        use std::os::fd::AsFd;
        let stdin = std::io::stdin();
        let (handed, mark) = hand_over([stdin.as_fd()]);
        assert_eq!(handed.tid(), 0);
        mark.runs_here();
        assert_eq!(handed.tid(), current_tid());
        assert_eq!(handed.close_orphans(), 0);
    }
}
