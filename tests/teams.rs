//! A team shares one proxy: teammates without the proxy key log in with one-time keys pushed
//! through EC2 Instance Connect (a stand-in speaking its wire protocol, tests/common/eic.rs, and
//! the proxy's real sshd reading the pushed keys), admit their own addresses with `bastion
//! allow`, and use OpenSSH through `connect --stdio`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use std::io::Read;
use std::time::Duration;

use common::world::World;
use common::*;

/// What bastion pushed: ed25519 public keys, one per session, never the same twice.
fn assert_fresh_ed25519_keys(pushes: &[common::eic::Push]) {
    let mut keys: Vec<&str> = pushes.iter().map(|p| p.key.as_str()).collect();
    assert!(
        keys.iter().all(|k| k.starts_with("ssh-ed25519 ")),
        "{keys:?}"
    );
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        pushes.len(),
        "a fresh key each time: {pushes:?}"
    );
}

/// No private key of any kind in a directory tree (the one-time keys live in memory only).
fn assert_no_private_key(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            assert_no_private_key(&p);
        } else {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            assert!(
                !text.contains("PRIVATE KEY"),
                "a private key on disk: {p:?}"
            );
        }
    }
}

/// The teammate's `connect -N -L <port>:localhost:9000` (the head node's echo service), its
/// stderr in the lab's `log`, once the port listens.
fn teammate_forward(
    w: &World,
    t: &common::world::Teammate,
    log: &str,
) -> (Guard, u16, std::path::PathBuf) {
    let port = free_port();
    let spec = format!("{port}:localhost:9000");
    let log = w.lab.path(log);
    let mut cmd = t.b.command(&w.teammate_args(&["-L", &spec, "-N"]));
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let child = Guard(Some(cmd.spawn().unwrap()));
    wait_listening(port);
    (child, port, log)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_teammate_without_the_proxy_key_logs_in_with_one_time_keys() {
    let mut w = world_or_skip!();
    // The teammate's address is admitted by the rule `up` made (10.77.0.0/16).
    let t = w.teammate(&format!("10.77.{}.1", w.lab.n)).await;
    // Not the proxy's sudo user: the user the user-data made for teammates.
    let proxy_login = bastion::userdata::TEAMMATE_USER;

    let mut args = w.teammate_args(&["-v", "--", "echo", "on:$SSH_CONNECTION"]);
    args.insert(1, "--no-progress");
    let r = t.b.run(&args);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.starts_with(&format!("on:10.78.{}.1 ", w.lab.n)),
        "the command ran on the head node, through the proxy: {r:?}"
    );
    assert!(
        r.stderr.contains(&format!(
            "logged in to the proxy {} as {proxy_login} with a one-time key pushed with EC2 Instance Connect",
            w.proxy_id
        )),
        "-v says which way the session logged in: {r:?}"
    );
    assert!(
        r.stderr.contains("your address 10.77.") && r.stderr.contains("is admitted"),
        "the address was checked: {r:?}"
    );
    let pushes = t.eic.pushes();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].instance, w.proxy_id);
    assert_eq!(pushes[0].user, proxy_login, "the teammate's login user");
    assert_eq!(pushes[0].service, "ec2-instance-connect");

    // A port forward, in a session of its own: another push, another key.
    w.spawn_echo();
    let (mut child, port, _log) = teammate_forward(&w, &t, "teammate-forward.log");
    assert_eq!(echo_through(port, b"teammate"), b"teammate");
    assert_eq!(child.interrupt(Duration::from_secs(30)).code(), Some(0));
    let pushes = t.eic.pushes();
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    assert_fresh_ed25519_keys(&pushes);
    assert!(
        pushes
            .iter()
            .all(|p| p.instance == w.proxy_id && p.user == proxy_login)
    );

    // Without a permission to push and without the proxy key: the denied action and the policy.
    t.eic.deny(true);
    let r = t.b.run(&w.teammate_args(&["--", "true"]));
    assert_eq!(r.status, 3, "a permission problem is exit 3: {r:?}");
    assert!(
        r.stderr.contains("ec2-instance-connect:SendSSHPublicKey")
            && r.stderr.contains("bastion policy user")
            && r.stderr.contains("policies/bastion-user.json"),
        "{r:?}"
    );
    t.eic.deny(false);

    // The keys never touched the teammate's disk.
    assert_no_private_key(&t.b.state_dir);
    assert_no_private_key(&t.b.home);

    // The operator, whose machine has the proxy key, logs in with it as the OS's sudo user,
    // and pushes nothing.
    let pushed = t.eic.pushes().len();
    let mut args = w.connect_args(&["-v", "--", "true"]);
    args.insert(1, "--no-progress");
    let at = args.iter().position(|a| *a == "--bastion-user").unwrap();
    args.drain(at..at + 2);
    let r = w.b.run(&args);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "logged in to the proxy {} as ec2-user with the key {}",
            w.proxy_id,
            w.b.state_dir.display()
        )) && !r.stderr.contains("EC2 Instance Connect"),
        "-v says the state dir's key logged in: {r:?}"
    );
    assert_eq!(t.eic.pushes().len(), pushed);
}

