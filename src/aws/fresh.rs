//! Calls about a resource this run created seconds ago. EC2 and IAM are eventually consistent:
//! right after `RunInstances`, `CreateSecurityGroup` or `CreateInstanceProfile`, calls naming
//! the new id can answer NotFound (`InvalidInstanceID.NotFound`, `InvalidGroup.NotFound`,
//! `NoSuchEntity`) for seconds; AWS's EC2 documentation advises retrying with exponential
//! backoff for up to a few minutes. Here, and only here, such a NotFound means "not yet".
//!
//! Call rate: the first retry after 0.5 s, doubling to at most 8 s between calls, for at most
//! [`FRESH_LIMIT`]: 20 calls in the worst case, 5 of them within the first 8 seconds.

use std::future::Future;
use std::time::Duration;

use super::{AwsError, AwsResult, Instance, Instances};

/// How long a resource made by this run may read as NotFound before that is believed.
pub const FRESH_LIMIT: Duration = Duration::from_secs(120);
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(8);

/// Runs `op`, retrying while it answers NotFound about the new resource `what`, up to `limit`.
pub async fn retry_not_found<T, F, Fut>(what: &str, limit: Duration, mut op: F) -> AwsResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = AwsResult<T>>,
{
    let start = tokio::time::Instant::now();
    let mut delay = FIRST_DELAY;
    loop {
        match op().await {
            Err(e) if e.is_not_found() && !e.is_missing_rule() && start.elapsed() < limit => {
                tracing::info!("{what} is not visible yet ({e}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
            }
            other => return other,
        }
    }
}

/// [`retry_not_found`] with [`FRESH_LIMIT`].
pub async fn on_fresh<T, F, Fut>(what: &str, op: F) -> AwsResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = AwsResult<T>>,
{
    retry_not_found(what, FRESH_LIMIT, op).await
}

/// The instance `id` that this run launched: a describe that does not find it yet is retried
/// (the launch succeeded, so it exists), until [`FRESH_LIMIT`].
pub async fn new_instance(cloud: &(impl Instances + ?Sized), id: &str) -> AwsResult<Instance> {
    on_fresh(&format!("the new instance {id}"), || async {
        cloud.instance(id).await?.ok_or_else(|| AwsError::NotFound {
            action: "ec2:DescribeInstances".into(),
            code: "InvalidInstanceID.NotFound".into(),
            message: format!("The instance ID '{id}' does not exist"),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn missing(code: &str) -> AwsError {
        AwsError::from_code("ec2:X", code, "m")
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_is_retried_for_a_bounded_time_and_a_missing_rule_is_an_answer() {
        let calls = AtomicU32::new(0);
        let r = on_fresh("g", || async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0..=2 => Err(missing("InvalidGroup.NotFound")),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::Relaxed), 4);

        let calls = AtomicU32::new(0);
        let r: AwsResult<()> = on_fresh("g", || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(missing("InvalidGroup.NotFound"))
        })
        .await;
        assert!(r.unwrap_err().is_not_found(), "believed after the limit");
        let n = calls.load(Ordering::Relaxed);
        assert_eq!(n, 20, "calls in {FRESH_LIMIT:?}");

        let calls = AtomicU32::new(0);
        let r: AwsResult<()> = on_fresh("g", || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(missing("InvalidPermission.NotFound"))
        })
        .await;
        assert!(r.unwrap_err().is_missing_rule());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
