//! Running the built `bastion` as a user would: its environment pointed at moto, a deadline and
//! an output cap on every run, and the guards that kill what a test started.

use super::*;

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
    /// An /etc/hosts of the test's for every process run here (a private mount), for names
    /// the test serves (an EC2 Instance Connect Endpoint's).
    pub hosts: Option<PathBuf>,
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
            hosts: None,
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
        let mut cmd = match &self.hosts {
            None => Command::new(program),
            // A mount namespace of its own, where /etc/hosts is the test's; what it runs
            // (OpenSSH's ProxyCommand too) sees the same.
            Some(hosts) => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                    .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
                    .arg(hosts)
                    .arg(program);
                c
            }
        };
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
    /// `up` for the test cluster, admitting [`ALLOW`], without waiting for the bootstrap.
    pub fn up_no_wait(&self) -> Run {
        self.up_no_wait_with(&[])
    }

    /// [`Bastion::up_no_wait`] with more flags (`--output json`, `--keep-on-failure`, ...).
    pub fn up_no_wait_with(&self, extra: &[&str]) -> Run {
        let mut args = vec![
            "up",
            "--cluster",
            CLUSTER,
            "--allow-cidr",
            ALLOW,
            "--no-wait",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    pub fn run_cmd(&self, cmd: Command) -> Run {
        run_within(cmd, RUN_LIMIT)
    }
}

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
