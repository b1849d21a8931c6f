//! The no-internet subnet checklist (FACTS section 3) as pure functions: which VPC endpoints a
//! region needs, how a cluster configuration is read, and each check's verdict over facts that
//! `commands::doctor` gathered. Nothing here calls AWS.

use serde::Serialize;
use yaml_rust2::{Yaml, YamlLoader};

use crate::aws::{RouteTable, SecurityGroup, Source, Subnet, VpcEndpoint};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Problem,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: String,
    pub status: Status,
    pub detail: String,
    /// One line saying what to do; empty when ok.
    pub fix: String,
}

fn check(
    id: impl Into<String>,
    status: Status,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        id: id.into(),
        status,
        detail: detail.into(),
        fix: fix.into(),
    }
}

pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// A required endpoint: short name, full service name, Interface (true) or Gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required {
    pub short: &'static str,
    pub service: String,
    pub interface: bool,
}

/// The endpoints the AWS page lists, named for the region's partition.
pub fn required_endpoints(region: &str, directory_service: bool) -> Vec<Required> {
    let china = partition_of(region) == "aws-cn";
    let name = |short: &str| {
        if china && (short == "cloudformation" || short == "ec2") {
            format!("cn.com.amazonaws.{region}.{short}")
        } else {
            format!("com.amazonaws.{region}.{short}")
        }
    };
    let mut list = vec![
        ("logs", true),
        ("cloudformation", true),
        ("ec2", true),
        ("s3", false),
        ("dynamodb", false),
    ];
    if directory_service {
        list.push(("secretsmanager", true));
    }
    list.into_iter()
        .map(|(short, interface)| Required {
            short,
            service: name(short),
            interface,
        })
        .collect()
}

/// What doctor reads from a cluster configuration.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    pub scheduler: Option<String>,
    pub disable_managed_dns: Option<bool>,
    pub use_ec2_hostnames: Option<bool>,
    pub directory_service: bool,
    pub head_subnet: Option<String>,
    pub queue_subnets: Vec<String>,
    pub additional_groups: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ConfigError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn parse_config(text: &str) -> Result<ClusterConfig, ConfigError> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| ConfigError {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_string(),
    })?;
    let doc = docs.first().cloned().unwrap_or(Yaml::Null);
    let slurm = &doc["Scheduling"]["SlurmSettings"];
    let mut c = ClusterConfig {
        scheduler: doc["Scheduling"]["Scheduler"].as_str().map(str::to_string),
        disable_managed_dns: slurm["Dns"]["DisableManagedDns"].as_bool(),
        use_ec2_hostnames: slurm["Dns"]["UseEc2Hostnames"].as_bool(),
        directory_service: !doc["DirectoryService"].is_badvalue()
            && !doc["DirectoryService"].is_null(),
        head_subnet: doc["HeadNode"]["Networking"]["SubnetId"]
            .as_str()
            .map(str::to_string),
        additional_groups: strings(&doc["HeadNode"]["Networking"]["AdditionalSecurityGroups"]),
        ..Default::default()
    };
    for q in doc["Scheduling"]["SlurmQueues"]
        .as_vec()
        .into_iter()
        .flatten()
    {
        c.queue_subnets
            .extend(strings(&q["Networking"]["SubnetIds"]));
        c.additional_groups
            .extend(strings(&q["Networking"]["AdditionalSecurityGroups"]));
    }
    c.additional_groups.sort();
    c.additional_groups.dedup();
    Ok(c)
}

/// Everything the checks look at.
#[derive(Debug, Clone)]
pub struct Facts {
    pub region: String,
    pub vpc_id: String,
    pub vpc_cidrs: Vec<String>,
    pub subnet: Subnet,
    /// Every subnet of the VPC (an interface endpoint may sit in another subnet of the same AZ).
    pub vpc_subnets: Vec<Subnet>,
    pub route_tables: Vec<RouteTable>,
    pub endpoints: Vec<VpcEndpoint>,
    pub endpoint_groups: Vec<SecurityGroup>,
    pub dns: (bool, bool),
    /// The head node's groups and the config's AdditionalSecurityGroups.
    pub cluster_groups: Vec<String>,
    pub config: Option<Result<ClusterConfig, String>>,
    pub bastion: Option<BastionFacts>,
}

#[derive(Debug, Clone)]
pub struct BastionFacts {
    pub instance: String,
    pub group: SecurityGroup,
    pub subnet: Subnet,
    pub head_groups: Vec<SecurityGroup>,
}

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

