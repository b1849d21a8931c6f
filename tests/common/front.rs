//! A wire-level AWS front: a small HTTP/1.1 proxy in front of moto that answers some calls the
//! way real AWS does where moto is kinder (console output, eventual consistency, throttling),
//! and passes everything else through. bastion reaches it through the standard endpoint
//! variable, so the SDK's own retry and error parsing meet the real wire format.
//!
//! A rule sees each call (service from the SigV4 credential scope, the query protocol's
//! `Action` and parameters, or the JSON protocol's `X-Amz-Target`) and may answer it itself.
//! The front counts the answers it injected.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One call as the front saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `ec2`, `iam`, `sts`, `ssm`, ... from the credential scope.
    pub service: String,
    /// The query protocol's `Action`, or the JSON protocol's target operation.
    pub action: String,
    pub params: Vec<(String, String)>,
    /// How many calls of this action came before this one.
    pub nth: usize,
}

impl Call {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer the front gives instead of moto's.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    /// An EC2 (query protocol) error as AWS words it.
    pub fn ec2_error(status: u16, code: &str, message: &str) -> Reply {
        Reply {
            status,
            content_type: "text/xml;charset=UTF-8",
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
                 <Message>{message}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
                request_id()
            ),
        }
    }

    /// An IAM or STS error as AWS words it.
    pub fn iam_error(status: u16, code: &str, message: &str) -> Reply {
        Reply {
            status,
            content_type: "text/xml",
            body: format!(
                "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type>\
                 <Code>{code}</Code><Message>{message}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
                request_id()
            ),
        }
    }

    /// `GetConsoleOutput`'s answer: `text` as the instance printed it (base64 on the wire).
    pub fn console_output(instance: &str, text: &str) -> Reply {
        use base64::Engine;
        Reply {
            status: 200,
            content_type: "text/xml;charset=UTF-8",
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetConsoleOutputResponse \
                 xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>{}</requestId>\
                 <instanceId>{instance}</instanceId><timestamp>2026-12-01T00:00:00.000Z</timestamp>\
                 <output>{}</output></GetConsoleOutputResponse>",
                request_id(),
                base64::engine::general_purpose::STANDARD.encode(text)
            ),
        }
    }
}

/// A console output with cloud-init's host-key block listing `keys` (OpenSSH public key lines),
/// between boot lines, with the console's CRLF line ends.
pub fn console_with_keys(keys: &[&str]) -> String {
    format!(
        "[  OK  ] Started cloud-final.service.\r\n-----BEGIN SSH HOST KEY KEYS-----\r\n{}\r\n\
         -----END SSH HOST KEY KEYS-----\r\n[   42.0] cloud-init[1020]: done\r\n",
        keys.join("\r\n")
    )
}

/// What GetConsoleOutput answers per instance id, through `Front::consoles`; ids not in it go
/// to moto.
pub type Consoles = Arc<Mutex<std::collections::HashMap<String, String>>>;

/// A request id shaped as AWS shapes them.
pub fn request_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

type Rule = Box<dyn FnMut(&Call) -> Option<Reply> + Send>;
type Rewrite = Box<dyn FnMut(&Call, &mut String) + Send>;

struct Shared {
    upstream: String,
    rules: Mutex<Vec<Rule>>,
    rewrites: Mutex<Vec<Rewrite>>,
    counts: Mutex<Vec<(String, usize)>>,
    injected: AtomicUsize,
    calls: Mutex<Vec<Call>>,
    /// While set, the endpoint answers nothing: every connection is closed unread.
    dark: Arc<AtomicBool>,
}

pub struct Front {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    /// Starts the front on a free loopback port, forwarding to `upstream` (moto's URL).
    pub async fn start(upstream: &str) -> Front {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            rules: Mutex::new(Vec::new()),
            rewrites: Mutex::new(Vec::new()),
            counts: Mutex::new(Vec::new()),
            injected: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
            dark: Arc::new(AtomicBool::new(false)),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            bastion::install_crypto();
            let client = reqwest::Client::new();
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone(), client.clone()));
            }
        });
        Front { url, shared, task }
    }

    /// Adds a rule; the first rule that answers a call wins.
    pub fn rule(&self, f: impl FnMut(&Call) -> Option<Reply> + Send + 'static) {
        self.shared.rules.lock().unwrap().push(Box::new(f));
    }

    /// Answers GetConsoleOutput, as AWS words it, for the instances in the returned map, with
    /// their text; the test fills it as instances boot.
    pub fn consoles(&self) -> Consoles {
        let consoles: Consoles = Arc::default();
        let map = consoles.clone();
        self.rule(move |c| {
            let id = c
                .param("InstanceId")
                .filter(|_| c.action == "GetConsoleOutput")?;
            let text = map.lock().unwrap().get(id).cloned()?;
            Some(Reply::console_output(id, &text))
        });
        consoles
    }

    /// Adds an edit of moto's answers (text bodies only), for what the lab is in place of AWS:
    /// the proxy's public address, say, which moto makes up.
    pub fn rewrite(&self, f: impl FnMut(&Call, &mut String) + Send + 'static) {
        self.shared.rewrites.lock().unwrap().push(Box::new(f));
    }

    /// The switch that makes AWS unreachable (set) or back (cleared); rules may hold it too.
    pub fn dark(&self) -> Arc<AtomicBool> {
        self.shared.dark.clone()
    }

    /// How many answers the front gave instead of moto.
    pub fn injected(&self) -> usize {
        self.shared.injected.load(Ordering::Relaxed)
    }

    /// Every call seen so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body).replace('+', " ");
    text.split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let d = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Some((d(k), d(v)))
        })
        .collect()
}