/// The session outlives its key (valid seconds here), and a reconnect after the key expired
/// gets in only because it pushes a fresh one.
#[tokio::test(flavor = "multi_thread")]
async fn a_reconnect_pushes_a_fresh_key() {
    let mut w = world_or_skip!();
    let t = w.teammate(&format!("10.77.{}.1", w.lab.n)).await;
    t.eic.set_validity(Duration::from_secs(3));
    w.spawn_echo();
    let (child, port, log) = teammate_forward(&w, &t, "teammate-reconnect.log");
    assert_eq!(echo_through(port, b"first"), b"first");
    // Once the proxy's sshd would no longer take the key (its AuthorizedKeysCommand prints
    // nothing for the login user), the session still carries new connections.
    let keys = t.eic.keys_command(&w.proxy_id);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("sh")
            .args(["-c", &keys, "keys", bastion::userdata::TEAMMATE_USER])
            .output()
            .unwrap();
        if out.status.success() && out.stdout.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pushed key never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(echo_through(port, b"outlived"), b"outlived");
    assert_eq!(t.eic.pushes().len(), 1);

    w.lab.set_proxy_link(false);
    let lost = wait_for_text(&log, "was lost", Duration::from_secs(150));
    w.lab.set_proxy_link(true);
    assert!(
        lost,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        wait_for_text(&log, "reconnected to", Duration::from_secs(150)),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(echo_through(port, b"after"), b"after");
    let pushes = t.eic.pushes();
    assert!(pushes.len() >= 2, "{pushes:?}");
    assert_fresh_ed25519_keys(&pushes);
    drop(child);
}

/// `allow` against moto: a rule for the caller's /32 described with their identity and the
/// date, listed, revoked; `connect` from an address not admitted says so before dialling;
/// `--allow-me` admits it; `down` leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn allow_admits_lists_and_revokes_addresses_on_the_proxy_group_only() {
    let mut w = world_or_skip!();
    let t = w.teammate("198.51.100.7").await;
    let group = {
        let i = w.aws.bastion_instances(CLUSTER).await;
        // Launched with a network interface: its groups are the interface's.
        i[0].network_interfaces()[0].groups()[0]
            .group_id()
            .unwrap()
            .to_string()
    };
    let head_group_before = head_group_rules(&w).await;

    // Not admitted, and no other way in: one line with the command to run; nothing dialled.
    let mut args = w.teammate_args(&["--", "true"]);
    let at = args.iter().position(|a| *a == "--bastion-address").unwrap();
    args.drain(at..at + 2);
    let r = t.b.run(&args);
    assert_eq!(r.status, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("your public address 198.51.100.7 is not admitted")
            && r.stderr.contains("bastion allow --cluster demo")
            && r.stderr.contains("--allow-me"),
        "{r:?}"
    );
    assert!(t.eic.pushes().is_empty(), "refused before any login");

    // allow: the caller's /32, described with who and when, on the proxy's group.
    let r =
        t.b.run(&["allow", "--cluster", CLUSTER, "--output", "json"]);
    assert_eq!(r.status, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["action"], "admitted");
    assert_eq!(j["cidr"], "198.51.100.7/32");
    assert_eq!(j["security_group"], group.as_str());
    let rules = proxy_group_rules(&w, &group).await;
    let date = today();
    let mine = rules
        .iter()
        .find(|(c, _)| c == "198.51.100.7/32")
        .unwrap_or_else(|| panic!("{rules:?}"));
    assert!(
        mine.1.starts_with("bastion allow: arn:aws:") && mine.1.ends_with(&date),
        "{mine:?}"
    );
    let again =
        t.b.run(&["allow", "--cluster", CLUSTER, "--output", "json"]);
    assert_eq!(again.json()["action"], "already-admitted", "{again:?}");

    // --list: an array of {cidr, description}, the rule `up` made too.
    let r =
        t.b.run(&["allow", "--cluster", CLUSTER, "--list", "--output", "json"]);
    assert_eq!(r.status, 0, "{r:?}");
    let listed: Vec<(String, String)> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e.as_object().unwrap().len(), 2, "{e}");
            (
                e["cidr"].as_str().unwrap().to_string(),
                e["description"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(listed.contains(&mine.clone()), "{listed:?}");
    assert!(
        listed.iter().any(|(c, _)| c == "10.77.0.0/16"),
        "{listed:?}"
    );

    // Another block, then revoked; 0.0.0.0/0 only when named, with a warning.
    let r =
        t.b.run(&["allow", "--cluster", CLUSTER, "--cidr", "203.0.113.0/24"]);
    assert_eq!(r.status, 0, "{r:?}");
    let r =
        t.b.run(&["allow", "--cluster", CLUSTER, "--cidr", "0.0.0.0/0"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("whole internet"), "{r:?}");
    for cidr in ["203.0.113.0/24", "0.0.0.0/0"] {
        let r = t.b.run(&[
            "allow",
            "--cluster",
            CLUSTER,
            "--revoke",
            cidr,
            "--output",
            "json",
        ]);
        assert_eq!(r.json()["action"], "revoked", "{r:?}");
    }
    // --revoke alone: my address.
    let r = t.b.run(&[
        "allow",
        "--cluster",
        CLUSTER,
        "--revoke",
        "--output",
        "json",
    ]);
    assert_eq!(r.json()["action"], "revoked", "{r:?}");
    assert_eq!(r.json()["cidr"], "198.51.100.7/32");
    let r = t.b.run(&[
        "allow",
        "--cluster",
        CLUSTER,
        "--revoke",
        "--output",
        "json",
    ]);
    assert_eq!(r.json()["action"], "not-admitted", "{r:?}");
    let cidrs: Vec<String> = proxy_group_rules(&w, &group)
        .await
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        cidrs,
        vec!["10.77.0.0/16".to_string()],
        "only up's rule is left"
    );

    // --allow-me: connect admits the address itself, then logs in (through the lab address,
    // where a public-address refusal is only a warning).
    let r =
        t.b.run(&w.teammate_args(&["--allow-me", "--", "echo", "in"]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), "in");
    assert!(
        r.stderr.contains("admitted your address 198.51.100.7/32"),
        "{r:?}"
    );
    assert!(
        proxy_group_rules(&w, &group)
            .await
            .iter()
            .any(|(c, _)| c == "198.51.100.7/32")
    );

    // Only the proxy's group was ever changed; down takes the group with every rule.
    assert_eq!(head_group_rules(&w).await, head_group_before);
    let r = w.b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(w.aws.leftovers(CLUSTER).await, Vec::<String>::new());
}

/// Today's date in UTC as `YYYY-MM-DD`, from `date` (not from bastion's code).
fn today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// (CIDR, description) of each ingress rule of a group, as AWS holds them.
async fn proxy_group_rules(w: &World, group: &str) -> Vec<(String, String)> {
    let out = w
        .aws
        .ec2
        .describe_security_group_rules()
        .filters(filter("group-id", group))
        .send()
        .await
        .unwrap();
    let mut v: Vec<(String, String)> = out
        .security_group_rules()
        .iter()
        .filter(|r| r.is_egress() != Some(true))
        .filter_map(|r| {
            Some((
                r.cidr_ipv4()?.to_string(),
                r.description().unwrap_or_default().to_string(),
            ))
        })
        .collect();
    v.sort();
    v
}

async fn head_group_rules(w: &World) -> Vec<(i32, String)> {
    let head = w
        .aws
        .ec2
        .describe_instances()
        .instance_ids(&w.head_id)
        .send()
        .await
        .unwrap();
    let i = &head.reservations()[0].instances()[0];
    let group = i
        .security_groups()
        .iter()
        .chain(i.network_interfaces().iter().flat_map(|n| n.groups()))
        .find_map(|g| g.group_id())
        .unwrap()
        .to_string();
    let mut rules = w.aws.ingress(&group).await;
    rules.sort();
    rules
}

/// `ssh-config` on a machine with no proxy key writes bastion itself as the ProxyCommand; real
/// OpenSSH and ParallelCluster's `pcluster ssh` reach the head node through `--stdio`.
#[tokio::test(flavor = "multi_thread")]
async fn openssh_reaches_the_head_node_through_stdio_without_a_proxy_key() {
    let Some(pcluster) = require_tool("pcluster", &[pcluster_venv().join("bin/pcluster")]) else {
        return;
    };
    if common::require_tool("ssh", &[]).is_none() {
        return;
    }
    let mut w = world_or_skip!();
    let t = w.teammate(&format!("10.77.{}.1", w.lab.n)).await;
    let r = t.b.run(&[
        "ssh-config",
        "--cluster",
        CLUSTER,
        "--bastion-address",
        &w.lab.proxy_ip,
        "--user",
        "root",
        "-i",
        w.cluster_key.to_str().unwrap(),
        "--install",
        "--output",
        "json",
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.json()["via"], "stdio", "{r:?}");
    let config = std::fs::read_to_string(r.json()["installed"].as_str().unwrap()).unwrap();
    let exe = env!("CARGO_BIN_EXE_bastion");
    let expected = format!(
        "ProxyCommand {exe} connect --cluster demo --stdio --quiet --region {REGION} --via proxy --bastion-address {}",
        w.lab.proxy_ip
    );
    assert!(config.contains(&expected), "{config}");
    assert!(
        !config.contains("ProxyJump") && !config.contains("Host bastion-demo"),
        "{config}"
    );

    let main = t.b.home.join(".ssh/config");
    let ssh = |target: &str| {
        let mut cmd = t.b.aws_command("ssh");
        cmd.arg("-F")
            .arg(&main)
            .args(["-o", "BatchMode=yes", target, "echo via:$SSH_CONNECTION"]);
        t.b.run_cmd(cmd)
    };
    let via = format!("via:10.78.{}.1 ", w.lab.n);
    let r = ssh("demo-head");
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.starts_with(&via), "{r:?}");
    let r = ssh(&format!("root@{}", w.lab.head_ip));
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.starts_with(&via), "{r:?}");

    // pcluster ssh -n demo runs `ssh <user>@<private ip>`: the same config carries it.
    let mut cmd = t.b.aws_command(&pcluster);
    cmd.env("AWS_DEFAULT_REGION", REGION).args([
        "ssh",
        "-n",
        CLUSTER,
        "-F",
        main.to_str().unwrap(),
        "-o",
        "BatchMode=yes",
        "echo via:$SSH_CONNECTION",
    ]);
    let r = t.b.run_cmd(cmd);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.starts_with(&via),
        "pcluster ssh went through --stdio: {r:?}"
    );

    // Each OpenSSH run logged in to the proxy with a key of its own.
    let pushes = t.eic.pushes();
    assert_eq!(pushes.len(), 3, "{pushes:?}");
    assert_fresh_ed25519_keys(&pushes);
    assert_no_private_key(&t.b.state_dir);
}

