//! [`Instances`] with failpoints on its writes.

use async_trait::async_trait;

use super::Faulty;
use crate::aws::instances::*;
use crate::aws::*;

#[async_trait]
impl<C: Instances> Instances for Faulty<C> {
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

    async fn terminate_instance(&self, id: &str) -> AwsResult<()> {
        write_op!(
            self,
            "terminate_instance",
            self.inner.terminate_instance(id)
        )
    }
}
