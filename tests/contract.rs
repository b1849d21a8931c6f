//! One scenario, run on both AWSs the suite relies on: the one held in memory that the unit tests
//! use (`aws::memory`) and the SDK adapter against moto. What each answers (names, tags, error
//! kinds and codes, never ids) must be the same, so the in-memory one cannot drift from what the
//! moto suite proves on the wire.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use bastion::aws::memory::{Memory, World};
use bastion::aws::sdk::SdkCloud;
use bastion::aws::{AwsError, AwsResult, Cloud, SecurityGroup, Source, Tag};
use common::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const DOC: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:DescribeInstances","Resource":"*"}]}"#;
const BOUNDARY: &str = "arn:aws:iam::aws:policy/PowerUserAccess";

/// An answer as the code above the seam acts on it: done, or the kind of error (with AWS's code
/// for a NotFound, which some callers tell apart).
fn outcome<T>(r: &AwsResult<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(AwsError::NotFound { code, .. }) => format!("not found ({code})"),
        Err(e) if e.is_dependency_violation() => "a dependent object exists".into(),
        Err(e) if e.is_already_exists() => "already exists".into(),
        Err(e) => format!("other: {e}"),
    }
}

/// The scenario: a tagged group and key pair, a rule naming the group, a role under bastion's
/// path with a policy and a profile, and their removal in an order AWS refuses, then in one it
/// takes. Returns what was seen, one line a step.
async fn scenario(cloud: &dyn Cloud, vpc: &str, head_sg: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let tags = [
        Tag::new("bastion:cluster", "contract"),
        Tag::new("Name", "c"),
    ];

    let sg = cloud
        .create_security_group("bastion-contract", "the contract's group", vpc, &tags)
        .await
        .unwrap();
    let groups = cloud
        .security_groups_by_tag("bastion:cluster", "contract")
        .await
        .unwrap();
    let mut described: Vec<String> = groups
        .iter()
        .map(|g| format!("group {} ({:?})", g.name, g.description))
        .collect();
    described.sort();
    seen.extend(described);
    let again = cloud
        .create_security_group("bastion-contract", "the contract's group", vpc, &tags)
        .await;
    seen.push(format!("the same group again: {}", outcome(&again)));

    let rules = cloud
        .authorize_ingress(head_sg, 22, &Source::Group(sg.clone()), "contract", &tags)
        .await
        .unwrap();
    seen.push(format!("rules added: {}", rules.len()));
    let tagged = cloud
        .rules_by_tag("bastion:cluster", "contract")
        .await
        .unwrap();
    seen.extend(tagged.iter().map(|r| {
        format!(
            "tagged rule on the head node's group: {}, naming the new group: {}",
            r.group_id == head_sg,
            r.referenced_group.as_deref() == Some(sg.as_str())
        )
    }));
    seen.push(format!(
        "revoke: {}",
        outcome(&cloud.revoke_ingress(head_sg, &rules).await)
    ));
    seen.push(format!(
        "revoke again: {}",
        outcome(&cloud.revoke_ingress(head_sg, &rules).await)
    ));
    seen.push(format!(
        "delete the group: {}",
        outcome(&cloud.delete_security_group(&sg).await)
    ));
    seen.push(format!(
        "delete it again: {}",
        outcome(&cloud.delete_security_group(&sg).await)
    ));

    cloud
        .import_key_pair("bastion-contract", KEY, &tags)
        .await
        .unwrap();
    let keys = cloud
        .key_pairs_by_tag("bastion:cluster", "contract")
        .await
        .unwrap();
    seen.extend(keys.iter().map(|k| format!("key pair {}", k.name)));
    seen.push(format!(
        "delete the key pair: {}",
        outcome(&cloud.delete_key_pair("bastion-contract").await)
    ));
    seen.push(format!(
        "delete it again: {}",
        outcome(&cloud.delete_key_pair("bastion-contract").await)
    ));

    cloud
        .create_role("bastion-contract", "/bastion/", TRUST, "d", BOUNDARY, &tags)
        .await
        .unwrap();
    cloud
        .put_role_policy("bastion-contract", "p", DOC)
        .await
        .unwrap();
    cloud
        .create_instance_profile("bastion-contract", "/bastion/", &tags)
        .await
        .unwrap();
    cloud
        .add_role_to_instance_profile("bastion-contract", "bastion-contract")
        .await
        .unwrap();
    let roles = |path: &'static str| async move {
        let roles = cloud.roles_under(path).await.unwrap();
        format!(
            "roles under {path}: {:?}, tagged {:?}",
            roles.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            roles
                .first()
                .and_then(|r| bastion::aws::tag_value(&r.tags, "bastion:cluster"))
                .map(str::to_string),
        )
    };
    seen.push(roles("/bastion/").await);
    seen.push(roles("/other/").await);
    // Profiles under bastion's path only: moto's ListInstanceProfiles ignores PathPrefix (it
    // answers every profile for "/other/" too), where IAM and the AWS in memory filter. The
    // sweep never relies on the filter alone: a profile must also carry bastion's name and tags.
    let profiles = cloud.instance_profiles_under("/bastion/").await.unwrap();
    seen.push(format!(
        "profiles under /bastion/: {:?}",
        profiles.iter().map(|p| p.name.clone()).collect::<Vec<_>>()
    ));
    seen.push(format!(
        "policies: {:?}",
        cloud.role_policies("bastion-contract").await.unwrap()
    ));
    seen.push(format!(
        "profile's roles: {:?}",
        cloud.profile_roles("bastion-contract").await.unwrap()
    ));
    seen.push(format!(
        "delete the role with its policy and profile: {}",
        outcome(&cloud.delete_role("bastion-contract").await)
    ));
    cloud
        .remove_role_from_instance_profile("bastion-contract", "bastion-contract")
        .await
        .unwrap();
    cloud
        .delete_role_policy("bastion-contract", "p")
        .await
        .unwrap();
    seen.push(format!(
        "delete the emptied role: {}",
        outcome(&cloud.delete_role("bastion-contract").await)
    ));
    seen.push(format!(
        "its policies now: {}",
        outcome(&cloud.role_policies("bastion-contract").await)
    ));
    seen.push(format!(
        "delete the profile: {}",
        outcome(&cloud.delete_instance_profile("bastion-contract").await)
    ));
    seen.push(format!(
        "its roles now: {}",
        outcome(&cloud.profile_roles("bastion-contract").await)
    ));
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_in_memory_answers_as_the_adapter_on_moto_does() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;

    bastion::install_crypto();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(&moto.url)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let on_moto = scenario(&SdkCloud::new(&config), &lab.vpc, &lab.head_sg).await;
    // The account as the lab left it, as far as the scenario reads it: the head node's group.
    let head_group = aws
        .ec2
        .describe_security_groups()
        .group_ids(&lab.head_sg)
        .send()
        .await
        .unwrap();
    let head_group = &head_group.security_groups()[0];
    let memory = Memory::new(World {
        groups: vec![SecurityGroup {
            id: lab.head_sg.clone(),
            name: head_group.group_name().unwrap_or_default().into(),
            description: head_group.description().map(str::to_string),
            vpc_id: Some(lab.vpc.clone()),
            ingress: Vec::new(),
            egress: Vec::new(),
            tags: Vec::new(),
        }],
        ..World::default()
    });
    let in_memory = scenario(&memory, &lab.vpc, &lab.head_sg).await;
    assert_eq!(
        in_memory,
        on_moto,
        "the AWS in memory answers otherwise than moto:\n{}",
        in_memory
            .iter()
            .zip(&on_moto)
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("  memory: {a}\n  moto:   {b}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(on_moto.len() > 20, "{on_moto:#?}");
}
