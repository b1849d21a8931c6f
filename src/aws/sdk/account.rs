//! [`Account`] through the AWS SDK.

use async_trait::async_trait;

use super::*;

#[async_trait]
impl Account for SdkCloud {
    fn region(&self) -> &str {
        &self.region
    }

    async fn identity(&self) -> AwsResult<Identity> {
        let out = sdk!(
            "sts:GetCallerIdentity",
            self.sts.get_caller_identity().send()
        )?;
        let arn = out.arn().unwrap_or_default().to_string();
        // arn:<partition>:sts::<account>:... The account names a folder of the state dir and
        // both go into the policies bastion prints: held to their forms.
        let partition = arn.split(':').nth(1).unwrap_or("aws").to_string();
        const ACTION: &str = "sts:GetCallerIdentity";
        if !checked::is_partition(&partition) {
            return Err(checked::malformed(ACTION, "a partition".into(), &partition));
        }
        let account = out.account().unwrap_or_default().to_string();
        if !checked::is_account(&account) {
            return Err(checked::malformed(ACTION, "an account id".into(), &account));
        }
        Ok(Identity {
            account,
            arn,
            partition,
        })
    }
}
