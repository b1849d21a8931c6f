//! `bastion up`: plan the proxy from the cluster's head node and VPC, create it (recording each
//! resource in the ledger), wait until it is ready. Any error or Ctrl-C removes what this run
//! created. A cluster that already has a bastion gets it reported (and started), not a second one.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::Context;
use crate::aws::{Cloud, Instance, TAG_CLUSTER, TAG_DESKTOP, TAG_STATE};
use crate::cli::UpArgs;
use crate::cluster::{HeadNode, admits_from, choose_public_subnet, find_head_node};
use crate::ledger::Ledger;
use crate::provision::{self, DCV_PORT, Plan};
use crate::state::Names;
use crate::teardown::{self, Kinds, Report, TAG_RUN, resource_tags};
use crate::ui::{Progress, emit};
use crate::userdata::{self, ProxyOs};
use crate::wait::{Goal, WaitError, wait_for};

/// The default public-IP lookup; `BASTION_IP_LOOKUP_URL` overrides it (tests point it at loopback).
const IP_LOOKUP_URL: &str = "https://checkip.amazonaws.com";

#[derive(Debug, thiserror::Error)]
pub enum UpError {
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
        "a previous `bastion up` for '{cluster}' left resources behind ({ledger}). Run \
         `bastion down --cluster {cluster}` first"
    )]
    Leftovers { cluster: String, ledger: String },

    #[error("{error:#}\n{cleanup}")]
    Failed {
        error: anyhow::Error,
        cleanup: CleanupSummary,
    },

    #[error("interrupted")]
    Interrupted,
}

/// What a failed `up` removed, and what it could not.
#[derive(Debug)]
pub struct CleanupSummary {
    pub report: Report,
    pub kept: bool,
    pub cluster: String,
}

impl fmt::Display for CleanupSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kept {
            return write!(
                f,
                "kept what was created (--keep-on-failure); remove it with `bastion down --cluster {}`",
                self.cluster
            );
        }
        if self.report.removed.is_empty() && self.report.failed.is_empty() {
            return write!(f, "nothing had been created");
        }
        write!(f, "cleaned up what this run created:")?;
        for r in &self.report.removed {
            write!(f, "\n  removed {r}")?;
        }
        for r in &self.report.failed {
            write!(f, "\n  NOT removed {r}")?;
        }
        if !self.report.failed.is_empty() {
            write!(
                f,
                "\nrun `bastion down --cluster {}` to retry the rest",
                self.cluster
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize)]
pub struct UpResult {
    pub cluster: String,
    pub region: String,
    pub instance_id: String,
    pub state: String,
    pub bootstrap: Option<String>,
    pub desktop: Option<String>,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
    pub instance_type: Option<String>,
    pub subnet_id: Option<String>,
    pub key_file: Option<String>,
    /// false when the cluster already had a bastion and this run created nothing.
    pub created: bool,
    pub started: bool,
}

impl fmt::Display for UpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match (self.created, self.started) {
            (true, _) => "created",
            (false, true) => "started the existing",
            (false, false) => "found the existing",
        };
        writeln!(
            f,
            "{verb} bastion {} for cluster {} ({})",
            self.instance_id, self.cluster, self.region
        )?;
        writeln!(f, "  state:      {}", self.state)?;
        writeln!(
            f,
            "  bootstrap:  {}",
            self.bootstrap.as_deref().unwrap_or("not reported yet")
        )?;
        writeln!(
            f,
            "  desktop:    {}",
            self.desktop.as_deref().unwrap_or("not reported yet")
        )?;
        writeln!(
            f,
            "  public ip:  {}",
            self.public_ip.as_deref().unwrap_or("-")
        )?;
        if let Some(k) = &self.key_file {
            writeln!(f, "  key:        {k}")?;
        }
        write!(f, "next: bastion connect --cluster {}", self.cluster)
    }
}

