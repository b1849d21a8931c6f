//! `bastion doctor`: gathers the facts about a cluster's subnet (or a subnet before the cluster
//! exists), runs the checklist of `crate::doctor`, and with `--fix` creates the missing VPC
//! endpoints, tagged `bastion:doctor=<target>`. It never edits or deletes what it did not create.

use std::fmt;

use serde::Serialize;

use crate::aws::{EndpointSpec, Network, Source, Tag};
use crate::cli::DoctorArgs;
use crate::cluster::{find_head_node, route_table_of};
use crate::context::Context;
use crate::doctor::{self, BastionFacts, Check, EiceFacts, Facts, Status};
use crate::footprint::{Expected, TAG_DOCTOR};
use crate::proxy::{self};
use crate::ui::OutputFormat;
use crate::ui::emit;

/// Doctor itself could not run (exit 2), as opposed to finding problems (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("doctor could not run: {0:#}")]
pub struct DoctorFailed(pub anyhow::Error);

impl crate::exit::ExitStatus for DoctorFailed {
    fn exit_status(&self) -> Option<u8> {
        Some(crate::exit::INVALID)
    }
}

/// Problems were found (exit 1); the report was printed.
#[derive(Debug, thiserror::Error)]
#[error("{0} problem(s) found")]
pub struct ProblemsFound(pub usize);

impl crate::exit::ExitStatus for ProblemsFound {
    fn exit_status(&self) -> Option<u8> {
        Some(crate::exit::FAILED)
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub checks: Vec<Check>,
    pub changes: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "bastion doctor: {}", self.target)?;
        for c in &self.changes {
            writeln!(f, "  changed  {c}")?;
        }
        let width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(10);
        for c in &self.checks {
            let status = match c.status {
                Status::Ok => "ok",
                Status::Warning => "warning",
                Status::Problem => "PROBLEM",
            };
            writeln!(f, "  {status:<8} {:<width$}  {}", c.id, c.detail)?;
            if !c.fix.is_empty() {
                writeln!(f, "  {:<8} {:<width$}  fix: {}", "", "", c.fix)?;
            }
        }
        let problems = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Problem)
            .count();
        let warnings = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Warning)
            .count();
        write!(f, "{problems} problem(s), {warnings} warning(s)")
    }
}

