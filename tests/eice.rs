//! The path with no inbound port: the head node reached through an EC2 Instance Connect
//! Endpoint. moto has no EICE API, so the front describes the endpoint and a stand-in in the lab
//! (tests/eice_standin.py) speaks its tunnel protocol: a TLS WebSocket, presigned with SigV4,
//! checked with botocore's signer. No proxy instance exists in these tests: every byte to the
//! head node goes through the stand-in, which dials it from inside the lab.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use std::time::Duration;

use common::endpoint::{Api, ENDPOINT, Endpoints, TunnelOptions, TunnelService, attach_with};
use common::front::{Front, console_with_keys};
use common::netlab::{self, NetLab};
use common::*;

/// A cluster whose head node is the lab's head host, an endpoint in its VPC (described by the
/// front, served by the stand-in in the lab), and no proxy.
struct EiceWorld {
    lab: NetLab,
    _moto: Moto,
    aws: Clients,
    b: Bastion,
    _tmp: tempfile::TempDir,
    front: Front,
    endpoints: Endpoints,
    /// The front's play of the endpoint API (create, delete).
    api: Api,
    service: TunnelService,
    head_id: String,
    cluster_key: std::path::PathBuf,
}

async fn eice_world(o: TunnelOptions) -> Option<EiceWorld> {
    eice_world_with(o, true).await
}

/// With `premade`, the endpoint exists in the VPC (someone made it); without, none does, and
/// the front hands `ENDPOINT`'s id (whose tunnel the stand-in serves) to the first one made.
async fn eice_world_with(o: TunnelOptions, premade: bool) -> Option<EiceWorld> {
    if !netlab::available() {
        return None;
    }
    let moto = Moto::start()?;
    let mut lab = NetLab::new();
    let aws = moto.clients().await;
    let fixture = aws
        .build_lab(LabOptions {
            cidr: "10.78",
            public_third: 0,
            private_third: lab.n,
            ..LabOptions::default()
        })
        .await;
    assert_eq!(fixture.head_ip, lab.head_ip);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bastion::new(&moto, tmp.path());
    let attached = attach_with(
        &mut lab,
        &mut b,
        (&aws.ec2, &moto.url, &fixture.head_node),
        o,
        premade,
    )
    .await;
    // The head node printed its host keys to its console at first boot, as cloud-init does.
    attached.front.consoles().lock().unwrap().insert(
        fixture.head_node.clone(),
        console_with_keys(&[&lab.host_key("head")]),
    );
    let (cluster_key, cluster_pub) = NetLab::key_pair(tmp.path(), "cluster-key");
    lab.authorize("head", &cluster_pub);
    Some(EiceWorld {
        lab,
        _moto: moto,
        aws,
        b,
        _tmp: tmp,
        front: attached.front,
        endpoints: attached.endpoints,
        api: attached.api,
        service: attached.service,
        head_id: fixture.head_node,
        cluster_key,
    })
}

macro_rules! eice_world_or_skip {
    ($o:expr) => {
        match eice_world($o).await {
            Some(w) => w,
            None => return,
        }
    };
}

impl EiceWorld {
    /// `connect --cluster demo` as root with the cluster's key, then `extra`.
    fn connect_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "connect",
            "--cluster",
            CLUSTER,
            "--user",
            "root",
            "-i",
            self.cluster_key.to_str().unwrap(),
        ];
        v.extend_from_slice(extra);
        v
    }

    fn connect(&self, extra: &[&str]) -> Run {
        self.b.run(&self.connect_args(extra))
    }

    /// An echo service on the head node (localhost:9000 there) and `connect --via eice -N -L`
    /// to it: the local port, and the running forward.
    fn forward_to_echo(&mut self) -> (u16, Watched) {
        self.lab.spawn_in(
            "head",
            "echo",
            &[
                "socat",
                "-t30",
                "TCP-LISTEN:9000,bind=127.0.0.1,fork,reuseaddr,backlog=128",
                "EXEC:cat",
            ],
        );
        let port = free_port();
        let spec = format!("{port}:localhost:9000");
        let cmd = self
            .b
            .command(&self.connect_args(&["--via", "eice", "-N", "-L", &spec]));
        let child = Watched::start(cmd);
        wait_listening(port);
        (port, child)
    }
}

