//! Deciding what `bastion up` will create, before it creates anything: the proxy's subnet, AMI,
//! instance type, allowed CIDRs, the rules the head node's groups lack, names, tags and user-data.
//! Every bad input is caught here. Reads only (and one public-IP look-up).

use std::fmt;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::aws::Tag;
use crate::cluster::{HeadNode, admits_from, choose_public_subnet};
use crate::context::Context;
use crate::footprint::{Names, resource_tags};
use crate::userdata::{self, ProxyOs};

/// What the user asked `up` for: the choices that shape the plan. Everything else is found in
/// AWS (the head node, its VPC, the latest AMI) or decided here.
#[derive(Debug, Clone)]
pub struct Request {
    /// The proxy's subnet; by default a public subnet of the head node's VPC.
    pub subnet: Option<String>,
    pub instance_type: Option<String>,
    /// Who may reach the proxy's port 22; by default this machine's public address.
    pub allow_cidr: Vec<Ipv4Net>,
    pub os: ProxyOs,
    pub ami: Option<String>,
    pub pcluster_version: Option<String>,
    pub idle_stop: u32,
    pub dcv: bool,
    pub pcluster_policy: bool,
    /// An instance profile the user made, used instead of bastion's own.
    pub instance_profile: Option<String>,
    pub volume_size: Option<i32>,
}

/// Everything `up` decided before creating anything. Printed by `--dry-run`.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub cluster: String,
    pub region: String,
    pub account: String,
    pub partition: String,
    pub head_node: String,
    pub head_node_private_ip: Option<String>,
    pub vpc_id: String,
    pub vpc_cidrs: Vec<String>,
    pub subnet_id: String,
    pub availability_zone: String,
    pub os: String,
    pub ami: String,
    pub root_device_name: String,
    pub instance_type: String,
    pub root_volume_gib: i32,
    pub pcluster_version: String,
    pub allow_cidrs: Vec<Ipv4Net>,
    pub idle_stop_minutes: u32,
    pub dcv: bool,
    /// The ParallelCluster user policy on the proxy's role (off: `up --no-pcluster-policy`).
    pub pcluster_policy: bool,
    /// The head node group that gets a rule, and for which ports (empty: already admitted).
    pub head_node_group: Option<String>,
    pub head_node_ports: Vec<i32>,
    pub key_pair: String,
    pub security_group: String,
    pub role: String,
    pub instance_profile: String,
    /// An administrator's instance profile (`up --instance-profile`): no IAM is created.
    pub provided_profile: Option<String>,
    /// The permissions boundary the role bastion creates carries.
    pub boundary: String,
    pub tags: Vec<Tag>,
    pub user_data: String,
}

