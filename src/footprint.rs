//! What makes a resource bastion's: the names it gives each resource of a cluster, the tags it
//! writes, and what a resource must have to count as its own. A tag alone proves nothing (anyone
//! with `ec2:CreateTags` can write one, the proxy's own role included): an instance must also run
//! with bastion's instance profile and key pair, a group must have bastion's name and
//! description, a key pair and an IAM entity bastion's names. `plan`, `provision`, `teardown`,
//! `proxy`, `status` and `doctor` ask this module; none of them spells a tag or a name itself.

use crate::aws::{
    AwsResult, Iam, IamEntity, Instance, Instances, KeyPair, NOT_TERMINATED, Network,
    SecurityGroup, Tag, or_missing, tag_value,
};
use crate::context::Context;
use crate::ledger::{Ledger, Resource};
use crate::state::BastionDir;

/// The tag every bastion resource carries; its value is the cluster name.
pub const TAG_CLUSTER: &str = "bastion:cluster";

/// The tag that names the `up` run that created a resource; `up` sweeps by it after a failure.
pub const TAG_RUN: &str = "bastion:run";

/// IAM is global: roles and profiles also carry the region of their bastion.
pub const TAG_REGION: &str = "bastion:region";

/// Set by the proxy's bootstrap: `bootstrapping`, `ready` or `failed`.
pub const TAG_STATE: &str = "bastion:state";

/// Set by the proxy's bootstrap: its SSH ed25519 host key, OpenSSH format.
pub const TAG_HOST_KEY: &str = "bastion:host-key";

/// Set by the proxy's bootstrap after `ready`: `installing`, `ready`, `failed` (or `disabled`).
pub const TAG_DESKTOP: &str = "bastion:desktop";

/// The proxy's OS variant (`al2023`, `ubuntu2204`), so later commands know its login user.
pub const TAG_OS: &str = "bastion:os";

/// The head node the proxy was made for.
pub const TAG_HEAD_NODE: &str = "bastion:head-node";

/// What `doctor --fix` creates carries it; its value is the cluster or subnet it was run for.
pub const TAG_DOCTOR: &str = "bastion:doctor";

/// IAM path of every role and instance profile bastion creates.
pub const IAM_PATH: &str = "/bastion/";

/// The tags every resource of one `up` run carries.
pub fn resource_tags(cluster: &str, run_id: &str, region: &str, name: &str) -> Vec<Tag> {
    vec![
        Tag::new("Name", name),
        Tag::new(TAG_CLUSTER, cluster),
        Tag::new(TAG_RUN, run_id),
        Tag::new(TAG_REGION, region),
    ]
}

/// Names of the AWS resources of one cluster's bastion. They are deterministic: the key pair
/// and security group names are unique per region (and the role per account), which makes a
/// second concurrent `up` fail instead of creating a twin.
#[derive(Debug, Clone)]
pub struct Names {
    pub key_pair: String,
    pub security_group: String,
    pub role: String,
    pub instance_profile: String,
    pub instance: String,
    /// The security group's description: together with its name, what only bastion writes.
    pub security_group_description: String,
}

impl Names {
    pub fn new(cluster: &str, region: &str) -> Self {
        let regional = format!("bastion-{cluster}");
        let global = iam_name(&format!("bastion-{cluster}-{region}"));
        Names {
            key_pair: regional.clone(),
            security_group: regional.clone(),
            role: global.clone(),
            instance_profile: global,
            instance: regional,
            security_group_description: format!(
                "bastion proxy for ParallelCluster cluster {cluster}: SSH from allowed CIDRs only"
            ),
        }
    }
}

/// IAM names are at most 64 characters: shorten long ones with a stable hash suffix.
fn iam_name(full: &str) -> String {
    if full.len() <= 64 {
        return full.to_string();
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let suffix = format!("-{:08x}", hash as u32);
    let keep = 64 - suffix.len();
    let mut cut = keep;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &full[..cut], suffix)
}

/// The name of the security group bastion gives the EC2 Instance Connect Endpoint it makes in
/// `vpc_id`: one per VPC, as the endpoint is (clusters of one VPC share both).
pub fn endpoint_group_name(vpc_id: &str) -> String {
    format!("bastion-eice-{vpc_id}")
}

/// Its description: with the name, what only bastion writes.
pub fn endpoint_group_description(vpc_id: &str) -> String {
    format!(
        "bastion EC2 Instance Connect Endpoint of {vpc_id}: SSH out to the head nodes it serves only"
    )
}

