//! `up --via eice`: the VPC's EC2 Instance Connect Endpoint made ready for one cluster. AWS
//! allows one endpoint per VPC, so clusters of a VPC share it:
//!
//! - none yet: bastion makes one in the head node's subnet (or `--subnet`), with a security group
//!   of its own that lets out tcp 22 to the head node's group and nothing else;
//! - bastion's (its one group is bastion's endpoint group): the group gets one more egress rule,
//!   to this cluster's head node group;
//! - someone else's: nothing of theirs is changed. Its groups must already let tcp 22 out to the
//!   head node, else the rule to add is named and `up` stops.
//!
//! In every case the head node's group gets one rule admitting tcp 22 from the endpoint's group
//! (unless a rule already admits it). Each resource is recorded in the ledger the moment it
//! exists, tagged with the cluster and the run, so a failure or Ctrl-C removes exactly what this
//! run made; `down` removes the endpoint with the last cluster it serves.

use std::time::Duration;

use serde::Serialize;

use super::{EiceError, Endpoint, State};
use crate::aws::fresh::on_fresh;
use crate::aws::{AwsError, ConnectEndpointSpec, Network, SecurityGroup, Source, Tag};
use crate::cluster::{HeadNode, admits_from, main_group};
use crate::footprint::{
    endpoint_group_description, endpoint_group_name, owns_endpoint_group, resource_tags,
};
use crate::ledger::{Ledger, Resource};
use crate::ui::Progress;

/// The port an endpoint carries to the head node.
const SSH: i32 = 22;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "the head node {instance} of cluster '{cluster}' has no security group to add the endpoint's rule to"
    )]
    NoHeadGroup { cluster: String, instance: String },
    #[error(
        "the subnet {subnet} is not in the head node's VPC {vpc} (an endpoint reaches only its own VPC); \
         give --subnet a subnet of {vpc}, or leave it out for the head node's own"
    )]
    WrongSubnet { subnet: String, vpc: String },
    #[error(
        "the EC2 Instance Connect Endpoint {endpoint} of {vpc} was not made by bastion, and none of its \
         security groups ({groups}) lets tcp 22 out to the head node's group {head_group}. bastion \
         changes nothing of it: whoever manages it can add the rule with\n  aws ec2 \
         authorize-security-group-egress --group-id {group} --ip-permissions \
         'IpProtocol=tcp,FromPort=22,ToPort=22,UserIdGroupPairs=[{{GroupId={head_group}}}]'\n\
         then run `bastion up --cluster {cluster} --via eice` again"
    )]
    ForeignEgress {
        cluster: String,
        vpc: String,
        endpoint: String,
        groups: String,
        group: String,
        head_group: String,
    },
    #[error(
        "AWS refused the EC2 Instance Connect Endpoint in {subnet}: {code}: {message}\n{advice}",
        message = crate::ui::printable(message)
    )]
    Refused {
        subnet: String,
        code: String,
        message: String,
        advice: &'static str,
    },
    #[error(
        "the security group {name} already exists in {vpc}, but no endpoint of bastion's uses it: \
         another `bastion up --via eice` in this VPC is running, or one was interrupted. Wait for \
         it, or run `bastion down` for the cluster it was for"
    )]
    GroupTaken { name: String, vpc: String },
    #[error(
        "the EC2 Instance Connect Endpoint {endpoint} is {state}{}",
        message.as_deref().map(|m| format!(": {}", crate::ui::printable(m))).unwrap_or_default()
    )]
    Failed {
        endpoint: String,
        state: String,
        message: Option<String>,
    },
    #[error(
        "the EC2 Instance Connect Endpoint {endpoint} was still {state} after {minutes} minutes; \
         retry with a longer --timeout"
    )]
    Timeout {
        endpoint: String,
        state: String,
        minutes: u64,
    },
}
impl crate::exit::ExitStatus for SetupError {
    fn exit_status(&self) -> Option<u8> {
        match self {
            SetupError::WrongSubnet { .. } => Some(crate::exit::INVALID),
            _ => Some(crate::exit::FAILED),
        }
    }
}

