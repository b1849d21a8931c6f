//! The trust model against moto: tags are untrusted input (a host key tag cannot write a line
//! of a file), an instance that only carries bastion's tag is a look-alike (never connected to,
//! started, adopted or removed), the head node is the one its CloudFormation stack made, and
//! the proxy's role may not write bastion's tags elsewhere.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use std::os::unix::fs::PermissionsExt;

use aws_sdk_ec2::types as ec2t;
use common::*;

const ADDRESS: &str = "192.0.2.10";

fn key_line(dir: &std::path::Path, name: &str) -> String {
    let (_, public) = netlab::NetLab::key_pair(dir, name);
    let mut parts = public.split_whitespace();
    format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
}

fn tag(k: &str, v: &str) -> ec2t::Tag {
    ec2t::Tag::builder().key(k).value(v).build()
}

/// A bastion from `up --no-wait` whose bootstrap has reported ready with `host_key`.
async fn proxy(aws: &Clients, b: &Bastion, host_key: &str) -> String {
    let up = b.up_no_wait_with(&["--output", "json"]);
    assert_eq!(up.status, 0, "{up:?}");
    let id = up.json()["instance_id"].as_str().unwrap().to_string();
    aws.set_instance_tags(
        &id,
        &[("bastion:host-key", host_key), ("bastion:state", "ready")],
    )
    .await;
    id
}

/// An instance launched by an insider, with whatever tags they like, without bastion's
/// instance profile or key pair.
async fn launch_decoy(aws: &Clients, lab: &Lab, tags: Vec<ec2t::Tag>) -> String {
    launch_decoy_as(aws, lab, tags, None).await
}

/// The same, launched with `identity` (a key pair and an instance profile, by name) where given.
async fn launch_decoy_as(
    aws: &Clients,
    lab: &Lab,
    tags: Vec<ec2t::Tag>,
    identity: Option<(&str, &str)>,
) -> String {
    let head = aws
        .ec2
        .describe_instances()
        .instance_ids(&lab.head_node)
        .send()
        .await
        .unwrap();
    let ami = head.reservations()[0].instances()[0]
        .image_id()
        .unwrap()
        .to_string();
    let run = aws
        .ec2
        .run_instances()
        .image_id(ami)
        .instance_type(ec2t::InstanceType::T3Medium)
        .min_count(1)
        .max_count(1)
        .subnet_id(&lab.public_subnet)
        .set_key_name(identity.map(|(key, _)| key.to_string()))
        .set_iam_instance_profile(identity.map(|(_, profile)| {
            ec2t::IamInstanceProfileSpecification::builder()
                .name(profile)
                .build()
        }))
        .tag_specifications(
            ec2t::TagSpecification::builder()
                .resource_type(ec2t::ResourceType::Instance)
                .set_tags(Some(tags))
                .build(),
        )
        .send()
        .await
        .unwrap();
    run.instances()[0].instance_id().unwrap().to_string()
}