/// Whether `g` is a security group bastion made for an EC2 Instance Connect Endpoint: a cluster
/// tag, and the name and description bastion gives it in its VPC.
pub fn owns_endpoint_group(g: &SecurityGroup) -> bool {
    tag_value(&g.tags, TAG_CLUSTER).is_some()
        && g.vpc_id.as_deref().is_some_and(|vpc| {
            g.name == endpoint_group_name(vpc)
                && g.description.as_deref() == Some(endpoint_group_description(vpc).as_str())
        })
}

/// The clusters an endpoint group of bastion's serves: the groups its egress lets tcp 22 out to,
/// one per head node group (bastion adds one for each cluster and removes it with the cluster).
pub fn endpoint_users(g: &SecurityGroup) -> Vec<String> {
    let mut users: Vec<String> = g
        .egress
        .iter()
        .filter(|r| r.covers_tcp_port(22))
        .filter_map(|r| match &r.source {
            crate::aws::Source::Group(to) => Some(to.clone()),
            _ => None,
        })
        .collect();
    users.sort();
    users.dedup();
    users
}

/// What identifies the proxy of one cluster: the names bastion gives its resources, the
/// caller's account, and the instance this machine's ledger records, if any.
#[derive(Debug, Clone)]
pub struct Expected {
    pub cluster: String,
    pub names: Names,
    pub account: String,
    pub ledger_instance: Option<String>,
}

impl Expected {
    pub fn new(cluster: &str, region: &str, account: &str, dir: Option<&BastionDir>) -> Self {
        Expected {
            cluster: cluster.into(),
            names: Names::new(cluster, region),
            account: account.into(),
            ledger_instance: dir.and_then(ledger_instance),
        }
    }

    /// The proxy of `cluster` as this machine knows it: its names, the caller's account, and the
    /// instance its ledger records.
    pub async fn of(ctx: &Context, cluster: &str) -> anyhow::Result<Expected> {
        let dir = ctx.bastion_dir(cluster).await?;
        let account = ctx.identity().await?.account.clone();
        Ok(Expected::new(
            cluster,
            ctx.cloud.region(),
            &account,
            Some(&dir),
        ))
    }

    /// The same without this machine's ledger: a proxy bastion made from any machine.
    pub fn any_machine(&self) -> Expected {
        Expected {
            ledger_instance: None,
            ..self.clone()
        }
    }

    /// Whether `g` is the security group bastion made for the cluster: its tag, its name and
    /// its description (what only bastion writes together).
    pub fn owns_group(&self, g: &SecurityGroup) -> bool {
        tag_value(&g.tags, TAG_CLUSTER) == Some(self.cluster.as_str())
            && g.name == self.names.security_group
            && g.description.as_deref() == Some(self.names.security_group_description.as_str())
    }

    /// Whether `k` is the key pair bastion made for the cluster: its tag and its name.
    pub fn owns_key_pair(&self, k: &KeyPair) -> bool {
        tag_value(&k.tags, TAG_CLUSTER) == Some(self.cluster.as_str())
            && k.name == self.names.key_pair
    }

    /// Whether `p`, an instance profile under [`IAM_PATH`] that carries bastion's tags (see
    /// [`iam_matches`]), is the one bastion made for the cluster: its name.
    pub fn owns_profile(&self, p: &IamEntity) -> bool {
        p.name == self.names.instance_profile
    }

    /// Whether `r`, a role under [`IAM_PATH`] that carries bastion's tags, is the one bastion made
    /// for the cluster: its name.
    pub fn owns_role(&self, r: &IamEntity) -> bool {
        r.name == self.names.role
    }

    /// Why `i` is not this cluster's proxy, or None when it is.
    pub fn disqualify(&self, i: &Instance) -> Option<String> {
        self.not_bastions(i).or_else(|| self.not_the_ledgers(i))
    }

    /// Why `i` is not a proxy bastion made for the cluster (from any machine).
    pub(crate) fn not_bastions(&self, i: &Instance) -> Option<String> {
        if i.tag(TAG_CLUSTER) != Some(self.cluster.as_str()) {
            return Some(format!("it is not tagged {TAG_CLUSTER}={}", self.cluster));
        }
        let profile = format!("instance-profile{IAM_PATH}{}", self.names.instance_profile);
        let profile_ok = i.instance_profile_arn.as_deref().is_some_and(|arn| {
            let parts: Vec<&str> = arn.splitn(6, ':').collect();
            matches!(parts.as_slice(), ["arn", _, "iam", "", account, resource]
                if *account == self.account && *resource == profile)
        });
        if !profile_ok {
            return Some(format!(
                "it does not run with bastion's instance profile {}{} (it has {})",
                IAM_PATH,
                self.names.instance_profile,
                i.instance_profile_arn.as_deref().unwrap_or("none")
            ));
        }
        if i.key_name.as_deref() != Some(self.names.key_pair.as_str()) {
            return Some(format!(
                "it was not launched with bastion's key pair {} (it has {})",
                self.names.key_pair,
                i.key_name.as_deref().unwrap_or("none")
            ));
        }
        None
    }

