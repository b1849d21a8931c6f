//! `bastion ssh-config`: an OpenSSH configuration for the proxy and the head node, so `ssh`,
//! `scp`, `rsync`, VS Code Remote and `pcluster ssh` (which runs `ssh <user>@<private ip>`) go
//! through the proxy with the user's own OpenSSH. Host keys: the proxy's comes from its tag
//! (written to bastion's known_hosts), the head node's is pinned on first use.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::SshConfigArgs;
use crate::context::Context;
use crate::route::{self, Hop as RouteHop, Route, RouteOptions, Via};
use crate::ssh::client::Trust;
use crate::ssh::known_hosts::{self, FirstUse};
use crate::ui::emit;

#[derive(Debug, Serialize)]
pub struct SshConfigResult {
    pub cluster: String,
    pub proxy_host: String,
    pub head_host: String,
    /// `proxy-jump` (OpenSSH logs in to the proxy with this machine's proxy key) or `stdio`
    /// (bastion is the ProxyCommand, with a one-time key; there is no proxy host then).
    pub via: &'static str,
    pub config: String,
    /// Where `--install` wrote the config (and the Include line's file).
    pub installed: Option<String>,
    pub include_in: Option<String>,
}

impl fmt::Display for SshConfigResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.installed, &self.include_in) {
            (Some(path), Some(main)) if self.via == "stdio" => write!(
                f,
                "wrote {path} (included from {main}).\nnow: ssh {}",
                self.head_host
            ),
            (Some(path), Some(main)) => write!(
                f,
                "wrote {path} (included from {main}).\nnow: ssh {}    or    ssh {}",
                self.head_host, self.proxy_host
            ),
            _ => write!(f, "{}", self.config.trim_end()),
        }
    }
}

/// The directory of installed configs; one `Include` line in ~/.ssh/config covers them all.
pub fn installed_dir(ctx: &Context) -> PathBuf {
    crate::state::ssh_config_dir(&ctx.state_root)
}

pub fn installed_file(ctx: &Context, cluster: &str) -> PathBuf {
    installed_dir(ctx).join(format!("{cluster}-{}.conf", ctx.cloud.region()))
}

fn quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.contains(' ') {
        format!("\"{s}\"")
    } else {
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    #[error("{what} holds a control character, which an OpenSSH configuration cannot carry")]
    Unquotable { what: String },
    #[error(
        "{what} is not one word of printable characters ({value:?}); the ssh config was not \
         written"
    )]
    NotAWord { what: String, value: String },
    #[error("cannot tell where this bastion executable is ({0}), for the ProxyCommand")]
    NoExecutable(String),
}

/// One word of a ProxyCommand: OpenSSH expands `%` tokens, then hands the line to the shell, so
/// a word is single-quoted unless it is plainly safe, and `%` is doubled.
fn proxy_word(what: &str, word: &str) -> Result<String, SshConfigError> {
    if word.chars().any(char::is_control) {
        return Err(SshConfigError::Unquotable { what: what.into() });
    }
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:@=+-,".contains(c));
    let quoted = if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    };
    Ok(quoted.replace('%', "%%"))
}

/// `bastion connect --cluster NAME --stdio`, by this executable's absolute path, with the
/// AWS settings this run was given, so OpenSSH's later runs reach the same proxy.
pub fn proxy_command(
    ctx: &Context,
    cluster: &str,
    route: &crate::cli::RouteArgs,
    via: Via,
) -> Result<String, SshConfigError> {
    let exe = std::env::current_exe().map_err(|e| SshConfigError::NoExecutable(e.to_string()))?;
    let exe = exe
        .to_str()
        .ok_or_else(|| SshConfigError::NoExecutable("its path is not UTF-8".into()))?;
    let mut words = vec![
        proxy_word("the executable's path", exe)?,
        "connect".to_string(),
        "--cluster".to_string(),
        proxy_word("the cluster name", cluster)?,
        "--stdio".to_string(),
        // Errors only: OpenSSH shares the terminal with it.
        "--quiet".to_string(),
        "--region".to_string(),
        proxy_word("the region", ctx.cloud.region())?,
        // The way this run found, kept: a proxy made later does not change where it goes.
        "--via".to_string(),
        via.as_str().to_string(),
    ];
    if let Some(a) = &route.bastion_address {
        words.push("--bastion-address".into());
        words.push(proxy_word("the bastion address", a)?);
    }
    if let Some(u) = &route.bastion_user {
        words.push("--bastion-user".into());
        words.push(proxy_word("the bastion user", u)?);
    }
    let o = &ctx.invocation;
    if let Some(p) = &o.profile {
        words.push("--profile".into());
        words.push(proxy_word("the profile name", p)?);
    }
    if let Some(e) = &o.endpoint_url {
        words.push("--endpoint-url".into());
        words.push(proxy_word("the endpoint URL", e)?);
    }
    if let Some(d) = &o.state_dir {
        let d = d.to_str().ok_or_else(|| SshConfigError::Unquotable {
            what: "the state dir (not UTF-8)".into(),
        })?;
        words.push("--state-dir".into());
        words.push(proxy_word("the state dir", d)?);
    }
    Ok(words.join(" "))
}

