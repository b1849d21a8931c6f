//! `bastion policy user|operator`: the IAM policy a teammate or an operator needs, rendered for
//! the caller's partition and account, for an administrator to attach.

use crate::cli::{PolicyArgs, PolicyRole};
use crate::context::Context;
use crate::policy::{self, Target};

pub async fn run(ctx: &Context, args: PolicyArgs) -> anyhow::Result<()> {
    let identity = ctx.identity().await?;
    let target = Target {
        partition: &identity.partition,
        account: &identity.account,
        region: ctx.cloud.region(),
    };
    let document = match args.role {
        PolicyRole::User => policy::user_policy(&target)?,
        PolicyRole::Operator => policy::operator_policy(&target)?,
    };
    ctx.progress.finish();
    // The document is the result, in either output format: it is JSON already.
    println!("{document}");
    Ok(())
}
