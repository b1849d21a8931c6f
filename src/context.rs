//! What every command runs with: the AWS seam, the global options, the state root, progress,
//! and the process's one TLS provider. Lower modules take a `Context` from here; they never
//! reach up into `lib.rs` (which dispatches to the commands) or into a command.

use std::path::PathBuf;

use tokio::sync::OnceCell;

use crate::aws::{AwsError, Cloud, Identity};
use crate::state::BastionDir;
use crate::ui::{OutputFormat, Progress};

/// The settings this run was given that a later run of bastion must be given again to reach the
/// same proxy (ssh-config's `ProxyCommand`): the AWS profile, the endpoint, the state dir.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub state_dir: Option<PathBuf>,
}

/// What every command gets: the AWS seam, how to print (`--output`, `--quiet`), the state root,
/// progress, and the settings a later run needs again.
pub struct Context {
    pub cloud: Box<dyn Cloud>,
    pub output: OutputFormat,
    pub quiet: bool,
    pub invocation: Invocation,
    pub state_root: PathBuf,
    pub progress: Progress,
    identity: OnceCell<Identity>,
}

impl Context {
    pub fn new(
        cloud: Box<dyn Cloud>,
        (output, quiet): (OutputFormat, bool),
        invocation: Invocation,
        state_root: PathBuf,
        progress: Progress,
    ) -> Self {
        Context {
            cloud,
            output,
            quiet,
            invocation,
            state_root,
            progress,
            identity: OnceCell::new(),
        }
    }

    pub async fn identity(&self) -> Result<&Identity, AwsError> {
        self.identity
            .get_or_try_init(|| self.cloud.identity())
            .await
    }

    /// The pins of every proxy and head node this machine has met (see `state::known_hosts`).
    pub fn known_hosts(&self) -> PathBuf {
        crate::state::known_hosts(&self.state_root)
    }

    /// The local directory of one cluster's bastion (per account and region).
    pub async fn bastion_dir(&self, cluster: &str) -> Result<BastionDir, AwsError> {
        let account = self.identity().await?.account.clone();
        Ok(BastionDir::new(
            &self.state_root,
            &account,
            self.cloud.region(),
            cluster,
        ))
    }
}

/// One TLS stack for everything: rustls with aws-lc-rs, as the AWS SDK and russh use it. reqwest
/// (the public-address lookup) is built without a provider of its own and takes this one; call
/// it before making a reqwest client. Idempotent.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
