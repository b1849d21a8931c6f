//! [`Network`] through the AWS SDK.

use async_trait::async_trait;

use super::*;

#[async_trait]
impl Network for SdkCloud {
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
            .filter_map(|r| {
                Some(TaggedRule {
                    egress: r.is_egress()?,
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

    async fn instance_connect_endpoints(
        &self,
        vpc_id: Option<&str>,
    ) -> AwsResult<Vec<ConnectEndpoint>> {
        let mut found = Vec::new();
        let mut pages = self
            .ec2
            .describe_instance_connect_endpoints()
            .set_filters(vpc_id.map(|v| vec![filter("vpc-id", &[v])]))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| AwsError::from_sdk("ec2:DescribeInstanceConnectEndpoints", e))?;
            found.extend(
                page.instance_connect_endpoints()
                    .iter()
                    .map(to_connect_endpoint),
            );
        }
        Ok(found)
    }

    async fn open_tunnel_url(&self, request: &TunnelRequest) -> AwsResult<String> {
        use aws_credential_types::provider::ProvideCredentials;
        let action = "ec2-instance-connect:OpenTunnel";
        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| AwsError::Credentials {
                message: "no credentials provider is configured".into(),
            })?;
        let credentials =
            provider
                .provide_credentials()
                .await
                .map_err(|e| AwsError::Credentials {
                    message: aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
                })?;
        super::presign::open_tunnel(
            request,
            &credentials,
            &self.region,
            std::time::SystemTime::now(),
        )
        .map_err(|message| AwsError::Service {
            action: action.into(),
            code: "SigningFailed".into(),
            message,
        })
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
        if permissions.is_empty() {
            return Ok(());
        }
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
        // Untagged rules need no ec2:CreateTags (a teammate's `allow` has none).
        let out = sdk!(
            "ec2:AuthorizeSecurityGroupIngress",
            self.ec2
                .authorize_security_group_ingress()
                .group_id(group_id)
                .ip_permissions(permission(port, source, description))
                .set_tag_specifications(rule_tags(tags))
                .send()
        )?;
        Ok(out
            .security_group_rules()
            .iter()
            .filter_map(|r| r.security_group_rule_id().map(str::to_string))
            .collect())
    }

    async fn authorize_egress(
        &self,
        group_id: &str,
        port: i32,
        target: &Source,
        description: &str,
        tags: &[Tag],
    ) -> AwsResult<Vec<String>> {
        let out = sdk!(
            "ec2:AuthorizeSecurityGroupEgress",
            self.ec2
                .authorize_security_group_egress()
                .group_id(group_id)
                .ip_permissions(permission(port, target, description))
                .set_tag_specifications(rule_tags(tags))
                .send()
        )?;
        Ok(out
            .security_group_rules()
            .iter()
            .filter_map(|r| r.security_group_rule_id().map(str::to_string))
            .collect())
    }

    async fn revoke_egress(&self, group_id: &str, rule_ids: &[String]) -> AwsResult<()> {
        sdk!(
            "ec2:RevokeSecurityGroupEgress",
            self.ec2
                .revoke_security_group_egress()
                .group_id(group_id)
                .set_security_group_rule_ids(Some(rule_ids.to_vec()))
                .send()
        )?;
        Ok(())
    }

    async fn create_instance_connect_endpoint(
        &self,
        spec: &ConnectEndpointSpec,
    ) -> AwsResult<ConnectEndpoint> {
        let out = sdk!(
            "ec2:CreateInstanceConnectEndpoint",
            self.ec2
                .create_instance_connect_endpoint()
                .subnet_id(&spec.subnet_id)
                .set_security_group_ids(Some(spec.security_group_ids.clone()))
                .preserve_client_ip(false)
                .client_token(&spec.client_token)
                .tag_specifications(tag_spec(
                    ec2t::ResourceType::InstanceConnectEndpoint,
                    &spec.tags
                ))
                .send()
        )?;
        out.instance_connect_endpoint()
            .map(to_connect_endpoint)
            .ok_or_else(|| AwsError::Service {
                action: "ec2:CreateInstanceConnectEndpoint".into(),
                code: "EmptyResponse".into(),
                message: "AWS answered without the endpoint it created".into(),
            })
    }

    async fn delete_instance_connect_endpoint(&self, id: &str) -> AwsResult<()> {
        sdk!(
            "ec2:DeleteInstanceConnectEndpoint",
            self.ec2
                .delete_instance_connect_endpoint()
                .instance_connect_endpoint_id(id)
                .send()
        )?;
        Ok(())
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
}

/// One tcp port from (ingress) or to (egress) `source`, described.
fn permission(port: i32, source: &Source, description: &str) -> ec2t::IpPermission {
    let permission = ec2t::IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(port)
        .to_port(port);
    match source {
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
    }
    .build()
}

/// A rule's tags, or none at all (an untagged rule needs no `ec2:CreateTags`).
fn rule_tags(tags: &[Tag]) -> Option<Vec<ec2t::TagSpecification>> {
    (!tags.is_empty()).then(|| vec![tag_spec(ec2t::ResourceType::SecurityGroupRule, tags)])
}

fn to_connect_endpoint(e: &ec2t::Ec2InstanceConnectEndpoint) -> ConnectEndpoint {
    ConnectEndpoint {
        id: e
            .instance_connect_endpoint_id()
            .unwrap_or_default()
            .to_string(),
        arn: e
            .instance_connect_endpoint_arn()
            .unwrap_or_default()
            .to_string(),
        vpc_id: e.vpc_id().unwrap_or_default().to_string(),
        subnet_id: e.subnet_id().unwrap_or_default().to_string(),
        state: e
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        state_message: e.state_message().map(str::to_string),
        dns_name: e.dns_name().unwrap_or_default().to_string(),
        fips_dns_name: e.fips_dns_name().map(str::to_string),
        security_group_ids: e.security_group_ids().to_vec(),
        tags: from_ec2_tags(e.tags()),
    }
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