async fn state_of(aws: &Clients, id: &str) -> String {
    let out = aws
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
    out.reservations()[0].instances()[0]
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_key_tag_never_writes_text_of_its_own_into_a_file() {
    let (_moto, aws, _, tmp, b) = moto_test!();
    let good = key_line(tmp.path(), "proxy-host");
    let attacker = key_line(tmp.path(), "attacker");
    let injected = format!("{good} x\n@cert-authority * {attacker}");
    let id = proxy(&aws, &b, &injected).await;
    let known_hosts = b.state_dir.join("known_hosts");

    let args = [
        "ssh-config",
        "--cluster",
        CLUSTER,
        "--bastion-address",
        ADDRESS,
    ];
    let r = b.run(&args);
    assert_eq!(r.status, 1, "a tag with a second line is refused: {r:?}");
    assert!(
        r.stderr.contains(&id) && r.stderr.contains("bastion:host-key"),
        "the error names the instance and the tag: {r:?}"
    );
    let text = std::fs::read_to_string(&known_hosts).unwrap_or_default();
    assert!(!text.contains("cert-authority"), "{text}");
    assert!(!text.contains(&attacker), "{text}");

    // A plain comment is allowed, and dropped: the files hold the key as bastion encodes it.
    aws.set_instance_tags(&id, &[("bastion:host-key", &format!("{good} root@proxy"))])
        .await;
    // The user's ~/.ssh/config is a symlink into a dotfiles checkout, mode 0644.
    let ssh_dir = b.home.join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let dotfile = b.home.join("dotfiles-ssh-config");
    std::fs::write(&dotfile, "Host example\n    User me\n").unwrap();
    std::fs::set_permissions(&dotfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&dotfile, ssh_dir.join("config")).unwrap();

    let mut install = args.to_vec();
    install.push("--install");
    let r = b.run(&install);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        format!("{id} {good}\n"),
        "exactly the re-encoded key"
    );
    let installed = b
        .state_dir
        .join("ssh")
        .join(format!("{CLUSTER}-{REGION}.conf"));
    let config = std::fs::read_to_string(&installed).unwrap();
    assert!(!config.contains("root@proxy"), "{config}");
    let main = ssh_dir.join("config");
    assert!(
        std::fs::symlink_metadata(&main)
            .unwrap()
            .file_type()
            .is_symlink(),
        "~/.ssh/config stays a symlink"
    );
    let text = std::fs::read_to_string(&dotfile).unwrap();
    assert!(
        text.contains("Include ") && text.contains("Host example"),
        "{text}"
    );
    let mode = std::fs::metadata(&dotfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "its mode is kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_only_carries_the_tag_is_a_lookalike() {
    let (_moto, aws, lab, tmp, b) = moto_test!();
    let real_key = key_line(tmp.path(), "proxy-host");
    let decoy_key = key_line(tmp.path(), "decoy-host");
    let real = proxy(&aws, &b, &real_key).await;
    let decoy = launch_decoy(
        &aws,
        &lab,
        vec![
            tag("bastion:cluster", CLUSTER),
            tag("bastion:state", "ready"),
            tag("bastion:host-key", &decoy_key),
        ],
    )
    .await;

    // status: the real one in `bastions`, the decoy in `lookalikes` with its reason.
    let s = b.run(&["status", "--output", "json"]);
    assert_eq!(s.status, 0, "{s:?}");
    let j = s.json();
    let ids: Vec<&str> = j["bastions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![real.as_str()], "{s:?}");
    let lookalikes = j["lookalikes"].as_array().unwrap();
    assert_eq!(lookalikes.len(), 1, "{s:?}");
    assert_eq!(lookalikes[0]["instance"], decoy.as_str());
    assert!(
        lookalikes[0]["reason"]
            .as_str()
            .unwrap()
            .contains("instance profile"),
        "{s:?}"
    );
    let text = b.run(&["status"]);
    assert!(
        text.stdout.contains("look-alikes") && text.stdout.contains(&decoy),
        "{text:?}"
    );

    // The real proxy stopped by its idle timer, the decoy running: the route is still the real
    // one, and its key is what goes into known_hosts.
    aws.stop_instance(&real).await;
    let r = b.run(&[
        "ssh-config",
        "--cluster",
        CLUSTER,
        "--bastion-address",
        ADDRESS,
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains(&decoy), "the look-alike is named: {r:?}");
    let known = std::fs::read_to_string(b.state_dir.join("known_hosts")).unwrap();
    assert_eq!(known, format!("{real} {real_key}\n"));

    // `up` does not adopt the decoy: it reports (and starts) its own proxy.
    let up = b.run(&["up", "--cluster", CLUSTER, "--no-wait", "--output", "json"]);
    assert_eq!(up.status, 0, "{up:?}");
    assert_eq!(up.json()["instance_id"], real.as_str(), "{up:?}");

    // `down` removes bastion's proxy and leaves the decoy alone, saying so.
    aws.stop_instance(&decoy).await;
    let down = b.run(&["down", "--cluster", CLUSTER, "--output", "json"]);
    assert_eq!(down.status, 0, "{down:?}");
    let spared = down.json()["spared"].to_string();
    assert!(spared.contains(&decoy), "{down:?}");
    assert_eq!(state_of(&aws, &decoy).await, "stopped");
    assert_eq!(state_of(&aws, &real).await, "terminated");

    // With only the decoy left, connect refuses it, names it, and does not start it.
    let c = b.run(&[
        "connect",
        "--cluster",
        CLUSTER,
        "--bastion-address",
        ADDRESS,
        "--",
        "true",
    ]);
    assert_eq!(c.status, 2, "{c:?}");
    assert!(
        c.stderr.contains(&decoy) && c.stderr.contains("not the proxy bastion made"),
        "{c:?}"
    );
    assert_eq!(state_of(&aws, &decoy).await, "stopped", "never started");
}

#[tokio::test(flavor = "multi_thread")]
async fn down_leaves_alone_what_only_carries_the_tag() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    // An insider tags the head node and its group as if they were the bastion's.
    aws.set_instance_tags(&lab.head_node, &[("bastion:cluster", CLUSTER)])
        .await;
    aws.ec2
        .create_tags()
        .resources(&lab.head_sg)
        .tags(tag("bastion:cluster", CLUSTER))
        .send()
        .await
        .unwrap();
    let head_rules_before = aws.ingress(&lab.head_sg).await;
    let tmp = tempfile::tempdir().unwrap();
    let b = Bastion::new(&moto, tmp.path());
    let up = b.up_no_wait();
    assert_eq!(up.status, 0, "{up:?}");

    // From another machine (no ledger: the sweep by tag alone decides).
    let other = tempfile::tempdir().unwrap();
    let b2 = Bastion::new(&moto, other.path());
    let down = b2.run(&["down", "--cluster", CLUSTER, "--output", "json"]);
    assert_eq!(down.status, 0, "{down:?}");
    assert_eq!(state_of(&aws, &lab.head_node).await, "running");
    let groups = aws
        .ec2
        .describe_security_groups()
        .group_ids(&lab.head_sg)
        .send()
        .await;
    assert!(groups.is_ok(), "the head node's group is still there");
    assert_eq!(aws.ingress(&lab.head_sg).await, head_rules_before);
    let j = down.json();
    let spared = j["spared"].to_string();
    assert!(
        spared.contains(&lab.head_node) && spared.contains(&lab.head_sg),
        "{down:?}"
    );
    let mut left = aws.leftovers(CLUSTER).await;
    left.sort();
    assert_eq!(
        left,
        vec![
            format!("instance {}", lab.head_node),
            format!("security group {}", lab.head_sg)
        ],
        "bastion's own resources are gone, the tagged head node and group stay"
    );
    let text = b.run(&["down", "--cluster", CLUSTER]);
    assert!(text.stdout.contains("left alone"), "{text:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_head_node_is_the_one_its_stack_made_and_never_a_guess() {
    let (_moto, aws, lab, _tmp, b) = moto_test!();
    let head_tags = |cluster: &str, stack: Option<&str>| {
        let mut t = vec![
            tag("Name", "HeadNode"),
            tag("parallelcluster:cluster-name", cluster),
            tag("parallelcluster:node-type", "HeadNode"),
            tag(
                "parallelcluster:attributes",
                "alinux2023, slurm, 3.16.1, x86_64",
            ),
        ];
        if let Some(s) = stack {
            t.push(tag("aws:cloudformation:stack-name", s));
        }
        t
    };

    // Forged ParallelCluster tags without the stack's reserved tag: not a head node.
    let forged = launch_decoy(&aws, &lab, head_tags("ghost", None)).await;
    let r = b.run(&[
        "up",
        "--cluster",
        "ghost",
        "--allow-cidr",
        ALLOW,
        "--dry-run",
    ]);
    assert_eq!(r.status, 2, "{r:?}");
    assert!(
        r.stderr.contains(&forged) && r.stderr.contains("aws:cloudformation:stack-name"),
        "{r:?}"
    );
    // Beside the real head node, a forged one is ignored (and named).
    launch_decoy(&aws, &lab, head_tags(CLUSTER, Some("another-stack"))).await;
    let r = b.run(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.json()["head_node"], lab.head_node.as_str());

    // Two instances the stack tagged as its head node: refused, both listed.
    let twin = launch_decoy(&aws, &lab, head_tags(CLUSTER, Some(CLUSTER))).await;
    let r = b.run(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--dry-run",
    ]);
    assert_eq!(r.status, 2, "{r:?}");
    assert!(
        r.stderr.contains(&lab.head_node) && r.stderr.contains(&twin),
        "{r:?}"
    );
    assert!(aws.leftovers(CLUSTER).await.is_empty());

    // A ParallelCluster 2 cluster `old` (stack parallelcluster-old) and a look-alike in the
    // ParallelCluster 3 form whose own stack is named `old`: neither generation shadows the other.
    let v2 = launch_decoy(
        &aws,
        &lab,
        vec![
            tag("parallelcluster:cluster-name", "old"),
            tag("aws-parallelcluster-node-type", "Master"),
            tag("aws:cloudformation:stack-name", "parallelcluster-old"),
        ],
    )
    .await;
    let shadow = launch_decoy(&aws, &lab, head_tags("old", Some("old"))).await;
    let r = b.run(&["up", "--cluster", "old", "--allow-cidr", ALLOW, "--dry-run"]);
    assert_eq!(r.status, 2, "{r:?}");
    assert!(
        r.stderr.contains(&v2) && r.stderr.contains(&shadow),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_bastion_whose_proxy_vanished_is_never_cleaned_on_a_guess() {
    let (_moto, aws, _, tmp, b) = moto_test!();
    let key = key_line(tmp.path(), "proxy-host");
    let id = proxy(&aws, &b, &key).await;
    // The proxy is terminated outside bastion (or not visible to this describe yet).
    aws.ec2
        .terminate_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let before = aws.leftovers(CLUSTER).await;
    let up = b.up_no_wait();
    assert_eq!(up.status, 1, "{up:?}");
    assert!(
        up.stderr.contains("does not list") && up.stderr.contains("bastion down"),
        "{up:?}"
    );
    assert_eq!(
        aws.leftovers(CLUSTER).await,
        before,
        "nothing removed, nothing made"
    );
    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);
    assert!(aws.leftovers(CLUSTER).await.is_empty());
}

fn decode(s: &str) -> serde_json::Value {
    let text = percent_encoding::percent_decode_str(s).decode_utf8_lossy();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_role_may_not_write_bastion_tags_elsewhere() {
    let (_moto, aws, _, _tmp, b) = moto_test!();
    let role = format!("bastion-{CLUSTER}-{REGION}");
    let policies = || async {
        let mut names = aws
            .iam
            .list_role_policies()
            .role_name(&role)
            .send()
            .await
            .unwrap()
            .policy_names()
            .to_vec();
        names.sort();
        names
    };

    let up = b.up_no_wait();
    assert_eq!(up.status, 0, "{up:?}");
    assert_eq!(
        policies().await,
        vec!["dcv-license", "pcluster-user", "proxy-tags"]
    );
    let doc = aws
        .iam
        .get_role_policy()
        .role_name(&role)
        .policy_name("proxy-tags")
        .send()
        .await
        .unwrap();
    // What AWS holds is the document the IAM evaluator judges in tests/policies.rs (the role
    // tags nothing but its own instance directly, in any spelling), the policy variable intact.
    let doc = decode(doc.policy_document());
    let rendered = bastion::policy::inline_policies(
        &bastion::policy::Target {
            partition: "aws",
            account: "123456789012",
            region: REGION,
        },
        true,
    )
    .unwrap()
    .into_iter()
    .find(|p| p.name == "proxy-tags")
    .unwrap();
    let rendered: serde_json::Value = serde_json::from_str(&rendered.document).unwrap();
    assert_eq!(doc, rendered);
    assert!(doc.to_string().contains("*:${ec2:InstanceID}"), "{doc}");

    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);
    let up = b.up_no_wait_with(&["--no-pcluster-policy"]);
    assert_eq!(up.status, 0, "{up:?}");
    assert_eq!(policies().await, vec!["dcv-license", "proxy-tags"]);
    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);
    assert!(aws.leftovers(CLUSTER).await.is_empty());
}

/// What EC2 answers reaches the generated ssh config (which `~/.ssh/config` includes at its
/// top) and the terminal only in its documented form. Played on the wire by the front, as a
/// hostile endpoint or a TLS-intercepting proxy would: a public IP carrying a newline and a
/// `Host *` block, an instance id with a space. The file is left as it was and the instance is
/// named; a tag value with a C1 control character (`U+009B`, a terminal's `ESC [`) travels in
/// EC2's XML and `status` shows it escaped.
#[tokio::test(flavor = "multi_thread")]
async fn what_aws_answers_is_checked_before_it_reaches_a_file_or_a_terminal() {
    let (moto, aws, _, tmp, mut b) = moto_test!();
    let good = key_line(tmp.path(), "proxy-host");
    let id = proxy(&aws, &b, &good).await;
    let args = ["ssh-config", "--cluster", CLUSTER, "--install"];
    let r = b.run(&args);
    assert_eq!(r.status, 0, "{r:?}");
    let installed = b
        .state_dir
        .join("ssh")
        .join(format!("{CLUSTER}-{REGION}.conf"));
    let before = std::fs::read_to_string(&installed).unwrap();
    assert!(
        before.contains("ForwardAgent no") && before.contains("ForwardX11 no"),
        "{before}"
    );

    let front = common::front::Front::start(&moto.url).await;
    b.endpoint = front.url.clone();
    let injected = "\nHost *\n    ProxyCommand touch /tmp/bastion-pwned\n";
    {
        let injected = injected.to_string();
        front.rewrite(move |call, body| {
            if call.action == "DescribeInstances" {
                *body = body.replace("<ipAddress>", &format!("<ipAddress>{injected}"));
            }
        });
    }
    let r = b.run(&args);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("a public IPv4 address for instance {id}"))
            && r.stderr.contains(r"\nHost *\n    ProxyCommand")
            && !r.stderr.contains("\nHost *"),
        "the instance named, the value escaped: {r:?}"
    );
    assert_eq!(std::fs::read_to_string(&installed).unwrap(), before);

    let front = common::front::Front::start(&moto.url).await;
    b.endpoint = front.url.clone();
    {
        let id = id.clone();
        front.rewrite(move |call, body| {
            if call.action == "DescribeInstances" {
                *body = body.replace(
                    &format!("<instanceId>{id}</instanceId>"),
                    &format!("<instanceId>{id} ProxyCommand</instanceId>"),
                );
            }
        });
    }
    let r = b.run(&args);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "an instance id that is not of its documented form: \"{id} ProxyCommand\""
        )),
        "{r:?}"
    );
    assert_eq!(std::fs::read_to_string(&installed).unwrap(), before);

    // A tag value with a C1 control character, through moto and EC2's XML: shown, not obeyed.
    b.endpoint = moto.url.clone();
    aws.set_instance_tags(&id, &[("bastion:desktop", "ready\u{9b}2J")])
        .await;
    let r = b.run(&["status"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.contains(r"ready\u{9b}2J") && !r.stdout.contains('\u{9b}'),
        "{r:?}"
    );
}

