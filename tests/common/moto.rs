//! The moto server each test starts on loopback, the SDK clients that read and seed it, and the
//! VPC, head node and cluster a test's world starts from.

use super::*;

pub struct Moto {
    child: Child,
    pub url: String,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts a moto server on a free loopback port, or returns None (skip) outside CI.
    pub fn start() -> Option<Moto> {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Option<Moto> {
        require_tool("moto_server", &[venv().join("bin/moto_server")])?;
        // moto's own server, its name checks made atomic as EC2's are (tests/moto_server.py).
        let launcher = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/moto_server.py");
        for _attempt in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(venv().join("bin/python"));
            cmd.arg(launcher)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().expect("moto_server starts");
            let mut moto = Moto {
                child,
                url: format!("http://127.0.0.1:{port}"),
                port,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(moto);
                }
                if let Ok(Some(_)) = moto.child.try_wait() {
                    break; // lost the port race; try another
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = moto.child.kill();
        }
        panic!("moto_server did not start");
    }

    pub async fn clients(&self) -> Clients {
        self.clients_with("testing", "testing").await
    }

    pub async fn clients_with(&self, key: &str, secret: &str) -> Clients {
        self.clients_for(REGION, key, secret).await
    }

    pub async fn clients_in(&self, region: &str) -> Clients {
        self.clients_for(region, "testing", "testing").await
    }

    async fn clients_for(&self, region: &str, key: &str, secret: &str) -> Clients {
        let c = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                key, secret, None, None, "test",
            ))
            .load()
            .await;
        Clients {
            ec2: aws_sdk_ec2::Client::new(&c),
            iam: aws_sdk_iam::Client::new(&c),
            ssm: aws_sdk_ssm::Client::new(&c),
        }
    }
}

pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub iam: aws_sdk_iam::Client,
    pub ssm: aws_sdk_ssm::Client,
}

/// The network of a ParallelCluster deployment in a subnet without internet.
#[derive(Debug, Clone)]
pub struct Lab {
    pub vpc: String,
    pub public_subnet: String,
    pub private_subnet: String,
    pub head_sg: String,
    pub head_node: String,
    pub head_ip: String,
}

fn tag(k: &str, v: &str) -> ec2t::Tag {
    ec2t::Tag::builder().key(k).value(v).build()
}

fn tags(resource: ec2t::ResourceType, tags: Vec<ec2t::Tag>) -> ec2t::TagSpecification {
    ec2t::TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(tags))
        .build()
}

pub struct LabOptions {
    /// The head node group admits tcp 22 only from this CIDR (restricted `AllowedIps`).
    pub head_ssh_from: &'static str,
    pub with_internet_gateway: bool,
    pub cidr: &'static str,
    pub cluster: &'static str,
    pub head_state_stopped: bool,
    /// Third octets of the public and private subnets (the head node is `.10` of the private one).
    pub public_third: u8,
    pub private_third: u8,
    /// The head node's architecture: its AMI is AL2023's for it, from AWS's public parameter.
    pub head_arch: &'static str,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            head_ssh_from: "203.0.113.0/24",
            with_internet_gateway: true,
            cidr: "10.20",
            cluster: CLUSTER,
            head_state_stopped: false,
            public_third: 1,
            private_third: 2,
            head_arch: "x86_64",
        }
    }
}

impl Clients {
    /// What an administrator does once per account before anyone runs `up`: the permissions
    /// boundary from `bastion policy boundary`, as the managed policy bastion names.
    pub async fn create_boundary(&self) {
        let t = bastion::policy::Target {
            partition: "aws",
            account: "123456789012",
            region: REGION,
        };
        let r = self
            .iam
            .create_policy()
            .policy_name(bastion::policy::BOUNDARY_NAME)
            .path("/bastion/")
            .policy_document(bastion::policy::boundary_policy(&t).unwrap())
            .send()
            .await;
        if let Err(e) = r {
            let text = format!("{e:?}");
            assert!(text.contains("EntityAlreadyExists"), "{text}");
        }
    }

