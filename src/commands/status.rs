//! `bastion status`: the bastions in the region, from their instances' tags, each checked to be
//! the proxy bastion made (`crate::footprint::Expected`); tagged instances that fail are listed apart as
//! look-alikes. Reads only.

use std::fmt;

use serde::Serialize;

use crate::aws::NOT_TERMINATED;
use crate::cli::StatusArgs;
use crate::context::Context;
use crate::footprint::{Expected, TAG_CLUSTER, TAG_DESKTOP, TAG_STATE};
use crate::proxy::{Lookalike, Search};
use crate::ui::emit;
use crate::values::parse_cluster_name;

#[derive(Debug, Serialize)]
pub struct BastionRow {
    pub cluster: String,
    pub instance_id: String,
    pub state: String,
    pub bootstrap: Option<String>,
    pub desktop: Option<String>,
    pub public_ip: Option<String>,
    pub launch_time: Option<String>,
    pub instance_type: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StatusResult {
    pub region: String,
    pub bastions: Vec<BastionRow>,
    /// Instances tagged `bastion:cluster` that are not a proxy bastion made.
    pub lookalikes: Vec<Lookalike>,
}

impl fmt::Display for StatusResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.table(f)?;
        if !self.lookalikes.is_empty() {
            write!(
                f,
                "\nlook-alikes (tagged bastion:cluster but not made by bastion; never connected to or started):"
            )?;
            for l in &self.lookalikes {
                write!(f, "\n  {l}")?;
            }
        }
        Ok(())
    }
}

impl StatusResult {
    fn table(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bastions.is_empty() {
            return write!(f, "no bastions in {}", self.region);
        }
        let header = [
            "CLUSTER",
            "INSTANCE",
            "STATE",
            "BOOTSTRAP",
            "DESKTOP",
            "PUBLIC IP",
            "LAUNCHED",
            "TYPE",
        ];
        let rows: Vec<[String; 8]> = self
            .bastions
            .iter()
            .map(|b| {
                // Tag values are anyone's to write: shown, never obeyed by the terminal.
                let d = |v: &Option<String>| {
                    v.as_deref()
                        .map(crate::ui::printable)
                        .unwrap_or_else(|| "-".into())
                };
                [
                    crate::ui::printable(&b.cluster),
                    b.instance_id.clone(),
                    b.state.clone(),
                    d(&b.bootstrap),
                    d(&b.desktop),
                    d(&b.public_ip),
                    d(&b.launch_time),
                    d(&b.instance_type),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        write!(f, "{}", line(&header.map(String::from)))?;
        for r in &rows {
            write!(f, "\n{}", line(r))?;
        }
        Ok(())
    }
}

pub async fn run(ctx: &Context, args: StatusArgs) -> anyhow::Result<()> {
    let cloud = ctx.cloud.as_ref();
    let value = args.cluster.as_deref().unwrap_or("*");
    let mut instances = cloud
        .instances_by_tags(&[(TAG_CLUSTER, value)], NOT_TERMINATED)
        .await?;
    instances.sort_by(|a, b| (a.tag(TAG_CLUSTER), &a.id).cmp(&(b.tag(TAG_CLUSTER), &b.id)));
    let mut genuine = Vec::new();
    let mut lookalikes = Vec::new();
    let mut clusters: Vec<String> = instances
        .iter()
        .filter_map(|i| i.tag(TAG_CLUSTER).map(str::to_string))
        .collect();
    clusters.dedup();
    for cluster in clusters {
        let of_cluster: Vec<_> = instances
            .iter()
            .filter(|i| i.tag(TAG_CLUSTER) == Some(cluster.as_str()))
            .cloned()
            .collect();
        // The tag's value is untrusted: only a cluster name gets near a path.
        if parse_cluster_name(&cluster).is_err() {
            lookalikes.extend(of_cluster.into_iter().map(|i| Lookalike {
                instance: i.id,
                reason: "its bastion:cluster tag is not a ParallelCluster cluster name".into(),
                stale_ledger: false,
            }));
            continue;
        }
        let search = Search::sort(&Expected::of(ctx, &cluster).await?, of_cluster);
        // Every genuine one is listed (a stopping and a pending proxy may overlap).
        genuine.extend(search.proxy.into_iter().chain(search.more));
        lookalikes.extend(search.lookalikes);
    }
    genuine.sort_by(|a, b| (a.tag(TAG_CLUSTER), &a.id).cmp(&(b.tag(TAG_CLUSTER), &b.id)));
    let bastions = genuine
        .into_iter()
        .map(|i| BastionRow {
            cluster: i.tag(TAG_CLUSTER).unwrap_or_default().to_string(),
            bootstrap: i.tag(TAG_STATE).map(str::to_string),
            desktop: i.tag(TAG_DESKTOP).map(str::to_string),
            instance_id: i.id,
            state: i.state,
            public_ip: i.public_ip,
            launch_time: i.launch_time,
            instance_type: i.instance_type,
        })
        .collect();
    ctx.progress.finish();
    emit(
        ctx.output,
        &StatusResult {
            region: cloud.region().to_string(),
            bastions,
            lookalikes,
        },
    )
}