async fn gather(ctx: &Context, args: &DoctorArgs) -> anyhow::Result<Facts> {
    let cloud = ctx.cloud.as_ref();
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            Some(doctor::parse_config(&text).map_err(|e| e.to_string()))
        }
        None => None,
    };
    // The groups the cluster's instances run with: the config's own (SecurityGroups replace
    // the default ones; AdditionalSecurityGroups add to them), and the head node's.
    let mut cluster_groups: Vec<String> = match &config {
        Some(Ok(c)) => c
            .additional_groups
            .iter()
            .chain(&c.custom_groups)
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    let mut head_groups = Vec::new();
    let mut head_ip = None;
    let subnet_id = match (&args.cluster, &args.subnet) {
        (Some(cluster), _) => {
            let head = find_head_node(cloud, cluster).await?;
            head_ip = head.ipv4();
            cluster_groups.extend(head.instance.security_group_ids.iter().cloned());
            head_groups = cloud
                .security_groups(&head.instance.security_group_ids)
                .await?;
            head.subnet_id
        }
        (None, Some(s)) => s.clone(),
        (None, None) => anyhow::bail!("pass --cluster NAME, or --subnet SUBNET_ID with --config"),
    };
    let subnet = cloud
        .subnet(&subnet_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no subnet {subnet_id} in {}", cloud.region()))?;
    let vpc_id = subnet.vpc_id.clone();
    let endpoints = cloud.vpc_endpoints(&vpc_id).await?;
    let mut group_ids: Vec<String> = endpoints
        .iter()
        .flat_map(|e| e.security_group_ids.clone())
        .collect();
    group_ids.sort();
    group_ids.dedup();
    let endpoint_groups = cloud.security_groups(&group_ids).await?;

    let mut bastion = None;
    let proxy = match &args.cluster {
        Some(cluster) => {
            let search = proxy::find(cloud, &Expected::of(ctx, cluster).await?).await?;
            search.warn_lookalikes();
            search.proxy
        }
        None => None,
    };
    if let Some(proxy) = proxy
        && let (Some(group), Some(psubnet)) =
            (proxy.security_group_ids.first(), proxy.subnet_id.as_deref())
        && let (Some(g), Some(s)) = (
            cloud
                .security_groups(std::slice::from_ref(group))
                .await?
                .into_iter()
                .next(),
            cloud.subnet(psubnet).await?,
        )
    {
        bastion = Some(BastionFacts {
            instance: proxy.id.clone(),
            group: g,
            subnet: s,
            head_groups: head_groups.clone(),
        });
    }
    // The VPC's EC2 Instance Connect Endpoints, each with its groups and its subnet's CIDR. Where
    // they cannot be listed (an identity that may not, an endpoint that lacks the call), no rows
    // and a warning.
    let mut instance_connect = Vec::new();
    match crate::eice::list(cloud, Some(&vpc_id)).await {
        Ok(found) => {
            for endpoint in found {
                let groups = cloud.security_groups(&endpoint.security_group_ids).await?;
                let subnet_cidr = cloud.subnet(&endpoint.subnet_id).await?.map(|s| s.cidr);
                instance_connect.push(EiceFacts {
                    endpoint,
                    groups,
                    subnet_cidr,
                    head: head_ip.map(|ip| (ip, head_groups.clone())),
                });
            }
        }
        // The rest of the checklist stands without them: said, not fatal.
        Err(e) => tracing::warn!("the VPC's EC2 Instance Connect Endpoints are not checked: {e}"),
    }
    // Every subnet the config names, as AWS knows it: one in another VPC, or none, is a problem.
    let mut config_subnets = Vec::new();
    if let Some(Ok(c)) = &config {
        let mut ids: Vec<&str> = c
            .head_subnet
            .iter()
            .map(|l| l.value.as_str())
            .chain(c.queue_subnets.iter().map(|(_, l)| l.value.as_str()))
            .collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let found = if id.starts_with("subnet-") {
                cloud.subnet(id).await?
            } else {
                None
            };
            config_subnets.push((id.to_string(), found));
        }
    }
    Ok(Facts {
        region: cloud.region().to_string(),
        config_subnets,
        subnet_arg: args.subnet.clone(),
        vpc_cidrs: cloud.vpc_cidrs(&vpc_id).await?,
        route_tables: cloud.route_tables(&vpc_id).await?,
        vpc_subnets: cloud.subnets(&vpc_id).await?,
        dns: cloud.vpc_dns(&vpc_id).await?,
        vpc_id,
        subnet,
        endpoints,
        endpoint_groups,
        cluster_groups,
        config,
        bastion,
        instance_connect,
    })
}

/// The security group doctor's interface endpoints use: found by its tag, else created with
/// tcp 443 from the VPC's CIDRs.
async fn endpoint_group(
    cloud: &(impl Network + ?Sized),
    f: &Facts,
    target: &str,
    changes: &mut Vec<String>,
) -> anyhow::Result<String> {
    let existing = cloud
        .security_groups_by_tag(TAG_DOCTOR, target)
        .await?
        .into_iter()
        .find(|g| g.vpc_id.as_deref() == Some(&f.vpc_id));
    if let Some(g) = existing {
        return Ok(g.id);
    }
    let name = format!("bastion-doctor-{target}");
    let tags = vec![Tag::new("Name", &name), Tag::new(TAG_DOCTOR, target)];
    let id = cloud
        .create_security_group(
            &name,
            "bastion doctor: HTTPS from the VPC to its interface endpoints",
            &f.vpc_id,
            &tags,
        )
        .await?;
    for cidr in &f.vpc_cidrs {
        cloud
            .authorize_ingress(
                &id,
                443,
                &Source::Cidr(cidr.clone()),
                "bastion doctor: HTTPS from the VPC",
                &tags,
            )
            .await?;
    }
    changes.push(format!(
        "created security group {id} ({name}): tcp 443 from {}",
        f.vpc_cidrs.join(", ")
    ));
    Ok(id)
}

