//! The cluster's proxy: the instance bastion made, told apart from look-alikes that merely carry
//! its `bastion:cluster` tag (anyone with `ec2:CreateTags` can write that tag, the proxy's own
//! role included); starting it when the idle timer stopped it; its host key, parsed strictly
//! from its `bastion:host-key` tag; its security group; and how a session logs in to it (a
//! one-time key pushed with EC2 Instance Connect, else the state dir's key).
//!
//! An instance counts as the proxy only when it runs with the instance profile bastion made for
//! the cluster (under `/bastion/`, in the caller's account) and bastion's key pair, and, where
//! this machine's ledger records an instance, is that instance. Reads AWS and the local ledger;
//! starts a stopped proxy; pushes one-time keys; never creates or removes anything. `up`, `connect`, `ssh-config`,
//! `status` and `down` all call down into it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PublicKey;
use serde::Serialize;

use crate::aws::{AwsError, Instance, Instances, Network, SecurityGroup};
use crate::footprint::{Expected, TAG_CLUSTER, TAG_HOST_KEY, TAG_STATE};
use crate::ssh::client::{Credentials, MemoryKey, Trust, new_ed25519_key};
use crate::ssh::known_hosts::{self, FirstUse, HostKeyError};
use crate::ui::Progress;
use crate::userdata::{ProxyOs, TEAMMATE_USER};
use crate::wait::{Goal, wait_for};

/// The states in which an instance may still be (or become) a proxy.
pub const LIVE: &[&str] = &["pending", "running", "stopping", "stopped"];

/// A tagged instance that is not the proxy bastion made, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Lookalike {
    pub instance: String,
    pub reason: String,
    /// It would be the proxy but for this machine's ledger, which records another instance.
    #[serde(skip)]
    pub stale_ledger: bool,
}

impl std::fmt::Display for Lookalike {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({})",
            crate::ui::printable(&self.instance),
            crate::ui::printable(&self.reason)
        )
    }
}

/// The proxy (a running one first, should there be two) and the look-alikes.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub proxy: Option<Instance>,
    /// Other proxies bastion made, should there be more (a stopping one beside a pending one).
    pub more: Vec<Instance>,
    pub lookalikes: Vec<Lookalike>,
}

impl Search {
    /// Sorts `candidates` (instances tagged for the cluster) into the proxy and look-alikes.
    pub fn sort(expected: &Expected, candidates: Vec<Instance>) -> Search {
        let mut genuine = Vec::new();
        let mut lookalikes = Vec::new();
        for i in candidates {
            let (reason, stale_ledger) = match expected.not_bastions(&i) {
                Some(r) => (r, false),
                None => match expected.not_the_ledgers(&i) {
                    Some(r) => (r, true),
                    None => {
                        genuine.push(i);
                        continue;
                    }
                },
            };
            lookalikes.push(Lookalike {
                instance: i.id,
                reason,
                stale_ledger,
            });
        }
        genuine.sort_by_key(|i| i.state != "running");
        let mut genuine = genuine.into_iter();
        Search {
            proxy: genuine.next(),
            more: genuine.collect(),
            lookalikes,
        }
    }

    /// Tells the user, on stderr, about instances that carry the tag but are not trusted.
    pub fn warn_lookalikes(&self) {
        for l in &self.lookalikes {
            tracing::warn!(
                "ignoring the look-alike {l}: it carries the bastion tag but is not the proxy bastion made"
            );
        }
    }
}

/// Finds the cluster's proxy among the live instances tagged `bastion:cluster=<cluster>`.
pub async fn find(
    cloud: &(impl Instances + ?Sized),
    expected: &Expected,
) -> anyhow::Result<Search> {
    Ok(Search::sort(
        expected,
        candidates(cloud, &expected.cluster).await?,
    ))
}

/// The live instances tagged for `cluster`, to be judged by [`Search::sort`]: they need no
/// [`Expected`], so a caller may look them up while it learns the account.
pub async fn candidates(
    cloud: &(impl Instances + ?Sized),
    cluster: &str,
) -> anyhow::Result<Vec<Instance>> {
    Ok(cloud
        .instances_by_tags(&[(TAG_CLUSTER, cluster)], LIVE)
        .await?)
}

