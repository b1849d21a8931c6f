//! Host keys: the proxy's key must equal its `bastion:host-key` tag; the head node's is pinned
//! on first use in `<state dir>/known_hosts` (OpenSSH format, one `alias keytype base64` line per
//! host, the alias being the instance id, as `HostKeyAlias` in the generated ssh config).

use std::io::Write;
use std::path::{Path, PathBuf};

use russh::keys::{HashAlg, PublicKey};

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error(
        "the proxy {instance} presented host key {got}, but its bastion:host-key tag (read over the \
         AWS API) says {expected}. Refusing to connect: someone may be intercepting the connection, \
         or --bastion-address points elsewhere. If the proxy was replaced, run `bastion down` and `bastion up`"
    )]
    ProxyMismatch {
        instance: String,
        expected: String,
        got: String,
    },
    #[error(
        "the proxy {instance} has not published its host key yet (no bastion:host-key tag); its \
         bootstrap may still be running (`bastion status`)"
    )]
    ProxyUnpublished { instance: String },
    #[error(
        "the head node's host key changed: {alias} presented {got}, but {file} (line {line}) pinned {expected}. \
         Refusing to connect. If the head node was legitimately rebuilt, delete that line and retry"
    )]
    HeadNodeChanged {
        alias: String,
        file: PathBuf,
        line: usize,
        expected: String,
        got: String,
    },
    #[error("the server presented a certificate; bastion verifies plain host keys only")]
    Certificate,
    #[error("cannot read or write {file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
}

pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Parses `ssh-ed25519 AAAA...` (an optional comment is ignored).
pub fn parse_public_key(text: &str) -> Option<PublicKey> {
    PublicKey::from_openssh(text.trim()).ok()
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

/// The file's text; a file that does not exist yet reads as empty.
fn read_or_empty(file: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        other => other,
    }
}

pub enum Pinned {
    /// The alias was known with this key.
    Known,
    /// The alias was new; the key is now pinned.
    Learned,
}

/// Checks `key` for `alias` against `file`, learning it when the alias is new.
pub fn check_or_pin(file: &Path, alias: &str, key: &PublicKey) -> Result<Pinned, HostKeyError> {
    let io = |source| HostKeyError::Io {
        file: file.to_path_buf(),
        source,
    };
    let text = read_or_empty(file).map_err(io)?;
    for (n, line) in text.lines().enumerate() {
        let mut parts = line.split_whitespace();
        let (Some(hosts), Some(kind), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !hosts.split(',').any(|h| h == alias) {
            continue;
        }
        let Some(pinned) = parse_public_key(&format!("{kind} {data}")) else {
            continue;
        };
        if pinned.algorithm() != key.algorithm() {
            continue;
        }
        if same_key(&pinned, key) {
            return Ok(Pinned::Known);
        }
        return Err(HostKeyError::HeadNodeChanged {
            alias: alias.into(),
            file: file.to_path_buf(),
            line: n + 1,
            expected: fingerprint(&pinned),
            got: fingerprint(key),
        });
    }
    append(file, alias, key).map_err(io)?;
    Ok(Pinned::Learned)
}

fn append(file: &Path, alias: &str, key: &PublicKey) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let line = key.to_openssh().map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    writeln!(f, "{alias} {line}")
}

/// Replaces the lines of `alias` in `file` with `key` (for the proxy, whose key AWS vouches for).
pub fn replace(file: &Path, alias: &str, key: &PublicKey) -> Result<(), HostKeyError> {
    let io = |source| HostKeyError::Io {
        file: file.to_path_buf(),
        source,
    };
    let text = read_or_empty(file).map_err(io)?;
    let mut kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_none_or(|h| !h.split(',').any(|h| h == alias))
        })
        .collect();
    let line = format!(
        "{alias} {}",
        key.to_openssh().map_err(|e| io(std::io::Error::other(e)))?
    );
    kept.push(&line);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, kept.join("\n") + "\n").map_err(io)?;
    std::fs::rename(&tmp, file).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    #[test]
    fn first_use_pins_and_a_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        let (a, b) = (parse_public_key(A).unwrap(), parse_public_key(B).unwrap());
        assert!(matches!(
            check_or_pin(&file, "i-1", &a),
            Ok(Pinned::Learned)
        ));
        assert!(matches!(check_or_pin(&file, "i-1", &a), Ok(Pinned::Known)));
        assert!(matches!(
            check_or_pin(&file, "i-2", &b),
            Ok(Pinned::Learned)
        ));
        match check_or_pin(&file, "i-1", &b) {
            Err(HostKeyError::HeadNodeChanged {
                line,
                expected,
                got,
                ..
            }) => {
                assert_eq!(line, 1);
                assert_eq!(expected, fingerprint(&a));
                assert_eq!(got, fingerprint(&b));
            }
            _ => panic!("a changed key must be refused"),
        }
        replace(&file, "i-1", &b).unwrap();
        assert!(matches!(check_or_pin(&file, "i-1", &b), Ok(Pinned::Known)));
        assert!(matches!(check_or_pin(&file, "i-2", &b), Ok(Pinned::Known)));
    }
}
