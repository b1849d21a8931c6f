//! `bastion down`: remove everything `up` created for a cluster (the ledger, newest first), then
//! sweep by the `bastion:cluster` tag for anything the ledger does not know. Re-runnable.

use std::fmt;

use serde::Serialize;

use crate::cli::DownArgs;
use crate::context::Context;
use crate::footprint::{Expected, TAG_CLUSTER};
use crate::ledger::Ledger;
use crate::state::StateError;
use crate::teardown::{self, Report};
use crate::ui::emit;

#[derive(Debug, Serialize)]
pub struct DownResult {
    pub cluster: String,
    pub region: String,
    pub removed: Vec<String>,
    pub failed: Vec<String>,
    /// Tagged `bastion:cluster=NAME` but not made by bastion: listed, left untouched.
    pub spared: Vec<String>,
    /// bastion's, kept because another cluster still uses it (the VPC's EC2 Instance Connect
    /// Endpoint that clusters of one VPC share), or not bastion's to remove (an endpoint it
    /// found): listed, left in place.
    pub kept: Vec<String>,
}

impl fmt::Display for DownResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.removed.is_empty() && self.failed.is_empty() {
            write!(
                f,
                "no bastion for cluster {} in {}: nothing to remove",
                self.cluster, self.region
            )?;
        } else {
            write!(f, "bastion of cluster {} ({}):", self.cluster, self.region)?;
            for r in &self.removed {
                write!(f, "\n  removed {r}")?;
            }
            for r in &self.failed {
                write!(f, "\n  NOT removed {r}")?;
            }
        }
        for k in &self.kept {
            write!(f, "\n  kept {k}")?;
        }
        if !self.spared.is_empty() {
            write!(
                f,
                "\nleft alone (tagged bastion:cluster={} but not made by bastion; check CloudTrail for who tagged them):",
                self.cluster
            )?;
            for r in &self.spared {
                write!(f, "\n  {r}")?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{count} resource(s) of the bastion of '{cluster}' could not be removed (listed above); run `bastion down --cluster {cluster}` again"
)]
pub struct DownIncomplete {
    pub cluster: String,
    pub count: usize,
    /// AWS refused for want of credentials or permission: exit 3.
    pub denied: bool,
}
impl crate::exit::ExitStatus for DownIncomplete {
    fn exit_status(&self) -> Option<u8> {
        Some(if self.denied {
            crate::exit::DENIED
        } else {
            crate::exit::FAILED
        })
    }
}

pub async fn run(ctx: &Context, args: DownArgs) -> anyhow::Result<()> {
    let cloud = ctx.cloud.as_ref();
    let progress = &ctx.progress;
    let mut report = Report::default();

    let dir = ctx.bastion_dir(&args.cluster).await?;
    // Without a usable state dir, the sweep by tag still removes everything in AWS.
    let lock = match dir.lock(&args.cluster) {
        Ok(l) => Some(l),
        Err(e @ StateError::Busy { .. }) => return Err(e.into()),
        Err(e) => {
            tracing::warn!("{e}; finding the resources by tag instead");
            None
        }
    };
    let mut corrupt = false;
    let mut ledger = match Ledger::load(&dir.ledger()) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("{e}");
            corrupt = matches!(e, crate::ledger::LedgerError::Corrupt { .. });
            None
        }
    };
    // What `up --via eice` set up: the cluster's rules, and the endpoint with its group when no
    // other cluster uses them. Its ledger first: the sweep by tag below finds the rest.
    match Ledger::load(&dir.endpoint_ledger()) {
        Ok(Some(mut l)) => {
            report.merge(teardown::teardown_ledger(cloud, &mut l, progress).await);
            if l.resources().is_empty()
                && let Err(e) = l.remove()
            {
                report.add_failed(e.to_string());
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    // Whatever the ledger says, the sweep by tag takes any proxy bastion made for the cluster
    // (one made from another machine too), and nothing that only carries the tag.
    let account = ctx.identity().await?.account.clone();
    let owner = Expected::new(&args.cluster, cloud.region(), &account, None);
    report.merge(
        teardown::remove_tagged(
            cloud,
            ledger.as_mut(),
            (TAG_CLUSTER, &args.cluster),
            &owner,
            crate::footprint::Kinds::ALL,
            progress,
        )
        .await,
    );
    if let Some(l) = ledger
        && l.resources().is_empty()
        && let Err(e) = l.remove()
    {
        report.add_failed(e.to_string());
    }

    // An unreadable ledger (a crash, a full disk), after the sweep by tag did its job: moved
    // aside, so the next `up` starts clean.
    if corrupt && report.failed().is_empty() && lock.is_some() {
        match Ledger::move_aside(&dir.ledger()) {
            Ok(to) => report.add_removed(format!(
                "the unreadable ledger (moved to {}; the sweep by tag found what it held)",
                to.display()
            )),
            Err(e) => report.add_failed(format!("the unreadable ledger: {e}")),
        }
    }
    // The local key of a bastion whose ledger was lost.
    let key = dir.private_key();
    if key.exists() && lock.is_some() {
        let what = format!("local key {}", key.display());
        match teardown::remove_local(&key) {
            Ok(_) => report.add_removed(what),
            Err(e) => report.add_failed(format!("{what}: {e}")),
        }
    }
    // The OpenSSH config `ssh-config --install` wrote.
    let installed = crate::commands::ssh_config::installed_file(ctx, &args.cluster);
    if installed.exists() {
        match std::fs::remove_file(&installed) {
            Ok(()) => report.add_removed(format!("ssh config {}", installed.display())),
            Err(e) => report.add_failed(format!("ssh config {}: {e}", installed.display())),
        }
    }
    drop(lock);
    let failed = report.failed();
    if failed.is_empty() {
        let _ = std::fs::remove_file(dir.dir.join("lock"));
        let _ = std::fs::remove_dir(&dir.dir);
    }

    progress.finish();
    let count = failed.len();
    emit(
        ctx.output,
        &DownResult {
            cluster: args.cluster.clone(),
            region: cloud.region().to_string(),
            removed: report.removed(),
            failed,
            spared: report.spared,
            kept: report.kept,
        },
    )?;
    if count > 0 {
        return Err(DownIncomplete {
            cluster: args.cluster,
            count,
            denied: report.denied,
        }
        .into());
    }
    Ok(())
}
