//! Finding a cluster's head node the way `pcluster ssh` does, and the network around it: its VPC,
//! which subnets of that VPC are public, and whether its security groups already admit the proxy.
//! Reads only; nothing here writes to AWS.

use crate::aws::{
    Account, AwsError, Instance, Instances, Network, RouteTable, SecurityGroup, Source, Subnet,
};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "no cluster named '{cluster}' in {region}: no instance is tagged \
         parallelcluster:cluster-name={cluster} with parallelcluster:node-type=HeadNode. \
         Check the name (`pcluster list-clusters --region {region}`) and the region (--region)"
    )]
    UnknownCluster { cluster: String, region: String },

    #[error(
        "the head node of cluster '{cluster}' ({instance}) is {state}, not running. \
         Start it (`aws ec2 start-instances --instance-ids {instance}`) and retry"
    )]
    HeadNodeNotRunning {
        cluster: String,
        instance: String,
        state: String,
    },

    #[error(
        "no head node of cluster '{cluster}' can be trusted: {} carry ParallelCluster's head node tags, \
         but not the reserved aws:cloudformation:stack-name tag naming the cluster's stack ({stack}), \
         which only CloudFormation can write. Someone with ec2:CreateTags may have tagged them; \
         bastion does not connect to them",
        instances.join(", ")
    )]
    HeadNodeUnproven {
        cluster: String,
        stack: String,
        instances: Vec<String>,
    },

    #[error(
        "cluster '{cluster}' has more than one head node candidate ({}), each tagged as a head node \
         by a stack of that cluster's name ({stack}, or parallelcluster-{cluster}); bastion will not \
         pick one. Terminate the stale one, or check CloudTrail for who launched the other",
        instances.join(", ")
    )]
    AmbiguousHeadNode {
        cluster: String,
        stack: String,
        instances: Vec<String>,
    },

    #[error("the head node {instance} of cluster '{cluster}' has no subnet/VPC in its description")]
    HeadNodeWithoutNetwork { cluster: String, instance: String },

    #[error(
        "no public subnet in {vpc} (a subnet whose route table, or the VPC's main route table, \
         sends 0.0.0.0/0 to an internet gateway). Add one, or pass --subnet with a public subnet of {vpc}"
    )]
    NoPublicSubnet { vpc: String },

    #[error("--subnet {subnet}: no such subnet in {region}")]
    SubnetNotFound { subnet: String, region: String },

    #[error(
        "--subnet {subnet} is in {subnet_vpc}, but the head node of '{cluster}' is in {vpc}; \
         pass a public subnet of {vpc}"
    )]
    SubnetInOtherVpc {
        subnet: String,
        subnet_vpc: String,
        cluster: String,
        vpc: String,
    },

    #[error(
        "--subnet {subnet} is not public: its route table ({route_table}) has no 0.0.0.0/0 route \
         to an internet gateway, so the proxy could not be reached. Pass a public subnet of {vpc}"
    )]
    SubnetNotPublic {
        subnet: String,
        route_table: String,
        vpc: String,
    },

    #[error(transparent)]
    Aws(#[from] AwsError),
}
impl crate::exit::ExitStatus for ClusterError {
    fn exit_status(&self) -> Option<u8> {
        match self {
            // Transparent: the AWS error is not a cause of its own in the chain.
            ClusterError::Aws(a) => a.exit_status(),
            _ => Some(crate::exit::INVALID),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HeadNode {
    pub cluster: String,
    pub instance: Instance,
    pub vpc_id: String,
    pub subnet_id: String,
    pub availability_zone: Option<String>,
    /// First field of `parallelcluster:attributes`, e.g. `alinux2023`.
    pub os: Option<String>,
    /// `parallelcluster:version`, e.g. `3.16.1`.
    pub pcluster_version: Option<String>,
    /// `x86_64` or `arm64`.
    pub architecture: String,
}

impl HeadNode {
    /// Its private IPv4 address, as EC2 describes it; None when it has none of that form (AWS's
    /// text is held to the form before anything uses it).
    pub fn ipv4(&self) -> Option<std::net::Ipv4Addr> {
        self.instance.private_ip.as_deref()?.parse().ok()
    }

    /// The login user for the head node's OS, as pcluster chooses it (FACTS section 1).
    pub fn default_user(&self) -> &'static str {
        default_user_for_os(self.os.as_deref().unwrap_or(""))
    }
}

pub fn default_user_for_os(os: &str) -> &'static str {
    match os {
        "alinux2" | "alinux2023" | "rhel8" | "rhel9" => "ec2-user",
        "ubuntu2004" | "ubuntu2204" | "ubuntu2404" => "ubuntu",
        "rocky8" | "rocky9" => "rocky",
        "centos7" => "centos",
        other => {
            tracing::warn!(
                os = other,
                "unknown head node OS; assuming user ec2-user (use --user)"
            );
            "ec2-user"
        }
    }
}

const HEAD_NODE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];

/// The reserved tag CloudFormation puts on every resource of a stack; `aws:` tags cannot be
/// written through `ec2:CreateTags`, so unlike ParallelCluster's own tags it cannot be forged.
pub const TAG_STACK: &str = "aws:cloudformation:stack-name";

