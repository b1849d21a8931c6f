//! Local port forwards (`-L [bind:]port:host:hostport`): one listener each, one direct-tcpip
//! channel per accepted connection. Every channel is drained by its own task into a per-connection
//! byte budget, so a connection whose local reader stalls cannot block the SSH session (russh
//! re-opens the window on receipt and queues per channel: FACTS section 6) beyond that budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use russh::ChannelMsg;
use russh::client::Handle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use super::client::Verifier;

/// Bytes buffered per connection between the SSH channel and a slow local reader.
const CONNECTION_BUDGET: usize = 16 * 1024 * 1024;

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

/// Accepts connections forever, each carried by its own channel.
pub async fn serve(
    handle: Arc<Handle<Verifier>>,
    listener: TcpListener,
    fwd: Forward,
    stats: Stats,
) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept on {fwd}: {e}");
                continue;
            }
        };
        let handle = handle.clone();
        let fwd = fwd.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
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
    pump(channel, sock).await;
    Ok(())
}

/// Moves bytes both ways until both directions are done.
pub async fn pump(channel: russh::Channel<russh::client::Msg>, sock: TcpStream) {
    let (mut rd, wr) = channel.split();
    let (mut sock_rd, mut sock_wr) = sock.into_split();

    // Remote -> local: a drain task that never leaves the channel unread (within the budget),
    // and a writer that feeds the local socket at its own pace.
    let budget = Arc::new(Semaphore::new(CONNECTION_BUDGET));
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let drain_budget = budget.clone();
    let drain = tokio::spawn(async move {
        while let Some(msg) = rd.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    let n = data.len().min(CONNECTION_BUDGET) as u32;
                    match drain_budget.acquire_many(n).await {
                        Ok(p) => p.forget(),
                        Err(_) => break,
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
    let writer = tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            let n = data.len().min(CONNECTION_BUDGET);
            if sock_wr.write_all(&data).await.is_err() {
                break;
            }
            budget.add_permits(n);
        }
        let _ = sock_wr.shutdown().await;
    });

    // Local -> remote: the channel's own window paces this direction.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match sock_rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if wr
                    .data_bytes(Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = wr.eof().await;
    let _ = drain.await;
    let _ = writer.await;
    let _ = wr.close().await;
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
