//! The russh client: a handler that really checks host keys, a configuration tuned for
//! throughput, key loading (files, passphrases, ssh-agent), and the jump through the proxy.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::ssh_key::Algorithm;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};

use super::known_hosts::{self, FirstUse, HostKeyError, Pinned};

/// Receive window of a channel that carries one of the user's connections (a forward's, a
/// shell's, a command's). russh's 2 MiB default caps a download at 50 ms RTT near OpenSSH's
/// (FACTS section 6), but a window is also what the server's sshd may buffer for that channel,
/// read from a fast source faster than it can send, and OpenSSH's sshd slows down sharply with
/// large buffers (page faults, memmove), so the more busy channels, the worse. Measured in the
/// bench lab (iperf3 through one forward of a jump; medians of 3-4 fresh-session rounds; OpenSSH
/// `ssh -L` 20-24 MiB/s at 50 ms and 170-205 on loopback in the same runs):
///
/// | window | 50 ms RTT download | loopback, 8 streams | loopback, 16 streams |
/// | ------ | ------------------ | ------------------- | -------------------- |
/// | 4 MiB  | 30.6 MiB/s         | 273-379             |                      |
/// | 8 MiB  | 55.6-56.2          | 251-267             | 213 (173-216)        |
/// | 10 MiB | 63.5-65.2          | 233-294             | 202 (111-254)        |
/// | 12 MiB | 73.2               | 134 (127-293)       |                      |
/// | 16 MiB | 98.9               | 141-167             |                      |
///
/// 8 MiB keeps a 50 ms download at 2.3-2.6x OpenSSH's and many busy channels well clear of the
/// cliff. A window sized by the number of busy channels would give both, but russh's client
/// ignores `Handler::adjust_window` (russh issue 770), so every channel of a session gets one.
pub const CHANNEL_WINDOW: u32 = 8 * 1024 * 1024;

/// Receive window of the proxy's session in a jump: its busy channel carries the head node's
/// whole session, so this bounds all forwards together at a given RTT (8 streams at 50 ms:
/// 34 MiB/s with 4 MiB, 107 with 16 MiB). Larger is not better: with 32 MiB the proxy's sshd
/// stalled for whole seconds at the start of a transfer (loopback 1.2-1.7 Gbit/s against
/// 1.9-3.0 with 16 MiB).
pub const TUNNEL_WINDOW: u32 = 16 * 1024 * 1024;

/// When this client starts a key re-exchange. russh's defaults (1 GiB read or written, or an
/// hour) drop the session with "Pending buffer limit reached" when this side starts a rekey while
/// several channels are busy downloading: russh 0.65 lets at most twice one channel's window
/// arrive before the server's KEXINIT, though every open channel has a window of its own in
/// flight (seen in the bench: 8 iperf3 streams through one forward, at the 1 GiB mark).
/// So, as OpenSSH's client does, no rekey by time; a rekey after 1 GiB written (keeps russh's
/// sequence-number nonces unique for what this side encrypts); and the receiving direction left
/// to the server, whose sshd rekeys what it sends by its own RekeyLimit (64 GiB for AES-GCM,
/// 1 GiB for ChaCha20), with 64 GiB read as a backstop against a server that never does.
fn limits() -> russh::Limits {
    russh::Limits {
        rekey_write_limit: 1 << 30,
        rekey_read_limit: 1 << 36,
        rekey_time_limit: Duration::from_secs(365 * 24 * 3600),
    }
}

/// How a server's host key is judged.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The proxy's: pinned under its instance id in `file`, a first use checked against
    /// `first_use` (the keys it printed to its console, else the one its tag names), `anchor`
    /// saying which, for the user.
    Proxy {
        file: PathBuf,
        instance: String,
        first_use: FirstUse,
        anchor: &'static str,
    },
    /// Pinned on first use under `alias` in `file` (the head node's of `cluster`), a first use
    /// checked against `first_use`.
    Pin {
        file: PathBuf,
        alias: String,
        cluster: String,
        first_use: FirstUse,
    },
}

