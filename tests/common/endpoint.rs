//! A stand-in for an EC2 Instance Connect Endpoint, which moto lacks: its API
//! (`DescribeInstanceConnectEndpoints`, in EC2's query protocol, answered by the front) and its
//! tunnel service (`tests/eice_standin.py`: a TLS WebSocket on port 443 of the endpoint's DNS
//! name, in the lab's proxy namespace, which reaches the head node as an endpoint in the VPC
//! does). bastion reaches it the way it reaches AWS's: the DNS name resolves through
//! `/etc/hosts` (a private copy mounted for bastion's processes alone) and its certificate is
//! signed by a test CA that bastion trusts through `AWS_CA_BUNDLE`, the setting the README
//! documents for a TLS-inspecting proxy.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use super::front::{Call, Front, Reply, request_id};
use super::netlab::NetLab;
use super::{Bastion, REGION};

/// The account moto answers for.
const ACCOUNT: &str = "123456789012";

/// One endpoint as the front describes it.
#[derive(Debug, Clone)]
pub struct Described {
    pub id: String,
    pub vpc: String,
    pub subnet: String,
    pub state: String,
    pub dns_name: String,
    pub groups: Vec<String>,
    pub tags: Vec<(String, String)>,
}

impl Described {
    fn xml(&self) -> String {
        format!("<item>{}</item>", self.fields())
    }

    fn fields(&self) -> String {
        let groups: String = self
            .groups
            .iter()
            .map(|g| format!("<item>{g}</item>"))
            .collect();
        let tags: String = self
            .tags
            .iter()
            .map(|(k, v)| format!("<item><key>{k}</key><value>{v}</value></item>"))
            .collect();
        format!(
            "<ownerId>{ACCOUNT}</ownerId><instanceConnectEndpointId>{id}</instanceConnectEndpointId>\
             <instanceConnectEndpointArn>arn:aws:ec2:{REGION}:{ACCOUNT}:instance-connect-endpoint/{id}</instanceConnectEndpointArn>\
             <state>{state}</state><stateMessage></stateMessage><dnsName>{dns}</dnsName>\
             <fipsDnsName>{id}.fips.ec2-instance-connect-endpoint.{REGION}.amazonaws.com</fipsDnsName>\
             <networkInterfaceIdSet><item>eni-0123456789abcdef0</item></networkInterfaceIdSet>\
             <vpcId>{vpc}</vpcId><availabilityZone>{REGION}a</availabilityZone>\
             <createdAt>2026-12-01T00:00:00.000Z</createdAt><subnetId>{subnet}</subnetId>\
             <preserveClientIp>false</preserveClientIp><securityGroupIdSet>{groups}</securityGroupIdSet>\
             <tagSet>{tags}</tagSet>",
            id = self.id,
            state = self.state,
            dns = self.dns_name,
            vpc = self.vpc,
            subnet = self.subnet,
        )
    }
}

/// What the front answers `DescribeInstanceConnectEndpoints` with; the test edits it.
pub type Endpoints = Arc<Mutex<Vec<Described>>>;

/// AWS's endpoint API as the front plays it, beside the endpoints it describes.
#[derive(Debug, Default)]
pub struct Played {
    /// Describes an endpoint stays in `create-in-progress` or `delete-in-progress` before it
    /// moves on (AWS: a minute or a few).
    pub settle: u32,
    /// The VPC of each subnet an endpoint may be created in (the test fills it from moto).
    pub subnets: std::collections::HashMap<String, String>,
    /// Ids for new endpoints, in order (the stand-in's tunnel service serves one); made up when
    /// none is left.
    pub next_ids: std::collections::VecDeque<String>,
    /// The DNS name of each id the stand-in serves.
    pub dns_names: std::collections::HashMap<String, String>,
    /// Describes left before each endpoint in progress moves on.
    left: std::collections::HashMap<String, u32>,
    /// Client tokens seen, with the endpoint each made (a retry gets the same one).
    tokens: std::collections::HashMap<String, String>,
    /// Every create and delete, in order: `create eice-…`, `delete eice-…`.
    pub log: Vec<String>,
    made: u32,
}

