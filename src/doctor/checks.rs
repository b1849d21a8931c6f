//! Each check's verdict over the facts `commands::doctor` gathered: the endpoints, the cluster
//! configuration, the subnet's routes and the bastion's own subnet. Pure functions.

use super::*;

/// `igw-...` or `nat-...` when the subnet's route table sends 0.0.0.0/0 to the internet.
pub fn internet_route(subnet: &str, tables: &[RouteTable]) -> Option<String> {
    crate::cluster::route_table_of(subnet, tables)?
        .default_route_targets
        .iter()
        .find(|t| t.starts_with("igw-") || t.starts_with("nat-"))
        .cloned()
}

fn admits_443(
    groups: &[SecurityGroup],
    ids: &[String],
    cluster_groups: &[String],
    subnet_cidr: &str,
) -> bool {
    let subnet: Option<ipnet::Ipv4Net> = subnet_cidr.parse().ok();
    groups
        .iter()
        .filter(|g| ids.contains(&g.id))
        .flat_map(|g| &g.ingress)
        .any(|r| {
            r.covers_tcp_port(443)
                && match &r.source {
                    Source::Group(g) => cluster_groups.contains(g),
                    Source::Cidr(c) => match (c.parse::<ipnet::Ipv4Net>(), subnet) {
                        (Ok(allowed), Some(s)) => allowed.contains(&s),
                        _ => false,
                    },
                    Source::PrefixList(_) => false,
                }
        })
}

/// Whether an S3 endpoint policy lets CloudFormation's wait condition through (FACTS section 3).
fn s3_policy_ok(policy: &str, partition: &str, region: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(policy) else {
        return false;
    };
    let list = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        }
    };
    let statements = match &doc["Statement"] {
        serde_json::Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let wanted = format!("arn:{partition}:s3:::cloudformation-waitcondition-{region}/*");
    statements.iter().any(|s| {
        let anyone = s["Principal"] == "*" || s["Principal"]["AWS"] == "*";
        let actions = list(&s["Action"]);
        let resources = list(&s["Resource"]);
        s["Effect"] == "Allow"
            && anyone
            && actions
                .iter()
                .any(|a| a == "*" || a == "s3:*" || a == "s3:PutObject")
            && resources
                .iter()
                .any(|r| r == "*" || r == &wanted || r == &format!("arn:{partition}:s3:::*"))
    })
}

/// An endpoint AWS still lists but that will never carry traffic again (DescribeVpcEndpoints
/// keeps a deleted one for a while).
fn gone(e: &VpcEndpoint) -> bool {
    ["deleted", "deleting", "failed", "rejected", "expired"]
        .iter()
        .any(|s| e.state.eq_ignore_ascii_case(s))
}

/// The endpoint that serves `service`, when several do: one of the `kind` asked for
/// (`Interface` or `Gateway`) before another, an available one before one on its way (pending,
/// say). None when every one is gone: the service has no endpoint.
pub fn serving<'a>(
    endpoints: &'a [VpcEndpoint],
    service: &str,
    kind: &str,
) -> Option<&'a VpcEndpoint> {
    endpoints
        .iter()
        .filter(|e| e.service == service && !gone(e))
        .min_by_key(|e| {
            (
                !e.kind.eq_ignore_ascii_case(kind),
                !e.state.eq_ignore_ascii_case("available"),
            )
        })
}

/// An endpoint of `service` that AWS is deleting: a new one with private DNS would clash with
/// its names until it is gone.
pub fn being_deleted<'a>(endpoints: &'a [VpcEndpoint], service: &str) -> Option<&'a VpcEndpoint> {
    endpoints
        .iter()
        .find(|e| e.service == service && e.state.eq_ignore_ascii_case("deleting"))
}