impl Trust {
    /// Host-key algorithms in the order to offer them: the expected or pinned ones first (as
    /// OpenSSH orders by known_hosts), so a server with several keys presents the one we hold;
    /// then russh's defaults, for a first use.
    fn host_key_algorithms(&self) -> Vec<Algorithm> {
        let mut first = match self {
            Trust::Proxy {
                file,
                instance: alias,
                first_use,
                ..
            }
            | Trust::Pin {
                file,
                alias,
                first_use,
                ..
            } => {
                let pinned = known_hosts::pinned_algorithms(file, alias);
                match first_use {
                    // A first use checked against the console: ask for a key it listed.
                    FirstUse::Anchored(keys) if pinned.is_empty() => {
                        keys.iter().map(|k| k.algorithm()).collect()
                    }
                    _ => pinned,
                }
            }
        };
        for a in russh::Preferred::DEFAULT.key.iter() {
            if !first.contains(a) {
                first.push(a.clone());
            }
        }
        first
    }
}

/// The russh handler: verifies the host key and keeps the typed reason for a refusal.
pub struct Verifier {
    trust: Trust,
    refusal: Arc<Mutex<Option<HostKeyError>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            self.refuse(HostKeyError::Certificate);
            return Ok(false);
        };
        match &self.trust {
            Trust::Proxy {
                file,
                instance,
                first_use,
                anchor,
            } => match known_hosts::check_or_pin(file, instance, None, key, first_use) {
                Ok(Pinned::Known) => Ok(true),
                Ok(Pinned::Learned { .. }) => {
                    tracing::info!(
                        "pinned the proxy's host key {} as {instance} in {}: it is in {anchor}",
                        known_hosts::fingerprint(key),
                        file.display()
                    );
                    Ok(true)
                }
                Err(HostKeyError::HeadNodeChanged(c)) => {
                    self.refuse(HostKeyError::ProxyMismatch {
                        instance: instance.clone(),
                        anchor: format!(
                            "the key pinned for it in {} (line {})",
                            c.file.display(),
                            c.line
                        ),
                        expected: c.expected,
                        got: c.got,
                    });
                    Ok(false)
                }
                Err(HostKeyError::NotInConsole { got, listed, .. }) => {
                    self.refuse(HostKeyError::ProxyMismatch {
                        instance: instance.clone(),
                        anchor: (*anchor).to_string(),
                        expected: listed,
                        got,
                    });
                    Ok(false)
                }
                Err(e) => {
                    self.refuse(e);
                    Ok(false)
                }
            },
            Trust::Pin {
                file,
                alias,
                cluster,
                first_use,
            } => match known_hosts::check_or_pin(file, alias, Some(cluster), key, first_use) {
                Ok(Pinned::Known) => Ok(true),
                Ok(Pinned::Learned { anchored: true }) => {
                    tracing::warn!(
                        "pinned the head node's host key {} as {alias} in {} (it is one the head \
                         node printed to its console at first boot)",
                        known_hosts::fingerprint(key),
                        file.display()
                    );
                    Ok(true)
                }
                Ok(Pinned::Learned { anchored: false }) => {
                    let why = match first_use {
                        FirstUse::Unanchored(why) => why.as_str(),
                        FirstUse::Anchored(_) => "",
                    };
                    tracing::warn!(
                        "pinned the head node's host key {} as {alias} in {} on first use, \
                         unverified: {why}. Compare it with the head node's own \
                         (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there)",
                        known_hosts::fingerprint(key),
                        file.display()
                    );
                    Ok(true)
                }
                Err(e) => {
                    self.refuse(e);
                    Ok(false)
                }
            },
        }
    }
}

