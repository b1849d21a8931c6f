//! The command line: clap derive. Global options are accepted before or after the subcommand.

// The doc comments here are clap's help text, where `[bind:]` and `[:PORT]` are literal.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{ConfigError, ConfigFile};
use crate::ui::OutputFormat;
use crate::userdata::ProxyOs;
use crate::values::{
    parse_address, parse_cluster_name, parse_instance_type, parse_login, parse_path_text,
    parse_profile, parse_region,
};

/// The heading global options are listed under, after each command's own.
const GLOBAL: &str = "Global options";

/// `bastion VERSION (COMMIT DATE)`, the commit and its date from build.rs.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("BASTION_COMMIT"),
    " ",
    env!("BASTION_COMMIT_DATE"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "bastion",
    version = VERSION,
    about = "Reach an AWS ParallelCluster head node in a subnet with no internet access",
    long_about = "Reach an AWS ParallelCluster head node in a subnet with no internet access.\n\n\
                  `bastion up` launches a hardened proxy in a public subnet of the cluster's VPC; \
                  `bastion down` removes everything `up` created, and nothing else."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes. AWS settings follow the SDK's standard chain: these flags win,
/// then AWS_PROFILE / AWS_REGION / AWS_ENDPOINT_URL, then ~/.aws/config (SSO profiles included).
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// AWS profile from ~/.aws/config (SSO profiles work after `aws sso login`)
    #[arg(long, global = true, value_name = "NAME", value_parser = parse_profile, help_heading = GLOBAL)]
    pub profile: Option<String>,

    /// AWS region (default: AWS_REGION, the config file, the profile's)
    #[arg(long, global = true, value_name = "REGION", value_parser = parse_region, help_heading = GLOBAL)]
    pub region: Option<String>,

    /// Send every AWS call to this endpoint (also AWS_ENDPOINT_URL)
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    pub endpoint_url: Option<String>,

    /// Result format on stdout
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text, help_heading = GLOBAL)]
    pub output: OutputFormat,

    /// More log detail on stderr (-v info, -vv debug, -vvv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,

    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,

    /// No progress display (plain log lines instead)
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_progress: bool,

    /// Where ledgers and keys are kept [default: ~/.local/state/bastion]
    #[arg(long, global = true, env = "BASTION_STATE_DIR", value_name = "DIR", help_heading = GLOBAL)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Launch the proxy for a cluster (or report the one that exists)
    Up(UpArgs),
    /// Remove everything `up` created for a cluster, and nothing else
    Down(DownArgs),
    /// List the bastions in the region
    Status(StatusArgs),
    /// A shell, a command or port forwards on the head node, through the proxy
    Connect(ConnectArgs),
    /// OpenSSH configuration for ssh, scp, rsync, VS Code and `pcluster ssh`
    SshConfig(SshConfigArgs),
    /// Admit an address to the proxy's SSH port (default: yours), revoke one, or list them
    Allow(AllowArgs),
    /// Print the IAM policy a teammate (user) or an operator needs, for your partition and account
    Policy(PolicyArgs),
    /// Forget the head node's pinned host key (re-pin on purpose, after a rebuild or re-key)
    Forget(ForgetArgs),
    /// Check a cluster's no-internet subnet against what ParallelCluster needs; --fix what can be
    Doctor(DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell)
    Completions(CompletionsArgs),
    /// Print the manual page of bastion or of one command, or write them all with --dir
    Man(ManArgs),
    /// The config file's settings: `config show` prints each one's value and where it came from
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The clusters this machine knows (its state dir), for shell completion: no AWS call
    #[command(name = "__clusters", hide = true)]
    Clusters,
}

