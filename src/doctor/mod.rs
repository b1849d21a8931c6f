//! The no-internet subnet checklist (FACTS section 3) as pure functions: which VPC endpoints a
//! region needs, how a cluster configuration is read, and each check's verdict over facts that
//! `commands::doctor` gathered. Nothing here calls AWS. By subject: `endpoints` (the table),
//! `config` and `yaml` (the cluster configuration reader), `checks` (the verdicts); the facts
//! they judge and the verdict's shape live here.

pub mod checks;
pub mod config;
pub mod endpoints;
pub mod yaml;

use serde::Serialize;

use crate::aws::{RouteTable, SecurityGroup, Source, Subnet, VpcEndpoint};

pub use checks::{being_deleted, internet_route, run_checks, serving};
pub use config::{ClusterConfig, ClusterConfigError, parse_config};
pub use endpoints::{Flag, Located, Required, endpoints_for, partition_of, required_endpoints};

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
    /// The VPC's EC2 Instance Connect Endpoints (the way in with no inbound port).
    pub instance_connect: Vec<EiceFacts>,
}

/// An EC2 Instance Connect Endpoint of the VPC, and what it needs to reach the head node.
#[derive(Debug, Clone)]
pub struct EiceFacts {
    pub endpoint: crate::eice::Endpoint,
    pub groups: Vec<SecurityGroup>,
    /// Its subnet's CIDR (the source of its tunnels, without client IP preservation).
    pub subnet_cidr: Option<String>,
    /// The head node's IP and groups, with `--cluster`.
    pub head: Option<(std::net::Ipv4Addr, Vec<SecurityGroup>)>,
}

#[derive(Debug, Clone)]
pub struct BastionFacts {
    pub instance: String,
    pub group: SecurityGroup,
    pub subnet: Subnet,
    pub head_groups: Vec<SecurityGroup>,
}
