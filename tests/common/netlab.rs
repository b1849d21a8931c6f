//! A network lab of Linux network namespaces with real OpenSSH sshd: a "proxy" host the test
//! reaches over a veth pair (10.77.N.2), and a "head node" host (10.78.N.10) that only the proxy
//! reaches. Before any address is used, both /24s are routed `unreachable` in the root namespace,
//! so nothing addressed to the lab can leave the machine; the namespaces have no default route.
//! Everything (processes, namespaces, routes) is removed on drop, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require_tool;

/// The login user of the head node's OS in the moto fixture (`alinux2023`), and of the proxy's
/// (`al2023`): both hosts have it.
pub const HEAD_LOGIN_USER: &str = "ec2-user";

/// On the lab's proxy, the operator's login (`ec2-user`, with passwordless sudo as the AMI gives
/// it) and the teammate user the user-data creates are ordinary users, not root: the product's
/// sshd configuration refuses root, and what a teammate may do is judged by uid.
pub const PROXY_OPERATOR_UID: u32 = 64_001;
pub const PROXY_TEAMMATE_UID: u32 = 64_002;

/// The shipped user-data, rendered by bastion for a proxy in front of `head_ip`, with its
/// functions defined and nothing run (its last line, `main "$@"`, left out).
pub fn userdata_functions(head_ip: &str) -> String {
    let text = bastion::userdata::render(&bastion::userdata::Settings {
        cluster: "lab",
        os: bastion::userdata::ProxyOs::Al2023,
        pcluster_version: "3.16.1",
        idle_stop_minutes: 60,
        install_dcv: true,
        head_ip: head_ip.parse().unwrap(),
    });
    text.trim_end()
        .strip_suffix("main \"$@\"")
        .expect("the user-data ends by calling main")
        .to_string()
}

pub struct NetLab {
    pub n: u8,
    pub proxy_ns: String,
    pub head_ns: String,
    pub proxy_ip: String,
    pub head_ip: String,
    pub dir: tempfile::TempDir,
    routes: Vec<String>,
    procs: Vec<(String, Child)>,
    /// Run the head node's sshd with a private /opt holding this directory's scripts.
    head_opt_scripts: Option<PathBuf>,
    /// Extra sshd_config lines per host (e.g. `PermitOpen` on the proxy).
    sshd_extra: Vec<(String, String)>,
    /// Run the proxy's sshd with a private /usr/local/sbin holding this directory's files.
    proxy_sbin: Option<PathBuf>,
    /// The proxy's filesystem root as the shipped user-data writes it (`BASTION_ROOT`).
    proxy_root: PathBuf,
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = sh(args) {
        panic!("lab setup failed: {e}");
    }
}

pub fn sshd_path() -> Option<PathBuf> {
    require_tool("sshd", &[PathBuf::from("/usr/sbin/sshd")])
}

/// Root, `ip` and sshd are needed; outside CI a machine without them skips.
pub fn available() -> bool {
    let root = unsafe_geteuid() == 0;
    if !root {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the network-namespace tests need root");
        }
        super::skip("the network-namespace tests need root");
        return false;
    }
    require_tool(
        "ip",
        &[PathBuf::from("/usr/sbin/ip"), PathBuf::from("/sbin/ip")],
    )
    .is_some()
        && sshd_path().is_some()
        && require_tool("ssh-keygen", &[]).is_some()
}

