//! Host keys: the proxy's key must equal its `bastion:host-key` tag; the head node's is pinned
//! on first use in `<state dir>/known_hosts` (OpenSSH format, one `alias keytype base64` line per
//! host, the alias being the instance id, as `HostKeyAlias` in the generated ssh config).
//!
//! Everything read here is untrusted: the tag (anyone with `ec2:CreateTags` writes it), and the
//! known_hosts file (OpenSSH writes into it too, hashed or not). A tag is parsed strictly into a
//! key, and only keys re-encoded by this module (`algorithm base64`, no comment) are ever written,
//! so no text from a tag can become a line of a file. Writers take a lock beside the file and
//! replace it through a unique temporary file, so concurrent `connect`s never lose a line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use hmac::{Hmac, Mac};
use russh::keys::ssh_key::Algorithm;
use russh::keys::{HashAlg, PublicKey};

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error(
        "the proxy {instance} presented host key {got}, which is not in {anchor} ({expected}). \
         Refusing to connect: someone may be intercepting the connection, or --bastion-address \
         points elsewhere. If the proxy was replaced, run `bastion down` and `bastion up`"
    )]
    ProxyMismatch {
        instance: String,
        /// What the expected key came from.
        anchor: String,
        expected: String,
        got: String,
    },
    #[error(
        "the key pinned for the proxy {instance} ({pinned}) came from its bastion:host-key tag, \
         while its console showed no keys; its console now shows {console}, without it. \
         Refusing to connect: the tag may have been rewritten before the first connection. If \
         the proxy was replaced, run `bastion down` and `bastion up`"
    )]
    ProxyPinNotInConsole {
        instance: String,
        pinned: String,
        console: String,
    },
    #[error(
        "the proxy {instance}'s bastion:host-key tag names {tag}, but {anchor} {anchored}. \
         Refusing to connect: someone with ec2:CreateTags may have rewritten the tag (check \
         CloudTrail), or the connection would be intercepted"
    )]
    ProxyTagDisagrees {
        instance: String,
        tag: String,
        anchor: String,
        anchored: String,
    },
    #[error(
        "the proxy {instance} has not published its host key yet (no bastion:host-key tag); its \
         bootstrap may still be running (`bastion status`)"
    )]
    ProxyUnpublished { instance: String },
    #[error(
        "the bastion:host-key tag of {instance} is not a host key bastion accepts ({reason}); refusing \
         to trust it. bastion accepts exactly `<algorithm> <base64>` with an optional plain comment, \
         one line, at most {TAG_MAX_LEN} characters, algorithm one of {algorithms}. Someone with \
         ec2:CreateTags may have rewritten the tag: check who did in CloudTrail, then `bastion down` and `bastion up`",
        algorithms = TAG_ALGORITHMS.join(", ")
    )]
    BadTag { instance: String, reason: String },
    #[error(transparent)]
    HeadNodeChanged(Box<ChangedKey>),
    #[error(
        "the head node {alias} presented host key {got}, which {file} (line {line}) marks @revoked; refusing to connect"
    )]
    Revoked {
        alias: String,
        file: PathBuf,
        line: usize,
        got: String,
    },
    #[error(
        "the head node {alias} presented host key {got}, which is not one of the host keys it \
         printed to its console at first boot ({listed}; read with ec2:GetConsoleOutput). Refusing \
         to pin it: the connection may be intercepted (root on the proxy could answer in the head \
         node's place). If the head node was re-keyed since its first boot, compare the key on the \
         head node itself (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) before you trust it"
    )]
    NotInConsole {
        alias: String,
        got: String,
        listed: String,
    },
    #[error("the server presented a certificate; bastion verifies plain host keys only")]
    Certificate,
    #[error("cannot read or write {file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// A head node that presents a key other than the one pinned for it (of any algorithm).
#[derive(Debug, thiserror::Error)]
#[error(
    "the head node's host key changed: {alias} presented {got}, but {file} (line {line}) pinned {expected}. \
     Refusing to connect. If the head node was legitimately rebuilt or re-keyed, run \
     `bastion forget --cluster {cluster}` (it prints the fingerprint it removes) and retry",
    file = file.display(),
    cluster = cluster.as_deref().unwrap_or("NAME")
)]
pub struct ChangedKey {
    pub alias: String,
    pub cluster: Option<String>,
    pub file: PathBuf,
    pub line: usize,
    pub expected: String,
    pub got: String,
}