/// The state the front's endpoint API keeps; the test reads and edits it.
pub type Api = Arc<Mutex<Played>>;

/// Serves `DescribeInstanceConnectEndpoints` from `endpoints` (filtered by `vpc-id` and by id,
/// as EC2 filters), and no create or delete (an endpoint that exists before the test).
pub fn serve_describe(front: &Front, endpoints: Endpoints) {
    serve_api(front, endpoints);
}

/// EC2's Instance Connect Endpoint API, played as AWS answers it: `Create…` (one endpoint per
/// VPC, `create-in-progress`, then `create-complete` after `settle` describes; idempotent by
/// client token), `Describe…` (filtered by `vpc-id` and id; a deleted endpoint stays listed as
/// `delete-complete`, as AWS lists it for a while), `Delete…` (`delete-in-progress`, then
/// `delete-complete`), and `DeleteSecurityGroup` refused with `DependencyViolation` while an
/// endpoint not deleted uses the group (moto does not know of endpoints).
pub fn serve_api(front: &Front, endpoints: Endpoints) -> Api {
    let api: Api = Arc::default();
    let state = api.clone();
    front.rule(move |c| {
        let mut played = state.lock().unwrap();
        match c.action.as_str() {
            "DescribeInstanceConnectEndpoints" => {
                let mut list = endpoints.lock().unwrap();
                played.tick(&mut list);
                Some(describe(c, &list))
            }
            "CreateInstanceConnectEndpoint" => {
                let mut list = endpoints.lock().unwrap();
                Some(played.create(c, &mut list))
            }
            "DeleteInstanceConnectEndpoint" => {
                let mut list = endpoints.lock().unwrap();
                Some(played.delete(c, &mut list))
            }
            "DeleteSecurityGroup" => {
                let group = c.param("GroupId")?;
                let list = endpoints.lock().unwrap();
                list.iter()
                    .any(|e| e.state != "delete-complete" && e.groups.iter().any(|g| g == group))
                    .then(|| {
                        Reply::ec2_error(
                            400,
                            "DependencyViolation",
                            &format!("resource {group} has a dependent object"),
                        )
                    })
            }
            _ => None,
        }
    });
    api
}

impl Played {
    /// One describe's worth of time: endpoints in progress move on after `settle` describes.
    fn tick(&mut self, list: &mut [Described]) {
        for e in list.iter_mut() {
            let next = match e.state.as_str() {
                "create-in-progress" => "create-complete",
                "delete-in-progress" => "delete-complete",
                _ => continue,
            };
            let left = self.left.entry(e.id.clone()).or_insert(self.settle);
            if *left == 0 {
                e.state = next.into();
                self.left.remove(&e.id);
            } else {
                *left -= 1;
            }
        }
    }

    fn create(&mut self, c: &Call, list: &mut Vec<Described>) -> Reply {
        let token = c.param("ClientToken").unwrap_or_default().to_string();
        if let Some(id) = self.tokens.get(&token)
            && let Some(e) = list.iter().find(|e| &e.id == id)
        {
            return created(e, &token);
        }
        let Some(subnet) = c.param("SubnetId") else {
            return Reply::ec2_error(
                400,
                "MissingParameter",
                "The request must contain the parameter SubnetId",
            );
        };
        let Some(vpc) = self.subnets.get(subnet).cloned() else {
            return Reply::ec2_error(
                400,
                "InvalidSubnetID.NotFound",
                &format!("The subnet ID '{subnet}' does not exist"),
            );
        };
        if list
            .iter()
            .any(|e| e.vpc == vpc && e.state != "delete-complete")
        {
            return Reply::ec2_error(
                400,
                "ResourceLimitExceeded",
                &format!(
                    "You've reached the limit of EC2 Instance Connect Endpoints for {vpc}: 1 per VPC."
                ),
            );
        }
        let groups = indexed(c, "SecurityGroupId");
        let mut tags = Vec::new();
        let mut i = 1;
        while let Some(k) = c.param(&format!("TagSpecification.1.Tag.{i}.Key")) {
            let v = c
                .param(&format!("TagSpecification.1.Tag.{i}.Value"))
                .unwrap_or_default();
            tags.push((k.to_string(), v.to_string()));
            i += 1;
        }
        self.made += 1;
        let id = self
            .next_ids
            .pop_front()
            .unwrap_or_else(|| format!("eice-0aaaaaaaaaaaa{:04x}", self.made));
        let dns_name = self.dns_names.get(&id).cloned().unwrap_or_else(|| {
            format!("{id}.1a2b3c4d.ec2-instance-connect-endpoint.{REGION}.amazonaws.com")
        });
        let e = Described {
            id: id.clone(),
            vpc,
            subnet: subnet.into(),
            state: "create-in-progress".into(),
            dns_name,
            groups,
            tags,
        };
        self.log.push(format!("create {id}"));
        self.tokens.insert(token.clone(), id);
        list.push(e.clone());
        created(&e, &token)
    }