impl Command {
    /// The cluster the command is about, for its table in the config file.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Command::Up(a) => Some(&a.cluster),
            Command::Down(a) => Some(&a.cluster),
            Command::Status(a) => a.cluster.as_deref(),
            Command::Connect(a) => Some(&a.cluster),
            Command::SshConfig(a) => Some(&a.cluster),
            Command::Allow(a) => Some(&a.cluster),
            Command::Forget(a) => Some(&a.cluster),
            Command::Doctor(a) => a.cluster.as_deref(),
            Command::Config(ConfigCommand::Show(a)) => a.cluster.as_deref(),
            Command::Policy(a) => a.cluster.as_deref(),
            Command::Completions(_) | Command::Man(_) | Command::Clusters => None,
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Print each setting's effective value and where it came from
    Show(ConfigShowArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ConfigShowArgs {
    /// The settings as they apply to this cluster (its [cluster.NAME] table)
    #[arg(long, value_parser = parse_cluster_name)]
    pub cluster: Option<String>,
}

/// Parses the command line, and says which flags were typed (the config file fills in the rest).
pub fn parse() -> (Cli, Given) {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    (cli, given(&matches))
}

/// The ids of the arguments the user typed, in `m` and its subcommands.
pub fn given(m: &clap::ArgMatches) -> Given {
    let mut ids = Vec::new();
    let mut current = Some(m);
    while let Some(m) = current {
        for id in m.ids() {
            if m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine) {
                ids.push(id.as_str().to_string());
            }
        }
        current = m.subcommand().map(|(_, sub)| sub);
    }
    Given(ids)
}

fn parse_identity(s: &str) -> Result<PathBuf, String> {
    parse_path_text(s).map(PathBuf::from)
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// The command whose page to print (default: bastion's own)
    pub command: Option<String>,
    /// Write every page (bastion.1, bastion-up.1, ...) into this directory instead
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub dir: Option<PathBuf>,
}

fn parse_version(s: &str) -> Result<String, String> {
    if crate::userdata::is_release_version(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a ParallelCluster release such as 3.16.1 (X.Y.Z, digits only)"
        ))
    }
}

/// An IAM name: 1 to 128 of letters, digits and `+=,.@_-`.
fn parse_iam_name(s: &str) -> Result<String, String> {
    let ok = (1..=128).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not an IAM name (letters, digits and +=,.@_-, at most 128)"
        ))
    }
}

fn parse_cidr(s: &str) -> Result<ipnet::Ipv4Net, String> {
    crate::aws::parse_cidr(s)
}

