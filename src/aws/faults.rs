//! A [`Cloud`] wrapper that fails the AWS calls `BASTION_FAILPOINT` names (see
//! [`crate::failpoint`] for the syntax): `<op>` is the method name, e.g. `run_instance`,
//! `create_role`, `authorize_ingress#2:after`, `delete_security_group`. Unset, it is inert.

use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::failpoint::{Failpoints, Mode};

pub struct Faulty<C> {
    inner: C,
    points: &'static Failpoints,
}

impl<C: Cloud> Faulty<C> {
    pub fn new(inner: C, points: &'static Failpoints) -> Self {
        Faulty { inner, points }
    }
}

macro_rules! write_op {
    ($self:ident, $op:literal, $call:expr) => {{
        // Counts this call of `$op`; the mode of the point that fires on it, if any.
        let mode = $self.points.mode_for($op);
        match mode {
            Some(Mode::Before) => {
                return Err(AwsError::Injected {
                    action: $op.to_string(),
                });
            }
            Some(Mode::Pause) => {
                crate::failpoint::announce_pause($op);
                tokio::time::sleep(Duration::from_secs(30)).await
            }
            _ => {}
        }
        let result = $call.await;
        if mode == Some(Mode::After) {
            return Err(AwsError::Injected {
                action: $op.to_string(),
            });
        }
        result
    }};
}

#[async_trait]
impl<C: Cloud> Cloud for Faulty<C> {
    fn region(&self) -> &str {
        self.inner.region()
    }
    async fn identity(&self) -> AwsResult<Identity> {
        self.inner.identity().await
    }
    async fn instances_by_tags(
        &self,
        tags: &[(&str, &str)],
        states: &[&str],
    ) -> AwsResult<Vec<Instance>> {
        self.inner.instances_by_tags(tags, states).await
    }
    async fn instance(&self, id: &str) -> AwsResult<Option<Instance>> {
        self.inner.instance(id).await
    }
    async fn subnets(&self, vpc_id: &str) -> AwsResult<Vec<Subnet>> {
        self.inner.subnets(vpc_id).await
    }
    async fn subnet(&self, subnet_id: &str) -> AwsResult<Option<Subnet>> {
        self.inner.subnet(subnet_id).await
    }
    async fn route_tables(&self, vpc_id: &str) -> AwsResult<Vec<RouteTable>> {
        self.inner.route_tables(vpc_id).await
    }
    async fn vpc_cidrs(&self, vpc_id: &str) -> AwsResult<Vec<String>> {
        self.inner.vpc_cidrs(vpc_id).await
    }
    async fn security_groups(&self, ids: &[String]) -> AwsResult<Vec<SecurityGroup>> {
        self.inner.security_groups(ids).await
    }
    async fn security_groups_by_tag(
        &self,
        key: &str,
        value: &str,
    ) -> AwsResult<Vec<SecurityGroup>> {
        self.inner.security_groups_by_tag(key, value).await
    }
    async fn ingress_rules(&self, group_id: &str) -> AwsResult<Vec<GroupRule>> {
        self.inner.ingress_rules(group_id).await
    }
    async fn rules_by_tag(&self, key: &str, value: &str) -> AwsResult<Vec<TaggedRule>> {
        self.inner.rules_by_tag(key, value).await
    }
    async fn key_pairs_by_tag(&self, key: &str, value: &str) -> AwsResult<Vec<KeyPair>> {
        self.inner.key_pairs_by_tag(key, value).await
    }
    async fn ssm_parameter(&self, name: &str) -> AwsResult<Option<String>> {
        self.inner.ssm_parameter(name).await
    }
    async fn image(&self, id: &str) -> AwsResult<Option<Image>> {
        self.inner.image(id).await
    }
    async fn console_output(&self, instance_id: &str) -> AwsResult<String> {
        self.inner.console_output(instance_id).await
    }
    async fn roles_under(&self, path: &str) -> AwsResult<Vec<IamEntity>> {
        self.inner.roles_under(path).await
    }
    async fn instance_profiles_under(&self, path: &str) -> AwsResult<Vec<IamEntity>> {
        self.inner.instance_profiles_under(path).await
    }
    async fn role_policies(&self, role: &str) -> AwsResult<(Vec<String>, Vec<String>)> {
        self.inner.role_policies(role).await
    }
    async fn profile_roles(&self, profile: &str) -> AwsResult<Vec<String>> {
        self.inner.profile_roles(profile).await
    }
    async fn vpc_endpoints(&self, vpc_id: &str) -> AwsResult<Vec<VpcEndpoint>> {
        self.inner.vpc_endpoints(vpc_id).await
    }
    async fn vpc_dns(&self, vpc_id: &str) -> AwsResult<(bool, bool)> {
        self.inner.vpc_dns(vpc_id).await
    }