/// The longest tag value AWS stores (EC2 tag values are at most 256 Unicode characters).
pub const TAG_MAX_LEN: usize = 256;

/// Host-key algorithms a `bastion:host-key` tag may name: those whose public key fits in a tag
/// (an RSA key does not) and that the proxy's bootstrap could publish.
pub const TAG_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
];

pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The key alone, as bastion writes it: `algorithm base64`, never a comment.
pub fn encode(key: &PublicKey) -> String {
    PublicKey::new(key.key_data().clone(), "")
        .to_openssh()
        .unwrap_or_default()
}

/// Parses a `bastion:host-key` tag of `instance`, strictly: `<algorithm> <base64> [comment]`,
/// single spaces, printable ASCII, a bounded length, an allowed algorithm, base64 that decodes
/// to a key of that algorithm. The comment, if any, is dropped.
pub fn parse_host_key_tag(instance: &str, value: &str) -> Result<PublicKey, HostKeyError> {
    let bad = |reason: &str| HostKeyError::BadTag {
        instance: instance.into(),
        reason: reason.into(),
    };
    if value.len() > TAG_MAX_LEN {
        return Err(bad("longer than a host key"));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(bad("it holds a line break or another control character"));
    }
    if !value.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err(bad("it holds characters outside printable ASCII"));
    }
    let fields: Vec<&str> = value.split(' ').collect();
    let (algorithm, data, comment) = match fields.as_slice() {
        [a, d] => (*a, *d, None),
        [a, d, c] => (*a, *d, Some(*c)),
        _ => {
            return Err(bad(
                "it is not `<algorithm> <base64>` with at most one plain comment, single spaces",
            ));
        }
    };
    if !TAG_ALGORITHMS.contains(&algorithm) {
        return Err(bad("its algorithm is not on bastion's list"));
    }
    if let Some(c) = comment
        && (c.is_empty() || c.starts_with('@') || c.starts_with('#'))
    {
        return Err(bad("its comment is not plain"));
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| bad("its key is not valid base64"))?;
    let key = PublicKey::from_bytes(&blob).map_err(|_| bad("its key does not decode"))?;
    if key.algorithm().as_str() != algorithm {
        return Err(bad(
            "the key inside is of another algorithm than the one named",
        ));
    }
    Ok(key)
}