/// Bad input found while planning: nothing has been created.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "could not find your public IPv4 address from {url} ({reason}). Pass --allow-cidr YOUR_IP/32 \
         (the addresses that may reach the proxy's SSH port)"
    )]
    NoPublicIp { url: String, reason: String },

    #[error(
        "no AMI for {os} on {arch}: the SSM parameter {parameter} does not exist in {region}. Pass --ami AMI_ID"
    )]
    NoAmi {
        os: String,
        arch: String,
        parameter: String,
        region: String,
    },

    #[error(
        "AMI {ami} does not exist in {region} (or is not shared with this account); check --ami"
    )]
    AmiNotFound { ami: String, region: String },

    #[error(
        "cannot tell which ParallelCluster version cluster '{cluster}' runs (its head node has no \
         parallelcluster:version tag); pass --pcluster-version"
    )]
    UnknownVersion { cluster: String },

    #[error(
        "the head node of cluster '{cluster}' says it runs ParallelCluster {value:?} (its \
         parallelcluster:version tag), which is not a release such as 3.16.1; nothing was \
         created. Pass --pcluster-version X.Y.Z"
    )]
    BadVersion { cluster: String, value: String },

    #[error(
        "the permissions boundary {arn} does not exist: every role `bastion up` creates carries \
         it, so an administrator creates it once per account from `bastion policy boundary` (see \
         the README's Teams section). Or have them make the proxy's role and profile \
         (`bastion policy proxy-role --cluster {cluster}`) and pass --instance-profile"
    )]
    NoBoundary { arn: String, cluster: String },

    #[error(
        "--instance-profile {given}: the proxy of cluster '{cluster}' in this region runs with the \
         instance profile /bastion/{expected} (the name its identity is checked by); pass \
         --instance-profile {expected}"
    )]
    ProfileName {
        given: String,
        expected: String,
        cluster: String,
    },

    #[error(
        "the instance profile {name} {problem}: an administrator makes it from `bastion policy \
         proxy-role --cluster {cluster}` (a CloudFormation template)"
    )]
    NoProfile {
        name: String,
        problem: String,
        cluster: String,
    },

    #[error(
        "the head node {instance} of cluster '{cluster}' has no private IPv4 address that bastion \
         can read ({value:?}); the proxy's sshd admits teammates to exactly that address"
    )]
    NoHeadIp {
        cluster: String,
        instance: String,
        value: Option<String>,
    },
}
impl crate::exit::ExitStatus for PlanError {
    fn exit_status(&self) -> Option<u8> {
        Some(crate::exit::INVALID)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "dry run: nothing was created. `bastion up` would create, in {} ({}):",
            self.region, self.account
        )?;
        writeln!(
            f,
            "  key pair        {} (ed25519, generated locally)",
            self.key_pair
        )?;
        writeln!(
            f,
            "  security group  {} in {}: tcp 22 from {}",
            self.security_group,
            self.vpc_id,
            self.allow_cidrs
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        match &self.head_node_group {
            Some(g) => writeln!(
                f,
                "  ingress rule    on the head node's {g}: tcp {} from the proxy's group",
                self.head_node_ports
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )?,
            None => writeln!(
                f,
                "  (the head node's security groups already admit the proxy)"
            )?,
        }
        match &self.provided_profile {
            Some(p) => writeln!(
                f,
                "  IAM             none: the administrator's instance profile {p} is used"
            )?,
            None => writeln!(
                f,
                "  IAM role        {} and instance profile {} under /bastion/ (pcluster user policy, DCV licence, SSM core), bounded by {}",
                self.role, self.instance_profile, self.boundary
            )?,
        }
        writeln!(
            f,
            "  instance        {} {} ({}) in {} ({}), {} GiB encrypted gp3, IMDSv2, public IPv4",
            self.instance_type,
            self.ami,
            self.os,
            self.subnet_id,
            self.availability_zone,
            self.root_volume_gib
        )?;
        writeln!(
            f,
            "  user-data       {} bytes: pcluster {}, DCV {}, idle stop {}",
            self.user_data.len(),
            self.pcluster_version,
            if self.dcv { "on" } else { "off" },
            match self.idle_stop_minutes {
                0 => "never".to_string(),
                m => format!("after {m} min"),
            }
        )?;
        let tags: Vec<String> = self
            .tags
            .iter()
            .map(|t| format!("{}={}", t.key, t.value))
            .collect();
        write!(f, "  tags            {}", tags.join(", "))
    }
}

async fn public_ip() -> Result<ipnet::Ipv4Net, PlanError> {
    crate::access::my_address()
        .await
        .map(ipnet::Ipv4Net::from)
        .map_err(|e| match e {
            crate::access::AccessError::NoAddress { url, reason } => {
                PlanError::NoPublicIp { url, reason }
            }
            other => PlanError::NoPublicIp {
                url: String::new(),
                reason: other.to_string(),
            },
        })
}

fn ami_parameter(os: ProxyOs, arch: &str) -> String {
    match os {
        ProxyOs::Al2023 => {
            let arch = if arch == "arm64" { "arm64" } else { "x86_64" };
            format!("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}")
        }
        ProxyOs::Ubuntu2204 => {
            let arch = if arch == "arm64" { "arm64" } else { "amd64" };
            format!(
                "/aws/service/canonical/ubuntu/server/22.04/stable/current/{arch}/hvm/ebs-gp2/ami-id"
            )
        }
    }
}

