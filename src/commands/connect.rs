//! `bastion connect`: a shell, a command or port forwards on the head node, through the proxy
//! (one russh client, a jump like `ssh -J`); or on the proxy itself with `--on-proxy`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::cli::ConnectArgs;
use crate::context::Context;
use crate::link::{self, Carrier, Link};
use crate::route::{self, Hop, RouteOptions};
use crate::ssh::client::{CHANNEL_WINDOW, SshError};
use crate::ssh::forward::{self, Stats};
use crate::ssh::session;

/// A remote command's non-zero exit code, passed through as bastion's own (printed by nobody).
#[derive(Debug, thiserror::Error)]
#[error("the remote command exited with {0}")]
pub struct RemoteExit(pub u8);

impl crate::exit::ExitStatus for RemoteExit {
    fn exit_status(&self) -> Option<u8> {
        Some(self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("-N without -L forwards nothing; add -L [bind:]port:host:hostport")]
    NothingToForward,
    #[error("-N and a command exclude each other")]
    CommandWithN,
    #[error("{0}")]
    Bind(String),
    #[error("the piped connection failed: {0}")]
    Pipe(String),
}

pub async fn run(ctx: &Context, args: ConnectArgs) -> anyhow::Result<()> {
    if args.no_command && args.forwards.is_empty() {
        return Err(ConnectError::NothingToForward.into());
    }
    if args.no_command && !args.command.is_empty() {
        return Err(ConnectError::CommandWithN.into());
    }
    // A session on the proxy itself: refused for a teammate's login before the proxy is
    // started, and where the endpoint is the way in (see route::resolve).
    let operator_only = if args.on_proxy {
        Some("--on-proxy".to_string())
    } else if args.dcv && args.desktop {
        Some("--desktop (the proxy's own DCV desktop)".to_string())
    } else {
        None
    };
    let opts = RouteOptions {
        start: true,
        timeout: Duration::from_secs(args.timeout * 60),
        check_address: true,
        allow_me: args.allow_me,
        operator_only,
        ..super::route_options(&args.route)
    };
    if let Some(to) = &args.stdio {
        return stdio(ctx, &args.cluster, &opts, to.as_deref()).await;
    }
    if args.dcv {
        return crate::commands::dcv::run(ctx, &args, opts).await;
    }
    let route = route::resolve(ctx, &args.cluster, &opts).await?;

    // Bind every listener before connecting: a busy port fails fast.
    let mut listeners = Vec::new();
    for f in &args.forwards {
        listeners.push((
            forward::bind(f).await.map_err(ConnectError::Bind)?,
            f.clone(),
        ));
    }

    ctx.progress
        .phase(format!("connecting through {}", route.way()));
    let carrier = if args.on_proxy {
        Carrier::Proxy {
            window: CHANNEL_WINDOW,
        }
    } else {
        Carrier::Head
    };
    let what = if args.on_proxy {
        route.proxy("--on-proxy")?.target.what.clone()
    } else {
        route.head_target.what.clone()
    };
    let mut link = Link::open(ctx, route, opts, carrier, what.clone()).await?;
    ctx.progress.finish();

    let stats = Stats::default();
    for (listener, f) in listeners {
        tracing::info!("forwarding {f}");
        ctx.progress
            .say(format_args!("forwarding {f} (as seen from {what})"));
        tokio::spawn(forward::serve(link.watch(), listener, f, stats.clone()));
    }

    if args.no_command {
        ctx.progress.say("press Ctrl-C to stop");
        // One future for the whole wait: a fresh `ctrl_c()` per pass would miss a Ctrl-C that
        // arrives between passes. A lost link is reconnected; the listeners stay.
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            tokio::select! {
                _ = &mut interrupted => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    tokio::select! {
                        _ = &mut interrupted => return Ok(()),
                        r = link.keep_up(ctx) => { r?; }
                    }
                    tracing::debug!(open = stats.open.load(Ordering::Relaxed), "forwarding");
                }
            }
        }
    }

    let session = link.carrier();
    let through_endpoint = matches!(link.route().hop, Hop::Endpoint(_));
    if through_endpoint && args.command.is_empty() {
        ctx.progress.say(format_args!(
            "through {}: AWS ends this session within the hour (use --via proxy for longer ones)",
            link.route().way()
        ));
    }
    let code = if args.command.is_empty() {
        session::shell(&session, &what).await
    } else {
        session::exec(&session, &what, Some(&args.command.join(" "))).await
    };
    // The endpoint's word on why the session ended, where it said one (the hour's end).
    if let Some(why) = link.ended() {
        ctx.progress.say(format_args!("{why}"));
    }
    let code = code?;
    if code == 0 {
        Ok(())
    } else {
        Err(RemoteExit(code).into())
    }
}

/// `--stdio [HOST:PORT]`: stdin and stdout piped to HOST:PORT through the proxy (the head node's
/// SSH port by default), for OpenSSH's ProxyCommand. Nothing else is written to stdout.
async fn stdio(
    ctx: &Context,
    cluster: &str,
    opts: &RouteOptions,
    to: Option<&str>,
) -> anyhow::Result<()> {
    let route = route::resolve(ctx, cluster, opts).await?;
    let (host, port) = match to {
        Some(a) => crate::values::split_address(a),
        None => (route.head_ip.clone(), 22),
    };
    if (host.as_str(), port) != (route.head_ip.as_str(), 22) {
        route.operator_only(&format!(
            "--stdio {host}:{port} (not the head node's SSH port)"
        ))?;
    }
    let mut local = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    let piped = if let Hop::Endpoint(endpoint) = &route.hop {
        let mut remote = link::open_tunnel(ctx, &route, endpoint).await?;
        ctx.progress.finish();
        tracing::info!(
            "piping stdin and stdout to {host}:{port} through {}",
            route.way()
        );
        tokio::io::copy_bidirectional_with_sizes(&mut local, &mut remote, 1 << 18, 1 << 18).await
    } else {
        let carrier = Carrier::Proxy {
            window: CHANNEL_WINDOW,
        };
        let proxy = link::open_proxy(ctx, &route, carrier).await?;
        ctx.progress.finish();
        let channel = proxy
            .channel_open_direct_tcpip(host.as_str(), u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| SshError::HeadUnreachable {
                addr: format!("{host}:{port}"),
                port,
                reason: e.to_string(),
            })?;
        tracing::info!("piping stdin and stdout to {host}:{port} through the proxy");
        let mut remote = channel.into_stream();
        tokio::io::copy_bidirectional_with_sizes(&mut local, &mut remote, 1 << 18, 1 << 18).await
    };
    match piped {
        Ok((up, down)) => {
            tracing::info!(up, down, "the piped connection ended");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(ConnectError::Pipe(e.to_string()).into()),
    }
}
