//! Local port forwards (`-L [bind:]port:host:hostport`): one listener each, one direct-tcpip
//! channel per accepted connection. Every channel is drained by its own task, so a connection
//! whose local reader stalls cannot block the SSH session (russh re-opens the window on receipt
//! and queues per channel: FACTS section 6); one that falls a budget behind is reset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use russh::ChannelMsg;
use russh::client::Handle;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::client::Verifier;

/// Bytes buffered per connection between the SSH channel and a slow local reader, beyond which
/// the connection is reset. Twice the largest window a channel gets (a forward on the proxy's
/// session of `--dcv` has the tunnel's): a reader that keeps up with the network stays well
/// below it; one slower than the network for long enough to fall this far behind is cut (the
/// price of not freezing the session for it).
const CONNECTION_BUDGET: usize = 2 * super::client::TUNNEL_WINDOW as usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub bind: String,
    pub port: u16,
    pub host: String,
    pub host_port: u16,
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} -> {}:{}",
            self.bind, self.port, self.host, self.host_port
        )
    }
}

fn split_host(s: &str) -> Vec<String> {
    // `[v6addr]:port` parts keep their colons.
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_brackets = false;
    for c in s.chars() {
        match c {
            '[' => in_brackets = true,
            ']' => in_brackets = false,
            ':' if !in_brackets => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

/// Parses `-L` as OpenSSH does: `port:host:hostport` or `bind:port:host:hostport`.
pub fn parse_forward(s: &str) -> Result<Forward, String> {
    let parts = split_host(s);
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("'{p}' is not a port in -L {s}"))
    };
    let (bind, rest) = match parts.len() {
        3 => ("127.0.0.1".to_string(), &parts[..]),
        4 => {
            let b = match parts[0].as_str() {
                "" | "*" => "0.0.0.0".to_string(),
                "localhost" => "127.0.0.1".to_string(),
                b => b.to_string(),
            };
            (b, &parts[1..])
        }
        _ => return Err(format!("-L {s}: expected [bind:]port:host:hostport")),
    };
    if rest[1].is_empty() {
        return Err(format!("-L {s}: empty host"));
    }
    Ok(Forward {
        bind,
        port: port(&rest[0])?,
        host: rest[1].clone(),
        host_port: port(&rest[2])?,
    })
}

/// Counts open connections across all forwards (for a status line and tests).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub open: Arc<AtomicUsize>,
    pub total: Arc<AtomicUsize>,
}

/// Binds the listener now (so errors show before anything else happens).
pub async fn bind(fwd: &Forward) -> Result<TcpListener, String> {
    TcpListener::bind((fwd.bind.as_str(), fwd.port))
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}:{} for -L {fwd}: {e}",
                fwd.bind, fwd.port
            )
        })
}

/// The session that carries a listener's connections, as it changes (`None` while the link
/// reconnects; see `link.rs`).
pub type Sessions = watch::Receiver<Option<Arc<Handle<Verifier>>>>;

/// A session that never changes, for a listener that lives and dies with it.
pub fn fixed(handle: Arc<Handle<Verifier>>) -> Sessions {
    watch::channel(Some(handle)).1
}

/// How long a new connection waits for a reconnecting link before it is closed.
const RECONNECT_WAIT: Duration = Duration::from_secs(120);

/// Connections one listener carries at once; past it, new ones wait in the kernel's backlog
/// until one ends (each costs a channel, two tasks and up to `CONNECTION_BUDGET` of buffer).
pub const MAX_CONNECTIONS: usize = 512;