/// Two instances that both pass as the proxy (bastion's instance profile, its key pair, its
/// tag: what anyone who may pass a `/bastion/` role can launch) are refused, both listed, on a
/// machine with no ledger to tell them apart (a teammate's), as two head nodes are.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_that_passes_as_the_proxy_is_refused_with_both_listed() {
    let (moto, aws, lab, tmp, b) = moto_test!();
    let good = key_line(tmp.path(), "proxy-host");
    let id = proxy(&aws, &b, &good).await;
    let names = bastion::footprint::Names::new(CLUSTER, REGION);
    let second = launch_decoy_as(
        &aws,
        &lab,
        vec![
            tag("bastion:cluster", CLUSTER),
            tag("bastion:host-key", &good),
            tag("bastion:state", "ready"),
        ],
        Some((&names.key_pair, &names.instance_profile)),
    )
    .await;

    let teammate_dir = tempfile::tempdir().unwrap();
    let t = Bastion::new(&moto, teammate_dir.path());
    let r = t.run(&[
        "connect",
        "--cluster",
        CLUSTER,
        "--bastion-address",
        ADDRESS,
        "--stdio",
    ]);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr.contains("instances that each pass as its proxy")
            && r.stderr.contains(&id)
            && r.stderr.contains(&second),
        "both listed: {r:?}"
    );
    // The machine that ran `up` knows its own from its ledger.
    let r = b.run(&[
        "ssh-config",
        "--cluster",
        CLUSTER,
        "--bastion-address",
        ADDRESS,
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.contains(&id) && !r.stdout.contains(&second),
        "{r:?}"
    );
}

