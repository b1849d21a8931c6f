//! `bastion forget`: removes the head node's pinned host key from bastion's known_hosts (plain
//! and hashed lines), printing each fingerprint it removes, so that re-pinning after a rebuild
//! or a re-key is a deliberate act and never a side effect of a changed key.

use std::fmt;

use serde::Serialize;

use crate::cli::ForgetArgs;
use crate::cluster::find_head_node;
use crate::context::Context;
use crate::ssh::known_hosts;
use crate::ui::emit;

#[derive(Debug, Serialize)]
pub struct ForgetResult {
    pub cluster: String,
    pub head_node: String,
    pub known_hosts: String,
    /// SHA256 fingerprints of the keys removed.
    pub removed: Vec<String>,
}

impl fmt::Display for ForgetResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.removed.is_empty() {
            return write!(
                f,
                "no host key was pinned for the head node {} of cluster {} in {}",
                self.head_node, self.cluster, self.known_hosts
            );
        }
        for fp in &self.removed {
            writeln!(
                f,
                "removed the pinned host key {fp} of the head node {} (cluster {}) from {}",
                self.head_node, self.cluster, self.known_hosts
            )?;
        }
        write!(
            f,
            "the next `bastion connect --cluster {}` pins the key the head node presents then: \
             compare its fingerprint with the head node's own (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there)",
            self.cluster
        )
    }
}

pub async fn run(ctx: &Context, args: ForgetArgs) -> anyhow::Result<()> {
    ctx.progress
        .phase(format!("finding the head node of cluster {}", args.cluster));
    let head = find_head_node(ctx.cloud.as_ref(), &args.cluster).await?;
    let file = ctx.known_hosts();
    let removed = known_hosts::forget(&file, &head.instance.id)?;
    ctx.progress.finish();
    emit(
        ctx.output,
        &ForgetResult {
            cluster: args.cluster,
            head_node: head.instance.id,
            known_hosts: file.display().to_string(),
            removed,
        },
    )
}