/// Decides everything before creating anything; every bad input is caught here.
pub async fn plan(ctx: &Context, req: &Request, head: &HeadNode) -> anyhow::Result<Plan> {
    let cloud = ctx.cloud.as_ref();
    let region = cloud.region().to_string();
    let identity = cloud.identity().await?;
    let progress = &ctx.progress;

    progress.phase(format!("choosing a public subnet in {}", head.vpc_id));
    let subnet = choose_public_subnet(cloud, head, req.subnet.as_deref()).await?;

    let allow: Vec<ipnet::Ipv4Net> = if req.allow_cidr.is_empty() {
        progress.phase("looking up your public IPv4 address");
        vec![public_ip().await?]
    } else {
        req.allow_cidr.clone()
    };
    if allow.iter().any(|n| n.prefix_len() == 0) {
        let msg = "--allow-cidr 0.0.0.0/0 opens the proxy's SSH port to the whole internet; \
                   only key authentication protects it";
        tracing::warn!("{msg}");
        progress.note(format!("warning: {msg}"));
    }

    let ami = match &req.ami {
        Some(a) => a.clone(),
        None => {
            let parameter = ami_parameter(req.os, &head.architecture);
            progress.phase(format!("finding the latest {} AMI", req.os.as_str()));
            cloud
                .ssm_parameter(&parameter)
                .await?
                .ok_or_else(|| PlanError::NoAmi {
                    os: req.os.as_str().into(),
                    arch: head.architecture.clone(),
                    parameter,
                    region: region.clone(),
                })?
        }
    };
    let image = cloud
        .image(&ami)
        .await?
        .ok_or_else(|| PlanError::AmiNotFound {
            ami: ami.clone(),
            region: region.clone(),
        })?;
    let arch = image
        .architecture
        .clone()
        .unwrap_or_else(|| head.architecture.clone());
    let instance_type = req.instance_type.clone().unwrap_or_else(|| {
        if arch == "arm64" {
            "t4g.medium"
        } else {
            "t3.medium"
        }
        .to_string()
    });
    let pcluster_version = req
        .pcluster_version
        .clone()
        .or_else(|| head.pcluster_version.clone())
        .ok_or_else(|| PlanError::UnknownVersion {
            cluster: head.cluster.clone(),
        })?;
    if !userdata::is_release_version(&pcluster_version) {
        return Err(PlanError::BadVersion {
            cluster: head.cluster.clone(),
            value: pcluster_version,
        }
        .into());
    }
    let head_ip = head.ipv4().ok_or_else(|| PlanError::NoHeadIp {
        cluster: head.cluster.clone(),
        instance: head.instance.id.clone(),
        value: head.instance.private_ip.clone(),
    })?;

    let vpc_cidrs = cloud.vpc_cidrs(&head.vpc_id).await?;
    let head_groups = cloud
        .security_groups(&head.instance.security_group_ids)
        .await?;
    // SSH only: DCV travels inside the head node's own session, so the proxy never needs to
    // reach the head node's DCV port.
    let head_node_ports: Vec<i32> = [22]
        .into_iter()
        .filter(|&p| !admits_from(&head_groups, p, &subnet.cidr, None))
        .collect();
    // ParallelCluster's own head node group, when it can be told apart; else the first.
    let head_node_group = (!head_node_ports.is_empty())
        .then(|| crate::cluster::main_group(&head_groups).map(|g| g.id.clone()))
        .flatten();

    let names = Names::new(&head.cluster, &region);
    // The role and profile: an administrator's (checked to be where the identity check looks),
    // or bastion's, each with the boundary the administrator made.
    let target = crate::policy::Target {
        partition: &identity.partition,
        account: &identity.account,
        region: &region,
    };
    let boundary = target.boundary_arn();
    let provided_profile = match &req.instance_profile {
        Some(given) => {
            if *given != names.instance_profile {
                return Err(PlanError::ProfileName {
                    given: given.clone(),
                    expected: names.instance_profile.clone(),
                    cluster: head.cluster.clone(),
                }
                .into());
            }
            progress.phase(format!("reading the instance profile {given}"));
            let problem = match cloud.instance_profile(given).await? {
                Some(p) if p.path == crate::footprint::IAM_PATH => None,
                Some(p) => Some(format!("is under the path {}, not /bastion/", p.path)),
                None => Some("does not exist".to_string()),
            };
            if let Some(problem) = problem {
                return Err(PlanError::NoProfile {
                    name: given.clone(),
                    problem,
                    cluster: head.cluster.clone(),
                }
                .into());
            }
            Some(given.clone())
        }
        None => {
            progress.phase("checking the permissions boundary for the proxy's role");
            if !cloud.policy_exists(&boundary).await? {
                return Err(PlanError::NoBoundary {
                    arn: boundary,
                    cluster: head.cluster.clone(),
                }
                .into());
            }
            None
        }
    };
    let user_data = userdata::render(&userdata::Settings {
        cluster: &head.cluster,
        os: req.os,
        pcluster_version: &pcluster_version,
        idle_stop_minutes: req.idle_stop,
        install_dcv: req.dcv,
        head_ip,
    });
    Ok(Plan {
        cluster: head.cluster.clone(),
        region: region.clone(),
        account: identity.account,
        partition: identity.partition,
        head_node: head.instance.id.clone(),
        head_node_private_ip: Some(head_ip.to_string()),
        vpc_id: head.vpc_id.clone(),
        vpc_cidrs,
        subnet_id: subnet.id,
        availability_zone: subnet.availability_zone,
        os: req.os.as_str().into(),
        ami,
        root_device_name: image.root_device_name.unwrap_or_else(|| "/dev/xvda".into()),
        instance_type,
        root_volume_gib: req.volume_size.unwrap_or(if req.dcv { 40 } else { 16 }),
        pcluster_version,
        allow_cidrs: allow.clone(),
        idle_stop_minutes: req.idle_stop,
        dcv: req.dcv,
        pcluster_policy: req.pcluster_policy,
        head_node_group,
        head_node_ports,
        key_pair: names.key_pair.clone(),
        security_group: names.security_group.clone(),
        role: names.role.clone(),
        instance_profile: names.instance_profile.clone(),
        provided_profile,
        boundary,
        tags: resource_tags(&head.cluster, "<run id>", &region, &names.instance),
        user_data,
    })
}
