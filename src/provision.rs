//! Creating the proxy's resources, in order, each recorded in the ledger the moment it exists.
//! The plan (what to create, where) is decided before this runs; this module only executes it.

use std::time::Duration;

use crate::aws::fresh::on_fresh;
use crate::aws::{AwsError, Iam, IngressRule, Instances, LaunchSpec, Network, Source, Tag};
use crate::footprint::{Expected, Kinds, Names, TAG_CLUSTER, TAG_HEAD_NODE, TAG_OS, resource_tags};
use crate::ledger::{Ledger, Resource};
use crate::plan::Plan;
use crate::policy;
use crate::state::{BastionDir, generate_key};
use crate::ui::Progress;

/// How long RunInstances may keep failing on a new instance profile that IAM has not yet
/// propagated to EC2 (seconds on AWS, occasionally a minute or two).
const PROFILE_PROPAGATION_LIMIT: Duration = Duration::from_secs(180);

/// What was created, for the result and for the wait.
#[derive(Debug, Clone)]
pub struct Created {
    pub instance_id: String,
    pub security_group_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "another `bastion up` for cluster '{cluster}' is running, or an earlier one (on another \
         machine) was interrupted: key pair {key_pair} already exists. In AWS now: {}. Wait for \
         the other one, or run `bastion down --cluster {cluster}` to clear what is left",
        if found.is_empty() { "nothing else".to_string() } else { found.join(", ") }
    )]
    InProgress {
        cluster: String,
        key_pair: String,
        found: Vec<String>,
    },
    #[error(
        "the proxy's security group {group} does not hold the egress bastion set (it has: {seen}); \
         refusing to launch the proxy with it. Retry `bastion up`"
    )]
    EgressNotSet { group: String, seen: String },
}

