//! Test harness: a moto server per test (the AWS stand-in), a VPC built like a ParallelCluster
//! deployment, the built `bastion` binary run against it, and read-backs of what AWS holds.
//! Nothing here talks to real AWS: every client and every run of the binary is pointed at the
//! moto server on loopback, with dummy keys and no profile files.
#![allow(dead_code)]

pub mod eic;
pub mod front;
pub mod netlab;
pub mod world;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types as ec2t;

pub const REGION: &str = "us-east-1";
pub const CLUSTER: &str = "demo";
/// The address `up` admits in tests that name one (a documentation range, never routed).
pub const ALLOW: &str = "198.51.100.7/32";

/// Finds a tool the tests need. Under CI a missing tool is a failure; elsewhere the test is skipped.
pub fn require_tool(name: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    for c in candidates {
        if c.is_file() {
            return Some(c.clone());
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{name} is not installed; .ci/run must install it");
    }
    skip(&format!(
        "{name} is not installed (run .ci/run, or see README)"
    ));
    None
}

/// True as root; otherwise the test skips (outside CI) or fails (under `CI=true`).
pub fn require_root(what: &str) -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u32>().ok());
    if uid == Some(0) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} needs root");
    }
    skip(&format!("{what} needs root"));
    false
}

/// Says that the running test skips, on stderr (which libtest hides for a passing test) and as a
/// line in the file `BASTION_TEST_SKIPS` names, which `scripts/test` counts and prints at the
/// end, failing the run when any test skipped.
pub fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    eprintln!("SKIPPED: {test}: {reason}");
    if let Some(file) = std::env::var_os("BASTION_TEST_SKIPS") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            let bin = std::env::current_exe()
                .ok()
                .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .unwrap_or_default();
            // The binary's stem carries cargo's hash: keep the test file's name.
            let bin = bin.split('-').next().unwrap_or_default().to_string();
            let _ = writeln!(f, "{bin}::{test}: {reason}");
        }
    }
}

pub fn venv() -> PathBuf {
    PathBuf::from(std::env::var("BASTION_VENV").unwrap_or_else(|_| "/var/tmp/bastion-venv".into()))
}

/// The venv holding ParallelCluster's CLI (`aws-parallelcluster`), apart from moto's so that
/// neither pins the other's dependencies.
pub fn pcluster_venv() -> PathBuf {
    PathBuf::from(
        std::env::var("BASTION_PCLUSTER_VENV")
            .unwrap_or_else(|_| "/var/tmp/bastion-pcluster-venv".into()),
    )
}

pub struct Moto {
    child: Child,
    pub url: String,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts on 127.0.0.1:`port` (a forward bastion or ssh opened).
pub fn wait_listening(port: u16) {
    for _ in 0..300 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on {port}");
}

impl Moto {
    /// Starts a moto server on a free loopback port, or returns None (skip) outside CI.
    pub fn start() -> Option<Moto> {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Option<Moto> {
        require_tool("moto_server", &[venv().join("bin/moto_server")])?;
        // moto's own server, its name checks made atomic as EC2's are (tests/moto_server.py).
        let launcher = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/moto_server.py");
        for _attempt in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(venv().join("bin/python"));
            cmd.arg(launcher)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().expect("moto_server starts");
            let mut moto = Moto {
                child,
                url: format!("http://127.0.0.1:{port}"),
                port,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(moto);
                }
                if let Ok(Some(_)) = moto.child.try_wait() {
                    break; // lost the port race; try another
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = moto.child.kill();
        }
        panic!("moto_server did not start");
    }

    pub async fn clients(&self) -> Clients {
        self.clients_with("testing", "testing").await
    }

    pub async fn clients_with(&self, key: &str, secret: &str) -> Clients {
        self.clients_for(REGION, key, secret).await
    }

    pub async fn clients_in(&self, region: &str) -> Clients {
        self.clients_for(region, "testing", "testing").await
    }

    async fn clients_for(&self, region: &str, key: &str, secret: &str) -> Clients {
        let c = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                key, secret, None, None, "test",
            ))
            .load()
            .await;
        Clients {
            ec2: aws_sdk_ec2::Client::new(&c),
            iam: aws_sdk_iam::Client::new(&c),
            ssm: aws_sdk_ssm::Client::new(&c),
        }
    }
}

pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub iam: aws_sdk_iam::Client,
    pub ssm: aws_sdk_ssm::Client,
}

/// The network of a ParallelCluster deployment in a subnet without internet.
#[derive(Debug, Clone)]
pub struct Lab {
    pub vpc: String,
    pub public_subnet: String,
    pub private_subnet: String,
    pub head_sg: String,
    pub head_node: String,
    pub head_ip: String,
}

fn tag(k: &str, v: &str) -> ec2t::Tag {
    ec2t::Tag::builder().key(k).value(v).build()
}

fn tags(resource: ec2t::ResourceType, tags: Vec<ec2t::Tag>) -> ec2t::TagSpecification {
    ec2t::TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(tags))
        .build()
}

pub struct LabOptions {
    /// The head node group admits tcp 22 only from this CIDR (restricted `AllowedIps`).
    pub head_ssh_from: &'static str,
    pub with_internet_gateway: bool,
    pub cidr: &'static str,
    pub cluster: &'static str,
    pub head_state_stopped: bool,
    /// Third octets of the public and private subnets (the head node is `.10` of the private one).
    pub public_third: u8,
    pub private_third: u8,
    /// The head node's architecture: its AMI is AL2023's for it, from AWS's public parameter.
    pub head_arch: &'static str,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            head_ssh_from: "203.0.113.0/24",
            with_internet_gateway: true,
            cidr: "10.20",
            cluster: CLUSTER,
            head_state_stopped: false,
            public_third: 1,
            private_third: 2,
            head_arch: "x86_64",
        }
    }
}

impl Clients {
    /// What an administrator does once per account before anyone runs `up`: the permissions
    /// boundary from `bastion policy boundary`, as the managed policy bastion names.
    pub async fn create_boundary(&self) {
        let t = bastion::policy::Target {
            partition: "aws",
            account: "123456789012",
            region: REGION,
        };
        let r = self
            .iam
            .create_policy()
            .policy_name(bastion::policy::BOUNDARY_NAME)
            .path("/bastion/")
            .policy_document(bastion::policy::boundary_policy(&t).unwrap())
            .send()
            .await;
        if let Err(e) = r {
            let text = format!("{e:?}");
            assert!(text.contains("EntityAlreadyExists"), "{text}");
        }
    }

