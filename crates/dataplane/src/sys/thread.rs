//! Kernel thread ids: a worker reports its own, and the engine's supervisor asks the kernel
//! whether that thread still exists. A thread the kernel killed inside a system call (a BUG
//! in the kernel: `do_exit` of that one task) leaves no trace in Rust: no unwinding, no
//! result for its `JoinHandle`; only its thread id disappears.

use std::io;

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
}
