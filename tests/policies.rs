//! The proxy's IAM documents, rendered for every partition: valid JSON, within IAM's size limits,
//! and clean under `parliament` (with the reviewed exceptions in policies/parliament.yaml).

mod common;

use std::process::{Command, Stdio};

use bastion::policy::{Target, inline_policies, operator_policy, trust_policy, user_policy};

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
            ("bastion-user", user_policy(&t).unwrap()),
            ("bastion-operator", operator_policy(&t).unwrap()),
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
fn accepted(finding: &serde_json::Value) -> bool {
    let file = finding["location"]["filepath"].as_str().unwrap_or_default();
    if !file.ends_with("-pcluster-user.json") {
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
            ("bastion-user", user_policy(&t).unwrap()),
            ("bastion-operator", operator_policy(&t).unwrap()),
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