fn endpoint_check(f: &Facts, req: &Required, partition: &str) -> Vec<Check> {
    let id = format!("endpoint.{}", req.short);
    let kind = req.kind();
    let fix_create = format!(
        "`bastion doctor --fix`, or create a {kind} endpoint for {} in {}",
        req.service, f.vpc_id
    );
    let Some(e) = serving(&f.endpoints, &req.service, kind) else {
        let gone: Vec<String> = f
            .endpoints
            .iter()
            .filter(|e| e.service == req.service)
            .map(|e| format!("{} is {}", e.id, e.state))
            .collect();
        let detail = if gone.is_empty() {
            format!("no {kind} endpoint for {}", req.service)
        } else {
            format!(
                "no {kind} endpoint for {} that works ({})",
                req.service,
                gone.join(", ")
            )
        };
        return vec![check(id, Status::Problem, detail, fix_create)];
    };
    let mut issues = Vec::new();
    let mut fixes = Vec::new();
    if !e.kind.eq_ignore_ascii_case(kind) {
        issues.push(format!("{} is a {} endpoint, not {kind}", e.id, e.kind));
        fixes.push(format!("replace it with a {kind} endpoint"));
    }
    if !e.state.eq_ignore_ascii_case("available") {
        issues.push(format!("{} is {}, not available", e.id, e.state));
        fixes.push("wait for it, or recreate it".to_string());
    }
    if req.interface {
        let az_of = |id: &String| {
            f.vpc_subnets
                .iter()
                .find(|s| &s.id == id)
                .map(|s| s.availability_zone.clone())
        };
        let reachable = e.subnet_ids.contains(&f.subnet.id)
            || e.subnet_ids
                .iter()
                .any(|id| az_of(id).as_deref() == Some(f.subnet.availability_zone.as_str()));
        if !reachable {
            issues.push(format!(
                "{} has no interface in {} or its availability zone {}",
                e.id, f.subnet.id, f.subnet.availability_zone
            ));
            fixes.push(format!("add {} to the endpoint's subnets", f.subnet.id));
        }
        if !e.private_dns {
            issues.push(format!("{} has private DNS off", e.id));
            fixes.push(format!(
                "aws ec2 modify-vpc-endpoint --vpc-endpoint-id {} --private-dns-enabled",
                e.id
            ));
        }
        if !admits_443(
            &f.endpoint_groups,
            &e.security_group_ids,
            &f.cluster_groups,
            &f.subnet.cidr,
        ) {
            issues.push(if e.security_group_ids.is_empty() {
                "it has no security group admitting tcp 443 from the cluster".to_string()
            } else {
                format!(
                    "its security groups ({}) do not admit tcp 443 from the cluster's groups or subnet",
                    e.security_group_ids.join(", ")
                )
            });
            fixes.push("allow tcp 443 from the VPC CIDR, or add the endpoint's group to AdditionalSecurityGroups".into());
        }
    } else if let Some(rt) = crate::cluster::route_table_of(&f.subnet.id, &f.route_tables)
        && !e.route_table_ids.contains(&rt.id)
    {
        issues.push(format!(
            "{} is not associated with {} (the route table of {})",
            e.id, rt.id, f.subnet.id
        ));
        fixes.push(format!(
            "aws ec2 modify-vpc-endpoint --vpc-endpoint-id {} --add-route-table-ids {}",
            e.id, rt.id
        ));
    }
    let mut out = vec![if issues.is_empty() {
        check(id, Status::Ok, format!("{} ({})", req.service, e.id), "")
    } else {
        check(id, Status::Problem, issues.join("; "), fixes.join("; "))
    }];
    if req.short == "s3"
        && let Some(policy) = &e.policy
        && !s3_policy_ok(policy, partition, &f.region)
    {
        out.push(check(
            "endpoint.s3.policy",
            Status::Problem,
            format!("the S3 endpoint's policy does not let CloudFormation's wait condition through ({})", e.id),
            format!(
                "allow s3:PutObject for principal * on arn:{partition}:s3:::cloudformation-waitcondition-{}/*",
                f.region
            ),
        ));
    }
    out
}