/// How OpenSSH reaches the head node: a jump through the proxy with this machine's proxy key,
/// or, on a machine without one (a teammate's), bastion itself as the ProxyCommand, logging in
/// to the proxy with a one-time key each time.
#[derive(Debug, Clone)]
pub enum Hop {
    Jump,
    Stdio { command: String },
}

/// One value of a configuration line: a single word of printable characters, else refused,
/// naming what it is (the values are checked where they come from, see `aws::checked`; this
/// holds the file to it whatever a later change lets through).
fn config_word<'a>(what: &str, value: &'a str) -> Result<&'a str, SshConfigError> {
    if value.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(SshConfigError::NotAWord {
            what: what.into(),
            value: value.into(),
        });
    }
    Ok(value)
}

pub fn render(route: &Route, identity: Option<&Path>, hop: &Hop) -> Result<String, SshConfigError> {
    let head_id = config_word("the head node's instance id", &route.head.instance.id)?;
    config_word("the head node's private IP", &route.head_ip)?;
    config_word("the head node's login user", &route.head_target.user)?;
    let proxy_host = format!("bastion-{}", route.cluster);
    let head_host = format!("{}-head", route.cluster);
    let known = quote(&route.known_hosts);
    let head_alias = match &route.head_target.trust {
        Trust::Pin { alias, .. } => alias.clone(),
        Trust::Proxy { instance, .. } => instance.clone(),
    };
    config_word("the head node's key alias", &head_alias)?;
    // Pinned (by connect, or from the console): strict; otherwise OpenSSH's own first use.
    let head_checking = if known_hosts::is_pinned(&route.known_hosts, &head_alias) {
        "yes"
    } else {
        "accept-new"
    };
    let (way, proxy_block) = match &route.hop {
        RouteHop::Proxy(p) => {
            let proxy_id = config_word("the proxy's instance id", &p.instance.id)?;
            config_word("the proxy's address", &p.address)?;
            config_word("the proxy's login user", &p.target.user)?;
            (
                format!("proxy {proxy_id}"),
                format!(
                    "Host {proxy_host}\n\
                     \x20   HostName {addr}\n\
                     \x20   Port {port}\n\
                     \x20   User {puser}\n\
                     \x20   IdentityFile {pkey}\n\
                     \x20   IdentitiesOnly yes\n\
                     \x20   HostKeyAlias {proxy}\n\
                     \x20   UserKnownHostsFile {known}\n\
                     \x20   StrictHostKeyChecking yes\n\
                     \x20   ForwardAgent no\n\
                     \x20   ForwardX11 no\n\
                     \x20   ServerAliveInterval 30\n\
                     \n",
                    proxy = proxy_id,
                    addr = p.address,
                    port = p.port,
                    puser = p.target.user,
                    pkey = quote(&p.key_file),
                ),
            )
        }
        RouteHop::Endpoint(e) => (
            format!(
                "EC2 Instance Connect Endpoint {}",
                config_word("the endpoint's id", &e.id)?
            ),
            String::new(),
        ),
    };
    let (header, proxy_block, hop_line) = match hop {
        Hop::Jump => (
            format!(
                "# The proxy's address changes when it restarts: run `bastion ssh-config --cluster {} --install` again.\n",
                route.cluster
            ),
            proxy_block,
            format!("ProxyJump {proxy_host}"),
        ),
        Hop::Stdio { command } => (
            match route.hop {
                RouteHop::Proxy(_) => "# This machine has no proxy key: bastion logs in to the proxy with a one-time key (EC2 Instance Connect).\n",
                RouteHop::Endpoint(_) => "# bastion opens a tunnel through the endpoint for each connection (ec2-instance-connect:OpenTunnel); AWS ends each within the hour.\n",
            }
            .to_string(),
            String::new(),
            format!("ProxyCommand {command}"),
        ),
    };
    let mut out = format!(
        "# bastion: cluster {cluster} ({way}, head node {head}); generated by `bastion ssh-config`.\n\
         {header}\
         {proxy_block}\
         Host {head_host} {head_ip}\n\
         \x20   HostName {head_ip}\n\
         \x20   User {huser}\n\
         \x20   {hop_line}\n\
         \x20   HostKeyAlias {head_alias}\n\
         \x20   UserKnownHostsFile {known}\n\
         \x20   StrictHostKeyChecking {head_checking}\n\
         \x20   ForwardAgent no\n\
         \x20   ForwardX11 no\n\
         \x20   ServerAliveInterval 30\n",
        cluster = route.cluster,
        head = head_id,
        head_ip = route.head_ip,
        huser = route.head_target.user,
    );
    if let Some(id) = identity {
        out.push_str(&format!("    IdentityFile {}\n", quote(id)));
    }
    Ok(out)
}