fn parse_resource_id(prefix: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |s: &str| {
        if s.starts_with(prefix)
            && s.len() > prefix.len()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            Ok(s.to_string())
        } else {
            Err(format!("'{s}' is not an id of the form {prefix}..."))
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// The cluster's name, as in `pcluster list-clusters`
    #[arg(long, value_parser = parse_cluster_name)]
    pub cluster: String,

    /// Public subnet for the proxy (default: one in the head node's VPC, same AZ preferred)
    #[arg(long, value_name = "SUBNET_ID", value_parser = parse_resource_id("subnet-"))]
    pub subnet: Option<String>,

    /// Instance type [default: t3.medium, or t4g.medium for an arm64 head node]
    #[arg(long, value_name = "TYPE", value_parser = parse_instance_type)]
    pub instance_type: Option<String>,

    /// Who may reach the proxy's SSH port (repeatable) [default: your public IPv4 /32]
    #[arg(long = "allow-cidr", value_name = "CIDR", value_parser = parse_cidr)]
    pub allow_cidr: Vec<ipnet::Ipv4Net>,

    /// The proxy's operating system
    #[arg(long, value_enum, default_value_t = ProxyOs::Al2023)]
    pub os: ProxyOs,

    /// AMI for the proxy [default: the latest for --os, from SSM public parameters]
    #[arg(long, value_name = "AMI_ID", value_parser = parse_resource_id("ami-"))]
    pub ami: Option<String>,

    /// ParallelCluster CLI version on the proxy [default: the cluster's parallelcluster:version]
    #[arg(long, value_name = "VERSION", value_parser = parse_version)]
    pub pcluster_version: Option<String>,

    /// Power the proxy off after this many minutes without an SSH session (0 = never)
    #[arg(long, value_name = "MINUTES", default_value_t = 60)]
    pub idle_stop: u32,

    /// Do not install DCV and a desktop on the proxy
    #[arg(long)]
    pub no_dcv: bool,

    /// Leave the ParallelCluster user policy off the proxy's role (an SSH-only proxy: `pcluster`
    /// on its desktop will then lack permissions)
    #[arg(long)]
    pub no_pcluster_policy: bool,

    /// Use this instance profile, which an administrator made from `bastion policy proxy-role`
    /// (under /bastion/, with the name bastion gives it), instead of creating a role and profile:
    /// the operator then needs no IAM write, and `down` never removes it
    #[arg(long, value_name = "NAME", value_parser = parse_iam_name, conflicts_with = "no_pcluster_policy")]
    pub instance_profile: Option<String>,

    /// Print what would be created, and create nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Return as soon as the instance exists
    #[arg(long, conflicts_with = "wait_desktop")]
    pub no_wait: bool,

    /// Also wait for the proxy's desktop (DCV and the pcluster CLI), which takes minutes
    #[arg(long)]
    pub wait_desktop: bool,

    /// Give up waiting after this many minutes
    #[arg(long, value_name = "MINUTES", default_value_t = 20)]
    pub timeout: u64,

    /// Root volume size in GiB [default: 40 with DCV, 16 without]
    #[arg(long, value_name = "GIB")]
    pub volume_size: Option<i32>,

    /// On failure, keep what was created (for debugging; remove it later with `bastion down`)
    #[arg(long)]
    pub keep_on_failure: bool,

    /// The way in to set up: `proxy` (a proxy instance in a public subnet) or `eice` (the VPC's
    /// EC2 Instance Connect Endpoint, made in the head node's subnet or --subnet when the VPC
    /// has none: no inbound port from outside the VPC, no instance)
    #[arg(long, value_name = "WAY", value_parser = ["proxy", "eice"], default_value = "proxy")]
    pub via: String,
}

impl UpArgs {
    /// The flags that only mean something for a proxy, as their ids and as typed.
    pub const PROXY_ONLY: [(&'static str, &'static str); 11] = [
        ("os", "--os"),
        ("ami", "--ami"),
        ("instance_type", "--instance-type"),
        ("idle_stop", "--idle-stop"),
        ("no_dcv", "--no-dcv"),
        ("wait_desktop", "--wait-desktop"),
        ("volume_size", "--volume-size"),
        ("allow_cidr", "--allow-cidr"),
        ("pcluster_version", "--pcluster-version"),
        ("no_pcluster_policy", "--no-pcluster-policy"),
        ("instance_profile", "--instance-profile"),
    ];
}

#[derive(Debug, Clone, Args)]
pub struct DownArgs {
    /// The cluster whose bastion to remove
    #[arg(long, value_parser = parse_cluster_name)]
    pub cluster: String,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("change").args(["cidr", "revoke", "list"])))]
pub struct AllowArgs {
    /// The cluster whose proxy to admit the address to
    #[arg(long, value_parser = parse_cluster_name)]
    pub cluster: String,

    /// The IPv4 address or block to admit [default: your public address /32]
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub cidr: Option<ipnet::Ipv4Net>,

    /// Remove the rule for CIDR instead [default: your public address /32]
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, num_args = 0..=1)]
    pub revoke: Option<Option<ipnet::Ipv4Net>>,

    /// List the addresses the proxy admits, with who added each and when
    #[arg(long)]
    pub list: bool,
}

/// Whose policy `bastion policy` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyRole {
    /// A teammate: connect (Instance Connect), allow, ssh-config, status
    User,
    /// Who runs up, down and doctor --fix
    Operator,
    /// The permissions boundary every role the operator creates carries (an administrator
    /// creates it once, as the managed policy /bastion/bastion-proxy-boundary)
    Boundary,
    /// A CloudFormation template of the proxy's role and instance profile for one cluster, for
    /// an administrator to deploy (then `bastion up --instance-profile`)
    ProxyRole,
}

#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Whose policy to print
    #[arg(value_enum)]
    pub role: PolicyRole,
    /// `user` only: grant for this cluster's proxy, group and head node alone (without it, the
    /// document covers every cluster bastion serves in the account)
    #[arg(long, value_parser = parse_cluster_name)]
    pub cluster: Option<String>,
    /// `operator` only: the policy for an operator whose proxy role and profile an
    /// administrator made (`up --instance-profile`): no IAM write at all
    #[arg(long)]
    pub pre_provisioned: bool,
    /// `user --cluster NAME` only: the way in to grant. `eice`: tunnels through the VPC's EC2
    /// Instance Connect Endpoint to the head node's SSH port, and nothing of a proxy
    #[arg(long, value_name = "WAY", value_parser = ["proxy", "eice"], default_value = "proxy")]
    pub via: String,
}

