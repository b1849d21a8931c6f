//! A stand-in for EC2 Instance Connect, which moto lacks: `SendSSHPublicKey` over its real wire
//! protocol (JSON 1.1, `X-Amz-Target: AWSEC2InstanceConnectService.SendSSHPublicKey`, SigV4
//! service `ec2-instance-connect`), reached through the SDK's service-specific endpoint variable
//! `AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT`. As AWS does, it checks the arguments and the
//! instance (moto must hold it, running), and makes the key valid for that instance and OS user
//! for 60 s. The proxy's sshd reads the valid keys through [`InstanceConnect::keys_command`], an
//! `AuthorizedKeysCommand` playing the agent that real instances run.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::front::{Request, read_request, write_response};

/// The service's own figure: a pushed key is good for 60 seconds.
pub const VALIDITY: Duration = Duration::from_secs(60);

/// Where the stand-in's `AuthorizedKeysCommand` is installed on the lab's proxy.
pub const KEYS_COMMAND: &str = "/usr/local/sbin/bastion-test-eic-keys";

/// One accepted push, as bastion sent it.
#[derive(Debug, Clone)]
pub struct Push {
    pub instance: String,
    pub user: String,
    pub key: String,
    pub service: String,
}

struct Shared {
    ec2: aws_sdk_ec2::Client,
    store: PathBuf,
    pushes: Mutex<Vec<Push>>,
    refused: Mutex<Vec<String>>,
    deny: AtomicBool,
    validity_secs: AtomicU64,
}

pub struct InstanceConnect {
    pub url: String,
    pub store: PathBuf,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for InstanceConnect {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl InstanceConnect {
    /// Starts the stand-in on a free loopback port; keys are kept under `store`.
    pub async fn start(ec2: aws_sdk_ec2::Client, store: &Path) -> InstanceConnect {
        std::fs::create_dir_all(store).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            ec2,
            store: store.to_path_buf(),
            pushes: Mutex::new(Vec::new()),
            refused: Mutex::new(Vec::new()),
            deny: AtomicBool::new(false),
            validity_secs: AtomicU64::new(VALIDITY.as_secs()),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(request) = read_request(&mut conn, &mut buf).await {
                        let (status, body) = answer(&s, &request).await;
                        if !write_response(
                            &mut conn,
                            status,
                            "application/x-amz-json-1.1",
                            body.as_bytes(),
                        )
                        .await
                        {
                            return;
                        }
                    }
                });
            }
        });
        InstanceConnect {
            url,
            store: store.to_path_buf(),
            shared,
            task,
        }
    }

    /// Every push accepted so far.
    pub fn pushes(&self) -> Vec<Push> {
        self.shared.pushes.lock().unwrap().clone()
    }

    /// The error codes given so far.
    pub fn refused(&self) -> Vec<String> {
        self.shared.refused.lock().unwrap().clone()
    }

    /// Answers every push as AWS answers a caller whose policy does not allow it.
    pub fn deny(&self, deny: bool) {
        self.shared.deny.store(deny, Ordering::Relaxed);
    }

    /// Shortens how long a pushed key is good for (to see a session outlive its key quickly).
    pub fn set_validity(&self, d: Duration) {
        self.shared
            .validity_secs
            .store(d.as_secs(), Ordering::Relaxed);
    }

    /// The `AuthorizedKeysCommand` (run by sshd as `KEYS_COMMAND %u`) that prints the keys
    /// pushed for `instance` and that user which are still valid, as the agent on a real
    /// instance does.
    pub fn keys_command(&self, instance: &str) -> String {
        format!(
            "#!/bin/sh\n\
             f='{store}/{instance}/'\"$1\"\n\
             [ -f \"$f\" ] || exit 0\n\
             now=$(date +%s)\n\
             while read -r until alg blob; do\n\
             \x20 [ \"$until\" -gt \"$now\" ] && printf '%s %s\\n' \"$alg\" \"$blob\"\n\
             done < \"$f\"\n\
             exit 0\n",
            store = self.store.display()
        )
    }
}

