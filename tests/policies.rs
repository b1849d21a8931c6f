//! The proxy's IAM documents, rendered for every partition: valid JSON, within IAM's size limits,
//! and clean under `parliament` (with the reviewed exceptions in policies/parliament.yaml).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use std::process::{Command, Stdio};

use bastion::policy::{
    Target, boundary_policy, inline_policies, operator_policy, trust_policy, user_policy,
};

/// IAM's published quotas (IAM User Guide, "IAM and AWS STS quotas"), written here rather than
/// taken from the code under test: a managed policy holds at most 6,144 characters, and a
/// role's inline policies together at most 10,240, white space not counted.
const MANAGED_POLICY_LIMIT: usize = 6_144;
const ROLE_INLINE_LIMIT: usize = 10_240;

const PARTITIONS: [(&str, &str); 3] = [
    ("aws", "us-east-1"),
    ("aws-cn", "cn-north-1"),
    ("aws-us-gov", "us-gov-west-1"),
];

#[test]
fn documents_are_valid_json_within_iam_limits() {
    for (partition, region) in PARTITIONS {
        let t = Target {
            partition,
            account: "123456789012",
            region,
        };
        let policies = inline_policies(&t, true).unwrap();
        let mut total = 0;
        for p in &policies {
            let v: serde_json::Value = serde_json::from_str(&p.document).unwrap();
            assert_eq!(v["Version"], "2012-10-17");
            let size = p.document.chars().filter(|c| !c.is_whitespace()).count();
            assert!(
                size <= MANAGED_POLICY_LIMIT,
                "{partition} {}: {size}",
                p.name
            );
            total += size;
        }
        assert!(
            total <= ROLE_INLINE_LIMIT,
            "{partition}: inline total {total}"
        );
        // The teammate's and the operator's policies are attached as managed policies.
        for (name, doc) in [
            (
                "bastion-user",
                user_policy(&t, &Default::default()).unwrap(),
            ),
            ("bastion-operator", operator_policy(&t, false).unwrap()),
            ("bastion-operator-pre", operator_policy(&t, true).unwrap()),
            ("bastion-proxy-boundary", boundary_policy(&t).unwrap()),
            // Not the endpoint user's policy (`policy user --via eice`): parliament 1.6.4 stops
            // with an exception on any condition on ec2-instance-connect:maxTunnelDuration (its
            // data spells the key two ways). The evaluator judges that document instead
            // (a_teammate_may_open_a_tunnel_to_the_head_nodes_ssh_port_and_nothing_more).
        ] {
            let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
            assert_eq!(v["Version"], "2012-10-17");
            let size = doc.chars().filter(|c| !c.is_whitespace()).count();
            assert!(size <= MANAGED_POLICY_LIMIT, "{partition} {name}: {size}");
            assert!(doc.contains(&format!("arn:{partition}:")), "{name}");
            eprintln!("{partition}: {name} {size} characters (limit {MANAGED_POLICY_LIMIT})");
        }
        let trust: serde_json::Value = serde_json::from_str(&trust_policy(&t).unwrap()).unwrap();
        assert_eq!(trust["Statement"][0]["Action"], "sts:AssumeRole");
        eprintln!("{partition}: inline policies {total} characters (limit {ROLE_INLINE_LIMIT})");
    }
}

/// Findings parliament reports on AWS's own documented base pcluster user policy, reviewed and
/// accepted; anything else, in any document, fails the test. (parliament 1.6.4's `ignore_locations`
/// config cannot express this: its `make_list` drops plain YAML values, so the filter is here.)
/// - RESOURCE_STAR: the documented policy grants ec2, cloudformation, route53, cloudwatch, logs
///   actions on "*", since pcluster names its resources at run time.
/// - RESOURCE_MISMATCH: "s3:*", "s3:Get*" and "elasticfilesystem:*" expand to account-level actions
///   that do not apply to the bucket/file-system ARNs given.
/// - INVALID_ARN on arn:<partition>:iam::aws:policy/*: AWS-managed policies have account "aws".
///
/// The permissions boundary holds the pcluster user policy's statements, so the same findings.
/// And one on the operator's policy: parliament 1.6.4's action table predates IAM's
/// `iam:PermissionsBoundary` condition on `iam:DeleteRole`, which AWS's service reference lists
/// (and the IAM evaluator, on current data, applies; see
/// `the_operator_cannot_take_over_the_account`).
fn accepted(finding: &serde_json::Value) -> bool {
    let file = finding["location"]["filepath"].as_str().unwrap_or_default();
    if file.ends_with("-bastion-operator.json") {
        return finding["issue"] == "UNKNOWN_CONDITION_FOR_ACTION"
            && finding["detail"]
                == "Unknown condition iam:PermissionsBoundary for action iam:DeleteRole";
    }
    if !file.ends_with("-pcluster-user.json") && !file.ends_with("-bastion-proxy-boundary.json") {
        return false;
    }
    match finding["issue"].as_str().unwrap_or_default() {
        "RESOURCE_STAR" | "RESOURCE_MISMATCH" => true,
        "INVALID_ARN" => {
            let arn = finding["location"]["string"].as_str().unwrap_or_default();
            ["aws", "aws-cn", "aws-us-gov"]
                .iter()
                .any(|p| arn == format!("arn:{p}:iam::aws:policy/*"))
        }
        _ => false,
    }
}