fn endpoint_check(f: &Facts, req: &Required, partition: &str) -> Vec<Check> {
    let id = format!("endpoint.{}", req.short);
    let kind = if req.interface {
        "Interface"
    } else {
        "Gateway"
    };
    let fix_create = format!(
        "`bastion doctor --fix`, or create a {kind} endpoint for {} in {}",
        req.service, f.vpc_id
    );
    let Some(e) = f.endpoints.iter().find(|e| e.service == req.service) else {
        return vec![check(
            id,
            Status::Problem,
            format!("no {kind} endpoint for {}", req.service),
            fix_create,
        )];
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
    out.push(match c.scheduler.as_deref() {
        Some("slurm") => check(
            "config.scheduler",
            Status::Ok,
            "Scheduling/Scheduler: slurm",
            "",
        ),
        other => check(
            "config.scheduler",
            Status::Problem,
            format!(
                "Scheduling/Scheduler is {}; only slurm works without internet",
                other.unwrap_or("not set")
            ),
            "set Scheduling/Scheduler: slurm",
        ),
    });
    let flag = |id: &str, key: &str, v: Option<bool>| match v {
        Some(true) => check(id, Status::Ok, format!("{key}: true"), ""),
        _ => check(
            id,
            Status::Problem,
            format!(
                "{key} is {} (Route 53 has no VPC endpoint)",
                v.map(|b| b.to_string()).unwrap_or_else(|| "not set".into())
            ),
            format!("set {key}: true"),
        ),
    };
    out.push(flag(
        "config.dns",
        "Scheduling/SlurmSettings/Dns/DisableManagedDns",
        c.disable_managed_dns,
    ));
    out.push(flag(
        "config.ec2-hostnames",
        "Scheduling/SlurmSettings/Dns/UseEc2Hostnames",
        c.use_ec2_hostnames,
    ));
    let mut subnets: Vec<&String> = c.head_subnet.iter().chain(&c.queue_subnets).collect();
    subnets.sort();
    subnets.dedup();
    let online: Vec<String> = subnets
        .iter()
        .filter_map(|s| internet_route(s, &f.route_tables).map(|via| format!("{s} (via {via})")))
        .collect();
    out.push(if online.is_empty() {
        check(
            "config.subnets",
            Status::Ok,
            "HeadNode and queue subnets have no internet route",
            "",
        )
    } else {
        check(
            "config.subnets",
            Status::Problem,
            format!("subnets with internet access: {}", online.join(", ")),
            "use subnets without a route to an internet gateway or NAT",
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
    let directory_service = config.is_some_and(|c| c.directory_service);
    for req in required_endpoints(&f.region, directory_service) {
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
    out
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_follow_the_partition() {
        let names = |r| {
            required_endpoints(r, false)
                .into_iter()
                .map(|e| e.service)
                .collect::<Vec<_>>()
        };
        assert!(names("us-east-1").contains(&"com.amazonaws.us-east-1.ec2".to_string()));
        assert!(
            names("us-gov-west-1")
                .contains(&"com.amazonaws.us-gov-west-1.cloudformation".to_string())
        );
        let cn = names("cn-north-1");
        assert!(cn.contains(&"cn.com.amazonaws.cn-north-1.ec2".to_string()));
        assert!(cn.contains(&"cn.com.amazonaws.cn-north-1.cloudformation".to_string()));
        assert!(cn.contains(&"com.amazonaws.cn-north-1.logs".to_string()));
        assert_eq!(required_endpoints("us-east-1", true).len(), 6);
    }

    #[test]
    fn yaml_errors_carry_line_and_column() {
        let e = parse_config("Scheduling:\n  Scheduler: slurm\n  bad: [unclosed\n").unwrap_err();
        assert!(e.line >= 3, "{e}");
        let c = parse_config(
            "HeadNode:\n  Networking:\n    SubnetId: subnet-1\n    AdditionalSecurityGroups: [sg-a]\n\
             Scheduling:\n  Scheduler: slurm\n  SlurmSettings:\n    Dns:\n      DisableManagedDns: true\n      UseEc2Hostnames: false\n\
             \x20 SlurmQueues:\n  - Name: q\n    Networking:\n      SubnetIds: [subnet-2]\n",
        )
        .unwrap();
        assert_eq!(c.scheduler.as_deref(), Some("slurm"));
        assert_eq!(
            (c.disable_managed_dns, c.use_ec2_hostnames),
            (Some(true), Some(false))
        );
        assert_eq!(c.queue_subnets, vec!["subnet-2"]);
        assert_eq!(c.additional_groups, vec!["sg-a"]);
        assert!(!c.directory_service);
    }

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