    pub async fn build_lab(&self, o: LabOptions) -> Lab {
        self.create_boundary().await;
        let ec2 = &self.ec2;
        let vpc = ec2
            .create_vpc()
            .cidr_block(format!("{}.0.0/16", o.cidr))
            .send()
            .await
            .unwrap()
            .vpc()
            .unwrap()
            .vpc_id()
            .unwrap()
            .to_string();
        let subnet = |cidr: String| {
            let vpc = vpc.clone();
            async move {
                ec2.create_subnet()
                    .vpc_id(vpc)
                    .cidr_block(cidr)
                    .availability_zone(format!(
                        "{}a",
                        ec2.config()
                            .region()
                            .map(|r| r.to_string())
                            .unwrap_or_default()
                    ))
                    .send()
                    .await
                    .unwrap()
                    .subnet()
                    .unwrap()
                    .subnet_id()
                    .unwrap()
                    .to_string()
            }
        };
        for attr in ["support", "hostnames"] {
            let req = ec2.modify_vpc_attribute().vpc_id(&vpc);
            let on = ec2t::AttributeBooleanValue::builder().value(true).build();
            let req = if attr == "support" {
                req.enable_dns_support(on)
            } else {
                req.enable_dns_hostnames(on)
            };
            req.send().await.unwrap();
        }
        let public_subnet = subnet(format!("{}.{}.0/24", o.cidr, o.public_third)).await;
        let private_subnet = subnet(format!("{}.{}.0/24", o.cidr, o.private_third)).await;

        let public_rt = ec2
            .create_route_table()
            .vpc_id(&vpc)
            .send()
            .await
            .unwrap()
            .route_table()
            .unwrap()
            .route_table_id()
            .unwrap()
            .to_string();
        if o.with_internet_gateway {
            let igw = ec2
                .create_internet_gateway()
                .send()
                .await
                .unwrap()
                .internet_gateway()
                .unwrap()
                .internet_gateway_id()
                .unwrap()
                .to_string();
            ec2.attach_internet_gateway()
                .internet_gateway_id(&igw)
                .vpc_id(&vpc)
                .send()
                .await
                .unwrap();
            ec2.create_route()
                .route_table_id(&public_rt)
                .destination_cidr_block("0.0.0.0/0")
                .gateway_id(&igw)
                .send()
                .await
                .unwrap();
        }
        ec2.associate_route_table()
            .route_table_id(&public_rt)
            .subnet_id(&public_subnet)
            .send()
            .await
            .unwrap();
        let private_rt = ec2
            .create_route_table()
            .vpc_id(&vpc)
            .send()
            .await
            .unwrap()
            .route_table()
            .unwrap()
            .route_table_id()
            .unwrap()
            .to_string();
        ec2.associate_route_table()
            .route_table_id(&private_rt)
            .subnet_id(&private_subnet)
            .send()
            .await
            .unwrap();

        let head_sg = ec2
            .create_security_group()
            .group_name(format!("{}-HeadNodeSecurityGroup", o.cluster))
            .description("head node")
            .vpc_id(&vpc)
            .tag_specifications(tags(
                ec2t::ResourceType::SecurityGroup,
                vec![
                    tag("aws:cloudformation:stack-name", o.cluster),
                    tag("aws:cloudformation:logical-id", "HeadNodeSecurityGroup"),
                ],
            ))
            .send()
            .await
            .unwrap()
            .group_id()
            .unwrap()
            .to_string();
        ec2.authorize_security_group_ingress()
            .group_id(&head_sg)
            .ip_permissions(
                ec2t::IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(22)
                    .to_port(22)
                    .ip_ranges(ec2t::IpRange::builder().cidr_ip(o.head_ssh_from).build())
                    .build(),
            )
            .send()
            .await
            .unwrap();

        let ami = match self
            .ssm
            .get_parameter()
            .name(format!(
                "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{}",
                o.head_arch
            ))
            .send()
            .await
        {
            Ok(p) => p.parameter().and_then(|p| p.value()).unwrap().to_string(),
            // Regions where moto has no such parameter: any AMI moto knows there.
            Err(_) => self.ec2.describe_images().send().await.unwrap().images()[0]
                .image_id()
                .unwrap()
                .to_string(),
        };
        let head_ip = format!("{}.{}.10", o.cidr, o.private_third);
        let run = ec2
            .run_instances()
            .image_id(ami)
            .instance_type(ec2t::InstanceType::C5Xlarge)
            .min_count(1)
            .max_count(1)
            .subnet_id(&private_subnet)
            .private_ip_address(&head_ip)
            .security_group_ids(&head_sg)
            .key_name("cluster-key")
            .tag_specifications(tags(
                ec2t::ResourceType::Instance,
                vec![
                    tag("Name", "HeadNode"),
                    tag("aws:cloudformation:stack-name", o.cluster),
                    tag("parallelcluster:cluster-name", o.cluster),
                    tag("parallelcluster:node-type", "HeadNode"),
                    tag("parallelcluster:version", "3.16.1"),
                    tag(
                        "parallelcluster:attributes",
                        "alinux2023, slurm, 3.16.1, x86_64",
                    ),
                ],
            ))
            .send()
            .await
            .unwrap();
        let head_node = run.instances()[0].instance_id().unwrap().to_string();
        if o.head_state_stopped {
            ec2.stop_instances()
                .instance_ids(&head_node)
                .send()
                .await
                .unwrap();
        }
        Lab {
            vpc,
            public_subnet,
            private_subnet,
            head_sg,
            head_node,
            head_ip,
        }
    }

