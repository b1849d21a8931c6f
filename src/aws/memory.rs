//! An AWS held in memory, for the unit tests of the modules above the seam (`teardown`, `proxy`):
//! the narrow traits answered from plain lists, with AWS's own error codes where
//! the code under test acts on them (NotFound, DependencyViolation, DeleteConflict). It records
//! every write, in order, so a test can assert what was removed and in which order. The moto
//! suite stays the truth for the wire; this is for the logic that runs in milliseconds.
//! `tests/contract.rs` runs one scenario on this and on the SDK adapter against moto, so the two
//! cannot drift apart (the `test-double` feature builds it outside unit tests; the binary never
//! uses it).

use std::sync::Mutex;

use async_trait::async_trait;

use super::*;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "eu-west-1";

/// A role: the entity, its inline policy names and its attached policy ARNs.
#[derive(Debug, Clone)]
pub struct Role {
    pub entity: IamEntity,
    pub inline: Vec<String>,
    pub attached: Vec<String>,
}

/// An instance profile and the roles in it.
#[derive(Debug, Clone)]
pub struct Profile {
    pub entity: IamEntity,
    pub roles: Vec<String>,
}

/// A rule on a group, with its tags (`rules_by_tag` finds it by them).
#[derive(Debug, Clone)]
pub struct Rule {
    pub rule: TaggedRule,
    /// The tcp port it covers.
    pub port: i32,
    pub tags: Vec<Tag>,
}

/// What the account holds.
#[derive(Debug, Default, Clone)]
pub struct World {
    pub instances: Vec<Instance>,
    pub groups: Vec<SecurityGroup>,
    pub rules: Vec<Rule>,
    pub key_pairs: Vec<KeyPair>,
    pub roles: Vec<Role>,
    pub profiles: Vec<Profile>,
    pub connect_endpoints: Vec<ConnectEndpoint>,
    /// Every write, in order: `terminate_instance i-...`, `delete_security_group sg-...`.
    pub writes: Vec<String>,
    /// How many ids have been handed out (new ids count on from it).
    pub next_id: u64,
}