/// A command on the head node, through the endpoint: chosen by `--via eice`, and by default when
/// the cluster has no proxy. The head node sees the connection come from inside the lab (the
/// stand-in's side), the stand-in logged the tunnel it opened, and the head node's key was
/// checked against its console, as through the proxy.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_runs_on_the_head_node_through_the_endpoint() {
    let w = eice_world_or_skip!(TunnelOptions::default());
    let r = w.connect(&["--via", "eice", "--", "echo", "via:$SSH_CONNECTION"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.contains(&format!("via:10.78.{}.1 ", w.lab.n)),
        "{r:?}"
    );
    let opened = w.service.events_named("open");
    assert_eq!(opened.len(), 1, "{:?}", w.service.events());
    assert_eq!(opened[0]["ip"], w.lab.head_ip.as_str());
    assert_eq!(opened[0]["port"], 22);
    // bastion asks for the hour, so a policy that limits maxTunnelDuration can match.
    assert_eq!(opened[0]["duration"], 3600);
    assert!(
        r.stderr.contains("pinned the head node's host key") || r.stderr.contains("pinned"),
        "{r:?}"
    );
    let known = std::fs::read_to_string(w.b.state_dir.join("known_hosts")).unwrap();
    assert!(
        known.contains(&format!("{} {}", w.head_id, w.lab.host_key("head"))),
        "{known}"
    );

    // No --via: no proxy exists, so the endpoint.
    let r = w.connect(&["--", "echo", "again"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), "again");
    assert_eq!(w.service.events_named("open").len(), 2);
    let _ = &w.aws;
    let _ = &w.front;
    let _ = &w.endpoints;
}

/// `up --via eice` in a VPC with no endpoint makes one (the front plays AWS's API, the
/// stand-in serves the tunnel of the id it hands out): a command then reaches the head node
/// through it, by default since there is no proxy; `down` removes it and the tunnel is gone.
#[tokio::test(flavor = "multi_thread")]
async fn the_endpoint_up_made_carries_a_command_and_down_removes_it() {
    let w = match eice_world_with(TunnelOptions::default(), false).await {
        Some(w) => w,
        None => return,
    };
    let up = w.b.run(&[
        "up",
        "--cluster",
        CLUSTER,
        "--via",
        "eice",
        "--output",
        "json",
    ]);
    assert_eq!(up.status, 0, "{up:?}");
    let r = up.json();
    assert_eq!(r["endpoint_id"], ENDPOINT, "{r}");
    assert_eq!(r["created"], true, "{r}");
    eprintln!(
        "the endpoint was create-complete {} s after the create call (as played: {} describes in progress)",
        r["ready_after_seconds"],
        w.api.lock().unwrap().settle
    );

    let c = w.connect(&["--", "echo", "through:$SSH_CONNECTION"]);
    assert_eq!(c.status, 0, "{c:?}");
    assert!(
        c.stdout.contains(&format!("through:10.78.{}.1 ", w.lab.n)),
        "{c:?}"
    );
    assert_eq!(w.service.events_named("open").len(), 1);

    let down = w.b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(down.status, 0, "{down:?}");
    assert!(
        down.stdout
            .contains(&format!("removed EC2 Instance Connect Endpoint {ENDPOINT}")),
        "{down:?}"
    );
    let c = w.connect(&["--", "echo", "again"]);
    assert_ne!(c.status, 0, "{c:?}");
    assert!(
        c.stderr.contains("no EC2 Instance Connect Endpoint")
            || c.stderr.contains("has no bastion"),
        "{c:?}"
    );
    assert_eq!(w.aws.leftovers(CLUSTER).await, Vec::<String>::new());
}

