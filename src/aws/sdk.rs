//! The real [`Cloud`]: the AWS SDK for Rust. This is the only file that names SDK types.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types as ec2t;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use base64::Engine;

use super::*;

/// Counts every operation the SDK starts (retries excluded), so `-v` can report the cost of a command.
#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<AtomicUsize>);

impl CallCounter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "bastion-call-counter"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        Ok(())
    }
}

pub struct SdkCloud {
    region: String,
    ec2: aws_sdk_ec2::Client,
    iam: aws_sdk_iam::Client,
    ssm: aws_sdk_ssm::Client,
    sts: aws_sdk_sts::Client,
    eic: aws_sdk_ec2instanceconnect::Client,
    pub calls: CallCounter,
}

impl SdkCloud {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let calls = CallCounter::default();
        let region = config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string());
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        );
        let iam = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        );
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        );
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        );
        // Its own endpoint variable (AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT) is read by the SDK.
        let eic = aws_sdk_ec2instanceconnect::Client::from_conf(
            aws_sdk_ec2instanceconnect::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        );
        SdkCloud {
            region,
            ec2,
            iam,
            ssm,
            sts,
            eic,
            calls,
        }
    }
}

fn filter(name: &str, values: &[&str]) -> ec2t::Filter {
    ec2t::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

fn ec2_tags(tags: &[Tag]) -> Vec<ec2t::Tag> {
    tags.iter()
        .map(|t| ec2t::Tag::builder().key(&t.key).value(&t.value).build())
        .collect()
}

fn tag_spec(resource: ec2t::ResourceType, tags: &[Tag]) -> ec2t::TagSpecification {
    ec2t::TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(ec2_tags(tags)))
        .build()
}

fn from_ec2_tags(tags: &[ec2t::Tag]) -> Vec<Tag> {
    tags.iter()
        .map(|t| Tag::new(t.key().unwrap_or_default(), t.value().unwrap_or_default()))
        .collect()
}

fn iam_tags(tags: &[Tag]) -> Vec<aws_sdk_iam::types::Tag> {
    tags.iter()
        .filter_map(|t| {
            aws_sdk_iam::types::Tag::builder()
                .key(&t.key)
                .value(&t.value)
                .build()
                .ok()
        })
        .collect()
}

fn from_iam_tags(tags: &[aws_sdk_iam::types::Tag]) -> Vec<Tag> {
    tags.iter().map(|t| Tag::new(t.key(), t.value())).collect()
}

/// An instance as bastion holds it: ids and addresses checked against their forms (see
/// `aws::checked`); anything else is refused, naming the instance.
fn to_instance(i: &ec2t::Instance) -> Result<Instance, AwsError> {
    const ACTION: &str = "ec2:DescribeInstances";
    let id = checked::id(
        ACTION,
        "i",
        "an instance id",
        i.instance_id().unwrap_or_default(),
    )?;
    let of = |what: &str| format!("{what} for instance {id}");
    let opt_id = |prefix: &str, what: &str, v: Option<&str>| -> Result<Option<String>, AwsError> {
        v.map(|v| checked::id(ACTION, prefix, &of(what), v))
            .transpose()
    };
    let ip = |what: &str, v: Option<&str>| -> Result<Option<String>, AwsError> {
        v.map(|v| checked::ipv4(v).ok_or_else(|| checked::malformed(ACTION, of(what), v)))
            .transpose()
    };
    // The instance's groups, else its network interfaces' (moto fills only the latter when the
    // launch names groups on the interface).
    let mut security_group_ids = Vec::new();
    for g in i
        .security_groups()
        .iter()
        .chain(i.network_interfaces().iter().flat_map(|n| n.groups()))
    {
        if let Some(g) = g.group_id() {
            security_group_ids.push(checked::id(ACTION, "sg", &of("a security group id"), g)?);
        }
    }
    security_group_ids.sort();
    security_group_ids.dedup();
    Ok(Instance {
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_else(|| "unknown".into()),
        subnet_id: opt_id("subnet", "a subnet id", i.subnet_id())?,
        vpc_id: opt_id("vpc", "a VPC id", i.vpc_id())?,
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        private_ip: ip("a private IPv4 address", i.private_ip_address())?,
        public_ip: ip("a public IPv4 address", i.public_ip_address())?,
        instance_type: i.instance_type().map(|t| t.as_str().to_string()),
        architecture: i.architecture().map(|a| a.as_str().to_string()),
        launch_time: i
            .launch_time()
            .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
        security_group_ids,
        key_name: i.key_name().map(str::to_string),
        instance_profile_arn: i
            .iam_instance_profile()
            .and_then(|p| p.arn())
            .map(str::to_string),
        tags: from_ec2_tags(i.tags()),
        id,
    })
}