fn service_of(authorization: &str) -> String {
    // Credential=AKID/DATE/REGION/SERVICE/aws4_request
    authorization
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or_default()
        .to_string()
}

/// One HTTP/1.1 request as a stand-in reads it.
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// The signing service from the SigV4 credential scope (`ec2`, `ec2-instance-connect`, ...).
    pub fn service(&self) -> String {
        service_of(&self.header("authorization").unwrap_or_default())
    }
}

/// What a stand-in reads of one request at most: AWS's own API requests are far smaller.
const MAX_HEAD: usize = 64 << 10;
const MAX_BODY: usize = 16 << 20;
/// A peer silent this long mid-request is gone.
const READ_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// One read; None on end or error, and on silence mid-request (an idle keep-alive connection
/// between requests may wait as long as the client likes).
async fn read_some(
    conn: &mut tokio::net::TcpStream,
    chunk: &mut [u8],
    mid_request: bool,
) -> Option<usize> {
    let n = if mid_request {
        tokio::time::timeout(READ_IDLE, conn.read(chunk))
            .await
            .ok()?
    } else {
        conn.read(chunk).await
    };
    n.ok().filter(|&n| n > 0)
}

/// Reads the next request of a keep-alive connection (`buf` holds what was read past the last
/// one); None when the peer is gone, stalls, or sends more than any AWS request holds.
pub async fn read_request(conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = read_some(conn, &mut chunk, !buf.is_empty()).await?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let (method, path) = (
        parts.next().unwrap_or("GET").to_string(),
        parts.next().unwrap_or("/").to_string(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let length: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return None;
    }
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 65536];
        let n = read_some(conn, &mut chunk, true).await?;
        buf.extend_from_slice(&chunk[..n]);
    }
    request.body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some(request)
}

/// Writes one response, as AWS frames it (a request id header, keep-alive).
pub async fn write_response(
    conn: &mut tokio::net::TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> bool {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         x-amzn-RequestId: {}\r\nConnection: keep-alive\r\n\r\n",
        body.len(),
        request_id()
    );
    conn.write_all(head.as_bytes()).await.is_ok() && conn.write_all(body).await.is_ok()
}

async fn serve(mut conn: tokio::net::TcpStream, shared: Arc<Shared>, client: reqwest::Client) {
    let mut buf = Vec::new();
    loop {
        if shared.dark.load(Ordering::Relaxed) {
            return;
        }
        let Some(request) = read_request(&mut conn, &mut buf).await else {
            return;
        };
        let Request {
            method,
            path,
            headers,
            body,
        } = request;
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let service = service_of(&header("authorization").unwrap_or_default());
        let (action, params) = match header("x-amz-target") {
            Some(t) => (
                t.rsplit('.').next().unwrap_or_default().to_string(),
                Vec::new(),
            ),
            None => {
                let params = form(&body);
                let action = params
                    .iter()
                    .find(|(k, _)| k == "Action")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                (action, params)
            }
        };
        let nth = {
            let mut counts = shared.counts.lock().unwrap();
            match counts.iter_mut().find(|(a, _)| *a == action) {
                Some((_, n)) => {
                    *n += 1;
                    *n - 1
                }
                None => {
                    counts.push((action.clone(), 1));
                    0
                }
            }
        };
        let call = Call {
            service,
            action,
            params,
            nth,
        };
        if shared.dark.load(Ordering::Relaxed) {
            return;
        }
        shared.calls.lock().unwrap().push(call.clone());
        let injected = {
            let mut rules = shared.rules.lock().unwrap();
            rules.iter_mut().find_map(|r| r(&call))
        };
        let (status, content_type, body) = match injected {
            Some(r) => {
                shared.injected.fetch_add(1, Ordering::Relaxed);
                (r.status, r.content_type.to_string(), r.body.into_bytes())
            }
            None => {
                let mut req = client.request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET),
                    format!("{}{path}", shared.upstream),
                );
                for (k, v) in &headers {
                    let lower = k.to_ascii_lowercase();
                    if lower != "host" && lower != "content-length" && lower != "connection" {
                        req = req.header(k, v);
                    }
                }
                match req.body(body).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let ct = resp
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("text/xml")
                            .to_string();
                        let mut bytes = resp.bytes().await.unwrap_or_default().to_vec();
                        let mut rewrites = shared.rewrites.lock().unwrap();
                        if !rewrites.is_empty()
                            && let Ok(mut text) = String::from_utf8(bytes.clone())
                        {
                            for r in rewrites.iter_mut() {
                                r(&call, &mut text);
                            }
                            bytes = text.into_bytes();
                        }
                        (status, ct, bytes)
                    }
                    Err(e) => (502, "text/plain".into(), e.to_string().into_bytes()),
                }
            }
        };
        if !write_response(&mut conn, status, &content_type, &body).await {
            return;
        }
    }
}