    fn delete(&mut self, c: &Call, list: &mut [Described]) -> Reply {
        let id = c.param("InstanceConnectEndpointId").unwrap_or_default();
        let Some(e) = list
            .iter_mut()
            .find(|e| e.id == id && e.state != "delete-complete")
        else {
            return Reply::ec2_error(
                400,
                "InvalidInstanceConnectEndpointId.NotFound",
                &format!("The instanceConnectEndpoint ID '{id}' does not exist"),
            );
        };
        e.state = "delete-in-progress".into();
        // Its delete counts its own describes, from `settle` as it is now.
        self.left.remove(id);
        self.log.push(format!("delete {id}"));
        Reply {
            status: 200,
            content_type: "text/xml;charset=UTF-8",
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteInstanceConnectEndpointResponse \
                 xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>{}</requestId>\
                 <instanceConnectEndpoint>{}</instanceConnectEndpoint></DeleteInstanceConnectEndpointResponse>",
                request_id(),
                e.fields()
            ),
        }
    }
}

/// `Name.1`, `Name.2`, ... of a query-protocol call.
fn indexed(c: &Call, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut k = 1;
    while let Some(v) = c.param(&format!("{name}.{k}")) {
        out.push(v.to_string());
        k += 1;
    }
    out
}

fn created(e: &Described, token: &str) -> Reply {
    Reply {
        status: 200,
        content_type: "text/xml;charset=UTF-8",
        body: format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CreateInstanceConnectEndpointResponse \
             xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>{}</requestId>\
             <instanceConnectEndpoint>{}</instanceConnectEndpoint><clientToken>{token}</clientToken>\
             </CreateInstanceConnectEndpointResponse>",
            request_id(),
            e.fields()
        ),
    }
}

fn describe(c: &Call, list: &[Described]) -> Reply {
    let mut vpcs = Vec::new();
    let mut i = 1;
    while let Some(name) = c.param(&format!("Filter.{i}.Name")) {
        let mut j = 1;
        while let Some(v) = c.param(&format!("Filter.{i}.Value.{j}")) {
            if name == "vpc-id" {
                vpcs.push(v.to_string());
            }
            j += 1;
        }
        i += 1;
    }
    let ids = indexed(c, "InstanceConnectEndpointId");
    let items: String = list
        .iter()
        .filter(|e| vpcs.is_empty() || vpcs.contains(&e.vpc))
        .filter(|e| ids.is_empty() || ids.contains(&e.id))
        .map(Described::xml)
        .collect();
    Reply {
        status: 200,
        content_type: "text/xml;charset=UTF-8",
        body: format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeInstanceConnectEndpointsResponse \
             xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>{}</requestId>\
             <instanceConnectEndpointSet>{items}</instanceConnectEndpointSet>\
             </DescribeInstanceConnectEndpointsResponse>",
            request_id()
        ),
    }
}

/// How the stand-in's tunnel service runs.
pub struct TunnelOptions {
    /// The secret key it checks signatures with (the test's own, unless a test shows that a
    /// wrong one is refused).
    pub secret_key: String,
    /// Seconds a tunnel lasts at most (AWS: an hour).
    pub max_duration: u32,
    /// Concurrent connections (AWS: 20).
    pub cap: u32,
}