/// Starts a stopped proxy (waiting out `stopping` first) and waits until it is running.
pub async fn ensure_running(
    cloud: &(impl Instances + ?Sized),
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

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(
        "cannot log in to the proxy {instance}: EC2 Instance Connect did not take a key for \
         '{user}' ({cause}), and this machine has no proxy key ({key_file}). Ask an \
         administrator for the teammate policy (`bastion policy user` prints \
         policies/bastion-user.json), which allows ec2-instance-connect:SendSSHPublicKey on the \
         proxy for its login user"
    )]
    NoWay {
        instance: String,
        user: String,
        key_file: PathBuf,
        #[source]
        cause: AwsError,
    },
    #[error("the proxy {instance}'s security group (bastion's, {name}) is not attached to it")]
    NoGroup { instance: String, name: String },
}

/// Who a session logs in to the proxy as, and so what it may do there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Login {
    /// Whoever ran `up` (this machine holds the proxy's key): the OS's sudo user.
    Operator,
    /// Anyone else: [`TEAMMATE_USER`], who may open the head node's port 22 and nothing more.
    Teammate,
}

impl Login {
    /// The operator's login where this machine holds the proxy's key, else a teammate's. A
    /// `--bastion-user` decides where given: the teammate user is a teammate's login, any other
    /// name the operator's (and the proxy's sshd judges it).
    pub fn choose(bastion_user: Option<&str>, key_file: &Path) -> Login {
        match bastion_user {
            Some(TEAMMATE_USER) => Login::Teammate,
            Some(_) => Login::Operator,
            None if key_file.exists() => Login::Operator,
            None => Login::Teammate,
        }
    }

    /// The user it logs in as on a proxy of `os`.
    pub fn default_user(self, os: ProxyOs) -> &'static str {
        match self {
            Login::Operator => os.default_user(),
            Login::Teammate => TEAMMATE_USER,
        }
    }
}

/// How a session logs in to the proxy: the operator's with the state dir's key where this
/// machine has one; else a fresh ed25519 key, pushed with EC2 Instance Connect for `user` just
/// before connecting (AWS lets it in for 60 s; the session outlives it). Each call makes a new key, so a reconnect pushes a fresh one. The key is held in
/// memory only. Neither way: the denied action and the policy that grants it are named.
pub async fn login(
    cloud: &(impl Instances + ?Sized),
    proxy: &Instance,
    user: &str,
    key_file: &Path,
) -> Result<Credentials, LoginError> {
    // The operator's machine holds the proxy's key: nothing to push, and no call for an
    // operator policy to refuse.
    if user != TEAMMATE_USER && key_file.exists() {
        return Ok(Credentials {
            files: vec![key_file.to_path_buf()],
            hint: Some(format!(
                "The proxy refused the state dir's key for '{user}': is '{user}' its login user \
                 (--bastion-user)?"
            )),
            ..Credentials::default()
        });
    }
    let mut credentials = Credentials {
        hint: Some(format!(
            "The proxy refused the Instance Connect key: is its Instance Connect agent running, \
             and is '{user}' a user it has (--bastion-user)?"
        )),
        ..Credentials::default()
    };
    let key = new_ed25519_key();
    #[allow(
        clippy::expect_used,
        reason = "an ed25519 key made here, in memory, always encodes"
    )]
    let line = key
        .public_key()
        .to_openssh()
        .expect("an ed25519 public key always encodes");
    let pushed = cloud.send_ssh_public_key(&proxy.id, user, &line).await;
    match &pushed {
        Ok(()) => {
            tracing::info!(
                "pushed a one-time key for {user} to {} with EC2 Instance Connect",
                proxy.id
            );
            credentials.keys.push(MemoryKey {
                label: "a one-time key pushed with EC2 Instance Connect".into(),
                key: Arc::new(key),
            });
        }
        Err(e) => tracing::info!("EC2 Instance Connect did not take a key: {e}"),
    }
    if key_file.exists() {
        credentials.files.push(key_file.to_path_buf());
    }
    match pushed {
        Err(cause) if credentials.files.is_empty() => Err(LoginError::NoWay {
            instance: proxy.id.clone(),
            user: user.into(),
            key_file: key_file.to_path_buf(),
            cause,
        }),
        _ => Ok(credentials),
    }
}