impl World {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:017x}", self.next_id)
    }

    fn add_rule(
        &mut self,
        group_id: &str,
        port: i32,
        source: &Source,
        tags: &[Tag],
        egress: bool,
    ) -> String {
        let id = self.id("sgr");
        let referenced_group = match source {
            Source::Group(g) => Some(g.clone()),
            _ => None,
        };
        self.rules.push(Rule {
            rule: TaggedRule {
                rule_id: id.clone(),
                group_id: group_id.into(),
                referenced_group,
                egress,
            },
            port,
            tags: tags.to_vec(),
        });
        id
    }

    fn remove_rules(
        &mut self,
        action: &str,
        group_id: &str,
        rule_ids: &[String],
        egress: bool,
    ) -> AwsResult<()> {
        let before = self.rules.len();
        self.rules.retain(|r| {
            !(r.rule.egress == egress
                && r.rule.group_id == group_id
                && rule_ids.contains(&r.rule.rule_id))
        });
        if self.rules.len() == before {
            return Err(not_found(
                action,
                "InvalidPermission.NotFound",
                &rule_ids.join(","),
            ));
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct Memory {
    world: Mutex<World>,
}

fn not_found(action: &str, code: &str, what: &str) -> AwsError {
    AwsError::NotFound {
        action: action.into(),
        code: code.into(),
        message: format!("{what} does not exist"),
    }
}

fn has_tag(tags: &[Tag], key: &str, value: &str) -> bool {
    tag_value(tags, key) == Some(value)
}

impl Memory {
    pub fn new(world: World) -> Self {
        Memory {
            world: Mutex::new(world),
        }
    }

    /// What the account holds now.
    pub fn world(&self) -> World {
        self.lock().clone()
    }

    /// The account, to change it between calls (as another team would).
    pub fn world_mut(&self) -> std::sync::MutexGuard<'_, World> {
        self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        // A test that panicked while holding it has failed already.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, what: String) -> std::sync::MutexGuard<'_, World> {
        let mut w = self.lock();
        w.writes.push(what);
        w
    }
}

#[async_trait]
impl Account for Memory {
    fn region(&self) -> &str {
        REGION
    }
    async fn identity(&self) -> AwsResult<Identity> {
        Ok(Identity {
            account: ACCOUNT.into(),
            arn: format!("arn:aws:iam::{ACCOUNT}:user/tester"),
            partition: "aws".into(),
        })
    }
}

#[async_trait]
impl Instances for Memory {
    async fn instances_by_tags(
        &self,
        tags: &[(&str, &str)],
        states: &[&str],
    ) -> AwsResult<Vec<Instance>> {
        Ok(self
            .lock()
            .instances
            .iter()
            .filter(|i| tags.iter().all(|(k, v)| has_tag(&i.tags, k, v)))
            .filter(|i| states.contains(&i.state.as_str()))
            .cloned()
            .collect())
    }
    async fn instance(&self, id: &str) -> AwsResult<Option<Instance>> {
        Ok(self.lock().instances.iter().find(|i| i.id == id).cloned())
    }
    async fn key_pairs_by_tag(&self, key: &str, value: &str) -> AwsResult<Vec<KeyPair>> {
        Ok(self
            .lock()
            .key_pairs
            .iter()
            .filter(|k| has_tag(&k.tags, key, value))
            .cloned()
            .collect())
    }
    async fn ssm_parameter(&self, _name: &str) -> AwsResult<Option<String>> {
        Ok(None)
    }
    async fn image(&self, _id: &str) -> AwsResult<Option<Image>> {
        Ok(None)
    }
    async fn console_output(&self, _instance_id: &str) -> AwsResult<String> {
        Ok(String::new())
    }
    async fn import_key_pair(
        &self,
        name: &str,
        _public_key: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        let mut w = self.write(format!("import_key_pair {name}"));
        if w.key_pairs.iter().any(|k| k.name == name) {
            return Err(AwsError::AlreadyExists {
                action: "ec2:ImportKeyPair".into(),
                message: format!("the key pair '{name}' already exists"),
            });
        }
        let id = w.id("key");
        w.key_pairs.push(KeyPair {
            name: name.into(),
            id: Some(id.clone()),
            tags: tags.to_vec(),
        });
        Ok(id)
    }
    async fn delete_key_pair(&self, name: &str) -> AwsResult<()> {
        // DeleteKeyPair succeeds whether or not the key pair exists.
        self.write(format!("delete_key_pair {name}"))
            .key_pairs
            .retain(|k| k.name != name);
        Ok(())
    }
    async fn run_instance(&self, spec: &LaunchSpec) -> AwsResult<String> {
        let mut w = self.write(format!("run_instance {}", spec.subnet_id));
        let id = w.id("i");
        w.instances.push(Instance {
            id: id.clone(),
            state: "pending".into(),
            subnet_id: Some(spec.subnet_id.clone()),
            vpc_id: None,
            availability_zone: None,
            private_ip: None,
            public_ip: None,
            instance_type: Some(spec.instance_type.clone()),
            architecture: None,
            launch_time: None,
            security_group_ids: vec![spec.security_group_id.clone()],
            key_name: Some(spec.key_name.clone()),
            instance_profile_arn: Some(spec.instance_profile_arn.clone()),
            tags: spec.tags.clone(),
        });
        Ok(id)
    }
    async fn start_instance(&self, id: &str) -> AwsResult<()> {
        let mut w = self.write(format!("start_instance {id}"));
        let i = w
            .instances
            .iter_mut()
            .find(|i| i.id == id)
            .ok_or_else(|| not_found("ec2:StartInstances", "InvalidInstanceID.NotFound", id))?;
        i.state = "running".into();
        Ok(())
    }
    async fn send_ssh_public_key(
        &self,
        instance_id: &str,
        os_user: &str,
        _public_key: &str,
    ) -> AwsResult<()> {
        drop(self.write(format!("send_ssh_public_key {instance_id} {os_user}")));
        Ok(())
    }
    async fn terminate_instance(&self, id: &str) -> AwsResult<()> {
        let mut w = self.write(format!("terminate_instance {id}"));
        let i =
            w.instances.iter_mut().find(|i| i.id == id).ok_or_else(|| {
                not_found("ec2:TerminateInstances", "InvalidInstanceID.NotFound", id)
            })?;
        i.state = "terminated".into();
        Ok(())
    }
}

#[async_trait]
impl Network for Memory {
    async fn subnets(&self, _vpc_id: &str) -> AwsResult<Vec<Subnet>> {
        Ok(Vec::new())
    }
    async fn subnet(&self, _subnet_id: &str) -> AwsResult<Option<Subnet>> {
        Ok(None)
    }
    async fn route_tables(&self, _vpc_id: &str) -> AwsResult<Vec<RouteTable>> {
        Ok(Vec::new())
    }
    async fn vpc_cidrs(&self, _vpc_id: &str) -> AwsResult<Vec<String>> {
        Ok(Vec::new())
    }
    async fn security_groups(&self, ids: &[String]) -> AwsResult<Vec<SecurityGroup>> {
        let w = self.lock();
        // As EC2: one id that is not there fails the whole describe.
        if let Some(missing) = ids.iter().find(|id| !w.groups.iter().any(|g| &g.id == *id)) {
            return Err(not_found(
                "ec2:DescribeSecurityGroups",
                "InvalidGroup.NotFound",
                missing,
            ));
        }
        Ok(w.groups
            .iter()
            .filter(|g| ids.contains(&g.id))
            .map(|g| {
                let mut g = g.clone();
                // The egress rules added one by one, as EC2 describes them with the group.
                g.egress.extend(
                    w.rules
                        .iter()
                        .filter(|r| r.rule.egress && r.rule.group_id == g.id)
                        .filter_map(|r| {
                            Some(IngressRule {
                                protocol: "tcp".into(),
                                from_port: Some(r.port),
                                to_port: Some(r.port),
                                source: Source::Group(r.rule.referenced_group.clone()?),
                            })
                        }),
                );
                g
            })
            .collect())
    }
    async fn security_groups_by_tag(
        &self,
        key: &str,
        value: &str,
    ) -> AwsResult<Vec<SecurityGroup>> {
        Ok(self
            .lock()
            .groups
            .iter()
            .filter(|g| has_tag(&g.tags, key, value))
            .cloned()
            .collect())
    }
    async fn rules_by_tag(&self, key: &str, value: &str) -> AwsResult<Vec<TaggedRule>> {
        Ok(self
            .lock()
            .rules
            .iter()
            .filter(|r| has_tag(&r.tags, key, value))
            .map(|r| r.rule.clone())
            .collect())
    }
    async fn ingress_rules(&self, _group_id: &str) -> AwsResult<Vec<GroupRule>> {
        Ok(Vec::new())
    }
    async fn vpc_endpoints(&self, _vpc_id: &str) -> AwsResult<Vec<VpcEndpoint>> {
        Ok(Vec::new())
    }
    async fn vpc_dns(&self, _vpc_id: &str) -> AwsResult<(bool, bool)> {
        Ok((true, true))
    }
    async fn instance_connect_endpoints(
        &self,
        vpc_id: Option<&str>,
    ) -> AwsResult<Vec<ConnectEndpoint>> {
        Ok(self
            .lock()
            .connect_endpoints
            .iter()
            .filter(|e| vpc_id.is_none_or(|v| e.vpc_id == v))
            .cloned()
            .collect())
    }
    async fn open_tunnel_url(&self, request: &TunnelRequest) -> AwsResult<String> {
        Ok(format!(
            "wss://{}/openTunnel?instanceConnectEndpointId={}&remotePort={}&privateIpAddress={}&maxTunnelDuration={}",
            request.host,
            request.endpoint_id,
            request.remote_port,
            request.private_ip,
            request.max_duration
        ))
    }
    async fn create_vpc_endpoint(&self, spec: &EndpointSpec) -> AwsResult<String> {
        let mut w = self.write(format!("create_vpc_endpoint {}", spec.service));
        Ok(w.id("vpce"))
    }
    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        let mut w = self.write(format!("create_security_group {name}"));
        if w.groups
            .iter()
            .any(|g| g.name == name && g.vpc_id.as_deref() == Some(vpc_id))
        {
            return Err(AwsError::AlreadyExists {
                action: "ec2:CreateSecurityGroup".into(),
                message: format!("the security group '{name}' already exists"),
            });
        }
        let id = w.id("sg");
        w.groups.push(SecurityGroup {
            id: id.clone(),
            name: name.into(),
            description: Some(description.into()),
            vpc_id: Some(vpc_id.into()),
            ingress: Vec::new(),
            egress: Vec::new(),
            tags: tags.to_vec(),
        });
        Ok(id)
    }
    async fn delete_security_group(&self, id: &str) -> AwsResult<()> {
        let mut w = self.write(format!("delete_security_group {id}"));
        if !w.groups.iter().any(|g| g.id == id) {
            return Err(not_found(
                "ec2:DeleteSecurityGroup",
                "InvalidGroup.NotFound",
                id,
            ));
        }
        // As EC2: a group an instance not yet terminated or an endpoint not yet deleted uses,
        // or a rule elsewhere names, stays.
        let used = w
            .instances
            .iter()
            .any(|i| i.state != "terminated" && i.security_group_ids.iter().any(|g| g == id))
            || w.connect_endpoints.iter().any(|e| {
                e.state != "delete-complete" && e.security_group_ids.iter().any(|g| g == id)
            })
            || w.rules
                .iter()
                .any(|r| r.rule.group_id != id && r.rule.referenced_group.as_deref() == Some(id));
        if used {
            return Err(AwsError::DependencyViolation {
                action: "ec2:DeleteSecurityGroup".into(),
                message: format!("resource {id} has a dependent object"),
            });
        }
        w.groups.retain(|g| g.id != id);
        w.rules.retain(|r| r.rule.group_id != id);
        Ok(())
    }
    async fn set_egress(&self, group_id: &str, rules: &[(i32, String)]) -> AwsResult<()> {
        let mut w = self.write(format!("set_egress {group_id}"));
        let g = w
            .groups
            .iter_mut()
            .find(|g| g.id == group_id)
            .ok_or_else(|| {
                not_found(
                    "ec2:RevokeSecurityGroupEgress",
                    "InvalidGroup.NotFound",
                    group_id,
                )
            })?;
        g.egress = rules
            .iter()
            .map(|(port, cidr)| IngressRule {
                protocol: "tcp".into(),
                from_port: Some(*port),
                to_port: Some(*port),
                source: Source::Cidr(cidr.clone()),
            })
            .collect();
        Ok(())
    }
    async fn authorize_ingress(
        &self,
        group_id: &str,
        port: i32,
        source: &Source,
        _description: &str,
        tags: &[Tag],
    ) -> AwsResult<Vec<String>> {
        let mut w = self.write(format!("authorize_ingress {group_id} {port}"));
        if !w.groups.iter().any(|g| g.id == group_id) {
            return Err(not_found(
                "ec2:AuthorizeSecurityGroupIngress",
                "InvalidGroup.NotFound",
                group_id,
            ));
        }
        Ok(vec![w.add_rule(group_id, port, source, tags, false)])
    }
    async fn revoke_ingress(&self, group_id: &str, rule_ids: &[String]) -> AwsResult<()> {
        let mut w = self.write(format!("revoke_ingress {group_id} {}", rule_ids.join(",")));
        w.remove_rules("ec2:RevokeSecurityGroupIngress", group_id, rule_ids, false)
    }
    async fn authorize_egress(
        &self,
        group_id: &str,
        port: i32,
        target: &Source,
        _description: &str,
        tags: &[Tag],
    ) -> AwsResult<Vec<String>> {
        let mut w = self.write(format!("authorize_egress {group_id} {port}"));
        if !w.groups.iter().any(|g| g.id == group_id) {
            return Err(not_found(
                "ec2:AuthorizeSecurityGroupEgress",
                "InvalidGroup.NotFound",
                group_id,
            ));
        }
        Ok(vec![w.add_rule(group_id, port, target, tags, true)])
    }
    async fn revoke_egress(&self, group_id: &str, rule_ids: &[String]) -> AwsResult<()> {
        let mut w = self.write(format!("revoke_egress {group_id} {}", rule_ids.join(",")));
        w.remove_rules("ec2:RevokeSecurityGroupEgress", group_id, rule_ids, true)
    }
    async fn create_instance_connect_endpoint(
        &self,
        spec: &ConnectEndpointSpec,
    ) -> AwsResult<ConnectEndpoint> {
        let mut w = self.write(format!(
            "create_instance_connect_endpoint {}",
            spec.subnet_id
        ));
        // One per VPC, as AWS allows (the subnet's VPC is the first group's here).
        let vpc_id = w
            .groups
            .iter()
            .find(|g| spec.security_group_ids.first() == Some(&g.id))
            .and_then(|g| g.vpc_id.clone())
            .unwrap_or_default();
        if w.connect_endpoints
            .iter()
            .any(|e| e.vpc_id == vpc_id && e.state != "delete-complete")
        {
            return Err(AwsError::Service {
                action: "ec2:CreateInstanceConnectEndpoint".into(),
                code: "InstanceConnectEndpointLimitExceeded".into(),
                message: "You have reached the maximum number of EC2 Instance Connect Endpoints for this VPC.".into(),
            });
        }
        let id = w.id("eice");
        let e = ConnectEndpoint {
            arn: format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance-connect-endpoint/{id}"),
            dns_name: format!("{id}.1a2b3c4d.ec2-instance-connect-endpoint.{REGION}.amazonaws.com"),
            id,
            vpc_id,
            subnet_id: spec.subnet_id.clone(),
            state: "create-complete".into(),
            state_message: None,
            fips_dns_name: None,
            security_group_ids: spec.security_group_ids.clone(),
            tags: spec.tags.clone(),
        };
        w.connect_endpoints.push(e.clone());
        Ok(e)
    }
    async fn delete_instance_connect_endpoint(&self, id: &str) -> AwsResult<()> {
        let mut w = self.write(format!("delete_instance_connect_endpoint {id}"));
        match w
            .connect_endpoints
            .iter_mut()
            .find(|e| e.id == id && e.state != "delete-complete")
        {
            Some(e) => {
                e.state = "delete-complete".into();
                Ok(())
            }
            None => Err(not_found(
                "ec2:DeleteInstanceConnectEndpoint",
                "InvalidInstanceConnectEndpointId.NotFound",
                id,
            )),
        }
    }
}