/// The actions a policy document allows, as `service:Action` (ours name each one; no wildcards).
fn allowed(document: &str) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_str(document).unwrap();
    let mut out = Vec::new();
    for s in doc["Statement"].as_array().unwrap() {
        if s["Effect"] != "Allow" {
            continue;
        }
        match &s["Action"] {
            serde_json::Value::String(a) => out.push(a.clone()),
            serde_json::Value::Array(v) => {
                out.extend(v.iter().map(|a| a.as_str().unwrap().to_string()))
            }
            _ => panic!("{s}"),
        }
    }
    assert!(
        out.iter().all(|a| !a.contains('*')),
        "no wildcard actions: {out:?}"
    );
    out
}

/// What a run called, as IAM names it, from the wire-level front (and Instance Connect's
/// stand-in). `sts:GetCallerIdentity` needs no permission.
fn actions_called(front: &front::Front, eic: Option<&common::eic::InstanceConnect>) -> Vec<String> {
    let mut v: Vec<String> = front
        .calls()
        .iter()
        .map(|c| format!("{}:{}", c.service, c.action))
        .filter(|a| a != "sts:GetCallerIdentity")
        .collect();
    if let Some(e) = eic
        && !e.pushes().is_empty()
    {
        v.push("ec2-instance-connect:SendSSHPublicKey".into());
    }
    v.sort();
    v.dedup();
    v
}