    /// Why `i`, a proxy bastion made, is not the one this machine's ledger records.
    pub(crate) fn not_the_ledgers(&self, i: &Instance) -> Option<String> {
        if let Some(id) = &self.ledger_instance
            && *id != i.id
        {
            return Some(format!(
                "this machine's ledger records the proxy {id}, not this instance (if the bastion \
                 was made again from another machine, run `bastion down --cluster {}` and `bastion up` here)",
                self.cluster
            ));
        }
        None
    }
}

/// The instance a ledger in `dir` records, if one does (a corrupt ledger records none).
fn ledger_instance(dir: &BastionDir) -> Option<String> {
    match Ledger::load(&dir.ledger()) {
        Ok(Some(l)) => l.resources().iter().find_map(|r| match r {
            Resource::Instance { id } => Some(id.clone()),
            _ => None,
        }),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("{e}; not checking the proxy against it");
            None
        }
    }
}

/// Whether an IAM entity found under [`IAM_PATH`] is one a sweep by `key=value` considers: it
/// carries that tag and a cluster tag, and the region it names, if any, is this one (IAM is
/// global). Whether it is bastion's own is then [`Expected::owns_role`] or `owns_profile`.
pub fn iam_matches(e: &IamEntity, key: &str, value: &str, region: &str) -> bool {
    tag_value(&e.tags, key) == Some(value)
        && tag_value(&e.tags, TAG_CLUSTER).is_some()
        && tag_value(&e.tags, TAG_REGION).is_none_or(|r| r == region)
}

/// Which kinds of resource a sweep looks for. A failed `up` sweeps only the kinds it tried to
/// create (so a user without IAM rights, stopped at the first step, is not asked for them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds {
    pub instances: bool,
    pub rules: bool,
    pub groups: bool,
    pub key_pairs: bool,
    pub iam: bool,
}

impl Kinds {
    pub const ALL: Kinds = Kinds {
        instances: true,
        rules: true,
        groups: true,
        key_pairs: true,
        iam: true,
    };
}

/// What bastion made for the cluster and still exists, found by its tag and names (read only):
/// for the message of an `up` that finds another run's resources in its way.
pub async fn inventory(
    cloud: &(impl Instances + Network + Iam + ?Sized),
    owner: &Expected,
) -> AwsResult<Vec<String>> {
    let cluster = owner.cluster.as_str();
    let mut found = Vec::new();
    for i in cloud
        .instances_by_tags(&[(TAG_CLUSTER, cluster)], NOT_TERMINATED)
        .await?
    {
        if owner.disqualify(&i).is_none() {
            found.push(format!("instance {} ({})", i.id, i.state));
        }
    }
    for g in cloud.security_groups_by_tag(TAG_CLUSTER, cluster).await? {
        if owner.owns_group(&g) {
            found.push(format!("security group {}", g.id));
        }
    }
    for k in cloud.key_pairs_by_tag(TAG_CLUSTER, cluster).await? {
        if owner.owns_key_pair(&k) {
            found.push(format!("key pair {}", k.name));
        }
    }
    for p in or_missing(cloud.instance_profiles_under(IAM_PATH).await)?.unwrap_or_default() {
        if owner.owns_profile(&p) {
            found.push(format!("instance profile {}", p.name));
        }
    }
    for r in or_missing(cloud.roles_under(IAM_PATH).await)?.unwrap_or_default() {
        if owner.owns_role(&r) {
            found.push(format!("IAM role {}", r.name));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_names_fit_and_stay_stable() {
        assert_eq!(
            Names::new("demo", "us-east-1").role,
            "bastion-demo-us-east-1"
        );
        let long = "c".repeat(60);
        let a = Names::new(&long, "eu-central-1").role;
        assert_eq!(a.len(), 64);
        assert_eq!(a, Names::new(&long, "eu-central-1").role);
        assert_ne!(a, Names::new(&long, "eu-central-2").role);
    }
}