fn no_such_entity(action: &str, name: &str) -> AwsError {
    not_found(action, "NoSuchEntity", name)
}

impl World {
    /// The role `name`, or IAM's NoSuchEntity for `action`.
    fn role_mut(&mut self, action: &str, name: &str) -> AwsResult<&mut Role> {
        self.roles
            .iter_mut()
            .find(|r| r.entity.name == name)
            .ok_or_else(|| no_such_entity(action, name))
    }

    /// The instance profile `name`, or IAM's NoSuchEntity for `action`.
    fn profile_mut(&mut self, action: &str, name: &str) -> AwsResult<&mut Profile> {
        self.profiles
            .iter_mut()
            .find(|p| p.entity.name == name)
            .ok_or_else(|| no_such_entity(action, name))
    }
}

/// IAM's `DeleteConflict`, as the adapter maps it: a dependent object still exists.
fn delete_conflict(action: &str, message: String) -> AwsError {
    AwsError::DependencyViolation {
        action: action.into(),
        message,
    }
}

#[async_trait]
impl Iam for Memory {
    async fn roles_under(&self, path: &str) -> AwsResult<Vec<IamEntity>> {
        Ok(self
            .lock()
            .roles
            .iter()
            .filter(|r| r.entity.path.starts_with(path))
            .map(|r| r.entity.clone())
            .collect())
    }
    async fn instance_profiles_under(&self, path: &str) -> AwsResult<Vec<IamEntity>> {
        Ok(self
            .lock()
            .profiles
            .iter()
            .filter(|p| p.entity.path.starts_with(path))
            .map(|p| p.entity.clone())
            .collect())
    }
    async fn role_policies(&self, role: &str) -> AwsResult<(Vec<String>, Vec<String>)> {
        let mut w = self.lock();
        let r = w.role_mut("iam:ListRolePolicies", role)?;
        Ok((r.inline.clone(), r.attached.clone()))
    }
    async fn profile_roles(&self, profile: &str) -> AwsResult<Vec<String>> {
        let mut w = self.lock();
        let p = w.profile_mut("iam:GetInstanceProfile", profile)?;
        Ok(p.roles.clone())
    }
    async fn create_role(
        &self,
        name: &str,
        path: &str,
        _trust_policy: &str,
        _description: &str,
        _boundary: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        let mut w = self.write(format!("create_role {name}"));
        let arn = format!("arn:aws:iam::{ACCOUNT}:role{path}{name}");
        w.roles.push(Role {
            entity: IamEntity {
                name: name.into(),
                arn: arn.clone(),
                path: path.into(),
                tags: tags.to_vec(),
            },
            inline: Vec::new(),
            attached: Vec::new(),
        });
        Ok(arn)
    }
    async fn policy_exists(&self, _arn: &str) -> AwsResult<bool> {
        Ok(true)
    }
    async fn instance_profile(&self, name: &str) -> AwsResult<Option<IamEntity>> {
        Ok(self
            .lock()
            .profiles
            .iter()
            .find(|p| p.entity.name == name)
            .map(|p| p.entity.clone()))
    }
    async fn delete_role(&self, name: &str) -> AwsResult<()> {
        let mut w = self.write(format!("delete_role {name}"));
        let Some(r) = w.roles.iter().find(|r| r.entity.name == name) else {
            return Err(no_such_entity("iam:DeleteRole", name));
        };
        // As IAM: a role with policies, or in a profile, cannot be deleted.
        if !r.inline.is_empty()
            || !r.attached.is_empty()
            || w.profiles.iter().any(|p| p.roles.iter().any(|n| n == name))
        {
            return Err(delete_conflict(
                "iam:DeleteRole",
                format!("cannot delete role {name}: it has policies or a profile"),
            ));
        }
        w.roles.retain(|r| r.entity.name != name);
        Ok(())
    }
    async fn put_role_policy(&self, role: &str, name: &str, _document: &str) -> AwsResult<()> {
        let mut w = self.write(format!("put_role_policy {role} {name}"));
        let r = w.role_mut("iam:PutRolePolicy", role)?;
        r.inline.push(name.into());
        Ok(())
    }
    async fn delete_role_policy(&self, role: &str, name: &str) -> AwsResult<()> {
        let mut w = self.write(format!("delete_role_policy {role} {name}"));
        let r = w.role_mut("iam:DeleteRolePolicy", role)?;
        r.inline.retain(|p| p != name);
        Ok(())
    }
    async fn attach_role_policy(&self, role: &str, policy_arn: &str) -> AwsResult<()> {
        let mut w = self.write(format!("attach_role_policy {role} {policy_arn}"));
        let r = w.role_mut("iam:AttachRolePolicy", role)?;
        r.attached.push(policy_arn.into());
        Ok(())
    }
    async fn detach_role_policy(&self, role: &str, policy_arn: &str) -> AwsResult<()> {
        let mut w = self.write(format!("detach_role_policy {role} {policy_arn}"));
        let r = w.role_mut("iam:DetachRolePolicy", role)?;
        r.attached.retain(|p| p != policy_arn);
        Ok(())
    }
    async fn create_instance_profile(
        &self,
        name: &str,
        path: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        let mut w = self.write(format!("create_instance_profile {name}"));
        let arn = format!("arn:aws:iam::{ACCOUNT}:instance-profile{path}{name}");
        w.profiles.push(Profile {
            entity: IamEntity {
                name: name.into(),
                arn: arn.clone(),
                path: path.into(),
                tags: tags.to_vec(),
            },
            roles: Vec::new(),
        });
        Ok(arn)
    }
    async fn delete_instance_profile(&self, name: &str) -> AwsResult<()> {
        let mut w = self.write(format!("delete_instance_profile {name}"));
        let Some(p) = w.profiles.iter().find(|p| p.entity.name == name) else {
            return Err(no_such_entity("iam:DeleteInstanceProfile", name));
        };
        if !p.roles.is_empty() {
            return Err(delete_conflict(
                "iam:DeleteInstanceProfile",
                format!("cannot delete instance profile {name}: it holds a role"),
            ));
        }
        w.profiles.retain(|p| p.entity.name != name);
        Ok(())
    }
    async fn add_role_to_instance_profile(&self, profile: &str, role: &str) -> AwsResult<()> {
        let mut w = self.write(format!("add_role_to_instance_profile {profile} {role}"));
        let p = w.profile_mut("iam:AddRoleToInstanceProfile", profile)?;
        p.roles.push(role.into());
        Ok(())
    }
    async fn remove_role_from_instance_profile(&self, profile: &str, role: &str) -> AwsResult<()> {
        let mut w = self.write(format!(
            "remove_role_from_instance_profile {profile} {role}"
        ));
        let p = w.profile_mut("iam:RemoveRoleFromInstanceProfile", profile)?;
        p.roles.retain(|r| r != role);
        Ok(())
    }
}