fn render_for_moto(policy: &str) -> String {
    let t = bastion::policy::Target {
        partition: "aws",
        account: "123456789012",
        region: REGION,
    };
    match policy {
        "user" => bastion::policy::user_policy(&t, &Default::default()).unwrap(),
        _ => bastion::policy::operator_policy(&t, false).unwrap(),
    }
}

/// moto's IAM cannot judge scoped statements, so the tests record what each command calls and
/// hold it against the documents: a teammate's commands call only what `bastion-user.json`
/// allows; every call of `up`, `down` and `doctor --fix` is in `bastion-operator.json`; and the
/// user policy allows none of `up`'s writes, but for adding an ingress rule, which it allows
/// only on groups tagged `bastion:cluster`.
#[tokio::test(flavor = "multi_thread")]
async fn a_teammates_commands_call_only_what_the_user_policy_allows() {
    if common::require_tool("ssh", &[]).is_none() {
        return;
    }
    let mut w = world_or_skip!();
    let mut t = w.teammate(&format!("10.77.{}.1", w.lab.n)).await;
    let front = front::Front::start(&w.moto.url).await;
    t.b.endpoint = front.url.clone();
    // A stopped proxy is started by connect (the idle timer's doing).
    w.aws.stop_instance(&w.proxy_id).await;
    let runs: Vec<Vec<&str>> = vec![
        w.teammate_args(&["--", "true"]),
        vec!["allow", "--cluster", CLUSTER, "--cidr", "203.0.113.9"],
        vec!["allow", "--cluster", CLUSTER, "--list"],
        vec!["allow", "--cluster", CLUSTER, "--revoke", "203.0.113.9"],
        vec!["status"],
        vec![
            "ssh-config",
            "--cluster",
            CLUSTER,
            "--bastion-address",
            &w.lab.proxy_ip,
        ],
    ];
    for args in &runs {
        let r = t.b.run(args);
        assert_eq!(r.status, 0, "{args:?}: {r:?}");
    }
    // --stdio, as OpenSSH's ProxyCommand runs it: the head node's SSH banner comes back.
    let mut cmd = t.b.command(&w.teammate_args(&["--stdio"]));
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = Guard(Some(cmd.spawn().unwrap()));
    let mut stdout = child.child().stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut banner = [0u8; 8];
        let _ = tx.send(stdout.read_exact(&mut banner).map(|()| banner));
    });
    let banner = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a banner within 60 s")
        .unwrap();
    assert_eq!(
        &banner, b"SSH-2.0-",
        "the head node's sshd answered through --stdio"
    );
    drop(child.child().stdin.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.child().try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "--stdio did not end with its stdin"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");

    assert_within(
        &actions_called(&front, Some(&t.eic)),
        "user",
        &[
            "ec2:DescribeInstances",
            "ec2:StartInstances",
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupIngress",
            "ec2:DescribeSecurityGroupRules",
            "ec2-instance-connect:SendSSHPublicKey",
        ],
    );
}