impl Default for TunnelOptions {
    fn default() -> Self {
        TunnelOptions {
            secret_key: "testing".into(),
            max_duration: 3600,
            cap: 20,
        }
    }
}

/// The endpoint's tunnel service, running in the lab's proxy namespace.
pub struct TunnelService {
    pub id: String,
    pub dns_name: String,
    /// The CA bastion must trust (`AWS_CA_BUNDLE`).
    pub ca: PathBuf,
    /// The /etc/hosts bastion's processes see.
    pub hosts: PathBuf,
    pub log: PathBuf,
}

impl TunnelService {
    /// Starts the service for endpoint `id` on the lab proxy's address, port 443.
    pub fn start(lab: &mut NetLab, id: &str, o: TunnelOptions) -> TunnelService {
        let dns_name =
            format!("{id}.1a2b3c4d.ec2-instance-connect-endpoint.{REGION}.amazonaws.com");
        let dir = lab.path("eice");
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert, key) = certificates(&dir, &dns_name);
        let hosts = dir.join("hosts");
        std::fs::write(
            &hosts,
            format!(
                "127.0.0.1 localhost\n::1 localhost\n{} {dns_name}\n",
                lab.proxy_ip
            ),
        )
        .unwrap();
        let log = dir.join("log.jsonl");
        let python = format!(
            "{}/bin/python",
            std::env::var("BASTION_VENV").unwrap_or_else(|_| "/var/tmp/bastion-venv".into())
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/eice_standin.py");
        let listen = format!("{}:443", lab.proxy_ip);
        let (max, cap) = (o.max_duration.to_string(), o.cap.to_string());
        lab.spawn_in(
            "proxy",
            "eice",
            &[
                &python,
                script,
                "--listen",
                &listen,
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                "--endpoint-id",
                id,
                "--region",
                REGION,
                "--access-key",
                "testing",
                "--secret-key",
                &o.secret_key,
                "--max-duration",
                &max,
                "--cap",
                &cap,
                "--log",
                log.to_str().unwrap(),
            ],
        );
        lab.wait_port("proxy", 443);
        TunnelService {
            id: id.into(),
            dns_name,
            ca,
            hosts,
            log,
        }
    }

    /// Points `b`'s processes at this service as they would reach AWS's: the name in their
    /// /etc/hosts, the CA in `AWS_CA_BUNDLE`.
    pub fn reach_from(&self, b: &mut Bastion) {
        b.hosts = Some(self.hosts.clone());
        b.env
            .push(("AWS_CA_BUNDLE".into(), self.ca.to_str().unwrap().into()));
    }

    /// The service's decisions so far, one JSON object each.
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The events named `name`.
    pub fn events_named(&self, name: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }
}

/// A CA and a server certificate for `dns_name` signed by it, made with openssl.
fn certificates(dir: &std::path::Path, dns_name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (ca_key, ca) = (dir.join("ca.key"), dir.join("ca.pem"));
    let (key, csr, cert) = (
        dir.join("server.key"),
        dir.join("server.csr"),
        dir.join("server.pem"),
    );
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=DNS:{dns_name}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
        ),
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let p = |x: &PathBuf| x.to_str().unwrap().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p(&ca_key),
        "-out",
        &p(&ca),
        "-days",
        "2",
        "-subj",
        "/CN=bastion test endpoint CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
        "-subj",
        "/CN=bastion test endpoint",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-out",
        &p(&cert),
        "-days",
        "2",
        "-extfile",
        &p(&ext),
    ]);
    (ca, cert, key)
}

/// An endpoint in the VPC of a world's head node (`ENDPOINT`, create-complete, in its subnet):
/// the front that describes it (now `b`'s AWS endpoint) and its tunnel service in the lab.
pub struct Attached {
    pub front: Front,
    pub service: TunnelService,
    pub endpoints: Endpoints,
    /// The front's play of the endpoint API: the first endpoint made gets `ENDPOINT`'s id.
    pub api: Api,
}

/// The endpoint id the tests and the bench use.
pub const ENDPOINT: &str = "eice-0123456789abcdef0";

