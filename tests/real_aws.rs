//! bastion against the AWS users have, not moto's instant and forgiving one: through the
//! wire-level front (tests/common/front.rs), which answers as real EC2 and IAM do (eventual
//! consistency, IAM propagation, throttling, DependencyViolation, an endpoint that stops
//! answering); and runs of `up` killed with SIGKILL, and a truncated ledger.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::front::{Front, Reply};
use common::*;

#[derive(Default)]
struct Aws {
    profile_at: Option<Instant>,
    launched_at: Option<Instant>,
    role_added: bool,
    group_not_found: u32,
    describes: u32,
    dependency: u32,
    fired: HashMap<&'static str, usize>,
}

fn fire(fired: &mut HashMap<&'static str, usize>, what: &'static str, r: Reply) -> Option<Reply> {
    *fired.entry(what).or_default() += 1;
    Some(r)
}

/// The behaviours of real AWS that moto lacks, as AWS words them (FACTS section 10).
fn play_real_aws(front: &Front) -> Arc<Mutex<Aws>> {
    let state = Arc::new(Mutex::new(Aws::default()));
    let st = state.clone();
    front.rule(move |c| {
        let mut s = st.lock().unwrap();
        match c.action.as_str() {
            "CreateInstanceProfile" => {
                s.profile_at = Some(Instant::now());
                None
            }
            "AddRoleToInstanceProfile" if !s.role_added => {
                s.role_added = true;
                let name = c.param("InstanceProfileName").unwrap_or_default().to_string();
                fire(
                    &mut s.fired,
                    "iam NoSuchEntity",
                    Reply::iam_error(
                        404,
                        "NoSuchEntity",
                        &format!("Instance Profile {name} cannot be found."),
                    ),
                )
            }
            "RunInstances" => {
                if s.profile_at.is_some_and(|t| t.elapsed() < Duration::from_secs(4)) {
                    let arn = c.param("IamInstanceProfile.Arn").unwrap_or_default().to_string();
                    return fire(
                    &mut s.fired,
                        "IAM propagation",
                        Reply::ec2_error(
                            400,
                            "InvalidParameterValue",
                            &format!(
                                "Value ({arn}) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN"
                            ),
                        ),
                    );
                }
                s.launched_at = Some(Instant::now());
                None
            }
            "DescribeInstances"
                if c.param("InstanceId.1").is_some()
                    && s.launched_at
                        .is_some_and(|t| t.elapsed() < Duration::from_secs(3)) =>
            {
                let id = c.param("InstanceId.1").unwrap_or_default().to_string();
                fire(
                    &mut s.fired,
                    "InvalidInstanceID.NotFound",
                    Reply::ec2_error(
                        400,
                        "InvalidInstanceID.NotFound",
                        &format!("The instance ID '{id}' does not exist"),
                    ),
                )
            }
            "DescribeInstances" => {
                s.describes += 1;
                if s.describes % 7 == 0 {
                    return fire(
                    &mut s.fired,
                        "RequestLimitExceeded",
                        Reply::ec2_error(503, "RequestLimitExceeded", "Request limit exceeded."),
                    );
                }
                None
            }
            "CreateSecurityGroup" => {
                s.group_not_found = 2;
                None
            }
            "RevokeSecurityGroupEgress"
            | "AuthorizeSecurityGroupEgress"
            | "AuthorizeSecurityGroupIngress"
                if s.group_not_found > 0 =>
            {
                s.group_not_found -= 1;
                let g = c.param("GroupId").unwrap_or_default().to_string();
                fire(
                    &mut s.fired,
                    "InvalidGroup.NotFound",
                    Reply::ec2_error(
                        400,
                        "InvalidGroup.NotFound",
                        &format!("The security group '{g}' does not exist"),
                    ),
                )
            }
            "DeleteSecurityGroup" if s.dependency < 2 => {
                s.dependency += 1;
                let g = c.param("GroupId").unwrap_or_default().to_string();
                fire(
                    &mut s.fired,
                    "DependencyViolation",
                    Reply::ec2_error(
                        400,
                        "DependencyViolation",
                        &format!("resource {g} has a dependent object"),
                    ),
                )
            }
            _ => None,
        }
    });
    state
}