/// The security group bastion made for the cluster, among those the proxy runs with.
pub async fn group(
    cloud: &(impl Network + ?Sized),
    expected: &Expected,
    proxy: &Instance,
) -> anyhow::Result<SecurityGroup> {
    let groups = cloud.security_groups(&proxy.security_group_ids).await?;
    groups
        .into_iter()
        .find(|g| expected.owns_group(g))
        .ok_or_else(|| {
            LoginError::NoGroup {
                instance: proxy.id.clone(),
                name: expected.names.security_group.clone(),
            }
            .into()
        })
}

/// The proxy's host key from its `bastion:host-key` tag, if it has one: anything but exactly
/// one allowed key is refused with the instance and the tag named.
pub fn tagged_host_key(proxy: &Instance) -> Result<Option<PublicKey>, HostKeyError> {
    proxy
        .tag(TAG_HOST_KEY)
        .map(|v| known_hosts::parse_host_key_tag(&proxy.id, v))
        .transpose()
}

/// What a first use checked against the console is anchored by, as the user is told.
const CONSOLE_KEYS: &str =
    "the host keys it printed to its console (read with ec2:GetConsoleOutput)";

/// The host keys the proxy printed to its console, read over the AWS API, if it shows any.
async fn console_keys(cloud: &(impl Instances + ?Sized), instance: &str) -> Option<Vec<PublicKey>> {
    match cloud.console_output(instance).await {
        Ok(text) => known_hosts::console_host_keys(&text),
        Err(e) => {
            tracing::info!("the proxy {instance}'s console output could not be read: {e}");
            None
        }
    }
}