#[derive(Debug, Clone, Args)]
pub struct ForgetArgs {
    /// The cluster whose head node's pinned host key to remove
    #[arg(long, value_parser = parse_cluster_name)]
    pub cluster: String,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Only this cluster's bastion
    #[arg(long, value_parser = parse_cluster_name)]
    pub cluster: Option<String>,
}

/// How to reach the proxy and the head node behind it (`connect`, `ssh-config`).
#[derive(Debug, Clone, Default, Args)]
pub struct RouteArgs {
    /// Login on the head node [default: from its OS, as pcluster does: ec2-user, ubuntu, rocky]
    #[arg(long, value_parser = parse_login)]
    pub user: Option<String>,

    /// The head node's key (the cluster's EC2 key pair) [default: ssh-agent, ~/.ssh/id_*]
    #[arg(short = 'i', long = "identity", value_name = "FILE", value_parser = parse_identity)]
    pub identity: Option<std::path::PathBuf>,

    /// Login on the proxy [default: from its OS: ec2-user, ubuntu]
    #[arg(long, value_name = "USER", value_parser = parse_login)]
    pub bastion_user: Option<String>,

    /// Reach the proxy at HOST[:PORT] instead of its public IP (a VPN, a DNS name, its private IP)
    #[arg(long, value_name = "HOST", value_parser = parse_address)]
    pub bastion_address: Option<String>,

    /// The way to the head node: `proxy` (bastion's proxy instance) or `eice` (the VPC's EC2
    /// Instance Connect Endpoint: no inbound port, tunnels of at most an hour) [default: the
    /// proxy where there is one, else the endpoint]
    #[arg(long, value_name = "WAY", value_parser = ["proxy", "eice"])]
    pub via: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The cluster whose head node to reach
    #[arg(long, value_parser = parse_cluster_name)]
    pub cluster: String,

    #[command(flatten)]
    pub route: RouteArgs,

    /// Forward a local port, as seen from the head node: [bind:]port:host:hostport (repeatable)
    #[arg(short = 'L', value_name = "FORWARD", value_parser = crate::ssh::forward::parse_forward)]
    pub forwards: Vec<crate::ssh::forward::Forward>,

    /// No command: only forward ports, until Ctrl-C
    #[arg(short = 'N')]
    pub no_command: bool,

    /// Connect to the proxy itself instead of the head node
    #[arg(long)]
    pub on_proxy: bool,

    /// Pipe stdin and stdout to HOST:PORT through the proxy, like `ssh -W` (an OpenSSH
    /// ProxyCommand) [default: the head node's private IP, port 22]
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1,
          conflicts_with_all = ["forwards", "no_command", "on_proxy", "command", "dcv"])]
    pub stdio: Option<Option<String>>,

    /// Admit your public address to the proxy's SSH port when it is not (see `bastion allow`)
    #[arg(long)]
    pub allow_me: bool,

    /// Minutes to wait for a stopped proxy to start (or its desktop to install, with --desktop)
    #[arg(long, value_name = "MINUTES", default_value_t = 10)]
    pub timeout: u64,

    /// Open the head node's DCV desktop in the browser, through a tunnel (until Ctrl-C)
    #[arg(long, conflicts_with_all = ["forwards", "no_command", "on_proxy", "command"])]
    pub dcv: bool,

    /// With --dcv: the proxy's own DCV desktop (with the pcluster CLI) instead of the head node's
    #[arg(long, requires = "dcv")]
    pub desktop: bool,

    /// With --dcv: print the URL instead of opening a browser
    #[arg(long, requires = "dcv")]
    pub show_url: bool,

    /// With --dcv: the tunnel's local port [default: a free one]
    #[arg(long, requires = "dcv", value_name = "PORT")]
    pub local_port: Option<u16>,

    /// The command to run (after `--`); without it, an interactive shell
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SshConfigArgs {
    /// The cluster to write a configuration for
    #[arg(long, value_parser = parse_cluster_name)]
    pub cluster: String,

    #[command(flatten)]
    pub route: RouteArgs,

    /// Write the configuration into the state dir and add one Include line to ~/.ssh/config
    #[arg(long)]
    pub install: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["cluster", "subnet"])))]
