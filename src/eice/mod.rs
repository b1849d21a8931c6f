//! The EC2 Instance Connect Endpoint (EICE): the path to the head node with no inbound port, no
//! proxy instance and no address list. An endpoint in the head node's VPC carries a TCP stream
//! from AWS's edge to the head node's port 22, authorized per IAM identity
//! (`ec2-instance-connect:OpenTunnel`); bastion runs the head node's SSH session inside that
//! stream, so its host key is checked exactly as through the proxy.
//!
//! This module finds a VPC's endpoint and parses what AWS says of it; [`tunnel`] opens the
//! stream.

pub mod setup;
pub mod tunnel;

use crate::aws::{ConnectEndpoint, Network, Tag};

/// What AWS says about an endpoint, parsed: nothing from `DescribeInstanceConnectEndpoints` is
/// used before it passes here.
#[derive(Debug, thiserror::Error)]
pub enum EiceError {
    #[error(
        "the VPC {vpc} of cluster '{cluster}' has no EC2 Instance Connect Endpoint. Create one in the head node's subnet (`aws ec2 create-instance-connect-endpoint --subnet-id SUBNET`), or connect through a proxy (`bastion up --cluster {cluster}`, then `--via proxy`)"
    )]
    NoEndpoint { cluster: String, vpc: String },
    #[error(
        "the VPC {vpc}'s EC2 Instance Connect Endpoint {id} is {state}{}; {}",
        message.as_deref().map(|m| format!(" ({})", crate::ui::printable(m))).unwrap_or_default(),
        if state.starts_with("create-in") { "wait until it is create-complete (`bastion status`)" } else { "it cannot carry a tunnel" }
    )]
    NotReady {
        vpc: String,
        id: String,
        state: String,
        message: Option<String>,
    },
    #[error("AWS described an EC2 Instance Connect Endpoint that bastion will not use: {0}")]
    Malformed(String),
    #[error("describing the EC2 Instance Connect Endpoints of {vpc}: {source}")]
    Aws {
        vpc: String,
        #[source]
        source: crate::aws::AwsError,
    },
}
impl crate::exit::ExitStatus for EiceError {
    fn exit_status(&self) -> Option<u8> {
        match self {
            EiceError::NoEndpoint { .. } => Some(crate::exit::INVALID),
            _ => None,
        }
    }
}

/// An endpoint's lifecycle, as AWS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    CreateInProgress,
    CreateComplete,
    CreateFailed,
    DeleteInProgress,
    DeleteComplete,
    DeleteFailed,
    UpdateInProgress,
    UpdateComplete,
    UpdateFailed,
}

impl State {
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "create-in-progress" => State::CreateInProgress,
            "create-complete" => State::CreateComplete,
            "create-failed" => State::CreateFailed,
            "delete-in-progress" => State::DeleteInProgress,
            "delete-complete" => State::DeleteComplete,
            "delete-failed" => State::DeleteFailed,
            "update-in-progress" => State::UpdateInProgress,
            "update-complete" => State::UpdateComplete,
            "update-failed" => State::UpdateFailed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::CreateInProgress => "create-in-progress",
            State::CreateComplete => "create-complete",
            State::CreateFailed => "create-failed",
            State::DeleteInProgress => "delete-in-progress",
            State::DeleteComplete => "delete-complete",
            State::DeleteFailed => "delete-failed",
            State::UpdateInProgress => "update-in-progress",
            State::UpdateComplete => "update-complete",
            State::UpdateFailed => "update-failed",
        }
    }

    /// Whether it carries tunnels: as the AWS CLI judges it, once created and while updated.
    pub fn usable(self) -> bool {
        matches!(
            self,
            State::CreateComplete
                | State::UpdateInProgress
                | State::UpdateComplete
                | State::UpdateFailed
        )
    }

    /// Gone or going: not the VPC's endpoint any more.
    pub fn gone(self) -> bool {
        matches!(self, State::DeleteInProgress | State::DeleteComplete)
    }
}

/// An EC2 Instance Connect Endpoint, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `eice-` and 17 hex digits.
    pub id: String,
    pub arn: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub state: State,
    pub state_message: Option<String>,
    /// The host its tunnels are opened on (a DNS name, checked).
    pub dns_name: String,
    pub fips_dns_name: Option<String>,
    pub security_group_ids: Vec<String>,
    pub tags: Vec<Tag>,
}

impl Endpoint {
    /// Parses AWS's description strictly: ids of AWS's shape, names a DNS name can be.
    pub fn parse(raw: ConnectEndpoint) -> Result<Endpoint, EiceError> {
        let bad = |what: &str, value: &str| {
            EiceError::Malformed(format!("{what} '{}'", crate::ui::printable(value)))
        };
        if !aws_id(&raw.id, "eice-") {
            return Err(bad("its id", &raw.id));
        }
        if !aws_id(&raw.vpc_id, "vpc-") {
            return Err(bad("its VPC id", &raw.vpc_id));
        }
        if !aws_id(&raw.subnet_id, "subnet-") {
            return Err(bad("its subnet id", &raw.subnet_id));
        }
        let state = State::parse(&raw.state).ok_or_else(|| bad("its state", &raw.state))?;
        if !dns_name(&raw.dns_name) {
            return Err(bad("its DnsName", &raw.dns_name));
        }
        if let Some(fips) = &raw.fips_dns_name
            && !dns_name(fips)
        {
            return Err(bad("its FipsDnsName", fips));
        }
        if let Some(g) = raw.security_group_ids.iter().find(|g| !aws_id(g, "sg-")) {
            return Err(bad("a security group id", g));
        }
        if !raw.arn.starts_with("arn:") || raw.arn.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad("its ARN", &raw.arn));
        }
        Ok(Endpoint {
            id: raw.id,
            arn: raw.arn,
            vpc_id: raw.vpc_id,
            subnet_id: raw.subnet_id,
            state,
            state_message: raw.state_message,
            dns_name: raw.dns_name,
            fips_dns_name: raw.fips_dns_name,
            security_group_ids: raw.security_group_ids,
            tags: raw.tags,
        })
    }

    /// The host to open tunnels on: the FIPS name where the user asks for FIPS endpoints
    /// (`AWS_USE_FIPS_ENDPOINT=true`, as the SDK reads it).
    pub fn host(&self, fips: bool) -> &str {
        match (&self.fips_dns_name, fips) {
            (Some(f), true) => f,
            _ => &self.dns_name,
        }
    }
}