impl Verifier {
    fn refuse(&self, e: HostKeyError) {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(e);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(transparent)]
    HostKey(#[from] HostKeyError),

    #[error("cannot reach {what} at {addr}: {reason}. {hint}")]
    Connect {
        what: String,
        addr: String,
        reason: String,
        hint: String,
    },

    #[error("{what} refused authentication as '{user}' (tried: {tried}). {hint}")]
    AuthRefused {
        what: String,
        user: String,
        tried: String,
        hint: String,
    },

    #[error(
        "the proxy could not open a connection to the head node at {addr} ({reason}). Check that the \
         head node is running and that its security group admits tcp {port} from the proxy's \
         security group (`bastion up` adds that rule where it is missing)"
    )]
    HeadUnreachable {
        addr: String,
        port: u16,
        reason: String,
    },

    #[error("cannot use the key {path}: {reason}")]
    Key { path: PathBuf, reason: String },

    #[error("the SSH connection to {what} failed: {source}")]
    Protocol {
        what: String,
        #[source]
        source: russh::Error,
    },
}

/// AES-GCM first: hardware-accelerated (aws-lc), it carries bulk data several times faster than
/// russh's ChaCha20-Poly1305, which russh prefers by default.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_128_GCM,
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_128_CTR,
];

/// Client settings: the given window, fast ciphers, no Nagle, keepalives so a dead link is
/// reported.
pub fn config(window_size: u32, host_key_algorithms: Vec<Algorithm>) -> Arc<client::Config> {
    Arc::new(client::Config {
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            key: std::borrow::Cow::Owned(host_key_algorithms),
            ..Default::default()
        },
        window_size,
        // The largest packet russh allows: half the per-packet work of the 32 KiB default
        // (single-hop loopback -L: 410 -> 457 MiB/s, measured with iperf3).
        maximum_packet_size: 65535,
        // Bounds each channel's queue and the session's outgoing queue (russh uses it for both).
        // Every channel is drained at once (tunnel.rs, forward.rs), so a short queue costs
        // nothing there, and it keeps the bursts the session writes to the proxy short. Jump
        // upload through the bench lab, medians of 9-14 fresh-session rounds: 256 gave 1.6
        // Gbit/s, 64 1.8, 32 1.83 (OpenSSH 1.85); download unchanged or better.
        channel_buffer_size: 32,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        nodelay: true,
        limits: limits(),
        ..Default::default()
    })
}

/// What a session authenticates with.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Keys held in memory only (an ephemeral key pushed with EC2 Instance Connect), tried first.
    pub keys: Vec<MemoryKey>,
    /// Key files, tried in order.
    pub files: Vec<PathBuf>,
    /// Also try ssh-agent's identities (through `SSH_AUTH_SOCK`).
    pub agent: bool,
    /// What to advise when every credential is refused (the default speaks of the head node's key).
    pub hint: Option<String>,
}

/// A private key that never touches the disk, and what to call it in messages.
#[derive(Clone)]
pub struct MemoryKey {
    pub label: String,
    pub key: Arc<PrivateKey>,
}

impl std::fmt::Debug for MemoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryKey({})", self.label)
    }
}

impl Credentials {
    /// OpenSSH's defaults: the agent, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa that exist.
    pub fn openssh_defaults() -> Credentials {
        let files = dirs::home_dir()
            .map(|h| {
                ["id_ed25519", "id_ecdsa", "id_rsa"]
                    .iter()
                    .map(|n| h.join(".ssh").join(n))
                    .filter(|p| p.exists())
                    .collect()
            })
            .unwrap_or_default();
        Credentials {
            files,
            agent: true,
            ..Credentials::default()
        }
    }
}

/// A fresh ed25519 key from the OS's random source; the seed is wiped once the key holds it.
pub fn new_ed25519_key() -> PrivateKey {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let key = PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(
        &seed,
    ));
    seed.fill(0);
    key
}