/// One group's permissions (ingress or egress), flattened to one source each; IPv6 ranges only
/// with `ipv6` (egress, where an allow-all `::/0` must be seen).
fn flatten(permissions: &[ec2t::IpPermission], ipv6: bool) -> Vec<IngressRule> {
    let mut rules = Vec::new();
    for p in permissions {
        let protocol = p.ip_protocol().unwrap_or("-1").to_string();
        let (from_port, to_port) = (p.from_port(), p.to_port());
        let mut push = |source| {
            rules.push(IngressRule {
                protocol: protocol.clone(),
                from_port,
                to_port,
                source,
            })
        };
        for r in p.ip_ranges() {
            if let Some(c) = r.cidr_ip() {
                push(Source::Cidr(c.to_string()));
            }
        }
        if ipv6 {
            for r in p.ipv6_ranges() {
                if let Some(c) = r.cidr_ipv6() {
                    push(Source::Cidr(c.to_string()));
                }
            }
        }
        for g in p.user_id_group_pairs() {
            if let Some(id) = g.group_id() {
                push(Source::Group(id.to_string()));
            }
        }
        for pl in p.prefix_list_ids() {
            if let Some(id) = pl.prefix_list_id() {
                push(Source::PrefixList(id.to_string()));
            }
        }
    }
    rules
}

fn to_security_group(g: &ec2t::SecurityGroup) -> SecurityGroup {
    SecurityGroup {
        id: g.group_id().unwrap_or_default().to_string(),
        name: g.group_name().unwrap_or_default().to_string(),
        description: g.description().map(str::to_string),
        vpc_id: g.vpc_id().map(str::to_string),
        ingress: flatten(g.ip_permissions(), false),
        egress: flatten(g.ip_permissions_egress(), true),
        tags: from_ec2_tags(g.tags()),
    }
}

macro_rules! sdk {
    ($action:expr, $fut:expr) => {
        $fut.await.map_err(|e| AwsError::from_sdk($action, e))
    };
}

#[async_trait]
impl Cloud for SdkCloud {
    fn region(&self) -> &str {
        &self.region
    }

    async fn identity(&self) -> AwsResult<Identity> {
        let out = sdk!(
            "sts:GetCallerIdentity",
            self.sts.get_caller_identity().send()
        )?;
        let arn = out.arn().unwrap_or_default().to_string();
        // arn:<partition>:sts::<account>:... The account names a folder of the state dir and
        // both go into the policies bastion prints: held to their forms.
        let partition = arn.split(':').nth(1).unwrap_or("aws").to_string();
        const ACTION: &str = "sts:GetCallerIdentity";
        if !checked::is_partition(&partition) {
            return Err(checked::malformed(ACTION, "a partition".into(), &partition));
        }
        let account = out.account().unwrap_or_default().to_string();
        if !checked::is_account(&account) {
            return Err(checked::malformed(ACTION, "an account id".into(), &account));
        }
        Ok(Identity {
            account,
            arn,
            partition,
        })
    }

