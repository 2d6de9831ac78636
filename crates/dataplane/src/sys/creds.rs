//! Who is on the other end of a Unix socket, and who may create one: `SO_PEERCRED` and
//! `SO_PEERGROUPS` (the peer's uid, gid and supplementary groups as the kernel recorded them at
//! `connect`, which a client cannot forge), group names through NSS (`getgrnam_r`), and the mode
//! of a socket inode set before `bind` so the file never exists with a umask-derived mode.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cvt;

/// The peer of a connected Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerCredentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (Linux 4.13+; empty where the kernel lacks SO_PEERGROUPS).
    pub groups: Vec<u32>,
}

impl PeerCredentials {
    /// Whether the peer has `gid` as its primary or a supplementary group.
    pub(crate) fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Reads the credentials of the process that connected `fd`.
pub(crate) fn peer_credentials(fd: BorrowedFd<'_>) -> io::Result<PeerCredentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes (one `ucred`) into `cred`, a live local of
    // that size, and updates `len`.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    cvt(ret)?;
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
        groups: peer_groups(fd).unwrap_or_default(),
    })
}

fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer is valid for writes of `len` bytes; the kernel writes at most that
        // many (or fails with ERANGE, setting `len` to the size it needs) and updates `len`.
        let ret = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        match cvt(ret) {
            Ok(_) => {
                groups.truncate(len as usize / size_of::<libc::gid_t>());
                return Ok(groups);
            }
            // NGROUPS_MAX is 65536: never more than that many.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && groups.len() < 65536 => {
                let needed = (len as usize / size_of::<libc::gid_t>()).max(groups.len() * 2);
                groups.resize(needed.min(65536), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The gid of group `name` (a number is taken as a gid as it is), through NSS like `chgrp`.
/// `Ok(None)` when there is no such group.
pub(crate) fn group_id(name: &str) -> io::Result<Option<u32>> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Some(gid));
    }
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "group name contains NUL"))?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: `group` is plain data (integers and pointers) for which all-zero is valid; it
        // is only read after getgrnam_r filled it in.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `cname` is NUL-terminated, `group` and
        // `found` are live locals, and `buf` is writable for `buf.len()` bytes; the strings the
        // result points into live in `buf`, which outlives their (non-)use here.
        let ret = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut group,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        match ret {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(group.gr_gid)),
            libc::ERANGE if buf.len() < 1 << 20 => {
                let bigger = buf.len() * 4;
                buf.resize(bigger, 0);
            }
            // "Not found" comes back as one of these from some NSS modules.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// The name of group `gid` through NSS, like `ls -l` shows it; `None` when it has none.
pub(crate) fn group_name(gid: u32) -> Option<String> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: as in `group_id`: all-zero is a valid `group`, read only once filled in.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `group` and `found` are live locals and `buf` is writable for `buf.len()`
        // bytes; `gr_name` points into `buf`, which is alive while it is copied below.
        let ret =
            unsafe { libc::getgrgid_r(gid, &mut group, buf.as_mut_ptr(), buf.len(), &mut found) };
        match ret {
            0 if found.is_null() || group.gr_name.is_null() => return None,
            0 => {
                // SAFETY: getgrgid_r succeeded, so `gr_name` is a NUL-terminated string in `buf`.
                let name = unsafe { std::ffi::CStr::from_ptr(group.gr_name) };
                return Some(name.to_string_lossy().into_owned());
            }
            libc::ERANGE if buf.len() < 1 << 20 => {
                let bigger = buf.len() * 4;
                buf.resize(bigger, 0);
            }
            _ => return None,
        }
    }
}

/// The effective uid of this process.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sets the mode of a not yet bound Unix socket. Linux creates the socket file at `bind` with
/// this mode less the umask, so a mode set here (0600, 0660) is what the file has from the
/// first moment it exists, whatever the umask of the process (a `chmod` after `bind` would
/// leave a window with the umask's mode).
pub(crate) fn set_socket_mode(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod(2) on an fd the caller keeps open for the call; it reads no user memory.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn peer_of_a_socket_pair_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_credentials(a.as_fd()).unwrap();
        assert_eq!(cred.pid, std::process::id() as i32);
        assert_eq!(cred.uid, effective_uid());
        assert!(cred.in_group(cred.gid));
    }

    #[test]
    fn groups_by_name_and_number() {
        assert_eq!(group_id("root").unwrap(), Some(0));
        assert_eq!(group_id("4242").unwrap(), Some(4242));
        assert_eq!(group_id("no-such-group-vxnet").unwrap(), None);
    }
}