    /// Live instances tagged with the bastion tag for `cluster`.
    pub async fn bastion_instances(&self, cluster: &str) -> Vec<ec2t::Instance> {
        let out = self
            .ec2
            .describe_instances()
            .filters(filter("tag:bastion:cluster", cluster))
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances().to_vec())
            .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
            .collect()
    }

    /// Everything in AWS that carries `bastion:cluster=<cluster>` or lives under `/bastion/`.
    pub async fn leftovers(&self, cluster: &str) -> Vec<String> {
        let mut left = Vec::new();
        for i in self.bastion_instances(cluster).await {
            left.push(format!("instance {}", i.instance_id().unwrap_or_default()));
        }
        let f = filter("tag:bastion:cluster", cluster);
        let sgs = self
            .ec2
            .describe_security_groups()
            .filters(f.clone())
            .send()
            .await
            .unwrap();
        for g in sgs.security_groups() {
            left.push(format!(
                "security group {}",
                g.group_id().unwrap_or_default()
            ));
        }
        let rules = self
            .ec2
            .describe_security_group_rules()
            .filters(f.clone())
            .send()
            .await
            .unwrap();
        for r in rules.security_group_rules() {
            left.push(format!(
                "rule {}",
                r.security_group_rule_id().unwrap_or_default()
            ));
        }
        // The root volume carries the instance's tags; it must go with the instance.
        let volumes = self
            .ec2
            .describe_volumes()
            .filters(f.clone())
            .send()
            .await
            .unwrap();
        for v in volumes.volumes() {
            left.push(format!("volume {}", v.volume_id().unwrap_or_default()));
        }
        let keys = self
            .ec2
            .describe_key_pairs()
            .filters(f)
            .send()
            .await
            .unwrap();
        for k in keys.key_pairs() {
            left.push(format!("key pair {}", k.key_name().unwrap_or_default()));
        }
        let roles = self
            .iam
            .list_roles()
            .path_prefix("/bastion/")
            .send()
            .await
            .unwrap();
        for r in roles.roles() {
            left.push(format!("role {}", r.role_name()));
        }
        let profiles = self
            .iam
            .list_instance_profiles()
            .path_prefix("/bastion/")
            .send()
            .await
            .unwrap();
        for p in profiles.instance_profiles() {
            left.push(format!("instance profile {}", p.instance_profile_name()));
        }
        left
    }

    /// The route table associated with `subnet`.
    pub async fn route_table_of(&self, subnet: &str) -> String {
        self.ec2
            .describe_route_tables()
            .filters(filter("association.subnet-id", subnet))
            .send()
            .await
            .unwrap()
            .route_tables()[0]
            .route_table_id()
            .unwrap()
            .to_string()
    }

    /// Stops an instance, as the proxy's idle timer does (moto: at once).
    pub async fn stop_instance(&self, id: &str) {
        self.ec2
            .stop_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap();
    }

    pub async fn set_instance_tags(&self, id: &str, kv: &[(&str, &str)]) {
        self.ec2
            .create_tags()
            .resources(id)
            .set_tags(Some(kv.iter().map(|(k, v)| tag(k, v)).collect()))
            .send()
            .await
            .unwrap();
    }

    /// Ingress rules of a group as (port, source) pairs, source a CIDR or a group id.
    pub async fn ingress(&self, group: &str) -> Vec<(i32, String)> {
        let out = self
            .ec2
            .describe_security_groups()
            .group_ids(group)
            .send()
            .await
            .unwrap();
        let mut rules = Vec::new();
        for g in out.security_groups() {
            for p in g.ip_permissions() {
                let port = p.from_port().unwrap_or(-1);
                for r in p.ip_ranges() {
                    rules.push((port, r.cidr_ip().unwrap_or_default().to_string()));
                }
                for r in p.user_id_group_pairs() {
                    rules.push((port, r.group_id().unwrap_or_default().to_string()));
                }
            }
        }
        rules.sort();
        rules
    }
}

/// A moto server for this test, or a return where moto is not installed (outside CI only:
/// `Moto::start` fails the test under `CI=true`).
#[macro_export]
macro_rules! moto_or_skip {
    () => {
        match $crate::common::Moto::start() {
            Some(m) => m,
            None => return,
        }
    };
}

pub fn filter(name: &str, value: &str) -> ec2t::Filter {
    ec2t::Filter::builder().name(name).values(value).build()
}

/// Where `up` keeps the ledger of cluster [`CLUSTER`] in moto's account and [`REGION`].
pub fn ledger_path(b: &Bastion) -> PathBuf {
    b.state_dir
        .join("123456789012")
        .join(REGION)
        .join(CLUSTER)
        .join("ledger.json")
}