/// What `up --via eice` asks for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub head: &'a HeadNode,
    /// Where a new endpoint goes (default: the head node's subnet).
    pub subnet: Option<&'a str>,
    pub run_id: &'a str,
    pub region: &'a str,
    /// How long to wait for `create-complete`; None: not at all (`--no-wait`).
    pub timeout: Option<Duration>,
}

/// The endpoint `up --via eice` left ready, for its result.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    pub endpoint_id: String,
    pub state: String,
    pub subnet_id: String,
    pub security_group_ids: Vec<String>,
    /// This run made the endpoint.
    pub created: bool,
    /// bastion made it (this run or an earlier one, for this cluster or another of the VPC).
    pub bastions: bool,
    /// Seconds from the create call to `create-complete` (a new endpoint only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_after_seconds: Option<u64>,
    /// The rules this run added, as the ledger describes them.
    pub rules: Vec<String>,
}

/// Makes the VPC's endpoint ready for `req.head`'s cluster, recording each resource in
/// `ledger` as it comes to exist.
pub async fn ensure(
    cloud: &(impl Network + ?Sized),
    req: &Request<'_>,
    ledger: &mut Ledger,
    progress: &Progress,
) -> anyhow::Result<Ready> {
    let head = req.head;
    let cluster = head.cluster.as_str();
    let tags = |name: &str| resource_tags(cluster, req.run_id, req.region, name);
    progress.phase(format!(
        "looking for the EC2 Instance Connect Endpoint of {}",
        head.vpc_id
    ));
    let head_groups = cloud
        .security_groups(&head.instance.security_group_ids)
        .await?;
    let head_group = main_group(&head_groups)
        .map(|g| g.id.clone())
        .ok_or_else(|| SetupError::NoHeadGroup {
            cluster: cluster.into(),
            instance: head.instance.id.clone(),
        })?;
    let existing = super::list(cloud, Some(&head.vpc_id)).await?;
    let mut rules = Vec::new();
    let (endpoint, created, bastions, group) = match existing.into_iter().next() {
        Some(e) => {
            let groups = cloud.security_groups(&e.security_group_ids).await?;
            let bastions = groups.len() == 1 && owns_endpoint_group(&groups[0]);
            if bastions {
                let group = &groups[0];
                if !lets_out(std::slice::from_ref(group), &head_group, None) {
                    let rule = add_egress(cloud, &group.id, &head_group, cluster, &tags).await?;
                    rules.push(rule.describe());
                    ledger.record(rule)?;
                } else {
                    // Another cluster's head node has the same group (a shared custom group):
                    // EC2 keeps one rule per group, and it is that cluster's.
                    tracing::warn!(
                        "the endpoint's group {} already lets tcp 22 out to {head_group}, which \
                         another cluster's head node shares: bastion set that rule up for the \
                         other cluster, and its `bastion down` removes it (and the endpoint, if \
                         no cluster is left). Run `bastion up --cluster {cluster} --via eice` \
                         again after it",
                        group.id
                    );
                }
            } else {
                if !lets_out(&groups, &head_group, head.ipv4()) {
                    return Err(SetupError::ForeignEgress {
                        cluster: cluster.into(),
                        vpc: head.vpc_id.clone(),
                        endpoint: e.id.clone(),
                        groups: e.security_group_ids.join(", "),
                        group: e.security_group_ids.first().cloned().unwrap_or_default(),
                        head_group,
                    }
                    .into());
                }
                ledger.record(Resource::FoundEndpoint { id: e.id.clone() })?;
                progress.note(format!(
                    "using the EC2 Instance Connect Endpoint {} (not made by bastion: nothing of it is changed)",
                    e.id
                ));
            }
            let group = e.security_group_ids.first().cloned().unwrap_or_default();
            (e, false, bastions, group)
        }
        None => {
            let (e, group) =
                create(cloud, req, &head_group, ledger, &mut rules, &tags, progress).await?;
            (e, true, true, group)
        }
    };

    // The head node admits tcp 22 from the endpoint's group, unless a rule already does.
    let subnet_cidr = match cloud.subnet(&endpoint.subnet_id).await? {
        Some(s) => s.cidr,
        None => String::new(),
    };
    if !group.is_empty() && !admits_from(&head_groups, SSH, &subnet_cidr, Some(&group)) {
        progress.phase(format!(
            "allowing tcp 22 from the endpoint's group on {head_group}"
        ));
        let (source, description, rule_tags) = (
            Source::Group(group.clone()),
            format!("bastion EC2 Instance Connect Endpoint, cluster {cluster}"),
            tags(&format!("bastion-{cluster}-eice-22")),
        );
        let rule_ids = on_fresh(&format!("the security group {group}"), || {
            cloud.authorize_ingress(&head_group, SSH, &source, &description, &rule_tags)
        })
        .await?;
        let rule = Resource::IngressRule {
            group_id: head_group.clone(),
            rule_ids,
            port: SSH,
        };
        rules.push(rule.describe());
        ledger.record(rule)?;
        progress.note(format!("added ingress rule tcp 22 on {head_group}"));
    }

    let started = tokio::time::Instant::now();
    let (endpoint, ready_after_seconds) = match req.timeout {
        Some(timeout) => {
            let ready = wait_ready(cloud, &endpoint, timeout, progress).await?;
            (ready, created.then(|| started.elapsed().as_secs()))
        }
        None => (endpoint, None),
    };
    Ok(Ready {
        endpoint_id: endpoint.id,
        state: endpoint.state.as_str().into(),
        subnet_id: endpoint.subnet_id,
        security_group_ids: endpoint.security_group_ids,
        created,
        bastions,
        ready_after_seconds,
        rules,
    })
}

