//! `bastion up`: plan the proxy from the cluster's head node and VPC, create it (recording each
//! resource in the ledger), wait until it is ready. Any error or Ctrl-C removes what this run
//! created. A cluster that already has a bastion gets it reported (and started), not a second one.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::aws::{Cloud, Instance};
use crate::cli::{Given, UpArgs};
use crate::cluster::find_head_node;
use crate::context::Context;
use crate::footprint::{Expected, Kinds, TAG_DESKTOP, TAG_STATE};
use crate::ledger::Ledger;
use crate::plan::plan;
use crate::provision;
use crate::proxy::{self, NewProxyKeys};
use crate::ssh::known_hosts;
use crate::teardown::{self, Report};
use crate::ui::{Progress, emit};
use crate::wait::{Goal, WaitError, wait_for_new};

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(
        "an interrupted `bastion up` for '{cluster}' left resources that could not be removed ({ledger}):\n  {}\n\
         Run `bastion down --cluster {cluster}` to retry",
        failed.join("\n  ")
    )]
    Leftovers {
        cluster: String,
        ledger: String,
        failed: Vec<String>,
    },

    #[error("{error:#}\n{cleanup}")]
    Failed {
        error: anyhow::Error,
        cleanup: CleanupSummary,
    },

    #[error(
        "cluster '{cluster}' has a bastion, {instance}, that this machine's ledger ({ledger}) does not \
         record: it was made again from another machine. Use it from there, or run \
         `bastion down --cluster {cluster}` (it removes both) and `bastion up` here"
    )]
    StaleLedger {
        cluster: String,
        ledger: String,
        instance: String,
    },

    #[error(
        "this machine's ledger ({ledger}) records a bastion for '{cluster}' whose proxy AWS does not \
         list (terminated outside bastion?). Run `bastion down --cluster {cluster}` to remove the rest, \
         then `bastion up`"
    )]
    Orphaned { cluster: String, ledger: String },

    #[error("interrupted")]
    Interrupted,

    #[error(
        "{flags} only mean{s} something for a proxy instance; `bastion up --via eice` makes no \
         instance. Leave {them} out, or set up a proxy (`--via proxy`)",
        s = if flags.contains(',') { "" } else { "s" },
        them = if flags.contains(',') { "them" } else { "it" }
    )]
    ProxyOnly { flags: String },

    #[error(
        "this machine's ledger ({ledger}) records an EC2 Instance Connect Endpoint set up for \
         '{cluster}' that AWS no longer lists as usable: {why}. Run `bastion down --cluster \
         {cluster}` to remove the rest, then `bastion up --via eice`"
    )]
    EndpointGone {
        cluster: String,
        ledger: String,
        why: String,
    },
}
impl crate::exit::ExitStatus for UpError {
    fn exit_status(&self) -> Option<u8> {
        match self {
            UpError::Interrupted => Some(crate::exit::INTERRUPTED),
            // What `carries` names decides.
            UpError::Failed { .. } => None,
            UpError::Leftovers { .. }
            | UpError::StaleLedger { .. }
            | UpError::Orphaned { .. }
            | UpError::EndpointGone { .. } => Some(crate::exit::FAILED),
            UpError::ProxyOnly { .. } => Some(crate::exit::INVALID),
        }
    }