/// The kinds of resource the ledger of cluster [`CLUSTER`] records, in order.
pub fn ledger_kinds(b: &Bastion) -> Vec<String> {
    let ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ledger_path(b)).unwrap()).unwrap();
    ledger["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect()
}

/// One run of the real binary against moto, with a state dir and HOME of its own.
pub struct Bastion {
    pub endpoint: String,
    pub state_dir: PathBuf,
    pub home: PathBuf,
    pub env: Vec<(String, String)>,
}

pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

impl Bastion {
    pub fn new(moto: &Moto, root: &Path) -> Bastion {
        let mut b = Bastion::offline(root);
        b.endpoint = moto.url.clone();
        b
    }

    /// A bastion with no AWS behind it (a closed loopback port), for what needs none.
    pub fn offline(root: &Path) -> Bastion {
        let state_dir = root.join("state");
        let home = root.join("home");
        std::fs::create_dir_all(&home).unwrap();
        // Empty AWS config files: no profile, no credentials from the test machine.
        std::fs::write(home.join("no-aws-config"), "").unwrap();
        std::fs::write(home.join("no-aws-credentials"), "").unwrap();
        Bastion {
            endpoint: "http://127.0.0.1:9".into(),
            state_dir,
            home,
            env: Vec::new(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.aws_command(env!("CARGO_BIN_EXE_bastion"));
        cmd.args(args);
        cmd
    }

    /// A program run as the user would run it beside bastion (the same HOME), its AWS calls
    /// pointed at moto: no profile, dummy keys, no instance metadata, stdin closed.
    pub fn aws_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_CONFIG_FILE", self.home.join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.home.join("no-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // bastion's own settings, also for a bastion that OpenSSH runs as a ProxyCommand.
            .env("BASTION_STATE_DIR", &self.state_dir)
            // Never look up the real public IP: a closed loopback port.
            .env("BASTION_IP_LOOKUP_URL", "http://127.0.0.1:9/")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_cmd(self.command(args))
    }

    /// `up --cluster demo --allow-cidr <ALLOW> --no-wait`: the proxy made, its bootstrap not
    /// waited for.
    pub fn up_no_wait(&self) -> Run {
        self.run(&[
            "up",
            "--cluster",
            CLUSTER,
            "--allow-cidr",
            ALLOW,
            "--no-wait",
        ])
    }

    pub fn run_cmd(&self, cmd: Command) -> Run {
        run_within(cmd, RUN_LIMIT)
    }
}

/// How long one run of a command may take before the test fails instead of hanging (the
/// slowest, `up` waiting out its own `--timeout 2`, takes about two minutes).
pub const RUN_LIMIT: Duration = Duration::from_secs(300);
/// What is kept of a run's stdout and of its stderr (a runaway writer cannot fill memory).
pub const OUTPUT_CAP: u64 = 16 << 20;

/// Runs `cmd` to its end within `limit`, its stdout and stderr read as they come (a full pipe
/// never stalls it) and capped. Past the limit its process group is killed (a `ProxyCommand`
/// grandchild too) and the test fails with what it printed so far.
pub fn run_within(cmd: Command, limit: Duration) -> Run {
    run_fed(cmd, None, limit)
}

/// [`run_within`], with `input` written to its stdin from a thread (then closed), so a command
/// that stops reading fails the test at the deadline instead of blocking the writer.
pub fn run_fed(cmd: Command, input: Option<Vec<u8>>, limit: Duration) -> Run {
    Watched::start_fed(cmd, input).finish(limit)
}

/// SIGKILL to a process group (`-PGID`), quietly: it may be gone already.
fn kill_group(group: &str) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", group])
        .stderr(Stdio::null())
        .status();
}