/// A new endpoint of bastion's: its group (egress to nothing, then tcp 22 to the head node's
/// group), the endpoint in the subnet, each recorded as it exists. Returns it and its group.
async fn create(
    cloud: &(impl Network + ?Sized),
    req: &Request<'_>,
    head_group: &str,
    ledger: &mut Ledger,
    rules: &mut Vec<String>,
    tags: &impl Fn(&str) -> Vec<Tag>,
    progress: &Progress,
) -> anyhow::Result<(Endpoint, String)> {
    let head = req.head;
    let vpc = head.vpc_id.as_str();
    let subnet = req.subnet.unwrap_or(&head.subnet_id).to_string();
    if req.subnet.is_some() {
        let found = cloud.subnet(&subnet).await?;
        if found.as_ref().is_none_or(|s| s.vpc_id != vpc) {
            return Err(SetupError::WrongSubnet {
                subnet,
                vpc: vpc.into(),
            }
            .into());
        }
    }
    let name = endpoint_group_name(vpc);
    progress.phase(format!("creating security group {name}"));
    let group = match cloud
        .create_security_group(&name, &endpoint_group_description(vpc), vpc, &tags(&name))
        .await
    {
        Err(e) if e.is_already_exists() => {
            return Err(SetupError::GroupTaken {
                name,
                vpc: vpc.into(),
            }
            .into());
        }
        other => other?,
    };
    ledger.record(Resource::EndpointGroup { id: group.clone() })?;
    progress.note(format!("created security group {group}"));
    // Nothing out but what the rules below add: the default allow-all egress goes, and is read
    // back gone.
    let new_group = format!("the new security group {group}");
    on_fresh(&new_group, || cloud.set_egress(&group, &[])).await?;
    crate::provision::verify_egress(cloud, &group, &[]).await?;

    progress.phase(format!(
        "creating the EC2 Instance Connect Endpoint in {subnet}"
    ));
    let spec = ConnectEndpointSpec {
        subnet_id: subnet.clone(),
        security_group_ids: vec![group.clone()],
        tags: tags(&name),
        client_token: format!("bastion-{}", req.run_id),
    };
    let raw = match on_fresh(&new_group, || cloud.create_instance_connect_endpoint(&spec)).await {
        Err(AwsError::Service { code, message, .. }) => {
            return Err(refused(subnet, code, message).into());
        }
        other => other?,
    };
    let endpoint = Endpoint::parse(raw)?;
    ledger.record(Resource::InstanceConnectEndpoint {
        id: endpoint.id.clone(),
        group_id: group.clone(),
    })?;
    progress.note(format!(
        "created EC2 Instance Connect Endpoint {}",
        endpoint.id
    ));

    let rule = add_egress(cloud, &group, head_group, &head.cluster, tags).await?;
    rules.push(rule.describe());
    ledger.record(rule)?;
    Ok((endpoint, group))
}

