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
pub mod eice;
pub mod exit;
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

use crate::aws::sdk::{CallCounter, SdkCloud};
use crate::cli::{Cli, Command, GlobalOpts};
use crate::exit::ExitStatus;
use crate::ui::Progress;

pub use crate::context::{Context, install_crypto};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "no AWS region: pass --region, set AWS_REGION, or set a region in your profile (~/.aws/config)"
    )]
    NoRegion,
}
impl crate::exit::ExitStatus for SetupError {
    fn exit_status(&self) -> Option<u8> {
        Some(crate::exit::INVALID)
    }
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
        Command::Up(args) => commands::up::run(&ctx, args, &given).await,
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

/// Whether `err` was already shown to the user (a remote exit code, doctor's report).
pub fn already_reported(err: &anyhow::Error) -> bool {
    err.downcast_ref::<commands::connect::RemoteExit>()
        .is_some()
        || err
            .downcast_ref::<commands::doctor::ProblemsFound>()
            .is_some()
}

/// Exit status (see `exit`): the first error in the chain that says one decides; 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        let Some(status) = exit_status_of(cause) else {
            continue;
        };
        if let Some(carried) = status.carries() {
            return exit_code(carried);
        }
        if let Some(code) = status.exit_status() {
            return code;
        }
    }
    exit::FAILED
}

/// `cause` as one of the error types that say their exit status.
fn exit_status_of<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a dyn ExitStatus> {
    macro_rules! first_of {
        ($($t:ty),* $(,)?) => {
            $(if let Some(e) = cause.downcast_ref::<$t>() {
                return Some(e);
            })*
        };
    }
    first_of!(
        commands::connect::RemoteExit,
        commands::doctor::ProblemsFound,
        commands::doctor::DoctorFailed,
        commands::down::DownIncomplete,
        commands::up::UpError,
        commands::policy::PolicyUsage,
        plan::PlanError,
        aws::AwsError,
        cluster::ClusterError,
        route::RouteError,
        eice::EiceError,
        eice::tunnel::TunnelError,
        config::ConfigError,
        access::AccessError,
        SetupError,
        state::StateError,
        ledger::LedgerError,
    );
    None
}