    pub async fn build_lab(&self, o: LabOptions) -> Lab {
        self.create_boundary().await;
        let ec2 = &self.ec2;
        let vpc = ec2
            .create_vpc()
            .cidr_block(format!("{}.0.0/16", o.cidr))
            .send()
            .await
            .unwrap()
            .vpc()
            .unwrap()
            .vpc_id()
            .unwrap()
            .to_string();
        let subnet = |cidr: String| {
            let vpc = vpc.clone();
            async move {
                ec2.create_subnet()
                    .vpc_id(vpc)
                    .cidr_block(cidr)
                    .availability_zone(format!(
                        "{}a",
                        ec2.config()
                            .region()
                            .map(|r| r.to_string())
                            .unwrap_or_default()
                    ))
                    .send()
                    .await
                    .unwrap()
                    .subnet()
                    .unwrap()
                    .subnet_id()
                    .unwrap()
                    .to_string()
            }
        };
        for attr in ["support", "hostnames"] {
            let req = ec2.modify_vpc_attribute().vpc_id(&vpc);
            let on = ec2t::AttributeBooleanValue::builder().value(true).build();
            let req = if attr == "support" {
                req.enable_dns_support(on)
            } else {
                req.enable_dns_hostnames(on)
            };
            req.send().await.unwrap();
        }
        let public_subnet = subnet(format!("{}.{}.0/24", o.cidr, o.public_third)).await;
        let private_subnet = subnet(format!("{}.{}.0/24", o.cidr, o.private_third)).await;

        let public_rt = ec2
            .create_route_table()
            .vpc_id(&vpc)
            .send()
            .await
            .unwrap()
            .route_table()
            .unwrap()
            .route_table_id()
            .unwrap()
            .to_string();
        if o.with_internet_gateway {
            let igw = ec2
                .create_internet_gateway()
                .send()
                .await
                .unwrap()
                .internet_gateway()
                .unwrap()
                .internet_gateway_id()
                .unwrap()
                .to_string();
            ec2.attach_internet_gateway()
                .internet_gateway_id(&igw)
                .vpc_id(&vpc)
                .send()
                .await
                .unwrap();
            ec2.create_route()
                .route_table_id(&public_rt)
                .destination_cidr_block("0.0.0.0/0")
                .gateway_id(&igw)
                .send()
                .await
                .unwrap();
        }
        ec2.associate_route_table()
            .route_table_id(&public_rt)
            .subnet_id(&public_subnet)
            .send()
            .await
            .unwrap();
        let private_rt = ec2
            .create_route_table()
            .vpc_id(&vpc)
            .send()
            .await
            .unwrap()
            .route_table()
            .unwrap()
            .route_table_id()
            .unwrap()
            .to_string();
        ec2.associate_route_table()
            .route_table_id(&private_rt)
            .subnet_id(&private_subnet)
            .send()
            .await
            .unwrap();

        let head_ip = format!("{}.{}.10", o.cidr, o.private_third);
        let (head_sg, head_node) = self
            .add_head_node(
                &vpc,
                &private_subnet,
                o.cluster,
                &head_ip,
                o.head_ssh_from,
                o.head_arch,
            )
            .await;
        if o.head_state_stopped {
            ec2.stop_instances()
                .instance_ids(&head_node)
                .send()
                .await
                .unwrap();
        }
        Lab {
            vpc,
            public_subnet,
            private_subnet,
            head_sg,
            head_node,
            head_ip,
        }
    }

