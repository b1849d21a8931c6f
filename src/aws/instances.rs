//! EC2 instances and what launching one needs: images, SSM parameters, key pairs, the console,
//! and EC2 Instance Connect.

use async_trait::async_trait;
use serde::Serialize;

use super::{AwsResult, Tag, tag_value};

/// The states of an instance that is not gone yet: what a teardown still has to terminate.
pub const NOT_TERMINATED: &[&str] = &["pending", "running", "stopping", "stopped", "shutting-down"];

#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    /// pending, running, stopping, stopped, shutting-down, terminated
    pub state: String,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    pub availability_zone: Option<String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub instance_type: Option<String>,
    pub architecture: Option<String>,
    pub launch_time: Option<String>,
    pub security_group_ids: Vec<String>,
    pub key_name: Option<String>,
    /// The ARN of the instance profile it runs with.
    pub instance_profile_arn: Option<String>,
    pub tags: Vec<Tag>,
}

impl Instance {
    pub fn tag(&self, key: &str) -> Option<&str> {
        tag_value(&self.tags, key)
    }
}

#[derive(Debug, Clone)]
pub struct KeyPair {
    pub name: String,
    pub id: Option<String>,
    pub tags: Vec<Tag>,
}

/// Everything RunInstances needs for the proxy.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchSpec {
    pub ami: String,
    pub instance_type: String,
    pub subnet_id: String,
    pub security_group_id: String,
    pub key_name: String,
    pub instance_profile_arn: String,
    pub root_device_name: String,
    pub root_volume_gib: i32,
    #[serde(skip)]
    pub user_data: String,
    pub tags: Vec<Tag>,
}

/// The parts of an AMI the launch needs.
#[derive(Debug, Clone)]
pub struct Image {
    pub id: String,
    pub architecture: Option<String>,
    pub root_device_name: Option<String>,
}

/// EC2's instances and what they are launched with. Every method is one user-visible step; the
/// adapter decides how many API calls (pages, waiters) that takes.
#[async_trait]
pub trait Instances: Send + Sync {
    async fn instances_by_tags(
        &self,
        tags: &[(&str, &str)],
        states: &[&str],
    ) -> AwsResult<Vec<Instance>>;
    async fn instance(&self, id: &str) -> AwsResult<Option<Instance>>;
    async fn key_pairs_by_tag(&self, key: &str, value: &str) -> AwsResult<Vec<KeyPair>>;
    async fn ssm_parameter(&self, name: &str) -> AwsResult<Option<String>>;
    async fn image(&self, id: &str) -> AwsResult<Option<Image>>;
    async fn console_output(&self, instance_id: &str) -> AwsResult<String>;
    async fn import_key_pair(
        &self,
        name: &str,
        public_key: &str,
        tags: &[Tag],
    ) -> AwsResult<String>;
    async fn delete_key_pair(&self, name: &str) -> AwsResult<()>;
    async fn run_instance(&self, spec: &LaunchSpec) -> AwsResult<String>;
    async fn start_instance(&self, id: &str) -> AwsResult<()>;
    /// EC2 Instance Connect: lets `public_key` log in as `os_user` on the instance for 60 s.
    async fn send_ssh_public_key(
        &self,
        instance_id: &str,
        os_user: &str,
        public_key: &str,
    ) -> AwsResult<()>;
    async fn terminate_instance(&self, id: &str) -> AwsResult<()>;
}