    fn carries(&self) -> Option<&anyhow::Error> {
        match self {
            UpError::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
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
        let (removed, failed) = (self.report.removed(), self.report.failed());
        if removed.is_empty() && failed.is_empty() {
            return write!(f, "nothing had been created");
        }
        write!(f, "cleaned up what this run created:")?;
        for r in &removed {
            write!(f, "\n  removed {r}")?;
        }
        for r in &failed {
            write!(f, "\n  NOT removed {r}")?;
        }
        if !failed.is_empty() {
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
    /// How the new proxy's host key is anchored: `console` (its console output's keys, pinned
    /// by `up`), `pending` (its console showed none within the wait). Absent with `--no-wait`
    /// and for a proxy that already existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key_anchor: Option<&'static str>,
    /// The SHA-256 fingerprints `up` pinned for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_keys: Vec<String>,
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
        match self.host_key_anchor {
            Some("console") => writeln!(
                f,
                "  host keys:  pinned from its console output ({})",
                self.host_keys.join(", ")
            )?,
            Some(_) => writeln!(f, "  host keys:  not on its console output yet")?,
            None => {}
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
            host_key_anchor: None,
            host_keys: Vec::new(),
        }
    }

    /// Records what `up` pinned for the new proxy; a console that showed nothing is said as a
    /// warning, with what the first `connect` then does.
    fn host_keys(&mut self, keys: NewProxyKeys) {
        match keys {
            NewProxyKeys::Pinned(keys) => {
                self.host_key_anchor = Some("console");
                self.host_keys = keys.iter().map(known_hosts::fingerprint).collect();
            }
            NewProxyKeys::NotShown => {
                self.host_key_anchor = Some("pending");
                tracing::warn!(
                    "the proxy {}'s console output shows no host keys yet (EC2 may take minutes \
                     to post it), so none is pinned: the first `bastion connect` trusts the key its \
                     bastion:host-key tag names (which anyone with ec2:CreateTags can write), says \
                     so, pins it, and checks it against the console output once that shows the \
                     keys. `bastion up --cluster {}` again pins them from the console",
                    self.instance_id,
                    self.cluster
                );
            }
        }
    }
}

/// The flags that shape the plan, as the plan takes them.
fn request(args: &UpArgs) -> crate::plan::Request {
    crate::plan::Request {
        subnet: args.subnet.clone(),
        instance_type: args.instance_type.clone(),
        allow_cidr: args.allow_cidr.clone(),
        os: args.os,
        ami: args.ami.clone(),
        pcluster_version: args.pcluster_version.clone(),
        idle_stop: args.idle_stop,
        dcv: !args.no_dcv,
        pcluster_policy: !args.no_pcluster_policy,
        instance_profile: args.instance_profile.clone(),
        volume_size: args.volume_size,
    }
}

pub async fn run(ctx: &Context, args: UpArgs, given: &Given) -> anyhow::Result<()> {
    if args.via == "eice" {
        return run_eice(ctx, args, given).await;
    }
    let cloud = ctx.cloud.as_ref();
    let region = cloud.region().to_string();
    let progress = &ctx.progress;
    let timeout = Duration::from_secs(args.timeout * 60);

    progress.phase(format!("finding the head node of cluster {}", args.cluster));
    let head = find_head_node(cloud, &args.cluster).await?;
    tracing::info!(head_node = %head.instance.id, vpc = %head.vpc_id, "found the head node");

    let dir = ctx.bastion_dir(&args.cluster).await?;
    let expected = Expected::of(ctx, &args.cluster).await?;
    let search = proxy::find(cloud, &expected).await?;
    // A look-alike is never adopted or started: a proxy of bastion's own is made beside it.
    search.warn_lookalikes();
    let report_existing = async |existing: Instance| -> anyhow::Result<()> {
        if args.dry_run {
            progress.finish();
            let r = UpResult::from_instance(&args.cluster, &region, &existing, None, false, false);
            return emit(ctx.output, &r);
        }
        let (instance, started) = proxy::ensure_running(cloud, existing, timeout, progress).await?;
        let key = dir.private_key();
        let key = key.exists().then(|| key.display().to_string());
        let mut r = UpResult::from_instance(&args.cluster, &region, &instance, key, false, started);
        // No key pinned for it yet (a proxy whose console was silent when it was made, or one
        // this machine has not used): one look at its console.
        let known_hosts = ctx.known_hosts();
        if !known_hosts::is_pinned(&known_hosts, &instance.id) {
            let keys =
                proxy::pin_console_keys(cloud, &instance, &known_hosts, Duration::ZERO, progress)
                    .await?;
            r.host_keys(keys);
        }
        progress.finish();
        emit(ctx.output, &r)
    };
    if let Some(existing) = search.proxy {
        return report_existing(existing).await;
    }

    let plan = plan(ctx, &request(&args), &head).await?;
    if args.dry_run {
        progress.finish();
        return emit(ctx.output, &plan);
    }

    let _lock = dir.lock(&args.cluster)?;
    // Another `up` here may have finished between the search and the lock: look again.
    let search = proxy::find(cloud, &expected).await?;
    if let Some(existing) = search.proxy {
        return report_existing(existing).await;
    }
    let owner = expected.any_machine();
    // A bastion made elsewhere since this machine's ledger was written: its resources have the
    // same names, so cleaning the stale ledger would break it. Say so instead.
    if let Some(other) = search.lookalikes.iter().find(|l| l.stale_ledger) {
        return Err(UpError::StaleLedger {
            cluster: args.cluster.clone(),
            ledger: dir.ledger().display().to_string(),
            instance: other.instance.clone(),
        }
        .into());
    }
    if let Some(old) = Ledger::load(&dir.ledger())?
        && (!old.resources().is_empty() || old.data.run_id.is_some())
    {
        // A finished run whose proxy AWS no longer lists (terminated outside bastion, or not
        // visible yet): never cleaned on a guess.
        if old.data.complete {
            return Err(UpError::Orphaned {
                cluster: args.cluster.clone(),
                ledger: dir.ledger().display().to_string(),
            }
            .into());
        }
        // We hold the lock, and a live run on this machine would: the run that wrote this
        // ledger died (SIGKILL, a closed laptop), and no proxy of it is running. Finish its
        // cleanup, then go on.
        remove_dead_run(cloud, old, &owner, &args.cluster, progress).await?;
    }
    let run_id = new_run_id();
    let mut ledger = Ledger::new(dir.ledger(), &plan.cluster, &plan.region, &plan.account);
    ledger.data.run_id = Some(run_id.clone());
    // Nothing exists yet: a ledger that could not be written whole leaves no file behind.
    if let Err(e) = ledger.save() {
        let _ = std::fs::remove_file(ledger.path());
        return Err(e.into());
    }
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
            None => (
                Some(crate::aws::fresh::new_instance(cloud, &created.instance_id).await?),
                None,
            ),
            Some(goal) => {
                let waiting = tokio::time::Instant::now();
                match wait_for_new(cloud, &created.instance_id, goal, timeout, progress).await {
                    // The proxy works for SSH; a failed desktop is reported but the proxy is kept.
                    Err(e @ WaitError::DesktopFailed { .. }) => return Ok(Err(e)),
                    other => {
                        let instance = other?;
                        // Within the same wait: the host keys from its console, pinned.
                        let left = timeout.saturating_sub(waiting.elapsed());
                        let keys = proxy::pin_console_keys(
                            cloud,
                            &instance,
                            &ctx.known_hosts(),
                            left,
                            progress,
                        )
                        .await?;
                        (Some(instance), Some(keys))
                    }
                }
            }
        };
        anyhow::Ok(Ok(instance))
    };
    let outcome = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(UpError::Interrupted.into()),
    };

    // A finished run (or one kept on purpose) is never taken for a dead one by the next `up`.
    let finished = outcome.is_ok() || args.keep_on_failure;
    if finished {
        ledger.data.complete = true;
        if let Err(e) = ledger.save() {
            tracing::warn!("{e}");
        }
    }
    match outcome {
        Ok(Ok((instance, keys))) => {
            progress.finish();
            let instance = instance.ok_or_else(|| anyhow::anyhow!("the new instance vanished"))?;
            let key = Some(dir.private_key().display().to_string());
            let mut r =
                UpResult::from_instance(&args.cluster, &region, &instance, key, true, false);
            if let Some(keys) = keys {
                r.host_keys(keys);
            }
            emit(ctx.output, &r)
        }
        Ok(Err(desktop_failed)) => {
            progress.finish();
            Err(desktop_failed.into())
        }
        Err(source) => {
            let cleanup = cleanup(
                cloud,
                &mut ledger,
                (&run_id, &owner),
                attempted,
                &args,
                progress,
            );
            Err(failed(source, cleanup.await, progress))
        }
    }
}