impl UpResult {
    fn from_instance(
        cluster: &str,
        region: &str,
        i: &Instance,
        key: Option<String>,
        created: bool,
        started: bool,
    ) -> Self {
        UpResult {
            cluster: cluster.into(),
            region: region.into(),
            instance_id: i.id.clone(),
            state: i.state.clone(),
            bootstrap: i.tag(TAG_STATE).map(str::to_string),
            desktop: i.tag(TAG_DESKTOP).map(str::to_string),
            public_ip: i.public_ip.clone(),
            private_ip: i.private_ip.clone(),
            instance_type: i.instance_type.clone(),
            subnet_id: i.subnet_id.clone(),
            key_file: key,
            created,
            started,
        }
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
            self.allow_cidrs.join(", ")
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
        writeln!(
            f,
            "  IAM role        {} and instance profile {} under /bastion/ (pcluster user policy, DCV licence, SSM core)",
            self.role, self.instance_profile
        )?;
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

async fn public_ip() -> Result<ipnet::Ipv4Net, UpError> {
    let url = std::env::var("BASTION_IP_LOOKUP_URL").unwrap_or_else(|_| IP_LOOKUP_URL.to_string());
    let fail = |reason: String| UpError::NoPublicIp {
        url: url.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let text = client
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fail(e.to_string()))?
        .text()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let ip: std::net::Ipv4Addr = text.trim().parse().map_err(|_| {
        fail(format!(
            "the answer was not an IPv4 address: {:?}",
            text.trim()
        ))
    })?;
    Ok(ipnet::Ipv4Net::from(ip))
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
async fn plan(ctx: &Context, args: &UpArgs, head: &HeadNode) -> anyhow::Result<Plan> {
    let cloud = ctx.cloud.as_ref();
    let region = cloud.region().to_string();
    let identity = cloud.identity().await?;
    let progress = &ctx.progress;

    progress.phase(format!("choosing a public subnet in {}", head.vpc_id));
    let subnet = choose_public_subnet(cloud, head, args.subnet.as_deref()).await?;

    let allow: Vec<ipnet::Ipv4Net> = if args.allow_cidr.is_empty() {
        progress.phase("looking up your public IPv4 address");
        vec![public_ip().await?]
    } else {
        args.allow_cidr.clone()
    };
    if allow.iter().any(|n| n.prefix_len() == 0) {
        let msg = "--allow-cidr 0.0.0.0/0 opens the proxy's SSH port to the whole internet; \
                   only key authentication protects it";
        tracing::warn!("{msg}");
        progress.note(format!("warning: {msg}"));
    }

    let ami = match &args.ami {
        Some(a) => a.clone(),
        None => {
            let parameter = ami_parameter(args.os, &head.architecture);
            progress.phase(format!("finding the latest {} AMI", args.os.as_str()));
            cloud
                .ssm_parameter(&parameter)
                .await?
                .ok_or_else(|| UpError::NoAmi {
                    os: args.os.as_str().into(),
                    arch: head.architecture.clone(),
                    parameter,
                    region: region.clone(),
                })?
        }
    };
    let image = cloud
        .image(&ami)
        .await?
        .ok_or_else(|| UpError::AmiNotFound {
            ami: ami.clone(),
            region: region.clone(),
        })?;
    let arch = image
        .architecture
        .clone()
        .unwrap_or_else(|| head.architecture.clone());
    let instance_type = args.instance_type.clone().unwrap_or_else(|| {
        if arch == "arm64" {
            "t4g.medium"
        } else {
            "t3.medium"
        }
        .to_string()
    });
    let pcluster_version = args
        .pcluster_version
        .clone()
        .or_else(|| head.pcluster_version.clone())
        .ok_or_else(|| UpError::UnknownVersion {
            cluster: head.cluster.clone(),
        })?;

    let vpc_cidrs = cloud.vpc_cidrs(&head.vpc_id).await?;
    let head_groups = cloud
        .security_groups(&head.instance.security_group_ids)
        .await?;
    let mut ports = vec![22];
    if !args.no_dcv {
        ports.push(DCV_PORT);
    }
    let head_node_ports: Vec<i32> = ports
        .into_iter()
        .filter(|&p| !admits_from(&head_groups, p, &subnet.cidr, None))
        .collect();
    // ParallelCluster's own head node group, when it can be told apart; else the first.
    let head_node_group = (!head_node_ports.is_empty())
        .then(|| {
            head_groups
                .iter()
                .find(|g| {
                    crate::aws::tag_value(&g.tags, "aws:cloudformation:logical-id")
                        == Some("HeadNodeSecurityGroup")
                })
                .or(head_groups.first())
                .map(|g| g.id.clone())
        })
        .flatten();

    let names = Names::new(&head.cluster, &region);
    let user_data = userdata::render(&userdata::Settings {
        cluster: &head.cluster,
        os: args.os,
        pcluster_version: &pcluster_version,
        idle_stop_minutes: args.idle_stop,
        install_dcv: !args.no_dcv,
    });
    Ok(Plan {
        cluster: head.cluster.clone(),
        region: region.clone(),
        account: identity.account,
        partition: identity.partition,
        head_node: head.instance.id.clone(),
        head_node_private_ip: head.instance.private_ip.clone(),
        vpc_id: head.vpc_id.clone(),
        vpc_cidrs,
        subnet_id: subnet.id,
        availability_zone: subnet.availability_zone,
        os: args.os.as_str().into(),
        ami,
        root_device_name: image.root_device_name.unwrap_or_else(|| "/dev/xvda".into()),
        instance_type,
        root_volume_gib: args
            .volume_size
            .unwrap_or(if args.no_dcv { 16 } else { 40 }),
        pcluster_version,
        allow_cidrs: allow.iter().map(|n| n.to_string()).collect(),
        idle_stop_minutes: args.idle_stop,
        dcv: !args.no_dcv,
        head_node_group,
        head_node_ports,
        key_pair: names.key_pair.clone(),
        security_group: names.security_group.clone(),
        role: names.role.clone(),
        instance_profile: names.instance_profile.clone(),
        tags: resource_tags(&head.cluster, "<run id>", &region, &names.instance),
        user_data,
    })
}

/// Finds the cluster's live bastion, if any.
pub async fn existing_bastion(
    cloud: &dyn Cloud,
    cluster: &str,
) -> anyhow::Result<Option<Instance>> {
    let live = ["pending", "running", "stopping", "stopped"];
    let mut found = cloud
        .instances_by_tags(&[(TAG_CLUSTER, cluster)], &live)
        .await?;
    found.sort_by_key(|i| i.state != "running");
    Ok(found.into_iter().next())
}

/// Starts a stopped bastion (waiting out `stopping` first) and waits until it is running.
pub async fn ensure_running(
    cloud: &dyn Cloud,
    instance: Instance,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<(Instance, bool)> {
    let mut current = instance;
    let start = tokio::time::Instant::now();
    while current.state == "stopping" {
        progress.phase(format!(
            "{} is stopping; waiting to start it again",
            current.id
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
        current = cloud
            .instance(&current.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the bastion {} disappeared", current.id))?;
        if start.elapsed() > timeout {
            anyhow::bail!(
                "the bastion {} is still stopping after {} min",
                current.id,
                timeout.as_secs() / 60
            );
        }
    }
    if current.state == "running" {
        return Ok((current, false));
    }
    let started = current.state == "stopped";
    if started {
        progress.phase(format!("starting the stopped bastion {}", current.id));
        cloud.start_instance(&current.id).await?;
    }
    let goal = if current.tag(TAG_STATE) == Some("ready") {
        Goal::Ready
    } else {
        Goal::Running
    };
    let running = wait_for(cloud, &current.id, goal, timeout, progress).await?;
    Ok((running, started))
}

pub async fn run(ctx: &Context, args: UpArgs) -> anyhow::Result<()> {
    let cloud = ctx.cloud.as_ref();
    let region = cloud.region().to_string();
    let progress = &ctx.progress;
    let timeout = Duration::from_secs(args.timeout * 60);

    progress.phase(format!("finding the head node of cluster {}", args.cluster));
    let head = find_head_node(cloud, &args.cluster).await?;
    tracing::info!(head_node = %head.instance.id, vpc = %head.vpc_id, "found the head node");

    if let Some(existing) = existing_bastion(cloud, &args.cluster).await? {
        if args.dry_run {
            progress.finish();
            let r = UpResult::from_instance(&args.cluster, &region, &existing, None, false, false);
            return emit(ctx.opts.output, &r);
        }
        let (instance, started) = ensure_running(cloud, existing, timeout, progress).await?;
        let key = ctx.bastion_dir(&args.cluster).await?.private_key();
        let key = key.exists().then(|| key.display().to_string());
        progress.finish();
        let r = UpResult::from_instance(&args.cluster, &region, &instance, key, false, started);
        return emit(ctx.opts.output, &r);
    }

    let plan = plan(ctx, &args, &head).await?;
    if args.dry_run {
        progress.finish();
        return emit(ctx.opts.output, &plan);
    }

    let dir = ctx.bastion_dir(&args.cluster).await?;
    let _lock = dir.lock(&args.cluster)?;
    if let Some(old) = Ledger::load(&dir.ledger())?
        && !old.resources().is_empty()
    {
        return Err(UpError::Leftovers {
            cluster: args.cluster.clone(),
            ledger: dir.ledger().display().to_string(),
        }
        .into());
    }
    let mut ledger = Ledger::new(dir.ledger(), &plan.cluster, &plan.region, &plan.account);
    ledger.save()?;
    let run_id = new_run_id();
    tracing::info!(run_id, "creating the bastion");

    let goal = if args.no_wait {
        None
    } else if args.wait_desktop {
        Some(Goal::Desktop)
    } else {
        Some(Goal::Ready)
    };
    let mut attempted = Kinds::default();
    let work = async {
        let created = provision::create(
            cloud,
            &plan,
            &run_id,
            &dir,
            &mut ledger,
            &mut attempted,
            progress,
        )
        .await?;
        let instance = match goal {
            None => cloud.instance(&created.instance_id).await?,
            Some(goal) => {
                match wait_for(cloud, &created.instance_id, goal, timeout, progress).await {
                    // The proxy works for SSH; a failed desktop is reported but the proxy is kept.
                    Err(e @ WaitError::DesktopFailed { .. }) => return Ok(Err(e)),
                    other => Some(other?),
                }
            }
        };
        anyhow::Ok(Ok(instance))
    };
    let outcome = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(UpError::Interrupted.into()),
    };

    match outcome {
        Ok(Ok(instance)) => {
            progress.finish();
            let instance = instance.ok_or_else(|| anyhow::anyhow!("the new instance vanished"))?;
            let key = Some(dir.private_key().display().to_string());
            emit(
                ctx.opts.output,
                &UpResult::from_instance(&args.cluster, &region, &instance, key, true, false),
            )
        }
        Ok(Err(desktop_failed)) => {
            progress.finish();
            Err(desktop_failed.into())
        }
        Err(source) => {
            let cleanup = cleanup(cloud, &mut ledger, &run_id, attempted, &args, progress).await;
            progress.finish();
            Err(UpError::Failed {
                error: source,
                cleanup,
            }
            .into())
        }
    }
}

/// Removes what this run created: the ledger first, then anything tagged with this run's id
/// (a resource whose create call succeeded but whose response was lost).
async fn cleanup(
    cloud: &dyn Cloud,
    ledger: &mut Ledger,
    run_id: &str,
    attempted: Kinds,
    args: &UpArgs,
    progress: &Progress,
) -> CleanupSummary {
    if args.keep_on_failure {
        return CleanupSummary {
            report: Report::default(),
            kept: true,
            cluster: args.cluster.clone(),
        };
    }
    progress.phase("failed; removing what this run created");
    let work = async {
        let mut report = teardown::teardown_ledger(cloud, ledger, progress).await;
        match teardown::sweep(cloud, TAG_RUN, run_id, attempted, progress).await {
            Ok(r) => report.merge(r),
            Err(e) => report
                .failed
                .push(format!("the sweep by tag {TAG_RUN}={run_id}: {e}")),
        }
        report
    };
    let report = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Report {
            removed: vec![],
            failed: vec!["cleanup interrupted by a second Ctrl-C".into()],
        },
    };
    if report.failed.is_empty() && ledger.resources().is_empty() {
        let _ = std::fs::remove_file(ledger.path());
    }
    CleanupSummary {
        report,
        kept: false,
        cluster: args.cluster.clone(),
    }
}

fn new_run_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