fn config_checks(f: &Facts, c: &ClusterConfig) -> Vec<Check> {
    let mut out = Vec::new();
    for (path, what, line, column) in &c.wrong_types {
        out.push(check(
            "config.types",
            Status::Problem,
            format!("{path} is {what} (line {line}, column {column})"),
            "give it the type the ParallelCluster documentation names; pcluster refuses the file as it is",
        ));
    }
    let slurm = match c.scheduler.as_deref() {
        Some("slurm") => {
            out.push(check(
                "config.scheduler",
                Status::Ok,
                "Scheduling/Scheduler: slurm",
                "",
            ));
            true
        }
        Some("awsbatch") => {
            out.push(check(
                "config.scheduler",
                Status::Problem,
                "Scheduling/Scheduler is awsbatch: awsbatch needs internet access for its ECS \
                 instances; a subnet without internet supports slurm only",
                "use Scheduling/Scheduler: slurm, or a subnet with internet access",
            ));
            false
        }
        other => {
            out.push(check(
                "config.scheduler",
                Status::Problem,
                format!(
                    "Scheduling/Scheduler is {}; only slurm works without internet",
                    other.unwrap_or("not set")
                ),
                "set Scheduling/Scheduler: slurm",
            ));
            true
        }
    };
    let flag = |id: &str, key: &str, v: &Option<Flag>| match v {
        Some(Flag::Set(true)) => check(id, Status::Ok, format!("{key}: true"), ""),
        Some(Flag::Invalid(l)) => check(
            id,
            Status::Problem,
            format!(
                "{key} is {} (line {}, column {}), which pcluster does not accept as a boolean",
                l.value, l.line, l.column
            ),
            format!("set {key}: true"),
        ),
        _ => check(
            id,
            Status::Problem,
            format!(
                "{key} is {} (Route 53 has no VPC endpoint)",
                match v {
                    Some(Flag::Set(false)) => "false",
                    _ => "not set",
                }
            ),
            format!("set {key}: true"),
        ),
    };
    // Under awsbatch, SlurmSettings keys would be refused by pcluster: no advice about them.
    if slurm {
        out.push(flag(
            "config.dns",
            "Scheduling/SlurmSettings/Dns/DisableManagedDns",
            &c.disable_managed_dns,
        ));
        out.push(flag(
            "config.ec2-hostnames",
            "Scheduling/SlurmSettings/Dns/UseEc2Hostnames",
            &c.use_ec2_hostnames,
        ));
    }
    if let (Some(arg), Some(head)) = (&f.subnet_arg, &c.head_subnet)
        && *arg != head.value
    {
        out.push(check(
            "config.head-subnet",
            Status::Problem,
            format!(
                "HeadNode/Networking/SubnetId is {} (line {}), not the checked subnet {arg}",
                head.value, head.line
            ),
            format!(
                "check --subnet {}, or set HeadNode/Networking/SubnetId: {arg}",
                head.value
            ),
        ));
    }
    let mut named: Vec<(String, &Located)> = c
        .head_subnet
        .iter()
        .map(|h| ("HeadNode/Networking/SubnetId".to_string(), h))
        .collect();
    named.extend(
        c.queue_subnets
            .iter()
            .map(|(at, l)| (format!("{at}/Networking/SubnetIds"), l)),
    );
    let mut problems = Vec::new();
    let mut in_vpc: Vec<&str> = Vec::new();
    for (at, l) in &named {
        match f.config_subnets.iter().find(|(id, _)| *id == l.value) {
            Some((_, Some(s))) if s.vpc_id == f.vpc_id => in_vpc.push(&l.value),
            Some((_, Some(s))) => problems.push(format!(
                "{} ({at}, line {}) is in {}, not in {}",
                l.value, l.line, s.vpc_id, f.vpc_id
            )),
            _ => problems.push(format!(
                "{} ({at}, line {}) does not exist in {}",
                l.value, l.line, f.region
            )),
        }
    }
    in_vpc.sort();
    in_vpc.dedup();
    let online: Vec<String> = in_vpc
        .iter()
        .filter_map(|s| internet_route(s, &f.route_tables).map(|via| format!("{s} (via {via})")))
        .collect();
    if !online.is_empty() {
        problems.push(format!(
            "subnets with internet access: {}",
            online.join(", ")
        ));
    }
    out.push(if problems.is_empty() {
        check(
            "config.subnets",
            Status::Ok,
            "HeadNode, queue and login node subnets are in the VPC, without internet route",
            "",
        )
    } else {
        check(
            "config.subnets",
            Status::Problem,
            problems.join("; "),
            format!(
                "use subnets of {} without a route to an internet gateway or NAT",
                f.vpc_id
            ),
        )
    });
    out
}

