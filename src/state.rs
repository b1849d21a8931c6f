//! The local state directory: where each bastion's ledger, SSH key and lock live, the host-key
//! pins and the generated ssh config, and the generation of the proxy's SSH key. Every path in
//! the state dir is made here. It touches local files only.
//!
//! Layout: `<state dir>/<account>/<region>/<cluster>/{ledger.json, id_ed25519, id_ed25519.pub, lock}`,
//! and at the top `known_hosts`, `proxy-keys-from-tags` and `ssh/`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "the state directory {path} is not writable ({error}). Pass --state-dir DIR or set \
         BASTION_STATE_DIR to a directory you own"
    )]
    NotWritable {
        path: PathBuf,
        /// Shown in the message, so not a `source` (a chain would print it twice).
        error: std::io::Error,
    },
    #[error("no state directory could be found for this platform; pass --state-dir DIR")]
    NoDefault,
    #[error(
        "another `bastion` command is changing the bastion of cluster '{cluster}' right now \
         (lock {path}); wait for it to finish"
    )]
    Busy { cluster: String, path: PathBuf },
    #[error("cannot write the SSH key {path}: {error}")]
    Key {
        path: PathBuf,
        /// Shown in the message, so not a `source` (a chain would print it twice).
        error: std::io::Error,
    },
}
impl crate::exit::ExitStatus for StateError {
    fn exit_status(&self) -> Option<u8> {
        match self {
            // Another run holds the cluster: the operation, not the state dir, failed.
            StateError::Busy { .. } => Some(crate::exit::FAILED),
            _ => Some(crate::exit::LOCAL_STATE),
        }
    }
}

/// The default state directory: `$XDG_STATE_HOME/bastion` (`~/.local/state/bastion`), or the
/// platform's local data directory where there is no state directory (macOS, Windows).
pub fn default_state_dir() -> Result<PathBuf, StateError> {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .map(|d| d.join("bastion"))
        .ok_or(StateError::NoDefault)
}

/// The clusters with a folder in the state dir (`<root>/<account>/<region>/<cluster>`), sorted,
/// only names that are cluster names.
/// The pins of every proxy and head node this machine has met (OpenSSH's format).
pub fn known_hosts(root: &Path) -> PathBuf {
    root.join("known_hosts")
}

/// Beside `known_hosts`: the proxies whose keys were first learned from their tag, not their
/// console, so a later console check knows which pins it may still confirm.
pub fn proxy_keys_from_tags(known_hosts: &Path) -> PathBuf {
    known_hosts.with_file_name("proxy-keys-from-tags")
}

/// Where `ssh-config` writes its files.
pub fn ssh_config_dir(root: &Path) -> PathBuf {
    root.join("ssh")
}

pub fn known_clusters(root: &Path) -> Vec<String> {
    let dirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    };
    let mut names: Vec<String> = dirs(root)
        .iter()
        .flat_map(|account| dirs(account))
        .flat_map(|region| dirs(&region))
        .filter_map(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| crate::values::parse_cluster_name(n).is_ok())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The proxy key's file name in a cluster's folder (the public key beside it, `.pub`).
pub const PRIVATE_KEY_FILE: &str = "id_ed25519";

/// Where one cluster's bastion keeps its local files.
#[derive(Debug, Clone)]
pub struct BastionDir {
    pub dir: PathBuf,
    root: PathBuf,
}

impl BastionDir {
    pub fn new(root: &Path, account: &str, region: &str, cluster: &str) -> Self {
        BastionDir {
            dir: root.join(account).join(region).join(cluster),
            root: root.to_path_buf(),
        }
    }

    pub fn ledger(&self) -> PathBuf {
        self.dir.join("ledger.json")
    }

    /// The ledger of what `up --via eice` created (the endpoint's part, apart from the proxy's).
    pub fn endpoint_ledger(&self) -> PathBuf {
        self.dir.join("ledger-eice.json")
    }

    pub fn private_key(&self) -> PathBuf {
        self.dir.join(PRIVATE_KEY_FILE)
    }

    pub fn public_key(&self) -> PathBuf {
        self.private_key().with_extension("pub")
    }

    /// Creates the directory (0700) and checks that it takes a file.
    pub fn ensure(&self) -> Result<(), StateError> {
        let err = |source| StateError::NotWritable {
            path: self.dir.clone(),
            error: source,
        };
        // Every level below the state root, also where an older bastion made them 0755. The
        // root itself is the user's choice (--state-dir may name a shared folder): only what
        // bastion makes below it is made private.
        crate::files::private_dir(&self.dir).map_err(err)?;
        for level in self.dir.ancestors() {
            if !level.starts_with(&self.root) || level == self.root {
                break;
            }
            std::fs::set_permissions(level, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
        let probe = self.dir.join(".write-test");
        File::create(&probe).map_err(err)?;
        let _ = std::fs::remove_file(probe);
        Ok(())
    }

    /// Takes this cluster's local lock (held until the returned file is dropped), so that two
    /// commands on one machine do not change the same bastion at once. Across machines the
    /// deterministic key pair name does the same job (ImportKeyPair fails on a duplicate).
    pub fn lock(&self, cluster: &str) -> Result<File, StateError> {
        self.ensure()?;
        let path = self.dir.join("lock");
        let file = crate::files::private_file(&path).map_err(|source| StateError::NotWritable {
            path: path.clone(),
            error: source,
        })?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(StateError::Busy {
                cluster: cluster.into(),
                path,
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(StateError::NotWritable {
                path,
                error: source,
            }),
        }
    }
}

/// A fresh ed25519 key pair: the private key written 0600 (OpenSSH format), the public key
/// beside it as `<file>.pub`. Returns the public key line.
pub fn generate_key(private: &Path, public: &Path, comment: &str) -> Result<String, StateError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Key {
            path,
            error: source,
        }
    };
    let mut key = crate::ssh::client::new_ed25519_key();
    key.set_comment(comment);
    let private_text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| err(private)(std::io::Error::other(e.to_string())))?;
    let public_line = key
        .public_key()
        .to_openssh()
        .map_err(|e| err(public)(std::io::Error::other(e.to_string())))?;
    // A new file, 0600 from its creation; a stale one from an earlier, cleaned-up bastion is
    // replaced.
    let write_new = |path: &Path, text: &str| {
        let _ = std::fs::remove_file(path);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err(path))?;
        f.write_all(text.as_bytes()).map_err(err(path))?;
        f.sync_all().map_err(err(path))
    };
    let write = || {
        write_new(private, &private_text)?;
        write_new(public, &format!("{public_line}\n"))
    };
    crate::failpoint::local("generate_key", write, err(private))?;
    Ok(public_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_and_parseable() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k"), dir.path().join("k.pub"));
        let line = generate_key(&private, &public, "bastion:test").unwrap();
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let parsed = russh::keys::PrivateKey::read_openssh_file(&private).unwrap();
        assert_eq!(parsed.public_key().to_openssh().unwrap(), line);
        // A second generation replaces the first.
        let again = generate_key(&private, &public, "bastion:test").unwrap();
        assert_ne!(again, line);
    }

    #[test]
    fn a_second_lock_on_the_same_cluster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let b = BastionDir::new(dir.path(), "1", "r", "c");
        let held = b.lock("c").unwrap();
        assert!(matches!(b.lock("c"), Err(StateError::Busy { .. })));
        drop(held);
        assert!(b.lock("c").is_ok());
    }
}