pub struct DoctorArgs {
    /// The cluster whose subnet to check
    #[arg(long, value_parser = parse_cluster_name)]
    pub cluster: Option<String>,

    /// A subnet to check before the cluster exists (with --config)
    #[arg(long, value_name = "SUBNET_ID", value_parser = parse_resource_id("subnet-"), requires = "config")]
    pub subnet: Option<String>,

    /// The cluster's configuration file (pcluster YAML)
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Create the missing VPC endpoints (tagged bastion:doctor); never changes anything else
    #[arg(long)]
    pub fix: bool,
}

/// Which flags the user typed (clap's value source), by their ids.
#[derive(Debug, Default, Clone)]
pub struct Given(pub Vec<String>);

impl Given {
    pub fn has(&self, id: &str) -> bool {
        self.0.iter().any(|g| g == id)
    }
}

/// Fills in, for every setting the user did not give as a flag (nor, for profile and region,
/// in the environment), the file's value for the command's cluster. Returns where each setting
/// the file gave came from, for `-v`.
pub fn apply_config(cli: &mut Cli, given: &Given, file: &ConfigFile) -> Result<(), ConfigError> {
    let cluster = cli.command.cluster().map(str::to_string);
    let cluster = cluster.as_deref();
    let pick = |key: &str, id: &str| -> Option<String> {
        if given.has(id) {
            return None;
        }
        crate::config::file_default(file, cluster, key)
    };
    if let Some(p) = pick("profile", "profile") {
        cli.global.profile = Some(p);
    }
    if let Some(r) = pick("region", "region") {
        cli.global.region = Some(r);
    }
    match &mut cli.command {
        Command::Up(a) => {
            if let Some(v) = pick("instance-type", "instance_type") {
                a.instance_type = Some(v);
            }
            if let Some(v) = pick("os", "os")
                && let Some(os) = crate::userdata::ProxyOs::parse(&v)
            {
                a.os = os;
            }
            if let Some(v) = pick("idle-stop", "idle_stop")
                && let Ok(m) = v.parse()
            {
                a.idle_stop = m;
            }
            if let Some(v) = pick("via", "via") {
                a.via = v;
            }
            if let Some(v) = pick("allow-cidr", "allow_cidr") {
                a.allow_cidr = v
                    .split(',')
                    .filter_map(|c| crate::aws::parse_cidr(c).ok())
                    .collect();
            }
        }
        Command::Connect(a) => apply_route(&mut a.route, &pick),
        Command::SshConfig(a) => apply_route(&mut a.route, &pick),
        _ => {}
    }
    Ok(())
}

fn apply_route(r: &mut RouteArgs, pick: &dyn Fn(&str, &str) -> Option<String>) {
    if let Some(v) = pick("user", "user") {
        r.user = Some(v);
    }
    if let Some(v) = pick("identity", "identity") {
        r.identity = Some(crate::config::expand_home(&v));
    }
    if let Some(v) = pick("bastion-user", "bastion_user") {
        r.bastion_user = Some(v);
    }
    if let Some(v) = pick("bastion-address", "bastion_address") {
        r.bastion_address = Some(v);
    }
    if let Some(v) = pick("via", "via") {
        r.via = Some(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let a = Cli::try_parse_from(["bastion", "--output", "json", "status"]).unwrap();
        let b = Cli::try_parse_from(["bastion", "status", "--output", "json"]).unwrap();
        assert_eq!(a.global.output, OutputFormat::Json);
        assert_eq!(b.global.output, OutputFormat::Json);
    }

    #[test]
    fn bad_input_is_refused_by_the_parser() {
        for args in [
            vec![
                "bastion",
                "up",
                "--cluster",
                "c",
                "--allow-cidr",
                "10.0.0.300/8",
            ],
            vec!["bastion", "up", "--cluster", "c", "--os", "windows"],
            vec!["bastion", "up", "--cluster", "bad name"],
            vec!["bastion", "up", "--cluster", "c", "--subnet", "vpc-1"],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }
}
