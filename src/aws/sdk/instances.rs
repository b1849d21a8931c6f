//! [`Instances`] through the AWS SDK.

use async_trait::async_trait;
use aws_sdk_ec2::primitives::Blob;
use base64::Engine;

use super::*;

#[async_trait]
impl Instances for SdkCloud {
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
