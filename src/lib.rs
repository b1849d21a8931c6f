//! bastion: reach an AWS ParallelCluster head node in a subnet with no internet access.
//!
//! `run` builds the AWS client from the standard chain, dispatches to one module per command,
//! and `exit_code` maps the error that comes back to the documented exit status.

pub mod access;
pub mod aws;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod context;
pub mod dcv;
pub mod doctor;
pub mod failpoint;
pub mod files;
pub mod footprint;
pub mod ledger;
pub mod link;
pub mod logging;
pub mod plan;
pub mod policy;
pub mod provision;
pub mod proxy;
pub mod route;
pub mod ssh;
pub mod state;
pub mod teardown;
pub mod ui;
pub mod userdata;
pub mod values;
pub mod wait;

use crate::aws::AwsError;
use crate::aws::sdk::{CallCounter, SdkCloud};
use crate::cli::{Cli, Command, GlobalOpts};
use crate::ui::Progress;

pub use crate::context::{Context, install_crypto};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "no AWS region: pass --region, set AWS_REGION, or set a region in your profile (~/.aws/config)"
    )]
    NoRegion,
}

async fn sdk_config(opts: &GlobalOpts) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &opts.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(e) = &opts.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}

/// Runs one command line (`given`: the flags the user typed, which the config file does not
/// override). Errors come back typed inside `anyhow`, for `exit_code`.
pub async fn run(mut cli: Cli, given: cli::Given) -> anyhow::Result<()> {
    // What needs no AWS at all: completion scripts and manual pages.
    match cli.command {
        Command::Completions(args) => return commands::shell::completions(args),
        Command::Man(args) => return commands::shell::man(args),
        Command::Clusters => {
            let root = match &cli.global.state_dir {
                Some(d) => d.clone(),
                None => state::default_state_dir()?,
            };
            return commands::shell::clusters(&root);
        }
        _ => {}
    }
    let file = config::ConfigFile::load()?;
    if let Command::Config(cli::ConfigCommand::Show(args)) = cli.command {
        return commands::config::show(&cli.global, &given, &file, args).await;
    }
    cli::apply_config(&mut cli, &given, &file)?;
    let config = sdk_config(&cli.global).await;
    if config.region().is_none() {
        return Err(SetupError::NoRegion.into());
    }
    let sdk = SdkCloud::new(&config);
    let calls: CallCounter = sdk.calls.clone();
    let cloud = aws::faults::Faulty::new(sdk, failpoint::global());
    let state_root = match &cli.global.state_dir {
        Some(d) => d.clone(),
        None => state::default_state_dir()?,
    };
    let progress = Progress::new(cli.global.quiet, cli.global.no_progress);
    let ctx = Context::new(
        Box::new(cloud),
        (cli.global.output, cli.global.quiet),
        crate::context::Invocation {
            profile: cli.global.profile.clone(),
            endpoint_url: cli.global.endpoint_url.clone(),
            state_dir: cli.global.state_dir.clone(),
        },
        state_root,
        progress,
    );
    let result = match cli.command {
        Command::Up(args) => commands::up::run(&ctx, args).await,
        Command::Down(args) => commands::down::run(&ctx, args).await,
        Command::Status(args) => commands::status::run(&ctx, args).await,
        Command::Connect(args) => commands::connect::run(&ctx, args).await,
        Command::SshConfig(args) => commands::ssh_config::run(&ctx, args).await,
        Command::Forget(args) => commands::forget::run(&ctx, args).await,
        Command::Allow(args) => commands::allow::run(&ctx, args).await,
        Command::Policy(args) => commands::policy::run(&ctx, args).await,
        Command::Completions(_) | Command::Man(_) | Command::Clusters | Command::Config(_) => {
            Ok(())
        }
        Command::Doctor(args) => commands::doctor::run(&ctx, args).await,
    };
    ctx.progress.finish();
    tracing::info!(aws_api_calls = calls.get(), "done");
    result
}

/// Credentials and permissions are the user's to fix (3); any other AWS failure is 1.
fn aws_exit_code(e: &AwsError) -> u8 {
    match e {
        e if e.is_denied() => 3,
        _ => 1,
    }
}

/// Whether `err` was already shown to the user (a remote exit code, doctor's report).
pub fn already_reported(err: &anyhow::Error) -> bool {
    err.downcast_ref::<commands::connect::RemoteExit>()
        .is_some()
        || err
            .downcast_ref::<commands::doctor::ProblemsFound>()
            .is_some()
}

/// Exit status: 0 success; 1 the operation failed; 2 invalid input (bad flags, unknown cluster,
/// no public subnet...); 3 AWS credentials or permissions; 4 local state (state dir); 130 interrupted.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    use crate::cluster::ClusterError;
    use crate::commands::up::UpError;
    for cause in err.chain() {
        if let Some(commands::connect::RemoteExit(code)) =
            cause.downcast_ref::<commands::connect::RemoteExit>()
        {
            return *code;
        }
        if cause
            .downcast_ref::<commands::doctor::ProblemsFound>()
            .is_some()
        {
            return 1;
        }
        if cause
            .downcast_ref::<commands::doctor::DoctorFailed>()
            .is_some()
        {
            return 2;
        }
        if let Some(e) = cause.downcast_ref::<commands::down::DownIncomplete>() {
            return if e.denied { 3 } else { 1 };
        }
        if let Some(e) = cause.downcast_ref::<UpError>() {
            match e {
                UpError::Interrupted => return 130,
                UpError::Failed { error, .. } => return exit_code(error),
                UpError::Leftovers { .. }
                | UpError::StaleLedger { .. }
                | UpError::Orphaned { .. } => return 1,
            }
        }
        if cause.downcast_ref::<plan::PlanError>().is_some() {
            return 2;
        }
        if let Some(e) = cause.downcast_ref::<AwsError>() {
            return aws_exit_code(e);
        }
        if let Some(e) = cause.downcast_ref::<ClusterError>() {
            return match e {
                // Transparent: the AWS error is not a cause of its own in the chain.
                ClusterError::Aws(a) => aws_exit_code(a),
                _ => 2,
            };
        }
        match cause.downcast_ref::<route::RouteError>() {
            Some(route::RouteError::NoBastion { .. }) => return 2,
            // A teammate asking for what only the operator's login may do: a permission.
            Some(route::RouteError::OperatorOnly { .. }) => return 3,
            _ => {}
        }
        if cause.downcast_ref::<config::ConfigError>().is_some()
            || cause
                .downcast_ref::<commands::policy::PolicyUsage>()
                .is_some()
        {
            return 2;
        }
        if cause.downcast_ref::<access::AccessError>().is_some() {
            return 2;
        }
        if cause.downcast_ref::<SetupError>().is_some() {
            return 2;
        }
        if let Some(e) = cause.downcast_ref::<state::StateError>() {
            return match e {
                state::StateError::Busy { .. } => 1,
                _ => 4,
            };
        }
        if cause.downcast_ref::<ledger::LedgerError>().is_some() {
            return 4;
        }
    }
    1
}