fn bastion_checks(b: &BastionFacts, route_tables: &[RouteTable]) -> Vec<Check> {
    let mut out = Vec::new();
    let missing: Vec<i32> = [22]
        .into_iter()
        .filter(|&p| {
            !crate::cluster::admits_from(&b.head_groups, p, &b.subnet.cidr, Some(&b.group.id))
        })
        .collect();
    out.push(if missing.is_empty() {
        check("bastion.head-node-ingress", Status::Ok, "the head node admits tcp 22 from the proxy", "")
    } else {
        check(
            "bastion.head-node-ingress",
            Status::Problem,
            format!("the head node's groups do not admit tcp {missing:?} from the proxy {}", b.instance),
            format!("allow those ports from {} on the head node's group (`bastion down` then `bastion up` adds it)", b.group.id),
        )
    });
    out.push(if crate::cluster::is_public(&b.subnet.id, route_tables) {
        check(
            "bastion.subnet-public",
            Status::Ok,
            format!("the proxy's subnet {} is public", b.subnet.id),
            "",
        )
    } else {
        check(
            "bastion.subnet-public",
            Status::Problem,
            format!(
                "the proxy's subnet {} has no route to an internet gateway",
                b.subnet.id
            ),
            "recreate the bastion in a public subnet (`bastion up --subnet`)",
        )
    });
    let open = b
        .group
        .ingress
        .iter()
        .any(|r| matches!(&r.source, Source::Cidr(c) if c == "0.0.0.0/0"));
    out.push(if open {
        check(
            "bastion.open-to-world",
            Status::Warning,
            format!("the proxy's group {} admits SSH from 0.0.0.0/0", b.group.id),
            "recreate it with --allow-cidr YOUR_IP/32",
        )
    } else {
        check(
            "bastion.open-to-world",
            Status::Ok,
            format!("{} is not open to the world", b.group.id),
            "",
        )
    });
    out
}

/// Every check, in the order the report shows them.
pub fn run_checks(f: &Facts) -> Vec<Check> {
    let partition = partition_of(&f.region);
    let mut out = Vec::new();
    let config = match &f.config {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            out.push(check(
                "config.yaml",
                Status::Problem,
                format!("the cluster configuration is not valid YAML: {e}"),
                "fix the YAML at that place",
            ));
            None
        }
        None => None,
    };
    for req in endpoints_for(f) {
        out.extend(endpoint_check(f, &req, partition));
    }
    out.push(match internet_route(&f.subnet.id, &f.route_tables) {
        None => check("subnet.no-internet", Status::Ok, format!("{} has no internet route", f.subnet.id), ""),
        Some(via) => check(
            "subnet.no-internet",
            Status::Warning,
            format!("{} reaches the internet through {via}: this checklist is for subnets without internet", f.subnet.id),
            "nothing to do if that is intended; the endpoints below are then optional",
        ),
    });
    out.push(if f.subnet.map_public_ip_on_launch {
        check(
            "subnet.public-ip",
            Status::Problem,
            format!("{} assigns public IPv4 addresses on launch", f.subnet.id),
            format!(
                "aws ec2 modify-subnet-attribute --subnet-id {} --no-map-public-ip-on-launch",
                f.subnet.id
            ),
        )
    } else {
        check(
            "subnet.public-ip",
            Status::Ok,
            "auto-assign public IPv4 is off",
            "",
        )
    });
    out.push(match f.dns {
        (true, true) => check("vpc.dns", Status::Ok, format!("{}: DNS support and DNS hostnames on", f.vpc_id), ""),
        (support, hostnames) => check(
            "vpc.dns",
            Status::Problem,
            format!("{}: DNS support {}, DNS hostnames {}", f.vpc_id, on_off(support), on_off(hostnames)),
            format!(
                "aws ec2 modify-vpc-attribute --vpc-id {} --enable-dns-support; then --enable-dns-hostnames",
                f.vpc_id
            ),
        ),
    });
    if let Some(c) = config {
        out.extend(config_checks(f, c));
    }
    if let Some(b) = &f.bastion {
        out.extend(bastion_checks(b, &f.route_tables));
    }
    for e in &f.instance_connect {
        out.extend(eice_checks(e));
    }
    out
}

