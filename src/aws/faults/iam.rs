//! [`Iam`] with failpoints on its writes.

use async_trait::async_trait;

use super::Faulty;
use crate::aws::iam::*;
use crate::aws::*;

#[async_trait]
impl<C: Iam> Iam for Faulty<C> {
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
}