/// AWS's refusal of a new endpoint, with what to do.
fn refused(subnet: String, code: String, message: String) -> SetupError {
    let advice = if code.contains("LimitExceeded") || code.contains("Quota") {
        "An account has a quota of endpoints per Region and a VPC at most one: reuse the VPC's \
         endpoint (`bastion status`), remove one you no longer need, or ask for a higher quota \
         (Service Quotas, Amazon EC2)"
    } else {
        "Check the subnet (--subnet) and the security group, then run `bastion up` again"
    };
    SetupError::Refused {
        subnet,
        code,
        message,
        advice,
    }
}

/// One egress rule on the endpoint's group: tcp 22 out to the head node's group, tagged with the
/// cluster and the run.
async fn add_egress(
    cloud: &(impl Network + ?Sized),
    group: &str,
    head_group: &str,
    cluster: &str,
    tags: &impl Fn(&str) -> Vec<Tag>,
) -> anyhow::Result<Resource> {
    let (target, description, rule_tags) = (
        Source::Group(head_group.into()),
        format!("bastion: SSH to the head node of cluster {cluster}"),
        tags(&format!("bastion-{cluster}-eice-out-22")),
    );
    let rule_ids = on_fresh(&format!("the security group {group}"), || {
        cloud.authorize_egress(group, SSH, &target, &description, &rule_tags)
    })
    .await?;
    Ok(Resource::EgressRule {
        group_id: group.into(),
        rule_ids,
        port: SSH,
    })
}

/// Whether one of `groups` lets tcp 22 out to the head node: to its group, or (where its IP is
/// known) to a block that holds it.
fn lets_out(groups: &[SecurityGroup], head_group: &str, ip: Option<std::net::Ipv4Addr>) -> bool {
    groups.iter().flat_map(|g| &g.egress).any(|r| {
        r.covers_tcp_port(SSH)
            && match &r.source {
                Source::Group(g) => g == head_group,
                Source::Cidr(c) => match (c.parse::<ipnet::Ipv4Net>(), ip) {
                    (Ok(net), Some(ip)) => net.contains(&ip),
                    _ => false,
                },
                Source::PrefixList(_) => false,
            }
    })
}

