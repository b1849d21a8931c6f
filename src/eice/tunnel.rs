//! One tunnel through an EC2 Instance Connect Endpoint, spoken as AWS speaks it: a TLS
//! WebSocket on port 443 of the endpoint's DNS name, opened with a SigV4-presigned
//! `GET /openTunnel?…` (see [`crate::aws::Network::open_tunnel_url`]); the TCP stream's bytes
//! travel as binary frames, at most 65,000 bytes each as the AWS CLI sends them. A text frame is
//! a protocol error, and a close with a code other than 1000 carries the reason, kept for the
//! user ([`Ended`]).
//!
//! TLS is the binary's one stack (rustls, aws-lc-rs) with the system's roots, or with the
//! certificates of `AWS_CA_BUNDLE` in their place, as the AWS CLI reads that variable. A proxy
//! in `HTTPS_PROXY` (an `http://` URL) is asked to `CONNECT`, unless `NO_PROXY` names the host.

use std::io;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, protocol::frame::coding::CloseCode};

use super::Endpoint;
use crate::aws::{AwsError, Network, TunnelRequest};
use crate::ui::printable;

/// The largest frame the AWS CLI sends; bastion sends no larger.
pub const MAX_FRAME: usize = 65_000;
/// The longest a tunnel may last, by AWS's rule (IAM may say less).
pub const MAX_DURATION: u32 = 3600;
/// The endpoint's TLS port.
const PORT: u16 = 443;
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("could not reach the EC2 Instance Connect Endpoint at {host}:443: {reason}")]
    Dial { host: String, reason: String },
    #[error("the proxy {proxy} (HTTPS_PROXY) did not open a tunnel to {host}:443: {reason}")]
    Proxy {
        proxy: String,
        host: String,
        reason: String,
    },
    #[error(
        "TLS with the EC2 Instance Connect Endpoint {host} failed: {reason} (AWS_CA_BUNDLE replaces the system's roots where a proxy inspects TLS)"
    )]
    Tls { host: String, reason: String },
    #[error(
        "the EC2 Instance Connect Endpoint refused the tunnel: HTTP {status}{}{}{}",
        if body.is_empty() { String::new() } else { format!(": {}", printable(body.trim())) },
        request_id.as_deref().map(|r| format!(" (request id {})", printable(r))).unwrap_or_default(),
        hint(*status, body)
    )]
    Refused {
        status: u16,
        body: String,
        request_id: Option<String>,
    },
    #[error("the EC2 Instance Connect Endpoint's WebSocket handshake failed: {0}")]
    Handshake(String),
    #[error("signing the tunnel's URL: {0}")]
    Sign(#[source] AwsError),
}
impl crate::exit::ExitStatus for TunnelError {
    fn exit_status(&self) -> Option<u8> {
        match self {
            TunnelError::Refused { status: 403, .. } => Some(crate::exit::DENIED),
            _ => None,
        }
    }
}

/// What to do about a refusal, by its status.
fn hint(status: u16, body: &str) -> &'static str {
    match status {
        403 => {
            ". Your identity needs ec2-instance-connect:OpenTunnel on this endpoint for the head node's IP and port 22 (`bastion policy user --via eice`)"
        }
        429 => {
            ". An endpoint carries at most 20 connections at once: close some, or connect through the proxy (`--via proxy`)"
        }
        _ if body.contains("limit") || body.contains("Limit") => {
            ". An endpoint carries at most 20 connections at once: close some, or connect through the proxy (`--via proxy`)"
        }
        _ => "",
    }
}

/// Why a tunnel ended, as the endpoint said it (a close's code and reason, a text frame), for
/// the lines that tell the user.
#[derive(Debug, Clone, Default)]
pub struct Ended(Arc<Mutex<Option<String>>>);

impl Ended {
    fn set(&self, why: String) {
        if let Ok(mut w) = self.0.lock()
            && w.is_none()
        {
            *w = Some(why);
        }
    }

    /// The endpoint's word on the end, if it said one.
    pub fn why(&self) -> Option<String> {
        self.0.lock().ok().and_then(|w| w.clone())
    }
}

/// An open tunnel: the head node's TCP stream, as a byte stream.
pub struct Tunnel {
    ws: WebSocketStream<Box<dyn Conn>>,
    pending: Bytes,
    eof: bool,
    ended: Ended,
    opened: std::time::Instant,
    /// AWS's id of the handshake, for a support case.
    pub request_id: Option<String>,
}

/// A connection to the endpoint: TLS over TCP, or over a proxy's CONNECT.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Conn for T {}

impl Tunnel {
    /// Where the reason for the tunnel's end will be.
    pub fn ended(&self) -> Ended {
        self.ended.clone()
    }
}

