//! A tunnel's SSH sessions, kept up across a blip: the session that carries the user's
//! connections (the head node's, inside the proxy's; or the proxy's own with `--on-proxy`),
//! watched; when keepalives find it dead, the loss is said on stderr and the route is resolved
//! again (the proxy's address changes after a stop and start, and a proxy the idle timer stopped
//! is started) and reconnected with backoff, one line per reconnect. Local listeners are not
//! touched, so `connect -N` and `connect --dcv` keep their ports.

use std::sync::Arc;
use std::time::Duration;

use russh::client::Handle;
use tokio::sync::watch;

use crate::context::Context;
use crate::eice::tunnel::{self, Ended};
use crate::proxy;
use crate::route::{self, Hop, Route, RouteOptions};
use crate::ssh::client::{
    CHANNEL_WINDOW, SshError, TUNNEL_WINDOW, Verifier, connect, connect_stream, connect_via,
};
use crate::ssh::known_hosts::HostKeyError;

/// Which session carries the user's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// The head node's session, inside the proxy's (a jump).
    Head,
    /// The proxy's own session (`--on-proxy`, `--dcv --desktop`), with this receive window.
    Proxy { window: u32 },
}

/// The live sessions: `carrier` carries the connections; `proxy` must live as long (in a jump,
/// the head node's session runs inside one of its channels). Through an EC2 Instance Connect
/// Endpoint there is no proxy, and `ended` holds the endpoint's word when it ends the tunnel.
pub struct Sessions {
    pub proxy: Option<Arc<Handle<Verifier>>>,
    pub carrier: Arc<Handle<Verifier>>,
    pub ended: Option<Ended>,
}

/// The first wait before a reconnect, doubling to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Opens the sessions of `route` for `carrier`, logging in to the proxy with a key pushed for
/// this session (see [`proxy::login`]).
async fn open(ctx: &Context, route: &Route, carrier: Carrier) -> anyhow::Result<Sessions> {
    if let (Hop::Endpoint(endpoint), Carrier::Head) = (&route.hop, carrier) {
        let stream = open_tunnel(ctx, route, endpoint).await?;
        let ended = stream.ended();
        let head =
            connect_stream(&route.head_target, stream, &route.head_ip, CHANNEL_WINDOW).await?;
        return Ok(Sessions {
            proxy: None,
            carrier: Arc::new(head),
            ended: Some(ended),
        });
    }
    let proxy = open_proxy(ctx, route, carrier).await?;
    let carrier = match carrier {
        Carrier::Proxy { .. } => proxy.clone(),
        Carrier::Head => {
            Arc::new(connect_via(&proxy, &route.head_target, &route.head_ip, 22).await?)
        }
    };
    Ok(Sessions {
        proxy: Some(proxy),
        carrier,
        ended: None,
    })
}

/// A tunnel through `endpoint` to the head node's SSH port, for as long as AWS allows.
pub async fn open_tunnel(
    ctx: &Context,
    route: &Route,
    endpoint: &crate::eice::Endpoint,
) -> anyhow::Result<tunnel::Tunnel> {
    let ip: std::net::Ipv4Addr = route.head_ip.parse().map_err(|_| {
        anyhow::anyhow!(
            "the head node's private IP '{}' is not an IPv4 address",
            crate::ui::printable(&route.head_ip)
        )
    })?;
    Ok(tunnel::open(ctx.cloud.as_ref(), endpoint, ip, 22, tunnel::MAX_DURATION).await?)
}

/// The proxy's session alone, with the window `carrier` needs.
pub async fn open_proxy(
    ctx: &Context,
    route: &Route,
    carrier: Carrier,
) -> anyhow::Result<Arc<Handle<Verifier>>> {
    // With a jump the proxy's one busy channel carries the head node's whole session; otherwise
    // its channels are the user's connections.
    let window = match carrier {
        Carrier::Head => TUNNEL_WINDOW,
        Carrier::Proxy { window } => window,
    };
    let hop = route.proxy("a session on the proxy")?;
    let mut target = hop.target.clone();
    target.credentials = proxy::login(
        ctx.cloud.as_ref(),
        &hop.instance,
        &target.user,
        &hop.key_file,
    )
    .await?;
    Ok(Arc::new(
        connect(&target, &hop.address, hop.port, window).await?,
    ))
}