    async fn instances_by_tags(
        &self,
        tags: &[(&str, &str)],
        states: &[&str],
    ) -> AwsResult<Vec<Instance>> {
        let mut filters: Vec<_> = tags
            .iter()
            .map(|(k, v)| {
                if *v == "*" {
                    filter("tag-key", &[k])
                } else {
                    filter(&format!("tag:{k}"), &[v])
                }
            })
            .collect();
        if !states.is_empty() {
            filters.push(filter("instance-state-name", states));
        }
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = sdk!(
                "ec2:DescribeInstances",
                self.ec2
                    .describe_instances()
                    .set_filters(Some(filters.clone()))
                    .set_next_token(token)
                    .send()
            )?;
            for r in page.reservations() {
                for i in r.instances() {
                    out.push(to_instance(i)?);
                }
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn instance(&self, id: &str) -> AwsResult<Option<Instance>> {
        let page = or_missing(sdk!(
            "ec2:DescribeInstances",
            self.ec2.describe_instances().instance_ids(id).send()
        ))?;
        page.and_then(|page| {
            page.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .next()
                .map(to_instance)
        })
        .transpose()
    }

    async fn subnets(&self, vpc_id: &str) -> AwsResult<Vec<Subnet>> {
        let out = sdk!(
            "ec2:DescribeSubnets",
            self.ec2
                .describe_subnets()
                .filters(filter("vpc-id", &[vpc_id]))
                .send()
        )?;
        Ok(out.subnets().iter().map(to_subnet).collect())
    }

    async fn subnet(&self, subnet_id: &str) -> AwsResult<Option<Subnet>> {
        let out = or_missing(sdk!(
            "ec2:DescribeSubnets",
            self.ec2.describe_subnets().subnet_ids(subnet_id).send()
        ))?;
        Ok(out.and_then(|out| out.subnets().first().map(to_subnet)))
    }

    async fn route_tables(&self, vpc_id: &str) -> AwsResult<Vec<RouteTable>> {
        let out = sdk!(
            "ec2:DescribeRouteTables",
            self.ec2
                .describe_route_tables()
                .filters(filter("vpc-id", &[vpc_id]))
                .send()
        )?;
        Ok(out
            .route_tables()
            .iter()
            .map(|t| RouteTable {
                id: t.route_table_id().unwrap_or_default().to_string(),
                is_main: t.associations().iter().any(|a| a.main() == Some(true)),
                subnet_ids: t
                    .associations()
                    .iter()
                    .filter_map(|a| a.subnet_id().map(str::to_string))
                    .collect(),
                default_route_targets: t
                    .routes()
                    .iter()
                    .filter(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
                    .filter(|r| r.state().map(|s| s.as_str()) != Some("blackhole"))
                    .filter_map(|r| {
                        r.gateway_id()
                            .or(r.nat_gateway_id())
                            .or(r.transit_gateway_id())
                            .or(r.network_interface_id())
                            .or(r.vpc_peering_connection_id())
                            .map(str::to_string)
                    })
                    .collect(),
            })
            .collect())
    }

    async fn vpc_cidrs(&self, vpc_id: &str) -> AwsResult<Vec<String>> {
        let out = sdk!(
            "ec2:DescribeVpcs",
            self.ec2.describe_vpcs().vpc_ids(vpc_id).send()
        )?;
        let mut cidrs = Vec::new();
        for v in out.vpcs() {
            for a in v.cidr_block_association_set() {
                if let Some(c) = a.cidr_block() {
                    cidrs.push(c.to_string());
                }
            }
            if cidrs.is_empty()
                && let Some(c) = v.cidr_block()
            {
                cidrs.push(c.to_string());
            }
        }
        Ok(cidrs)
    }

    async fn security_groups(&self, ids: &[String]) -> AwsResult<Vec<SecurityGroup>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = sdk!(
            "ec2:DescribeSecurityGroups",
            self.ec2
                .describe_security_groups()
                .set_group_ids(Some(ids.to_vec()))
                .send()
        )?;
        Ok(out
            .security_groups()
            .iter()
            .map(to_security_group)
            .collect())
    }

    async fn security_groups_by_tag(
        &self,
        key: &str,
        value: &str,
    ) -> AwsResult<Vec<SecurityGroup>> {
        let out = sdk!(
            "ec2:DescribeSecurityGroups",
            self.ec2
                .describe_security_groups()
                .filters(filter(&format!("tag:{key}"), &[value]))
                .send()
        )?;
        Ok(out
            .security_groups()
            .iter()
            .map(to_security_group)
            .collect())
    }

    async fn rules_by_tag(&self, key: &str, value: &str) -> AwsResult<Vec<TaggedRule>> {
        let out = sdk!(
            "ec2:DescribeSecurityGroupRules",
            self.ec2
                .describe_security_group_rules()
                .filters(filter(&format!("tag:{key}"), &[value]))
                .send()
        )?;
        Ok(out
            .security_group_rules()
            .iter()
            .filter(|r| r.is_egress() != Some(true))
            .filter_map(|r| {
                Some(TaggedRule {
                    rule_id: r.security_group_rule_id()?.to_string(),
                    group_id: r.group_id()?.to_string(),
                    referenced_group: r
                        .referenced_group_info()
                        .and_then(|g| g.group_id())
                        .map(str::to_string),
                })
            })
            .collect())
    }

    async fn ingress_rules(&self, group_id: &str) -> AwsResult<Vec<GroupRule>> {
        let mut rules = Vec::new();
        let mut token = None;
        loop {
            let out = sdk!(
                "ec2:DescribeSecurityGroupRules",
                self.ec2
                    .describe_security_group_rules()
                    .filters(filter("group-id", &[group_id]))
                    .set_next_token(token)
                    .send()
            )?;
            for r in out.security_group_rules() {
                if r.is_egress() == Some(true) || r.group_id() != Some(group_id) {
                    continue;
                }
                let Some(id) = r.security_group_rule_id() else {
                    continue;
                };
                rules.push(GroupRule {
                    rule_id: id.to_string(),
                    protocol: r.ip_protocol().unwrap_or("-1").to_string(),
                    from_port: r.from_port(),
                    to_port: r.to_port(),
                    cidr: r.cidr_ipv4().map(str::to_string),
                    description: r.description().map(str::to_string),
                });
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(rules);
            }
        }
    }

    async fn key_pairs_by_tag(&self, key: &str, value: &str) -> AwsResult<Vec<KeyPair>> {
        let out = sdk!(
            "ec2:DescribeKeyPairs",
            self.ec2
                .describe_key_pairs()
                .filters(filter(&format!("tag:{key}"), &[value]))
                .send()
        )?;
        Ok(out
            .key_pairs()
            .iter()
            .map(|k| KeyPair {
                name: k.key_name().unwrap_or_default().to_string(),
                id: k.key_pair_id().map(str::to_string),
                tags: from_ec2_tags(k.tags()),
            })
            .collect())
    }

    async fn ssm_parameter(&self, name: &str) -> AwsResult<Option<String>> {
        let out = or_missing(sdk!(
            "ssm:GetParameter",
            self.ssm.get_parameter().name(name).send()
        ))?;
        Ok(out.and_then(|out| out.parameter().and_then(|p| p.value()).map(str::to_string)))
    }

    async fn image(&self, id: &str) -> AwsResult<Option<Image>> {
        let out = or_missing(sdk!(
            "ec2:DescribeImages",
            self.ec2.describe_images().image_ids(id).send()
        ))?;
        Ok(out.and_then(|out| {
            out.images().first().map(|i| Image {
                id: i.image_id().unwrap_or(id).to_string(),
                architecture: i.architecture().map(|a| a.as_str().to_string()),
                root_device_name: i.root_device_name().map(str::to_string),
            })
        }))
    }

    async fn console_output(&self, instance_id: &str) -> AwsResult<String> {
        let out = sdk!(
            "ec2:GetConsoleOutput",
            self.ec2
                .get_console_output()
                .instance_id(instance_id)
                .latest(true)
                .send()
        )?;
        let raw = out.output().unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|_| raw.to_string());
        Ok(decoded)
    }

    async fn roles_under(&self, path: &str) -> AwsResult<Vec<IamEntity>> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let page = sdk!(
                "iam:ListRoles",
                self.iam
                    .list_roles()
                    .path_prefix(path)
                    .set_marker(marker)
                    .send()
            )?;
            for r in page.roles() {
                // ListRoles does not return tags; GetRole does.
                let Some(g) = or_missing(sdk!(
                    "iam:GetRole",
                    self.iam.get_role().role_name(r.role_name()).send()
                ))?
                else {
                    continue;
                };
                let tags = g
                    .role()
                    .map(|r| from_iam_tags(r.tags()))
                    .unwrap_or_default();
                out.push(IamEntity {
                    name: r.role_name().to_string(),
                    arn: r.arn().to_string(),
                    path: r.path().to_string(),
                    tags,
                });
            }
            marker = page.marker().map(str::to_string);
            if !page.is_truncated() || marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn instance_profiles_under(&self, path: &str) -> AwsResult<Vec<IamEntity>> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let page = sdk!(
                "iam:ListInstanceProfiles",
                self.iam
                    .list_instance_profiles()
                    .path_prefix(path)
                    .set_marker(marker)
                    .send()
            )?;
            for p in page.instance_profiles() {
                let Some(g) = or_missing(sdk!(
                    "iam:GetInstanceProfile",
                    self.iam
                        .get_instance_profile()
                        .instance_profile_name(p.instance_profile_name())
                        .send()
                ))?
                else {
                    continue;
                };
                let tags = g
                    .instance_profile()
                    .map(|p| from_iam_tags(p.tags()))
                    .unwrap_or_default();
                out.push(IamEntity {
                    name: p.instance_profile_name().to_string(),
                    arn: p.arn().to_string(),
                    path: p.path().to_string(),
                    tags,
                });
            }
            marker = page.marker().map(str::to_string);
            if !page.is_truncated() || marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn role_policies(&self, role: &str) -> AwsResult<(Vec<String>, Vec<String>)> {
        let inline = sdk!(
            "iam:ListRolePolicies",
            self.iam.list_role_policies().role_name(role).send()
        )?;
        let attached = sdk!(
            "iam:ListAttachedRolePolicies",
            self.iam
                .list_attached_role_policies()
                .role_name(role)
                .send()
        )?;
        Ok((
            inline.policy_names().to_vec(),
            attached
                .attached_policies()
                .iter()
                .filter_map(|p| p.policy_arn().map(str::to_string))
                .collect(),
        ))
    }

    async fn profile_roles(&self, profile: &str) -> AwsResult<Vec<String>> {
        let out = sdk!(
            "iam:GetInstanceProfile",
            self.iam
                .get_instance_profile()
                .instance_profile_name(profile)
                .send()
        )?;
        Ok(out
            .instance_profile()
            .map(|p| {
                p.roles()
                    .iter()
                    .map(|r| r.role_name().to_string())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn vpc_endpoints(&self, vpc_id: &str) -> AwsResult<Vec<VpcEndpoint>> {
        let out = sdk!(
            "ec2:DescribeVpcEndpoints",
            self.ec2
                .describe_vpc_endpoints()
                .filters(filter("vpc-id", &[vpc_id]))
                .send()
        )?;
        Ok(out
            .vpc_endpoints()
            .iter()
            .map(|e| VpcEndpoint {
                id: e.vpc_endpoint_id().unwrap_or_default().to_string(),
                service: e.service_name().unwrap_or_default().to_string(),
                kind: e
                    .vpc_endpoint_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                state: e
                    .state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                subnet_ids: e.subnet_ids().to_vec(),
                route_table_ids: e.route_table_ids().to_vec(),
                private_dns: e.private_dns_enabled().unwrap_or(false),
                security_group_ids: e
                    .groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_string))
                    .collect(),
                policy: e.policy_document().map(str::to_string),
                tags: from_ec2_tags(e.tags()),
            })
            .collect())
    }

    async fn vpc_dns(&self, vpc_id: &str) -> AwsResult<(bool, bool)> {
        let support = sdk!(
            "ec2:DescribeVpcAttribute",
            self.ec2
                .describe_vpc_attribute()
                .vpc_id(vpc_id)
                .attribute(ec2t::VpcAttributeName::EnableDnsSupport)
                .send()
        )?;
        let hostnames = sdk!(
            "ec2:DescribeVpcAttribute",
            self.ec2
                .describe_vpc_attribute()
                .vpc_id(vpc_id)
                .attribute(ec2t::VpcAttributeName::EnableDnsHostnames)
                .send()
        )?;
        Ok((
            support
                .enable_dns_support()
                .and_then(|v| v.value())
                .unwrap_or(false),
            hostnames
                .enable_dns_hostnames()
                .and_then(|v| v.value())
                .unwrap_or(false),
        ))
    }

    async fn create_vpc_endpoint(&self, spec: &EndpointSpec) -> AwsResult<String> {
        let mut req = self
            .ec2
            .create_vpc_endpoint()
            .vpc_id(&spec.vpc_id)
            .service_name(&spec.service)
            .tag_specifications(tag_spec(ec2t::ResourceType::VpcEndpoint, &spec.tags));
        if spec.interface {
            req = req
                .vpc_endpoint_type(ec2t::VpcEndpointType::Interface)
                .private_dns_enabled(true)
                .set_subnet_ids(Some(spec.subnet_ids.clone()))
                .set_security_group_ids(Some(spec.security_group_ids.clone()));
        } else {
            req = req
                .vpc_endpoint_type(ec2t::VpcEndpointType::Gateway)
                .set_route_table_ids(Some(spec.route_table_ids.clone()));
        }
        let out = sdk!("ec2:CreateVpcEndpoint", req.send())?;
        Ok(out
            .vpc_endpoint()
            .and_then(|e| e.vpc_endpoint_id())
            .unwrap_or_default()
            .to_string())
    }

    async fn import_key_pair(
        &self,
        name: &str,
        public_key: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        let out = sdk!(
            "ec2:ImportKeyPair",
            self.ec2
                .import_key_pair()
                .key_name(name)
                .public_key_material(Blob::new(public_key.as_bytes()))
                .tag_specifications(tag_spec(ec2t::ResourceType::KeyPair, tags))
                .send()
        )?;
        Ok(out.key_pair_id().unwrap_or(name).to_string())
    }

    async fn delete_key_pair(&self, name: &str) -> AwsResult<()> {
        sdk!(
            "ec2:DeleteKeyPair",
            self.ec2.delete_key_pair().key_name(name).send()
        )?;
        Ok(())
    }

    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        let out = sdk!(
            "ec2:CreateSecurityGroup",
            self.ec2
                .create_security_group()
                .group_name(name)
                .description(description)
                .vpc_id(vpc_id)
                .tag_specifications(tag_spec(ec2t::ResourceType::SecurityGroup, tags))
                .send()
        )?;
        Ok(out.group_id().unwrap_or_default().to_string())
    }

    async fn delete_security_group(&self, id: &str) -> AwsResult<()> {
        sdk!(
            "ec2:DeleteSecurityGroup",
            self.ec2.delete_security_group().group_id(id).send()
        )?;
        Ok(())
    }

    async fn set_egress(&self, group_id: &str, rules: &[(i32, String)]) -> AwsResult<()> {
        // A new group's default egress allows everything, to 0.0.0.0/0 and, in a VPC with IPv6,
        // to ::/0. A default rule that is already gone (or never was) is fine; a group that is
        // not there (a new group not visible yet) is an error for the caller to retry.
        let v4 = ec2t::IpPermission::builder()
            .ip_protocol("-1")
            .ip_ranges(ec2t::IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .build();
        let v6 = ec2t::IpPermission::builder()
            .ip_protocol("-1")
            .ipv6_ranges(ec2t::Ipv6Range::builder().cidr_ipv6("::/0").build())
            .build();
        for all in [v4, v6] {
            match sdk!(
                "ec2:RevokeSecurityGroupEgress",
                self.ec2
                    .revoke_security_group_egress()
                    .group_id(group_id)
                    .ip_permissions(all)
                    .send()
            ) {
                Err(e) if e.is_missing_rule() => {}
                other => {
                    other?;
                }
            }
        }
        let permissions: Vec<_> = rules
            .iter()
            .map(|(port, cidr)| {
                ec2t::IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(*port)
                    .to_port(*port)
                    .ip_ranges(ec2t::IpRange::builder().cidr_ip(cidr).build())
                    .build()
            })
            .collect();
        // Rules already there (a retry after a lost response) are fine; the caller reads the
        // group back.
        match sdk!(
            "ec2:AuthorizeSecurityGroupEgress",
            self.ec2
                .authorize_security_group_egress()
                .group_id(group_id)
                .set_ip_permissions(Some(permissions))
                .send()
        ) {
            Err(e) if e.is_already_exists() => Ok(()),
            other => other.map(drop),
        }
    }

    async fn authorize_ingress(
        &self,
        group_id: &str,
        port: i32,
        source: &Source,
        description: &str,
        tags: &[Tag],
    ) -> AwsResult<Vec<String>> {
        let mut permission = ec2t::IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(port)
            .to_port(port);
        permission = match source {
            Source::Cidr(c) => permission.ip_ranges(
                ec2t::IpRange::builder()
                    .cidr_ip(c)
                    .description(description)
                    .build(),
            ),
            Source::Group(g) => permission.user_id_group_pairs(
                ec2t::UserIdGroupPair::builder()
                    .group_id(g)
                    .description(description)
                    .build(),
            ),
            Source::PrefixList(p) => permission.prefix_list_ids(
                ec2t::PrefixListId::builder()
                    .prefix_list_id(p)
                    .description(description)
                    .build(),
            ),
        };
        // Untagged rules need no ec2:CreateTags (a teammate's `allow` has none).
        let tagging =
            (!tags.is_empty()).then(|| vec![tag_spec(ec2t::ResourceType::SecurityGroupRule, tags)]);
        let out = sdk!(
            "ec2:AuthorizeSecurityGroupIngress",
            self.ec2
                .authorize_security_group_ingress()
                .group_id(group_id)
                .ip_permissions(permission.build())
                .set_tag_specifications(tagging)
                .send()
        )?;
        Ok(out
            .security_group_rules()
            .iter()
            .filter_map(|r| r.security_group_rule_id().map(str::to_string))
            .collect())
    }

    async fn revoke_ingress(&self, group_id: &str, rule_ids: &[String]) -> AwsResult<()> {
        sdk!(
            "ec2:RevokeSecurityGroupIngress",
            self.ec2
                .revoke_security_group_ingress()
                .group_id(group_id)
                .set_security_group_rule_ids(Some(rule_ids.to_vec()))
                .send()
        )?;
        Ok(())
    }

    async fn create_role(
        &self,
        name: &str,
        path: &str,
        trust_policy: &str,
        description: &str,
        boundary: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        let out = sdk!(
            "iam:CreateRole",
            self.iam
                .create_role()
                .role_name(name)
                .path(path)
                .assume_role_policy_document(trust_policy)
                .description(description)
                .permissions_boundary(boundary)
                .set_tags(Some(iam_tags(tags)))
                .send()
        )?;
        Ok(out.role().map(|r| r.arn().to_string()).unwrap_or_default())
    }

    async fn policy_exists(&self, arn: &str) -> AwsResult<bool> {
        let out = or_missing(sdk!(
            "iam:GetPolicy",
            self.iam.get_policy().policy_arn(arn).send()
        ))?;
        Ok(out.is_some())
    }

    async fn instance_profile(&self, name: &str) -> AwsResult<Option<IamEntity>> {
        let out = or_missing(sdk!(
            "iam:GetInstanceProfile",
            self.iam
                .get_instance_profile()
                .instance_profile_name(name)
                .send()
        ))?;
        Ok(out.and_then(|o| {
            o.instance_profile().map(|p| IamEntity {
                name: p.instance_profile_name().to_string(),
                arn: p.arn().to_string(),
                path: p.path().to_string(),
                tags: from_iam_tags(p.tags()),
            })
        }))
    }

    async fn delete_role(&self, name: &str) -> AwsResult<()> {
        sdk!(
            "iam:DeleteRole",
            self.iam.delete_role().role_name(name).send()
        )?;
        Ok(())
    }

    async fn put_role_policy(&self, role: &str, name: &str, document: &str) -> AwsResult<()> {
        sdk!(
            "iam:PutRolePolicy",
            self.iam
                .put_role_policy()
                .role_name(role)
                .policy_name(name)
                .policy_document(document)
                .send()
        )?;
        Ok(())
    }

    async fn delete_role_policy(&self, role: &str, name: &str) -> AwsResult<()> {
        sdk!(
            "iam:DeleteRolePolicy",
            self.iam
                .delete_role_policy()
                .role_name(role)
                .policy_name(name)
                .send()
        )?;
        Ok(())
    }

    async fn attach_role_policy(&self, role: &str, policy_arn: &str) -> AwsResult<()> {
        sdk!(
            "iam:AttachRolePolicy",
            self.iam
                .attach_role_policy()
                .role_name(role)
                .policy_arn(policy_arn)
                .send()
        )?;
        Ok(())
    }

    async fn detach_role_policy(&self, role: &str, policy_arn: &str) -> AwsResult<()> {
        sdk!(
            "iam:DetachRolePolicy",
            self.iam
                .detach_role_policy()
                .role_name(role)
                .policy_arn(policy_arn)
                .send()
        )?;
        Ok(())
    }

    async fn create_instance_profile(
        &self,
        name: &str,
        path: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        let out = sdk!(
            "iam:CreateInstanceProfile",
            self.iam
                .create_instance_profile()
                .instance_profile_name(name)
                .path(path)
                .set_tags(Some(iam_tags(tags)))
                .send()
        )?;
        Ok(out
            .instance_profile()
            .map(|p| p.arn().to_string())
            .unwrap_or_default())
    }

    async fn delete_instance_profile(&self, name: &str) -> AwsResult<()> {
        sdk!(
            "iam:DeleteInstanceProfile",
            self.iam
                .delete_instance_profile()
                .instance_profile_name(name)
                .send()
        )?;
        Ok(())
    }

    async fn add_role_to_instance_profile(&self, profile: &str, role: &str) -> AwsResult<()> {
        sdk!(
            "iam:AddRoleToInstanceProfile",
            self.iam
                .add_role_to_instance_profile()
                .instance_profile_name(profile)
                .role_name(role)
                .send()
        )?;
        Ok(())
    }

    async fn remove_role_from_instance_profile(&self, profile: &str, role: &str) -> AwsResult<()> {
        sdk!(
            "iam:RemoveRoleFromInstanceProfile",
            self.iam
                .remove_role_from_instance_profile()
                .instance_profile_name(profile)
                .role_name(role)
                .send()
        )?;
        Ok(())
    }

    async fn run_instance(&self, spec: &LaunchSpec) -> AwsResult<String> {
        let user_data = base64::engine::general_purpose::STANDARD.encode(&spec.user_data);
        let out = sdk!(
            "ec2:RunInstances",
            self.ec2
                .run_instances()
                .image_id(&spec.ami)
                .instance_type(ec2t::InstanceType::from(spec.instance_type.as_str()))
                .min_count(1)
                .max_count(1)
                .key_name(&spec.key_name)
                .iam_instance_profile(
                    ec2t::IamInstanceProfileSpecification::builder()
                        .arn(&spec.instance_profile_arn)
                        .build()
                )
                .metadata_options(
                    ec2t::InstanceMetadataOptionsRequest::builder()
                        .http_tokens(ec2t::HttpTokensState::Required)
                        .http_endpoint(ec2t::InstanceMetadataEndpointState::Enabled)
                        .http_put_response_hop_limit(1)
                        .build()
                )
                .block_device_mappings(
                    ec2t::BlockDeviceMapping::builder()
                        .device_name(&spec.root_device_name)
                        .ebs(
                            ec2t::EbsBlockDevice::builder()
                                .volume_type(ec2t::VolumeType::Gp3)
                                .volume_size(spec.root_volume_gib)
                                .encrypted(true)
                                .delete_on_termination(true)
                                .build()
                        )
                        .build()
                )
                .network_interfaces(
                    ec2t::InstanceNetworkInterfaceSpecification::builder()
                        .device_index(0)
                        .subnet_id(&spec.subnet_id)
                        .groups(&spec.security_group_id)
                        .associate_public_ip_address(true)
                        .delete_on_termination(true)
                        .build()
                )
                .instance_initiated_shutdown_behavior(ec2t::ShutdownBehavior::Stop)
                .user_data(user_data)
                .tag_specifications(tag_spec(ec2t::ResourceType::Instance, &spec.tags))
                .tag_specifications(tag_spec(ec2t::ResourceType::Volume, &spec.tags))
                .send()
        )?;
        out.instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(str::to_string)
            .ok_or_else(|| AwsError::Service {
                action: "ec2:RunInstances".into(),
                code: "NoInstance".into(),
                message: "the response named no instance".into(),
            })
    }

    async fn send_ssh_public_key(
        &self,
        instance_id: &str,
        os_user: &str,
        public_key: &str,
    ) -> AwsResult<()> {
        let out = sdk!(
            "ec2-instance-connect:SendSSHPublicKey",
            self.eic
                .send_ssh_public_key()
                .instance_id(instance_id)
                .instance_os_user(os_user)
                .ssh_public_key(public_key)
                .send()
        )?;
        if out.success() {
            Ok(())
        } else {
            Err(AwsError::Service {
                action: "ec2-instance-connect:SendSSHPublicKey".into(),
                code: "NotSuccessful".into(),
                message: "the answer did not report success".into(),
            })
        }
    }

    async fn start_instance(&self, id: &str) -> AwsResult<()> {
        sdk!(
            "ec2:StartInstances",
            self.ec2.start_instances().instance_ids(id).send()
        )?;
        Ok(())
    }

    async fn terminate_instance(&self, id: &str) -> AwsResult<()> {
        sdk!(
            "ec2:TerminateInstances",
            self.ec2.terminate_instances().instance_ids(id).send()
        )?;
        Ok(())
    }
}

fn to_subnet(s: &ec2t::Subnet) -> Subnet {
    Subnet {
        id: s.subnet_id().unwrap_or_default().to_string(),
        vpc_id: s.vpc_id().unwrap_or_default().to_string(),
        availability_zone: s.availability_zone().unwrap_or_default().to_string(),
        cidr: s.cidr_block().unwrap_or_default().to_string(),
        map_public_ip_on_launch: s.map_public_ip_on_launch().unwrap_or(false),
        tags: from_ec2_tags(s.tags()),
    }
}
