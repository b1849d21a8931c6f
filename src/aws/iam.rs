//! IAM: the proxy's role and instance profile, their policies, and the managed policies they name.

use async_trait::async_trait;

use super::{AwsResult, Tag};

#[derive(Debug, Clone)]
pub struct IamEntity {
    pub name: String,
    pub arn: String,
    pub path: String,
    pub tags: Vec<Tag>,
}

/// IAM's roles and instance profiles under bastion's path. Writes each create or remove exactly
/// one thing.
#[async_trait]
pub trait Iam: Send + Sync {
    async fn roles_under(&self, path: &str) -> AwsResult<Vec<IamEntity>>;
    async fn instance_profiles_under(&self, path: &str) -> AwsResult<Vec<IamEntity>>;
    async fn role_policies(&self, role: &str) -> AwsResult<(Vec<String>, Vec<String>)>;
    async fn profile_roles(&self, profile: &str) -> AwsResult<Vec<String>>;
    /// A role under `path` that carries the permissions boundary `boundary` (a policy ARN).
    async fn create_role(
        &self,
        name: &str,
        path: &str,
        trust_policy: &str,
        description: &str,
        boundary: &str,
        tags: &[Tag],
    ) -> AwsResult<String>;
    /// Whether the managed policy `arn` exists (GetPolicy).
    async fn policy_exists(&self, arn: &str) -> AwsResult<bool>;
    /// The instance profile `name`, if it exists.
    async fn instance_profile(&self, name: &str) -> AwsResult<Option<IamEntity>>;
    async fn delete_role(&self, name: &str) -> AwsResult<()>;
    async fn put_role_policy(&self, role: &str, name: &str, document: &str) -> AwsResult<()>;
    async fn delete_role_policy(&self, role: &str, name: &str) -> AwsResult<()>;
    async fn attach_role_policy(&self, role: &str, policy_arn: &str) -> AwsResult<()>;
    async fn detach_role_policy(&self, role: &str, policy_arn: &str) -> AwsResult<()>;
    async fn create_instance_profile(
        &self,
        name: &str,
        path: &str,
        tags: &[Tag],
    ) -> AwsResult<String>;
    async fn delete_instance_profile(&self, name: &str) -> AwsResult<()>;
    async fn add_role_to_instance_profile(&self, profile: &str, role: &str) -> AwsResult<()>;
    async fn remove_role_from_instance_profile(&self, profile: &str, role: &str) -> AwsResult<()>;
}
