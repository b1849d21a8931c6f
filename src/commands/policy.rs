//! `bastion policy user|operator`: the IAM policy a teammate or an operator needs, rendered for
//! the caller's partition and account, for an administrator to attach. `user --cluster NAME`
//! grants for that cluster's resources alone, by id where they exist.

use crate::cli::{PolicyArgs, PolicyRole};
use crate::cluster::find_head_node;
use crate::context::Context;
use crate::footprint::Expected;
use crate::policy::{self, Target, UserScope};
use crate::proxy::{self};

#[derive(Debug, thiserror::Error)]
pub enum PolicyUsage {
    #[error("--cluster applies to `bastion policy user` and `proxy-role`")]
    NoCluster,
    #[error(
        "`bastion policy proxy-role` needs --cluster NAME: the role and profile are per cluster"
    )]
    ClusterNeeded,
    #[error("--pre-provisioned applies to `bastion policy operator`")]
    NotOperator,
    #[error(
        "--via eice applies to `bastion policy user --cluster NAME`: the policy names one endpoint and one head node"
    )]
    EndpointNeedsCluster,
}
impl crate::exit::ExitStatus for PolicyUsage {
    fn exit_status(&self) -> Option<u8> {
        Some(crate::exit::INVALID)
    }
}

pub async fn run(ctx: &Context, args: PolicyArgs) -> anyhow::Result<()> {
    let identity = ctx.identity().await?.clone();
    let target = Target {
        partition: &identity.partition,
        account: &identity.account,
        region: ctx.cloud.region(),
    };
    if args.pre_provisioned && args.role != PolicyRole::Operator {
        return Err(PolicyUsage::NotOperator.into());
    }
    if args.via == "eice" {
        let (PolicyRole::User, Some(cluster)) = (args.role, args.cluster.as_deref()) else {
            return Err(PolicyUsage::EndpointNeedsCluster.into());
        };
        let document = endpoint_user(ctx, &target, cluster).await?;
        ctx.progress.finish();
        crate::ui::print_text(document);
        return Ok(());
    }
    let document = match (args.role, args.cluster.as_deref()) {
        (PolicyRole::Operator, None) => policy::operator_policy(&target, args.pre_provisioned)?,
        (PolicyRole::Boundary, None) => {
            ctx.progress.note(format!(
                "create it once per account as the managed policy {} (path /bastion/, name {}): \
                 every role `bastion up` creates carries it as its permissions boundary",
                target.boundary_arn(),
                policy::BOUNDARY_NAME
            ));
            policy::boundary_policy(&target)?
        }
        (PolicyRole::ProxyRole, Some(cluster)) => {
            let names = crate::footprint::Names::new(cluster, target.region);
            ctx.progress.note(format!(
                "deploy it with CloudFormation (capability CAPABILITY_NAMED_IAM), then `bastion up \
                 --cluster {cluster} --instance-profile {}`",
                names.instance_profile
            ));
            policy::proxy_role_template(&target, &names, cluster, true)?
        }
        (PolicyRole::ProxyRole, None) => return Err(PolicyUsage::ClusterNeeded.into()),
        (PolicyRole::Operator | PolicyRole::Boundary, Some(_)) => {
            return Err(PolicyUsage::NoCluster.into());
        }
        (PolicyRole::User, None) => {
            ctx.progress.note(
                "this document covers every cluster bastion serves in the account (any instance \
                 and group tagged bastion:cluster); `bastion policy user --cluster NAME` grants \
                 one cluster's alone",
            );
            policy::user_policy(&target, &UserScope::default())?
        }
        (PolicyRole::User, Some(cluster)) => {
            let cloud = ctx.cloud.as_ref();
            ctx.progress
                .phase(format!("finding the bastion of cluster {cluster}"));
            let expected = Expected::of(ctx, cluster).await?;
            let search = proxy::find(cloud, &expected).await?;
            search.warn_lookalikes();
            // Two that qualify: neither is named (connect refuses them too).
            let proxy = search.proxy.filter(|_| search.more.is_empty());
            let group = match &proxy {
                Some(p) => Some(proxy::group(cloud, &expected, p).await?.id),
                None => None,
            };
            ctx.progress
                .phase(format!("finding the head node of cluster {cluster}"));
            let head = find_head_node(cloud, cluster).await?;
            match (&proxy, &group) {
                (Some(p), Some(g)) => ctx.progress.note(format!(
                    "for cluster {cluster}: its proxy {} and group {g} by id, its head node {}; \
                     render it again after a new `bastion up` (a new proxy has new ids)",
                    p.id, head.instance.id
                )),
                _ => ctx.progress.note(format!(
                    "cluster {cluster} has no proxy yet: the document names it by its \
                     bastion:cluster tag value; render it again after `bastion up` to name the \
                     proxy and its group by id"
                )),
            }
            let scope = UserScope {
                cluster: Some(cluster),
                proxy_instance: proxy.as_ref().map(|p| p.id.as_str()),
                proxy_group: group.as_deref(),
                head_node: Some(&head.instance.id),
            };
            policy::user_policy(&target, &scope)?
        }
    };
    ctx.progress.finish();
    // The document is the result, in either output format: it is JSON already.
    crate::ui::print_text(document);
    Ok(())
}

/// `policy user --cluster NAME --via eice`: the cluster's endpoint and head node, by id.
async fn endpoint_user(
    ctx: &Context,
    target: &Target<'_>,
    cluster: &str,
) -> anyhow::Result<String> {
    let cloud = ctx.cloud.as_ref();
    ctx.progress
        .phase(format!("finding the head node of cluster {cluster}"));
    let head = find_head_node(cloud, cluster).await?;
    let head_ip = head
        .ipv4()
        .ok_or_else(|| crate::route::RouteError::NoHeadIp {
            cluster: cluster.into(),
            instance: head.instance.id.clone(),
        })?;
    ctx.progress.phase(format!(
        "finding the EC2 Instance Connect Endpoint of {}",
        head.vpc_id
    ));
    let endpoints = crate::eice::list(cloud, Some(&head.vpc_id)).await?;
    let endpoint = crate::eice::choose(&endpoints, cluster, &head.vpc_id, Some(&head.subnet_id))?;
    ctx.progress.note(format!(
        "for cluster {cluster}: tunnels through {} to its head node {} ({head_ip}) port 22 \
         alone, an hour at most each; render it again if the endpoint or the head node is \
         replaced (they are named by id)",
        endpoint.id, head.instance.id
    ));
    Ok(policy::endpoint_user_policy(
        target,
        &policy::EndpointScope {
            cluster,
            endpoint_id: &endpoint.id,
            head_node: &head.instance.id,
            head_ip,
        },
    )?)
}
