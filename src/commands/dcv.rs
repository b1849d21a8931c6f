//! `bastion connect --dcv`: the head node's DCV session in the browser, through a tunnel that
//! listens before the one-time URL is shown; `--desktop`: the proxy's own DCV desktop (bound to
//! its loopback, never open in any security group, and behind a token minted over SSH for each
//! URL, so the forwarded port alone admits no other local user). Both stay up until Ctrl-C.
//!
//! The head node's DCV port is reached inside the head node's own SSH session (a direct-tcpip
//! channel of the inner, end-to-end session, as `-L` does), never from the proxy: DCV's TLS
//! certificate is self-signed, so root on the proxy could otherwise sit between the browser and
//! DCV and take the token. The browser is opened on a local file (mode 0600) that redirects to
//! the URL, so the token never stands on a command line that other local users can read.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::cli::ConnectArgs;
use crate::context::Context;
use crate::dcv::{self, DcvError, DcvUrl};
use crate::footprint::TAG_DESKTOP;
use crate::link::{Carrier, Link};
use crate::route::{self, Route, RouteOptions};
use crate::ssh::client::{TUNNEL_WINDOW, Verifier};
use crate::ssh::forward::{self, Forward, Stats};
use crate::ssh::session;
use crate::ui::OutputFormat;
use crate::wait::{Goal, wait_for};

#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    #[error(
        "the proxy {instance} was created with --no-dcv: it has no desktop. Run `bastion down` and `bastion up` without --no-dcv"
    )]
    Disabled { instance: String },
    #[error(
        "installing the proxy's desktop failed (bastion:desktop=failed). The end of its log:\n{log}"
    )]
    Failed { log: String },
    #[error("cannot listen on {LOOPBACK}:{port}: {reason}; pick another --local-port")]
    Listen { port: u16, reason: String },
}

/// The address every local end of a DCV tunnel listens on, and the one its URL names: the URL
/// must name the very socket bastion holds, or another local user could bind the other loopback
/// (`localhost` may resolve to `::1` first) and receive the token.
const LOOPBACK: &str = "127.0.0.1";

/// The local page that sends the browser to a URL with a token: a file only the user can read,
/// so the token is never an argument of the browser's command line (which `/proc` shows to every
/// local user). Removed when the tunnel ends.
struct BrowserPage {
    dir: Option<tempfile::TempDir>,
}

impl BrowserPage {
    fn new(ctx: &Context) -> BrowserPage {
        let dir = crate::files::private_dir(&ctx.state_root)
            .and_then(|_| {
                tempfile::Builder::new()
                    .prefix(".dcv-")
                    .tempdir_in(&ctx.state_root)
            })
            .map_err(|e| tracing::warn!("cannot make a private page for the browser: {e}"))
            .ok();
        BrowserPage { dir }
    }

    /// Writes the redirect page (0600, in a 0700 directory) and returns its `file://` URL.
    fn write(&self, url: &str) -> std::io::Result<String> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no private directory"))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let file = dir.path().join("open.html");
        // The URL is ours (host, port, and a token and id checked by dcv.rs to be word
        // characters), so it needs no escaping beyond what a URL cannot contain anyway.
        let html = format!(
            "<!doctype html><meta charset=\"utf-8\"><meta name=\"referrer\" content=\"no-referrer\">\
             <meta http-equiv=\"refresh\" content=\"0;url={url}\"><title>bastion: DCV</title>\
             <script>location.replace({json})</script>",
            json = serde_json::to_string(url).unwrap_or_default()
        );
        crate::files::write_file_atomic(&file, html.as_bytes(), 0o600)?;
        Ok(format!("file://{}", file.display()))
    }
}