/// Every action `called` is allowed by `bastion-<policy>.json`, and those in `must` were
/// called (so the check has something to judge).
fn assert_within(called: &[String], policy: &str, must: &[&str]) {
    let allows = allowed(&render_for_moto(policy));
    let outside: Vec<&String> = called.iter().filter(|a| !allows.contains(a)).collect();
    assert!(
        outside.is_empty(),
        "called beyond bastion-{policy}.json: {outside:?}"
    );
    for m in must {
        assert!(called.iter().any(|a| a == m), "{m} was called: {called:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_down_and_doctor_fix_call_only_what_the_operator_policy_allows() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    aws.build_lab(LabOptions::default()).await;
    let front = front::Front::start(&moto.url).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bastion::new(&moto, tmp.path());
    b.endpoint = front.url.clone();
    let r = b.run(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        "198.51.100.0/24",
        "--no-wait",
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    let up_calls = actions_called(&front, None);
    let r = b.run(&["doctor", "--cluster", CLUSTER, "--fix"]);
    assert!(r.status == 0 || r.status == 1, "{r:?}");
    let r = b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());

    assert_within(
        &actions_called(&front, None),
        "operator",
        &[
            "ec2:RunInstances",
            "iam:CreateRole",
            "iam:PutRolePolicy",
            "ec2:TerminateInstances",
            "ec2:CreateVpcEndpoint",
        ],
    );
    // What AWS authorizes without a call of its own: launching with an instance profile passes
    // its role, and tags given at creation are CreateTags / TagRole / TagInstanceProfile.
    let operator = allowed(&render_for_moto("operator"));
    for implied in [
        "iam:PassRole",
        "ec2:CreateTags",
        "iam:TagRole",
        "iam:TagInstanceProfile",
    ] {
        assert!(operator.iter().any(|a| a == implied), "{implied}");
    }

    // up's writes are not a teammate's, but for one: a rule on a group tagged bastion:cluster.
    let user_doc: serde_json::Value = serde_json::from_str(&render_for_moto("user")).unwrap();
    let user = allowed(&render_for_moto("user"));
    let reads = ["Describe", "Get", "List"];
    for a in up_calls.iter().filter(|a| {
        !reads
            .iter()
            .any(|r| a.split(':').nth(1).unwrap().starts_with(r))
    }) {
        if a == "ec2:AuthorizeSecurityGroupIngress" {
            for s in user_doc["Statement"].as_array().unwrap() {
                if s["Action"].to_string().contains(a.as_str()) {
                    assert_eq!(
                        s["Condition"]["Null"]["aws:ResourceTag/bastion:cluster"], "false",
                        "only on bastion's groups: {s}"
                    );
                    assert_eq!(
                        s["Resource"], "arn:aws:ec2:*:123456789012:security-group/*",
                        "{s}"
                    );
                }
            }
            continue;
        }
        assert!(
            !user.contains(a),
            "{a}, a write of up, is in the user policy"
        );
    }
}

/// `up --via eice` and `down` (the endpoint made, waited for, and removed with its group and
/// rules) call nothing the operator policy does not allow, and each write they need is called.
#[tokio::test(flavor = "multi_thread")]
async fn up_and_down_via_eice_call_only_what_the_operator_policy_allows() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let front = front::Front::start(&moto.url).await;
    let api = common::endpoint::serve_api(&front, Default::default());
    api.lock()
        .unwrap()
        .subnets
        .insert(lab.private_subnet.clone(), lab.vpc.clone());
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bastion::new(&moto, tmp.path());
    b.endpoint = front.url.clone();
    let r = b.run(&["up", "--cluster", CLUSTER, "--via", "eice"]);
    assert_eq!(r.status, 0, "{r:?}");
    let r = b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
    assert_within(
        &actions_called(&front, None),
        "operator",
        &[
            "ec2:CreateSecurityGroup",
            "ec2:RevokeSecurityGroupEgress",
            "ec2:AuthorizeSecurityGroupEgress",
            "ec2:CreateInstanceConnectEndpoint",
            "ec2:DescribeInstanceConnectEndpoints",
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupIngress",
            "ec2:DeleteInstanceConnectEndpoint",
            "ec2:DeleteSecurityGroup",
        ],
    );
}

/// A key pushed for `user` on the proxy through the Instance Connect stand-in's API, as the
/// SDK sends it (what a teammate's own `aws ec2-instance-connect send-ssh-public-key` does).
async fn push_key(w: &World, t: &common::world::Teammate, user: &str, public_key: &str) {
    let c = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(&t.eic.url)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    aws_sdk_ec2instanceconnect::Client::new(&c)
        .send_ssh_public_key()
        .instance_id(&w.proxy_id)
        .instance_os_user(user)
        .ssh_public_key(public_key)
        .send()
        .await
        .unwrap();
}

/// OpenSSH's client as a teammate with a pushed key would use it against the proxy's real
/// sshd, which runs the configuration the shipped user-data writes: `extra` then the target.
fn teammate_ssh(w: &World, key: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let known = w.lab.path("teammate_known_hosts");
    std::fs::write(
        &known,
        format!("{} {}\n", w.lab.proxy_ip, w.lab.host_key("proxy")),
    )
    .unwrap();
    let out = std::process::Command::new("ssh")
        .args([
            "-F",
            "none",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .arg("-i")
        .arg(key)
        .args(extra)
        .arg(format!(
            "{}@{}",
            bastion::userdata::TEAMMATE_USER,
            w.lab.proxy_ip
        ))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The proxy's sshd runs what the user-data writes (its `harden_sshd`, rendered into the lab):
/// a teammate's login opens the head node's port 22 and nothing else. bastion refuses
/// `--on-proxy` and `--desktop` for a teammate before logging in; OpenSSH's own `-W` to any
/// other address or port, and a session, are refused by sshd. The teammate user has no sudo;
/// the operator's login keeps it.
#[tokio::test(flavor = "multi_thread")]
async fn a_teammates_login_opens_the_head_nodes_ssh_port_and_nothing_else() {
    let mut w = world_or_skip!();
    if require_tool("ssh", &[]).is_none() || require_tool("sudo", &[]).is_none() {
        return;
    }
    let t = w.teammate(&format!("10.77.{}.1", w.lab.n)).await;

    for (flags, what) in [
        (vec!["--on-proxy", "--", "id"], "--on-proxy"),
        (vec!["--dcv", "--desktop", "--show-url"], "--desktop"),
        (vec!["--stdio", "127.0.0.1:22"], "--stdio 127.0.0.1:22"),
    ] {
        let r = t.b.run(&w.teammate_args(&flags));
        assert_eq!(r.status, 3, "{r:?}");
        assert!(
            r.stderr.contains(what)
                && r.stderr.contains("needs the operator's login on the proxy")
                && r.stderr.contains("bastion-jump")
                && r.stderr.contains("head node's SSH port and nothing else"),
            "the refusal says why: {r:?}"
        );
    }
    assert!(
        t.eic.pushes().is_empty(),
        "refused before any login: {:?}",
        t.eic.pushes()
    );

    // OpenSSH, with a key pushed for the teammate user.
    let (key, public) = common::netlab::NetLab::key_pair(&w.lab.path("."), "teammate-key");
    // As the CLI sends it: the algorithm and the key, no comment.
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    push_key(&w, &t, bastion::userdata::TEAMMATE_USER, &public.join(" ")).await;
    let head = format!("{}:22", w.lab.head_ip);
    let (code, out, err) = teammate_ssh(&w, &key, &["-W", &head]);
    assert!(
        out.starts_with("SSH-2.0-"),
        "the head node's sshd answers through the teammate's jump: {code} {out:?} {err}"
    );
    for target in [
        format!("{}:8443", w.lab.head_ip),
        format!("{}:9000", w.lab.head_ip),
        "127.0.0.1:22".to_string(),
        format!("{}:22", w.lab.proxy_ip),
        "169.254.169.254:80".to_string(),
    ] {
        let (code, out, err) = teammate_ssh(&w, &key, &["-W", &target]);
        assert!(
            code != 0 && out.is_empty() && err.contains("administratively prohibited"),
            "-W {target} is refused by the proxy's sshd: {code} {out:?} {err}"
        );
    }
    let (code, out, err) = teammate_ssh(&w, &key, &["echo", "ran-on-the-proxy"]);
    assert!(
        code != 0 && !out.contains("ran-on-the-proxy"),
        "no command runs for a teammate: {code} {out:?} {err}"
    );
    let (code, out, err) = teammate_ssh(&w, &key, &["-tt"]);
    assert!(
        code != 0 && out.is_empty(),
        "no shell: {code} {out:?} {err}"
    );
    let (code, _, err) = teammate_ssh(
        &w,
        &key,
        &[
            "-N",
            "-R",
            "0:127.0.0.1:22",
            "-o",
            "ExitOnForwardFailure=yes",
        ],
    );
    assert!(code != 0, "no remote forward: {code} {err}");

    // sudo: not for the teammate user; the operator's login (the AMI's user) keeps it.
    let (ok, out) = w.lab.exec_as(
        "proxy",
        common::netlab::PROXY_TEAMMATE_UID,
        &["sudo", "-n", "true"],
    );
    assert!(!ok, "the teammate user has no sudo: {out}");
    let r = w.connect(&["--on-proxy", "--", "sudo", "-n", "true", "&&", "id", "-u"]);
    assert_eq!(r.status, 0, "the operator's sudo: {r:?}");
    assert_eq!(
        r.stdout.trim(),
        common::netlab::PROXY_OPERATOR_UID.to_string(),
        "the operator's login is not root itself: {r:?}"
    );
}

/// The user-data's firewall rule, applied by its own function in the lab proxy: the teammate
/// user's connections to the instance metadata service are refused, root's and the operator's
/// are not.
#[tokio::test(flavor = "multi_thread")]
async fn the_teammate_user_never_reaches_the_instance_metadata_service() {
    let mut w = world_or_skip!();
    if require_tool("nft", &[std::path::PathBuf::from("/usr/sbin/nft")]).is_none()
        || require_tool("socat", &[]).is_none()
    {
        return;
    }
    // A metadata service on the proxy's own loopback (the address never leaves its namespace,
    // which has no default route).
    let ns = w.lab.proxy_ns.clone();
    let ok = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            "169.254.169.254/32",
            "dev",
            "lo",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    w.lab.spawn_in(
        "proxy",
        "imds",
        &[
            "socat",
            "TCP-LISTEN:80,bind=169.254.169.254,fork,reuseaddr",
            "SYSTEM:echo instance-credentials",
        ],
    );
    let ask = ["socat", "-T5", "-", "TCP:169.254.169.254:80"];
    let teammate = common::netlab::PROXY_TEAMMATE_UID;
    let operator = common::netlab::PROXY_OPERATOR_UID;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = w.lab.exec_as("proxy", teammate, &ask);
        if ok && out.contains("instance-credentials") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stand-in never answered: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    w.lab.run_userdata("guard_imds");
    let (ok, out) = w.lab.exec_as("proxy", teammate, &ask);
    assert!(
        !ok && !out.contains("instance-credentials") && out.contains("Connection refused"),
        "the teammate user is refused: {out}"
    );
    for uid in [0, operator] {
        let (ok, out) = w.lab.exec_as("proxy", uid, &ask);
        assert!(
            ok && out.contains("instance-credentials"),
            "uid {uid}: {out}"
        );
    }
    // Loaded again (every boot does), the rule is not doubled.
    w.lab.run_userdata("guard_imds");
    let rules = w
        .lab
        .exec_in("proxy", &["nft", "list", "table", "inet", "bastion_imds"]);
    assert_eq!(rules.matches("reject").count(), 2, "{rules}");
}
