//! Where `connect` and `ssh-config` go: the cluster's proxy (started and waited for when the idle
//! timer stopped it), its address, login and host key (from its tag), and the head node behind it.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::access::{self, AccessError};
use crate::aws::Instance;
use crate::cluster::{HeadNode, find_head_node};
use crate::context::Context;
use crate::eice::{self, EiceError, Endpoint};
use crate::footprint::{Expected, TAG_OS, TAG_STATE};
use crate::proxy::{self, Login, Lookalike};
use crate::ssh::client::{Credentials, Target, Trust};
use crate::ssh::known_hosts::{self, FirstUse};
use crate::userdata::ProxyOs;
use crate::wait::{Goal, wait_for};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(
        "cluster '{cluster}' has no bastion in {region}. Create one with `bastion up --cluster {cluster}`, or reach the head node through an EC2 Instance Connect Endpoint in its VPC (`--via eice`){}",
        lookalikes_note(lookalikes)
    )]
    NoBastion {
        cluster: String,
        region: String,
        lookalikes: Vec<Lookalike>,
    },
    #[error(
        "the proxy {instance} has no public IP address; pass --bastion-address (a VPN address, a DNS name, its private IP)"
    )]
    NoAddress { instance: String },
    #[error(
        "the proxy {instance}'s bootstrap failed (bastion:state=failed); run `bastion down` and `bastion up`"
    )]
    ProxyFailed { instance: String },
    #[error("the head node {instance} of cluster '{cluster}' has no private IP address")]
    NoHeadIp { cluster: String, instance: String },
    #[error(
        "cluster '{cluster}' has {} instances that each pass as its proxy: {}. bastion connects \
         to none of them, since one of them was not made by this cluster's `bastion up` (check \
         CloudTrail for its RunInstances). `bastion down --cluster {cluster}` on the machine \
         that ran `up` removes them; then `bastion up` again",
        instances.len(),
        instances.join(", ")
    )]
    TwoProxies {
        cluster: String,
        instances: Vec<String>,
    },
    #[error(
        "{what} needs the operator's login on the proxy, and this machine logs in as a teammate \
         ({user}: no proxy key from `bastion up` in the state dir). A teammate's login opens the \
         head node's SSH port and nothing else on the proxy: no shell, no desktop, no instance \
         credentials. Run it where `bastion up` ran, or pass --bastion-user with the proxy's \
         sudo user if an administrator lets you push a key for it"
    )]
    OperatorOnly { what: String, user: String },
    #[error(
        "{what} needs the proxy, and cluster '{cluster}' is reached through the EC2 Instance Connect Endpoint {endpoint}, which carries the head node's SSH port and nothing else{}",
        if *chosen { "" } else { ". Create a proxy with `bastion up`, then pass `--via proxy`" }
    )]
    NoProxy {
        what: String,
        cluster: String,
        endpoint: String,
        /// Whether the user chose the endpoint (`--via eice`) rather than it being the only way.
        chosen: bool,
    },
}
impl crate::exit::ExitStatus for RouteError {
    fn exit_status(&self) -> Option<u8> {
        match self {
            RouteError::NoBastion { .. } => Some(crate::exit::INVALID),
            // A teammate asking for what only the operator's login may do: a permission.
            RouteError::OperatorOnly { .. } => Some(crate::exit::DENIED),
            RouteError::NoProxy { .. } => Some(crate::exit::INVALID),
            _ => None,
        }
    }
}

/// How `resolve` goes about it: the user's choices of logins, key and address, whether to start
/// a stopped proxy (connect does; ssh-config does not), how long to wait for it, and whether to
/// check this machine's public address against the proxy's group first (admitting it with
/// `allow_me`).
#[derive(Debug, Clone, Default)]
pub struct RouteOptions {
    /// Login on the head node; by default its OS's, as pcluster chooses it.
    pub user: Option<String>,
    /// The head node's key file; by default ssh-agent, then `~/.ssh/id_*`.
    pub identity: Option<PathBuf>,
    /// Login on the proxy; by default the operator's or a teammate's (see [`Login::choose`]).
    pub bastion_user: Option<String>,
    /// Reach the proxy at this `HOST[:PORT]` instead of its public IP.
    pub bastion_address: Option<String>,
    pub start: bool,
    pub timeout: Duration,
    pub check_address: bool,
    pub allow_me: bool,
    /// The way in the user chose; by default the proxy where there is one, else the VPC's EC2
    /// Instance Connect Endpoint.
    pub via: Option<Via>,
    /// What the user asked for that is a session on the proxy itself (`--on-proxy`,
    /// `--desktop`): refused for a teammate's login once the proxy is found and before it is
    /// started, and refused through the endpoint.
    pub operator_only: Option<String>,
}