/// What `up --via eice` did.
#[derive(Debug, Serialize)]
pub struct UpEndpointResult {
    pub cluster: String,
    pub region: String,
    pub via: &'static str,
    pub vpc_id: String,
    #[serde(flatten)]
    pub endpoint: crate::eice::setup::Ready,
}

impl fmt::Display for UpEndpointResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.endpoint;
        let verb = match (e.created, e.bastions) {
            (true, _) => "created",
            (false, true) => "using bastion's",
            (false, false) => "using the VPC's",
        };
        writeln!(
            f,
            "{verb} EC2 Instance Connect Endpoint {} for cluster {} ({})",
            e.endpoint_id, self.cluster, self.region
        )?;
        writeln!(f, "  state:      {}", e.state)?;
        if let Some(s) = e.ready_after_seconds {
            writeln!(f, "  ready in:   {}m{:02}s", s / 60, s % 60)?;
        }
        writeln!(f, "  subnet:     {}", e.subnet_id)?;
        writeln!(f, "  groups:     {}", e.security_group_ids.join(", "))?;
        if e.rules.is_empty() {
            writeln!(f, "  rules:      none added (the groups already allow it)")?;
        }
        for r in &e.rules {
            writeln!(f, "  added:      {r}")?;
        }
        write!(
            f,
            "next: bastion connect --cluster {} --via eice (a tunnel lasts at most an hour)",
            self.cluster
        )
    }
}

