//! A [`Cloud`] wrapper that fails one named write operation, so tests can prove that a failure at
//! any step of `up` leaves nothing behind.
//!
//! `BASTION_FAILPOINT=<op>` fails `<op>` before it is sent; `<op>:after` sends it, then reports a
//! failure (a lost response: the resource exists but the caller never learns its id);
//! `<op>:pause` sleeps 30 s before sending (tests interrupt `up` there). `<op>` is the method
//! name, e.g. `run_instance`, `create_role`, `authorize_ingress`; `<op>#N` fires on its Nth
//! call only (1-based; e.g. `authorize_ingress#2:after`), every call otherwise. Unset, the
//! wrapper is inert.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Before,
    After,
    Pause,
}

#[derive(Debug, Clone)]
pub struct Failpoint {
    pub op: String,
    pub mode: Mode,
    /// Fire on this call of `op` only (1-based); on every call when None.
    pub nth: Option<u32>,
}

impl Failpoint {
    pub fn parse(spec: &str) -> Option<Failpoint> {
        let spec = spec.trim();
        if spec.is_empty() {
            return None;
        }
        let (op, mode) = match spec.split_once(':') {
            Some((op, "after")) => (op, Mode::After),
            Some((op, "pause")) => (op, Mode::Pause),
            Some((op, _)) => (op, Mode::Before),
            None => (spec, Mode::Before),
        };
        let (op, nth) = match op.split_once('#') {
            Some((op, n)) => (op, Some(n.parse().ok()?)),
            None => (op, None),
        };
        Some(Failpoint {
            op: op.to_string(),
            mode,
            nth,
        })
    }

    pub fn from_env() -> Option<Failpoint> {
        std::env::var("BASTION_FAILPOINT")
            .ok()
            .and_then(|s| Failpoint::parse(&s))
    }
}

pub struct Faulty<C> {
    inner: C,
    failpoint: Option<Failpoint>,
    calls: AtomicU32,
}

impl<C: Cloud> Faulty<C> {
    pub fn new(inner: C, failpoint: Option<Failpoint>) -> Self {
        Faulty {
            inner,
            failpoint,
            calls: AtomicU32::new(0),
        }
    }

    /// Counts a call of `op`; the failpoint's mode when this call is the one to fail.
    fn mode_for(&self, op: &str) -> Option<Mode> {
        let f = self.failpoint.as_ref().filter(|f| f.op == op)?;
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        f.nth.is_none_or(|nth| nth == n).then(|| f.mode.clone())
    }
}

macro_rules! write_op {
    ($self:ident, $op:literal, $call:expr) => {{
        let mode = $self.mode_for($op);
        match mode {
            Some(Mode::Before) => {
                return Err(AwsError::Injected {
                    action: $op.to_string(),
                });
            }
            Some(Mode::Pause) => tokio::time::sleep(Duration::from_secs(30)).await,
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
        tags: &[Tag],
    ) -> AwsResult<String> {
        write_op!(
            self,
            "create_role",
            self.inner
                .create_role(name, path, trust_policy, description, tags)
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_failpoint_specs() {
        let f = Failpoint::parse("run_instance").unwrap();
        assert_eq!((f.op.as_str(), f.mode), ("run_instance", Mode::Before));
        let f = Failpoint::parse("create_role:after").unwrap();
        assert_eq!((f.op.as_str(), f.mode), ("create_role", Mode::After));
        let f = Failpoint::parse("import_key_pair:pause").unwrap();
        assert_eq!(f.mode, Mode::Pause);
        assert!(Failpoint::parse("  ").is_none());
        let f = Failpoint::parse("authorize_ingress#2:after").unwrap();
        assert_eq!(
            (f.op.as_str(), f.mode, f.nth),
            ("authorize_ingress", Mode::After, Some(2))
        );
        assert!(Failpoint::parse("authorize_ingress#x").is_none());
    }
}
