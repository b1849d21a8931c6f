//! `bastion allow`: admit an address to the proxy's SSH port (this machine's public address by
//! default), revoke one, or list them. Changes tcp 22 rules of the proxy's own group only; each
//! rule is described with the caller's IAM identity and the date.

use std::fmt;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::access::{self, Admitted};
use crate::cli::AllowArgs;
use crate::context::Context;
use crate::footprint::Expected;
use crate::proxy::{self};
use crate::route::RouteError;
use crate::ui::emit;

#[derive(Debug, Serialize)]
pub struct AllowResult {
    pub cluster: String,
    pub instance_id: String,
    pub security_group: String,
    /// `admitted`, `already-admitted`, `revoked` or `not-admitted`.
    pub action: &'static str,
    pub cidr: String,
    pub description: Option<String>,
}

impl fmt::Display for AllowResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = format!(
            "the SSH port of the proxy {} ({})",
            self.instance_id, self.security_group
        );
        match self.action {
            "admitted" => write!(
                f,
                "admitted {} to {on}: {}",
                self.cidr,
                self.description.as_deref().unwrap_or_default()
            ),
            "already-admitted" => write!(f, "{} was already admitted to {on}", self.cidr),
            "revoked" => write!(f, "revoked {} from {on}", self.cidr),
            _ => write!(
                f,
                "{} was not admitted to {on}; nothing to revoke",
                self.cidr
            ),
        }
    }
}

/// `--list`'s text form: one address a line, with who added it and when.
struct Listing(Vec<Admitted>);

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "no address is admitted to the proxy's SSH port");
        }
        let lines: Vec<String> = self
            .0
            .iter()
            .map(|a| format!("{:<18}  {}", a.cidr, a.description))
            .collect();
        write!(f, "{}", lines.join("\n"))
    }
}

impl Serialize for Listing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

async fn mine() -> anyhow::Result<Ipv4Net> {
    let ip = access::my_address()
        .await
        .map_err(|e| anyhow::anyhow!("{e}; name the address with --cidr (or --revoke CIDR)"))?;
    Ok(Ipv4Net::from(ip))
}

pub async fn run(ctx: &Context, args: AllowArgs) -> anyhow::Result<()> {
    let cloud = ctx.cloud.as_ref();
    ctx.progress
        .phase(format!("finding the bastion of cluster {}", args.cluster));
    let expected = Expected::of(ctx, &args.cluster).await?;
    let search = proxy::find(cloud, &expected).await?;
    search.warn_lookalikes();
    let Some(instance) = search.proxy else {
        return Err(RouteError::NoBastion {
            cluster: args.cluster.clone(),
            region: cloud.region().into(),
            lookalikes: search.lookalikes,
        }
        .into());
    };
    let group = proxy::group(cloud, &expected, &instance).await?;
    if args.list {
        let listing = Listing(access::list(cloud, &group).await?);
        ctx.progress.finish();
        return emit(ctx.output, &listing);
    }
    let result = |action, cidr: Ipv4Net, description| AllowResult {
        cluster: args.cluster.clone(),
        instance_id: instance.id.clone(),
        security_group: group.id.clone(),
        action,
        cidr: cidr.to_string(),
        description,
    };
    let outcome = if let Some(revoke) = args.revoke {
        let cidr = match revoke {
            Some(c) => c,
            None => mine().await?,
        };
        ctx.progress.phase(format!("revoking {cidr}"));
        let removed = access::revoke(cloud, &group, cidr).await?;
        result(
            if removed > 0 {
                "revoked"
            } else {
                "not-admitted"
            },
            cidr,
            None,
        )
    } else {
        let cidr = match args.cidr {
            Some(c) => c,
            None => mine().await?,
        };
        if cidr.prefix_len() == 0 {
            let msg = "0.0.0.0/0 opens the proxy's SSH port to the whole internet; only key \
                       authentication protects it";
            tracing::warn!("{msg}");
            ctx.progress.note(format!("warning: {msg}"));
        }
        let who = ctx.identity().await?.arn.clone();
        let description = access::description(&who, &access::today());
        ctx.progress.phase(format!("admitting {cidr}"));
        let added = access::admit(
            cloud,
            &group.id,
            cidr,
            access::Admitter::Allow {
                description: &description,
            },
        )
        .await?;
        if added {
            result("admitted", cidr, Some(description))
        } else {
            result("already-admitted", cidr, None)
        }
    };
    ctx.progress.finish();
    emit(ctx.output, &outcome)
}
