//! What `up` creates and how: the proxy and everything around it as AWS holds it, the bootstrap
//! wait, the plan, and each input refused before anything exists.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn up_creates_a_hardened_proxy_and_down_removes_all_of_it() {
    let (_moto, aws, lab, _tmp, b) = moto_test!();
    let head_rules_before = aws.ingress(&lab.head_sg).await;

    let up = b.up_no_wait_with(&["--output", "json", "-v"]);
    assert_eq!(up.status, 0, "{up:?}");
    let r = up.json();
    assert_eq!(r["created"], true);
    let id = r["instance_id"].as_str().unwrap().to_string();
    if let Some(calls) = up.stderr.lines().find(|l| l.contains("aws_api_calls")) {
        eprintln!("AWS API calls made by one `up --no-wait`: {calls}");
    }

    // The instance: public subnet of the head node's VPC, IMDSv2, encrypted gp3, public IP.
    let out = aws
        .ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let inst = &out.reservations()[0].instances()[0];
    assert_eq!(inst.subnet_id(), Some(lab.public_subnet.as_str()));
    assert_eq!(inst.vpc_id(), Some(lab.vpc.as_str()));
    assert_eq!(
        inst.metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required"),
        "IMDSv2 must be required"
    );
    assert_eq!(inst.instance_type().map(|t| t.as_str()), Some("t3.medium"));
    // A public IPv4 (the proxy is reached at it), and the latest AL2023 AMI of the head node's
    // architecture (x86_64 in the fixture), as AWS's public SSM parameter names it.
    assert!(
        inst.public_ip_address().is_some(),
        "a public IPv4: {inst:?}"
    );
    let latest = aws
        .ssm
        .get_parameter()
        .name("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")
        .send()
        .await
        .unwrap();
    assert_eq!(
        inst.image_id(),
        latest.parameter().and_then(|p| p.value()),
        "the x86_64 AL2023 AMI"
    );
    let tag = |k: &str| {
        inst.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    assert_eq!(tag("bastion:cluster").as_deref(), Some(CLUSTER));
    assert_eq!(tag("Name").as_deref(), Some("bastion-demo"));
    assert_eq!(
        tag("bastion:head-node").as_deref(),
        Some(lab.head_node.as_str())
    );
    let profile_arn = inst.iam_instance_profile().and_then(|p| p.arn()).unwrap();
    assert!(
        profile_arn.contains(":instance-profile/bastion/"),
        "{profile_arn}"
    );
    let volumes = aws
        .ec2
        .describe_volumes()
        .filters(filter("attachment.instance-id", &id))
        .send()
        .await
        .unwrap();
    assert!(!volumes.volumes().is_empty());
    for v in volumes.volumes() {
        assert_eq!(v.encrypted(), Some(true), "root volume must be encrypted");
        assert_eq!(v.volume_type().map(|t| t.as_str()), Some("gp3"));
        assert_eq!(v.size(), Some(40), "40 GiB with DCV, the default");
    }

    // User-data: the al2023 script for this cluster's version.
    let attr = aws
        .ec2
        .describe_instance_attribute()
        .instance_id(&id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let ud = attr.user_data().and_then(|u| u.value()).unwrap();
    let script = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(ud)
            .unwrap(),
    )
    .unwrap();
    assert!(script.starts_with("#!/bin/bash"));
    assert!(script.contains("PCLUSTER_VERSION='3.16.1'"));
    assert!(script.contains("IDLE_STOP_MIN=60"));
    assert!(script.contains("dnf groupinstall"), "the al2023 variant");

    // The proxy's group: SSH from the allowed CIDR only.
    let sg = inst.network_interfaces()[0].groups()[0]
        .group_id()
        .unwrap()
        .to_string();
    assert_eq!(aws.ingress(&sg).await, vec![(22, ALLOW.to_string())]);
    // The head node's group now admits the proxy's group on 22 (DCV rides the head node's SSH
    // session, so not 8443), and nothing else changed.
    let mut expected = head_rules_before.clone();
    expected.push((22, sg.clone()));
    expected.sort();
    assert_eq!(aws.ingress(&lab.head_sg).await, expected);

    // The role: pcluster user policy, DCV licence read, its own tags only, SSM core.
    let role = "bastion-demo-us-east-1";
    let inline = aws
        .iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await
        .unwrap();
    let mut names = inline.policy_names().to_vec();
    names.sort();
    assert_eq!(names, vec!["dcv-license", "pcluster-user", "proxy-tags"]);
    let doc = aws
        .iam
        .get_role_policy()
        .role_name(role)
        .policy_name("dcv-license")
        .send()
        .await
        .unwrap();
    let doc = urlencoding_decode(doc.policy_document());
    assert!(
        doc.contains("arn:aws:s3:::dcv-license.us-east-1/*"),
        "{doc}"
    );
    let attached = aws
        .iam
        .list_attached_role_policies()
        .role_name(role)
        .send()
        .await
        .unwrap();
    assert!(
        attached
            .attached_policies()
            .iter()
            .any(|p| p.policy_arn() == Some("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"))
    );

    // The key: imported, private half 0600 locally, public half beside it.
    let key_file = r["key_file"].as_str().unwrap();
    let mode = std::fs::metadata(key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let public = std::fs::read_to_string(format!("{key_file}.pub")).unwrap();
    assert!(public.starts_with("ssh-ed25519 "));
    let keys = aws
        .ec2
        .describe_key_pairs()
        .key_names("bastion-demo")
        .send()
        .await
        .unwrap();
    assert_eq!(keys.key_pairs().len(), 1);

    // status shows it.
    let st = b.run(&["status", "--output", "json"]);
    assert_eq!(st.status, 0, "{st:?}");
    let rows = st.json()["bastions"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["cluster"], CLUSTER);
    assert_eq!(rows[0]["instance_id"], id.as_str());
    let text = b.run(&["--output", "text", "status", "--cluster", CLUSTER]);
    assert!(
        text.stdout.contains("CLUSTER") && text.stdout.contains(&id),
        "{text:?}"
    );

    // A second up creates nothing and reports the same proxy.
    let before = aws.leftovers(CLUSTER).await;
    let again = b.up_no_wait_with(&["--output", "json"]);
    assert_eq!(again.status, 0, "{again:?}");
    assert_eq!(again.json()["created"], false);
    assert_eq!(again.json()["instance_id"], id.as_str());
    assert_eq!(aws.leftovers(CLUSTER).await, before);

    // down removes everything, restores the head node's group, and is re-runnable.
    let down = b.run(&["down", "--cluster", CLUSTER, "--output", "json"]);
    assert_eq!(down.status, 0, "{down:?}");
    assert!(
        down.json()["removed"].as_array().unwrap().len() >= 8,
        "{down:?}"
    );
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
    assert_eq!(aws.ingress(&lab.head_sg).await, head_rules_before);
    assert!(
        !std::path::Path::new(key_file).exists(),
        "local key removed"
    );
    let again = b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(again.status, 0, "{again:?}");
    assert!(again.stdout.contains("nothing to remove"), "{again:?}");
}

/// IAM returns policy documents URL-encoded.
fn urlencoding_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_waits_for_the_bootstrap_and_reports_its_failure() {
    let (moto, aws, _, _tmp, mut b) = moto_test!();
    // GetConsoleOutput as AWS answers it (moto's holds no host keys).
    let front = common::front::Front::start(&moto.url).await;
    b.endpoint = front.url.clone();
    let consoles = front.consoles();

    // Play the instance's bootstrap: bootstrapping, host key, ready.
    let mut child = b.watch(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--output",
        "json",
        "--timeout",
        "2",
    ]);
    let id = wait_for_instance(&aws).await;
    // Two polls that found no bootstrap yet, and `up` is still waiting.
    child.wait_stderr(
        &format!("{id}: instance running, waiting for its bootstrap to start"),
        2,
        LIMIT,
    );
    assert!(
        child.running(),
        "up must keep waiting while the bootstrap has not reported"
    );
    aws.set_instance_tags(&id, &[("bastion:state", "bootstrapping")])
        .await;
    // Ready, while EC2 has posted no console output with the host keys yet: `up` keeps waiting.
    consoles.lock().unwrap().insert(
        id.clone(),
        "[  OK  ] Reached target basic.target.\r\n".into(),
    );
    aws.set_instance_tags(
        &id,
        &[("bastion:host-key", PROXY_KEY), ("bastion:state", "ready")],
    )
    .await;
    child.wait_stderr(
        &format!("{id}: ready; waiting for its console output to show its host keys"),
        2,
        LIMIT,
    );
    assert!(
        child.running(),
        "up must wait for the host keys on the proxy's console"
    );
    consoles
        .lock()
        .unwrap()
        .insert(id.clone(), common::front::console_with_keys(&[PROXY_KEY]));
    let out = child.finish(LIMIT);
    assert_eq!(out.status, 0, "{out:?}");
    let r = out.json();
    assert_eq!(r["bootstrap"], "ready");
    assert_eq!(r["instance_id"], id.as_str());
    // Pinned from the console under the instance id, for the first connect to check.
    assert_eq!(r["host_key_anchor"], "console", "{out:?}");
    assert_eq!(
        r["host_keys"],
        serde_json::json!([key_fingerprint(PROXY_KEY)])
    );
    let pinned = pinned_lines(&b.state_dir.join("known_hosts"), &id);
    assert!(pinned.contains(PROXY_KEY.split_at(12).1), "{pinned}");
    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);

    // A failed bootstrap: the console tail is shown, the exit is non-zero, nothing stays.
    let child = b.watch(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--timeout",
        "2",
    ]);
    let id = wait_for_instance(&aws).await;
    aws.set_instance_tags(&id, &[("bastion:state", "failed")])
        .await;
    let out = child.finish(LIMIT);
    let stderr = out.stderr.clone();
    assert_eq!(out.status, 1, "{stderr}");
    assert!(
        stderr.contains("bootstrap failed") && stderr.contains("console output"),
        "{stderr}"
    );
    assert_eq!(
        aws.leftovers(CLUSTER).await,
        Vec::<String>::new(),
        "{stderr}"
    );
}