/// The proxy group's egress as moto holds it: (port, cidr), sorted.
async fn egress(aws: &Clients, cluster: &str) -> Vec<(i32, String)> {
    let out = aws
        .ec2
        .describe_security_groups()
        .filters(filter("tag:bastion:cluster", cluster))
        .send()
        .await
        .unwrap();
    let mut rules = Vec::new();
    for g in out.security_groups() {
        for p in g.ip_permissions_egress() {
            for r in p.ip_ranges() {
                rules.push((
                    p.from_port().unwrap_or(-1),
                    r.cidr_ip().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    rules.sort();
    rules
}

#[tokio::test(flavor = "multi_thread")]
async fn up_status_and_down_hold_against_aws_as_it_behaves() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let front = Front::start(&moto.url).await;
    let state = play_real_aws(&front);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bastion::new(&moto, tmp.path());
    b.endpoint = front.url.clone();
    let head_rules_before = aws.ingress(&lab.head_sg).await;

    let up = b.up_no_wait_with(&["--output", "json"]);
    assert_eq!(up.status, 0, "{up:?}");
    assert_eq!(up.json()["created"], true);
    assert_eq!(aws.bastion_instances(CLUSTER).await.len(), 1, "one proxy");
    // The default allow-all egress is gone even though the new group read as missing.
    let vpc = "10.20.0.0/16".to_string();
    let mut want = vec![
        (22, vpc),
        (80, "0.0.0.0/0".to_string()),
        (443, "0.0.0.0/0".to_string()),
    ];
    want.sort();
    assert_eq!(egress(&aws, CLUSTER).await, want);

    let s = b.run(&["status", "--output", "json"]);
    assert_eq!(s.status, 0, "{s:?}");
    assert_eq!(s.json()["bastions"].as_array().unwrap().len(), 1, "{s:?}");

    let down = b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(down.status, 0, "{down:?}");
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
    assert_eq!(aws.ingress(&lab.head_sg).await, head_rules_before);

    // A waiting `up`: the new instance reads as missing for its first seconds, and is waited
    // for, not torn down.
    let child = b.watch(&["up", "--cluster", CLUSTER, "--allow-cidr", ALLOW]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let id = loop {
        if let Some(i) = aws.bastion_instances(CLUSTER).await.first() {
            break i.instance_id().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "up never launched");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    front
        .consoles()
        .lock()
        .unwrap()
        .insert(id.clone(), common::front::console_with_keys(&[PROXY_KEY]));
    aws.set_instance_tags(
        &id,
        &[("bastion:host-key", PROXY_KEY), ("bastion:state", "ready")],
    )
    .await;
    let out = child.finish(Duration::from_secs(120));
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(aws.bastion_instances(CLUSTER).await.len(), 1);
    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());

    let fired = state.lock().unwrap().fired.clone();
    for what in [
        "iam NoSuchEntity",
        "IAM propagation",
        "InvalidInstanceID.NotFound",
        "RequestLimitExceeded",
        "InvalidGroup.NotFound",
        "DependencyViolation",
    ] {
        assert!(
            fired.get(what).copied().unwrap_or(0) > 0,
            "{what} was played: {fired:?}"
        );
    }
    eprintln!("the front injected {} faults: {fired:?}", front.injected());
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_going_unreachable_mid_run_is_said_and_down_finishes_the_job() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    aws.build_lab(LabOptions::default()).await;
    let front = Front::start(&moto.url).await;
    let dark = front.dark();
    let switch = dark.clone();
    front.rule(move |c| {
        // The role is created; every call after it finds no endpoint.
        if c.action == "CreateRole" {
            switch.store(true, Ordering::Relaxed);
        }
        None
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bastion::new(&moto, tmp.path());
    b.endpoint = front.url.clone();
    let up = b.up_no_wait();
    assert_eq!(up.status, 1, "{up:?}");
    assert!(up.stderr.contains("could not reach AWS"), "{up:?}");
    assert!(
        up.stderr.contains("NOT removed")
            && up
                .stderr
                .contains(&format!("bastion down --cluster {CLUSTER}")),
        "what is left is listed with the command that removes it: {up:?}"
    );
    assert!(!aws.leftovers(CLUSTER).await.is_empty());

    dark.store(false, Ordering::Relaxed);
    let down = b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(down.status, 0, "{down:?}");
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
}

/// A group an instance still uses cannot be deleted (AWS answers DependencyViolation, moto does
/// not): a rollback whose launch answer was lost, so that its ledger never learned of the
/// instance, and a `down` after it, must take the instance first, and leave nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_the_ledger_never_learned_of_is_removed_before_its_group() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    aws.build_lab(LabOptions::default()).await;
    let front = Front::start(&moto.url).await;
    // Groups in use by a launched instance, until it is terminated.
    let in_use: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (groups, count) = (in_use.clone(), refused.clone());
    front.rule(move |c| {
        let mut groups = groups.lock().unwrap();
        match c.action.as_str() {
            "RunInstances" => {
                groups.extend(
                    c.params
                        .iter()
                        .filter(|(k, _)| k.contains("SecurityGroupId"))
                        .map(|(_, v)| v.clone()),
                );
                None
            }
            "TerminateInstances" => {
                groups.clear();
                None
            }
            "DeleteSecurityGroup" => {
                let g = c.param("GroupId").unwrap_or_default();
                groups.iter().any(|x| x == g).then(|| {
                    count.fetch_add(1, Ordering::Relaxed);
                    Reply::ec2_error(
                        400,
                        "DependencyViolation",
                        &format!("resource {g} has a dependent object"),
                    )
                })
            }
            _ => None,
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bastion::new(&moto, tmp.path());
    b.endpoint = front.url.clone();
    b.env
        .push(("BASTION_FAILPOINT".into(), "run_instance:after".into()));
    let up = b.up_no_wait();
    assert_eq!(up.status, 1, "{up:?}");
    assert!(up.stderr.contains("cleaned up"), "{up:?}");
    assert!(!up.stderr.contains("NOT removed"), "{up:?}");
    assert!(
        up.stderr.contains("  removed instance i-"),
        "the unrecorded instance: {up:?}"
    );
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "the group was tried while its instance still ran"
    );

    // `down` meets the same: a proxy the ledger does not know (killed before its record).
    b.env.clear();
    let up = b.up_no_wait();
    assert_eq!(up.status, 0, "{up:?}");
    let ledger = ledger_path(&b);
    let mut data: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ledger).unwrap()).unwrap();
    data["resources"]
        .as_array_mut()
        .unwrap()
        .retain(|r| r["kind"] != "instance");
    std::fs::write(&ledger, serde_json::to_vec(&data).unwrap()).unwrap();
    let down = b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(down.status, 0, "{down:?}");
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
    assert_eq!(refused.load(Ordering::Relaxed), 0, "{down:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_up_never_blocks_the_next_one() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let head_rules_before = aws.ingress(&lab.head_sg).await;
    // (failpoint to pause at, what the ledger holds by then, then: up again or down)
    let cases = [
        ("import_key_pair:pause", "local_key", "up"),
        ("create_security_group:pause", "key_pair", "up"),
        ("authorize_ingress#2:pause", "security_group", "up"),
        ("create_role:pause", "ingress_rule", "down"),
        ("run_instance:pause", "role_in_profile", "up"),
        ("run_instance:pause", "role_in_profile", "down"),
    ];
    for (failpoint, reached, then) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let mut b = Bastion::new(&moto, tmp.path());
        b.env
            .push(("BASTION_FAILPOINT".into(), failpoint.to_string()));
        let paused = tmp.path().join("paused");
        b.env.push((
            "BASTION_FAILPOINT_PAUSED".into(),
            paused.display().to_string(),
        ));
        let child = b.watch(&[
            "up",
            "--cluster",
            CLUSTER,
            "--allow-cidr",
            ALLOW,
            "--no-wait",
        ]);
        // Killed while the call is held (bastion says so), with the ledger as it stands then.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !paused.exists() {
            assert!(Instant::now() < deadline, "{failpoint}: never reached");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ledger = std::fs::read_to_string(ledger_path(&b)).unwrap_or_default();
        let last = serde_json::from_str::<serde_json::Value>(&ledger).unwrap()["resources"]
            .as_array()
            .and_then(|r| r.last().cloned())
            .unwrap_or_default();
        assert_eq!(last["kind"], reached, "{failpoint}: {ledger}");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let killed = child.finish(Duration::from_secs(30));
        assert_eq!(killed.status, -1, "{failpoint}: killed by SIGKILL");
        b.env.clear();

        if then == "up" {
            let up = b.up_no_wait_with(&["--output", "json"]);
            assert_eq!(up.status, 0, "{failpoint}: {up:?}");
            assert!(up.stderr.contains("was interrupted"), "{failpoint}: {up:?}");
            assert_eq!(
                aws.bastion_instances(CLUSTER).await.len(),
                1,
                "{failpoint}: one proxy"
            );
        }
        let down = b.run(&["down", "--cluster", CLUSTER]);
        assert_eq!(down.status, 0, "{failpoint}: {down:?}");
        assert_eq!(
            aws.leftovers(CLUSTER).await,
            Vec::<String>::new(),
            "{failpoint}: nothing left"
        );
        assert_eq!(
            aws.ingress(&lab.head_sg).await,
            head_rules_before,
            "{failpoint}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_ledger_is_moved_aside_by_down_and_up_works_again() {
    let (_moto, aws, _, _tmp, b) = moto_test!();
    let up = [
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--no-wait",
    ];
    assert_eq!(b.run(&up).status, 0);
    let ledger = ledger_path(&b);
    let text = std::fs::read_to_string(&ledger).unwrap();
    std::fs::write(&ledger, &text[..text.len() / 2]).unwrap();

    let down = b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(down.status, 0, "{down:?}");
    assert!(down.stdout.contains("moved to"), "{down:?}");
    assert!(!ledger.exists());
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());

    let again = b.run(&up);
    assert_eq!(again.status, 0, "{again:?}");
    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
}
