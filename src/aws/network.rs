//! The VPC around the head node: subnets, route tables, security groups and their rules, VPC
//! endpoints.

use async_trait::async_trait;
use std::net::Ipv4Addr;

use super::{AwsResult, Tag};

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
    /// The group the rule admits traffic from (an egress rule: lets traffic out to), when it
    /// names a group.
    pub referenced_group: Option<String>,
    /// An egress rule (traffic out of `group_id`), not an ingress one.
    pub egress: bool,
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

/// An EC2 Instance Connect Endpoint, as `DescribeInstanceConnectEndpoints` describes it: text
/// from AWS, which [`crate::eice`] parses before anything uses it.
#[derive(Debug, Clone, Default)]
pub struct ConnectEndpoint {
    pub id: String,
    pub arn: String,
    pub vpc_id: String,
    pub subnet_id: String,
    /// `create-in-progress`, `create-complete`, `create-failed`, `delete-*`, `update-*`.
    pub state: String,
    /// Why a create failed, where AWS says.
    pub state_message: Option<String>,
    pub dns_name: String,
    pub fips_dns_name: Option<String>,
    pub security_group_ids: Vec<String>,
    pub tags: Vec<Tag>,
}

/// One tunnel through an Instance Connect Endpoint, as `OpenTunnel` asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelRequest {
    pub endpoint_id: String,
    /// The host the WebSocket goes to: the endpoint's `DnsName` (or `FipsDnsName`).
    pub host: String,
    pub remote_port: u16,
    pub private_ip: Ipv4Addr,
    /// Seconds, 1 to 3600; always sent, since a policy that limits it cannot match without it.
    pub max_duration: u32,
}

/// The EC2 Instance Connect Endpoint `up --via eice` asks for.
#[derive(Debug, Clone)]
pub struct ConnectEndpointSpec {
    pub subnet_id: String,
    pub security_group_ids: Vec<String>,
    pub tags: Vec<Tag>,
    /// Idempotency: a retry with the same token returns the endpoint of the first call.
    pub client_token: String,
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

/// The VPC's network: reads for `doctor`, `status` and the plan, and writes that each create or
/// remove exactly one thing.
#[async_trait]
pub trait Network: Send + Sync {
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
    async fn vpc_endpoints(&self, vpc_id: &str) -> AwsResult<Vec<VpcEndpoint>>;
    /// (enableDnsSupport, enableDnsHostnames)
    async fn vpc_dns(&self, vpc_id: &str) -> AwsResult<(bool, bool)>;
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
    /// Adds one egress rule to `group_id`: tcp `port` out to `target`, tagged; returns its rule
    /// ids.
    async fn authorize_egress(
        &self,
        group_id: &str,
        port: i32,
        target: &Source,
        description: &str,
        tags: &[Tag],
    ) -> AwsResult<Vec<String>>;
    async fn revoke_egress(&self, group_id: &str, rule_ids: &[String]) -> AwsResult<()>;
    async fn create_vpc_endpoint(&self, spec: &EndpointSpec) -> AwsResult<String>;
    /// The EC2 Instance Connect Endpoints of a VPC (of the region with `None`), whatever their
    /// state.
    async fn instance_connect_endpoints(
        &self,
        vpc_id: Option<&str>,
    ) -> AwsResult<Vec<ConnectEndpoint>>;
    /// The `wss://` URL that opens `request`'s tunnel, presigned (SigV4, in the query, valid
    /// 60 s) with the caller's credentials for `ec2-instance-connect:OpenTunnel`. No call to AWS:
    /// the endpoint checks the signature when the URL is used.
    async fn open_tunnel_url(&self, request: &TunnelRequest) -> AwsResult<String>;
    /// Creates an EC2 Instance Connect Endpoint; AWS answers at once with it in
    /// `create-in-progress`.
    async fn create_instance_connect_endpoint(
        &self,
        spec: &ConnectEndpointSpec,
    ) -> AwsResult<ConnectEndpoint>;
    /// Starts deleting an endpoint (`delete-in-progress`, then `delete-complete`).
    async fn delete_instance_connect_endpoint(&self, id: &str) -> AwsResult<()>;
}