/// `up --via eice`: the VPC's EC2 Instance Connect Endpoint, made ready for the cluster (see
/// [`crate::eice::setup`]), with the ledger, the rollback and the dead-run cleanup of the
/// proxy's path, in a ledger of its own beside the proxy's.
async fn run_eice(ctx: &Context, args: UpArgs, given: &Given) -> anyhow::Result<()> {
    let flags: Vec<&str> = UpArgs::PROXY_ONLY
        .iter()
        .filter(|(id, _)| given.has(id))
        .map(|(_, flag)| *flag)
        .collect();
    if !flags.is_empty() {
        return Err(UpError::ProxyOnly {
            flags: flags.join(", "),
        }
        .into());
    }
    let cloud = ctx.cloud.as_ref();
    let region = cloud.region().to_string();
    let progress = &ctx.progress;
    progress.phase(format!("finding the head node of cluster {}", args.cluster));
    let head = find_head_node(cloud, &args.cluster).await?;
    let result = |endpoint| UpEndpointResult {
        cluster: args.cluster.clone(),
        region: region.clone(),
        via: "eice",
        vpc_id: head.vpc_id.clone(),
        endpoint,
    };
    let dir = ctx.bastion_dir(&args.cluster).await?;
    if args.dry_run {
        let endpoints = crate::eice::list(cloud, Some(&head.vpc_id)).await?;
        progress.finish();
        let plan = match endpoints.first() {
            Some(e) => format!(
                "would use the VPC's EC2 Instance Connect Endpoint {} ({}) and add the rules it lacks",
                e.id,
                e.state.as_str()
            ),
            None => format!(
                "would create an EC2 Instance Connect Endpoint in {} with a security group {} that lets out tcp 22 to the head node's group, and a rule admitting it on that group",
                args.subnet.as_deref().unwrap_or(&head.subnet_id),
                crate::footprint::endpoint_group_name(&head.vpc_id)
            ),
        };
        return emit(
            ctx.output,
            &serde_json::json!({ "cluster": args.cluster, "via": "eice", "plan": plan }),
        );
    }
    let _lock = dir.lock(&args.cluster)?;
    let path = dir.endpoint_ledger();
    let owner = Expected::of(ctx, &args.cluster).await?.any_machine();
    if let Some(old) = Ledger::load(&path)? {
        if old.data.complete {
            // Set up before: said as it stands, nothing added (as for a proxy that exists).
            let endpoints = crate::eice::list(cloud, Some(&head.vpc_id)).await?;
            let endpoint = crate::eice::choose(
                &endpoints,
                &args.cluster,
                &head.vpc_id,
                Some(&head.subnet_id),
            )
            .map_err(|e| UpError::EndpointGone {
                cluster: args.cluster.clone(),
                ledger: path.display().to_string(),
                why: e.to_string(),
            })?;
            progress.finish();
            let made = old.resources().iter().any(|r| {
                matches!(r, crate::ledger::Resource::InstanceConnectEndpoint { id, .. } if *id == endpoint.id)
            });
            return emit(
                ctx.output,
                &result(crate::eice::setup::Ready {
                    endpoint_id: endpoint.id,
                    state: endpoint.state.as_str().into(),
                    subnet_id: endpoint.subnet_id,
                    security_group_ids: endpoint.security_group_ids,
                    created: false,
                    bastions: made,
                    ready_after_seconds: None,
                    rules: Vec::new(),
                }),
            );
        }
        remove_dead_run(cloud, old, &owner, &args.cluster, progress).await?;
    }
    let run_id = new_run_id();
    let mut ledger = Ledger::new(path, &args.cluster, &region, &owner.account);
    ledger.data.run_id = Some(run_id.clone());
    if let Err(e) = ledger.save() {
        let _ = std::fs::remove_file(ledger.path());
        return Err(e.into());
    }
    tracing::info!(run_id, "setting up the EC2 Instance Connect Endpoint");
    let request = crate::eice::setup::Request {
        head: &head,
        subnet: args.subnet.as_deref(),
        run_id: &run_id,
        region: &region,
        timeout: (!args.no_wait).then(|| Duration::from_secs(args.timeout * 60)),
    };
    let outcome = tokio::select! {
        r = crate::eice::setup::ensure(cloud, &request, &mut ledger, progress) => r,
        _ = tokio::signal::ctrl_c() => Err(UpError::Interrupted.into()),
    };
    if outcome.is_ok() || args.keep_on_failure {
        ledger.data.complete = true;
        if let Err(e) = ledger.save() {
            tracing::warn!("{e}");
        }
    }
    match outcome {
        Ok(ready) => {
            progress.finish();
            emit(ctx.output, &result(ready))
        }
        Err(source) => {
            // What an endpoint's setup makes: rules and groups, never an instance, a key pair or
            // anything of IAM (so a failed run asks for none of those).
            let kinds = Kinds {
                rules: true,
                groups: true,
                ..Kinds::default()
            };
            let cleanup = cleanup(
                cloud,
                &mut ledger,
                (&run_id, &owner),
                kinds,
                &args,
                progress,
            );
            Err(failed(source, cleanup.await, progress))
        }
    }
}

