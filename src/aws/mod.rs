//! The AWS seam: one domain-shaped trait, [`Cloud`], over the EC2, IAM, SSM and STS calls that
//! bastion makes, the plain data types it speaks, and the typed [`AwsError`].
//!
//! Commands never see an SDK type. The real adapter is [`sdk::SdkCloud`]; [`faults::Faulty`]
//! wraps any `Cloud` to fail the calls `BASTION_FAILPOINT` names (tests only; see `failpoint`).

pub mod checked;
pub mod error;
pub mod faults;
pub mod fresh;
pub mod sdk;

use std::net::Ipv4Addr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use error::AwsError;

pub type AwsResult<T> = Result<T, AwsError>;

/// NotFound is an answer, not an error: `Ok(None)`. The one place that says so, for the adapter's
/// look-ups and for teardown (where a resource already gone counts as removed).
pub fn or_missing<T>(r: AwsResult<T>) -> AwsResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The tag every bastion resource carries; its value is the cluster name.
pub const TAG_CLUSTER: &str = "bastion:cluster";
/// Set by the proxy's bootstrap: `bootstrapping`, `ready` or `failed`.
pub const TAG_STATE: &str = "bastion:state";
/// Set by the proxy's bootstrap: its SSH ed25519 host key, OpenSSH format.
pub const TAG_HOST_KEY: &str = "bastion:host-key";
/// Set by the proxy's bootstrap after `ready`: `installing`, `ready`, `failed` (or `disabled`).
pub const TAG_DESKTOP: &str = "bastion:desktop";
/// The proxy's OS variant (`al2023`, `ubuntu2204`), so later commands know its login user.
pub const TAG_OS: &str = "bastion:os";
/// The head node the proxy was made for.
pub const TAG_HEAD_NODE: &str = "bastion:head-node";
/// IAM path of every role and instance profile bastion creates.
pub const IAM_PATH: &str = "/bastion/";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Tag {
            key: key.into(),
            value: value.into(),
        }
    }
}

pub fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key == key).map(|t| t.value.as_str())
}

/// Who the credentials belong to; the partition comes from the caller's ARN.
#[derive(Debug, Clone)]
pub struct Identity {
    pub account: String,
    pub arn: String,
    pub partition: String,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    /// pending, running, stopping, stopped, shutting-down, terminated
    pub state: String,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    pub availability_zone: Option<String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub instance_type: Option<String>,
    pub architecture: Option<String>,
    pub launch_time: Option<String>,
    pub security_group_ids: Vec<String>,
    pub key_name: Option<String>,
    /// The ARN of the instance profile it runs with.
    pub instance_profile_arn: Option<String>,
    pub tags: Vec<Tag>,
}

impl Instance {
    pub fn tag(&self, key: &str) -> Option<&str> {
        tag_value(&self.tags, key)
    }
}

#[derive(Debug, Clone)]
pub struct Subnet {
    pub id: String,
    pub vpc_id: String,
    pub availability_zone: String,
    pub cidr: String,
    pub map_public_ip_on_launch: bool,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    pub id: String,
    pub is_main: bool,
    pub subnet_ids: Vec<String>,
    /// Targets of the IPv4 default route (`0.0.0.0/0`), e.g. `igw-...`, `nat-...`.
    pub default_route_targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Cidr(String),
    Group(String),
    PrefixList(String),
}

/// One ingress permission of a security group, flattened to one source.
#[derive(Debug, Clone)]
pub struct IngressRule {
    /// `tcp`, `udp`, `icmp` or `-1` (all)
    pub protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub source: Source,
}