/// Opens a tunnel through `endpoint` to `ip:port`, lasting at most `max_duration` seconds.
pub async fn open(
    cloud: &(impl Network + ?Sized),
    endpoint: &Endpoint,
    ip: Ipv4Addr,
    port: u16,
    max_duration: u32,
) -> Result<Tunnel, TunnelError> {
    let host = endpoint.host(super::fips_requested()).to_string();
    let request = TunnelRequest {
        endpoint_id: endpoint.id.clone(),
        host: host.clone(),
        remote_port: port,
        private_ip: ip,
        max_duration: max_duration.clamp(1, MAX_DURATION),
    };
    let (url, tls) = tokio::join!(cloud.open_tunnel_url(&request), tls_config());
    let url = url.map_err(TunnelError::Sign)?;
    let tls = tls?;
    let tcp = dial(&host).await?;
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| TunnelError::Tls {
            host: host.clone(),
            reason: e.to_string(),
        })?;
    let tls_stream: TlsStream<Box<dyn Conn>> = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| TunnelError::Tls {
        host: host.clone(),
        reason: "no TLS handshake within 20 s".into(),
    })?
    .map_err(|e| TunnelError::Tls {
        host: host.clone(),
        reason: e.to_string(),
    })?;
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_frame_size(Some(16 << 20))
        .max_message_size(Some(16 << 20));
    let stream: Box<dyn Conn> = Box::new(tls_stream);
    let handshake = tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config));
    let (ws, response) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Err(_) => return Err(TunnelError::Handshake("no answer within 20 s".into())),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let request_id = request_id(response.headers());
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
                .unwrap_or_default();
            return Err(TunnelError::Refused {
                status: response.status().as_u16(),
                body,
                request_id,
            });
        }
        Ok(Err(e)) => return Err(TunnelError::Handshake(e.to_string())),
        Ok(Ok(done)) => done,
    };
    let request_id = request_id(response.headers());
    tracing::info!(endpoint = %endpoint.id, request_id = ?request_id, "tunnel open to {ip}:{port}");
    Ok(Tunnel {
        ws,
        pending: Bytes::new(),
        eof: false,
        ended: Ended::default(),
        opened: std::time::Instant::now(),
        request_id,
    })
}

