//! `bastion status`: the bastions in the region, from their instances' tags, each checked to be
//! the proxy bastion made (`crate::footprint::Expected`); tagged instances that fail are listed apart as
//! look-alikes. Reads only.

use std::fmt;

use serde::Serialize;

use crate::aws::NOT_TERMINATED;
use crate::cli::StatusArgs;
use crate::context::Context;
use crate::footprint::{Expected, TAG_CLUSTER, TAG_DESKTOP, TAG_STATE};

/// ParallelCluster's tags on a head node.
const TAG_NODE_TYPE: &str = "parallelcluster:node-type";
const TAG_CLUSTER_NAME: &str = "parallelcluster:cluster-name";
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

/// An EC2 Instance Connect Endpoint in a VPC of a cluster in view: the other way in.
#[derive(Debug, Serialize)]
pub struct EndpointRow {
    pub endpoint_id: String,
    pub state: String,
    pub vpc_id: String,
    pub subnet_id: String,
    /// The clusters whose head nodes are in its VPC (by their ParallelCluster tags).
    pub clusters: Vec<String>,
    /// bastion made it (`up --via eice`, for one of the VPC's clusters): its one security
    /// group is the endpoint group bastion makes. `down` removes it with the last cluster it
    /// serves; one bastion did not make is never removed.
    pub created_by_bastion: bool,
}

#[derive(Debug, Serialize)]
pub struct StatusResult {
    pub region: String,
    pub bastions: Vec<BastionRow>,
    /// EC2 Instance Connect Endpoints (`connect --via eice`) in the VPCs of the clusters in view.
    pub endpoints: Vec<EndpointRow>,
    /// Instances tagged `bastion:cluster` that are not a proxy bastion made.
    pub lookalikes: Vec<Lookalike>,
}

impl fmt::Display for StatusResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.table(f)?;
        if !self.endpoints.is_empty() {
            write!(
                f,
                "\n\nEC2 Instance Connect Endpoints (connect --via eice):\n"
            )?;
            let header =
                ["ENDPOINT", "STATE", "VPC", "SUBNET", "CLUSTERS", "MADE BY"].map(String::from);
            let rows: Vec<[String; 6]> = self
                .endpoints
                .iter()
                .map(|e| {
                    [
                        e.endpoint_id.clone(),
                        e.state.clone(),
                        e.vpc_id.clone(),
                        e.subnet_id.clone(),
                        e.clusters
                            .iter()
                            .map(|c| crate::ui::printable(c))
                            .collect::<Vec<_>>()
                            .join(","),
                        if e.created_by_bastion {
                            "bastion"
                        } else {
                            "someone else"
                        }
                        .to_string(),
                    ]
                })
                .collect();
            write!(f, "{}", columns(&header, &rows))?;
        }
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
        write!(f, "{}", columns(&header.map(String::from), &rows))
    }
}

/// A table: left-aligned columns as wide as their widest cell, two spaces apart.
fn columns<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = header.clone().map(|h| h.len());
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String; N]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    std::iter::once(line(header))
        .chain(rows.iter().map(line))
        .collect::<Vec<_>>()
        .join("\n")
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
    let endpoints = endpoints(ctx, args.cluster.as_deref()).await?;
    ctx.progress.finish();
    emit(
        ctx.output,
        &StatusResult {
            region: cloud.region().to_string(),
            bastions,
            endpoints,
            lookalikes,
        },
    )
}

/// The endpoints in the VPCs of `cluster`'s head node, or of every head node in the region.
/// Where they cannot be listed (an identity that may not), none, and a warning says why.
async fn endpoints(ctx: &Context, cluster: Option<&str>) -> anyhow::Result<Vec<EndpointRow>> {
    let cloud = ctx.cloud.as_ref();
    // (VPC, cluster) of the head nodes in view, by ParallelCluster's tags: shown, never obeyed.
    let heads: Vec<(String, String)> = match cluster {
        Some(c) => match crate::cluster::find_head_node(cloud, c).await {
            Ok(h) => vec![(h.vpc_id, c.to_string())],
            Err(e) => {
                tracing::info!("no endpoints listed: {e}");
                return Ok(Vec::new());
            }
        },
        None => cloud
            .instances_by_tags(&[(TAG_NODE_TYPE, "HeadNode")], NOT_TERMINATED)
            .await?
            .into_iter()
            .filter_map(|i| Some((i.vpc_id.clone()?, i.tag(TAG_CLUSTER_NAME)?.to_string())))
            .collect(),
    };
    if heads.is_empty() {
        return Ok(Vec::new());
    }
    let vpc = match cluster {
        Some(_) => heads.first().map(|(v, _)| v.as_str()),
        None => None,
    };
    let found = match crate::eice::list(cloud, vpc).await {
        Ok(found) => found,
        // An identity without the permission (a teammate's older policy) is told at -v only.
        Err(crate::eice::EiceError::Aws { source, .. }) if source.is_denied() => {
            tracing::info!("EC2 Instance Connect Endpoints not listed: {source}");
            return Ok(Vec::new());
        }
        Err(e) => {
            tracing::warn!("EC2 Instance Connect Endpoints not listed: {e}");
            return Ok(Vec::new());
        }
    };
    // Whose each is: bastion's when its one group is the endpoint group bastion makes.
    let mut group_ids: Vec<String> = found
        .iter()
        .flat_map(|e| e.security_group_ids.clone())
        .collect();
    group_ids.sort();
    group_ids.dedup();
    let groups = if group_ids.is_empty() {
        Vec::new()
    } else {
        cloud.security_groups(&group_ids).await.unwrap_or_else(|e| {
            tracing::warn!("the endpoints' security groups not read: {e}");
            Vec::new()
        })
    };
    let bastions = |ids: &[String]| match ids {
        [only] => groups
            .iter()
            .any(|g| &g.id == only && crate::footprint::owns_endpoint_group(g)),
        _ => false,
    };
    Ok(found
        .into_iter()
        .filter_map(|e| {
            let mut clusters: Vec<String> = heads
                .iter()
                .filter(|(v, _)| *v == e.vpc_id)
                .map(|(_, c)| c.clone())
                .collect();
            clusters.sort();
            clusters.dedup();
            (!clusters.is_empty()).then(|| EndpointRow {
                created_by_bastion: bastions(&e.security_group_ids),
                endpoint_id: e.id,
                state: e.state.as_str().into(),
                vpc_id: e.vpc_id,
                subnet_id: e.subnet_id,
                clusters,
            })
        })
        .collect())
}