/// Waits for `create-complete`, with progress; a failed create is an error with AWS's reason.
async fn wait_ready(
    cloud: &(impl Network + ?Sized),
    endpoint: &Endpoint,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<Endpoint> {
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_secs(2);
    let mut current = endpoint.clone();
    loop {
        match current.state {
            s if s.usable() => return Ok(current),
            State::CreateInProgress => {}
            _ => {
                return Err(SetupError::Failed {
                    endpoint: current.id,
                    state: current.state.as_str().into(),
                    message: current.state_message,
                }
                .into());
            }
        }
        let waited = start.elapsed();
        if waited > timeout {
            return Err(SetupError::Timeout {
                endpoint: current.id,
                state: current.state.as_str().into(),
                minutes: timeout.as_secs() / 60,
            }
            .into());
        }
        progress.phase(format!(
            "waiting for the EC2 Instance Connect Endpoint {} ({}, {}s; AWS takes a few minutes)",
            endpoint.id,
            current.state.as_str(),
            waited.as_secs()
        ));
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
        let listed = cloud
            .instance_connect_endpoints(Some(&endpoint.vpc_id))
            .await
            .map_err(|source| EiceError::Aws {
                vpc: endpoint.vpc_id.clone(),
                source,
            })?;
        current = match listed.into_iter().find(|e| e.id == endpoint.id) {
            Some(raw) => Endpoint::parse(raw)?,
            None => Endpoint {
                state: State::CreateInProgress,
                ..endpoint.clone()
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::memory::{ACCOUNT, Memory, REGION, World};
    use crate::aws::{Instance, SecurityGroup};
    use crate::teardown::teardown_ledger;

    const VPC: &str = "vpc-0000000a";

    fn group(id: &str) -> SecurityGroup {
        SecurityGroup {
            id: id.into(),
            name: format!("head-{id}"),
            description: None,
            vpc_id: Some(VPC.into()),
            ingress: Vec::new(),
            egress: Vec::new(),
            tags: Vec::new(),
        }
    }

    fn head(cluster: &str, id: &str, group: &str) -> HeadNode {
        HeadNode {
            cluster: cluster.into(),
            instance: Instance {
                id: id.into(),
                state: "running".into(),
                subnet_id: Some("subnet-0000000a".into()),
                vpc_id: Some(VPC.into()),
                availability_zone: None,
                private_ip: Some("10.0.1.10".into()),
                public_ip: None,
                instance_type: None,
                architecture: None,
                launch_time: None,
                security_group_ids: vec![group.into()],
                key_name: None,
                instance_profile_arn: None,
                tags: Vec::new(),
            },
            vpc_id: VPC.into(),
            subnet_id: "subnet-0000000a".into(),
            availability_zone: None,
            os: None,
            pcluster_version: None,
            architecture: "x86_64".into(),
        }
    }

    async fn up(cloud: &Memory, head: &HeadNode, dir: &std::path::Path) -> (Ready, Ledger) {
        let mut ledger = Ledger::new(
            dir.join(format!("{}.json", head.cluster)),
            &head.cluster,
            REGION,
            ACCOUNT,
        );
        let req = Request {
            head,
            subnet: None,
            run_id: "run-1",
            region: REGION,
            timeout: Some(Duration::from_secs(60)),
        };
        let ready = ensure(cloud, &req, &mut ledger, &Progress::hidden())
            .await
            .unwrap();
        (ready, ledger)
    }

    fn live(world: &World) -> Vec<String> {
        world
            .connect_endpoints
            .iter()
            .filter(|e| e.state != "delete-complete")
            .map(|e| e.id.clone())
            .collect()
    }

    /// Two clusters of one VPC share the endpoint bastion made for the first: each gets its own
    /// egress rule and ingress rule; the first `down` removes its rules and keeps the endpoint
    /// and its group for the second (and says so); the second `down` removes them. Only the
    /// head nodes' groups stay.
    #[tokio::test(start_paused = true)]
    async fn clusters_of_one_vpc_share_the_endpoint_and_the_last_takes_it_along() {
        let cloud = Memory::new(World {
            groups: vec![group("sg-000000a1"), group("sg-000000b1")],
            ..World::default()
        });
        let tmp = tempfile::tempdir().unwrap();
        let a = head("alpha", "i-0000000000000000a", "sg-000000a1");
        let b = head("beta", "i-0000000000000000b", "sg-000000b1");

        let (ready_a, mut ledger_a) = up(&cloud, &a, tmp.path()).await;
        assert!(ready_a.created && ready_a.bastions, "{ready_a:?}");
        let (ready_b, mut ledger_b) = up(&cloud, &b, tmp.path()).await;
        assert!(!ready_b.created && ready_b.bastions, "{ready_b:?}");
        assert_eq!(ready_a.endpoint_id, ready_b.endpoint_id);
        assert_eq!(
            live(&cloud.world()),
            std::slice::from_ref(&ready_a.endpoint_id)
        );
        let kinds: Vec<_> = ledger_b
            .resources()
            .iter()
            .map(|r| r.describe().split(' ').next().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["egress", "ingress"], "{:?}", ledger_b.resources());
        let endpoint_group = ready_a.security_group_ids[0].clone();
        let users = |w: &World| {
            w.rules
                .iter()
                .filter(|r| r.rule.egress && r.rule.group_id == endpoint_group)
                .count()
        };
        assert_eq!(users(&cloud.world()), 2);

        // The first cluster's down: its two rules go, the endpoint and its group stay.
        let report = teardown_ledger(&cloud, &mut ledger_a, &Progress::hidden()).await;
        assert_eq!(report.failed(), Vec::<String>::new());
        assert_eq!(
            live(&cloud.world()),
            std::slice::from_ref(&ready_a.endpoint_id)
        );
        assert_eq!(users(&cloud.world()), 1);
        assert!(
            report.kept.iter().any(|k| k.contains(&ready_a.endpoint_id)),
            "{:?}",
            report.kept
        );
        assert!(
            ledger_a.resources().is_empty(),
            "{:?}",
            ledger_a.resources()
        );

        // The second's: everything bastion made is gone.
        let report = teardown_ledger(&cloud, &mut ledger_b, &Progress::hidden()).await;
        assert_eq!(report.failed(), Vec::<String>::new());
        let world = cloud.world();
        assert!(live(&world).is_empty(), "{:?}", world.connect_endpoints);
        assert!(world.rules.is_empty(), "{:?}", world.rules);
        let groups: Vec<_> = world.groups.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(groups, ["sg-000000a1", "sg-000000b1"]);
        let removed = report.removed().join("\n");
        assert!(
            removed.contains(&format!(
                "EC2 Instance Connect Endpoint {}",
                ready_a.endpoint_id
            )),
            "{removed}"
        );
    }

    /// An endpoint someone else made: used as it is. Its group lacks the egress: the rule to add
    /// is named and nothing is changed; with it, only the head node's rule is added, and the
    /// teardown leaves the endpoint and its group as they were.
    #[tokio::test(start_paused = true)]
    async fn an_endpoint_someone_else_made_is_used_and_never_changed() {
        let mut theirs = group("sg-000000e1");
        theirs.name = "team-eice".into();
        let cloud = Memory::new(World {
            groups: vec![group("sg-000000a1"), theirs],
            connect_endpoints: vec![crate::aws::ConnectEndpoint {
                id: "eice-0000000000000000e".into(),
                arn: format!(
                    "arn:aws:ec2:{REGION}:{ACCOUNT}:instance-connect-endpoint/eice-0000000000000000e"
                ),
                vpc_id: VPC.into(),
                subnet_id: "subnet-0000000a".into(),
                state: "create-complete".into(),
                state_message: None,
                dns_name: "eice-0000000000000000e.abc.ec2-instance-connect-endpoint.eu-west-1.amazonaws.com".into(),
                fips_dns_name: None,
                security_group_ids: vec!["sg-000000e1".into()],
                tags: Vec::new(),
            }],
            ..World::default()
        });
        let tmp = tempfile::tempdir().unwrap();
        let a = head("alpha", "i-0000000000000000a", "sg-000000a1");
        let mut ledger = Ledger::new(tmp.path().join("l.json"), "alpha", REGION, ACCOUNT);
        let req = Request {
            head: &a,
            subnet: None,
            run_id: "run-1",
            region: REGION,
            timeout: Some(Duration::from_secs(60)),
        };
        let err = ensure(&cloud, &req, &mut ledger, &Progress::hidden())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("authorize-security-group-egress --group-id sg-000000e1")
                && text.contains("GroupId=sg-000000a1"),
            "{text}"
        );
        assert!(
            cloud.world().writes.is_empty(),
            "{:?}",
            cloud.world().writes
        );

        // Their group lets tcp 22 out to the VPC: enough.
        cloud.world_mut().groups[1]
            .egress
            .push(crate::aws::IngressRule {
                protocol: "tcp".into(),
                from_port: Some(22),
                to_port: Some(22),
                source: Source::Cidr("10.0.0.0/16".into()),
            });
        let ready = ensure(&cloud, &req, &mut ledger, &Progress::hidden())
            .await
            .unwrap();
        assert!(!ready.created && !ready.bastions, "{ready:?}");
        let writes = cloud.world().writes.clone();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert!(
            writes[0].starts_with("authorize_ingress sg-000000a1 22"),
            "{writes:?}"
        );

        let report = teardown_ledger(&cloud, &mut ledger, &Progress::hidden()).await;
        assert_eq!(report.failed(), Vec::<String>::new());
        assert!(
            report
                .kept
                .iter()
                .any(|k| k.contains("eice-0000000000000000e") && k.contains("not made by bastion")),
            "{:?}",
            report.kept
        );
        let world = cloud.world();
        assert_eq!(world.connect_endpoints[0].state, "create-complete");
        assert_eq!(world.groups.len(), 2);
        assert!(world.rules.is_empty());
    }
}