/// Behind a corporate web proxy: with `HTTPS_PROXY` (user and password in its URL,
/// percent-encoded), the tunnel is asked of the proxy with `CONNECT` and Basic credentials, and
/// the head node is reached through it; with `NO_PROXY` naming the endpoint's domain, bastion
/// goes directly and the proxy sees nothing more.
#[tokio::test(flavor = "multi_thread")]
async fn the_tunnel_goes_through_https_proxy_unless_no_proxy_names_the_endpoint() {
    let mut w = eice_world_or_skip!(TunnelOptions::default());
    let names =
        std::collections::HashMap::from([(w.service.dns_name.clone(), w.lab.proxy_ip.clone())]);
    let proxy = common::endpoint::ConnectProxy::start(names, Some("u@corp:pa ss")).await;
    w.b.env.push((
        "HTTPS_PROXY".into(),
        format!("http://u%40corp:pa%20ss@127.0.0.1:{}", proxy.port),
    ));
    let r = w.connect(&["--via", "eice", "--", "echo", "proxied"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), "proxied");
    assert_eq!(
        *proxy.seen.lock().unwrap(),
        [format!(
            "CONNECT {}:443 HTTP/1.1 (authorized)",
            w.service.dns_name
        )]
    );

    w.b.env.push((
        "NO_PROXY".into(),
        format!("localhost,.ec2-instance-connect-endpoint.{REGION}.amazonaws.com"),
    ));
    let r = w.connect(&["--via", "eice", "--", "echo", "direct"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), "direct");
    assert_eq!(
        proxy.seen.lock().unwrap().len(),
        1,
        "the proxy saw nothing more"
    );
    assert_eq!(w.service.events_named("open").len(), 2);
}

/// The signature is real: the stand-in, which recomputes it with botocore and the secret key it
/// was given, refuses bastion's when that key is not the one bastion signed with; bastion shows
/// AWS's status, its error and the request id, and opens nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_signed_with_another_secret_key_is_refused() {
    let w = eice_world_or_skip!(TunnelOptions {
        secret_key: "not-the-secret-bastion-signs-with".into(),
        ..TunnelOptions::default()
    });
    let r = w.connect(&["--via", "eice", "--", "true"]);
    assert_ne!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("refused the tunnel: HTTP 403"), "{r:?}");
    assert!(r.stderr.contains("SignatureDoesNotMatch"), "{r:?}");
    assert!(r.stderr.contains("request id"), "{r:?}");
    let refused = w.service.events_named("refused");
    assert_eq!(refused.len(), 1, "{:?}", w.service.events());
    assert_eq!(refused[0]["code"], "SignatureDoesNotMatch");
    assert!(w.service.events_named("open").is_empty());
}

/// What only a proxy can do is refused, saying why, where the endpoint is the way in.
#[tokio::test(flavor = "multi_thread")]
async fn what_needs_a_proxy_is_refused_through_the_endpoint() {
    let w = eice_world_or_skip!(TunnelOptions::default());
    for extra in [
        vec!["--on-proxy", "--", "true"],
        vec![
            "--via",
            "eice",
            "--bastion-address",
            "10.0.0.1",
            "--",
            "true",
        ],
        vec!["--via", "eice", "--allow-me", "--", "true"],
        vec!["--dcv", "--desktop"],
        vec!["--stdio", "10.0.0.9:80"],
    ] {
        let r = w.connect(&extra);
        assert_ne!(r.status, 0, "{extra:?}: {r:?}");
        assert!(
            r.stderr.contains("needs the proxy") || r.stderr.contains("no bastion"),
            "{extra:?}: {r:?}"
        );
    }
    assert!(w.service.events_named("open").is_empty());
}

/// 256 MiB through `-L` and back, checksummed end to end, every byte in the endpoint's
/// WebSocket frames.
#[tokio::test(flavor = "multi_thread")]
async fn port_forwards_carry_256_mib_through_the_endpoint() {
    if common::require_tool("socat", &[]).is_none() {
        return;
    }
    let mut w = eice_world_or_skip!(TunnelOptions::default());
    let (port, mut child) = w.forward_to_echo();
    let big: Vec<u8> = (0..256u32 * 1024 * 1024 / 4)
        .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
        .collect();
    let t = std::time::Instant::now();
    let back = echo_through(port, &big);
    eprintln!("256 MiB echoed through the endpoint in {:?}", t.elapsed());
    assert_eq!(back.len(), big.len());
    assert!(back == big, "the bytes came back changed");
    assert!(child.running());
    assert_eq!(w.service.events_named("open").len(), 1);
}

