//! The no-internet subnet checklist (FACTS section 3) as pure functions: which VPC endpoints a
//! region needs, how a cluster configuration is read, and each check's verdict over facts that
//! `commands::doctor` gathered. Nothing here calls AWS.

use serde::Serialize;

pub mod yaml;

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

impl Required {
    /// The endpoint type, as AWS names it.
    pub fn kind(&self) -> &'static str {
        if self.interface {
            "Interface"
        } else {
            "Gateway"
        }
    }
}

/// The endpoints the AWS page lists, named for the region's partition: Secrets Manager's when the
/// cluster reads a secret (`secrets`); Elastic Load Balancing's and Auto Scaling's with login
/// nodes ("only required when LoginNodes is enabled", the page says).
pub fn required_endpoints(region: &str, secrets: bool, login_nodes: bool) -> Vec<Required> {
    let china = partition_of(region) == "aws-cn";
    let name = |short: &str| {
        if china && matches!(short, "cloudformation" | "ec2" | "autoscaling") {
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
    if secrets {
        list.push(("secretsmanager", true));
    }
    if login_nodes {
        list.push(("elasticloadbalancing", true));
        list.push(("autoscaling", true));
    }
    list.into_iter()
        .map(|(short, interface)| Required {
            short,
            service: name(short),
            interface,
        })
        .collect()
}

/// A value read from the configuration, with where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub value: String,
    pub line: usize,
    pub column: usize,
}

/// A boolean field as pcluster's schema reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    Missing,
    Set(bool),
    /// Present, but not a value the schema accepts as a boolean: what it is, and where.
    Invalid(Located),
}

/// The endpoints this cluster needs: the config's sections decide the optional ones.
pub fn endpoints_for(f: &Facts) -> Vec<Required> {
    let config = match &f.config {
        Some(Ok(c)) => Some(c),
        _ => None,
    };
    required_endpoints(
        &f.region,
        config.is_some_and(|c| c.needs_secrets()),
        config.is_some_and(|c| c.login_nodes),
    )
}

/// What doctor reads from a cluster configuration, read as `pcluster` reads it (`doctor::yaml`).
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    pub scheduler: Option<String>,
    pub disable_managed_dns: Option<Flag>,
    pub use_ec2_hostnames: Option<Flag>,
    pub directory_service: bool,
    /// `Scheduling/SlurmSettings/MungeKeySecretArn`: the key is read from Secrets Manager.
    pub munge_key_secret: bool,
    /// `Scheduling/SlurmSettings/Database/PasswordSecretArn`: the accounting database's password.
    pub database_secret: bool,
    pub login_nodes: bool,
    pub head_subnet: Option<Located>,
    /// Queue and login-node pool subnets, each with the section it came from.
    pub queue_subnets: Vec<(String, Located)>,
    pub additional_groups: Vec<String>,
    /// `SecurityGroups` (which replace the default groups) of the head node, queues and pools.
    pub custom_groups: Vec<String>,
    /// Keys present with a value of the wrong type: (path, what it is, where).
    pub wrong_types: Vec<(String, String, usize, usize)>,
}

#[derive(Debug, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ConfigError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ClusterConfig {
    /// Whether the cluster reads secrets from Secrets Manager: the directory's password
    /// (DirectoryService), a custom munge key, or the accounting database's password.
    pub fn needs_secrets(&self) -> bool {
        self.directory_service || self.munge_key_secret || self.database_secret
    }
}

/// The reader of one configuration: records wrong types as it goes.
struct Reader {
    wrong: Vec<(String, String, usize, usize)>,
}

impl Reader {
    fn wrong(&mut self, path: &str, n: &yaml::Node, expected: &str) {
        self.wrong.push((
            path.to_string(),
            format!("{}, not {expected}", n.kind()),
            n.line,
            n.column,
        ));
    }

    /// A string field; a node of another type is recorded and read as absent.
    fn string(&mut self, n: Option<&yaml::Node>, path: &str) -> Option<Located> {
        let n = n?;
        match n.as_str() {
            Some(s) => Some(Located {
                value: s.to_string(),
                line: n.line,
                column: n.column,
            }),
            None if n.resolved() == Some(yaml::Resolved::Null) => None,
            None => {
                self.wrong(path, n, "a string");
                None
            }
        }
    }

    /// A list of strings; other entries are recorded.
    fn strings(&mut self, n: Option<&yaml::Node>, path: &str) -> Vec<Located> {
        let Some(n) = n else {
            return Vec::new();
        };
        match &n.value {
            yaml::Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string(Some(item), &format!("{path}[{i}]")))
                .collect(),
            _ if n.resolved() == Some(yaml::Resolved::Null) => Vec::new(),
            _ => {
                self.wrong(path, n, "a list");
                Vec::new()
            }
        }
    }

    fn list<'a>(&mut self, n: Option<&'a yaml::Node>, path: &str) -> &'a [yaml::Node] {
        match n.map(|n| (&n.value, n)) {
            Some((yaml::Value::Seq(items), _)) => items,
            Some((_, n)) if n.resolved() != Some(yaml::Resolved::Null) => {
                self.wrong(path, n, "a list");
                &[]
            }
            _ => &[],
        }
    }

    fn flag(n: Option<&yaml::Node>) -> Option<Flag> {
        let n = n?;
        Some(match n.as_schema_bool() {
            Some(b) => Flag::Set(b),
            None => Flag::Invalid(Located {
                value: match &n.value {
                    yaml::Value::Scalar { text, .. } => format!("'{text}'"),
                    _ => n.kind().to_string(),
                },
                line: n.line,
                column: n.column,
            }),
        })
    }
}