/// A command running in the background whose stdout and stderr are read as they come (capped),
/// so a test can wait for what it says, with a deadline, and for its end. Killed (its whole
/// process group) when dropped, also when the test panics.
pub struct Watched {
    /// The command line, for a failure's message.
    what: String,
    child: Option<Child>,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Watched {
    pub fn start(cmd: Command) -> Watched {
        Watched::start_fed(cmd, None)
    }

    /// [`Watched::start`], with `input` written to its stdin from a thread, then closed.
    pub fn start_fed(mut cmd: Command, input: Option<Vec<u8>>) -> Watched {
        use std::os::unix::process::CommandExt;
        use std::sync::{Arc, Mutex};
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let what = format!("{cmd:?}");
        let mut child = cmd.spawn().expect("the command starts");
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            });
        }
        let mut readers = Vec::new();
        let mut pump = |pipe: Box<dyn Read + Send>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let sink = buf.clone();
            readers.push(std::thread::spawn(move || {
                let mut pipe = pipe.take(OUTPUT_CAP);
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            }));
            buf
        };
        let stdout = pump(Box::new(child.stdout.take().expect("piped")));
        let stderr = pump(Box::new(child.stderr.take().expect("piped")));
        Watched {
            what,
            child: Some(child),
            stdout,
            stderr,
            readers,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Still running (not exited, not a zombie)?
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits until stderr holds `needle` at least `count` times; panics with what it holds
    /// after `limit`.
    pub fn wait_stderr(&self, needle: &str, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.stderr().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not seen {count} times on stderr in {limit:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the end (panicking after `limit`) and returns what it printed.
    pub fn finish(mut self, limit: Duration) -> Run {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("the child can be waited for") {
                break status;
            }
            if Instant::now() >= deadline {
                kill_group(&format!("-{}", child.id()));
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not finish within {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The pipes close with it. Something of its group (a `ProxyCommand` child) that still
        // holds them past the deadline fails the run as a hang would, its group killed only
        // then (a group whose leader is reaped and whose members are gone is not signalled:
        // its id may be another's by now).
        let settle = deadline.max(Instant::now() + Duration::from_secs(5));
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(10));
        }
        let held = self.readers.iter().any(|r| !r.is_finished());
        if held {
            kill_group(&format!("-{}", child.id()));
        }
        for r in std::mem::take(&mut self.readers) {
            let _ = r.join();
        }
        assert!(
            !held,
            "{} ended, but its pipes stayed open past {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.stdout(),
            self.stderr()
        );
        Run {
            status: status.code().unwrap_or(-1),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let group = format!("-{}", c.id());
            kill_group(&group);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Bastion {
    /// Starts the binary in the background, its output watched (see [`Watched`]).
    pub fn watch(&self, args: &[&str]) -> Watched {
        Watched::start(self.command(args))
    }
}

/// A child process killed when the test ends, also when it panics.
pub struct Guard(pub Option<std::process::Child>);

impl Guard {
    pub fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("the child is still guarded")
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("the child is still guarded").id()
    }

    /// Ctrl-C (SIGINT), then the exit status within `limit`; a lost Ctrl-C fails the test
    /// instead of hanging it.
    pub fn interrupt(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self
                .child()
                .try_wait()
                .expect("the child can be waited for")
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process {pid} ignored Ctrl-C for {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `data` through a forward on 127.0.0.1:`port` to an echo service and reads it back.
pub fn echo_through(port: u16, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut w = s.try_clone().unwrap();
    let owned = data.to_vec();
    let writer = std::thread::spawn(move || {
        w.write_all(&owned).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    // One byte past what was sent is enough to tell a forward that adds bytes.
    let mut back = Vec::with_capacity(data.len());
    (&mut s)
        .take(data.len() as u64 + 1)
        .read_to_end(&mut back)
        .unwrap();
    writer.join().unwrap();
    back
}

/// Waits until `file` contains `needle`; false after `limit` (no timing assertion: a deadline).
pub fn wait_for_text(file: &std::path::Path, needle: &str, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if std::fs::read_to_string(file)
            .unwrap_or_default()
            .contains(needle)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// The host key the tests' proxies publish in their `bastion:host-key` tag (and, where the
/// front serves it, on their console).
pub const PROXY_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

/// The SHA256 fingerprint of a public key line, as OpenSSH's `ssh-keygen -lf` prints it.
pub fn key_fingerprint(public_line: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key.pub");
    std::fs::write(&file, format!("{public_line}\n")).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// What `known_hosts` pins for `alias`, as OpenSSH finds it (`ssh-keygen -F`, hashed names
/// included); empty when nothing is pinned or there is no file.
pub fn pinned_lines(known_hosts: &Path, alias: &str) -> String {
    if !known_hosts.exists() {
        return String::new();
    }
    let out = Command::new("ssh-keygen")
        .args(["-F", alias, "-f"])
        .arg(known_hosts)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