fn unsafe_geteuid() -> u32 {
    // `id -u` avoids a libc dependency for one call.
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

impl NetLab {
    pub fn new() -> NetLab {
        // Claim a free lab number: creating the namespace is the lock. A lab whose owner died
        // without cleaning up (a killed test run) is reclaimed.
        let owners = Path::new("/run/bastion-lab");
        std::fs::create_dir_all(owners).unwrap();
        // Claims are serialized (threads and processes alike), so an owner file is always
        // written before another claimant looks at it.
        let claim_lock = std::fs::File::create(owners.join(".lock")).unwrap();
        claim_lock.lock().unwrap();
        let mut n = 0u8;
        for candidate in 1..=250u8 {
            if sh(&["ip", "netns", "add", &format!("bst-p-{candidate}")]).is_err() {
                let owner =
                    std::fs::read_to_string(owners.join(candidate.to_string())).unwrap_or_default();
                let alive = owner
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if alive {
                    continue;
                }
                remove_lab(candidate);
                if sh(&["ip", "netns", "add", &format!("bst-p-{candidate}")]).is_err() {
                    continue;
                }
            }
            std::fs::write(
                owners.join(candidate.to_string()),
                std::process::id().to_string(),
            )
            .unwrap();
            n = candidate;
            break;
        }
        drop(claim_lock);
        assert!(n > 0, "no free lab number");
        let mut lab = NetLab {
            n,
            proxy_ns: format!("bst-p-{n}"),
            head_ns: format!("bst-h-{n}"),
            proxy_ip: format!("10.77.{n}.2"),
            head_ip: format!("10.78.{n}.10"),
            dir: tempfile::tempdir().unwrap(),
            routes: Vec::new(),
            procs: Vec::new(),
            head_opt_scripts: None,
            sshd_extra: Vec::new(),
            proxy_sbin: None,
            proxy_root: PathBuf::new(),
        };
        lab.proxy_root = lab.path("proxy-root");
        // The proxy's users read their authorized keys from the lab directory (sshd reads them
        // as the user), so it may be passed through, though not listed.
        std::fs::set_permissions(
            lab.dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .unwrap();
        // Safety first: the lab ranges go nowhere from the root namespace.
        for range in [format!("10.77.{n}.0/24"), format!("10.78.{n}.0/24")] {
            must(&["ip", "route", "replace", "unreachable", &range]);
            lab.routes.push(range);
        }
        let (p, h) = (lab.proxy_ns.clone(), lab.head_ns.clone());
        must(&["ip", "netns", "add", &h]);
        let (root_if, proxy_if) = (format!("bst-r{n}"), format!("bst-pr{n}"));
        let (proxy_head_if, head_if) = (format!("bst-ph{n}"), format!("bst-hp{n}"));
        must(&[
            "ip", "link", "add", &root_if, "type", "veth", "peer", "name", &proxy_if,
        ]);
        must(&["ip", "link", "set", &proxy_if, "netns", &p]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("10.77.{n}.1/30"),
            "dev",
            &root_if,
        ]);
        must(&["ip", "link", "set", &root_if, "up"]);
        must(&[
            "ip",
            "link",
            "add",
            &proxy_head_if,
            "type",
            "veth",
            "peer",
            "name",
            &head_if,
        ]);
        must(&["ip", "link", "set", &proxy_head_if, "netns", &p]);
        must(&["ip", "link", "set", &head_if, "netns", &h]);
        let in_ns = |ns: &str, args: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", ns];
            full.extend_from_slice(args);
            must(&full);
        };
        in_ns(&p, &["ip", "link", "set", "lo", "up"]);
        in_ns(
            &p,
            &[
                "ip",
                "addr",
                "add",
                &format!("10.77.{n}.2/30"),
                "dev",
                &proxy_if,
            ],
        );
        in_ns(&p, &["ip", "link", "set", &proxy_if, "up"]);
        in_ns(
            &p,
            &[
                "ip",
                "addr",
                "add",
                &format!("10.78.{n}.1/24"),
                "dev",
                &proxy_head_if,
            ],
        );
        in_ns(&p, &["ip", "link", "set", &proxy_head_if, "up"]);
        in_ns(&h, &["ip", "link", "set", "lo", "up"]);
        in_ns(
            &h,
            &[
                "ip",
                "addr",
                "add",
                &format!("10.78.{n}.10/24"),
                "dev",
                &head_if,
            ],
        );
        in_ns(&h, &["ip", "link", "set", &head_if, "up"]);
        std::fs::create_dir_all("/run/sshd").unwrap();
        // What the proxy's user-data writes for sshd, by the shipped function itself.
        lab.run_userdata("harden_sshd");
        lab.start_sshd("proxy");
        lab.start_sshd("head");
        lab
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ns_of(&self, host: &str) -> (&str, &str) {
        match host {
            "proxy" => (&self.proxy_ns, &self.proxy_ip),
            _ => (&self.head_ns, &self.head_ip),
        }
    }

    /// The host's sshd public key line (`ssh-ed25519 AAAA...`).
    pub fn host_key(&self, host: &str) -> String {
        let text = std::fs::read_to_string(self.path(&format!("{host}_host_ed25519.pub"))).unwrap();
        let mut parts = text.split_whitespace();
        format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
    }

    /// Authorizes a public key line for `host`'s users.
    pub fn authorize(&self, host: &str, public_key: &str) {
        use std::io::Write;
        let path = self.path(&format!("{host}_authorized_keys"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(f, "{}", public_key.trim()).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
    }

    /// Runs one function of the shipped user-data as cloud-init would (bash, as root), its
    /// files written under the lab's proxy root; only `systemctl` is a no-op (no systemd here).
    /// With `in_proxy`, inside the proxy's sshd's network and mount namespaces (its users, its
    /// firewall). Panics with the bootstrap log when it fails.
    pub fn run_userdata(&self, function: &str) {
        let stubs = self.path("userdata-stubs");
        std::fs::create_dir_all(&stubs).unwrap();
        let systemctl = stubs.join("systemctl");
        std::fs::write(&systemctl, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(
            &systemctl,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let script = self.path("user-data-functions.sh");
        std::fs::write(
            &script,
            format!("{}\n{function}\n", userdata_functions(&self.head_ip)),
        )
        .unwrap();
        let mut cmd = match self.sshd_pid("proxy") {
            Some(pid) if function != "harden_sshd" => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &pid.to_string(), "-m", "-n", "bash"]);
                c
            }
            _ => Command::new("bash"),
        };
        let out = cmd
            .arg(&script)
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", stubs.display()),
            )
            .env("BASTION_ROOT", &self.proxy_root)
            .env("HOME", "/root")
            .output()
            .unwrap();
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.proxy_root.join("var/log/bastion-bootstrap.log"))
                    .unwrap_or_default();
            panic!("the user-data's {function} failed: {out:?}\n{log}");
        }
    }

    /// The pid of `host`'s sshd (its network and mount namespaces are the host's).
    pub fn sshd_pid(&self, host: &str) -> Option<u32> {
        let name = format!("sshd-{host}");
        self.procs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.id())
    }

    /// Runs `args` on `host` as `uid` (its sshd's view: users, mounts, network); returns
    /// whether it succeeded, and its stdout and stderr.
    pub fn exec_as(&self, host: &str, uid: u32, args: &[&str]) -> (bool, String) {
        let pid = self.sshd_pid(host).expect("the host's sshd runs");
        let id = uid.to_string();
        let out = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "-n", "setpriv"])
            .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Sets the proxy's side of the link from the test machine down or up: packets vanish as on
    /// a dead Wi-Fi (no reset, no error), the way keepalives must find out.
    pub fn set_proxy_link(&self, up: bool) {
        let dev = format!("bst-pr{}", self.n);
        let state = if up { "up" } else { "down" };
        must(&[
            "ip",
            "netns",
            "exec",
            &self.proxy_ns,
            "ip",
            "link",
            "set",
            &dev,
            state,
        ]);
    }

    /// Adds lines to `host`'s sshd_config; they apply from its next (re)start.
    pub fn add_sshd_config(&mut self, host: &str, lines: &str) {
        self.sshd_extra.push((host.to_string(), lines.to_string()));
    }

    /// Starts (or restarts) sshd on `host`, generating its host key when there is none.
    pub fn start_sshd(&mut self, host: &str) {
        self.stop(&format!("sshd-{host}"));
        let key = self.path(&format!("{host}_host_ed25519"));
        if !key.exists() {
            Self::key_pair(self.dir.path(), &format!("{host}_host_ed25519"));
        }
        let (ns, ip) = self.ns_of(host);
        let (ns, ip) = (ns.to_string(), ip.to_string());
        let config = self.path(&format!("{host}_sshd_config"));
        // sshd takes the first value of a keyword: extra lines go first.
        let extra: String = self
            .sshd_extra
            .iter()
            .filter(|(h, _)| h == host)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        // An extra HostKey replaces the lab's ed25519 one (a host re-keyed to another algorithm).
        let host_key = if extra.lines().any(|l| l.starts_with("HostKey ")) {
            String::new()
        } else {
            format!("HostKey {}\n", key.display())
        };
        // The lab's own lines. On the proxy, the user-data's sshd configuration comes first, as
        // the distribution's `Include sshd_config.d/*.conf` puts it, and decides: the lab sets
        // none of its keywords (sshd keeps the first value it reads, so a lab line could only
        // mask the product's).
        let mut lab_lines = vec![
            format!("ListenAddress {ip}"),
            "Port 22".into(),
            format!("PidFile {}", self.path(&format!("{host}.pid")).display()),
            "UsePAM no".into(),
            "StrictModes no".into(),
            "PermitRootLogin prohibit-password".into(),
            "PasswordAuthentication no".into(),
            "KbdInteractiveAuthentication no".into(),
            format!(
                "AuthorizedKeysFile {}",
                self.path(&format!("{host}_authorized_keys")).display()
            ),
            "AllowTcpForwarding yes".into(),
            "PermitTTY yes".into(),
            "LogLevel ERROR".into(),
            "AcceptEnv TERM".into(),
            "Subsystem sftp internal-sftp".into(),
        ];
        let mut head = String::new();
        if host == "proxy" {
            let dropin = self.proxy_root.join("etc/ssh/sshd_config.d");
            let product = product_keywords(&dropin);
            assert!(
                !product.is_empty(),
                "the user-data wrote no sshd configuration"
            );
            lab_lines.retain(|l| !product.contains(&keyword(l)));
            for l in extra.lines() {
                assert!(
                    !product.contains(&keyword(l)),
                    "a lab line sets {l:?}, which the proxy's user-data sets: it would mask the product's"
                );
            }
            head = format!("Include {}/*.conf\n", dropin.display());
        }
        let lab_text: String = lab_lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&config, head + &extra + &host_key + &lab_text).unwrap();
        let log = self.path(&format!("{host}_sshd.log"));
        let sshd = format!(
            "exec {} -D -E {} -f {}",
            sshd_path().unwrap().display(),
            log.display(),
            config.display()
        );
        // Each sshd has a mount namespace of its own, so what is mounted here is seen by that
        // sshd and its sessions only, and is gone with them; the test machine's files are never
        // written.
        // Both hosts know the login user of their OS (alinux2023: `ec2-user`, the name
        // `pcluster ssh` and `connect`'s default log in as, on the head node and on the proxy):
        // a copy of /etc/passwd with that name added, over /etc/passwd. It is an alias of root
        // (uid 0), because sshd reads the lab's authorized_keys file as the user, and the lab
        // directory is root's.
        let passwd = self.path(&format!("{host}_passwd"));
        let mut text = std::fs::read_to_string("/etc/passwd").unwrap();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let mut script = String::new();
        if host == "proxy" {
            // The AMI's login user, with its sudo rule as cloud-init writes it, and the user
            // the user-data creates for teammates (`useradd --system`, its shell `nologin`).
            let home = self.path("proxy-home");
            std::fs::create_dir_all(&home).unwrap();
            must(&[
                "chown",
                &format!("{PROXY_OPERATOR_UID}:{PROXY_OPERATOR_UID}"),
                home.to_str().unwrap(),
            ]);
            let teammate = bastion::userdata::TEAMMATE_USER;
            let nologin = ["/usr/sbin/nologin", "/sbin/nologin"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .unwrap_or("/bin/false");
            text.push_str(&format!(
                "{HEAD_LOGIN_USER}:x:{PROXY_OPERATOR_UID}:{PROXY_OPERATOR_UID}::{home}:/bin/sh\n\
                 {teammate}:x:{PROXY_TEAMMATE_UID}:{PROXY_TEAMMATE_UID}::/nonexistent:{nologin}\n",
                home = home.display()
            ));
            let sudoers = self.path("proxy-sudoers.d");
            std::fs::create_dir_all(&sudoers).unwrap();
            std::fs::write(
                sudoers.join("90-cloud-init-users"),
                format!("{HEAD_LOGIN_USER} ALL=(ALL) NOPASSWD:ALL\n"),
            )
            .unwrap();
            script.push_str(&format!(
                "mount -t tmpfs -o mode=0755 tmpfs /etc/sudoers.d && \
                 cp {}/90-cloud-init-users /etc/sudoers.d/ && chmod 0440 /etc/sudoers.d/* && ",
                sudoers.display()
            ));
            // Their shadow entries (no password), which PAM's account check reads for sudo.
            let shadow = self.path("proxy_shadow");
            let mut text = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!(
                "{HEAD_LOGIN_USER}:*:20000:0:99999:7:::\n{teammate}:*:20000:0:99999:7:::\n"
            ));
            std::fs::write(&shadow, text).unwrap();
            std::fs::set_permissions(&shadow, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            script.push_str(&format!(
                "mount --bind {} /etc/shadow && ",
                shadow.display()
            ));
        } else {
            text.push_str(&format!(
                "{HEAD_LOGIN_USER}:x:0:0:{HEAD_LOGIN_USER}:/root:/bin/sh\n"
            ));
        }
        std::fs::write(&passwd, text).unwrap();
        script.push_str(&format!(
            "mount --bind {} /etc/passwd && ",
            passwd.display()
        ));
        if host == "head" {
            if let Some(dir) = &self.head_opt_scripts {
                // A tmpfs over /opt holding the ParallelCluster scripts.
                script.push_str(&format!(
                    "mount -t tmpfs tmpfs /opt && mkdir -p /opt/parallelcluster/scripts && \
                     cp -r {}/. /opt/parallelcluster/scripts/ && chmod -R a+rx /opt/parallelcluster && ",
                    dir.display()
                ));
            }
        } else if let Some(dir) = &self.proxy_sbin {
            // A tmpfs over /usr/local/sbin holding what the proxy's user-data would install,
            // root's and not writable by others, as sshd requires of an AuthorizedKeysCommand.
            script.push_str(&format!(
                "mount -t tmpfs -o mode=0755 tmpfs /usr/local/sbin && cp -r {}/. /usr/local/sbin/ && \
                 chmod -R 0755 /usr/local/sbin && ",
                dir.display()
            ));
        }
        let script = script + &sshd;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.procs.push((format!("sshd-{host}"), child));
        self.wait_port(host, 22);
    }

    /// Runs a long-lived process inside a host's namespace; stopped on drop.
    pub fn spawn_in(&mut self, host: &str, name: &str, args: &[&str]) {
        let (ns, _) = self.ns_of(host);
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.procs.push((name.to_string(), child));
    }

    /// Runs a command in a host's namespace and returns its stdout.
    pub fn exec_in(&self, host: &str, args: &[&str]) -> String {
        let (ns, _) = self.ns_of(host);
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `host` listens on `port` (checked from inside the proxy, which reaches both).
    pub fn wait_port(&self, host: &str, port: u16) {
        let (_, ip) = self.ns_of(host);
        let probe = format!("exec 3<>/dev/tcp/{ip}/{port}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let ok = Command::new("ip")
                .args(["netns", "exec", &self.proxy_ns, "bash", "-c", &probe])
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{host} never listened on {port}");
    }

    pub fn stop(&mut self, name: &str) {
        let mut kept = Vec::new();
        for (n, mut c) in self.procs.drain(..) {
            if n == name {
                let _ = c.kill();
                let _ = c.wait();
            } else {
                kept.push((n, c));
            }
        }
        self.procs = kept;
    }

    /// Replaces a host's key (a rebuilt head node) and restarts its sshd.
    pub fn new_host_key(&mut self, host: &str) {
        let key = self.path(&format!("{host}_host_ed25519"));
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        self.start_sshd(host);
    }

    /// Puts these files in the head node's /opt/parallelcluster/scripts (a private mount; see
    /// `start_sshd`) and restarts its sshd. An empty list: a head node without the scripts.
    /// Puts `files` in the proxy's /usr/local/sbin (for its sshd and sessions only) and
    /// restarts its sshd.
    pub fn set_proxy_sbin(&mut self, files: &[(&str, &str)]) {
        let dir = self.path("proxy-sbin");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, body) in files {
            std::fs::write(dir.join(name), body).unwrap();
        }
        self.proxy_sbin = Some(dir);
        self.start_sshd("proxy");
    }

    pub fn set_head_scripts(&mut self, files: &[(&str, &str)]) {
        let dir = self.path("head-opt-scripts");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, body) in files {
            std::fs::write(dir.join(name), body).unwrap();
        }
        self.head_opt_scripts = Some(dir);
        self.start_sshd("head");
    }

    pub fn key_pair(dir: &Path, name: &str) -> (PathBuf, String) {
        let path = dir.join(name);
        must(&[
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            name,
            "-f",
            path.to_str().unwrap(),
        ]);
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        (path, public.trim().to_string())
    }
}

/// Removes lab `n`: processes in its namespaces, the namespaces, the root veth, the routes.
/// A configuration line's keyword, as sshd compares them (case-insensitive).
fn keyword(line: &str) -> String {
    line.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Every keyword the configuration files in `dir` set, in Match blocks or not.
fn product_keywords(dir: &Path) -> Vec<String> {
    let mut words = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for l in text.lines() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') || keyword(l) == "match" {
                continue;
            }
            words.push(keyword(l));
        }
    }
    words
}

fn remove_lab(n: u8) {
    for ns in [format!("bst-p-{n}"), format!("bst-h-{n}")] {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = sh(&["kill", "-9", pid]);
            }
        }
        let _ = sh(&["ip", "netns", "del", &ns]);
    }
    let _ = sh(&["ip", "link", "del", &format!("bst-r{n}")]);
    for range in [format!("10.77.{n}.0/24"), format!("10.78.{n}.0/24")] {
        let _ = sh(&["ip", "route", "del", "unreachable", &range]);
    }
    let _ = std::fs::remove_file(format!("/run/bastion-lab/{n}"));
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for (_, mut c) in self.procs.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        remove_lab(self.n);
    }
}