    /// A ParallelCluster head node of `cluster` at `ip` in `subnet` of `vpc`, with its own
    /// `HeadNodeSecurityGroup` admitting tcp 22 from `ssh_from`: the group and the instance.
    pub async fn add_head_node(
        &self,
        vpc: &str,
        subnet: &str,
        cluster: &str,
        ip: &str,
        ssh_from: &str,
        arch: &str,
    ) -> (String, String) {
        let ec2 = &self.ec2;
        let head_sg = ec2
            .create_security_group()
            .group_name(format!("{}-HeadNodeSecurityGroup", cluster))
            .description("head node")
            .vpc_id(vpc)
            .tag_specifications(tags(
                ec2t::ResourceType::SecurityGroup,
                vec![
                    tag("aws:cloudformation:stack-name", cluster),
                    tag("aws:cloudformation:logical-id", "HeadNodeSecurityGroup"),
                ],
            ))
            .send()
            .await
            .unwrap()
            .group_id()
            .unwrap()
            .to_string();
        ec2.authorize_security_group_ingress()
            .group_id(&head_sg)
            .ip_permissions(
                ec2t::IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(22)
                    .to_port(22)
                    .ip_ranges(ec2t::IpRange::builder().cidr_ip(ssh_from).build())
                    .build(),
            )
            .send()
            .await
            .unwrap();

        let ami = match self
            .ssm
            .get_parameter()
            .name(format!(
                "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{}",
                arch
            ))
            .send()
            .await
        {
            Ok(p) => p.parameter().and_then(|p| p.value()).unwrap().to_string(),
            // Regions where moto has no such parameter: any AMI moto knows there.
            Err(_) => self.ec2.describe_images().send().await.unwrap().images()[0]
                .image_id()
                .unwrap()
                .to_string(),
        };
        let run = ec2
            .run_instances()
            .image_id(ami)
            .instance_type(ec2t::InstanceType::C5Xlarge)
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
            .private_ip_address(ip)
            .security_group_ids(&head_sg)
            .key_name("cluster-key")
            .tag_specifications(tags(
                ec2t::ResourceType::Instance,
                vec![
                    tag("Name", "HeadNode"),
                    tag("aws:cloudformation:stack-name", cluster),
                    tag("parallelcluster:cluster-name", cluster),
                    tag("parallelcluster:node-type", "HeadNode"),
                    tag("parallelcluster:version", "3.16.1"),
                    tag(
                        "parallelcluster:attributes",
                        "alinux2023, slurm, 3.16.1, x86_64",
                    ),
                ],
            ))
            .send()
            .await
            .unwrap();
        let head_node = run.instances()[0].instance_id().unwrap().to_string();
        (head_sg, head_node)
    }