fn error(code: &str, message: &str) -> String {
    serde_json::json!({"__type": code, "Message": message}).to_string()
}

/// The real service's checks, in its order: the caller's permission, the arguments' forms, the
/// instance's existence and state.
async fn answer(s: &Shared, r: &Request) -> (u16, String) {
    let refuse = |status: u16, code: &str, message: &str| {
        s.refused.lock().unwrap().push(code.to_string());
        (status, error(code, message))
    };
    if r.method != "POST"
        || r.header("x-amz-target").as_deref()
            != Some("AWSEC2InstanceConnectService.SendSSHPublicKey")
        || r.service() != "ec2-instance-connect"
    {
        return refuse(400, "UnknownOperationException", "unknown operation");
    }
    if s.deny.load(Ordering::Relaxed) {
        return refuse(
            400,
            "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/teammate is not authorized to perform: \
             ec2-instance-connect:SendSSHPublicKey on resource: arn:aws:ec2:us-east-1:123456789012:instance/*",
        );
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
        return refuse(400, "SerializationException", "the body is not JSON");
    };
    let field = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    let (instance, user, key) = (
        field("InstanceId"),
        field("InstanceOSUser"),
        field("SSHPublicKey"),
    );
    let instance_ok = instance.starts_with("i-")
        && instance.len() > 2
        && instance[2..].chars().all(|c| c.is_ascii_hexdigit());
    // The service's pattern for a user: ^[A-Za-z_][A-Za-z0-9\@\._-]{0,30}[A-Za-z0-9\$_-]?$
    let user_ok = !user.is_empty()
        && user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._-$".contains(c));
    let key_ok = (80..=4096).contains(&key.len())
        && key.split(' ').count() == 2
        && ["ssh-ed25519 ", "ssh-rsa "]
            .iter()
            .any(|p| key.starts_with(p));
    if !instance_ok || !user_ok || !key_ok {
        return refuse(400, "InvalidArgsException", "invalid arguments");
    }
    let found = s
        .ec2
        .describe_instances()
        .instance_ids(&instance)
        .send()
        .await;
    let state = found.ok().and_then(|o| {
        o.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| {
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
            })
    });
    match state.as_deref() {
        None => {
            return refuse(
                400,
                "EC2InstanceNotFoundException",
                &format!("Instance {instance} was not found"),
            );
        }
        Some("running") => {}
        Some(other) => {
            return refuse(
                400,
                "EC2InstanceStateInvalidException",
                &format!("Instance {instance} is {other}, not running"),
            );
        }
    }
    let until = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + s.validity_secs.load(Ordering::Relaxed);
    let dir = s.store.join(&instance);
    std::fs::create_dir_all(&dir).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(&user))
            .unwrap();
        writeln!(f, "{until} {key}").unwrap();
    }
    s.pushes.lock().unwrap().push(Push {
        instance,
        user,
        key,
        service: r.service(),
    });
    let id = super::front::request_id();
    (
        200,
        serde_json::json!({"RequestId": id, "Success": true}).to_string(),
    )
}

/// A stand-in for the public-address service (checkip): answers `address` to every request.
pub struct AddressService {
    pub url: String,
    answer: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AddressService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AddressService {
    pub async fn start(address: &str) -> AddressService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let answer = Arc::new(Mutex::new(format!("{address}\n")));
        let a = answer.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let a = a.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while read_request(&mut conn, &mut buf).await.is_some() {
                        let text = a.lock().unwrap().clone();
                        if !write_response(&mut conn, 200, "text/plain", text.as_bytes()).await {
                            return;
                        }
                    }
                });
            }
        });
        AddressService { url, answer, task }
    }

    pub fn set(&self, address: &str) {
        *self.answer.lock().unwrap() = format!("{address}\n");
    }
}