/// The two ways to the head node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// bastion's proxy instance, a jump through its SSH port.
    Proxy,
    /// The VPC's EC2 Instance Connect Endpoint: no inbound port, no instance.
    Eice,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Proxy => "proxy",
            Via::Eice => "eice",
        }
    }
}

impl std::str::FromStr for Via {
    type Err = String;
    fn from_str(s: &str) -> Result<Via, String> {
        match s {
            "proxy" => Ok(Via::Proxy),
            "eice" => Ok(Via::Eice),
            _ => Err(format!("'{s}' is not a way in: proxy or eice")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub cluster: String,
    /// What stands between this machine and the head node.
    pub hop: Hop,
    pub head: HeadNode,
    pub head_ip: String,
    pub head_target: Target,
    pub known_hosts: PathBuf,
}

#[derive(Debug, Clone)]
pub enum Hop {
    Proxy(Box<ProxyHop>),
    Endpoint(Box<Endpoint>),
}

/// The proxy, and how this machine logs in to it.
#[derive(Debug, Clone)]
pub struct ProxyHop {
    pub instance: Instance,
    pub address: String,
    pub port: u16,
    pub key_file: PathBuf,
    pub login: Login,
    pub target: Target,
}

fn lookalikes_note(lookalikes: &[Lookalike]) -> String {
    if lookalikes.is_empty() {
        return String::new();
    }
    let list: Vec<String> = lookalikes.iter().map(|l| format!("\n  {l}")).collect();
    format!(
        ".\nThese instances carry its bastion:cluster tag but are not the proxy bastion made, so \
         bastion neither connects to them nor starts them (someone with ec2:CreateTags may have \
         tagged them; check CloudTrail):{}",
        list.concat()
    )
}

/// The route to `cluster`'s head node: through the way `opts.via` names, or by default through
/// the proxy, and where the cluster has none (and no proxy flag was given), through the VPC's EC2
/// Instance Connect Endpoint.
pub async fn resolve(ctx: &Context, cluster: &str, opts: &RouteOptions) -> anyhow::Result<Route> {
    match opts.via {
        Some(Via::Proxy) => resolve_proxy(ctx, cluster, opts).await?.route(),
        Some(Via::Eice) => resolve_endpoint(ctx, cluster, opts, true, None).await,
        None => {
            // No proxy: the head node the look-up found, and its anchor, go on to the endpoint
            // (not looked up twice).
            let (proxy, found) = match resolve_proxy(ctx, cluster, opts).await? {
                ProxyLookup::Found(route) => return Ok(*route),
                ProxyLookup::NoBastion { error, head } => (Err(error), head),
            };
            if proxy_flag(opts).is_some() {
                return proxy;
            }
            match resolve_endpoint(ctx, cluster, opts, false, found.map(|f| *f)).await {
                Ok(route) => Ok(route),
                // An endpoint that is there but unusable, or a flag it cannot serve: said.
                Err(e)
                    if matches!(
                        e.downcast_ref::<EiceError>(),
                        Some(EiceError::NotReady { .. } | EiceError::Malformed(_))
                    ) || matches!(
                        e.downcast_ref::<RouteError>(),
                        Some(RouteError::NoProxy { .. })
                    ) =>
                {
                    Err(e)
                }
                // No endpoint either (or no cluster, or no way to look): the proxy's error,
                // which says how to make one.
                Err(e) => {
                    tracing::info!("no EC2 Instance Connect Endpoint either: {e:#}");
                    proxy
                }
            }
        }
    }
}

/// The first flag given that only means something for a proxy.
fn proxy_flag(opts: &RouteOptions) -> Option<&'static str> {
    if opts.bastion_address.is_some() {
        Some("--bastion-address")
    } else if opts.bastion_user.is_some() {
        Some("--bastion-user")
    } else if opts.allow_me {
        Some("--allow-me")
    } else {
        None
    }
}

/// What the look-up of the proxy came to: the route through it, or no proxy (the error that
/// says so, and the head node with its anchor where they were found).
enum ProxyLookup {
    Found(Box<Route>),
    NoBastion {
        error: anyhow::Error,
        head: Option<Box<(HeadNode, FirstUse)>>,
    },
}

impl ProxyLookup {
    fn route(self) -> anyhow::Result<Route> {
        match self {
            ProxyLookup::Found(route) => Ok(*route),
            ProxyLookup::NoBastion { error, .. } => Err(error),
        }
    }
}

/// Through the VPC's EC2 Instance Connect Endpoint: the head node (`found`, or looked up), its
/// anchor, the endpoint.
async fn resolve_endpoint(
    ctx: &Context,
    cluster: &str,
    opts: &RouteOptions,
    chosen: bool,
    found: Option<(HeadNode, FirstUse)>,
) -> anyhow::Result<Route> {
    let cloud = ctx.cloud.as_ref();
    ctx.progress.phase(format!(
        "finding the EC2 Instance Connect Endpoint of cluster {cluster}"
    ));
    let known_hosts = ctx.known_hosts();
    let (head, first_use) = match found {
        Some(found) => (found.0, Some(found.1)),
        None => (find_head_node(cloud, cluster).await?, None),
    };
    let endpoints = eice::list(cloud, Some(&head.vpc_id)).await?;
    let endpoint = eice::choose(&endpoints, cluster, &head.vpc_id, Some(&head.subnet_id))?;
    if let Some(flag) = opts.operator_only.as_deref().or(proxy_flag(opts)) {
        return Err(RouteError::NoProxy {
            what: flag.into(),
            cluster: cluster.into(),
            endpoint: endpoint.id,
            chosen,
        }
        .into());
    }
    tracing::info!(endpoint = %endpoint.id, state = endpoint.state.as_str(), "through the EC2 Instance Connect Endpoint");
    let first_use = match first_use {
        Some(f) => f,
        None if known_hosts::is_pinned(&known_hosts, &head.instance.id) => {
            FirstUse::Unanchored("already pinned".into())
        }
        None => first_use_anchor(ctx, &head.instance.id).await,
    };
    head_route(
        cluster,
        Hop::Endpoint(Box::new(endpoint)),
        head,
        first_use,
        opts,
        known_hosts,
    )
}

async fn resolve_proxy(
    ctx: &Context,
    cluster: &str,
    opts: &RouteOptions,
) -> anyhow::Result<ProxyLookup> {
    let cloud = ctx.cloud.as_ref();
    let progress = &ctx.progress;
    progress.phase(format!("finding the bastion of cluster {cluster}"));
    // This machine's public address, asked of the address service from the start: it needs
    // nothing from AWS, and its HTTPS client alone costs tens of milliseconds to build.
    let my_address = opts
        .check_address
        .then(|| tokio::spawn(access::my_address()));
    // Who the caller is (the account the proxy's role must be in), the tagged instances, and
    // the head node with its console anchor, at once: none needs another's answer, and each is
    // a round trip to AWS (two endpoints, each a connection of its own on first use). Errors
    // are still reported in the order the look-ups were once made: the proxy's first.
    let known_hosts = ctx.known_hosts();
    let (expected, candidates, head) = tokio::join!(
        Expected::of(ctx, cluster),
        proxy::candidates(cloud, cluster),
        async {
            let head = find_head_node(cloud, cluster).await?;
            let first_use = if known_hosts::is_pinned(&known_hosts, &head.instance.id) {
                FirstUse::Unanchored("already pinned".into())
            } else {
                first_use_anchor(ctx, &head.instance.id).await
            };
            Ok::<_, crate::cluster::ClusterError>((head, first_use))
        },
    );
    let expected = expected?;
    let search = proxy::Search::sort(&expected, candidates?);
    search.warn_lookalikes();
    let Some(mut proxy) = search.proxy else {
        return Ok(ProxyLookup::NoBastion {
            error: RouteError::NoBastion {
                cluster: cluster.into(),
                region: cloud.region().into(),
                lookalikes: search.lookalikes,
            }
            .into(),
            head: head.ok().map(Box::new),
        });
    };
    // As for head nodes: two that qualify is one too many to pick from.
    if !search.more.is_empty() {
        return Err(RouteError::TwoProxies {
            cluster: cluster.into(),
            instances: std::iter::once(&proxy)
                .chain(&search.more)
                .map(|i| format!("{} ({})", i.id, i.state))
                .collect(),
        }
        .into());
    }
    // The operator's login, where this machine has it (see proxy::login).
    let proxy_key_file = ctx.bastion_dir(cluster).await?.private_key();
    let proxy_login = Login::choose(opts.bastion_user.as_deref(), &proxy_key_file);
    if let (Some(what), Login::Teammate) = (&opts.operator_only, proxy_login) {
        return Err(RouteError::OperatorOnly {
            what: what.clone(),
            user: opts
                .bastion_user
                .clone()
                .unwrap_or_else(|| crate::userdata::TEAMMATE_USER.into()),
        }
        .into());
    }
    if opts.start && proxy.state != "running" {
        proxy = proxy::ensure_running(cloud, proxy, opts.timeout, progress)
            .await?
            .0;
    }
    match proxy.tag(TAG_STATE) {
        Some("ready") => {}
        Some("failed") => return Err(RouteError::ProxyFailed { instance: proxy.id }.into()),
        _ if opts.start => {
            progress.phase(format!(
                "waiting for the proxy {} to finish its bootstrap",
                proxy.id
            ));
            proxy = wait_for(cloud, &proxy.id, Goal::Ready, opts.timeout, progress).await?;
        }
        _ => {}
    }
    // The two checks of the proxy, at once: the address check (the address service's answer
    // against its group) and its host key's anchor. Their errors in the order they were made
    // before.
    let (gated, proxy_trust) = tokio::join!(
        async {
            match my_address {
                Some(address) => gate(ctx, &expected, &proxy, opts, address.await?).await,
                None => Ok(()),
            }
        },
        proxy::host_trust(cloud, &proxy, &known_hosts),
    );
    gated?;
    let proxy_trust = proxy_trust?;
    let (proxy_address, proxy_port) = match (&opts.bastion_address, &proxy.public_ip) {
        (Some(a), _) => crate::values::split_address(a),
        (None, Some(ip)) => (ip.clone(), 22),
        (None, None) => return Err(RouteError::NoAddress { instance: proxy.id }.into()),
    };
    let proxy_user = opts.bastion_user.clone().unwrap_or_else(|| {
        let os = proxy
            .tag(TAG_OS)
            .and_then(ProxyOs::parse)
            .unwrap_or(ProxyOs::Al2023);
        proxy_login.default_user(os).to_string()
    });
    tracing::info!("logging in to the proxy as {proxy_user} ({proxy_login:?})");

    let (head, first_use) = head?;
    let hop = Hop::Proxy(Box::new(ProxyHop {
        target: Target {
            what: format!("the proxy {}", proxy.id),
            user: proxy_user,
            trust: proxy_trust,
            // Per session: link::open logs in with the state dir's key (the operator) or pushes
            // a one-time key (a teammate), see proxy::login.
            credentials: Credentials::default(),
        },
        instance: proxy,
        address: proxy_address,
        port: proxy_port,
        key_file: proxy_key_file,
        login: proxy_login,
    }));
    head_route(cluster, hop, head, first_use, opts, known_hosts)
        .map(|route| ProxyLookup::Found(Box::new(route)))
}

/// The route's head node half, the same whichever way leads to it.
fn head_route(
    cluster: &str,
    hop: Hop,
    head: HeadNode,
    first_use: FirstUse,
    opts: &RouteOptions,
    known_hosts: PathBuf,
) -> anyhow::Result<Route> {
    let head_ip = head
        .ipv4()
        .ok_or_else(|| RouteError::NoHeadIp {
            cluster: cluster.into(),
            instance: head.instance.id.clone(),
        })?
        .to_string();
    let head_user = opts
        .user
        .clone()
        .unwrap_or_else(|| head.default_user().to_string());
    if let Some(path) = &opts.identity
        && let Err(e) = std::fs::File::open(path)
    {
        return Err(crate::ssh::client::SshError::Key {
            path: path.clone(),
            reason: format!("{e} (-i names the head node's key: the cluster's EC2 key pair)"),
        }
        .into());
    }
    let head_credentials = match &opts.identity {
        Some(path) => Credentials {
            files: vec![path.clone()],
            agent: true,
            ..Credentials::default()
        },
        None => Credentials::openssh_defaults(),
    };
    Ok(Route {
        cluster: cluster.into(),
        hop,
        head_target: Target {
            what: format!("the head node {} ({head_ip})", head.instance.id),
            user: head_user,
            trust: Trust::Pin {
                file: known_hosts.clone(),
                alias: head.instance.id.clone(),
                cluster: cluster.into(),
                first_use,
            },
            credentials: head_credentials,
        },
        head_ip,
        head,
        known_hosts,
    })
}

impl Route {
    /// The proxy, for `what` that needs it; an error naming the endpoint where there is none.
    pub fn proxy(&self, what: &str) -> Result<&ProxyHop, RouteError> {
        match &self.hop {
            Hop::Proxy(p) => Ok(p),
            Hop::Endpoint(e) => Err(RouteError::NoProxy {
                what: what.into(),
                cluster: self.cluster.clone(),
                endpoint: e.id.clone(),
                chosen: true,
            }),
        }
    }

    /// Refuses `what` (a session on the proxy itself) for a teammate's login, saying why, and
    /// where no proxy is in the way.
    pub fn operator_only(&self, what: &str) -> Result<(), RouteError> {
        let proxy = self.proxy(what)?;
        match proxy.login {
            Login::Operator => Ok(()),
            Login::Teammate => Err(RouteError::OperatorOnly {
                what: what.into(),
                user: proxy.target.user.clone(),
            }),
        }
    }

    /// The way in, for a progress line: "the proxy i-… at ADDRESS" or the endpoint.
    pub fn way(&self) -> String {
        match &self.hop {
            Hop::Proxy(p) => format!("the proxy {} at {}", p.instance.id, p.address),
            Hop::Endpoint(e) => format!("the EC2 Instance Connect Endpoint {}", e.id),
        }
    }

    pub fn via(&self) -> Via {
        match self.hop {
            Hop::Proxy(_) => Via::Proxy,
            Hop::Endpoint(_) => Via::Eice,
        }
    }
}

/// Checks this machine's public address against the proxy's SSH rules before dialling: not
/// admitted is one line with the command to run (or, with `allow_me`, the rule added). Where the
/// address cannot be learned, or the proxy is reached at another address (`--bastion-address`:
/// a VPN or a private IP, where the public address says nothing), it goes on, and says so.
async fn gate(
    ctx: &Context,
    expected: &Expected,
    proxy: &Instance,
    opts: &RouteOptions,
    address: Result<std::net::Ipv4Addr, AccessError>,
) -> anyhow::Result<()> {
    let ip = match address {
        Ok(ip) => ip,
        Err(e) => {
            tracing::info!("not checking your address against the proxy's security group: {e}");
            return Ok(());
        }
    };
    let group = proxy::group(ctx.cloud.as_ref(), expected, proxy).await?;
    if access::admits(&group.ingress, ip) {
        tracing::info!(
            "your address {ip} is admitted by the proxy's group {}",
            group.id
        );
        return Ok(());
    }
    if opts.allow_me {
        let who = ctx.identity().await?.arn.clone();
        let description = access::description(&who, &access::today());
        access::admit(
            ctx.cloud.as_ref(),
            &group.id,
            Ipv4Net::from(ip),
            access::Admitter::Allow {
                description: &description,
            },
        )
        .await?;
        ctx.progress.note(format!(
            "admitted your address {ip}/32 to the proxy's SSH port ({description})"
        ));
        return Ok(());
    }
    let refusal = AccessError::NotAdmitted {
        ip,
        cluster: expected.cluster.clone(),
        group: group.id,
    };
    if opts.bastion_address.is_some() {
        tracing::warn!("{refusal} (going on: --bastion-address may reach it another way)");
        return Ok(());
    }
    Err(refusal.into())
}

/// What a first connection to the head node can check its key against: the host keys it
/// printed to its console at first boot, read with `ec2:GetConsoleOutput` (AWS, not the
/// network, carries them). Without them, trust on first use, and the reason says why.
async fn first_use_anchor(ctx: &Context, head: &str) -> FirstUse {
    ctx.progress.phase(format!(
        "reading the host keys {head} printed to its console"
    ));
    match ctx.cloud.console_output(head).await {
        Ok(text) => match known_hosts::console_host_keys(&text) {
            Some(keys) => FirstUse::Anchored(keys),
            None => FirstUse::Unanchored(
                "its console output (ec2:GetConsoleOutput) holds no cloud-init host-key block"
                    .into(),
            ),
        },
        Err(e) => FirstUse::Unanchored(format!("its console output could not be read ({e})")),
    }
}