fn show(ctx: &Context, page: &BrowserPage, url: &DcvUrl, open_browser: bool) {
    if ctx.output == OutputFormat::Json {
        // One object per line: a fresh URL later is one more line.
        if let Ok(line) = serde_json::to_string(url) {
            crate::ui::print_text(line);
        }
        return;
    }
    if open_browser {
        match page.write(&url.url) {
            Ok(local) if webbrowser::open(&local).is_ok() => {
                ctx.progress.say("opened the DCV session in your browser");
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot write the page for the browser: {e}"),
        }
    }
    crate::ui::print_text(url);
}

/// The local end of the tunnel (`--local-port`, else a free port) and its port, then the
/// sessions: listening comes first, so a taken port fails before anything is connected.
async fn listen_then_connect(
    ctx: &Context,
    args: &ConnectArgs,
    (route, opts): (&Route, &RouteOptions),
    carrier: Carrier,
    what: String,
) -> anyhow::Result<(tokio::net::TcpListener, u16, Link)> {
    let listener = listen(args.local_port).await?;
    let local_port = listener.local_addr()?.port();
    ctx.progress
        .phase(format!("connecting through {}", route.way()));
    let link = Link::open(ctx, route.clone(), opts.clone(), carrier, what).await?;
    Ok((listener, local_port, link))
}

async fn listen(port: Option<u16>) -> anyhow::Result<tokio::net::TcpListener> {
    let port = port.unwrap_or(0);
    tokio::net::TcpListener::bind((LOOPBACK, port))
        .await
        .map_err(|e| {
            DesktopError::Listen {
                port,
                reason: e.to_string(),
            }
            .into()
        })
}

/// Checks that `session` reaches `host:port` before a URL with a 30-second token is shown.
async fn probe(
    session: &russh::client::Handle<Verifier>,
    host: &str,
    port: u16,
) -> Result<(), DcvError> {
    match tokio::time::timeout(
        Duration::from_secs(15),
        session.channel_open_direct_tcpip(host, port as u32, "127.0.0.1", 0),
    )
    .await
    {
        Ok(Ok(ch)) => {
            let _ = ch.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(DcvError::PortClosed {
            addr: format!("{host}:{port}"),
            port,
            reason: e.to_string(),
        }),
        Err(_) => Err(DcvError::PortClosed {
            addr: format!("{host}:{port}"),
            port,
            reason: "no answer within 15 s".into(),
        }),
    }
}

/// Keeps the tunnel up until Ctrl-C, showing the open connections and reconnecting a lost link
/// (the local port stays); each Enter on stdin calls `fresh` with the current session for a
/// new URL.
async fn hold<F, Fut>(
    ctx: &Context,
    stats: &Stats,
    link: &mut Link,
    mut fresh: F,
) -> anyhow::Result<()>
where
    F: FnMut(Arc<russh::client::Handle<Verifier>>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let status = std::io::stderr().is_terminal() && !ctx.quiet;
    // One future for the whole wait: a fresh `ctrl_c()` per pass would miss a Ctrl-C that
    // arrives between passes (while a fresh URL is minted, say).
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => {
                if status {
                    eprintln!();
                }
                return Ok(());
            }
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(_)) => fresh(link.carrier()).await?,
                _ => stdin_open = false,
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let reconnected = tokio::select! {
                    _ = &mut interrupted => return Ok(()),
                    r = link.keep_up(ctx) => r?,
                };
                if reconnected {
                    ctx.progress.say("press Enter for a fresh URL (the old one's session was cut)");
                }
                if status {
                    eprint!(
                        "\rbastion: DCV tunnel up, {} open connection(s). Enter: fresh URL, Ctrl-C: stop. ",
                        stats.open.load(Ordering::Relaxed)
                    );
                }
            }
        }
    }
}

