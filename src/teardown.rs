//! Removing what `up` created: first the instances and the rules on others' groups found by tag
//! (one the ledger never learned of would hold the proxy's group), then exactly what the ledger
//! records, in reverse order, then a sweep by tag that catches what the ledger could not know
//! (another machine, a lost state dir, a create call whose response never arrived) and retries
//! what it could not remove. NotFound counts as done, so every step can be re-run; each resource
//! is reported once. A resource without bastion's tag and names is never touched.

use std::time::Duration;

use crate::aws::{AwsError, AwsResult, Cloud, Iam, Instances, NOT_TERMINATED, Network, or_missing};
use crate::footprint::{Expected, IAM_PATH, Kinds, TAG_RUN, iam_matches};
use crate::ledger::{Ledger, Resource};
use crate::ui::Progress;

/// What a teardown removed, could not remove, and left alone. Each resource is told once: the
/// ledger and the sweeps may each try one (a sweep retries what the ledger could not remove, once
/// what stood in its way is gone), and the last outcome is the one reported.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// In the order they happened; a keyed one replaces what was said of its resource before.
    outcomes: Vec<Outcome>,
    /// Resources that carry bastion's tag but are not bastion's own: listed, never touched.
    pub spared: Vec<String>,
    /// Bastion's own, kept because another cluster still uses it (an EC2 Instance Connect
    /// Endpoint that clusters of one VPC share): each said once.
    pub kept: Vec<String>,
    /// A sweep was refused for want of credentials or permission (exit 3, not 1).
    pub denied: bool,
}

#[derive(Debug, Clone)]
struct Outcome {
    /// The resource (see [`key`]); None for what has no second teller (a local file).
    key: Option<String>,
    line: String,
    removed: bool,
}

/// Keys that name one resource whoever tries it (the ledger, a sweep). A part of a resource
/// (a role's policy) is `<resource key>/<part>`: removing the whole settles the part.
pub mod key {
    pub fn instance(id: &str) -> String {
        format!("instance:{id}")
    }
    pub fn group(id: &str) -> String {
        format!("group:{id}")
    }
    pub fn rule(id: &str) -> String {
        format!("rule:{id}")
    }
    pub fn key_pair(name: &str) -> String {
        format!("key-pair:{name}")
    }
    pub fn role(name: &str) -> String {
        format!("role:{name}")
    }
    pub fn profile(name: &str) -> String {
        format!("profile:{name}")
    }
    pub fn endpoint(id: &str) -> String {
        format!("endpoint:{id}")
    }
}

/// The key of a ledger entry.
fn resource_key(r: &Resource) -> String {
    match r {
        Resource::LocalKey { path } => format!("local:{}", path.display()),
        Resource::KeyPair { name, .. } => key::key_pair(name),
        Resource::SecurityGroup { id } => key::group(id),
        Resource::IngressRule { rule_ids, .. } => key::rule(&rule_ids.join(",")),
        Resource::Role { name } => key::role(name),
        Resource::InlinePolicy { role, name } => format!("{}/inline:{name}", key::role(role)),
        Resource::AttachedPolicy { role, arn } => format!("{}/attached:{arn}", key::role(role)),
        Resource::InstanceProfile { name, .. } => key::profile(name),
        Resource::RoleInProfile { profile, role } => {
            format!("{}/role:{role}", key::profile(profile))
        }
        Resource::Instance { id } => key::instance(id),
        Resource::EndpointGroup { id } => key::group(id),
        Resource::InstanceConnectEndpoint { id, .. } => key::endpoint(id),
        Resource::EgressRule { rule_ids, .. } => key::rule(&rule_ids.join(",")),
        Resource::FoundEndpoint { id } => key::endpoint(id),
    }
}

impl Report {
    /// What was removed, in order.
    pub fn removed(&self) -> Vec<String> {
        self.lines(true)
    }

    /// What could not be removed, each with its reason, in order.
    pub fn failed(&self) -> Vec<String> {
        self.lines(false)
    }

    fn lines(&self, removed: bool) -> Vec<String> {
        self.outcomes
            .iter()
            .filter(|o| o.removed == removed)
            .map(|o| o.line.clone())
            .collect()
    }

    /// A removal only this caller makes (a local file): no sweep will tell it again.
    pub fn add_removed(&mut self, line: String) {
        self.outcomes.push(Outcome {
            key: None,
            line,
            removed: true,
        });
    }

    /// A failure only this caller meets.
    pub fn add_failed(&mut self, line: String) {
        self.outcomes.push(Outcome {
            key: None,
            line,
            removed: false,
        });
    }

