//! Creating the control socket file: mode 0600 (0660 with `--control-group`) from the moment it
//! exists, whatever the umask; never replacing anything but a stale socket left by an engine
//! that died; removed on exit only if it is still the one this engine bound.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use super::access::Access;
use crate::sys::creds;

/// Connections the kernel queues before the engine accepts them.
const BACKLOG: i32 = 128;

/// The bound control socket and who may use it, until the engine serves it.
#[derive(Debug)]
pub(crate) struct ControlListener {
    pub listener: std::os::unix::net::UnixListener,
    pub access: Access,
}

/// Removes the socket file when the engine stops, but only the one it bound: a file another
/// engine put there meanwhile (after ours was deleted by hand) is left alone.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    /// (device, inode, change time in ns) of the file `bind` created: an inode number alone
    /// is reused as soon as a file is deleted.
    identity: (u64, u64, i64),
    /// Dropped after the socket file is removed (fields drop after `drop` ran).
    _dirs: CreatedDirs,
}

/// The directories `bind` created to hold the socket (deepest first), removed again when the
/// socket goes, if nothing else was put in them: a `--control` path in a new directory leaves
/// nothing behind.
#[derive(Debug, Default)]
struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    fn create(dir: &Path) -> io::Result<Self> {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            missing.push(d.to_path_buf());
            at = d.parent();
        }
        // Held first, so a failure part way removes what was made.
        let created = CreatedDirs(missing);
        std::fs::create_dir_all(dir)?;
        Ok(created)
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            // Fails, leaving it, when anything else is in it.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if identity(&meta) == self.identity {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "control socket {path} is in use by another running vxnet engine (use --control PATH)"
    )]
    InUse { path: PathBuf },
    #[error("control socket {path}: {what} is in the way; refusing to replace it (remove it or use --control PATH)")]
    NotASocket { path: PathBuf, what: &'static str },
    #[error("control socket {path}: an existing socket there cannot be checked ({source}); refusing to replace it")]
    Unverifiable { path: PathBuf, source: io::Error },
    #[error("--control-group {0:?}: no such group")]
    UnknownGroup(String),
    #[error("cannot create control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64, i64) {
    (
        meta.dev(),
        meta.ino(),
        meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
    )
}

pub(crate) fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "a device node"
    } else {
        "a file that is not a socket"
    }
}

/// Clears the way for a new socket at `path`: nothing there, or a socket nobody listens on
/// (removed). Anything else is refused and left exactly as it was.
fn clear_stale(path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BindError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket {
            path: path.to_path_buf(),
            what: kind_of(&meta),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(BindError::InUse {
            path: path.to_path_buf(),
        }),
        // Nobody listens: the socket of an engine that died.
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => std::fs::remove_file(path)
            .map_err(|source| BindError::Io {
                path: path.to_path_buf(),
                source,
            }),
        // A full backlog means a live listener, too busy to answer.
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(BindError::InUse {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(BindError::Unverifiable {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Checks that a control socket can go at `path`: nothing there, or a stale socket (removed).
/// Lets the engine refuse a clash before it creates anything; [`bind`] checks again.
pub(crate) fn check_path(path: &Path) -> Result<(), BindError> {
    clear_stale(path)
}

/// Binds the control socket at `path`, owned by this process's user, mode 0600, or group
/// `group` with mode 0660 when given (a group name or number).
pub(crate) fn bind(
    path: &Path,
    group: Option<&str>,
) -> Result<(ControlListener, SocketFile), BindError> {
    let io = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    let gid = match group {
        None => None,
        Some(name) => Some(
            creds::group_id(name)
                .map_err(io)?
                .ok_or_else(|| BindError::UnknownGroup(name.to_string()))?,
        ),
    };
    let dirs = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => CreatedDirs::create(dir).map_err(io)?,
        None => CreatedDirs::default(),
    };
    clear_stale(path)?;

    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    let socket =
        Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None).map_err(io)?;
    // The file is created with this mode less the umask: never more open than `mode`.
    creds::set_socket_mode(socket.as_fd(), mode).map_err(io)?;
    let address = SockAddr::unix(path).map_err(io)?;
    socket.bind(&address).map_err(|source| {
        if source.raw_os_error() == Some(libc::EADDRINUSE) {
            // Created by someone else since `clear_stale` looked; theirs now.
            BindError::InUse {
                path: path.to_path_buf(),
            }
        } else {
            io(source)
        }
    })?;
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    let mut file = SocketFile {
        path: path.to_path_buf(),
        identity: identity(&meta),
        _dirs: dirs,
    };
    // From here on a failure drops `file`, which removes the socket again.
    if let Some(gid) = gid {
        std::os::unix::fs::lchown(path, None, Some(gid)).map_err(io)?;
    }
    // ... and now exactly `mode` (a umask such as 027 took the group's bits away).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    // The change time moved with chown and chmod.
    file.identity = identity(&std::fs::symlink_metadata(path).map_err(io)?);
    socket.listen(BACKLOG).map_err(io)?;
    Ok((
        ControlListener {
            listener: socket.into(),
            access: Access::new(gid),
        },
        file,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vxnet-sock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn socket_is_0600_and_removed_on_drop() {
        let dir = temp_dir("mode");
        let path = dir.join("c.sock");
        let (listener, file) = bind(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second bind finds it live.
        assert!(matches!(bind(&path, None), Err(BindError::InUse { .. })));
        // Someone deletes our file and another engine binds the path: when we stop, theirs
        // stays (our inode lives on with our listener, so the two cannot be confused).
        std::fs::remove_file(&path).unwrap();
        let (l2, file2) = bind(&path, Some("root")).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), 0);
        drop(listener);
        drop(file);
        assert!(path.exists(), "the other engine's socket was removed");
        // Stale once its listener is gone: replaced by the next bind.
        drop(l2);
        let (_l3, file3) = bind(&path, None).unwrap();
        drop(file2);
        drop(file3);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn directories_made_for_the_socket_go_with_it() {
        let dir = temp_dir("dirs");
        let path = dir.join("new").join("deeper").join("c.sock");
        let (listener, file) = bind(&path, None).unwrap();
        assert!(path.exists());
        drop((listener, file));
        assert!(
            !dir.join("new").exists(),
            "the directories made for it stayed"
        );
        assert!(dir.is_dir(), "a directory that was there went");
        // One that holds something else by then stays, with what it holds.
        let (listener, file) = bind(&path, None).unwrap();
        std::fs::write(dir.join("new").join("other"), "keep me").unwrap();
        drop((listener, file));
        assert!(dir.join("new").join("other").exists());
        assert!(!dir.join("new").join("deeper").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn anything_but_a_stale_socket_is_left_alone() {
        let dir = temp_dir("clash");
        let file = dir.join("regular");
        std::fs::write(&file, "keep me").unwrap();
        let e = bind(&file, None).unwrap_err();
        assert!(e.to_string().contains("a regular file"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = bind(&sub, None).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        assert!(sub.is_dir());
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = bind(&link, None).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(matches!(
            bind(&dir.join("x.sock"), Some("no-such-group-vxnet")),
            Err(BindError::UnknownGroup(_))
        ));
        assert!(!dir.join("x.sock").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