/// Creates each required endpoint that is missing; leaves every existing one alone.
async fn fix(ctx: &Context, f: &Facts, target: &str) -> anyhow::Result<Vec<String>> {
    let cloud = ctx.cloud.as_ref();
    let mut changes = Vec::new();
    let route_table = route_table_of(&f.subnet.id, &f.route_tables).map(|t| t.id.clone());
    for req in doctor::endpoints_for(f) {
        // One that works, or is on its way (pending), is left alone; a deleted or failed one
        // does not count.
        if doctor::serving(&f.endpoints, &req.service, req.kind()).is_some() {
            continue;
        }
        // One being deleted is waited for: its private DNS names are still taken.
        if let Some(e) = doctor::being_deleted(&f.endpoints, &req.service) {
            changes.push(format!(
                "skipped {}: {} is being deleted; run `bastion doctor --fix` again once it is gone",
                req.service, e.id
            ));
            continue;
        }
        let tags = vec![
            Tag::new("Name", format!("bastion-doctor-{}", req.short)),
            Tag::new(TAG_DOCTOR, target),
        ];
        let spec = if req.interface {
            EndpointSpec {
                vpc_id: f.vpc_id.clone(),
                service: req.service.clone(),
                interface: true,
                subnet_ids: vec![f.subnet.id.clone()],
                route_table_ids: vec![],
                security_group_ids: vec![endpoint_group(cloud, f, target, &mut changes).await?],
                tags,
            }
        } else {
            let Some(rt) = &route_table else {
                changes.push(format!(
                    "skipped {}: {} has no route table",
                    req.service, f.subnet.id
                ));
                continue;
            };
            EndpointSpec {
                vpc_id: f.vpc_id.clone(),
                service: req.service.clone(),
                interface: false,
                subnet_ids: vec![],
                route_table_ids: vec![rt.clone()],
                security_group_ids: vec![],
                tags,
            }
        };
        ctx.progress
            .phase(format!("creating the {} endpoint", req.service));
        let id = cloud.create_vpc_endpoint(&spec).await?;
        let place = if req.interface {
            format!("in {} with private DNS", f.subnet.id)
        } else {
            format!("on {}", spec.route_table_ids.join(", "))
        };
        let change = format!(
            "created {} endpoint {id} for {} {place}",
            req.kind(),
            req.service
        );
        ctx.progress.note(&change);
        changes.push(change);
    }
    Ok(changes)
}

async fn diagnose(ctx: &Context, args: &DoctorArgs) -> anyhow::Result<Report> {
    let target = args
        .cluster
        .clone()
        .or_else(|| args.subnet.clone())
        .unwrap_or_default();
    ctx.progress.phase(format!("checking {target}"));
    let mut facts = gather(ctx, args).await?;
    let mut changes = Vec::new();
    if args.fix {
        changes = fix(ctx, &facts, &target).await?;
        if !changes.is_empty() {
            facts = gather(ctx, args).await?;
        }
    }
    Ok(Report {
        target: match (&args.cluster, &args.subnet) {
            (Some(c), _) => format!("cluster {c} ({}, {})", facts.subnet.id, facts.vpc_id),
            _ => format!("subnet {} ({})", facts.subnet.id, facts.vpc_id),
        },
        checks: doctor::run_checks(&facts),
        changes,
    })
}

pub async fn run(ctx: &Context, args: DoctorArgs) -> anyhow::Result<()> {
    let report = match diagnose(ctx, &args).await {
        Ok(r) => r,
        Err(e) => {
            let failed = DoctorFailed(e);
            ctx.progress.finish();
            // Scripts never get an empty stdout: the error as JSON there too.
            if ctx.output == OutputFormat::Json {
                crate::ui::print_text(serde_json::json!({ "error": format!("{failed}") }));
            }
            return Err(failed.into());
        }
    };
    ctx.progress.finish();
    match ctx.output {
        // One object per check, as scripts expect; changes from --fix went to stderr.
        OutputFormat::Json => emit(OutputFormat::Json, &JsonChecks(&report.checks))?,
        OutputFormat::Text => emit(OutputFormat::Text, &report)?,
    }
    let problems = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Problem)
        .count();
    if problems > 0 {
        return Err(ProblemsFound(problems).into());
    }
    Ok(())
}

struct JsonChecks<'a>(&'a [Check]);

impl Serialize for JsonChecks<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl fmt::Display for JsonChecks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} checks", self.0.len())
    }
}
