//! `vxnet key`: network keys for encrypted overlays, and the `--key-file` loader.
//!
//! A key is 32 random bytes written as 64 hex digits and a newline. Hex rather than base64: it is
//! the form Wireshark's ESP SA table and `ip xfrm` take keys in, its length is obvious at a glance
//! (64 digits, no padding characters), and it survives copy-paste, shells and TOML unquoted.
//! Key files must be readable by their owner only, as ssh insists for private keys: a network key
//! readable by other users lets them decrypt and forge the overlay's traffic.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rand::RngCore;
/// The loader lives with the engine (a reload re-reads key files there); this is the same one.
pub use vxnet_dataplane::keyring::{load_key_file, KeyFileError};
use vxnet_encap::esp::{NetworkKey, NETWORK_KEY_LEN};

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    cmd: KeyCmd,
}

#[derive(Debug, Subcommand)]
enum KeyCmd {
    /// Print a new random 32-byte network key (64 hex digits) for `--key-file` / `key_file`.
    Generate {
        /// Write it to FILE (created with mode 0600, never overwritten) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check that FILE is a usable key file: readable, owner-only, 64 hex digits.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

pub fn run(args: KeyArgs) -> Result<(), KeyFileError> {
    match args.cmd {
        KeyCmd::Generate { out: None } => {
            println!("{}", generate().to_hex());
            Ok(())
        }
        KeyCmd::Generate { out: Some(path) } => write_new_key_file(&path, &generate()),
        KeyCmd::Check { file } => {
            load_key_file(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
    }
}

/// A new network key from the operating system's CSPRNG.
pub fn generate() -> NetworkKey {
    let mut bytes = [0u8; NETWORK_KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    NetworkKey::from_bytes(bytes)
}

fn write_new_key_file(path: &Path, key: &NetworkKey) -> Result<(), KeyFileError> {
    let shown = path.display().to_string();
    // `--out /etc/vxnet/blue.key` on a fresh host: the folder is made owner-only, as the key
    // in it is (folders that exist are left as they are).
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(|source| KeyFileError::Folder {
                path: shown.clone(),
                folder: folder.display().to_string(),
                source,
            })?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::Exists {
                    path: shown.clone(),
                }
            } else {
                KeyFileError::Write {
                    path: shown.clone(),
                    source,
                }
            }
        })?;
    writeln!(file, "{}", key.to_hex()).map_err(|source| KeyFileError::Write {
        path: shown,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_mode(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn generated_keys_are_random_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.key");
        let key = generate();
        assert_ne!(key, generate());
        write_new_key_file(&path, &key).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(load_key_file(&path).unwrap(), key);
        assert!(matches!(
            write_new_key_file(&path, &key),
            Err(KeyFileError::Exists { .. })
        ));
        assert_eq!(load_key_file(&path).unwrap(), key, "not overwritten");
    }

    #[test]
    fn bad_key_files_get_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let good = "ab".repeat(32) + "\n";
        let missing = dir.path().join("nope.key");
        let err = load_key_file(&missing).unwrap_err();
        assert!(matches!(err, KeyFileError::Missing { .. }));
        assert!(err.to_string().contains("nope.key does not exist"), "{err}");

        let open = write_mode(dir.path(), "open.key", &good, 0o644);
        let err = load_key_file(&open).unwrap_err();
        assert!(err.to_string().contains("mode 0644"), "{err}");

        let short = write_mode(dir.path(), "short.key", "abcd\n", 0o600);
        let err = load_key_file(&short).unwrap_err();
        assert!(err.to_string().contains("found 4 characters"), "{err}");

        let not_hex = write_mode(dir.path(), "nothex.key", &"zz".repeat(32), 0o600);
        assert!(matches!(
            load_key_file(&not_hex),
            Err(KeyFileError::Malformed { .. })
        ));

        let err = load_key_file(dir.path()).unwrap_err();
        assert!(matches!(err, KeyFileError::NotAFile { .. }), "{err}");

        let ok = write_mode(dir.path(), "ok.key", &good, 0o400);
        assert!(load_key_file(&ok).is_ok());
    }
}