/// Loads a private key, asking for its passphrase on a terminal.
pub fn load_key(path: &Path) -> Result<PrivateKey, SshError> {
    let err = |reason: String| SshError::Key {
        path: path.to_path_buf(),
        reason,
    };
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => Ok(k),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            if !std::io::stdin().is_terminal() {
                return Err(err(
                    "it is passphrase-protected and there is no terminal to ask on; add it to \
                     ssh-agent (`ssh-add KEY`) and retry"
                        .into(),
                ));
            }
            let pass = rpassword::prompt_password(format!(
                "Enter passphrase for key '{}': ",
                path.display()
            ))
            .map_err(|e| err(e.to_string()))?;
            russh::keys::load_secret_key(path, Some(&pass))
                .map_err(|e| err(format!("wrong passphrase? {e}")))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Where a session goes and how it is trusted and authenticated.
#[derive(Debug, Clone)]
pub struct Target {
    /// For messages: "the proxy i-...", "the head node i-...".
    pub what: String,
    pub user: String,
    pub trust: Trust,
    pub credentials: Credentials,
}

async fn handshake<S>(
    target: &Target,
    stream: S,
    addr: &str,
    window_size: u32,
) -> Result<Handle<Verifier>, SshError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let refusal = Arc::new(Mutex::new(None));
    let verifier = Verifier {
        trust: target.trust.clone(),
        refusal: refusal.clone(),
    };
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        client::connect_stream(
            config(window_size, target.trust.host_key_algorithms()),
            stream,
            verifier,
        ),
    )
    .await;
    let mut handle = match connected {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            if let Some(refused) = refusal.lock().ok().and_then(|mut r| r.take()) {
                return Err(refused.into());
            }
            return Err(SshError::Protocol {
                what: format!("{} ({addr})", target.what),
                source: e,
            });
        }
        Err(_) => {
            return Err(SshError::Connect {
                what: target.what.clone(),
                addr: addr.into(),
                reason: "no SSH handshake within 30 s".into(),
                hint: "Is sshd running there?".into(),
            });
        }
    };
    authenticate(&mut handle, target).await?;
    Ok(handle)
}

/// Connects over TCP (a 10 s connect timeout) and authenticates. `window_size`: [`TUNNEL_WINDOW`]
/// for the proxy's session of a jump, [`CHANNEL_WINDOW`] when its channels are the user's.
pub async fn connect(
    target: &Target,
    host: &str,
    port: u16,
    window_size: u32,
) -> Result<Handle<Verifier>, SshError> {
    let addr = format!("{host}:{port}");
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await;
    let stream = match tcp {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(SshError::Connect {
                what: target.what.clone(),
                addr,
                reason: e.to_string(),
                hint: "Check that the proxy is running (`bastion status`) and that your address is in its \
                       --allow-cidr (your public IP may have changed: `bastion down` then `bastion up`)"
                    .into(),
            });
        }
        Err(_) => {
            return Err(SshError::Connect {
                what: target.what.clone(),
                addr,
                reason: "timed out after 10 s".into(),
                hint:
                    "Your address may not be in the proxy's --allow-cidr, or a firewall drops SSH"
                        .into(),
            });
        }
    };
    let _ = stream.set_nodelay(true);
    handshake(
        target,
        super::quickack::QuickAck::new(stream),
        &addr,
        window_size,
    )
    .await
}

/// Runs the SSH handshake over `stream` (a tunnel from elsewhere, such as an EC2 Instance
/// Connect Endpoint's) and authenticates; `addr` names the far end in errors.
pub async fn connect_stream<S>(
    target: &Target,
    stream: S,
    addr: &str,
    window_size: u32,
) -> Result<Handle<Verifier>, SshError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    handshake(target, stream, addr, window_size).await
}