impl IngressRule {
    pub fn covers_tcp_port(&self, port: i32) -> bool {
        match self.protocol.as_str() {
            "-1" => true,
            "tcp" | "6" => {
                let from = self.from_port.unwrap_or(-1);
                let to = self.to_port.unwrap_or(-1);
                (from == -1 && to == -1) || (from <= port && port <= to)
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub vpc_id: Option<String>,
    pub ingress: Vec<IngressRule>,
    /// Egress permissions, flattened the same way.
    pub egress: Vec<IngressRule>,
    pub tags: Vec<Tag>,
}

/// One ingress rule of a group, as `allow --list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRule {
    pub rule_id: String,
    /// `tcp`, `udp`, `icmp` or `-1` (all)
    pub protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    /// The IPv4 block it admits, when it names one.
    pub cidr: Option<String>,
    pub description: Option<String>,
}

/// A rule that bastion added, found again by its tag.
#[derive(Debug, Clone)]
pub struct TaggedRule {
    pub rule_id: String,
    pub group_id: String,
    /// The group the rule admits traffic from, when it names a group.
    pub referenced_group: Option<String>,
}

#[derive(Debug, Clone)]
pub struct KeyPair {
    pub name: String,
    pub id: Option<String>,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone)]
pub struct IamEntity {
    pub name: String,
    pub arn: String,
    pub path: String,
    pub tags: Vec<Tag>,
}

/// Everything RunInstances needs for the proxy.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchSpec {
    pub ami: String,
    pub instance_type: String,
    pub subnet_id: String,
    pub security_group_id: String,
    pub key_name: String,
    pub instance_profile_arn: String,
    pub root_device_name: String,
    pub root_volume_gib: i32,
    #[serde(skip)]
    pub user_data: String,
    pub tags: Vec<Tag>,
}

/// A VPC endpoint, as `doctor` judges it.
#[derive(Debug, Clone)]
pub struct VpcEndpoint {
    pub id: String,
    pub service: String,
    /// `Interface` or `Gateway`
    pub kind: String,
    pub state: String,
    pub subnet_ids: Vec<String>,
    pub route_table_ids: Vec<String>,
    pub private_dns: bool,
    pub security_group_ids: Vec<String>,
    pub policy: Option<String>,
    pub tags: Vec<Tag>,
}

/// What `doctor --fix` creates.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub vpc_id: String,
    pub service: String,
    pub interface: bool,
    pub subnet_ids: Vec<String>,
    pub route_table_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub tags: Vec<Tag>,
}

/// The parts of an AMI the launch needs.
#[derive(Debug, Clone)]
pub struct Image {
    pub id: String,
    pub architecture: Option<String>,
    pub root_device_name: Option<String>,
}

/// The narrow, domain-shaped view of AWS that bastion needs. Every method is one user-visible
/// step; the adapter decides how many API calls (pages, waiters) that takes.
#[async_trait]
pub trait Cloud: Send + Sync {
    fn region(&self) -> &str;

    // Reads.
    async fn identity(&self) -> AwsResult<Identity>;
    async fn instances_by_tags(
        &self,
        tags: &[(&str, &str)],
        states: &[&str],
    ) -> AwsResult<Vec<Instance>>;
    async fn instance(&self, id: &str) -> AwsResult<Option<Instance>>;
    async fn subnets(&self, vpc_id: &str) -> AwsResult<Vec<Subnet>>;
    async fn subnet(&self, subnet_id: &str) -> AwsResult<Option<Subnet>>;
    async fn route_tables(&self, vpc_id: &str) -> AwsResult<Vec<RouteTable>>;
    async fn vpc_cidrs(&self, vpc_id: &str) -> AwsResult<Vec<String>>;
    async fn security_groups(&self, ids: &[String]) -> AwsResult<Vec<SecurityGroup>>;
    async fn security_groups_by_tag(&self, key: &str, value: &str)
    -> AwsResult<Vec<SecurityGroup>>;
    async fn rules_by_tag(&self, key: &str, value: &str) -> AwsResult<Vec<TaggedRule>>;
    /// The ingress rules of one group, with their ids and descriptions.
    async fn ingress_rules(&self, group_id: &str) -> AwsResult<Vec<GroupRule>>;
    async fn key_pairs_by_tag(&self, key: &str, value: &str) -> AwsResult<Vec<KeyPair>>;
    async fn ssm_parameter(&self, name: &str) -> AwsResult<Option<String>>;
    async fn image(&self, id: &str) -> AwsResult<Option<Image>>;
    async fn console_output(&self, instance_id: &str) -> AwsResult<String>;
    async fn roles_under(&self, path: &str) -> AwsResult<Vec<IamEntity>>;
    async fn instance_profiles_under(&self, path: &str) -> AwsResult<Vec<IamEntity>>;
    async fn role_policies(&self, role: &str) -> AwsResult<(Vec<String>, Vec<String>)>;
    async fn profile_roles(&self, profile: &str) -> AwsResult<Vec<String>>;
    async fn vpc_endpoints(&self, vpc_id: &str) -> AwsResult<Vec<VpcEndpoint>>;
    /// (enableDnsSupport, enableDnsHostnames)
    async fn vpc_dns(&self, vpc_id: &str) -> AwsResult<(bool, bool)>;