/// OpenSSH through `ssh-config`: its ProxyCommand is bastion's `--stdio` through the endpoint
/// (one tunnel per connection), and OpenSSH checks the head node's key that bastion pinned from
/// the console; ParallelCluster's `pcluster ssh` through the installed config too.
#[tokio::test(flavor = "multi_thread")]
async fn openssh_reaches_the_head_node_through_the_endpoint() {
    if common::require_tool("ssh", &[]).is_none() {
        return;
    }
    let w = eice_world_or_skip!(TunnelOptions::default());
    let key = w.cluster_key.to_str().unwrap().to_string();
    let r = w.b.run(&[
        "ssh-config",
        "--cluster",
        CLUSTER,
        "--user",
        "root",
        "-i",
        &key,
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("EC2 Instance Connect Endpoint {ENDPOINT}")),
        "{r:?}"
    );
    assert!(r.stdout.contains("--via eice"), "{r:?}");
    assert!(!r.stdout.contains("Host bastion-"), "no proxy block: {r:?}");
    let config = w.lab.path("ssh_config");
    std::fs::write(&config, &r.stdout).unwrap();
    let mut ssh = w.b.aws_command("ssh");
    ssh.args(["-F", config.to_str().unwrap(), "-o", "BatchMode=yes"])
        .arg(format!("{CLUSTER}-head"))
        .args(["echo", "openssh-via:$SSH_CONNECTION"]);
    let r = w.b.run_cmd(ssh);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("openssh-via:10.78.{}.1 ", w.lab.n)),
        "{r:?}"
    );
    assert_eq!(
        w.service.events_named("open").len(),
        1,
        "{:?}",
        w.service.events()
    );

    // ParallelCluster's own `pcluster ssh -n NAME` (from PyPI, reading the head node from AWS)
    // runs `ssh <user>@<private ip>`: the installed config carries it through the endpoint.
    let Some(pcluster) = common::require_tool("pcluster", &[pcluster_venv().join("bin/pcluster")])
    else {
        return;
    };
    let r = w.b.run(&[
        "ssh-config",
        "--cluster",
        CLUSTER,
        "--user",
        "root",
        "-i",
        &key,
        "--install",
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    let main = w.b.home.join(".ssh/config");
    let mut cmd = w.b.aws_command(&pcluster);
    cmd.env("AWS_DEFAULT_REGION", REGION).args([
        "ssh",
        "-n",
        CLUSTER,
        "-F",
        main.to_str().unwrap(),
        "-o",
        "BatchMode=yes",
        "echo pcluster-via:$SSH_CONNECTION",
    ]);
    let r = w.b.run_cmd(cmd);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout
            .starts_with(&format!("pcluster-via:10.78.{}.1 ", w.lab.n)),
        "pcluster ssh went through the endpoint: {r:?}"
    );
    assert_eq!(w.service.events_named("open").len(), 2);
}

/// The endpoint ends a tunnel when its time is up (an hour at AWS; 3 s here): `-N` keeps its
/// local port, says why the tunnel ended, reconnects and carries data again; a command cut by
/// it ends with the endpoint's word.
#[tokio::test(flavor = "multi_thread")]
async fn when_the_endpoint_ends_a_tunnel_forwards_reconnect_and_a_session_says_why() {
    if common::require_tool("socat", &[]).is_none() {
        return;
    }
    let mut w = eice_world_or_skip!(TunnelOptions {
        max_duration: 3,
        ..TunnelOptions::default()
    });
    let (port, mut child) = w.forward_to_echo();
    assert_eq!(echo_through(port, b"before"), b"before");
    child.wait_stderr("reconnected to", 1, Duration::from_secs(60));
    assert!(
        child.stderr().contains("the endpoint closed the tunnel"),
        "{}",
        child.stderr()
    );
    assert_eq!(echo_through(port, b"after"), b"after");
    assert!(child.running());
    assert!(w.service.events_named("open").len() >= 2);

    let r = w.connect(&["--via", "eice", "--", "sleep", "30"]);
    assert_ne!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("the endpoint closed the tunnel"), "{r:?}");
}

/// An endpoint takes so many connections at once (20 at AWS; 1 here): the next is refused, and
/// bastion says it is the endpoint's cap.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_past_the_endpoints_cap_is_told_so() {
    if common::require_tool("socat", &[]).is_none() {
        return;
    }
    let w = eice_world_or_skip!(TunnelOptions {
        cap: 1,
        ..TunnelOptions::default()
    });
    let port = free_port();
    let spec = format!("{port}:localhost:22");
    let cmd =
        w.b.command(&w.connect_args(&["--via", "eice", "-N", "-L", &spec]));
    let mut first = Watched::start(cmd);
    wait_listening(port);
    let r = w.connect(&["--via", "eice", "--", "true"]);
    assert_ne!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("HTTP 429"), "{r:?}");
    assert!(r.stderr.contains("at most 20 connections at once"), "{r:?}");
    assert!(first.running());
}