    fn keep(&mut self, line: String) {
        if !self.kept.contains(&line) {
            tracing::info!("kept {line}");
            self.kept.push(line);
        }
    }

    fn spare(&mut self, what: String, why: &dyn std::fmt::Display) {
        tracing::warn!("left alone {what}: it carries bastion's tag but {why}");
        self.spared.push(format!("{what}: {why}"));
    }

    /// One outcome for the resource `key`. Removed: said once, and what was said of it (or of
    /// its parts) failing is taken back. Failed: said once, with the latest reason.
    fn record(&mut self, key: &str, line: String, removed: bool) {
        let covers = |k: &Option<String>| {
            k.as_deref().is_some_and(|k| {
                k == key || k.strip_prefix(key).is_some_and(|r| r.starts_with('/'))
            })
        };
        let same = |o: &Outcome| o.removed == removed && o.key.as_deref() == Some(key);
        if removed {
            if self.outcomes.iter().any(same) {
                return;
            }
            self.outcomes.retain(|o| o.removed || !covers(&o.key));
        } else if let Some(o) = self.outcomes.iter_mut().find(|o| same(o)) {
            o.line = line;
            return;
        }
        self.outcomes.push(Outcome {
            key: Some(key.to_string()),
            line,
            removed,
        });
    }

    fn fail(&mut self, key: &str, what: String, err: &dyn std::fmt::Display) {
        self.record(key, format!("{what}: {err}"), false);
    }

    /// Records the outcome of removing `what`, noting a success on the progress display.
    fn settle<E: std::fmt::Display>(
        &mut self,
        progress: &Progress,
        (key, what): (String, String),
        result: Result<(), E>,
    ) {
        match result {
            Ok(()) => {
                progress.note(format!("removed {what}"));
                self.record(&key, what, true)
            }
            Err(e) => self.fail(&key, what, &e),
        }
    }

    /// Adds another report's outcomes, in order, each keyed one as `Report::record` does.
    pub fn merge(&mut self, other: Report) {
        for o in other.outcomes {
            match o.key {
                Some(key) => self.record(&key, o.line, o.removed),
                None => self.outcomes.push(o),
            }
        }
        self.spared.extend(other.spared);
        for line in other.kept {
            self.keep(line);
        }
        self.denied |= other.denied;
    }
}

/// A resource that is already gone counts as removed.
fn done_if_missing(r: AwsResult<()>) -> AwsResult<()> {
    or_missing(r).map(drop)
}

