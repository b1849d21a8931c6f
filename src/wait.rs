//! Waiting for the proxy: instance running, then its bootstrap's `bastion:state` tag, then (on
//! request) its `bastion:desktop` tag. Polls with a short first delay, unlike the SDK waiters'
//! fixed 15 s, so a fast start is seen fast. Reads only.

use std::time::Duration;

use crate::aws::fresh::FRESH_LIMIT;
use crate::aws::{AwsError, Instance, Instances, or_missing};
use crate::footprint::{TAG_DESKTOP, TAG_STATE};
use crate::ui::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Goal {
    /// The instance is running.
    Running,
    /// `bastion:state=ready`: sshd up and host key published.
    Ready,
    /// `bastion:desktop=ready`: DCV and the pcluster CLI installed.
    Desktop,
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(
        "the proxy {id}'s bootstrap failed (bastion:state=failed). The end of its console output:\n{console}\n\
         The full log is /var/log/bastion-bootstrap.log on the proxy"
    )]
    BootstrapFailed { id: String, console: String },

    #[error(
        "the proxy {id} is ready for SSH, but installing its desktop failed (bastion:desktop=failed). \
         The proxy was kept: `bastion connect` works. See /var/log/bastion-bootstrap.log on the proxy \
         (`bastion connect --on-proxy -- sudo tail -50 /var/log/bastion-bootstrap.log`)"
    )]
    DesktopFailed { id: String },

    #[error(
        "the proxy {id} is {state}; it will not become ready. Run `bastion down` and `bastion up` again"
    )]
    Gone { id: String, state: String },

    #[error(
        "gave up after {minutes} min waiting for the proxy {id} (instance {state}, bootstrap {bootstrap}). \
         Raise --timeout, or look at its console output in the EC2 console"
    )]
    Timeout {
        id: String,
        minutes: u64,
        state: String,
        bootstrap: String,
    },

    #[error(transparent)]
    Aws(#[from] AwsError),
}

fn reached(i: &Instance, goal: Goal) -> bool {
    let running = i.state == "running";
    match goal {
        Goal::Running => running,
        Goal::Ready => running && i.tag(TAG_STATE) == Some("ready"),
        Goal::Desktop => {
            running && i.tag(TAG_STATE) == Some("ready") && i.tag(TAG_DESKTOP) == Some("ready")
        }
    }
}

fn describe(i: &Instance) -> String {
    match (i.state.as_str(), i.tag(TAG_STATE), i.tag(TAG_DESKTOP)) {
        ("running", None, _) => "instance running, waiting for its bootstrap to start".into(),
        ("running", Some("ready"), Some(d)) => format!("proxy ready; desktop {d}"),
        ("running", Some(s), _) => format!("instance running, bootstrap {s}"),
        (state, _, _) => format!("instance {state}"),
    }
}

/// Keeps the last `n` lines of console output.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits for an existing instance: one that is not found is gone.
pub async fn wait_for(
    cloud: &(impl Instances + ?Sized),
    id: &str,
    goal: Goal,
    timeout: Duration,
    progress: &Progress,
) -> Result<Instance, WaitError> {
    wait(cloud, id, goal, timeout, progress, Duration::ZERO).await
}

/// Waits for the instance this run just launched: for its first [`FRESH_LIMIT`] a describe that
/// does not find it means "not visible yet" (EC2's eventual consistency), never "gone".
pub async fn wait_for_new(
    cloud: &(impl Instances + ?Sized),
    id: &str,
    goal: Goal,
    timeout: Duration,
    progress: &Progress,
) -> Result<Instance, WaitError> {
    wait(cloud, id, goal, timeout, progress, FRESH_LIMIT).await
}

/// Call rate: the first poll at once, then every 0.5 s growing by half to at most every 5 s
/// (about 12 calls a minute once settled).
async fn wait(
    cloud: &(impl Instances + ?Sized),
    id: &str,
    goal: Goal,
    timeout: Duration,
    progress: &Progress,
    grace: Duration,
) -> Result<Instance, WaitError> {
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        let found = or_missing(cloud.instance(id).await)?.flatten();
        let Some(i) = found else {
            if start.elapsed() < grace {
                progress.phase(format!(
                    "{id}: launched, not visible to DescribeInstances yet"
                ));
                tokio::time::sleep(delay).await;
                delay = (delay * 3 / 2).min(Duration::from_secs(5));
                continue;
            }
            return Err(WaitError::Gone {
                id: id.into(),
                state: "gone".into(),
            });
        };
        if reached(&i, goal) {
            return Ok(i);
        }
        if matches!(i.state.as_str(), "terminated" | "shutting-down") {
            return Err(WaitError::Gone {
                id: id.into(),
                state: i.state,
            });
        }
        if goal >= Goal::Ready && i.tag(TAG_STATE) == Some("failed") {
            let console = cloud
                .console_output(id)
                .await
                .map(|c| tail(&c, 30))
                .unwrap_or_else(|e| format!("(console output unavailable: {e})"));
            return Err(WaitError::BootstrapFailed {
                id: id.into(),
                console,
            });
        }
        if goal == Goal::Desktop && i.tag(TAG_DESKTOP) == Some("failed") {
            return Err(WaitError::DesktopFailed { id: id.into() });
        }
        if start.elapsed() > timeout {
            return Err(WaitError::Timeout {
                id: id.into(),
                minutes: timeout.as_secs() / 60,
                state: i.state.clone(),
                bootstrap: i.tag(TAG_STATE).unwrap_or("not started").to_string(),
            });
        }
        progress.phase(format!("{id}: {}", describe(&i)));
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(5));
    }
}