fn present(n: Option<&yaml::Node>) -> bool {
    n.is_some_and(|n| n.resolved() != Some(yaml::Resolved::Null))
}

pub fn parse_config(text: &str) -> Result<ClusterConfig, ConfigError> {
    let fail = |e: yaml::YamlError| ConfigError {
        line: e.line,
        column: e.column,
        message: e.message,
    };
    let doc = match yaml::load(text).map_err(fail)? {
        None => {
            return Err(ConfigError {
                line: 1,
                column: 1,
                message: "the file holds no configuration (it is empty): pcluster refuses it"
                    .into(),
            });
        }
        Some(d) if !matches!(d.value, yaml::Value::Map(_)) => {
            return Err(ConfigError {
                line: d.line,
                column: d.column,
                message: format!(
                    "the file is {}, not a mapping of sections (HeadNode, Scheduling, ...): pcluster refuses it",
                    d.kind()
                ),
            });
        }
        Some(d) => d,
    };
    let mut r = Reader { wrong: Vec::new() };
    fn get<'a>(n: Option<&'a yaml::Node>, k: &str) -> Option<&'a yaml::Node> {
        n.and_then(|n| n.get(k))
    }
    let root = Some(&doc);
    let scheduling = get(root, "Scheduling");
    let slurm = get(scheduling, "SlurmSettings");
    let dns = get(slurm, "Dns");
    let head_net = get(get(root, "HeadNode"), "Networking");
    let mut c = ClusterConfig {
        scheduler: r
            .string(get(scheduling, "Scheduler"), "Scheduling/Scheduler")
            .map(|l| l.value),
        disable_managed_dns: Reader::flag(get(dns, "DisableManagedDns")),
        use_ec2_hostnames: Reader::flag(get(dns, "UseEc2Hostnames")),
        directory_service: present(get(root, "DirectoryService")),
        munge_key_secret: present(get(slurm, "MungeKeySecretArn")),
        database_secret: present(get(get(slurm, "Database"), "PasswordSecretArn")),
        login_nodes: present(get(root, "LoginNodes")),
        head_subnet: r.string(get(head_net, "SubnetId"), "HeadNode/Networking/SubnetId"),
        ..Default::default()
    };
    let groups = |r: &mut Reader, net: Option<&yaml::Node>, at: &str, c: &mut ClusterConfig| {
        c.additional_groups.extend(
            r.strings(
                get(net, "AdditionalSecurityGroups"),
                &format!("{at}/Networking/AdditionalSecurityGroups"),
            )
            .into_iter()
            .map(|l| l.value),
        );
        c.custom_groups.extend(
            r.strings(
                get(net, "SecurityGroups"),
                &format!("{at}/Networking/SecurityGroups"),
            )
            .into_iter()
            .map(|l| l.value),
        );
    };
    groups(&mut r, head_net, "HeadNode", &mut c);
    let queues = r.list(get(scheduling, "SlurmQueues"), "Scheduling/SlurmQueues");
    for (i, q) in queues.iter().enumerate() {
        let at = format!("Scheduling/SlurmQueues[{i}]");
        let net = q.get("Networking");
        for l in r.strings(
            get(Some(q), "Networking").and_then(|n| n.get("SubnetIds")),
            &format!("{at}/Networking/SubnetIds"),
        ) {
            c.queue_subnets.push((at.clone(), l));
        }
        groups(&mut r, net, &at, &mut c);
    }
    let pools = r.list(get(get(root, "LoginNodes"), "Pools"), "LoginNodes/Pools");
    for (i, p) in pools.iter().enumerate() {
        let at = format!("LoginNodes/Pools[{i}]");
        let net = p.get("Networking");
        for l in r.strings(
            net.and_then(|n| n.get("SubnetIds")),
            &format!("{at}/Networking/SubnetIds"),
        ) {
            c.queue_subnets.push((at.clone(), l));
        }
        groups(&mut r, net, &at, &mut c);
    }
    for v in [&mut c.additional_groups, &mut c.custom_groups] {
        v.sort();
        v.dedup();
    }
    c.wrong_types = r.wrong;
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
    /// The head node's groups and the config's SecurityGroups and AdditionalSecurityGroups.
    pub cluster_groups: Vec<String>,
    /// The config's subnets as AWS knows them (None: no such subnet).
    pub config_subnets: Vec<(String, Option<Subnet>)>,
    /// `--subnet`, when that is what is checked.
    pub subnet_arg: Option<String>,
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
            required_endpoints(r, false, false)
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
        assert_eq!(required_endpoints("us-east-1", true, false).len(), 6);
        let login = required_endpoints("cn-north-1", false, true);
        assert!(
            login
                .iter()
                .any(|e| e.service == "cn.com.amazonaws.cn-north-1.autoscaling")
        );
        assert!(
            login
                .iter()
                .any(|e| e.service == "com.amazonaws.cn-north-1.elasticloadbalancing")
        );
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
            (Some(Flag::Set(true)), Some(Flag::Set(false)))
        );
        let queues: Vec<&str> = c
            .queue_subnets
            .iter()
            .map(|(_, l)| l.value.as_str())
            .collect();
        assert_eq!(queues, vec!["subnet-2"]);
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