/// A run's error, with what its cleanup removed and left.
fn failed(error: anyhow::Error, cleanup: CleanupSummary, progress: &Progress) -> anyhow::Error {
    progress.finish();
    UpError::Failed { error, cleanup }.into()
}

/// Removes what a dead run left (its ledger, then what carries its run tag), saying so; what
/// cannot be removed stops this run with the list and `bastion down`.
async fn remove_dead_run(
    cloud: &(impl Cloud + ?Sized),
    mut old: Ledger,
    owner: &Expected,
    cluster: &str,
    progress: &Progress,
) -> anyhow::Result<()> {
    progress.phase(format!(
        "an earlier `bastion up` here was interrupted; removing what {} records",
        old.path().display()
    ));
    let run = old.data.run_id.clone();
    let report =
        teardown::remove_run(cloud, &mut old, run.as_deref(), owner, Kinds::ALL, progress).await;
    let (removed, failed) = (report.removed(), report.failed());
    if !failed.is_empty() {
        return Err(UpError::Leftovers {
            cluster: cluster.into(),
            ledger: old.path().display().to_string(),
            failed,
        }
        .into());
    }
    let path = old.path().display().to_string();
    old.remove()?;
    tracing::warn!(
        "an earlier `bastion up` here was interrupted; removed what it left ({path}){}",
        if removed.is_empty() {
            ": nothing was left in AWS".to_string()
        } else {
            format!(": {}", removed.join(", "))
        }
    );
    Ok(())
}

/// Removes what this run created: the ledger first, then anything tagged with this run's id
/// (a resource whose create call succeeded but whose response was lost).
async fn cleanup(
    cloud: &(impl Cloud + ?Sized),
    ledger: &mut Ledger,
    (run_id, owner): (&str, &Expected),
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
    let work = teardown::remove_run(cloud, ledger, Some(run_id), owner, attempted, progress);
    let report = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => {
            let mut r = Report::default();
            r.add_failed("cleanup interrupted by a second Ctrl-C".into());
            r
        }
    };
    if report.failed().is_empty() && ledger.resources().is_empty() {
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