/// Executes `plan`, recording each resource in `ledger` as soon as it exists.
pub async fn create(
    cloud: &(impl Instances + Network + Iam + ?Sized),
    plan: &Plan,
    run_id: &str,
    dir: &BastionDir,
    ledger: &mut Ledger,
    attempted: &mut Kinds,
    progress: &Progress,
) -> anyhow::Result<Created> {
    let names = Names::new(&plan.cluster, &plan.region);
    let tags = |name: &str| resource_tags(&plan.cluster, run_id, &plan.region, name);

    progress.phase("generating the proxy's SSH key");
    // Recorded before the files exist: a write that fails halfway (the private key written,
    // not the public one) still leaves the rollback a path to remove; a missing file counts
    // as removed.
    ledger.record(Resource::LocalKey {
        path: dir.private_key(),
    })?;
    let public_key = generate_key(
        &dir.private_key(),
        &dir.public_key(),
        &format!("bastion:{}@{}", plan.cluster, plan.region),
    )?;

    progress.phase(format!("importing key pair {}", names.key_pair));
    attempted.key_pairs = true;
    let key_id = match cloud
        .import_key_pair(&names.key_pair, &public_key, &tags(&names.key_pair))
        .await
    {
        Err(e) if e.is_already_exists() => {
            let owner = Expected::new(&plan.cluster, &plan.region, &plan.account, None);
            let found = crate::footprint::inventory(cloud, &owner)
                .await
                .unwrap_or_else(|e| vec![format!("(could not list: {e})")]);
            return Err(ProvisionError::InProgress {
                cluster: plan.cluster.clone(),
                key_pair: names.key_pair.clone(),
                found,
            }
            .into());
        }
        other => other?,
    };
    ledger.record(Resource::KeyPair {
        name: names.key_pair.clone(),
        id: key_id,
    })?;
    progress.note(format!("created key pair {}", names.key_pair));

    progress.phase(format!("creating security group {}", names.security_group));
    attempted.groups = true;
    let sg = cloud
        .create_security_group(
            &names.security_group,
            &names.security_group_description,
            &plan.vpc_id,
            &tags(&names.security_group),
        )
        .await?;
    ledger.record(Resource::SecurityGroup { id: sg.clone() })?;
    progress.note(format!("created security group {sg}"));

    // Egress: HTTPS and HTTP for packages and AWS APIs; SSH only into the VPC (DCV rides the
    // head node's SSH session).
    let mut egress = vec![
        (443, "0.0.0.0/0".to_string()),
        (80, "0.0.0.0/0".to_string()),
    ];
    for cidr in &plan.vpc_cidrs {
        egress.push((22, cidr.clone()));
    }
    // The new group may not be visible yet (InvalidGroup.NotFound): retried, then read back,
    // so allow-all egress can never stay behind a "not found" taken for "already revoked".
    attempted.rules = true;
    let new_group = format!("the new security group {sg}");
    on_fresh(&new_group, || cloud.set_egress(&sg, &egress)).await?;
    verify_egress(cloud, &sg, &egress).await?;
    let group_tags = tags(&names.security_group);
    for cidr in &plan.allow_cidrs {
        let by = crate::access::Admitter::Up { tags: &group_tags };
        on_fresh(&new_group, || crate::access::admit(cloud, &sg, *cidr, by)).await?;
    }

    if let Some(head_group) = &plan.head_node_group {
        for &port in &plan.head_node_ports {
            progress.phase(format!(
                "allowing tcp {port} from the proxy on {head_group}"
            ));
            // Tagged with this run: a lost response still leaves a rule the run's sweep finds.
            let (source, description, rule_tags) = (
                Source::Group(sg.clone()),
                format!("bastion proxy of cluster {}", plan.cluster),
                tags(&format!("bastion-{}-{port}", plan.cluster)),
            );
            let rule_ids = on_fresh(&new_group, || {
                cloud.authorize_ingress(head_group, port, &source, &description, &rule_tags)
            })
            .await?;
            ledger.record(Resource::IngressRule {
                group_id: head_group.clone(),
                rule_ids: rule_ids.clone(),
                port,
            })?;
            progress.note(format!("added ingress rule tcp {port} on {head_group}"));
        }
    }

    let profile_arn = match &plan.provided_profile {
        Some(name) => {
            let profile = cloud.instance_profile(name).await?;
            progress.note(format!(
                "using the administrator's instance profile {name} (nothing of IAM is created)"
            ));
            profile.map(|p| p.arn).unwrap_or_default()
        }
        None => {
            let iam_tags = tags(&names.role);
            create_role_and_profile(cloud, plan, &iam_tags, ledger, attempted, progress).await?
        }
    };

    let mut instance_tags = tags(&names.instance);
    instance_tags.extend([
        Tag::new(TAG_OS, &plan.os),
        Tag::new(TAG_HEAD_NODE, &plan.head_node),
        Tag::new("bastion:dcv", if plan.dcv { "on" } else { "off" }),
    ]);
    debug_assert!(instance_tags.iter().any(|t| t.key == TAG_CLUSTER));
    let spec = LaunchSpec {
        root_device_name: plan.root_device_name.clone(),
        ami: plan.ami.clone(),
        instance_type: plan.instance_type.clone(),
        subnet_id: plan.subnet_id.clone(),
        security_group_id: sg.clone(),
        key_name: names.key_pair.clone(),
        instance_profile_arn: profile_arn,
        root_volume_gib: plan.root_volume_gib,
        user_data: plan.user_data.clone(),
        tags: instance_tags,
    };
    progress.phase(format!(
        "launching the proxy ({}, {})",
        plan.instance_type, plan.ami
    ));
    attempted.instances = true;
    let instance_id = run_with_propagation_retry(cloud, &spec, progress).await?;
    ledger.record(Resource::Instance {
        id: instance_id.clone(),
    })?;
    progress.note(format!("launched instance {instance_id}"));
    Ok(Created {
        instance_id,
        security_group_id: sg,
    })
}