pub async fn run(ctx: &Context, args: &ConnectArgs, opts: RouteOptions) -> anyhow::Result<()> {
    let route = route::resolve(ctx, &args.cluster, &opts).await?;
    if args.desktop {
        return desktop(ctx, args, &route, &opts).await;
    }
    let what = route.head_target.what.clone();
    let (listener, local_port, mut link) =
        listen_then_connect(ctx, args, (&route, &opts), Carrier::Head, what).await?;
    ctx.progress.phase("asking the head node for a DCV session");
    let user = route.head_target.user.clone();
    let head = link.carrier();
    let first = dcv::request_session(&head, &user).await?;
    // DCV as the head node itself reaches it: from inside its own session.
    probe(&head, &route.head_ip, first.port).await?;

    // The tunnel listens before the URL is shown: the token lives 30 seconds.
    let stats = Stats::default();
    let fwd = Forward {
        bind: LOOPBACK.into(),
        port: local_port,
        host: route.head_ip.clone(),
        host_port: first.port,
    };
    tokio::spawn(forward::serve(link.watch(), listener, fwd, stats.clone()));
    ctx.progress.finish();
    let open_browser = !args.show_url;
    let page = BrowserPage::new(ctx);
    show(
        ctx,
        &page,
        &DcvUrl::head_node(local_port, &first),
        open_browser,
    );

    let (user, page) = (&user, &page);
    hold(ctx, &stats, &mut link, |head| async move {
        let s = dcv::request_session(&head, user).await?;
        show(ctx, page, &DcvUrl::head_node(local_port, &s), open_browser);
        Ok(())
    })
    .await
}

async fn desktop(
    ctx: &Context,
    args: &ConnectArgs,
    route: &Route,
    opts: &RouteOptions,
) -> anyhow::Result<()> {
    let cloud = ctx.cloud.as_ref();
    let proxy_hop = route.proxy("--desktop (the proxy's own DCV desktop)")?;
    let instance = &proxy_hop.instance;
    if instance.tag("bastion:dcv") == Some("off") {
        return Err(DesktopError::Disabled {
            instance: instance.id.clone(),
        }
        .into());
    }
    // DCV's few connections gain from the tunnel's large window.
    let carrier = Carrier::Proxy {
        window: TUNNEL_WINDOW,
    };
    let what = proxy_hop.target.what.clone();
    let (listener, local_port, mut link) =
        listen_then_connect(ctx, args, (route, opts), carrier, what).await?;
    let proxy = link.carrier();

    let failed = match instance.tag(TAG_DESKTOP) {
        Some("ready") => false,
        Some("failed") => true,
        _ => {
            ctx.progress
                .phase("the proxy's desktop is still installing (DCV, GNOME, pcluster); waiting");
            let limit = Duration::from_secs(args.timeout * 60);
            match wait_for(cloud, &instance.id, Goal::Desktop, limit, &ctx.progress).await {
                Ok(_) => false,
                Err(crate::wait::WaitError::DesktopFailed { .. }) => true,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if failed {
        let (_, log) = session::capture(
            &proxy,
            "the proxy",
            "sudo -n tail -n 40 /var/log/bastion-bootstrap.log 2>&1 || tail -n 40 /var/log/bastion-bootstrap.log 2>&1",
        )
        .await?;
        return Err(DesktopError::Failed {
            // The proxy's log: shown, never obeyed by the terminal.
            log: crate::ui::printable_lines(log.trim_end()),
        }
        .into());
    }
    probe(&proxy, "127.0.0.1", dcv::PROXY_DCV_PORT).await?;
    // A token per URL: the forwarded port alone lets no other local user in.
    let token = dcv::proxy_token(&proxy).await?;
    let stats = Stats::default();
    let fwd = Forward {
        bind: LOOPBACK.into(),
        port: local_port,
        host: "127.0.0.1".into(),
        host_port: dcv::PROXY_DCV_PORT,
    };
    tokio::spawn(forward::serve(link.watch(), listener, fwd, stats.clone()));
    ctx.progress.finish();
    let page = BrowserPage::new(ctx);
    let open_browser = !args.show_url;
    show(ctx, &page, &DcvUrl::proxy(local_port, &token), open_browser);
    let page = &page;
    hold(ctx, &stats, &mut link, |proxy| async move {
        let token = dcv::proxy_token(&proxy).await?;
        show(ctx, page, &DcvUrl::proxy(local_port, &token), open_browser);
        Ok(())
    })
    .await
}