/// `allow --revoke` removes the rules bastion made (`up`'s, `allow`'s) and refuses one that
/// someone else made for the same block, naming it, and removing nothing.
#[tokio::test(flavor = "multi_thread")]
async fn allow_revoke_removes_only_the_rules_bastion_made() {
    let (_moto, aws, _, tmp, b) = moto_test!();
    let good = key_line(tmp.path(), "proxy-host");
    proxy(&aws, &b, &good).await;
    let groups = aws
        .ec2
        .describe_security_groups()
        .filters(
            ec2t::Filter::builder()
                .name("group-name")
                .values(format!("bastion-{CLUSTER}"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let group = groups.security_groups()[0].group_id().unwrap().to_string();
    // An administrator's rule for the office, made in the console.
    aws.ec2
        .authorize_security_group_ingress()
        .group_id(&group)
        .ip_permissions(
            ec2t::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(
                    ec2t::IpRange::builder()
                        .cidr_ip("203.0.113.0/24")
                        .description("office VPN (ticket 4711)")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let listed = |b: &Bastion| {
        let r = b.run(&["allow", "--cluster", CLUSTER, "--list", "--output", "json"]);
        assert_eq!(r.status, 0, "{r:?}");
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["cidr"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(listed(&b).contains(&"203.0.113.0/24".to_string()));

    let r = b.run(&["allow", "--cluster", CLUSTER, "--revoke", "203.0.113.0/24"]);
    assert_eq!(r.status, 2, "{r:?}");
    assert!(
        r.stderr.contains("a rule bastion did not make")
            && r.stderr.contains("office VPN (ticket 4711)"),
        "{r:?}"
    );
    assert!(
        listed(&b).contains(&"203.0.113.0/24".to_string()),
        "left alone"
    );

    // `up`'s own rule (its --allow-cidr) goes.
    let r = b.run(&["allow", "--cluster", CLUSTER, "--revoke", ALLOW]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(!listed(&b).contains(&ALLOW.to_string()));
}