/// A proxy whose console output lists host keys without the one its tag names is refused with
/// both fingerprints, and nothing of it stays.
#[tokio::test(flavor = "multi_thread")]
async fn up_refuses_a_proxy_whose_tag_is_not_among_its_console_keys() {
    let (moto, aws, _, tmp, mut b) = moto_test!();
    let front = common::front::Front::start(&moto.url).await;
    b.endpoint = front.url.clone();
    let consoles = front.consoles();
    let (_, other) = netlab::NetLab::key_pair(tmp.path(), "not-the-proxy");
    let child = b.watch(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--timeout",
        "2",
    ]);
    let id = wait_for_instance(&aws).await;
    consoles
        .lock()
        .unwrap()
        .insert(id.clone(), common::front::console_with_keys(&[&other]));
    aws.set_instance_tags(
        &id,
        &[("bastion:host-key", PROXY_KEY), ("bastion:state", "ready")],
    )
    .await;
    let out = child.finish(LIMIT);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr.contains(&key_fingerprint(PROXY_KEY))
            && out.stderr.contains(&key_fingerprint(other.trim()))
            && out.stderr.contains("console"),
        "{out:?}"
    );
    assert!(out.stderr.contains("cleaned up"), "{out:?}");
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
    assert_eq!(pinned_lines(&b.state_dir.join("known_hosts"), &id), "");
}