/// Finds the cluster's head node: a `DescribeInstances` by ParallelCluster's tags of each
/// generation, then only the instances its CloudFormation stack made (ParallelCluster 3 names the stack after the
/// cluster, ParallelCluster 2 `parallelcluster-NAME`). Several such instances are refused, never
/// picked from.
pub async fn find_head_node(
    cloud: &(impl Account + Instances + ?Sized),
    cluster: &str,
) -> Result<HeadNode, ClusterError> {
    // Both ParallelCluster generations, always: a cluster of one must not be shadowed by a
    // look-alike of the other (a stack named after a ParallelCluster 2 cluster is free to make).
    let v3 = cloud
        .instances_by_tags(
            &[
                ("parallelcluster:cluster-name", cluster),
                ("parallelcluster:node-type", "HeadNode"),
            ],
            HEAD_NODE_STATES,
        )
        .await?;
    let v2 = cloud
        .instances_by_tags(
            &[
                ("parallelcluster:cluster-name", cluster),
                ("aws-parallelcluster-node-type", "Master"),
            ],
            HEAD_NODE_STATES,
        )
        .await?;
    if v3.is_empty() && v2.is_empty() {
        return Err(ClusterError::UnknownCluster {
            cluster: cluster.into(),
            region: cloud.region().into(),
        });
    }
    let v2_stack = format!("parallelcluster-{cluster}");
    let stack = if v3.is_empty() {
        v2_stack.clone()
    } else {
        cluster.to_string()
    };
    let mut proven: Vec<Instance> = Vec::new();
    let mut unproven: Vec<Instance> = Vec::new();
    for (found, want) in [(v3, cluster.to_string()), (v2, v2_stack)] {
        for i in found {
            if proven.iter().any(|p| p.id == i.id) {
                continue;
            }
            if i.tag(TAG_STACK) == Some(want.as_str()) {
                proven.push(i);
            } else {
                unproven.push(i);
            }
        }
    }
    if proven.len() > 1 {
        return Err(ClusterError::AmbiguousHeadNode {
            cluster: cluster.into(),
            stack,
            instances: proven.into_iter().map(|i| i.id).collect(),
        });
    }
    let Some(instance) = proven.pop() else {
        return Err(ClusterError::HeadNodeUnproven {
            cluster: cluster.into(),
            stack,
            instances: unproven.into_iter().map(|i| i.id).collect(),
        });
    };
    for i in &unproven {
        tracing::warn!(
            "ignoring {}: it carries the head node tags of cluster '{cluster}' but not {TAG_STACK}={stack}",
            i.id
        );
    }
    if instance.state != "running" && instance.state != "pending" {
        return Err(ClusterError::HeadNodeNotRunning {
            cluster: cluster.into(),
            instance: instance.id.clone(),
            state: instance.state.clone(),
        });
    }
    let (Some(vpc_id), Some(subnet_id)) = (instance.vpc_id.clone(), instance.subnet_id.clone())
    else {
        return Err(ClusterError::HeadNodeWithoutNetwork {
            cluster: cluster.into(),
            instance: instance.id.clone(),
        });
    };
    let attributes: Vec<String> = instance
        .tag("parallelcluster:attributes")
        .map(|a| a.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let architecture = instance
        .architecture
        .clone()
        .or_else(|| attributes.get(3).cloned())
        .unwrap_or_else(|| "x86_64".into());
    Ok(HeadNode {
        cluster: cluster.into(),
        vpc_id,
        subnet_id,
        availability_zone: instance.availability_zone.clone(),
        os: attributes.first().cloned().filter(|s| !s.is_empty()),
        pcluster_version: instance
            .tag("parallelcluster:version")
            .map(str::to_string)
            .or_else(|| attributes.get(2).cloned()),
        architecture,
        instance,
    })
}

/// The route table that governs `subnet`: its explicit association, else the VPC's main table.
pub fn route_table_of<'a>(subnet: &str, tables: &'a [RouteTable]) -> Option<&'a RouteTable> {
    tables
        .iter()
        .find(|t| t.subnet_ids.iter().any(|s| s == subnet))
        .or_else(|| tables.iter().find(|t| t.is_main))
}

pub fn is_public(subnet: &str, tables: &[RouteTable]) -> bool {
    route_table_of(subnet, tables)
        .map(|t| {
            t.default_route_targets
                .iter()
                .any(|g| g.starts_with("igw-"))
        })
        .unwrap_or(false)
}