/// Reads the group's egress back: exactly `expected` (tcp, one port, one CIDR each), and no
/// other rule (an allow-all one above all). A describe may lag the writes, so a mismatch is read
/// again a few times.
pub(crate) async fn verify_egress(
    cloud: &(impl Network + ?Sized),
    sg: &str,
    expected: &[(i32, String)],
) -> anyhow::Result<()> {
    let mut want = expected.to_vec();
    want.sort();
    // A rule of that shape as (port, cidr); any other rule is None, and so a mismatch.
    let as_expected =
        |r: &IngressRule| match (r.protocol.as_str(), r.from_port, r.to_port, &r.source) {
            ("tcp", Some(from), Some(to), Source::Cidr(c)) if from == to => Some((from, c.clone())),
            _ => None,
        };
    let ids = [sg.to_string()];
    let mut seen = Vec::new();
    for attempt in 0..6u32 {
        let groups = on_fresh(&format!("the new security group {sg}"), || {
            cloud.security_groups(&ids)
        })
        .await?;
        seen = groups
            .into_iter()
            .flat_map(|g| g.egress)
            .collect::<Vec<_>>();
        let pairs: Option<Vec<(i32, String)>> = seen.iter().map(as_expected).collect();
        if let Some(mut pairs) = pairs {
            pairs.sort();
            if pairs == want {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
    }
    Err(ProvisionError::EgressNotSet {
        group: sg.into(),
        seen: seen
            .iter()
            .map(|r| {
                format!(
                    "{} {:?}-{:?} {:?}",
                    r.protocol, r.from_port, r.to_port, r.source
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
    .into())
}

async fn run_with_propagation_retry(
    cloud: &(impl Instances + ?Sized),
    spec: &LaunchSpec,
    progress: &Progress,
) -> anyhow::Result<String> {
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_secs(2);
    loop {
        match cloud.run_instance(spec).await {
            Err(AwsError::ProfileNotPropagated { .. })
                if start.elapsed() < PROFILE_PROPAGATION_LIMIT =>
            {
                progress.phase("waiting for IAM to propagate the new instance profile");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
            other => return Ok(other?),
        }
    }
}

/// The proxy's role (bounded by the administrator's boundary, with its policies) and instance
/// profile, each recorded in the ledger as it comes to exist; returns the profile's ARN.
async fn create_role_and_profile(
    cloud: &(impl Iam + ?Sized),
    plan: &Plan,
    iam_tags: &[Tag],
    ledger: &mut Ledger,
    attempted: &mut Kinds,
    progress: &Progress,
) -> anyhow::Result<String> {
    let names = Names::new(&plan.cluster, &plan.region);
    let target = policy::Target {
        partition: &plan.partition,
        account: &plan.account,
        region: &plan.region,
    };
    progress.phase(format!("creating IAM role {}", names.role));
    attempted.iam = true;
    cloud
        .create_role(
            &names.role,
            crate::footprint::IAM_PATH,
            &policy::trust_policy(&target)?,
            &format!(
                "bastion proxy of ParallelCluster cluster {} in {}",
                plan.cluster, plan.region
            ),
            &plan.boundary,
            iam_tags,
        )
        .await?;
    ledger.record(Resource::Role {
        name: names.role.clone(),
    })?;
    let new_role = format!("the new IAM role {}", names.role);
    for p in policy::inline_policies(&target, plan.pcluster_policy)? {
        on_fresh(&new_role, || {
            cloud.put_role_policy(&names.role, p.name, &p.document)
        })
        .await?;
        ledger.record(Resource::InlinePolicy {
            role: names.role.clone(),
            name: p.name.to_string(),
        })?;
    }
    let ssm_core = target.ssm_core_policy_arn();
    on_fresh(&new_role, || {
        cloud.attach_role_policy(&names.role, &ssm_core)
    })
    .await?;
    ledger.record(Resource::AttachedPolicy {
        role: names.role.clone(),
        arn: ssm_core,
    })?;
    progress.note(format!("created IAM role {} with its policies", names.role));

    progress.phase(format!(
        "creating instance profile {}",
        names.instance_profile
    ));
    let profile_arn = cloud
        .create_instance_profile(
            &names.instance_profile,
            crate::footprint::IAM_PATH,
            iam_tags,
        )
        .await?;
    ledger.record(Resource::InstanceProfile {
        name: names.instance_profile.clone(),
        arn: profile_arn.clone(),
    })?;
    on_fresh(
        &format!("the new instance profile {}", names.instance_profile),
        || cloud.add_role_to_instance_profile(&names.instance_profile, &names.role),
    )
    .await?;
    ledger.record(Resource::RoleInProfile {
        profile: names.instance_profile.clone(),
        role: names.role.clone(),
    })?;
    progress.note(format!(
        "created instance profile {}",
        names.instance_profile
    ));
    Ok(profile_arn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::SecurityGroup;
    use crate::aws::memory::{ACCOUNT, Memory, REGION, World};

    fn plan(head_group: &str) -> Plan {
        let names = Names::new("demo", REGION);
        Plan {
            cluster: "demo".into(),
            region: REGION.into(),
            account: ACCOUNT.into(),
            partition: "aws".into(),
            head_node: "i-0000000000000000a".into(),
            head_node_private_ip: Some("10.0.1.10".into()),
            vpc_id: "vpc-0000000a".into(),
            vpc_cidrs: vec!["10.0.0.0/16".into()],
            subnet_id: "subnet-0000000a".into(),
            availability_zone: "eu-west-1a".into(),
            os: "al2023".into(),
            ami: "ami-0000000a".into(),
            root_device_name: "/dev/xvda".into(),
            instance_type: "t3.medium".into(),
            root_volume_gib: 40,
            pcluster_version: "3.13.0".into(),
            allow_cidrs: vec!["198.51.100.7/32".parse().unwrap()],
            idle_stop_minutes: 60,
            dcv: true,
            pcluster_policy: true,
            head_node_group: Some(head_group.into()),
            head_node_ports: vec![22],
            key_pair: names.key_pair.clone(),
            security_group: names.security_group.clone(),
            role: names.role.clone(),
            instance_profile: names.instance_profile.clone(),
            provided_profile: None,
            boundary: format!("arn:aws:iam::{ACCOUNT}:policy/bastion-boundary"),
            tags: Vec::new(),
            user_data: "#!/bin/sh\n".into(),
        }
    }

    /// The verb of each write that creates or removes one thing, in order.
    fn verbs(writes: &[String]) -> Vec<String> {
        writes
            .iter()
            .map(|w| w.split(' ').next().unwrap_or_default().to_string())
            .filter(|v| v != "set_egress" && v != "send_ssh_public_key")
            .collect()
    }

    /// What a rollback removes, and in which order, is the creation read backwards: each
    /// removal undoes the creation at the same place from the end, and nothing stays.
    #[tokio::test(start_paused = true)]
    async fn a_rollback_undoes_each_creation_in_reverse_and_leaves_nothing() {
        let head = SecurityGroup {
            id: "sg-0000000a".into(),
            name: "head".into(),
            description: None,
            vpc_id: Some("vpc-0000000a".into()),
            ingress: Vec::new(),
            egress: Vec::new(),
            tags: Vec::new(),
        };
        let cloud = Memory::new(World {
            groups: vec![head],
            ..World::default()
        });
        let plan = plan("sg-0000000a");
        let tmp = tempfile::tempdir().unwrap();
        let dir = BastionDir::new(tmp.path(), ACCOUNT, REGION, "demo");
        dir.ensure().unwrap();
        let mut ledger = Ledger::new(dir.ledger(), "demo", REGION, ACCOUNT);
        let mut attempted = Kinds::default();
        let progress = Progress::hidden();
        create(
            &cloud,
            &plan,
            "run-1",
            &dir,
            &mut ledger,
            &mut attempted,
            &progress,
        )
        .await
        .unwrap();
        let made = verbs(&cloud.world().writes);
        assert!(made.iter().any(|v| v == "run_instance"), "{made:?}");

        let report = crate::teardown::teardown_ledger(&cloud, &mut ledger, &progress).await;
        assert_eq!(report.failed(), Vec::<String>::new());
        let all = verbs(&cloud.world().writes);
        let undone: Vec<String> = all[made.len()..].to_vec();
        // Each creation's undoing, read from the end.
        let undo = |v: &str| -> &'static str {
            match v {
                "import_key_pair" => "delete_key_pair",
                "create_security_group" => "delete_security_group",
                "authorize_ingress" => "revoke_ingress",
                "create_role" => "delete_role",
                "put_role_policy" => "delete_role_policy",
                "attach_role_policy" => "detach_role_policy",
                "create_instance_profile" => "delete_instance_profile",
                "add_role_to_instance_profile" => "remove_role_from_instance_profile",
                "run_instance" => "terminate_instance",
                other => panic!("an unexpected write {other}"),
            }
        };
        // A rule on the proxy's own group goes with its group; only the head node's is revoked.
        let expected: Vec<String> = made.iter().rev().map(|v| undo(v).to_string()).collect();
        let own_rules = made.iter().filter(|v| *v == "authorize_ingress").count() - 1;
        let mut expected_without_own = expected.clone();
        for _ in 0..own_rules {
            let last = expected_without_own
                .iter()
                .rposition(|v| v == "revoke_ingress")
                .unwrap();
            expected_without_own.remove(last);
        }
        assert_eq!(undone, expected_without_own, "made: {made:?}");

        let world = cloud.world();
        assert_eq!(world.groups.len(), 1, "only the head node's group stays");
        assert!(world.rules.is_empty());
        assert!(world.key_pairs.is_empty());
        assert!(world.roles.is_empty());
        assert!(world.profiles.is_empty());
        assert!(world.instances.iter().all(|i| i.state == "terminated"));
        assert!(!dir.private_key().exists());
    }
}