/// Parses a key line that bastion wrote or a user gave (`ssh-ed25519 AAAA...`); the comment is
/// dropped.
pub fn parse_public_key(text: &str) -> Option<PublicKey> {
    PublicKey::from_openssh(text.trim())
        .ok()
        .map(|k| PublicKey::new(k.key_data().clone(), ""))
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

/// Does a known_hosts host field name `alias`? As OpenSSH reads it: hashed `|1|salt|hash`, or
/// comma-separated patterns with `*` and `?`, where a matching `!pattern` excludes the host.
fn names(hosts: &str, alias: &str) -> bool {
    if let Some(hashed) = hosts.strip_prefix("|1|") {
        return hashed_matches(hashed, alias);
    }
    let mut positive = false;
    for p in hosts.split(',') {
        match p.strip_prefix('!') {
            Some(neg) if glob(neg, alias) => return false,
            Some(_) => {}
            None => positive |= glob(p, alias),
        }
    }
    positive
}

/// OpenSSH's host pattern: `*` any run of characters, `?` one character, the rest literal.
fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// OpenSSH's `HashKnownHosts` form: base64(salt) `|` base64(HMAC-SHA1(salt, host)).
fn hashed_matches(hashed: &str, alias: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(alias.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// One line of a known_hosts file that names `alias`.
struct Entry {
    line: usize,
    revoked: bool,
    key: PublicKey,
}

/// The entries for `alias`: plain and hashed lines, `@revoked` kept, `@cert-authority` skipped
/// (bastion accepts no certificates), unparsable lines ignored as OpenSSH ignores them.
fn entries(text: &str, alias: &str) -> Vec<Entry> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut parts = line.split_whitespace().peekable();
        let mut revoked = false;
        match parts.peek() {
            Some(m) if *m == "@revoked" => {
                revoked = true;
                parts.next();
            }
            Some(m) if m.starts_with('@') || m.starts_with('#') => continue,
            None => continue,
            _ => {}
        }
        let (Some(hosts), Some(kind), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !names(hosts, alias) {
            continue;
        }
        let Some(key) = parse_public_key(&format!("{kind} {data}")) else {
            continue;
        };
        found.push(Entry {
            line: n + 1,
            revoked,
            key,
        });
    }
    found
}

/// The algorithms of the keys pinned for `alias`, to offer first in the handshake (as OpenSSH
/// orders its HostKeyAlgorithms by known_hosts), so a server with several host keys presents the
/// pinned one.
pub fn pinned_algorithms(file: &Path, alias: &str) -> Vec<Algorithm> {
    let text = read_or_empty(file).unwrap_or_default();
    let mut algorithms = Vec::new();
    for e in entries(&text, alias).into_iter().filter(|e| !e.revoked) {
        let algorithm = e.key.algorithm();
        let variants = if algorithm.clone().is_rsa() {
            vec![
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
                Algorithm::Rsa { hash: None },
            ]
        } else {
            vec![algorithm]
        };
        for a in variants {
            if !algorithms.contains(&a) {
                algorithms.push(a);
            }
        }
    }
    algorithms
}

pub enum Pinned {
    /// The alias was known with this key.
    Known,
    /// The alias was new; the key is now pinned. `anchored`: it is one the head node printed to
    /// its console; otherwise trust on first use alone.
    Learned { anchored: bool },
}

/// What a first use can check a new key against.
#[derive(Debug, Clone)]
pub enum FirstUse {
    /// The host keys the instance printed to its console at first boot (cloud-init's
    /// `keys_to_console`), read over the AWS API: the key must be one of them.
    Anchored(Vec<PublicKey>),
    /// Nothing to check against (the reason says why): trust on first use, with a warning.
    Unanchored(String),
}

pub const CONSOLE_BEGIN: &str = "-----BEGIN SSH HOST KEY KEYS-----";
pub const CONSOLE_END: &str = "-----END SSH HOST KEY KEYS-----";

/// The host keys in cloud-init's block of a console output, or None when there is no block
/// with a key in it. Lines between the markers that are not keys (the kernel may print in
/// between) are skipped; comments are dropped.
pub fn console_host_keys(console: &str) -> Option<Vec<PublicKey>> {
    let mut keys: Vec<PublicKey> = Vec::new();
    let mut inside = false;
    for line in console.lines() {
        let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        if line.ends_with(CONSOLE_BEGIN) {
            inside = true;
        } else if line.ends_with(CONSOLE_END) {
            inside = false;
        } else if inside
            && let Some(k) = parse_public_key(line)
            && !keys.iter().any(|p| same_key(p, &k))
        {
            keys.push(k);
        }
    }
    (!keys.is_empty()).then_some(keys)
}

/// Whether any key is pinned for `alias` in `file`.
/// The keys pinned (not revoked) for `alias` in `file`.
pub fn pinned(file: &Path, alias: &str) -> Vec<PublicKey> {
    let text = read_or_empty(file).unwrap_or_default();
    entries(&text, alias)
        .into_iter()
        .filter(|e| !e.revoked)
        .map(|e| e.key)
        .collect()
}

/// Whether `key` is one of `keys` (the key itself, comments aside).
pub fn holds(keys: &[PublicKey], key: &PublicKey) -> bool {
    keys.iter().any(|k| same_key(k, key))
}

pub fn is_pinned(file: &Path, alias: &str) -> bool {
    let text = read_or_empty(file).unwrap_or_default();
    entries(&text, alias).iter().any(|e| !e.revoked)
}

/// Pins `keys` for `alias` (those not pinned yet), under the lock: for `ssh-config`, so OpenSSH
/// checks the head node strictly against the keys its console vouches for.
pub fn pin_all(file: &Path, alias: &str, keys: &[PublicKey]) -> Result<(), HostKeyError> {
    let text = read_or_empty(file).map_err(|source| HostKeyError::Io {
        file: file.to_path_buf(),
        source,
    })?;
    let known = entries(&text, alias);
    let new: Vec<String> = keys
        .iter()
        .filter(|k| !known.iter().any(|e| same_key(&e.key, k)))
        .map(|k| format!("{alias} {}", encode(k)))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    rewrite(file, |_| true, new)
}

/// Holds `<file>.lock` while a writer reads and rewrites `file`.
struct FileLock(File);

impl FileLock {
    fn take(file: &Path) -> std::io::Result<FileLock> {
        if let Some(dir) = file.parent() {
            crate::files::private_dir(dir)?;
        }
        let mut name = file.as_os_str().to_owned();
        name.push(".lock");
        let f = crate::files::private_file(&PathBuf::from(name))?;
        f.lock()?;
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Checks `key` for `alias` against `file`, learning it when the alias is new. Once any key is
/// pinned for the alias, a key of another algorithm is refused like a changed key.
pub fn check_or_pin(
    file: &Path,
    alias: &str,
    cluster: Option<&str>,
    key: &PublicKey,
    first_use: &FirstUse,
) -> Result<Pinned, HostKeyError> {
    let io = |source| HostKeyError::Io {
        file: file.to_path_buf(),
        source,
    };
    let judge = |text: &str| -> Result<Option<Pinned>, HostKeyError> {
        let found = entries(text, alias);
        if let Some(r) = found.iter().find(|e| e.revoked && same_key(&e.key, key)) {
            return Err(HostKeyError::Revoked {
                alias: alias.into(),
                file: file.to_path_buf(),
                line: r.line,
                got: fingerprint(key),
            });
        }
        let pinned: Vec<&Entry> = found.iter().filter(|e| !e.revoked).collect();
        if pinned.iter().any(|e| same_key(&e.key, key)) {
            return Ok(Some(Pinned::Known));
        }
        match pinned.first() {
            Some(first) => Err(HostKeyError::HeadNodeChanged(Box::new(ChangedKey {
                alias: alias.into(),
                cluster: cluster.map(str::to_string),
                file: file.to_path_buf(),
                line: first.line,
                expected: pinned
                    .iter()
                    .map(|e| fingerprint(&e.key))
                    .collect::<Vec<_>>()
                    .join(", "),
                got: fingerprint(key),
            }))),
            None => Ok(None),
        }
    };
    if let Some(p) = judge(&read_or_empty(file).map_err(io)?)? {
        return Ok(p);
    }
    // New: decide again under the lock (another connect may have pinned it meanwhile).
    let _lock = FileLock::take(file).map_err(io)?;
    let text = read_or_empty(file).map_err(io)?;
    if let Some(p) = judge(&text)? {
        return Ok(p);
    }
    let anchored = match first_use {
        FirstUse::Anchored(keys) if keys.iter().any(|k| same_key(k, key)) => true,
        FirstUse::Anchored(keys) => {
            return Err(HostKeyError::NotInConsole {
                alias: alias.into(),
                got: fingerprint(key),
                listed: keys.iter().map(fingerprint).collect::<Vec<_>>().join(", "),
            });
        }
        FirstUse::Unanchored(_) => false,
    };
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .map_err(io)?;
    if !text.is_empty() && !text.ends_with('\n') {
        writeln!(f).map_err(io)?;
    }
    writeln!(f, "{alias} {}", encode(key)).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(Pinned::Learned { anchored })
}

/// Rewrites `file` under its lock with the lines `keep` returns true for, plus `add`, through a
/// unique temporary file in the same directory.
fn rewrite(file: &Path, keep: impl Fn(&str) -> bool, add: Vec<String>) -> Result<(), HostKeyError> {
    let io = |source| HostKeyError::Io {
        file: file.to_path_buf(),
        source,
    };
    let _lock = FileLock::take(file).map_err(io)?;
    let text = read_or_empty(file).map_err(io)?;
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| keep(l))
        .map(str::to_string)
        .collect();
    out.extend(add);
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".known_hosts.")
        .tempfile_in(dir)
        .map_err(io)?;
    let body = if out.is_empty() {
        String::new()
    } else {
        out.join("\n") + "\n"
    };
    tmp.write_all(body.as_bytes()).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(file).map_err(|e| io(e.error))?;
    Ok(())
}

/// Whether `line` pins a key for `alias` (what `forget` removes): marked lines
/// (`@revoked`, `@cert-authority`) are the user's and stay.
fn line_names(line: &str, alias: &str) -> bool {
    match line.split_whitespace().next() {
        Some(h) if !h.starts_with('@') && !h.starts_with('#') => names(h, alias),
        _ => false,
    }
}

/// Removes every line of `alias` (plain or hashed) from `file`; returns the fingerprints of the
/// keys removed, for `bastion forget`.
pub fn forget(file: &Path, alias: &str) -> Result<Vec<String>, HostKeyError> {
    let text = read_or_empty(file).map_err(|source| HostKeyError::Io {
        file: file.to_path_buf(),
        source,
    })?;
    let fingerprints = entries(&text, alias)
        .iter()
        .filter(|e| !e.revoked)
        .map(|e| fingerprint(&e.key))
        .collect::<Vec<_>>();
    if fingerprints.is_empty() {
        return Ok(fingerprints);
    }
    rewrite(file, |l| !line_names(l, alias), Vec::new())?;
    Ok(fingerprints)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const E: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBJHwCT9XB3qMnm5v7JKaekimLfmi8CxIOHof2j2eIUXbDfsfDVVzt4I7IlOB5budCRgFCJK1K/paagyj5E923g=";

    fn tofu() -> FirstUse {
        FirstUse::Unanchored("test".into())
    }

    #[test]
    fn first_use_is_checked_against_the_console_when_it_has_the_keys() {
        let console = format!(
            "[   10.1] cloud-init[900]: ok\r\n{CONSOLE_BEGIN}\r\n{E} root@ip-10-0-0-1\r\n\
             [   10.2] kernel noise\r\n{A} root@ip-10-0-0-1\r\n{CONSOLE_END}\r\n"
        );
        let keys = console_host_keys(&console).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(console_host_keys("no block here").is_none());
        assert!(console_host_keys(&format!("{CONSOLE_BEGIN}\n{CONSOLE_END}\n")).is_none());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        let (a, b) = (parse_public_key(A).unwrap(), parse_public_key(B).unwrap());
        let anchor = FirstUse::Anchored(keys.clone());
        assert!(matches!(
            check_or_pin(&file, "i-1", None, &b, &anchor),
            Err(HostKeyError::NotInConsole { .. })
        ));
        assert!(!is_pinned(&file, "i-1"));
        assert!(matches!(
            check_or_pin(&file, "i-1", None, &a, &anchor),
            Ok(Pinned::Learned { anchored: true })
        ));
        pin_all(&file, "i-2", &keys).unwrap();
        pin_all(&file, "i-2", &keys).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, format!("i-1 {A}\ni-2 {E}\ni-2 {A}\n"));
    }

    #[test]
    fn first_use_pins_and_a_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        let (a, b) = (parse_public_key(A).unwrap(), parse_public_key(B).unwrap());
        assert!(matches!(
            check_or_pin(&file, "i-1", None, &a, &tofu()),
            Ok(Pinned::Learned { .. })
        ));
        assert!(matches!(
            check_or_pin(&file, "i-1", None, &a, &tofu()),
            Ok(Pinned::Known)
        ));
        assert!(matches!(
            check_or_pin(&file, "i-2", None, &b, &tofu()),
            Ok(Pinned::Learned { .. })
        ));
        match check_or_pin(&file, "i-1", Some("demo"), &b, &tofu()) {
            Err(HostKeyError::HeadNodeChanged(c)) => {
                assert_eq!(c.line, 1);
                assert_eq!(c.expected, fingerprint(&a));
                assert_eq!(c.got, fingerprint(&b));
                assert!(
                    c.to_string().contains("bastion forget --cluster demo"),
                    "{c}"
                );
            }
            _ => panic!("a changed key must be refused"),
        }
        forget(&file, "i-1").unwrap();
        assert!(matches!(
            check_or_pin(&file, "i-1", None, &b, &tofu()),
            Ok(Pinned::Learned { .. })
        ));
        assert!(matches!(
            check_or_pin(&file, "i-1", None, &b, &tofu()),
            Ok(Pinned::Known)
        ));
        assert!(matches!(
            check_or_pin(&file, "i-2", None, &b, &tofu()),
            Ok(Pinned::Known)
        ));
    }

    #[test]
    fn a_key_of_another_algorithm_is_refused_once_one_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        let (a, e) = (parse_public_key(A).unwrap(), parse_public_key(E).unwrap());
        check_or_pin(&file, "i-1", None, &a, &tofu()).unwrap();
        assert!(matches!(
            check_or_pin(&file, "i-1", None, &e, &tofu()),
            Err(HostKeyError::HeadNodeChanged(_))
        ));
        assert_eq!(
            pinned_algorithms(&file, "i-1"),
            vec![Algorithm::Ed25519],
            "the pinned algorithm is offered first"
        );
        assert_eq!(forget(&file, "i-1").unwrap(), vec![fingerprint(&a)]);
        assert!(matches!(
            check_or_pin(&file, "i-1", None, &e, &tofu()),
            Ok(Pinned::Learned { .. })
        ));
    }

    #[test]
    fn hashed_lines_are_matched() {
        // `ssh-keygen -H` form of "i-0abc": salt and HMAC-SHA1 computed here as OpenSSH does.
        let salt = [7u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"i-0abc");
        let b64 = base64::engine::general_purpose::STANDARD;
        let hosts = format!(
            "|1|{}|{}",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, format!("{hosts} {A}\n")).unwrap();
        let (a, b) = (parse_public_key(A).unwrap(), parse_public_key(B).unwrap());
        assert!(matches!(
            check_or_pin(&file, "i-0abc", None, &a, &tofu()),
            Ok(Pinned::Known)
        ));
        assert!(matches!(
            check_or_pin(&file, "i-0abc", None, &b, &tofu()),
            Err(HostKeyError::HeadNodeChanged(c)) if c.line == 1
        ));
        assert!(matches!(
            check_or_pin(&file, "i-0abd", None, &b, &tofu()),
            Ok(Pinned::Learned { .. })
        ));
    }

    #[test]
    fn revoked_keys_are_refused_and_kept_by_forget() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, format!("@revoked * {A}\ni-1 {B}\n")).unwrap();
        let (a, b) = (parse_public_key(A).unwrap(), parse_public_key(B).unwrap());
        assert!(matches!(
            check_or_pin(&file, "i-1", None, &a, &tofu()),
            Err(HostKeyError::Revoked { .. })
        ));
        assert_eq!(forget(&file, "i-1").unwrap(), vec![fingerprint(&b)]);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("@revoked * {A}\n"),
            "the user's revocation stays"
        );
    }

    #[test]
    fn host_patterns_match_as_openssh_reads_them() {
        assert!(names("i-0ab*", "i-0abc"));
        assert!(names("x,i-0ab?", "i-0abc"));
        assert!(!names("i-0ab?", "i-0abcd"));
        assert!(!names("*,!i-0abc", "i-0abc"));
        assert!(names("*,!i-0abd", "i-0abc"));
        assert!(!names("i-0abcd", "i-0abc"));
    }

    #[test]
    fn a_tag_is_parsed_strictly_and_written_back_as_the_key_alone() {
        let key = parse_host_key_tag("i-p", A).unwrap();
        assert_eq!(encode(&key), A);
        let with_comment = parse_host_key_tag("i-p", &format!("{A} root@proxy")).unwrap();
        assert_eq!(encode(&with_comment), A, "the comment is dropped");
        let injected = format!("{A} x\n@cert-authority * {B}");
        for bad in [
            injected.as_str(),
            &format!("{A} x\r"),
            &format!("{A}  x"),
            &format!(" {A}"),
            &format!("{A} @cert-authority"),
            &format!("{A} a b"),
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ",
            "ssh-ed25519 !!!",
            &format!("ssh-ed25519 {}", E.split(' ').nth(1).unwrap()),
            &format!("{A} {}", "c".repeat(300)),
            "",
        ] {
            match parse_host_key_tag("i-p", bad) {
                Err(e @ HostKeyError::BadTag { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("i-p") && msg.contains("bastion:host-key"),
                        "{msg}"
                    );
                }
                other => panic!(
                    "{bad:?} must be refused, got {:?}",
                    other.map(|k| encode(&k))
                ),
            }
        }
    }

    #[test]
    fn concurrent_pins_lose_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        let a = parse_public_key(A).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let (file, a) = (&file, &a);
                s.spawn(move || {
                    for n in 0..25 {
                        check_or_pin(file, &format!("i-{t}-{n}"), None, a, &tofu()).unwrap();
                        if n % 5 == 0 {
                            // A rewrite of the file (forget) between appends.
                            forget(file, &format!("proxy-{t}")).unwrap();
                            pin_all(file, &format!("proxy-{t}"), std::slice::from_ref(a)).unwrap();
                        }
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 8 * 25 + 8, "{text}");
    }
}