fn parliament_findings(
    parliament: &std::path::Path,
    dir: &std::path::Path,
) -> Vec<serde_json::Value> {
    let out = Command::new(parliament)
        .arg("--directory")
        .arg(dir)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("parliament output {l:?}: {e}")))
        .collect()
}

/// Identity policies only: parliament reads every document as one, and a trust policy has no
/// Resource by design.
#[test]
fn identity_policies_are_clean_under_parliament() {
    let venv = common::venv();
    let Some(parliament) = common::require_tool("parliament", &[venv.join("bin/parliament")])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (partition, region) in PARTITIONS {
        let t = Target {
            partition,
            account: "123456789012",
            region,
        };
        for p in inline_policies(&t, true).unwrap() {
            std::fs::write(
                dir.path().join(format!("{partition}-{}.json", p.name)),
                &p.document,
            )
            .unwrap();
        }
        for (name, doc) in [
            (
                "bastion-user",
                user_policy(&t, &Default::default()).unwrap(),
            ),
            ("bastion-operator", operator_policy(&t, false).unwrap()),
            ("bastion-operator-pre", operator_policy(&t, true).unwrap()),
            ("bastion-proxy-boundary", boundary_policy(&t).unwrap()),
            // Not the endpoint user's policy (`policy user --via eice`): parliament 1.6.4 stops
            // with an exception on any condition on ec2-instance-connect:maxTunnelDuration (its
            // data spells the key two ways). The evaluator judges that document instead
            // (a_teammate_may_open_a_tunnel_to_the_head_nodes_ssh_port_and_nothing_more).
        ] {
            std::fs::write(dir.path().join(format!("{partition}-{name}.json")), doc).unwrap();
        }
    }
    let findings = parliament_findings(&parliament, dir.path());
    assert!(
        !findings.is_empty(),
        "parliament reported nothing at all: is it running?"
    );
    let rejected: Vec<_> = findings.iter().filter(|f| !accepted(f)).collect();
    assert!(rejected.is_empty(), "parliament findings:\n{rejected:#?}");

    // The check can fail: a typo'd action in a document is reported and not accepted.
    std::fs::write(
        dir.path().join("aws-dcv-license-typo.json"),
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObjekt","Resource":"arn:aws:s3:::b/*"}]}"#,
    )
    .unwrap();
    let findings = parliament_findings(&parliament, dir.path());
    assert!(
        findings
            .iter()
            .any(|f| f["issue"] == "UNKNOWN_ACTION" && !accepted(f))
    );
}

/// `bastion` in each of its 128 case spellings: IAM matches tag keys in
/// `aws:ResourceTag/...` without regard to case, and `StringLike` on `aws:TagKeys` with it.
fn spellings() -> Vec<String> {
    (0..128u32)
        .map(|bits| {
            "bastion"
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if bits & (1 << i) != 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect()
}

/// What the evaluator answered, by request name: `Allowed`, `ImplicitlyDenied` or
/// `ExplicitlyDenied`.
struct Decisions(std::collections::HashMap<String, String>);

impl Decisions {
    /// The answer to the request named `name` ("missing" where there was none).
    fn is(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("missing")
    }

    /// The requests whose names start with `prefix`, with their answers.
    fn named<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a String)> {
        self.0.iter().filter(move |(n, _)| n.starts_with(prefix))
    }
}

/// The decisions of an IAM evaluator (`tests/iam/evaluate.mjs` on `@cloud-copilot/iam-simulate`,
/// which models condition operators, policy variables, boundaries and IAM's case-insensitive
/// condition-key names) for `requests` against the identity policies `identity`. Each request
/// is `(name, action, resource, context)`. An invalid policy or request fails the test; without
/// the evaluator the test skips (outside CI) or fails (under `CI=true`), and None comes back.
fn evaluate(
    identity: &[String],
    principal: &str,
    requests: &[(String, &str, String, serde_json::Value)],
) -> Option<Decisions> {
    evaluate_bounded(identity, None, principal, requests)
}

/// As [`evaluate`], with a permissions boundary.
fn evaluate_bounded(
    identity: &[String],
    boundary: Option<&str>,
    principal: &str,
    requests: &[(String, &str, String, serde_json::Value)],
) -> Option<Decisions> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/iam");
    let node = common::require_tool("node", &[])?;
    if !dir
        .join("node_modules/@cloud-copilot/iam-simulate")
        .exists()
    {
        let why = "the IAM evaluator is not installed: run `npm ci` in tests/iam (.ci/run does)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}");
        }
        common::skip(why);
        return None;
    }
    let policies: Vec<serde_json::Value> = identity
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let input = serde_json::json!({
        "policies": {
            "identity": policies,
            "boundary": boundary.map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap()),
        },
        "requests": requests.iter().map(|(name, action, resource, context)| serde_json::json!({
            "name": name, "action": action, "resource": resource,
            "principal": principal, "context": context,
        })).collect::<Vec<_>>(),
    });
    let mut child = Command::new(node)
        .arg(dir.join("evaluate.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.to_string().as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the evaluator refused the input: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Some(Decisions(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["name"].as_str().unwrap().to_string(),
                    v["decision"].as_str().unwrap().to_string(),
                )
            })
            .collect(),
    ))
}

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const PROXY: &str = "i-0aaaaaaaaaaaaaaa1";
const OTHER_PROXY: &str = "i-0ccccccccccccccc3";
const HEAD: &str = "i-0bbbbbbbbbbbbbbb2";
const GROUP: &str = "sg-0aaaaaaaaaaaaaaa1";
const OTHER_GROUP: &str = "sg-0ccccccccccccccc3";
const HEAD_GROUP: &str = "sg-0bbbbbbbbbbbbbbb2";

fn arn(kind: &str, id: &str) -> String {
    format!("arn:aws:ec2:{REGION}:{ACCOUNT}:{kind}/{id}")
}

fn aws_target() -> Target<'static> {
    Target {
        partition: "aws",
        account: ACCOUNT,
        region: REGION,
    }
}

/// A teammate's policy, judged by the evaluator: a one-time key for the teammate user on its
/// cluster's proxy only; never for a sudo user, whatever tag an instance carries and however
/// it is spelled (the evaluator does not know `ec2:osuser` as a condition key of
/// SendSSHPublicKey; `evaluate.mjs` validates the rest of each request, then takes the decision
/// from the simulator's unchecked path, which compares it as a string key, as IAM does).
/// Ingress rules on its cluster's proxy group only.
#[test]
fn a_teammate_may_push_a_key_for_the_teammate_user_to_its_proxy_and_nothing_more() {
    let t = aws_target();
    let one = bastion::policy::UserScope {
        cluster: Some("demo"),
        proxy_instance: Some(PROXY),
        proxy_group: Some(GROUP),
        head_node: Some(HEAD),
    };
    let scoped = user_policy(&t, &one).unwrap();
    let every = user_policy(&t, &Default::default()).unwrap();
    let push = |name: &str, instance: &str, tag: (&str, &str), user: &str| {
        (
            name.to_string(),
            "ec2-instance-connect:SendSSHPublicKey",
            arn("instance", instance),
            serde_json::json!({
                format!("aws:ResourceTag/{}", tag.0): tag.1,
                "ec2:osuser": user,
            }),
        )
    };
    let ingress = |name: &str, group: &str, tag: (&str, &str)| {
        (
            name.to_string(),
            "ec2:AuthorizeSecurityGroupIngress",
            arn("security-group", group),
            serde_json::json!({ format!("aws:ResourceTag/{}", tag.0): tag.1 }),
        )
    };
    let mut requests = vec![
        push(
            "own proxy, teammate user",
            PROXY,
            ("bastion:cluster", "demo"),
            "bastion-jump",
        ),
        push(
            "own proxy, ec2-user",
            PROXY,
            ("bastion:cluster", "demo"),
            "ec2-user",
        ),
        push(
            "own proxy, ubuntu",
            PROXY,
            ("bastion:cluster", "demo"),
            "ubuntu",
        ),
        push(
            "own proxy, root",
            PROXY,
            ("bastion:cluster", "demo"),
            "root",
        ),
        push(
            "other proxy",
            OTHER_PROXY,
            ("bastion:cluster", "other"),
            "bastion-jump",
        ),
        ingress("own group", GROUP, ("bastion:cluster", "demo")),
        ingress("other group", OTHER_GROUP, ("bastion:cluster", "other")),
        ingress("head group tagged", HEAD_GROUP, ("bastion:cluster", "demo")),
    ];
    for s in spellings() {
        for user in ["ec2-user", "ubuntu", "root"] {
            requests.push(push(
                &format!("head node tagged {s}:cluster, {user}"),
                HEAD,
                (&format!("{s}:cluster"), "demo"),
                user,
            ));
        }
    }
    let principal = format!("arn:aws:iam::{ACCOUNT}:user/alice");
    for (doc, per_cluster) in [(&scoped, true), (&every, false)] {
        let Some(d) = evaluate(std::slice::from_ref(doc), &principal, &requests) else {
            return;
        };
        let is = |name: &str| d.is(name);
        assert_eq!(is("own proxy, teammate user"), "Allowed");
        for denied in [
            "own proxy, ec2-user",
            "own proxy, ubuntu",
            "own proxy, root",
        ] {
            assert_ne!(is(denied), "Allowed", "{denied}");
        }
        let heads: Vec<_> = d
            .named("head node tagged")
            .filter(|(_, v)| *v == "Allowed")
            .collect();
        assert!(
            heads.is_empty(),
            "a sudo user's key to a head node: {heads:?}"
        );
        assert_eq!(d.named("head node tagged").count(), 128 * 3);
        assert_eq!(is("own group"), "Allowed");
        if per_cluster {
            assert_ne!(is("other proxy"), "Allowed");
            assert_ne!(is("other group"), "Allowed");
            assert_ne!(is("head group tagged"), "Allowed");
        } else {
            // What --cluster is for: without it, every tagged proxy and group.
            assert_eq!(is("other proxy"), "Allowed");
            assert_eq!(is("other group"), "Allowed");
        }
    }
}

/// The proxy's role, judged by the evaluator with all its inline policies (the ParallelCluster
/// user policy allows ec2:CreateTags on "*"): it tags its own instance with `bastion:*` keys,
/// and no other instance or resource directly, whatever the key and however `bastion` is
/// spelled; tags written by CloudFormation for `pcluster`'s stacks (aws:CalledVia) still go.
#[test]
fn the_proxy_role_writes_bastion_tags_on_its_own_instance_only_in_any_spelling() {
    let t = aws_target();
    let docs: Vec<String> = inline_policies(&t, true)
        .unwrap()
        .into_iter()
        .map(|p| p.document)
        .collect();
    let principal = format!("arn:aws:sts::{ACCOUNT}:assumed-role/bastion-demo-us-east-1/{PROXY}");
    let userid = format!("AROAEXAMPLEROLEID12345:{PROXY}");
    let tag = |name: String, action: &'static str, instance: &str, key: &str, via: Option<&str>| {
        let mut context = serde_json::json!({
            "aws:userid": userid,
            "ec2:InstanceID": instance,
            "aws:TagKeys": [key],
        });
        if let Some(v) = via {
            context["aws:CalledVia"] = serde_json::json!([v]);
        }
        (name, action, arn("instance", instance), context)
    };
    let mut requests = vec![
        tag(
            "itself, bastion:state".into(),
            "ec2:CreateTags",
            PROXY,
            "bastion:state",
            None,
        ),
        tag(
            "head via CloudFormation".into(),
            "ec2:CreateTags",
            HEAD,
            "parallelcluster:node-type",
            Some("cloudformation.amazonaws.com"),
        ),
        (
            "a security group, directly".to_string(),
            "ec2:CreateTags",
            arn("security-group", HEAD_GROUP),
            serde_json::json!({"aws:userid": userid, "aws:TagKeys": ["Bastion:cluster"]}),
        ),
    ];
    // pcluster's own launch-template validators call RunInstances (DryRun) directly, with the
    // cluster's tags: tags at creation pass, but never bastion's identity tag, in any spelling.
    let at_launch = |name: String, key: &str| {
        (
            name,
            "ec2:CreateTags",
            arn("instance", "*"),
            serde_json::json!({
                "aws:userid": userid,
                "ec2:CreateAction": "RunInstances",
                "aws:TagKeys": [key],
                format!("aws:RequestTag/{key}"): "demo",
            }),
        )
    };
    requests.push(at_launch("launch tagged Project".into(), "Project"));
    for s in spellings() {
        requests.push(at_launch(
            format!("launch tagged {s}:cluster"),
            &format!("{s}:cluster"),
        ));
        for action in ["ec2:CreateTags", "ec2:DeleteTags"] {
            requests.push(tag(
                format!("head {action} {s}:cluster"),
                action,
                HEAD,
                &format!("{s}:cluster"),
                None,
            ));
        }
    }
    let Some(d) = evaluate(&docs, &principal, &requests) else {
        return;
    };
    let is = |name: &str| d.is(name);
    assert_eq!(is("itself, bastion:state"), "Allowed");
    assert_eq!(is("head via CloudFormation"), "Allowed");
    assert_eq!(is("a security group, directly"), "ExplicitlyDenied");
    assert_eq!(is("launch tagged Project"), "Allowed");
    let launched: Vec<_> = d
        .named("launch tagged ")
        .filter(|(n, v)| n.ends_with(":cluster") && *v != "ExplicitlyDenied")
        .collect();
    assert!(launched.is_empty(), "{launched:?}");
    let forged: Vec<_> = d
        .named("head ec2:")
        .filter(|(_, v)| *v != "ExplicitlyDenied")
        .collect();
    assert!(forged.is_empty(), "{forged:?}");
    assert_eq!(d.named("head ec2:").count(), 256);
}

/// The operator's policy, judged by the evaluator: it cannot take over the account. A role
/// under /bastion/ only with the boundary an administrator made; no policy attached but Session
/// Manager's core (not AdministratorAccess); the boundary neither removed, replaced nor edited;
/// and, where an administrator made the proxy's role (`--pre-provisioned`), no IAM write at all,
/// only passing that role to EC2.
#[test]
fn the_operator_cannot_take_over_the_account() {
    let t = aws_target();
    let boundary = t.boundary_arn();
    let role = format!("arn:aws:iam::{ACCOUNT}:role/bastion/bastion-demo-us-east-1");
    let other_role = format!("arn:aws:iam::{ACCOUNT}:role/admin");
    let admin = "arn:aws:iam::aws:policy/AdministratorAccess".to_string();
    let ssm = t.ssm_core_policy_arn();
    let req = |name: &str, action: &'static str, resource: &str, context: serde_json::Value| {
        (name.to_string(), action, resource.to_string(), context)
    };
    let with_boundary = |extra: serde_json::Value| {
        let mut c = serde_json::json!({ "iam:PermissionsBoundary": boundary });
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        c
    };
    let requests = vec![
        req(
            "create with boundary",
            "iam:CreateRole",
            &role,
            with_boundary(serde_json::json!({})),
        ),
        req(
            "create without boundary",
            "iam:CreateRole",
            &role,
            serde_json::json!({}),
        ),
        req(
            "create with another boundary",
            "iam:CreateRole",
            &role,
            serde_json::json!({ "iam:PermissionsBoundary": "arn:aws:iam::aws:policy/AdministratorAccess" }),
        ),
        req(
            "create outside /bastion/",
            "iam:CreateRole",
            &other_role,
            with_boundary(serde_json::json!({})),
        ),
        req(
            "put inline, bounded",
            "iam:PutRolePolicy",
            &role,
            with_boundary(serde_json::json!({})),
        ),
        req(
            "put inline, unbounded",
            "iam:PutRolePolicy",
            &role,
            serde_json::json!({}),
        ),
        req(
            "attach ssm core",
            "iam:AttachRolePolicy",
            &role,
            with_boundary(serde_json::json!({ "iam:PolicyARN": ssm })),
        ),
        req(
            "attach admin",
            "iam:AttachRolePolicy",
            &role,
            with_boundary(serde_json::json!({ "iam:PolicyARN": admin })),
        ),
        req(
            "remove the boundary",
            "iam:DeleteRolePermissionsBoundary",
            &role,
            with_boundary(serde_json::json!({})),
        ),
        req(
            "replace the boundary",
            "iam:PutRolePermissionsBoundary",
            &role,
            serde_json::json!({ "iam:PermissionsBoundary": "arn:aws:iam::aws:policy/AdministratorAccess" }),
        ),
        req(
            "edit the boundary",
            "iam:CreatePolicyVersion",
            &boundary,
            serde_json::json!({}),
        ),
        req(
            "delete the boundary",
            "iam:DeletePolicy",
            &boundary,
            serde_json::json!({}),
        ),
        req(
            "delete a bounded role",
            "iam:DeleteRole",
            &role,
            with_boundary(serde_json::json!({})),
        ),
        req(
            "pass the proxy role to EC2",
            "iam:PassRole",
            &role,
            serde_json::json!({ "iam:PassedToService": "ec2.amazonaws.com" }),
        ),
        req(
            "pass the proxy role to Lambda",
            "iam:PassRole",
            &role,
            serde_json::json!({ "iam:PassedToService": "lambda.amazonaws.com" }),
        ),
        req(
            "create a user",
            "iam:CreateUser",
            &format!("arn:aws:iam::{ACCOUNT}:user/x"),
            serde_json::json!({}),
        ),
        req(
            "create a policy",
            "iam:CreatePolicy",
            &format!("arn:aws:iam::{ACCOUNT}:policy/bastion/x"),
            serde_json::json!({}),
        ),
        req(
            "trust another account",
            "iam:UpdateAssumeRolePolicy",
            &role,
            serde_json::json!({}),
        ),
    ];
    let principal = format!("arn:aws:iam::{ACCOUNT}:user/operator");
    let Some(d) = evaluate(
        &[operator_policy(&t, false).unwrap()],
        &principal,
        &requests,
    ) else {
        return;
    };
    let is = |name: &str| d.is(name);
    for allowed in [
        "create with boundary",
        "put inline, bounded",
        "attach ssm core",
        "delete a bounded role",
        "pass the proxy role to EC2",
    ] {
        assert_eq!(is(allowed), "Allowed", "{allowed}");
    }
    for denied in [
        "create without boundary",
        "create with another boundary",
        "create outside /bastion/",
        "put inline, unbounded",
        "attach admin",
        "remove the boundary",
        "replace the boundary",
        "edit the boundary",
        "delete the boundary",
        "pass the proxy role to Lambda",
        "create a user",
        "create a policy",
        "trust another account",
    ] {
        assert_ne!(is(denied), "Allowed", "{denied}");
    }

    // Pre-provisioned: no IAM write of any kind; passing the administrator's role to EC2 only.
    let Some(pre) = evaluate(&[operator_policy(&t, true).unwrap()], &principal, &requests) else {
        return;
    };
    let writes: Vec<_> = pre
        .named("")
        .filter(|(n, v)| *v == "Allowed" && n.as_str() != "pass the proxy role to EC2")
        .collect();
    assert!(
        writes.is_empty(),
        "IAM writes in the pre-provisioned policy: {writes:?}"
    );
    assert_eq!(pre.is("pass the proxy role to EC2"), "Allowed");
}

/// The permissions boundary, judged by the evaluator with an identity policy that allows
/// everything: a bounded role keeps what bastion gives the proxy (Session Manager's agent side
/// included) and nothing more: no command on other instances, no IAM outside ParallelCluster's.
#[test]
fn the_boundary_holds_a_role_to_what_the_proxy_has() {
    let t = aws_target();
    let everything =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    let boundary = boundary_policy(&t).unwrap();
    let principal = format!("arn:aws:sts::{ACCOUNT}:assumed-role/bastion-demo-us-east-1/{PROXY}");
    // On the instance: its credentials carry the instance's ARN.
    let on_instance = format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{PROXY}");
    let any = |name: &str, action: &'static str, resource: String| {
        let context = serde_json::json!({
            "ec2:SourceInstanceARN": on_instance,
            "aws:ViaAWSService": "false",
        });
        (name.to_string(), action, resource, context)
    };
    let instance = arn("instance", HEAD);
    let requests = vec![
        any("agent", "ssm:UpdateInstanceInformation", instance.clone()),
        any("send command", "ssm:SendCommand", instance.clone()),
        any("start session", "ssm:StartSession", instance.clone()),
        any(
            "create a user",
            "iam:CreateUser",
            format!("arn:aws:iam::{ACCOUNT}:user/x"),
        ),
        any(
            "create an admin role",
            "iam:CreateRole",
            format!("arn:aws:iam::{ACCOUNT}:role/admin"),
        ),
        any(
            "describe instances",
            "ec2:DescribeInstances",
            "*".to_string(),
        ),
        // A person who assumed the role (any trust policy an operator gave it).
        (
            "off the instance".to_string(),
            "ec2:DescribeInstances",
            "*".to_string(),
            serde_json::json!({ "aws:ViaAWSService": "false" }),
        ),
    ];
    let Some(d) = evaluate_bounded(
        &[everything.to_string()],
        Some(&boundary),
        &principal,
        &requests,
    ) else {
        return;
    };
    let is = |name: &str| d.is(name);
    assert_eq!(is("agent"), "Allowed");
    assert_eq!(is("describe instances"), "Allowed");
    assert_eq!(is("off the instance"), "ExplicitlyDenied");
    for denied in [
        "send command",
        "start session",
        "create a user",
        "create an admin role",
    ] {
        assert_ne!(is(denied), "Allowed", "{denied}");
    }
}

/// A teammate's policy for the endpoint path (`policy user --cluster NAME --via eice`), judged
/// by the evaluator: a tunnel through the cluster's endpoint to the head node's IP on port 22
/// for up to an hour, and nothing else: not port 8443 or 3389, not another IP, not another
/// endpoint, not without a duration the condition can check; and nothing of a proxy.
#[test]
fn a_teammate_may_open_a_tunnel_to_the_head_nodes_ssh_port_and_nothing_more() {
    let t = aws_target();
    let endpoint = "eice-0123456789abcdef0";
    let doc = bastion::policy::endpoint_user_policy(
        &t,
        &bastion::policy::EndpointScope {
            cluster: "demo",
            endpoint_id: endpoint,
            head_node: HEAD,
            head_ip: "10.0.1.10".parse().unwrap(),
        },
    )
    .unwrap();
    let tunnel = |name: &str, eice: &str, ip: &str, port: &str, duration: Option<&str>| {
        let mut context = serde_json::json!({
            "ec2-instance-connect:remotePort": port,
            "ec2-instance-connect:privateIpAddress": ip,
        });
        if let Some(d) = duration {
            context["ec2-instance-connect:maxTunnelDuration"] = d.into();
        }
        (
            name.to_string(),
            "ec2-instance-connect:OpenTunnel",
            arn("instance-connect-endpoint", eice),
            context,
        )
    };
    let other = "eice-0fffffffffffffff0";
    let requests = vec![
        tunnel(
            "head, 22, an hour",
            endpoint,
            "10.0.1.10",
            "22",
            Some("3600"),
        ),
        tunnel(
            "head, 22, a minute",
            endpoint,
            "10.0.1.10",
            "22",
            Some("60"),
        ),
        tunnel("head, 8443", endpoint, "10.0.1.10", "8443", Some("3600")),
        tunnel("head, 3389", endpoint, "10.0.1.10", "3389", Some("3600")),
        tunnel("another IP", endpoint, "10.0.1.11", "22", Some("3600")),
        tunnel("another endpoint", other, "10.0.1.10", "22", Some("3600")),
        tunnel("no duration", endpoint, "10.0.1.10", "22", None),
        (
            "a key to the head node".to_string(),
            "ec2-instance-connect:SendSSHPublicKey",
            arn("instance", HEAD),
            serde_json::json!({ "ec2:osuser": "ec2-user" }),
        ),
        (
            "the head node's console".to_string(),
            "ec2:GetConsoleOutput",
            arn("instance", HEAD),
            serde_json::json!({ "aws:ResourceTag/parallelcluster:cluster-name": "demo" }),
        ),
        (
            "another instance's console".to_string(),
            "ec2:GetConsoleOutput",
            arn("instance", PROXY),
            serde_json::json!({ "aws:ResourceTag/parallelcluster:cluster-name": "demo" }),
        ),
        (
            "a rule on the head node's group".to_string(),
            "ec2:AuthorizeSecurityGroupIngress",
            arn("security-group", HEAD_GROUP),
            serde_json::json!({}),
        ),
        (
            "start an instance".to_string(),
            "ec2:StartInstances",
            arn("instance", HEAD),
            serde_json::json!({}),
        ),
    ];
    let principal = format!("arn:aws:iam::{ACCOUNT}:user/alice");
    let Some(d) = evaluate(std::slice::from_ref(&doc), &principal, &requests) else {
        return;
    };
    for allowed in [
        "head, 22, an hour",
        "head, 22, a minute",
        "the head node's console",
    ] {
        assert_eq!(d.is(allowed), "Allowed", "{allowed}");
    }
    for denied in [
        "head, 8443",
        "head, 3389",
        "another IP",
        "another endpoint",
        "no duration",
        "a key to the head node",
        "another instance's console",
        "a rule on the head node's group",
        "start an instance",
    ] {
        assert_ne!(d.is(denied), "missing", "{denied}");
        assert_ne!(d.is(denied), "Allowed", "{denied}");
    }
}

/// The operator's part of the endpoint path (`up --via eice`, `down`), judged by the evaluator:
/// it may create an endpoint, tag it and its rules as they are made, and make EC2 Instance
/// Connect's service-linked role; it may delete only an endpoint that carries bastion's cluster
/// tag (however it is spelled, as IAM compares tag keys), never someone else's; and it may not
/// make any other service's linked role.
#[test]
fn the_operator_deletes_only_the_endpoints_bastion_tagged() {
    let t = aws_target();
    let endpoint = arn("instance-connect-endpoint", "eice-0123456789abcdef0");
    let req = |name: &str, action: &'static str, resource: &str, context: serde_json::Value| {
        (name.to_string(), action, resource.to_string(), context)
    };
    let requests = vec![
        req(
            "create an endpoint",
            "ec2:CreateInstanceConnectEndpoint",
            &endpoint,
            serde_json::json!({}),
        ),
        req(
            "tag it as it is made",
            "ec2:CreateTags",
            &endpoint,
            serde_json::json!({ "ec2:CreateAction": "CreateInstanceConnectEndpoint" }),
        ),
        req(
            "tag an egress rule as it is made",
            "ec2:CreateTags",
            &arn("security-group-rule", "sgr-0123456789abcdef0"),
            serde_json::json!({ "ec2:CreateAction": "AuthorizeSecurityGroupEgress" }),
        ),
        req(
            "tag someone's endpoint later",
            "ec2:CreateTags",
            &endpoint,
            serde_json::json!({}),
        ),
        req(
            "delete bastion's endpoint",
            "ec2:DeleteInstanceConnectEndpoint",
            &endpoint,
            serde_json::json!({ "aws:ResourceTag/bastion:cluster": "demo" }),
        ),
        req(
            "delete bastion's endpoint, tag spelled otherwise",
            "ec2:DeleteInstanceConnectEndpoint",
            &endpoint,
            serde_json::json!({ "aws:ResourceTag/Bastion:Cluster": "demo" }),
        ),
        req(
            "delete an untagged endpoint",
            "ec2:DeleteInstanceConnectEndpoint",
            &endpoint,
            serde_json::json!({}),
        ),
        req(
            "Instance Connect's linked role",
            "iam:CreateServiceLinkedRole",
            &format!(
                "arn:aws:iam::{ACCOUNT}:role/aws-service-role/ec2-instance-connect.amazonaws.com/AWSServiceRoleForEC2InstanceConnect"
            ),
            serde_json::json!({ "iam:AWSServiceName": "ec2-instance-connect.amazonaws.com" }),
        ),
        req(
            "another service's linked role",
            "iam:CreateServiceLinkedRole",
            &format!(
                "arn:aws:iam::{ACCOUNT}:role/aws-service-role/elasticmapreduce.amazonaws.com/AWSServiceRoleForEMRCleanup"
            ),
            serde_json::json!({ "iam:AWSServiceName": "elasticmapreduce.amazonaws.com" }),
        ),
    ];
    let principal = format!("arn:aws:iam::{ACCOUNT}:user/operator");
    let Some(d) = evaluate(
        &[bastion::policy::operator_policy(&t, false).unwrap()],
        &principal,
        &requests,
    ) else {
        return;
    };
    for allowed in [
        "create an endpoint",
        "tag it as it is made",
        "tag an egress rule as it is made",
        "delete bastion's endpoint",
        "delete bastion's endpoint, tag spelled otherwise",
        "Instance Connect's linked role",
    ] {
        assert_eq!(d.is(allowed), "Allowed", "{allowed}");
    }
    for denied in [
        "tag someone's endpoint later",
        "delete an untagged endpoint",
        "another service's linked role",
    ] {
        assert_ne!(d.is(denied), "missing", "{denied}");
        assert_ne!(d.is(denied), "Allowed", "{denied}");
    }
    // An administrator's proxy role (`--instance-profile`): no IAM write, the linked role
    // included.
    let Some(pre) = evaluate(
        &[bastion::policy::operator_policy(&t, true).unwrap()],
        &principal,
        &requests,
    ) else {
        return;
    };
    assert_ne!(pre.is("Instance Connect's linked role"), "Allowed");
    assert_eq!(pre.is("delete bastion's endpoint"), "Allowed");
}