    async fn import_key_pair(
        &self,
        name: &str,
        public_key: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        write_op!(
            self,
            "import_key_pair",
            self.inner.import_key_pair(name, public_key, tags)
        )
    }
    async fn delete_key_pair(&self, name: &str) -> AwsResult<()> {
        write_op!(self, "delete_key_pair", self.inner.delete_key_pair(name))
    }
    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        write_op!(
            self,
            "create_security_group",
            self.inner
                .create_security_group(name, description, vpc_id, tags)
        )
    }
    async fn delete_security_group(&self, id: &str) -> AwsResult<()> {
        write_op!(
            self,
            "delete_security_group",
            self.inner.delete_security_group(id)
        )
    }
    async fn set_egress(&self, group_id: &str, rules: &[(i32, String)]) -> AwsResult<()> {
        write_op!(self, "set_egress", self.inner.set_egress(group_id, rules))
    }
    async fn authorize_ingress(
        &self,
        group_id: &str,
        port: i32,
        source: &Source,
        description: &str,
        tags: &[Tag],
    ) -> AwsResult<Vec<String>> {
        write_op!(
            self,
            "authorize_ingress",
            self.inner
                .authorize_ingress(group_id, port, source, description, tags)
        )
    }
    async fn revoke_ingress(&self, group_id: &str, rule_ids: &[String]) -> AwsResult<()> {
        write_op!(
            self,
            "revoke_ingress",
            self.inner.revoke_ingress(group_id, rule_ids)
        )
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
        write_op!(
            self,
            "create_role",
            self.inner
                .create_role(name, path, trust_policy, description, boundary, tags)
        )
    }
    async fn policy_exists(&self, arn: &str) -> AwsResult<bool> {
        self.inner.policy_exists(arn).await
    }
    async fn instance_profile(&self, name: &str) -> AwsResult<Option<IamEntity>> {
        self.inner.instance_profile(name).await
    }
    async fn delete_role(&self, name: &str) -> AwsResult<()> {
        write_op!(self, "delete_role", self.inner.delete_role(name))
    }
    async fn put_role_policy(&self, role: &str, name: &str, document: &str) -> AwsResult<()> {
        write_op!(
            self,
            "put_role_policy",
            self.inner.put_role_policy(role, name, document)
        )
    }
    async fn delete_role_policy(&self, role: &str, name: &str) -> AwsResult<()> {
        write_op!(
            self,
            "delete_role_policy",
            self.inner.delete_role_policy(role, name)
        )
    }
    async fn attach_role_policy(&self, role: &str, policy_arn: &str) -> AwsResult<()> {
        write_op!(
            self,
            "attach_role_policy",
            self.inner.attach_role_policy(role, policy_arn)
        )
    }
    async fn detach_role_policy(&self, role: &str, policy_arn: &str) -> AwsResult<()> {
        write_op!(
            self,
            "detach_role_policy",
            self.inner.detach_role_policy(role, policy_arn)
        )
    }
    async fn create_instance_profile(
        &self,
        name: &str,
        path: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        write_op!(
            self,
            "create_instance_profile",
            self.inner.create_instance_profile(name, path, tags)
        )
    }
    async fn delete_instance_profile(&self, name: &str) -> AwsResult<()> {
        write_op!(
            self,
            "delete_instance_profile",
            self.inner.delete_instance_profile(name)
        )
    }
    async fn add_role_to_instance_profile(&self, profile: &str, role: &str) -> AwsResult<()> {
        write_op!(
            self,
            "add_role_to_instance_profile",
            self.inner.add_role_to_instance_profile(profile, role)
        )
    }
    async fn remove_role_from_instance_profile(&self, profile: &str, role: &str) -> AwsResult<()> {
        write_op!(
            self,
            "remove_role_from_instance_profile",
            self.inner.remove_role_from_instance_profile(profile, role)
        )
    }
    async fn run_instance(&self, spec: &LaunchSpec) -> AwsResult<String> {
        write_op!(self, "run_instance", self.inner.run_instance(spec))
    }
    async fn start_instance(&self, id: &str) -> AwsResult<()> {
        write_op!(self, "start_instance", self.inner.start_instance(id))
    }
    async fn send_ssh_public_key(
        &self,
        instance_id: &str,
        os_user: &str,
        public_key: &str,
    ) -> AwsResult<()> {
        write_op!(
            self,
            "send_ssh_public_key",
            self.inner
                .send_ssh_public_key(instance_id, os_user, public_key)
        )
    }
    async fn create_vpc_endpoint(&self, spec: &EndpointSpec) -> AwsResult<String> {
        write_op!(
            self,
            "create_vpc_endpoint",
            self.inner.create_vpc_endpoint(spec)
        )
    }
    async fn terminate_instance(&self, id: &str) -> AwsResult<()> {
        write_op!(
            self,
            "terminate_instance",
            self.inner.terminate_instance(id)
        )
    }
}