/// Describes an endpoint for `head_id`'s VPC and subnet (read from moto), serves its tunnel in
/// `lab`, and points `b` at both.
pub async fn attach(
    lab: &mut NetLab,
    b: &mut Bastion,
    ec2: &aws_sdk_ec2::Client,
    moto_url: &str,
    head_id: &str,
) -> Attached {
    attach_with(
        lab,
        b,
        (ec2, moto_url, head_id),
        TunnelOptions::default(),
        true,
    )
    .await
}

/// [`attach`] with the service's options; without `premade`, no endpoint exists yet and the
/// front's API hands `ENDPOINT`'s id (whose tunnel the service serves) to the first one made
/// (`up --via eice`).
pub async fn attach_with(
    lab: &mut NetLab,
    b: &mut Bastion,
    (ec2, moto_url, head_id): (&aws_sdk_ec2::Client, &str, &str),
    o: TunnelOptions,
    premade: bool,
) -> Attached {
    let described = ec2
        .describe_instances()
        .instance_ids(head_id)
        .send()
        .await
        .unwrap();
    let head = &described.reservations()[0].instances()[0];
    let (vpc, subnet) = (
        head.vpc_id().unwrap().to_string(),
        head.subnet_id().unwrap().to_string(),
    );
    let front = Front::start(moto_url).await;
    let service = TunnelService::start(lab, ENDPOINT, o);
    let endpoints: Endpoints = Arc::default();
    if premade {
        endpoints.lock().unwrap().push(Described {
            id: ENDPOINT.into(),
            vpc: vpc.clone(),
            subnet: subnet.clone(),
            state: "create-complete".into(),
            dns_name: service.dns_name.clone(),
            groups: head
                .security_groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_string))
                .collect(),
            tags: Vec::new(),
        });
    }
    let api = serve_api(&front, endpoints.clone());
    {
        let mut played = api.lock().unwrap();
        played.settle = 1;
        played.subnets.insert(subnet, vpc);
        played.next_ids.push_back(ENDPOINT.into());
        played
            .dns_names
            .insert(ENDPOINT.into(), service.dns_name.clone());
    }
    b.endpoint = front.url.clone();
    service.reach_from(b);
    Attached {
        front,
        service,
        endpoints,
        api,
    }
}

/// A corporate web proxy, as far as `CONNECT` goes, on loopback: it resolves the host a client
/// names through `names` (its own DNS), opens TCP to it, answers `200 Connection established`
/// and splices the two; with `basic`, it asks for that user:password first (`407` without).
/// It records each request line and whether its credentials were right.
pub struct ConnectProxy {
    pub port: u16,
    /// `CONNECT host:port HTTP/1.1` lines, each with ` (authorized)` or ` (refused)` where
    /// credentials are asked for.
    pub seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConnectProxy {
    pub async fn start(
        names: std::collections::HashMap<String, String>,
        basic: Option<&str>,
    ) -> ConnectProxy {
        use base64::Engine;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let expected = basic.map(|b| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        });
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let (names, expected, log) = (names.clone(), expected.clone(), log.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
                        match client.read(&mut b).await {
                            Ok(1) => head.push(b[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let line = text.lines().next().unwrap_or_default().to_string();
                    let auth = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Proxy-Authorization: ").map(str::to_string));
                    let authorized = expected.as_ref().is_none_or(|e| auth.as_ref() == Some(e));
                    log.lock().unwrap().push(match &expected {
                        None => line.clone(),
                        Some(_) if authorized => format!("{line} (authorized)"),
                        Some(_) => format!("{line} (refused)"),
                    });
                    if !authorized {
                        let _ = client
                            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                            .await;
                        return;
                    }
                    let target = line
                        .strip_prefix("CONNECT ")
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|hp| hp.rsplit_once(':'))
                        .and_then(|(h, p)| Some((names.get(h)?.clone(), p.to_string())));
                    let Some((ip, port)) = target else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    let Ok(mut upstream) =
                        tokio::net::TcpStream::connect(format!("{ip}:{port}")).await
                    else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    if client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        ConnectProxy { port, seen, task }
    }
}
