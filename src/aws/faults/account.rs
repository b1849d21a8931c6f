//! [`Account`] with failpoints on its writes.

use async_trait::async_trait;

use super::Faulty;
use crate::aws::account::*;
use crate::aws::*;

#[async_trait]
impl<C: Account> Account for Faulty<C> {
    fn region(&self) -> &str {
        self.inner.region()
    }

    async fn identity(&self) -> AwsResult<Identity> {
        self.inner.identity().await
    }
}