    // Writes: each creates or removes exactly one thing.
    async fn import_key_pair(
        &self,
        name: &str,
        public_key: &str,
        tags: &[Tag],
    ) -> AwsResult<String>;
    async fn delete_key_pair(&self, name: &str) -> AwsResult<()>;
    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &[Tag],
    ) -> AwsResult<String>;
    async fn delete_security_group(&self, id: &str) -> AwsResult<()>;
    /// Replaces the default allow-all egress with `rules` (protocol tcp, port, CIDR).
    async fn set_egress(&self, group_id: &str, rules: &[(i32, String)]) -> AwsResult<()>;
    async fn authorize_ingress(
        &self,
        group_id: &str,
        port: i32,
        source: &Source,
        description: &str,
        tags: &[Tag],
    ) -> AwsResult<Vec<String>>;
    async fn revoke_ingress(&self, group_id: &str, rule_ids: &[String]) -> AwsResult<()>;
    /// A role under `path` that carries the permissions boundary `boundary` (a policy ARN).
    async fn create_role(
        &self,
        name: &str,
        path: &str,
        trust_policy: &str,
        description: &str,
        boundary: &str,
        tags: &[Tag],
    ) -> AwsResult<String>;
    /// Whether the managed policy `arn` exists (GetPolicy).
    async fn policy_exists(&self, arn: &str) -> AwsResult<bool>;
    /// The instance profile `name`, if it exists.
    async fn instance_profile(&self, name: &str) -> AwsResult<Option<IamEntity>>;
    async fn delete_role(&self, name: &str) -> AwsResult<()>;
    async fn put_role_policy(&self, role: &str, name: &str, document: &str) -> AwsResult<()>;
    async fn delete_role_policy(&self, role: &str, name: &str) -> AwsResult<()>;
    async fn attach_role_policy(&self, role: &str, policy_arn: &str) -> AwsResult<()>;
    async fn detach_role_policy(&self, role: &str, policy_arn: &str) -> AwsResult<()>;
    async fn create_instance_profile(
        &self,
        name: &str,
        path: &str,
        tags: &[Tag],
    ) -> AwsResult<String>;
    async fn delete_instance_profile(&self, name: &str) -> AwsResult<()>;
    async fn add_role_to_instance_profile(&self, profile: &str, role: &str) -> AwsResult<()>;
    async fn remove_role_from_instance_profile(&self, profile: &str, role: &str) -> AwsResult<()>;
    async fn run_instance(&self, spec: &LaunchSpec) -> AwsResult<String>;
    async fn create_vpc_endpoint(&self, spec: &EndpointSpec) -> AwsResult<String>;
    async fn start_instance(&self, id: &str) -> AwsResult<()>;
    /// EC2 Instance Connect: lets `public_key` log in as `os_user` on the instance for 60 s.
    async fn send_ssh_public_key(
        &self,
        instance_id: &str,
        os_user: &str,
        public_key: &str,
    ) -> AwsResult<()>;
    async fn terminate_instance(&self, id: &str) -> AwsResult<()>;
}

/// `1.2.3.4` -> `1.2.3.4/32`; validates IPv4 CIDRs.
pub fn parse_cidr(s: &str) -> Result<ipnet::Ipv4Net, String> {
    if let Ok(net) = s.parse::<ipnet::Ipv4Net>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        return Ok(ipnet::Ipv4Net::from(ip));
    }
    Err(format!(
        "invalid CIDR '{s}': expected an IPv4 address or block such as 203.0.113.7/32"
    ))
}