/// Opens a second session through `proxy` (a direct-tcpip channel to `host:port`), like `ssh -J`.
pub async fn connect_via(
    proxy: &Handle<Verifier>,
    target: &Target,
    host: &str,
    port: u16,
) -> Result<Handle<Verifier>, SshError> {
    let addr = format!("{host}:{port}");
    let channel = tokio::time::timeout(
        Duration::from_secs(20),
        proxy.channel_open_direct_tcpip(host, port as u32, "127.0.0.1", 0),
    )
    .await
    .map_err(|_| SshError::HeadUnreachable {
        addr: addr.clone(),
        port,
        reason: "no answer within 20 s".into(),
    })?
    .map_err(|e| SshError::HeadUnreachable {
        addr: addr.clone(),
        port,
        reason: e.to_string(),
    })?;
    handshake(
        target,
        super::tunnel::Tunnel::new(channel),
        &addr,
        CHANNEL_WINDOW,
    )
    .await
}

/// RSA keys sign with the best hash the server supports; other keys have no choice to make.
async fn rsa_hash(
    handle: &Handle<Verifier>,
    is_rsa: bool,
) -> Result<Option<russh::keys::HashAlg>, russh::Error> {
    if is_rsa {
        Ok(handle.best_supported_rsa_hash().await?.flatten())
    } else {
        Ok(None)
    }
}

async fn authenticate(handle: &mut Handle<Verifier>, target: &Target) -> Result<(), SshError> {
    let protocol = |e: russh::Error| SshError::Protocol {
        what: target.what.clone(),
        source: e,
    };
    let mut tried = Vec::new();
    let logged_in = |how: &str| {
        tracing::info!("logged in to {} as {} with {how}", target.what, target.user);
    };
    for k in &target.credentials.keys {
        tried.push(k.label.clone());
        let result = handle
            .authenticate_publickey(
                &target.user,
                PrivateKeyWithHashAlg::new(k.key.clone(), None),
            )
            .await
            .map_err(protocol)?;
        if matches!(result, AuthResult::Success) {
            logged_in(&k.label);
            return Ok(());
        }
        tracing::info!("{} refused {} for {}", target.what, k.label, target.user);
    }
    for path in &target.credentials.files {
        let key = match load_key(path) {
            Ok(k) => Arc::new(k),
            Err(e) if target.credentials.files.len() == 1 && !target.credentials.agent => {
                return Err(e);
            }
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        let hash = rsa_hash(handle, key.algorithm().is_rsa())
            .await
            .map_err(protocol)?;
        tried.push(path.display().to_string());
        let result = handle
            .authenticate_publickey(&target.user, PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(protocol)?;
        if matches!(result, AuthResult::Success) {
            logged_in(&format!("the key {}", path.display()));
            return Ok(());
        }
    }
    if target.credentials.agent && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match AgentClient::connect_env().await {
            Ok(mut agent) => {
                let identities = agent.request_identities().await.unwrap_or_default();
                for id in identities {
                    let AgentIdentity::PublicKey { key, comment } = id else {
                        continue;
                    };
                    tried.push(format!("agent key {comment}"));
                    let hash = rsa_hash(handle, key.algorithm().is_rsa())
                        .await
                        .map_err(protocol)?;
                    match handle
                        .authenticate_publickey_with(&target.user, key, hash, &mut agent)
                        .await
                    {
                        Ok(AuthResult::Success) => {
                            logged_in(&format!("ssh-agent's key {comment}"));
                            return Ok(());
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!("agent signing failed: {e:?}"),
                    }
                }
            }
            Err(e) => tracing::warn!("cannot reach ssh-agent: {e}"),
        }
    }
    Err(SshError::AuthRefused {
        what: target.what.clone(),
        user: target.user.clone(),
        tried: if tried.is_empty() {
            "no key: none given, no agent, no ~/.ssh/id_*".into()
        } else {
            tried.join(", ")
        },
        hint: target.credentials.hint.clone().unwrap_or_else(|| {
            "Pass the cluster's key with -i FILE (the EC2 key pair the cluster was created with), \
             load it into ssh-agent, or set the login with --user"
                .into()
        }),
    })
}