/// Polls until the instance is gone (terminated or unknown), up to `limit`.
pub async fn wait_terminated(
    cloud: &(impl Instances + ?Sized),
    id: &str,
    limit: Duration,
) -> AwsResult<()> {
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        match cloud.instance(id).await? {
            None => return Ok(()),
            Some(i) if i.state == "terminated" => return Ok(()),
            Some(i) if start.elapsed() > limit => {
                return Err(AwsError::Service {
                    action: "ec2:TerminateInstances".into(),
                    code: "Timeout".into(),
                    message: format!("{id} is still {} after {}s", i.state, limit.as_secs()),
                });
            }
            Some(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Deletes a security group, retrying DependencyViolation (an ENI of a terminating instance,
/// a rule in another group that names it) with backoff.
async fn delete_group(cloud: &(impl Network + ?Sized), id: &str) -> AwsResult<()> {
    let mut delay = Duration::from_secs(1);
    let mut waited = Duration::ZERO;
    loop {
        match done_if_missing(cloud.delete_security_group(id).await) {
            Err(e) if e.is_dependency_violation() && waited < Duration::from_secs(300) => {
                tracing::info!(
                    group = id,
                    "security group still in use; retrying in {delay:?}"
                );
                tokio::time::sleep(delay).await;
                waited += delay;
                delay = (delay * 2).min(Duration::from_secs(20));
            }
            other => return other,
        }
    }
}

/// Empties and deletes a role bastion created (inline and attached policies first).
async fn delete_role(cloud: &(impl Iam + ?Sized), name: &str) -> AwsResult<()> {
    let Some((inline, attached)) = or_missing(cloud.role_policies(name).await)? else {
        return Ok(());
    };
    for p in inline {
        done_if_missing(cloud.delete_role_policy(name, &p).await)?;
    }
    for arn in attached {
        done_if_missing(cloud.detach_role_policy(name, &arn).await)?;
    }
    done_if_missing(cloud.delete_role(name).await)
}

async fn delete_profile(cloud: &(impl Iam + ?Sized), name: &str) -> AwsResult<()> {
    let Some(roles) = or_missing(cloud.profile_roles(name).await)? else {
        return Ok(());
    };
    for role in roles {
        done_if_missing(cloud.remove_role_from_instance_profile(name, &role).await)?;
    }
    done_if_missing(cloud.delete_instance_profile(name).await)
}

/// Removes a private key file and its `.pub` beside it; missing files count as removed. True
/// when there was a file to remove.
pub fn remove_local(path: &std::path::Path) -> std::io::Result<bool> {
    let mut existed = false;
    for p in [path.to_path_buf(), path.with_extension("pub")] {
        match std::fs::remove_file(&p) {
            Ok(()) => existed = true,
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
    }
    Ok(existed)
}

/// Polls until the endpoint is gone (`delete-complete`, or no longer listed), up to `limit`.
async fn wait_endpoint_deleted(
    cloud: &(impl Network + ?Sized),
    vpc_id: &str,
    id: &str,
    limit: Duration,
) -> AwsResult<()> {
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_secs(1);
    loop {
        let listed = cloud.instance_connect_endpoints(Some(vpc_id)).await?;
        match listed.iter().find(|e| e.id == id) {
            None => return Ok(()),
            Some(e) if e.state == "delete-complete" => return Ok(()),
            Some(e) if e.state == "delete-failed" || start.elapsed() > limit => {
                return Err(AwsError::Service {
                    action: "ec2:DeleteInstanceConnectEndpoint".into(),
                    code: if e.state == "delete-failed" {
                        "DeleteFailed".into()
                    } else {
                        "Timeout".into()
                    },
                    message: format!(
                        "{id} is {} after {}s{}",
                        e.state,
                        start.elapsed().as_secs(),
                        e.state_message
                            .as_deref()
                            .map(|m| format!(": {}", crate::ui::printable(m)))
                            .unwrap_or_default()
                    ),
                });
            }
            Some(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Once a cluster's rules on it are gone: removes an endpoint group bastion made, and the EC2
/// Instance Connect Endpoint that uses it, when no cluster is served through them any more (the
/// group lets tcp 22 out to no head node group). Kept, and said so, while one is; a group that
/// is not bastion's is never touched.
pub async fn release_endpoint_group(
    cloud: &(impl Network + ?Sized),
    group_id: &str,
    progress: &Progress,
) -> Report {
    let mut report = Report::default();
    let what = format!("endpoint security group {group_id}");
    let group = match or_missing(cloud.security_groups(&[group_id.to_string()]).await) {
        Ok(g) => g.and_then(|g| g.into_iter().next()),
        Err(e) => {
            report.fail(&key::group(group_id), what, &e);
            return report;
        }
    };
    let Some(group) = group else {
        // Gone already.
        report.record(&key::group(group_id), what, true);
        return report;
    };
    if !crate::footprint::owns_endpoint_group(&group) {
        report.spare(
            what,
            &"it is not named and described as bastion's endpoint group",
        );
        return report;
    }
    let vpc = group.vpc_id.clone().unwrap_or_default();
    let endpoints = match cloud.instance_connect_endpoints(Some(&vpc)).await {
        Ok(e) => e,
        Err(e) => {
            report.fail(&key::group(group_id), what, &e);
            return report;
        }
    };
    let using: Vec<_> = endpoints
        .into_iter()
        .filter(|e| e.state != "delete-complete")
        .filter(|e| e.security_group_ids.iter().any(|g| g == group_id))
        .collect();
    let users = crate::footprint::endpoint_users(&group);
    if !users.is_empty() {
        let endpoint = using
            .iter()
            .map(|e| format!("EC2 Instance Connect Endpoint {} and ", e.id))
            .collect::<String>();
        report.keep(format!(
            "{endpoint}its security group {group_id}: still serve the head node group(s) {}              (another cluster's bastion); the last `bastion down` of that VPC removes them",
            users.join(", ")
        ));
        return report;
    }
    for e in using {
        let what = format!("EC2 Instance Connect Endpoint {}", e.id);
        // Bastion's group on someone else's endpoint as well: theirs, never removed.
        if e.security_group_ids != [group_id] {
            report.spare(what, &"it has security groups besides bastion's");
            return report;
        }
        progress.phase(format!("removing {what} (AWS takes a minute or two)"));
        let result = async {
            if !e.state.starts_with("delete-") {
                done_if_missing(cloud.delete_instance_connect_endpoint(&e.id).await)?;
            }
            wait_endpoint_deleted(cloud, &vpc, &e.id, Duration::from_secs(900)).await
        }
        .await;
        let failed = result.is_err();
        report.settle(progress, (key::endpoint(&e.id), what), result);
        if failed {
            return report;
        }
    }
    progress.phase(format!("removing {what}"));
    report.settle(
        progress,
        (key::group(group_id), what),
        delete_group(cloud, group_id).await,
    );
    report
}

/// What removing one recorded resource came to.
enum Removal {
    Removed,
    /// It never came to exist (a local key recorded before its files were written).
    Absent,
    /// Another cluster still uses it, or it was released by the step before: the report says.
    Released(Report),
}

/// Removes one recorded resource.
/// `own_key` is the one local file bastion makes beside the ledger: a ledger (a file, so
/// untrusted) that names any other path gets it refused, never deleted.
async fn remove_one(
    cloud: &(impl Instances + Network + Iam + ?Sized),
    resource: &Resource,
    own_key: &std::path::Path,
    progress: &Progress,
) -> anyhow::Result<Removal> {
    match resource {
        Resource::Instance { id } => {
            done_if_missing(cloud.terminate_instance(id).await)?;
            wait_terminated(cloud, id, Duration::from_secs(600)).await?;
        }
        Resource::IngressRule {
            group_id, rule_ids, ..
        } => done_if_missing(cloud.revoke_ingress(group_id, rule_ids).await)?,
        Resource::SecurityGroup { id } => delete_group(cloud, id).await?,
        Resource::KeyPair { name, .. } => done_if_missing(cloud.delete_key_pair(name).await)?,
        Resource::RoleInProfile { profile, role } => {
            done_if_missing(cloud.remove_role_from_instance_profile(profile, role).await)?
        }
        Resource::InstanceProfile { name, .. } => delete_profile(cloud, name).await?,
        Resource::AttachedPolicy { role, arn } => {
            done_if_missing(cloud.detach_role_policy(role, arn).await)?
        }
        Resource::InlinePolicy { role, name } => {
            done_if_missing(cloud.delete_role_policy(role, name).await)?
        }
        Resource::Role { name } => delete_role(cloud, name).await?,
        Resource::EgressRule {
            group_id, rule_ids, ..
        } => {
            done_if_missing(cloud.revoke_egress(group_id, rule_ids).await)?;
            let mut report = Report::default();
            report.record(&resource_key(resource), resource.describe(), true);
            progress.note(format!("removed {}", resource.describe()));
            // The last cluster the endpoint served takes it along.
            report.merge(release_endpoint_group(cloud, group_id, progress).await);
            return Ok(Removal::Released(report));
        }
        Resource::FoundEndpoint { id } => {
            let mut report = Report::default();
            report.keep(format!(
                "EC2 Instance Connect Endpoint {id}: not made by bastion, so never removed by it"
            ));
            return Ok(Removal::Released(report));
        }
        Resource::InstanceConnectEndpoint { group_id, .. }
        | Resource::EndpointGroup { id: group_id } => {
            return Ok(Removal::Released(
                release_endpoint_group(cloud, group_id, progress).await,
            ));
        }
        Resource::LocalKey { path } if path == own_key => {
            return Ok(if remove_local(path)? {
                Removal::Removed
            } else {
                Removal::Absent
            });
        }
        Resource::LocalKey { path } => {
            tracing::warn!(
                "not deleting {}: the ledger names it as the proxy key, but bastion makes its key \
                 at {} and deletes only what it made in its state dir",
                crate::ui::printable(&path.display().to_string()),
                own_key.display()
            );
            return Ok(Removal::Absent);
        }
    }
    Ok(Removal::Removed)
}

/// Removes everything the ledger records, newest first, forgetting each as it goes. Keeps going
/// past a failure so that one stuck resource does not strand the others.
pub async fn teardown_ledger(
    cloud: &(impl Instances + Network + Iam + ?Sized),
    ledger: &mut Ledger,
    progress: &Progress,
) -> Report {
    let mut report = Report::default();
    let resources: Vec<Resource> = ledger.resources().iter().rev().cloned().collect();
    let own_key = ledger.path().with_file_name(crate::state::PRIVATE_KEY_FILE);
    for r in resources {
        let what = r.describe();
        progress.phase(format!("removing {what}"));
        match remove_one(cloud, &r, &own_key, progress).await {
            Ok(removal) => {
                // What another cluster still uses is no longer this one's to remove.
                let settled = match &removal {
                    Removal::Released(r) => r.failed().is_empty(),
                    _ => true,
                };
                // Removed is removed: a ledger that could not be rewritten still lists it, and
                // the next teardown finds it gone (NotFound counts as done).
                if settled && let Err(e) = ledger.forget(&r) {
                    tracing::warn!("removed {what}, but {e}");
                }
                match removal {
                    Removal::Removed => {
                        progress.note(format!("removed {what}"));
                        report.record(&resource_key(&r), what, true);
                    }
                    Removal::Absent => {}
                    Removal::Released(r) => report.merge(r),
                }
            }
            Err(e) => report.fail(&resource_key(&r), what, &e),
        }
    }
    report
}

/// Finds what carries `key=value` and is bastion's own, and removes it. A tag alone proves
/// nothing (anyone with `ec2:CreateTags` can write it): an instance must also be the proxy
/// bastion made (its instance profile and key pair, see `crate::footprint::Expected`), a security group
/// must have bastion's name and description, a rule must sit on or name such a group, a key pair
/// and an IAM entity must have bastion's names. Tagged resources that fail are listed in
/// `Report::spared`, untouched.
pub async fn sweep(
    cloud: &(impl Cloud + ?Sized),
    key: &str,
    value: &str,
    owner: &Expected,
    kinds: Kinds,
    progress: &Progress,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let region = cloud.region().to_string();
    let names = &owner.names;
    progress.phase(format!("looking for resources tagged {key}={value}"));

    let found = if kinds.instances {
        cloud
            .instances_by_tags(&[(key, value)], NOT_TERMINATED)
            .await?
    } else {
        Vec::new()
    };
    let mut instances = Vec::new();
    for i in found {
        match owner.disqualify(&i) {
            None => instances.push(i),
            Some(why) => report.spare(format!("instance {}", i.id), &why),
        }
    }
    // Terminate all, then wait for those that took it (one whose call failed is reported, and
    // never waited on).
    let mut terminating = Vec::new();
    for i in instances {
        let what = format!("instance {}", i.id);
        progress.phase(format!("terminating {what}"));
        match done_if_missing(cloud.terminate_instance(&i.id).await) {
            Ok(()) => terminating.push(i),
            Err(e) => report.fail(&key::instance(&i.id), what.clone(), &e),
        }
    }
    for i in &terminating {
        let what = format!("instance {}", i.id);
        progress.phase(format!("waiting for {what} to terminate"));
        report.settle(
            progress,
            (key::instance(&i.id), what),
            wait_terminated(cloud, &i.id, Duration::from_secs(600)).await,
        );
    }

    let tagged_groups = if kinds.groups || kinds.rules {
        cloud.security_groups_by_tag(key, value).await?
    } else {
        Vec::new()
    };
    let mut groups = Vec::new();
    // Endpoint groups bastion made (for this cluster, or one that a rule of this cluster is on
    // or names): released once this cluster's rules are gone.
    let mut endpoint_groups: Vec<String> = Vec::new();
    for g in tagged_groups {
        if owner.owns_group(&g) {
            groups.push(g);
        } else if crate::footprint::owns_endpoint_group(&g) {
            endpoint_groups.push(g.id);
        } else {
            report.spare(
                format!("security group {}", g.id),
                &format!(
                    "not named {} with bastion's description",
                    names.security_group
                ),
            );
        }
    }
    let ours = |id: &str| groups.iter().any(|g| g.id == id);

    let rules = if kinds.rules {
        cloud.rules_by_tag(key, value).await?
    } else {
        Vec::new()
    };
    // The groups the rules are on or name that the tag did not find (an endpoint group another
    // cluster's `up` made): read once, to tell bastion's endpoint groups from the rest.
    let mut unknown: Vec<String> = rules
        .iter()
        .filter_map(|r| {
            if r.egress {
                Some(r.group_id.clone())
            } else {
                r.referenced_group.clone()
            }
        })
        .filter(|g| !ours(g) && !endpoint_groups.contains(g))
        .collect();
    unknown.sort();
    unknown.dedup();
    // One at a time: EC2 refuses a describe naming a group that is gone (a proxy group removed
    // before the rule that named it), and a gone group is not an endpoint group of bastion's.
    let mut shared: Vec<String> = Vec::new();
    for id in unknown {
        let found = or_missing(cloud.security_groups(std::slice::from_ref(&id)).await)?;
        if found
            .unwrap_or_default()
            .iter()
            .any(crate::footprint::owns_endpoint_group)
        {
            shared.push(id);
        }
    }
    let is_endpoint_group = |id: &str| endpoint_groups.iter().chain(&shared).any(|g| g == id);
    // Released below: those the tag found (when groups are swept), and those this cluster's
    // egress rules were on (whenever they go, so a pass of rules alone leaves no endpoint
    // behind that no cluster uses).
    let mut released: Vec<String> = if kinds.groups {
        endpoint_groups.clone()
    } else {
        Vec::new()
    };
    for rule in rules {
        if rule.egress {
            // Out of an endpoint group of bastion's, to this cluster's head node group.
            let what = format!("egress rule {} on {}", rule.rule_id, rule.group_id);
            if ours(&rule.group_id) {
                continue;
            }
            if !is_endpoint_group(&rule.group_id) {
                report.spare(what, &"it is not on an endpoint group of bastion's");
                continue;
            }
            report.settle(
                progress,
                (key::rule(&rule.rule_id), what),
                done_if_missing(
                    cloud
                        .revoke_egress(&rule.group_id, std::slice::from_ref(&rule.rule_id))
                        .await,
                ),
            );
            if !released.contains(&rule.group_id) {
                released.push(rule.group_id.clone());
            }
            continue;
        }
        let what = format!("ingress rule {} on {}", rule.rule_id, rule.group_id);
        // The proxy's own group goes whole below; a rule elsewhere must admit that group, or an
        // endpoint group of bastion's.
        if ours(&rule.group_id) {
            continue;
        }
        if !rule
            .referenced_group
            .as_deref()
            .is_some_and(|g| ours(g) || is_endpoint_group(g))
        {
            report.spare(what, &"it does not admit bastion's security group");
            continue;
        }
        report.settle(
            progress,
            (key::rule(&rule.rule_id), what),
            done_if_missing(
                cloud
                    .revoke_ingress(&rule.group_id, std::slice::from_ref(&rule.rule_id))
                    .await,
            ),
        );
    }

    if kinds.groups {
        for g in &groups {
            let what = format!("security group {}", g.id);
            progress.phase(format!("removing {what}"));
            report.settle(
                progress,
                (key::group(&g.id), what),
                delete_group(cloud, &g.id).await,
            );
        }
    }
    for g in &released {
        report.merge(release_endpoint_group(cloud, g, progress).await);
    }

    let key_pairs = if kinds.key_pairs {
        cloud.key_pairs_by_tag(key, value).await?
    } else {
        Vec::new()
    };
    for k in key_pairs {
        let what = format!("key pair {}", k.name);
        if !owner.owns_key_pair(&k) {
            report.spare(what, &format!("not named {}", names.key_pair));
            continue;
        }
        report.settle(
            progress,
            (key::key_pair(&k.name), what),
            done_if_missing(cloud.delete_key_pair(&k.name).await),
        );
    }

    if !kinds.iam {
        return Ok(report);
    }
    for p in cloud.instance_profiles_under(IAM_PATH).await? {
        if !iam_matches(&p, key, value, &region) {
            continue;
        }
        let what = format!("instance profile {}", p.name);
        if !owner.owns_profile(&p) {
            report.spare(what, &format!("not named {}", names.instance_profile));
            continue;
        }
        report.settle(
            progress,
            (key::profile(&p.name), what),
            delete_profile(cloud, &p.name).await,
        );
    }

    for r in cloud.roles_under(IAM_PATH).await? {
        if !iam_matches(&r, key, value, &region) {
            continue;
        }
        let what = format!("IAM role {}", r.name);
        if !owner.owns_role(&r) {
            report.spare(what, &format!("not named {}", names.role));
            continue;
        }
        report.settle(
            progress,
            (key::role(&r.name), what),
            delete_role(cloud, &r.name).await,
        );
    }
    Ok(report)
}

/// Removes what carries the tag `key=value` and bastion's names, and what `ledger` records, in
/// the order AWS needs: first instances and the rules on others' groups (an instance whose
/// RunInstances response was lost, so the ledger never learned of it, holds the proxy's group,
/// and a rule names it), then the ledger, newest first, then everything else the tag carries,
/// which also retries what the ledger could not remove once what stood in its way is gone.
/// Each resource is reported once, with its last outcome.
pub async fn remove_tagged(
    cloud: &(impl Cloud + ?Sized),
    ledger: Option<&mut Ledger>,
    (key, value): (&str, &str),
    owner: &Expected,
    kinds: Kinds,
    progress: &Progress,
) -> Report {
    let mut report = Report::default();
    let sweep_by_tag = async |kinds: Kinds, report: &mut Report| match sweep(
        cloud, key, value, owner, kinds, progress,
    )
    .await
    {
        Ok(r) => report.merge(r),
        Err(e) => {
            report.denied |= e
                .downcast_ref::<AwsError>()
                .is_some_and(AwsError::is_denied);
            report.add_failed(format!("the sweep by tag {key}={value}: {e:#}"));
        }
    };
    let first = Kinds {
        instances: kinds.instances,
        rules: kinds.rules,
        ..Kinds::default()
    };
    if first != Kinds::default() {
        sweep_by_tag(first, &mut report).await;
    }
    if let Some(ledger) = ledger {
        progress.phase(format!("removing what {} records", ledger.path().display()));
        report.merge(teardown_ledger(cloud, ledger, progress).await);
    }
    sweep_by_tag(kinds, &mut report).await;
    report
}

/// Removes what one `up` run made: what its ledger records and what carries its run tag (a
/// resource whose create call succeeded but whose response was lost), see [`remove_tagged`].
pub async fn remove_run(
    cloud: &(impl Cloud + ?Sized),
    ledger: &mut Ledger,
    run_id: Option<&str>,
    owner: &Expected,
    kinds: Kinds,
    progress: &Progress,
) -> Report {
    match run_id {
        Some(run) => {
            remove_tagged(cloud, Some(ledger), (TAG_RUN, run), owner, kinds, progress).await
        }
        None => teardown_ledger(cloud, ledger, progress).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::memory::{ACCOUNT, Memory, Profile, REGION, Role, Rule, World};
    use crate::aws::{IamEntity, Instance, KeyPair, SecurityGroup, Tag, TaggedRule};
    use crate::footprint::{TAG_CLUSTER, TAG_REGION};

    const CLUSTER: &str = "demo";

    fn tags(extra: &[(&str, &str)]) -> Vec<Tag> {
        let mut t = vec![Tag::new(TAG_CLUSTER, CLUSTER)];
        t.extend(extra.iter().map(|(k, v)| Tag::new(*k, *v)));
        t
    }

    fn instance(id: &str, profile_arn: Option<String>, key: &str, group: &str) -> Instance {
        Instance {
            id: id.into(),
            state: "running".into(),
            subnet_id: None,
            vpc_id: None,
            availability_zone: None,
            private_ip: None,
            public_ip: None,
            instance_type: None,
            architecture: None,
            launch_time: None,
            security_group_ids: vec![group.into()],
            key_name: Some(key.into()),
            instance_profile_arn: profile_arn,
            tags: tags(&[]),
        }
    }

    fn group(id: &str, name: &str, description: &str, tags: Vec<Tag>) -> SecurityGroup {
        SecurityGroup {
            id: id.into(),
            name: name.into(),
            description: Some(description.into()),
            vpc_id: None,
            ingress: Vec::new(),
            egress: Vec::new(),
            tags,
        }
    }

    fn rule(id: &str, on: &str, admits: &str) -> Rule {
        Rule {
            rule: TaggedRule {
                rule_id: id.into(),
                group_id: on.into(),
                referenced_group: Some(admits.into()),
                egress: false,
            },
            port: 22,
            tags: tags(&[]),
        }
    }

    fn entity(kind: &str, name: &str, tags: Vec<Tag>) -> IamEntity {
        IamEntity {
            name: name.into(),
            arn: format!("arn:aws:iam::{ACCOUNT}:{kind}{IAM_PATH}{name}"),
            path: IAM_PATH.into(),
            tags,
        }
    }

    /// Bastion's own resources for the cluster, and beside each a resource that carries its tag
    /// (anyone with `ec2:CreateTags` or `iam:TagRole` can write it) but is not bastion's.
    fn account(owner: &Expected) -> World {
        let n = &owner.names;
        let region = [(TAG_REGION, REGION)];
        let profile_arn = format!(
            "arn:aws:iam::{ACCOUNT}:instance-profile{IAM_PATH}{}",
            n.instance_profile
        );
        World {
            instances: vec![
                instance(
                    "i-00000000000000001",
                    Some(profile_arn),
                    &n.key_pair,
                    "sg-00000001",
                ),
                // Tagged, bastion's key name, but not bastion's instance profile.
                instance("i-00000000000000002", None, &n.key_pair, "sg-00000002"),
            ],
            groups: vec![
                group(
                    "sg-00000001",
                    &n.security_group,
                    &n.security_group_description,
                    tags(&[]),
                ),
                group(
                    "sg-00000002",
                    &n.security_group,
                    "the team's own group",
                    tags(&[]),
                ),
                group("sg-00000003", "head-node", "the head node's", Vec::new()),
            ],
            rules: vec![
                rule("sgr-00000001", "sg-00000003", "sg-00000001"),
                // Tagged, on the head node's group, but admitting a group that is not bastion's.
                rule("sgr-00000002", "sg-00000003", "sg-00000002"),
            ],
            key_pairs: vec![
                KeyPair {
                    name: n.key_pair.clone(),
                    id: None,
                    tags: tags(&[]),
                },
                KeyPair {
                    name: "team-key".into(),
                    id: None,
                    tags: tags(&[]),
                },
            ],
            roles: vec![
                Role {
                    entity: entity("role", &n.role, tags(&region)),
                    inline: vec!["bastion-proxy".into()],
                    attached: vec!["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore".into()],
                },
                Role {
                    entity: entity("role", "team-role", tags(&region)),
                    inline: Vec::new(),
                    attached: Vec::new(),
                },
            ],
            profiles: vec![
                Profile {
                    entity: entity("instance-profile", &n.instance_profile, tags(&region)),
                    roles: vec![n.role.clone()],
                },
                Profile {
                    entity: entity("instance-profile", "team-profile", tags(&region)),
                    roles: Vec::new(),
                },
            ],
            ..World::default()
        }
    }

    fn position(writes: &[String], prefix: &str) -> usize {
        writes
            .iter()
            .position(|w| w.starts_with(prefix))
            .unwrap_or_else(|| panic!("no write {prefix:?} in {writes:#?}"))
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_removes_bastions_own_and_spares_every_look_alike() {
        let owner = Expected::new(CLUSTER, REGION, ACCOUNT, None);
        let cloud = Memory::new(account(&owner));
        let report = sweep(
            &cloud,
            TAG_CLUSTER,
            CLUSTER,
            &owner,
            Kinds::ALL,
            &Progress::hidden(),
        )
        .await
        .unwrap();
        let after = cloud.world();
        let n = &owner.names;

        // What is bastion's is gone.
        let states: Vec<_> = after
            .instances
            .iter()
            .map(|i| (i.id.as_str(), i.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("i-00000000000000001", "terminated"),
                ("i-00000000000000002", "running")
            ]
        );
        let groups: Vec<_> = after.groups.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(groups, ["sg-00000002", "sg-00000003"]);
        let rules: Vec<_> = after
            .rules
            .iter()
            .map(|r| r.rule.rule_id.as_str())
            .collect();
        assert_eq!(rules, ["sgr-00000002"]);
        let keys: Vec<_> = after.key_pairs.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(keys, ["team-key"]);
        let roles: Vec<_> = after.roles.iter().map(|r| r.entity.name.as_str()).collect();
        assert_eq!(roles, ["team-role"]);
        let profiles: Vec<_> = after
            .profiles
            .iter()
            .map(|p| p.entity.name.as_str())
            .collect();
        assert_eq!(profiles, ["team-profile"]);

        // Each look-alike is named, with why.
        let spared = report.spared.join("\n");
        for (what, why) in [
            ("instance i-00000000000000002", "instance profile"),
            ("security group sg-00000002", "bastion's description"),
            (
                "ingress rule sgr-00000002",
                "does not admit bastion's security group",
            ),
            ("key pair team-key", &format!("not named {}", n.key_pair)),
            ("IAM role team-role", &format!("not named {}", n.role)),
            (
                "instance profile team-profile",
                &format!("not named {}", n.instance_profile),
            ),
        ] {
            assert!(
                spared
                    .lines()
                    .any(|l| l.starts_with(what) && l.contains(why)),
                "{what} ({why}) not among the spared:\n{spared}"
            );
        }
        assert_eq!(report.failed(), Vec::<String>::new());

        // In the order AWS needs: the instance and the rule naming the group before the group,
        // the role out of its profile and emptied before it goes.
        let w = &after.writes;
        assert!(position(w, "terminate_instance") < position(w, "delete_security_group"));
        assert!(position(w, "revoke_ingress") < position(w, "delete_security_group"));
        assert!(position(w, "remove_role_from_instance_profile") < position(w, "delete_role "));
        assert!(position(w, "delete_role_policy") < position(w, "delete_role "));
        assert!(position(w, "detach_role_policy") < position(w, "delete_role "));
        assert!(
            !w.iter()
                .any(|w| w.contains("team-") || w.contains("00000002")),
            "{w:#?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_iam_entity_of_another_region_is_not_the_sweeps() {
        let owner = Expected::new(CLUSTER, REGION, ACCOUNT, None);
        let mut world = account(&owner);
        for r in &mut world.roles {
            r.entity.tags = tags(&[(TAG_REGION, "us-east-1")]);
        }
        let cloud = Memory::new(world);
        let kinds = Kinds {
            iam: true,
            ..Kinds::default()
        };
        let report = sweep(
            &cloud,
            TAG_CLUSTER,
            CLUSTER,
            &owner,
            kinds,
            &Progress::hidden(),
        )
        .await
        .unwrap();
        assert_eq!(cloud.world().roles.len(), 2, "{:#?}", cloud.world().writes);
        assert!(
            !report.spared.iter().any(|s| s.contains("role")),
            "{:?}",
            report.spared
        );
    }
}