/// Adds `Include <dir>/*.conf` at the top of ~/.ssh/config (Include only applies globally
/// before the first Host block), once.
fn ensure_include(dir: &Path) -> std::io::Result<PathBuf> {
    let home = dirs::home_dir().ok_or_else(|| std::io::Error::other("no home directory"))?;
    let ssh = home.join(".ssh");
    std::fs::create_dir_all(&ssh)?;
    let main = ssh.join("config");
    let line = format!("Include {}", quote(&dir.join("*.conf")));
    let current = match std::fs::read_to_string(&main) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    if current.lines().any(|l| l.trim() == line) {
        return Ok(main);
    }
    let updated = format!("# added by bastion (bastion ssh-config --install)\n{line}\n\n{current}");
    // A symlinked ~/.ssh/config (a dotfiles repo) stays a link, and its mode stays.
    crate::files::write_file_atomic(&main, updated.as_bytes(), 0o600)?;
    Ok(main)
}

pub async fn run(ctx: &Context, args: SshConfigArgs) -> anyhow::Result<()> {
    let opts = RouteOptions {
        start: false,
        timeout: std::time::Duration::from_secs(600),
        ..super::route_options(&args.route)
    };
    let route = route::resolve(ctx, &args.cluster, &opts).await?;
    // OpenSSH checks both against bastion's known_hosts: the keys that anchor a first use (the
    // consoles', or the proxy's tag while its console shows none) are pinned there first, so
    // OpenSSH has no first use of its own.
    let proxy_trust = match &route.hop {
        RouteHop::Proxy(p) => Some(&p.target.trust),
        RouteHop::Endpoint(_) => None,
    };
    for trust in proxy_trust.into_iter().chain([&route.head_target.trust]) {
        if let Trust::Pin {
            file,
            alias,
            first_use: FirstUse::Anchored(keys),
            ..
        }
        | Trust::Proxy {
            file,
            instance: alias,
            first_use: FirstUse::Anchored(keys),
            ..
        } = trust
        {
            known_hosts::pin_all(file, alias, keys)?;
        }
    }
    let jump = match &route.hop {
        RouteHop::Proxy(p) => p.login == crate::proxy::Login::Operator && p.key_file.exists(),
        RouteHop::Endpoint(_) => false,
    };
    let hop = if jump {
        Hop::Jump
    } else {
        Hop::Stdio {
            command: proxy_command(ctx, &args.cluster, &args.route, route.via())?,
        }
    };
    let config = render(&route, args.route.identity.as_deref(), &hop)?;
    let (installed, include_in) = if args.install {
        let file = installed_file(ctx, &args.cluster);
        crate::files::write_file_atomic(&file, config.as_bytes(), 0o600)?;
        let main = ensure_include(&installed_dir(ctx))?;
        (
            Some(file.display().to_string()),
            Some(main.display().to_string()),
        )
    } else {
        (None, None)
    };
    ctx.progress.finish();
    emit(
        ctx.output,
        &SshConfigResult {
            proxy_host: format!("bastion-{}", args.cluster),
            via: match hop {
                Hop::Jump => "proxy-jump",
                Hop::Stdio { .. } => "stdio",
            },
            head_host: format!("{}-head", args.cluster),
            cluster: args.cluster,
            config,
            installed,
            include_in,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::proxy_word;

    #[test]
    fn proxy_command_words_are_quoted_for_openssh_and_the_shell() {
        assert_eq!(proxy_word("x", "eu-west-1").unwrap(), "eu-west-1");
        assert_eq!(
            proxy_word("x", "/opt/my tools/bastion").unwrap(),
            "'/opt/my tools/bastion'"
        );
        assert_eq!(proxy_word("x", "a'b;$(id)").unwrap(), r"'a'\''b;$(id)'");
        assert_eq!(proxy_word("x", "100%").unwrap(), "'100%%'");
        assert!(proxy_word("x", "a\nProxyCommand evil").is_err());
        assert_eq!(proxy_word("x", "").unwrap(), "''");
    }
}