    /// Live instances tagged with the bastion tag for `cluster`.
    pub async fn bastion_instances(&self, cluster: &str) -> Vec<ec2t::Instance> {
        let out = self
            .ec2
            .describe_instances()
            .filters(filter("tag:bastion:cluster", cluster))
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances().to_vec())
            .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
            .collect()
    }

    /// Everything in AWS that carries `bastion:cluster=<cluster>` or lives under `/bastion/`.
    pub async fn leftovers(&self, cluster: &str) -> Vec<String> {
        let mut left = Vec::new();
        for i in self.bastion_instances(cluster).await {
            left.push(format!("instance {}", i.instance_id().unwrap_or_default()));
        }
        let f = filter("tag:bastion:cluster", cluster);
        let sgs = self
            .ec2
            .describe_security_groups()
            .filters(f.clone())
            .send()
            .await
            .unwrap();
        for g in sgs.security_groups() {
            left.push(format!(
                "security group {}",
                g.group_id().unwrap_or_default()
            ));
        }
        let rules = self
            .ec2
            .describe_security_group_rules()
            .filters(f.clone())
            .send()
            .await
            .unwrap();
        for r in rules.security_group_rules() {
            left.push(format!(
                "rule {}",
                r.security_group_rule_id().unwrap_or_default()
            ));
        }
        // The root volume carries the instance's tags; it must go with the instance.
        let volumes = self
            .ec2
            .describe_volumes()
            .filters(f.clone())
            .send()
            .await
            .unwrap();
        for v in volumes.volumes() {
            left.push(format!("volume {}", v.volume_id().unwrap_or_default()));
        }
        let keys = self
            .ec2
            .describe_key_pairs()
            .filters(f)
            .send()
            .await
            .unwrap();
        for k in keys.key_pairs() {
            left.push(format!("key pair {}", k.key_name().unwrap_or_default()));
        }
        let roles = self
            .iam
            .list_roles()
            .path_prefix("/bastion/")
            .send()
            .await
            .unwrap();
        for r in roles.roles() {
            left.push(format!("role {}", r.role_name()));
        }
        let profiles = self
            .iam
            .list_instance_profiles()
            .path_prefix("/bastion/")
            .send()
            .await
            .unwrap();
        for p in profiles.instance_profiles() {
            left.push(format!("instance profile {}", p.instance_profile_name()));
        }
        left
    }

    /// The route table associated with `subnet`.
    pub async fn route_table_of(&self, subnet: &str) -> String {
        self.ec2
            .describe_route_tables()
            .filters(filter("association.subnet-id", subnet))
            .send()
            .await
            .unwrap()
            .route_tables()[0]
            .route_table_id()
            .unwrap()
            .to_string()
    }

    /// Stops an instance, as the proxy's idle timer does (moto: at once).
    pub async fn stop_instance(&self, id: &str) {
        self.ec2
            .stop_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap();
    }

    pub async fn set_instance_tags(&self, id: &str, kv: &[(&str, &str)]) {
        self.ec2
            .create_tags()
            .resources(id)
            .set_tags(Some(kv.iter().map(|(k, v)| tag(k, v)).collect()))
            .send()
            .await
            .unwrap();
    }

    /// Ingress rules of a group as (port, source) pairs, source a CIDR or a group id.
    pub async fn ingress(&self, group: &str) -> Vec<(i32, String)> {
        let out = self
            .ec2
            .describe_security_groups()
            .group_ids(group)
            .send()
            .await
            .unwrap();
        flatten(
            out.security_groups()
                .iter()
                .flat_map(|g| g.ip_permissions()),
        )
    }

    /// A group's egress, as (port, target group or CIDR), sorted; None when the group is gone.
    pub async fn egress(&self, group: &str) -> Option<Vec<(i32, String)>> {
        let out = self
            .ec2
            .describe_security_groups()
            .group_ids(group)
            .send()
            .await
            .ok()?;
        let g = out.security_groups().first()?;
        Some(flatten(g.ip_permissions_egress()))
    }
}

/// A moto server for this test, or a return where moto is not installed (outside CI only:
/// `Moto::start` fails the test under `CI=true`).
#[macro_export]
macro_rules! moto_or_skip {
    () => {
        match $crate::common::Moto::start() {
            Some(m) => m,
            None => return,
        }
    };
}

/// Permissions as (port, CIDR or group), one per source, sorted.
fn flatten<'a>(
    permissions: impl IntoIterator<Item = &'a ec2t::IpPermission>,
) -> Vec<(i32, String)> {
    let mut rules = Vec::new();
    for p in permissions {
        let port = p.from_port().unwrap_or(-1);
        for r in p.ip_ranges() {
            rules.push((port, r.cidr_ip().unwrap_or_default().to_string()));
        }
        for r in p.user_id_group_pairs() {
            rules.push((port, r.group_id().unwrap_or_default().to_string()));
        }
    }
    rules.sort();
    rules
}

pub fn filter(name: &str, value: &str) -> ec2t::Filter {
    ec2t::Filter::builder().name(name).values(value).build()
}

/// The opening most moto tests share: a moto server, its clients, the default lab, a state dir,
/// and the built binary pointed at them, as `(moto, aws, lab, tmp, b)`. Keep `moto` and `tmp`
/// bound for the test's length (`_moto`, not `_`): dropping them stops the server and removes
/// the state dir.
pub async fn moto_test_start(moto: Moto) -> (Moto, Clients, Lab, tempfile::TempDir, Bastion) {
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let b = Bastion::new(&moto, tmp.path());
    (moto, aws, lab, tmp, b)
}

/// [`moto_test_start`], or the test returns (skipped) where moto cannot start.
#[macro_export]
macro_rules! moto_test {
    () => {
        $crate::common::moto_test_start($crate::moto_or_skip!()).await
    };
}