/// The endpoint's state; with the head node known, its group's egress to the head node on 22
/// and the head node's ingress from it.
fn eice_checks(e: &EiceFacts) -> Vec<Check> {
    use crate::eice::State;
    let id = &e.endpoint.id;
    let mut out = vec![match e.endpoint.state {
        s if s.usable() => check(
            "eice.state",
            Status::Ok,
            format!("the EC2 Instance Connect Endpoint {id} is {}", s.as_str()),
            "",
        ),
        State::CreateInProgress => check(
            "eice.state",
            Status::Warning,
            format!("the EC2 Instance Connect Endpoint {id} is still being created"),
            "wait a few minutes (`bastion status` shows its state)",
        ),
        s => check(
            "eice.state",
            Status::Problem,
            format!(
                "the EC2 Instance Connect Endpoint {id} is {}{}",
                s.as_str(),
                e.endpoint
                    .state_message
                    .as_deref()
                    .map(|m| format!(" ({})", crate::ui::printable(m)))
                    .unwrap_or_default()
            ),
            format!(
                "delete it (`aws ec2 delete-instance-connect-endpoint --instance-connect-endpoint-id {id}`) and create it again"
            ),
        ),
    }];
    let Some((head_ip, head_groups)) = &e.head else {
        return out;
    };
    let head_group_ids: Vec<&str> = head_groups.iter().map(|g| g.id.as_str()).collect();
    let egress = e.groups.iter().flat_map(|g| &g.egress).any(|r| {
        r.covers_tcp_port(22)
            && match &r.source {
                Source::Group(g) => head_group_ids.contains(&g.as_str()),
                Source::Cidr(c) => c
                    .parse::<ipnet::Ipv4Net>()
                    .is_ok_and(|n| n.contains(head_ip)),
                Source::PrefixList(_) => false,
            }
    });
    let first_group = e
        .endpoint
        .security_group_ids
        .first()
        .map(String::as_str)
        .unwrap_or("its group");
    let head_group = head_group_ids
        .first()
        .copied()
        .unwrap_or("the head node's group");
    out.push(if egress {
        check("eice.egress", Status::Ok, format!("{id}'s group lets out tcp 22 to the head node"), "")
    } else {
        check(
            "eice.egress",
            Status::Problem,
            format!("{id}'s security groups do not let out tcp 22 to the head node {head_ip}"),
            format!("aws ec2 authorize-security-group-egress --group-id {first_group} --protocol tcp --port 22 --source-group {head_group}"),
        )
    });
    let cidr = e.subnet_cidr.as_deref().unwrap_or("");
    let ingress = e
        .endpoint
        .security_group_ids
        .iter()
        .any(|g| crate::cluster::admits_from(head_groups, 22, cidr, Some(g)))
        || crate::cluster::admits_from(head_groups, 22, cidr, None);
    out.push(if ingress {
        check("eice.head-node-ingress", Status::Ok, format!("the head node admits tcp 22 from {id}"), "")
    } else {
        check(
            "eice.head-node-ingress",
            Status::Problem,
            format!("the head node's groups do not admit tcp 22 from {id}"),
            format!("aws ec2 authorize-security-group-ingress --group-id {head_group} --protocol tcp --port 22 --source-group {first_group}"),
        )
    });
    out
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn s3_policies_must_let_the_wait_condition_through() {
        let full =
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}"#;
        assert!(s3_policy_ok(full, "aws", "us-east-1"));
        let narrow = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::my-bucket/*"}]}"#;
        assert!(!s3_policy_ok(narrow, "aws", "us-east-1"));
        let with_wait = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::my-bucket/*"},
            {"Effect":"Allow","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::cloudformation-waitcondition-us-east-1/*"}]}"#;
        assert!(s3_policy_ok(with_wait, "aws", "us-east-1"));
    }
}