fn fingerprints(keys: &[PublicKey]) -> String {
    keys.iter()
        .map(known_hosts::fingerprint)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The proxies whose pinned key came from their tag (their console showed no keys yet), one
/// instance id a line, beside known_hosts: each is checked against its console once the
/// console shows keys. Best effort: a file that cannot be written only means no later check.
struct TagAnchored(PathBuf);

impl TagAnchored {
    fn ids(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn holds(&self, id: &str) -> bool {
        self.ids().iter().any(|l| l == id)
    }

    fn write(&self, ids: &[String]) {
        let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
        if let Err(e) = crate::files::write_file_atomic(&self.0, text.as_bytes(), 0o600) {
            tracing::warn!("cannot record in {}: {e}", self.0.display());
        }
    }

    fn add(&self, id: &str) {
        let mut ids = self.ids();
        if !ids.iter().any(|l| l == id) {
            ids.push(id.to_string());
            self.write(&ids);
        }
    }

    fn remove(&self, id: &str) {
        let ids: Vec<String> = self.ids().into_iter().filter(|l| l != id).collect();
        self.write(&ids);
    }
}

/// How the proxy's host key is judged, anchored by AWS rather than by its tag (anyone with
/// `ec2:CreateTags` writes tags): the key pinned under its instance id in `known_hosts`, once
/// there is one; before that, the keys the proxy printed to its console (`GetConsoleOutput`:
/// the user-data prints them at every boot, cloud-init at the first); only where the console
/// shows none yet (EC2 makes it readable minutes after boot), the tag's, said as such. The tag,
/// where present, must agree with the pin or the console, or the proxy is refused naming both.
pub async fn host_trust(
    cloud: &(impl Instances + ?Sized),
    proxy: &Instance,
    known_hosts_file: &Path,
) -> Result<Trust, HostKeyError> {
    let tagged = tagged_host_key(proxy)?;
    let trust = |first_use, anchor| Trust::Proxy {
        file: known_hosts_file.to_path_buf(),
        instance: proxy.id.clone(),
        first_use,
        anchor,
    };
    let pinned = known_hosts::pinned(known_hosts_file, &proxy.id);
    let tag_anchored = TagAnchored(crate::state::proxy_keys_from_tags(known_hosts_file));
    if !pinned.is_empty() {
        tag_among(
            proxy,
            tagged.as_ref(),
            format!("{} pinned", known_hosts_file.display()),
            &pinned,
        )?;
        // Pinned from the tag while the console showed nothing: checked once the console
        // shows the keys, and anchored from then on.
        if tag_anchored.holds(&proxy.id)
            && let Some(keys) = console_keys(cloud, &proxy.id).await
        {
            if !pinned.iter().any(|p| known_hosts::holds(&keys, p)) {
                return Err(HostKeyError::ProxyPinNotInConsole {
                    instance: proxy.id.clone(),
                    pinned: fingerprints(&pinned),
                    console: fingerprints(&keys),
                });
            }
            tag_anchored.remove(&proxy.id);
        }
        return Ok(trust(
            FirstUse::Unanchored("already pinned".into()),
            "the key pinned for it",
        ));
    }
    let console = console_keys(cloud, &proxy.id).await;
    match (console, tagged.clone()) {
        (Some(keys), _) => {
            tag_among(proxy, tagged.as_ref(), format!("{CONSOLE_KEYS} are"), &keys)?;
            Ok(trust(FirstUse::Anchored(keys), CONSOLE_KEYS))
        }
        (None, Some(key)) => {
            tag_anchored.add(&proxy.id);
            tracing::warn!(
                "the proxy {}'s console output shows no host keys yet: trusting the key its \
                 bastion:host-key tag names ({}), which anyone with ec2:CreateTags can write; it \
                 is pinned now, so later connections check it",
                proxy.id,
                known_hosts::fingerprint(&key)
            );
            Ok(trust(
                FirstUse::Anchored(vec![key]),
                "its bastion:host-key tag (its console shows no keys yet)",
            ))
        }
        (None, None) => Err(HostKeyError::ProxyUnpublished {
            instance: proxy.id.clone(),
        }),
    }
}

/// The proxy's tagged host key, where it has one, must be among `keys` (what `anchor` names:
/// its pin, or its console's keys), or the proxy is refused naming both.
fn tag_among(
    proxy: &Instance,
    tagged: Option<&PublicKey>,
    anchor: String,
    keys: &[PublicKey],
) -> Result<(), HostKeyError> {
    match tagged {
        Some(t) if !known_hosts::holds(keys, t) => Err(HostKeyError::ProxyTagDisagrees {
            instance: proxy.id.clone(),
            tag: known_hosts::fingerprint(t),
            anchor,
            anchored: fingerprints(keys),
        }),
        _ => Ok(()),
    }
}

/// A new proxy's host keys as `up` left them.
#[derive(Debug)]
pub enum NewProxyKeys {
    /// Read from its console output and pinned under its instance id: the operator's first
    /// `connect` is anchored by AWS.
    Pinned(Vec<PublicKey>),
    /// Its console showed none within the wait: the first `connect` trusts the tag's key, says
    /// so, and checks it against the console once the console shows keys.
    NotShown,
}

/// Waits, for at most `within`, until a new proxy's console output (`GetConsoleOutput`) shows
/// the host keys its user-data prints, then pins them under its instance id, so no first use
/// rests on the `bastion:host-key` tag, which anyone with `ec2:CreateTags` can write. The tag,
/// where present, must be one of them, or the proxy is refused naming both. EC2 posts console
/// output some time after boot (at once with `Latest` on Nitro instances, minutes later on
/// others): polled every 2 s at first, growing to every 10 s.
pub async fn pin_console_keys(
    cloud: &(impl Instances + ?Sized),
    proxy: &Instance,
    known_hosts_file: &Path,
    within: Duration,
    progress: &Progress,
) -> Result<NewProxyKeys, HostKeyError> {
    let tagged = tagged_host_key(proxy)?;
    let deadline = tokio::time::Instant::now() + within;
    let mut delay = Duration::from_secs(2);
    loop {
        if let Some(keys) = console_keys(cloud, &proxy.id).await {
            tag_among(proxy, tagged.as_ref(), format!("{CONSOLE_KEYS} are"), &keys)?;
            known_hosts::pin_all(known_hosts_file, &proxy.id, &keys)?;
            return Ok(NewProxyKeys::Pinned(keys));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(NewProxyKeys::NotShown);
        }
        progress.phase(format!(
            "{}: ready; waiting for its console output to show its host keys \
             (ec2:GetConsoleOutput)",
            proxy.id
        ));
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::Tag;

    fn instance(id: &str, profile: &str, key: &str) -> Instance {
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
            security_group_ids: vec![],
            key_name: Some(key.into()),
            instance_profile_arn: Some(profile.into()),
            tags: vec![Tag::new(TAG_CLUSTER, "demo")],
        }
    }

    #[test]
    fn only_the_instance_with_bastions_profile_key_and_ledger_id_is_the_proxy() {
        let mut e = Expected::new("demo", "us-east-1", "123456789012", None);
        let good = "arn:aws:iam::123456789012:instance-profile/bastion/bastion-demo-us-east-1";
        let real = instance("i-real", good, "bastion-demo");
        assert_eq!(e.disqualify(&real), None);
        for (decoy, why) in [
            (
                instance(
                    "i-1",
                    "arn:aws:iam::123456789012:instance-profile/other",
                    "bastion-demo",
                ),
                "instance profile",
            ),
            (
                instance(
                    "i-2",
                    "arn:aws:iam::999999999999:instance-profile/bastion/bastion-demo-us-east-1",
                    "bastion-demo",
                ),
                "instance profile",
            ),
            (instance("i-3", good, "someone-else"), "key pair"),
        ] {
            let reason = e.disqualify(&decoy).expect("a decoy is not the proxy");
            assert!(reason.contains(why), "{reason}");
        }
        e.ledger_instance = Some("i-other".into());
        assert!(e.disqualify(&real).unwrap().contains("ledger"));
        e.ledger_instance = Some("i-real".into());
        let s = Search::sort(&e, vec![instance("i-3", good, "x"), real.clone()]);
        assert_eq!(s.proxy.map(|p| p.id), Some("i-real".into()));
        assert_eq!(s.lookalikes.len(), 1);
    }

    #[tokio::test]
    async fn of_two_proxies_the_running_one_wins_and_each_look_alike_is_named() {
        use crate::aws::memory::{Memory, World};
        let e = Expected::new("demo", "us-east-1", "123456789012", None);
        let good = "arn:aws:iam::123456789012:instance-profile/bastion/bastion-demo-us-east-1";
        let with_state = |id: &str, state: &str| Instance {
            state: state.into(),
            ..instance(id, good, "bastion-demo")
        };
        let other_cluster = Instance {
            tags: vec![Tag::new(TAG_CLUSTER, "other")],
            ..instance("i-e", good, "bastion-demo")
        };
        let cloud = Memory::new(World {
            instances: vec![
                with_state("i-a", "stopping"),
                with_state("i-b", "running"),
                with_state("i-c", "terminated"),
                instance(
                    "i-d",
                    "arn:aws:iam::123456789012:instance-profile/x",
                    "bastion-demo",
                ),
                other_cluster,
            ],
            ..World::default()
        });
        let ids = |v: &[Instance]| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();

        let s = find(&cloud, &e).await.unwrap();
        assert_eq!(s.proxy.as_ref().map(|p| p.id.as_str()), Some("i-b"));
        assert_eq!(ids(&s.more), ["i-a"]);
        assert_eq!(s.lookalikes.len(), 1, "{:?}", s.lookalikes);
        assert_eq!(s.lookalikes[0].instance, "i-d");
        assert!(s.lookalikes[0].reason.contains("instance profile"));
        assert!(!s.lookalikes[0].stale_ledger);

        // This machine's ledger records the stopping one: it is the proxy, the other is not.
        let mine = Expected {
            ledger_instance: Some("i-a".into()),
            ..e.clone()
        };
        let s = find(&cloud, &mine).await.unwrap();
        assert_eq!(s.proxy.as_ref().map(|p| p.id.as_str()), Some("i-a"));
        assert!(s.more.is_empty());
        let stale: Vec<_> = s.lookalikes.iter().filter(|l| l.stale_ledger).collect();
        assert_eq!(stale.len(), 1, "{:?}", s.lookalikes);
        assert_eq!(stale[0].instance, "i-b");
        assert!(stale[0].reason.contains("ledger records the proxy i-a"));
    }
}
