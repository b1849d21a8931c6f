//! The cluster configuration, read as ParallelCluster reads it (with `yaml.rs`): only what the
//! checks need, each value with its line and column for the error that names it.

use super::*;

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
pub struct ClusterConfigError {
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

pub fn parse_config(text: &str) -> Result<ClusterConfig, ClusterConfigError> {
    let fail = |e: yaml::YamlError| ClusterConfigError {
        line: e.line,
        column: e.column,
        message: e.message,
    };
    let doc = match yaml::load(text).map_err(fail)? {
        None => {
            return Err(ClusterConfigError {
                line: 1,
                column: 1,
                message: "the file holds no configuration (it is empty): pcluster refuses it"
                    .into(),
            });
        }
        Some(d) if !matches!(d.value, yaml::Value::Map(_)) => {
            return Err(ClusterConfigError {
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

#[cfg(test)]
mod tests {
    use super::*;
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
}