/// Accepts connections forever, each carried by its own channel, at most [`MAX_CONNECTIONS`] at
/// once. A failing accept (out of file descriptors, say) backs off from 10 ms to 1 s instead of
/// spinning, with one warning per streak.
pub async fn serve(sessions: Sessions, listener: TcpListener, fwd: Forward, stats: Stats) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::ZERO;
    let mut at_cap = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(s) => {
                at_cap = false;
                s
            }
            Err(_) => {
                if !at_cap {
                    tracing::warn!(
                        "-L {fwd}: {MAX_CONNECTIONS} connections open; new ones wait until one ends"
                    );
                    at_cap = true;
                }
                match slots.clone().acquire_owned().await {
                    Ok(s) => s,
                    Err(_) => return,
                }
            }
        };
        let (sock, peer) = match listener.accept().await {
            Ok(x) => {
                backoff = Duration::ZERO;
                x
            }
            Err(e) => {
                if backoff.is_zero() {
                    tracing::warn!("-L {fwd}: accept failed ({e}); backing off");
                    backoff = Duration::from_millis(10);
                } else {
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                drop(slot);
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let mut sessions = sessions.clone();
        let fwd = fwd.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // While the link reconnects, a new connection waits for it (a while).
            let handle = match tokio::time::timeout(
                RECONNECT_WAIT,
                sessions.wait_for(|s| s.is_some()),
            )
            .await
            {
                Ok(Ok(h)) => h.clone(),
                _ => None,
            };
            let Some(handle) = handle else {
                tracing::warn!("-L {fwd}: no session to carry a connection from {peer}; closed it");
                return;
            };
            stats.open.fetch_add(1, Ordering::Relaxed);
            stats.total.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = carry(&handle, sock, peer, &fwd).await {
                tracing::warn!("{e}");
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Carries one TCP connection over one new channel to `fwd.host:fwd.host_port`.
pub async fn carry(
    handle: &Handle<Verifier>,
    sock: TcpStream,
    peer: SocketAddr,
    fwd: &Forward,
) -> Result<(), String> {
    let channel = handle
        .channel_open_direct_tcpip(
            fwd.host.as_str(),
            fwd.host_port as u32,
            peer.ip().to_string(),
            peer.port() as u32,
        )
        .await
        .map_err(|e| {
            format!(
                "-L {fwd}: the remote side could not connect to {}:{} ({e})",
                fwd.host, fwd.host_port
            )
        })?;
    let _ = sock.set_nodelay(true);
    pump(channel, sock)
        .await
        .map_err(|e| format!("-L {fwd}: {e}"))
}

/// Moves bytes both ways until both directions are done. Returns an error when the connection
/// was reset because its local reader fell more than `CONNECTION_BUDGET` behind.
///
/// russh re-opens a channel's window as soon as data arrives, so the server never waits for a
/// slow local reader; the only brake russh has is to stop reading the whole session, which would
/// freeze every other forward and the shell (FACTS section 6). So each channel is drained
/// without pause into a queue for its socket, and a connection whose queue outgrows the budget
/// (its reader stalled while the far end kept sending) is reset: the channel is closed and the
/// local socket gets a TCP reset, never a clean end of stream, so the application cannot mistake
/// the cut for a complete transfer.
pub async fn pump(
    channel: russh::Channel<russh::client::Msg>,
    sock: TcpStream,
) -> Result<(), String> {
    let (mut rd, wr) = channel.split();
    let (sock_rd, mut sock_wr) = sock.into_split();
    let queued = Arc::new(AtomicUsize::new(0));
    let (overrun_tx, mut overrun) = watch::channel(false);

    // Remote -> local: a drain task that never leaves the channel unread, and a writer that
    // feeds the local socket at its own pace.
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let drain_queued = queued.clone();
    let drain = tokio::spawn(async move {
        while let Some(msg) = rd.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    let n = data.len();
                    if drain_queued.fetch_add(n, Ordering::AcqRel) + n > CONNECTION_BUDGET {
                        let _ = overrun_tx.send(true);
                        // Dropping the read half lets russh discard what still arrives.
                        return;
                    }
                    if tx.send(data).is_err() {
                        break;
                    }
                }
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => {}
            }
        }
    });
    let mut writer_overrun = overrun.clone();
    let writer = tokio::spawn(async move {
        loop {
            let data = tokio::select! {
                _ = overran(&mut writer_overrun) => break,
                d = rx.recv() => match d {
                    Some(d) => d,
                    None => {
                        let _ = sock_wr.shutdown().await;
                        break;
                    }
                },
            };
            tokio::select! {
                _ = overran(&mut writer_overrun) => break,
                r = sock_wr.write_all(&data) => if r.is_err() { break },
            }
            queued.fetch_sub(data.len(), Ordering::AcqRel);
        }
        sock_wr
    });

    // Local -> remote: the channel's own window paces this direction.
    loop {
        let data = tokio::select! {
            _ = overran(&mut overrun) => break,
            r = read_chunk(&sock_rd) => match r {
                Ok(Some(d)) => d,
                Ok(None) | Err(_) => break,
            },
        };
        if wr.data_bytes(data).await.is_err() {
            break;
        }
    }
    if *overrun.borrow() {
        drain.abort();
        let sock_wr = writer.await;
        if let Ok(w) = sock_wr {
            // Linger 0: closing sends a reset. Both halves go here.
            let sock = sock_rd.reunite(w).ok();
            if let Some(s) = &sock {
                // Deprecated because a positive linger blocks the thread on drop; zero does not.
                #[allow(deprecated)]
                let _ = s.set_linger(Some(std::time::Duration::ZERO));
            }
        }
        let _ = wr.close().await;
        return Err(format!(
            "reset a connection whose local reader fell {} MiB behind (bastion cannot pause one \
             connection without pausing the others)",
            CONNECTION_BUDGET >> 20
        ));
    }
    let _ = wr.eof().await;
    let _ = drain.await;
    let _ = writer.await;
    let _ = wr.close().await;
    Ok(())
}

/// The most read from a local socket at once.
const READ_CHUNK: usize = 64 * 1024;

/// Below this, what was read is copied out and the chunk freed at once.
const SMALL_READ: usize = 16 * 1024;

/// The next bytes from a local socket, None at its end. No buffer is held while the socket is
/// idle: a chunk is allocated once it is readable and handed to the channel as it is, so a bulk
/// transfer costs no copy, and a small read is copied out so the chunk does not wait in the
/// channel's queue for its few bytes. Hundreds of idle or chatty connections thus hold no
/// 64 KiB buffer each, and a burst of them leaves the allocator less to keep.
async fn read_chunk(sock: &tokio::net::tcp::OwnedReadHalf) -> std::io::Result<Option<Bytes>> {
    loop {
        sock.readable().await?;
        let mut chunk = bytes::BytesMut::with_capacity(READ_CHUNK);
        match sock.try_read_buf(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) if n < SMALL_READ => return Ok(Some(Bytes::copy_from_slice(&chunk))),
            Ok(_) => return Ok(Some(chunk.freeze())),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Resolves once the connection has overrun its budget; never when the drain ended normally
/// (its sender dropped), or the writer would stop before the queue is written out.
async fn overran(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|o| *o).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forwards_like_openssh() {
        assert_eq!(
            parse_forward("8888:localhost:8888").unwrap(),
            Forward {
                bind: "127.0.0.1".into(),
                port: 8888,
                host: "localhost".into(),
                host_port: 8888
            }
        );
        let f = parse_forward("0.0.0.0:9000:10.0.0.5:22").unwrap();
        assert_eq!(
            (f.bind.as_str(), f.port, f.host.as_str(), f.host_port),
            ("0.0.0.0", 9000, "10.0.0.5", 22)
        );
        assert_eq!(parse_forward("*:9000:h:1").unwrap().bind, "0.0.0.0");
        assert_eq!(parse_forward("8080:[::1]:80").unwrap().host, "::1");
        assert!(parse_forward("8080:h").is_err());
        assert!(parse_forward("x:h:1").is_err());
        assert!(parse_forward("1:h:70000").is_err());
    }
}