/// A console that never shows the keys within `--timeout`: the proxy works, so `up` succeeds,
/// pins nothing, and says what the first `connect` will trust instead.
#[tokio::test(flavor = "multi_thread")]
async fn up_whose_proxy_console_stays_silent_pins_nothing_and_says_so() {
    let (_moto, aws, _, _tmp, b) = moto_test!();
    let child = b.watch(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--timeout",
        "1",
        "--output",
        "json",
    ]);
    let id = wait_for_instance(&aws).await;
    aws.set_instance_tags(
        &id,
        &[("bastion:host-key", PROXY_KEY), ("bastion:state", "ready")],
    )
    .await;
    let out = child.finish(LIMIT);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.json()["host_key_anchor"], "pending", "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "the proxy {id}'s console output shows no host keys yet"
        )) && out
            .stderr
            .contains("the first `bastion connect` trusts the key its bastion:host-key tag names"),
        "{out:?}"
    );
    assert_eq!(pinned_lines(&b.state_dir.join("known_hosts"), &id), "");
    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
}

/// `--timeout` counts minutes: one without a word from the bootstrap ends `up` with exit 1,
/// the advice, and nothing left.
#[tokio::test(flavor = "multi_thread")]
async fn a_bootstrap_that_never_reports_times_out_and_leaves_nothing() {
    let (_moto, aws, _, _tmp, b) = moto_test!();
    let child = b.watch(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--timeout",
        "1",
    ]);
    let id = wait_for_instance(&aws).await;
    let out = child.finish(LIMIT);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "gave up after 1 min waiting for the proxy {id} (instance running, bootstrap not started)"
        )) && out.stderr.contains("Raise --timeout"),
        "{out:?}"
    );
    assert!(out.stderr.contains("cleaned up"), "{out:?}");
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
    assert!(!ledger_path(&b).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_ups_create_one_bastion() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    aws.build_lab(LabOptions::default()).await;
    // Two machines: separate state dirs, so only AWS can tell them apart.
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (b1, b2) = (
        Bastion::new(&moto, t1.path()),
        Bastion::new(&moto, t2.path()),
    );
    let args = [
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--no-wait",
        "--output",
        "json",
    ];
    let (r1, r2) = std::thread::scope(|s| {
        let h1 = s.spawn(|| b1.run(&args));
        let h2 = s.spawn(|| b2.run(&args));
        (h1.join().unwrap(), h2.join().unwrap())
    });
    let created = [&r1, &r2]
        .iter()
        .filter(|r| r.status == 0 && r.json()["created"] == true)
        .count();
    assert_eq!(created, 1, "exactly one up creates:\n{r1:?}\n{r2:?}");
    for r in [&r1, &r2] {
        if r.status != 0 {
            assert_eq!(r.status, 1, "{r:?}");
            assert!(r.stderr.contains("another `bastion up`"), "{r:?}");
        }
    }
    // The loser's cleanup did not touch the winner's resources.
    assert_eq!(aws.bastion_instances(CLUSTER).await.len(), 1);
    let left = aws.leftovers(CLUSTER).await;
    assert!(
        left.iter().any(|l| l.starts_with("security group")),
        "{left:?}"
    );
    assert!(left.iter().any(|l| l.starts_with("key pair")), "{left:?}");
    assert!(left.iter().any(|l| l.starts_with("role")), "{left:?}");
    let winner = if r1.status == 0 && r1.json()["created"] == true {
        &b1
    } else {
        &b2
    };
    assert_eq!(winner.run(&["down", "--cluster", CLUSTER]).status, 0);
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_plan_and_creates_nothing() {
    let (moto, aws, lab, _tmp, b) = moto_test!();
    let r = b.run(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        "0.0.0.0/0",
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stderr.contains("whole internet"),
        "an explicit 0.0.0.0/0 warns: {r:?}"
    );
    let plan = r.json();
    assert_eq!(plan["subnet_id"], lab.public_subnet.as_str());
    assert_eq!(plan["head_node_group"], lab.head_sg.as_str());
    assert_eq!(plan["head_node_ports"], serde_json::json!([22]));
    assert_eq!(plan["allow_cidrs"], serde_json::json!(["0.0.0.0/0"]));
    assert!(
        plan["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "bastion:cluster")
    );
    let text = b.run(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--dry-run",
    ]);
    assert!(
        text.stdout.contains("nothing was created") && text.stdout.contains("bastion:cluster=demo"),
        "{text:?}"
    );
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
    assert!(
        walk(&b.state_dir).is_empty(),
        "dry run writes no local state"
    );

    // A head node group that already admits the VPC gets no extra rule.
    let open = moto_lab_with(&moto, "open", "10.0.0.0/8").await;
    let r = b.run(&[
        "up",
        "--cluster",
        "open",
        "--allow-cidr",
        ALLOW,
        "--no-dcv",
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        r.json()["head_node_ports"],
        serde_json::json!([]),
        "{open:?}"
    );
}

async fn moto_lab_with(moto: &Moto, cluster: &'static str, head_ssh_from: &'static str) -> Lab {
    moto.clients()
        .await
        .build_lab(LabOptions {
            cluster,
            head_ssh_from,
            cidr: "10.30",
            ..LabOptions::default()
        })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_allowed_cidr_is_the_callers_public_ip() {
    let (_moto, aws, _, _tmp, mut b) = moto_test!();

    // The lookup fails: a clear error asking for --allow-cidr, nothing created.
    let r = b.run(&["up", "--cluster", CLUSTER, "--no-wait"]);
    assert_eq!(r.status, 2, "{r:?}");
    assert!(r.stderr.contains("--allow-cidr"), "{r:?}");
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());

    // The lookup answers (a one-shot HTTP server on loopback plays checkip).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    // Non-blocking accept with a deadline: a bastion that never asks fails the test, not hangs it.
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("bastion never asked for its address: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\n198.51.100.99\n",
        )
        .unwrap();
    });
    b.env.push(("BASTION_IP_LOOKUP_URL".into(), url));
    let r = b.run(&["up", "--cluster", CLUSTER, "--dry-run", "--output", "json"]);
    server.join().expect("the lookup was asked");
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        r.json()["allow_cidrs"],
        serde_json::json!(["198.51.100.99/32"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_error_and_creates_nothing() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let other = aws
        .build_lab(LabOptions {
            cluster: "stopped",
            cidr: "10.40",
            head_state_stopped: true,
            ..LabOptions::default()
        })
        .await;
    let no_igw = aws
        .build_lab(LabOptions {
            cluster: "dark",
            cidr: "10.50",
            with_internet_gateway: false,
            ..LabOptions::default()
        })
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let b = Bastion::new(&moto, tmp.path());
    let up = |extra: &[&str]| {
        let mut args = vec!["up", "--allow-cidr", ALLOW, "--no-wait"];
        args.extend_from_slice(extra);
        b.run(&args)
    };

    let no_public = format!("no public subnet in {}", no_igw.vpc);
    let cases: Vec<(Run, i32, &str)> = vec![
        (up(&["--cluster", "nosuch"]), 2, "no cluster named 'nosuch'"),
        (up(&["--cluster", "stopped"]), 2, "is stopped, not running"),
        (up(&["--cluster", "dark"]), 2, &no_public),
        (
            up(&["--cluster", CLUSTER, "--subnet", &other.public_subnet]),
            2,
            "but the head node of 'demo' is in",
        ),
        (
            up(&["--cluster", CLUSTER, "--subnet", &lab.private_subnet]),
            2,
            "is not public",
        ),
        (
            up(&["--cluster", CLUSTER, "--subnet", "subnet-0123456789abcdef0"]),
            2,
            "no such subnet",
        ),
        (
            up(&["--cluster", CLUSTER, "--ami", "ami-0000000000000dead"]),
            2,
            "does not exist",
        ),
        (
            up(&["--cluster", CLUSTER, "--os", "ubuntu2204"]),
            2,
            "Pass --ami",
        ),
        (
            b.run(&["up", "--cluster", CLUSTER, "--allow-cidr", "10.0.0.300/8"]),
            2,
            "invalid CIDR",
        ),
        (
            b.run(&[
                "up",
                "--cluster",
                CLUSTER,
                "--allow-cidr",
                ALLOW,
                "--os",
                "windows",
            ]),
            2,
            "possible values",
        ),
    ];
    for (run, code, text) in &cases {
        assert_eq!(run.status, *code, "{text}: {run:?}");
        assert!(run.stderr.contains(text), "expected {text:?} in: {run:?}");
    }

    // No credentials anywhere: a credentials error (exit 3), and no call to real AWS.
    let mut cmd = b.command(&["up", "--cluster", CLUSTER, "--allow-cidr", ALLOW]);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let r = b.run_cmd(cmd);
    assert_eq!(r.status, 3, "{r:?}");
    assert!(r.stderr.contains("credentials"), "{r:?}");

    // A state dir that cannot be written: exit 4, and still nothing in AWS.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut cmd = b.command(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--no-wait",
    ]);
    cmd.env("BASTION_STATE_DIR", file.join("state"));
    let r = b.run_cmd(cmd);
    assert_eq!(r.status, 4, "{r:?}");
    assert!(r.stderr.contains("not writable"), "{r:?}");

    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
    for c in ["nosuch", "stopped", "dark"] {
        assert_eq!(aws.leftovers(c).await, Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denied_names_the_action_and_creates_nothing() {
    // moto enforces IAM once its first 60 requests are spent. The lab and two users (admin,
    // limited) are made within them: moto's signature check, once enforcing, rejects request
    // bodies with spaces, which the lab has. Dummy-key calls then spend the rest.
    let Some(moto) = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "60")]) else {
        return;
    };
    let boot = moto.clients().await;
    boot.build_lab(LabOptions::default()).await;
    let mut keys = Vec::new();
    for (user, actions) in [
        ("admin", vec!["*"]),
        (
            "limited",
            // And the boundary's read, `up`'s last check before it creates anything (moto's
            // IAM denial is not in the wire format the SDK parses, so the test keeps to EC2's).
            vec![
                "ec2:Describe*",
                "sts:GetCallerIdentity",
                "ssm:GetParameter",
                "iam:GetPolicy",
            ],
        ),
    ] {
        boot.iam.create_user().user_name(user).send().await.unwrap();
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]
        });
        boot.iam
            .put_user_policy()
            .user_name(user)
            .policy_name("p")
            .policy_document(policy.to_string())
            .send()
            .await
            .unwrap();
        let k = boot
            .iam
            .create_access_key()
            .user_name(user)
            .send()
            .await
            .unwrap();
        let k = k.access_key().unwrap();
        keys.push((
            k.access_key_id().to_string(),
            k.secret_access_key().to_string(),
        ));
    }
    let mut enforced = false;
    for _ in 0..60 {
        if boot.ec2.describe_vpcs().send().await.is_err() {
            enforced = true;
            break;
        }
    }
    assert!(enforced, "moto never started enforcing IAM");
    let admin = moto.clients_with(&keys[0].0, &keys[0].1).await;

    let tmp = tempfile::tempdir().unwrap();
    let b = Bastion::new(&moto, tmp.path());
    let mut cmd = b.command(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--no-wait",
    ]);
    cmd.env("AWS_ACCESS_KEY_ID", &keys[1].0)
        .env("AWS_SECRET_ACCESS_KEY", &keys[1].1);
    let r = b.run_cmd(cmd);
    assert_eq!(r.status, 3, "{r:?}");
    assert!(
        r.stderr.contains("access denied for ec2:ImportKeyPair"),
        "{r:?}"
    );
    assert!(
        !r.stderr.contains("NOT removed"),
        "nothing was created, so nothing is left: {r:?}"
    );
    let keys = admin.ec2.describe_key_pairs().send().await.unwrap();
    assert!(keys.key_pairs().is_empty());
    let instances = admin
        .ec2
        .describe_instances()
        .filters(filter("tag-key", "bastion:cluster"))
        .send()
        .await
        .unwrap();
    assert!(instances.reservations().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_from_the_aws_config_files_is_honoured() {
    let (_moto, _aws, _, _tmp, b) = moto_test!();
    std::fs::write(
        b.home.join("no-aws-config"),
        "[profile lab]\nregion = us-east-1\n",
    )
    .unwrap();
    std::fs::write(
        b.home.join("no-aws-credentials"),
        "[lab]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    let up_args = [
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--no-wait",
        "--output",
        "json",
    ];
    let mut cmd = b.command(&up_args);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_REGION");
    cmd.args(["--profile", "lab"]);
    let r = b.run_cmd(cmd);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.json()["region"], "us-east-1");
    // Without the profile there is no region and no credential: a clear error.
    let mut cmd = b.command(&["status"]);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_REGION");
    let r = b.run_cmd(cmd);
    assert_eq!(r.status, 2, "{r:?}");
    assert!(r.stderr.contains("no AWS region"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn up_starts_a_stopped_bastion_instead_of_creating_one() {
    let (_moto, aws, _, _tmp, b) = moto_test!();
    let first = b.up_no_wait_with(&["--output", "json"]);
    assert_eq!(first.status, 0, "{first:?}");
    let id = first.json()["instance_id"].as_str().unwrap().to_string();
    // The idle timer powered it off; its bootstrap had reported ready.
    aws.set_instance_tags(&id, &[("bastion:state", "ready")])
        .await;
    aws.stop_instance(&id).await;
    let st = b.run(&["status", "--output", "json", "--cluster", CLUSTER]);
    assert_eq!(st.json()["bastions"][0]["state"], "stopped", "{st:?}");

    let again = b.run(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--output",
        "json",
    ]);
    assert_eq!(again.status, 0, "{again:?}");
    let r = again.json();
    assert_eq!(
        (r["created"].clone(), r["started"].clone()),
        (false.into(), true.into())
    );
    assert_eq!(r["instance_id"], id.as_str());
    assert_eq!(r["state"], "running");
    assert_eq!(aws.bastion_instances(CLUSTER).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_desktop_waits_for_the_desktop_and_keeps_a_proxy_whose_desktop_failed() {
    let (_moto, aws, _, _tmp, b) = moto_test!();
    let mut child = b.watch(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--wait-desktop",
        "--timeout",
        "2",
        "--output",
        "json",
    ]);
    let id = wait_for_instance(&aws).await;
    aws.set_instance_tags(
        &id,
        &[
            ("bastion:state", "ready"),
            ("bastion:desktop", "installing"),
        ],
    )
    .await;
    // Two polls that saw the desktop installing, and `up` is still waiting.
    child.wait_stderr(&format!("{id}: proxy ready; desktop installing"), 2, LIMIT);
    assert!(
        child.running(),
        "--wait-desktop keeps waiting while the desktop installs"
    );
    aws.set_instance_tags(&id, &[("bastion:desktop", "failed")])
        .await;
    let out = child.finish(LIMIT);
    let stderr = out.stderr.clone();
    assert_eq!(out.status, 1, "{stderr}");
    assert!(
        stderr.contains("installing its desktop failed") && stderr.contains("kept"),
        "{stderr}"
    );
    assert_eq!(
        aws.bastion_instances(CLUSTER).await.len(),
        1,
        "the SSH-ready proxy is kept"
    );
    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
}

/// `up` prefers a public subnet in the head node's availability zone (no cross-AZ traffic for
/// every byte of the tunnel), whatever the order AWS lists them in; without one it takes another
/// zone's, the first by id.
#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_goes_to_the_head_nodes_availability_zone_when_it_can() {
    let (_moto, aws, lab, _tmp, b) = moto_test!();
    let public_rt = aws.route_table_of(&lab.public_subnet).await;
    // Six public subnets in another zone: ids are random, so without the preference the odds
    // of picking the head node's zone would be one in seven.
    let mut others = Vec::new();
    for i in 0..6 {
        let id = aws
            .ec2
            .create_subnet()
            .vpc_id(&lab.vpc)
            .cidr_block(format!("10.20.{}.0/24", 100 + i))
            .availability_zone("us-east-1b")
            .send()
            .await
            .unwrap()
            .subnet()
            .unwrap()
            .subnet_id()
            .unwrap()
            .to_string();
        aws.ec2
            .associate_route_table()
            .route_table_id(&public_rt)
            .subnet_id(&id)
            .send()
            .await
            .unwrap();
        others.push(id);
    }
    let plan = |b: &Bastion| {
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
        let p = r.json();
        (
            p["subnet_id"].as_str().unwrap().to_string(),
            p["availability_zone"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        plan(&b),
        (lab.public_subnet.clone(), "us-east-1a".to_string())
    );

    // The head node's zone loses its public subnet (a private route table instead).
    let private_rt = aws
        .ec2
        .create_route_table()
        .vpc_id(&lab.vpc)
        .send()
        .await
        .unwrap()
        .route_table()
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_string();
    let assoc = aws
        .ec2
        .describe_route_tables()
        .route_table_ids(&public_rt)
        .send()
        .await
        .unwrap()
        .route_tables()[0]
        .associations()
        .iter()
        .find(|a| a.subnet_id() == Some(lab.public_subnet.as_str()))
        .and_then(|a| a.route_table_association_id())
        .unwrap()
        .to_string();
    aws.ec2
        .replace_route_table_association()
        .association_id(&assoc)
        .route_table_id(&private_rt)
        .send()
        .await
        .unwrap();
    others.sort();
    assert_eq!(plan(&b), (others[0].clone(), "us-east-1b".to_string()));
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
}

/// An arm64 (Graviton) head node gets a proxy of its architecture: AL2023's arm64 AMI from AWS's
/// public parameter, a t4g, and the root volume size asked for.
#[tokio::test(flavor = "multi_thread")]
async fn an_arm64_head_node_gets_an_arm64_proxy_with_the_volume_asked_for() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    aws.build_lab(LabOptions {
        head_arch: "arm64",
        ..LabOptions::default()
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let b = Bastion::new(&moto, tmp.path());
    let up = b.run(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--volume-size",
        "25",
        "--no-wait",
        "--output",
        "json",
    ]);
    assert_eq!(up.status, 0, "{up:?}");
    let id = up.json()["instance_id"].as_str().unwrap().to_string();
    let arm64_ami = aws
        .ssm
        .get_parameter()
        .name("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64")
        .send()
        .await
        .unwrap()
        .parameter()
        .and_then(|p| p.value())
        .unwrap()
        .to_string();
    let out = aws
        .ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let inst = &out.reservations()[0].instances()[0];
    assert_eq!(inst.image_id(), Some(arm64_ami.as_str()));
    assert_eq!(inst.instance_type().map(|t| t.as_str()), Some("t4g.medium"));
    assert_eq!(inst.architecture().map(|a| a.as_str()), Some("arm64"));
    let volumes = aws
        .ec2
        .describe_volumes()
        .filters(filter("attachment.instance-id", &id))
        .send()
        .await
        .unwrap();
    let sizes: Vec<_> = volumes.volumes().iter().map(|v| v.size()).collect();
    assert_eq!(sizes, vec![Some(25)]);
    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
}

/// The head node's `parallelcluster:version` tag is anyone's to write, and its value becomes
/// the `pip install` line in the proxy's user-data: `X.Y.Z` only, refused with the value shown
/// before anything is created; `--pcluster-version` is held to the same form.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_that_is_not_a_release_is_refused_before_anything_exists() {
    let (_moto, aws, lab, _tmp, b) = moto_test!();
    for bad in ["3.9.0; rm -rf /", "latest", "3.16.1rc1", "3.16.1\u{9b}31m"] {
        aws.set_instance_tags(&lab.head_node, &[("parallelcluster:version", bad)])
            .await;
        let r = b.up_no_wait();
        assert_eq!(r.status, 2, "{bad:?}: {r:?}");
        assert!(
            r.stderr.contains(&format!("{bad:?}"))
                && r.stderr.contains("parallelcluster:version")
                && r.stderr.contains("--pcluster-version X.Y.Z"),
            "the value, escaped, and what to do: {r:?}"
        );
        assert!(
            !r.stderr.contains('\u{9b}'),
            "no control character reaches the terminal"
        );
        assert_eq!(
            aws.leftovers(CLUSTER).await,
            Vec::<String>::new(),
            "{bad:?}"
        );
    }
    let r = b.run(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--pcluster-version",
        "latest",
    ]);
    assert_eq!(r.status, 2, "{r:?}");
    assert!(r.stderr.contains("X.Y.Z, digits only"), "{r:?}");
    // A release in the tag goes through, as before.
    aws.set_instance_tags(&lab.head_node, &[("parallelcluster:version", "3.16.1")])
        .await;
    let r = b.run(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--dry-run",
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.contains("pcluster 3.16.1"), "{r:?}");
}

/// Every role `up` creates carries the permissions boundary the administrator made (read back
/// from AWS); without it, `up` says what to do and creates nothing. With `--instance-profile`,
/// the administrator's role and profile (made here from `bastion policy proxy-role`'s own
/// template) are used, no IAM is created, and `down` leaves them.
#[tokio::test(flavor = "multi_thread")]
async fn the_proxys_role_carries_the_boundary_or_is_the_administrators() {
    let (_moto, aws, _, _tmp, b) = moto_test!();
    let role = format!("bastion-{CLUSTER}-{REGION}");
    let boundary = format!(
        "arn:aws:iam::123456789012:policy/bastion/{}",
        bastion::policy::BOUNDARY_NAME
    );

    assert_eq!(b.up_no_wait().status, 0);
    let got = aws.iam.get_role().role_name(&role).send().await.unwrap();
    assert_eq!(
        got.role()
            .and_then(|r| r.permissions_boundary())
            .and_then(|p| p.permissions_boundary_arn()),
        Some(boundary.as_str())
    );
    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);

    // No boundary in the account: nothing is created, and the error says how to get one.
    aws.iam
        .delete_policy()
        .policy_arn(&boundary)
        .send()
        .await
        .unwrap();
    let r = b.up_no_wait();
    assert_eq!(r.status, 2, "{r:?}");
    assert!(
        r.stderr.contains(&boundary)
            && r.stderr.contains("bastion policy boundary")
            && r.stderr.contains("--instance-profile"),
        "{r:?}"
    );
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());

    // The administrator deploys `bastion policy proxy-role`'s template (its resources made as
    // CloudFormation would, from the template's own properties).
    let r = b.run(&["policy", "proxy-role", "--cluster", CLUSTER]);
    assert_eq!(r.status, 0, "{r:?}");
    let template = r.json();
    let props = &template["Resources"]["ProxyRole"]["Properties"];
    assert_eq!(props["Path"], "/bastion/");
    aws.iam
        .create_role()
        .role_name(props["RoleName"].as_str().unwrap())
        .path("/bastion/")
        .assume_role_policy_document(props["AssumeRolePolicyDocument"].to_string())
        .send()
        .await
        .unwrap();
    for p in props["Policies"].as_array().unwrap() {
        aws.iam
            .put_role_policy()
            .role_name(&role)
            .policy_name(p["PolicyName"].as_str().unwrap())
            .policy_document(p["PolicyDocument"].to_string())
            .send()
            .await
            .unwrap();
    }
    let profile = &template["Resources"]["ProxyInstanceProfile"]["Properties"];
    let profile_name = profile["InstanceProfileName"].as_str().unwrap().to_string();
    aws.iam
        .create_instance_profile()
        .instance_profile_name(&profile_name)
        .path("/bastion/")
        .send()
        .await
        .unwrap();
    aws.iam
        .add_role_to_instance_profile()
        .instance_profile_name(&profile_name)
        .role_name(&role)
        .send()
        .await
        .unwrap();

    let up =
        |profile: &str| b.up_no_wait_with(&["--instance-profile", profile, "--output", "json"]);
    let r = up("someone-elses");
    assert_eq!(r.status, 2, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("pass --instance-profile {profile_name}")),
        "{r:?}"
    );
    let r = up(&profile_name);
    assert_eq!(r.status, 0, "{r:?}");
    let id = r.json()["instance_id"].as_str().unwrap().to_string();
    let i = aws
        .ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let arn = i.reservations()[0].instances()[0]
        .iam_instance_profile()
        .and_then(|p| p.arn())
        .unwrap_or_default()
        .to_string();
    assert!(
        arn.ends_with(&format!(":instance-profile/bastion/{profile_name}")),
        "{arn}"
    );
    // The proxy it made is bastion's (its identity check holds) and connect finds it.
    let r = b.run(&["status", "--output", "json"]);
    assert!(
        r.stdout.contains(&id) && !r.stdout.contains("look-alike"),
        "{r:?}"
    );

    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);
    // Nothing of bastion's left but the administrator's two, which `down` never removes.
    assert_eq!(
        aws.leftovers(CLUSTER).await,
        vec![
            format!("role {role}"),
            format!("instance profile {profile_name}")
        ]
    );
    aws.iam
        .get_role()
        .role_name(&role)
        .send()
        .await
        .expect("the administrator's role stays");
    aws.iam
        .get_instance_profile()
        .instance_profile_name(&profile_name)
        .send()
        .await
        .expect("the administrator's profile stays");
}

/// Every folder bastion makes in its state dir is 0700 and every file 0600, whatever the umask.
#[tokio::test(flavor = "multi_thread")]
async fn the_state_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_moto, aws, _, tmp, b) = moto_test!();
    assert_eq!(b.up_no_wait().status, 0);
    let id = aws.bastion_instances(CLUSTER).await[0]
        .instance_id()
        .unwrap()
        .to_string();
    let (_, host_key) = common::netlab::NetLab::key_pair(tmp.path(), "host");
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    aws.set_instance_tags(
        &id,
        &[
            ("bastion:host-key", &host_key.join(" ")),
            ("bastion:state", "ready"),
        ],
    )
    .await;
    let r = b.run(&[
        "ssh-config",
        "--cluster",
        CLUSTER,
        "--bastion-address",
        "192.0.2.10",
        "--install",
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    let mut seen = 0;
    let mut stack = vec![b.state_dir.clone()];
    while let Some(p) = stack.pop() {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        if p.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        seen += 1;
    }
    assert!(
        seen >= 8,
        "the key, its .pub, the ledger, the lock, known_hosts, ssh/: {seen}"
    );
    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);
}