fn request_id(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("x-amzn-requestid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The TLS client's configuration: the system's roots (or `AWS_CA_BUNDLE`'s), read once, off
/// the async threads (parsing them takes tens of milliseconds).
async fn tls_config() -> Result<Arc<rustls::ClientConfig>, TunnelError> {
    static CONFIG: tokio::sync::OnceCell<Arc<rustls::ClientConfig>> =
        tokio::sync::OnceCell::const_new();
    CONFIG
        .get_or_try_init(|| async {
            tokio::task::spawn_blocking(build_tls_config)
                .await
                .map_err(|e| TunnelError::Tls {
                    host: String::new(),
                    reason: e.to_string(),
                })?
        })
        .await
        .cloned()
}

fn build_tls_config() -> Result<Arc<rustls::ClientConfig>, TunnelError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let fail = |reason: String| TunnelError::Tls {
        host: "the endpoint".into(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    match std::env::var_os("AWS_CA_BUNDLE").filter(|v| !v.is_empty()) {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                .and_then(|i| i.collect())
                .map_err(|e| fail(format!("AWS_CA_BUNDLE {}: {e}", path.to_string_lossy())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(fail(format!(
                    "AWS_CA_BUNDLE {} holds no usable certificate",
                    path.to_string_lossy()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TCP to `host:443`, through `HTTPS_PROXY`'s CONNECT unless `NO_PROXY` names `host`.
async fn dial(host: &str) -> Result<Box<dyn Conn>, TunnelError> {
    let dial_err = |reason: String| TunnelError::Dial {
        host: host.into(),
        reason,
    };
    match https_proxy(host) {
        None => {
            let tcp = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect((host, PORT)))
                .await
                .map_err(|_| dial_err("timed out after 10 s".into()))?
                .map_err(|e| dial_err(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp))
        }
        Some(proxy) => connect_through(&proxy, host)
            .await
            .map(|s| Box::new(s) as Box<dyn Conn>),
    }
}

/// The proxy `HTTPS_PROXY` names for `host`, if any (as `host`, `port`, and a basic
/// `user:password`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProxyServer {
    host: String,
    port: u16,
    basic: Option<String>,
}

fn https_proxy(host: &str) -> Option<ProxyServer> {
    let var = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
    };
    let proxy = var(["HTTPS_PROXY", "https_proxy"])?;
    let no_proxy = var(["NO_PROXY", "no_proxy"]).unwrap_or_default();
    if bypassed(host, &no_proxy) {
        return None;
    }
    parse_proxy(&proxy)
}

/// Whether `NO_PROXY` (a comma list of names, `.suffix`es and `*`) names `host`.
fn bypassed(host: &str, no_proxy: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|e| {
            let e = e.trim_start_matches('*');
            let bare = e.trim_start_matches('.');
            e.is_empty() || host == bare || host.ends_with(&format!(".{bare}"))
        })
}

fn parse_proxy(url: &str) -> Option<ProxyServer> {
    let rest = url.trim();
    let rest = rest.strip_prefix("http://").unwrap_or(rest);
    if rest.contains("://") {
        // https:// proxies (TLS to the proxy itself) are not spoken; say so rather than guess.
        tracing::warn!(
            "HTTPS_PROXY: only http:// proxies are supported for the endpoint's tunnel; connecting directly"
        );
        return None;
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let (basic, hostport) = match authority.rsplit_once('@') {
        Some((user, hp)) => (Some(user.to_string()), hp),
        None => (None, authority),
    };
    let (host, port) = crate::values::split_address(hostport);
    let port = if hostport.contains(':') { port } else { 80 };
    (!host.is_empty()).then_some(ProxyServer { host, port, basic })
}

async fn connect_through(proxy: &ProxyServer, host: &str) -> Result<TcpStream, TunnelError> {
    let fail = |reason: String| TunnelError::Proxy {
        proxy: format!("{}:{}", proxy.host, proxy.port),
        host: host.into(),
        reason,
    };
    let mut tcp = tokio::time::timeout(
        DIAL_TIMEOUT,
        TcpStream::connect((proxy.host.as_str(), proxy.port)),
    )
    .await
    .map_err(|_| fail("timed out after 10 s".into()))?
    .map_err(|e| fail(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let mut head = format!("CONNECT {host}:{PORT} HTTP/1.1\r\nHost: {host}:{PORT}\r\n");
    if let Some(userinfo) = &proxy.basic {
        use base64::Engine;
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(userinfo).collect();
        head.push_str(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(decoded)
        ));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    // The proxy's answer, up to its blank line; nothing past it is read (the TLS handshake's
    // bytes follow only once bastion sends its hello).
    let mut answer = Vec::new();
    let read = async {
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() > 16 << 10 {
                return Err("an answer longer than 16 KiB".to_string());
            }
            let mut b = [0u8; 1];
            match tcp.read(&mut b).await {
                Ok(0) => return Err("it closed the connection".into()),
                Ok(_) => answer.push(b[0]),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, read)
        .await
        .map_err(|_| fail("no answer within 20 s".into()))?
        .map_err(fail)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or_default();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(tcp),
        _ => Err(fail(format!("it answered '{}'", printable(status)))),
    }
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None => {
                    this.eof = true;
                }
                Some(Err(e)) => {
                    this.ended.set(format!("the tunnel broke: {e}"));
                    return Poll::Ready(Err(io_error(e)));
                }
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Text(text))) => {
                    let why = format!(
                        "the endpoint sent text, which its protocol never does: {}",
                        printable(text.as_str())
                    );
                    this.ended.set(why.clone());
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
                }
                Some(Ok(Message::Close(frame))) => match frame {
                    Some(f) if f.code != CloseCode::Normal => {
                        let why = format!(
                            "the endpoint closed the tunnel (code {}): {}",
                            u16::from(f.code),
                            printable(f.reason.as_str())
                        );
                        this.ended.set(why.clone());
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            why,
                        )));
                    }
                    _ => {
                        let secs = this.opened.elapsed().as_secs();
                        this.ended.set(format!(
                            "the endpoint closed the tunnel after {} min {} s (AWS ends each tunnel within the hour)",
                            secs / 60,
                            secs % 60
                        ));
                        this.eof = true;
                    }
                },
                // Pings are answered by the WebSocket layer; pongs and raw frames carry nothing.
                Some(Ok(_)) => {}
            }
        }
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
        let n = buf.len().min(MAX_FRAME);
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_names_hosts_and_their_domains() {
        let host = "eice-1.abc.ec2-instance-connect-endpoint.us-east-1.amazonaws.com";
        assert!(bypassed(host, "localhost, .amazonaws.com"));
        assert!(bypassed(host, "amazonaws.com"));
        assert!(bypassed(host, "*"));
        assert!(bypassed(host, "*.amazonaws.com"));
        assert!(!bypassed(host, "example.com,notamazonaws.com"));
        assert!(!bypassed(host, ""));
    }

    #[test]
    fn https_proxy_urls_are_read_as_curl_reads_them() {
        assert_eq!(
            parse_proxy("http://proxy.corp:3128/"),
            Some(ProxyServer {
                host: "proxy.corp".into(),
                port: 3128,
                basic: None
            })
        );
        assert_eq!(
            parse_proxy("u%40x:p@proxy.corp"),
            Some(ProxyServer {
                host: "proxy.corp".into(),
                port: 80,
                basic: Some("u%40x:p".into())
            })
        );
        assert_eq!(parse_proxy("https://proxy.corp:443"), None);
    }
}