/// Keeps a tunnel's sessions up, and owns the route they take: a reconnect resolves it again
/// (the proxy's address after a stop and start, a proxy to start) with the options it was
/// opened with.
pub struct Link {
    tx: watch::Sender<Option<Arc<Handle<Verifier>>>>,
    current: Sessions,
    carrier: Carrier,
    what: String,
    route: Route,
    opts: RouteOptions,
}

impl Link {
    /// Opens the sessions of `route` for `carrier`; `what` names the carrier's far end in the
    /// lines about a loss.
    pub async fn open(
        ctx: &Context,
        route: Route,
        opts: RouteOptions,
        carrier: Carrier,
        what: String,
    ) -> anyhow::Result<Link> {
        let sessions = open(ctx, &route, carrier).await?;
        let (tx, _) = watch::channel(Some(sessions.carrier.clone()));
        Ok(Link {
            tx,
            current: sessions,
            carrier,
            what,
            route,
            opts,
        })
    }

    /// The carrier session as it changes: `None` while reconnecting.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Handle<Verifier>>>> {
        self.tx.subscribe()
    }

    /// The carrier session now.
    pub fn carrier(&self) -> Arc<Handle<Verifier>> {
        self.current.carrier.clone()
    }

    fn lost(&self) -> bool {
        self.current.carrier.is_closed()
            || self.current.proxy.as_ref().is_some_and(|p| p.is_closed())
    }

    /// The route in use now (a reconnect may have resolved another).
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Why the endpoint ended the tunnel, where it said (through an EC2 Instance Connect
    /// Endpoint only).
    pub fn ended(&self) -> Option<String> {
        self.current.ended.as_ref().and_then(Ended::why)
    }

    /// Checks the sessions; when they are gone, reconnects (retrying with backoff until it
    /// works). Returns true when it reconnected. A host key that is refused on the way back
    /// (someone may be in the middle) ends the tunnel instead: that is never retried. Call it
    /// about once a second.
    pub async fn keep_up(&mut self, ctx: &Context) -> anyhow::Result<bool> {
        if !self.lost() {
            return Ok(false);
        }
        self.tx.send_replace(None);
        tracing::info!(to = %self.what, "session lost; reconnecting");
        let why = self.ended().map(|w| format!(" ({w})")).unwrap_or_default();
        ctx.progress.say(format_args!(
            "the connection to {} was lost{why}; reconnecting (local ports stay open)",
            self.what
        ));
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1u32;
        loop {
            match reconnect(ctx, &self.route.cluster, &self.opts, self.carrier).await {
                Ok((route, sessions)) => {
                    self.route = route;
                    self.tx.send_replace(Some(sessions.carrier.clone()));
                    self.current = sessions;
                    tracing::info!(to = %self.what, attempt, "session reconnected");
                    ctx.progress.say(format_args!(
                        "reconnected to {} (attempt {attempt})",
                        self.what
                    ));
                    return Ok(true);
                }
                Err(e) if refused_host_key(&e) => return Err(e),
                Err(e) => {
                    ctx.progress.say(format_args!(
                        "reconnect attempt {attempt} failed ({e:#}); next in {} s",
                        backoff.as_secs()
                    ));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
            }
        }
    }
}

/// A host key that did not pass (changed, not the tag's, not the console's, revoked): the one
/// failure a reconnect must never retry past.
fn refused_host_key(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let key = c
            .downcast_ref::<HostKeyError>()
            .or(match c.downcast_ref::<SshError>() {
                Some(SshError::HostKey(k)) => Some(k),
                _ => None,
            });
        key.is_some_and(|k| !matches!(k, HostKeyError::Io { .. }))
    })
}

async fn reconnect(
    ctx: &Context,
    cluster: &str,
    opts: &RouteOptions,
    carrier: Carrier,
) -> anyhow::Result<(Route, Sessions)> {
    let route = route::resolve(ctx, cluster, opts).await?;
    let sessions = open(ctx, &route, carrier).await?;
    Ok((route, sessions))
}
