//! Who is calling, and where: STS and the region.

use async_trait::async_trait;

use super::AwsResult;

/// Who the credentials belong to; the partition comes from the caller's ARN.
#[derive(Debug, Clone)]
pub struct Identity {
    pub account: String,
    pub arn: String,
    pub partition: String,
}

/// The caller and the region every other call goes to.
#[async_trait]
pub trait Account: Send + Sync {
    fn region(&self) -> &str;
    async fn identity(&self) -> AwsResult<Identity>;
}
