//! [`Network`] with failpoints on its writes.

use async_trait::async_trait;

use super::Faulty;
use crate::aws::network::*;
use crate::aws::*;

#[async_trait]
impl<C: Network> Network for Faulty<C> {
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

    async fn vpc_endpoints(&self, vpc_id: &str) -> AwsResult<Vec<VpcEndpoint>> {
        self.inner.vpc_endpoints(vpc_id).await
    }

    async fn vpc_dns(&self, vpc_id: &str) -> AwsResult<(bool, bool)> {
        self.inner.vpc_dns(vpc_id).await
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

    async fn authorize_egress(
        &self,
        group_id: &str,
        port: i32,
        target: &Source,
        description: &str,
        tags: &[Tag],
    ) -> AwsResult<Vec<String>> {
        write_op!(
            self,
            "authorize_egress",
            self.inner
                .authorize_egress(group_id, port, target, description, tags)
        )
    }

    async fn revoke_egress(&self, group_id: &str, rule_ids: &[String]) -> AwsResult<()> {
        write_op!(
            self,
            "revoke_egress",
            self.inner.revoke_egress(group_id, rule_ids)
        )
    }

    async fn create_instance_connect_endpoint(
        &self,
        spec: &ConnectEndpointSpec,
    ) -> AwsResult<ConnectEndpoint> {
        write_op!(
            self,
            "create_instance_connect_endpoint",
            self.inner.create_instance_connect_endpoint(spec)
        )
    }

    async fn delete_instance_connect_endpoint(&self, id: &str) -> AwsResult<()> {
        write_op!(
            self,
            "delete_instance_connect_endpoint",
            self.inner.delete_instance_connect_endpoint(id)
        )
    }

    async fn create_vpc_endpoint(&self, spec: &EndpointSpec) -> AwsResult<String> {
        write_op!(
            self,
            "create_vpc_endpoint",
            self.inner.create_vpc_endpoint(spec)
        )
    }

    async fn instance_connect_endpoints(
        &self,
        vpc_id: Option<&str>,
    ) -> AwsResult<Vec<ConnectEndpoint>> {
        self.inner.instance_connect_endpoints(vpc_id).await
    }

    async fn open_tunnel_url(&self, request: &TunnelRequest) -> AwsResult<String> {
        self.inner.open_tunnel_url(request).await
    }
}