/// Picks the proxy's subnet: `--subnet` if given (validated), else a public subnet of the head
/// node's VPC, preferring the head node's availability zone, then a stable order by id.
pub async fn choose_public_subnet(
    cloud: &(impl Account + Network + ?Sized),
    head: &HeadNode,
    requested: Option<&str>,
) -> Result<Subnet, ClusterError> {
    let tables = cloud.route_tables(&head.vpc_id).await?;
    if let Some(id) = requested {
        let subnet = cloud
            .subnet(id)
            .await?
            .ok_or_else(|| ClusterError::SubnetNotFound {
                subnet: id.into(),
                region: cloud.region().into(),
            })?;
        if subnet.vpc_id != head.vpc_id {
            return Err(ClusterError::SubnetInOtherVpc {
                subnet: id.into(),
                subnet_vpc: subnet.vpc_id,
                cluster: head.cluster.clone(),
                vpc: head.vpc_id.clone(),
            });
        }
        if !is_public(id, &tables) {
            return Err(ClusterError::SubnetNotPublic {
                subnet: id.into(),
                route_table: route_table_of(id, &tables)
                    .map(|t| t.id.clone())
                    .unwrap_or_else(|| "none".into()),
                vpc: head.vpc_id.clone(),
            });
        }
        return Ok(subnet);
    }
    let mut public: Vec<Subnet> = cloud
        .subnets(&head.vpc_id)
        .await?
        .into_iter()
        .filter(|s| is_public(&s.id, &tables))
        .collect();
    public.sort_by(|a, b| {
        let same_az = |s: &Subnet| Some(&s.availability_zone) != head.availability_zone.as_ref();
        same_az(a).cmp(&same_az(b)).then_with(|| a.id.cmp(&b.id))
    });
    public
        .into_iter()
        .next()
        .ok_or_else(|| ClusterError::NoPublicSubnet {
            vpc: head.vpc_id.clone(),
        })
}

/// Whether any of `groups` admits tcp `port` from an address in `proxy_cidr` (the proxy subnet).
/// The head node's group that bastion adds its rule to: ParallelCluster's own
/// (`HeadNodeSecurityGroup`) when it can be told apart, else the first.
pub fn main_group(groups: &[SecurityGroup]) -> Option<&SecurityGroup> {
    groups
        .iter()
        .find(|g| {
            crate::aws::tag_value(&g.tags, "aws:cloudformation:logical-id")
                == Some("HeadNodeSecurityGroup")
        })
        .or(groups.first())
}

pub fn admits_from(
    groups: &[SecurityGroup],
    port: i32,
    proxy_cidr: &str,
    proxy_group: Option<&str>,
) -> bool {
    let proxy_net: Option<ipnet::Ipv4Net> = proxy_cidr.parse().ok();
    groups.iter().flat_map(|g| &g.ingress).any(|rule| {
        rule.covers_tcp_port(port)
            && match &rule.source {
                Source::Cidr(c) => match (c.parse::<ipnet::Ipv4Net>(), proxy_net) {
                    (Ok(allowed), Some(proxy)) => allowed.contains(&proxy),
                    _ => false,
                },
                Source::Group(g) => Some(g.as_str()) == proxy_group,
                // A prefix list's entries are not resolved here: treat as not covering.
                Source::PrefixList(_) => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::IngressRule;

    fn table(id: &str, main: bool, subnets: &[&str], targets: &[&str]) -> RouteTable {
        RouteTable {
            id: id.into(),
            is_main: main,
            subnet_ids: subnets.iter().map(|s| s.to_string()).collect(),
            default_route_targets: targets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn explicit_association_wins_over_the_main_table() {
        let tables = [
            table("rtb-main", true, &[], &["igw-1"]),
            table("rtb-private", false, &["subnet-priv"], &[]),
            table("rtb-nat", false, &["subnet-nat"], &["nat-1"]),
        ];
        assert!(!is_public("subnet-priv", &tables));
        assert!(
            !is_public("subnet-nat", &tables),
            "a NAT route is not an internet gateway"
        );
        assert!(
            is_public("subnet-unassociated", &tables),
            "falls back to the main table"
        );
        assert!(!is_public("x", &[table("rtb-main", true, &[], &[])]));
    }

    #[test]
    fn head_node_groups_admit_the_proxy_only_when_a_rule_covers_it() {
        let rule = |port, cidr: &str| IngressRule {
            protocol: "tcp".into(),
            from_port: Some(port),
            to_port: Some(port),
            source: Source::Cidr(cidr.into()),
        };
        let sg = |rules| SecurityGroup {
            id: "sg-h".into(),
            name: "h".into(),
            description: None,
            vpc_id: None,
            ingress: rules,
            egress: vec![],
            tags: vec![],
        };
        let proxy = "10.0.0.0/24";
        assert!(admits_from(
            &[sg(vec![rule(22, "0.0.0.0/0")])],
            22,
            proxy,
            None
        ));
        assert!(admits_from(
            &[sg(vec![rule(22, "10.0.0.0/16")])],
            22,
            proxy,
            None
        ));
        assert!(!admits_from(
            &[sg(vec![rule(22, "10.0.0.0/26")])],
            22,
            proxy,
            None
        ));
        assert!(!admits_from(
            &[sg(vec![rule(22, "203.0.113.5/32")])],
            22,
            proxy,
            None
        ));
        assert!(!admits_from(
            &[sg(vec![rule(8443, "0.0.0.0/0")])],
            22,
            proxy,
            None
        ));
        let all = IngressRule {
            protocol: "-1".into(),
            from_port: None,
            to_port: None,
            source: Source::Group("sg-proxy".into()),
        };
        assert!(admits_from(&[sg(vec![all])], 22, proxy, Some("sg-proxy")));
    }
}