/// `status` shows the endpoint beside the proxies (none here), with the clusters it serves;
/// `policy user --cluster demo --via eice` names that endpoint, the head node and its IP, and
/// nothing of a proxy.
#[tokio::test(flavor = "multi_thread")]
async fn status_and_the_teammates_policy_name_the_endpoint() {
    let w = eice_world_or_skip!(TunnelOptions::default());
    let r = w.b.run(&["status", "--output", "json"]);
    assert_eq!(r.status, 0, "{r:?}");
    let v = r.json();
    assert_eq!(v["bastions"].as_array().unwrap().len(), 0, "{r:?}");
    let e = &v["endpoints"][0];
    assert_eq!(e["endpoint_id"], ENDPOINT, "{r:?}");
    assert_eq!(e["state"], "create-complete");
    assert_eq!(e["clusters"], serde_json::json!([CLUSTER]));
    let r = w.b.run(&["status", "--cluster", CLUSTER]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.contains(ENDPOINT) && r.stdout.contains("create-complete"),
        "{r:?}"
    );

    let r =
        w.b.run(&["policy", "user", "--cluster", CLUSTER, "--via", "eice"]);
    assert_eq!(r.status, 0, "{r:?}");
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let text = doc.to_string();
    assert!(
        text.contains(&format!("instance-connect-endpoint/{ENDPOINT}")),
        "{text}"
    );
    assert!(text.contains(&format!("{}/32", w.lab.head_ip)), "{text}");
    assert!(text.contains(&format!("instance/{}", w.head_id)), "{text}");
    assert!(
        !text.contains("SendSSHPublicKey") && !text.contains("StartInstances"),
        "{text}"
    );
    let r = w.b.run(&["policy", "user", "--via", "eice"]);
    assert_eq!(r.status, 2, "{r:?}");
    assert!(r.stderr.contains("--via eice applies to"), "{r:?}");
}

/// `doctor --cluster` checks the endpoint beside the rest: its state, its group's egress to the
/// head node on 22, and the head node's ingress from it, with the command that fixes each; once
/// the rule is added, the check passes.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_checks_the_endpoints_way_to_the_head_node() {
    let w = eice_world_or_skip!(TunnelOptions::default());
    let find = |v: &serde_json::Value, id: &str| -> serde_json::Value {
        // The report, or (when it finds problems) its checks alone.
        v.get("checks")
            .unwrap_or(v)
            .as_array()
            .unwrap_or_else(|| panic!("no checks in {v}"))
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no check {id} in {v}"))
    };
    let r =
        w.b.run(&["doctor", "--cluster", CLUSTER, "--output", "json"]);
    let v = r.json();
    assert_eq!(find(&v, "eice.state")["status"], "ok", "{r:?}");
    // The endpoint sits in the head node's group, whose egress is moto's allow-all.
    assert_eq!(find(&v, "eice.egress")["status"], "ok", "{r:?}");
    // The head node admits SSH from 203.0.113.0/24 only: not from the endpoint.
    let ingress = find(&v, "eice.head-node-ingress");
    assert_eq!(ingress["status"], "problem", "{r:?}");
    let head_sg = w.endpoints.lock().unwrap()[0].groups[0].clone();
    assert!(
        ingress["fix"].as_str().unwrap().contains(&format!(
            "--group-id {head_sg} --protocol tcp --port 22 --source-group {head_sg}"
        )),
        "{ingress}"
    );
    w.aws
        .ec2
        .authorize_security_group_ingress()
        .group_id(&head_sg)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .user_id_group_pairs(
                    aws_sdk_ec2::types::UserIdGroupPair::builder()
                        .group_id(&head_sg)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let r =
        w.b.run(&["doctor", "--cluster", CLUSTER, "--output", "json"]);
    assert_eq!(
        find(&r.json(), "eice.head-node-ingress")["status"],
        "ok",
        "{r:?}"
    );
}