/// `prefix` then 8 or 17 lowercase hex digits, as AWS makes ids.
fn aws_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// A DNS name of at least two labels, each of letters, digits and inner hyphens (RFC 1123).
pub fn dns_name(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether the user asked the SDK for FIPS endpoints.
pub fn fips_requested() -> bool {
    std::env::var("AWS_USE_FIPS_ENDPOINT").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The endpoints of `vpc` (of the region with `None`) that are not gone, parsed; one AWS
/// describes oddly is an error, not skipped (something is wrong, and the user should hear of
/// it).
pub async fn list(
    cloud: &(impl Network + ?Sized),
    vpc: Option<&str>,
) -> Result<Vec<Endpoint>, EiceError> {
    let raw = cloud
        .instance_connect_endpoints(vpc)
        .await
        .map_err(|source| EiceError::Aws {
            vpc: vpc.unwrap_or("the region").into(),
            source,
        })?;
    let mut endpoints = Vec::new();
    for e in raw {
        let e = Endpoint::parse(e)?;
        if vpc.is_none_or(|v| e.vpc_id == v) && !e.state.gone() {
            endpoints.push(e);
        }
    }
    Ok(endpoints)
}

/// The endpoint a tunnel to a host in `subnet` of `vpc` goes through, as the AWS CLI picks it:
/// a usable one in the host's own subnet, else the VPC's first usable one. None when the VPC has
/// none; an error naming the state of one that is not usable yet (or failed).
pub fn choose(
    endpoints: &[Endpoint],
    cluster: &str,
    vpc: &str,
    subnet: Option<&str>,
) -> Result<Endpoint, EiceError> {
    let usable = || endpoints.iter().filter(|e| e.state.usable());
    if let Some(e) = usable()
        .find(|e| Some(e.subnet_id.as_str()) == subnet)
        .or_else(|| usable().next())
    {
        return Ok(e.clone());
    }
    match endpoints.first() {
        Some(e) => Err(EiceError::NotReady {
            vpc: vpc.into(),
            id: e.id.clone(),
            state: e.state.as_str().into(),
            message: e.state_message.clone(),
        }),
        None => Err(EiceError::NoEndpoint {
            cluster: cluster.into(),
            vpc: vpc.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: &str, subnet: &str, state: &str) -> ConnectEndpoint {
        ConnectEndpoint {
            id: id.into(),
            arn: format!("arn:aws:ec2:us-east-1:123456789012:instance-connect-endpoint/{id}"),
            vpc_id: "vpc-0123456789abcdef0".into(),
            subnet_id: subnet.into(),
            state: state.into(),
            dns_name: format!(
                "{id}.1a2b3c4d.ec2-instance-connect-endpoint.us-east-1.amazonaws.com"
            ),
            security_group_ids: vec!["sg-0123456789abcdef0".into()],
            ..ConnectEndpoint::default()
        }
    }

    #[test]
    fn what_aws_says_is_parsed_strictly() {
        assert!(
            Endpoint::parse(raw(
                "eice-0123456789abcdef0",
                "subnet-01234567",
                "create-complete"
            ))
            .is_ok()
        );
        for (field, value) in [
            ("id", "eice-0123456789ABCDEF0"),
            ("state", "ready"),
            ("dns", "evil.example.org\nProxyCommand x"),
            ("dns", "10.0.0.1"),
            ("dns", "host:443"),
            ("dns", "a..b"),
        ] {
            let mut e = raw(
                "eice-0123456789abcdef0",
                "subnet-01234567",
                "create-complete",
            );
            match field {
                "id" => e.id = value.into(),
                "state" => e.state = value.into(),
                _ => e.dns_name = value.into(),
            }
            assert!(
                matches!(Endpoint::parse(e), Err(EiceError::Malformed(_))),
                "{field} = {value:?} passed"
            );
        }
    }

    #[test]
    fn the_host_subnets_own_endpoint_wins_then_the_first_usable() {
        let parse = |id, subnet, state| Endpoint::parse(raw(id, subnet, state)).unwrap();
        let list = vec![
            parse(
                "eice-00000000000000001",
                "subnet-0000000a",
                "create-in-progress",
            ),
            parse(
                "eice-00000000000000002",
                "subnet-0000000b",
                "create-complete",
            ),
            parse(
                "eice-00000000000000003",
                "subnet-0000000c",
                "update-complete",
            ),
        ];
        let vpc = "vpc-0123456789abcdef0";
        assert_eq!(
            choose(&list, "c", vpc, Some("subnet-0000000c")).unwrap().id,
            "eice-00000000000000003"
        );
        assert_eq!(
            choose(&list, "c", vpc, Some("subnet-0000000a")).unwrap().id,
            "eice-00000000000000002"
        );
        assert!(matches!(
            choose(&list[..1], "c", vpc, None),
            Err(EiceError::NotReady { .. })
        ));
        assert!(matches!(
            choose(&[], "c", vpc, None),
            Err(EiceError::NoEndpoint { .. })
        ));
    }
}
