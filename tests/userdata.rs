//! The proxy's user-data: shellcheck-clean, and run for real with stub commands on PATH (dnf,
//! rpm, curl, aws, systemctl, dcv, ...) in a scratch root, to see the order of its steps, that
//! a second run changes nothing, and that a failure is reported in the instance's tags.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use bastion::userdata::{ProxyOs, Settings, render};

fn script(os: ProxyOs, idle: u32, dcv: bool) -> String {
    render(&Settings {
        cluster: "demo",
        os,
        pcluster_version: "3.16.1",
        idle_stop_minutes: idle,
        install_dcv: dcv,
    })
}

#[test]
fn both_variants_are_shellcheck_clean() {
    let Some(shellcheck) = common::require_tool("shellcheck", &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for os in [ProxyOs::Al2023, ProxyOs::Ubuntu2204] {
        for (idle, dcv) in [(60, true), (0, false)] {
            let path = dir.path().join(format!("{}-{idle}-{dcv}.sh", os.as_str()));
            std::fs::write(&path, script(os, idle, dcv)).unwrap();
            let out = Command::new(&shellcheck)
                .args(["-s", "bash"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "shellcheck {}:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// Stub commands: each appends its name and arguments to `calls`, keeps what it "installed" as
/// marker files in `state`, and fails when its name is listed in STUB_FAIL.
const STUB_PRELUDE: &str = r#"#!/bin/bash
name=$(basename "$0")
echo "$name $*" >>"$STUB_LOG"
for f in $STUB_FAIL; do [ "$f" = "$name" ] && { echo "stub $name fails" >&2; exit 1; }; done
mark() { touch "$STUB_STATE/$1"; }
has() { [ -e "$STUB_STATE/$1" ]; }
"#;

fn stub_bodies() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        (
            "curl",
            r#"case "$*" in
  *api/token*) echo token ;;
  *meta-data/instance-id*) echo i-0123456789abcdef0 ;;
  *placement/region*) echo us-east-1 ;;
  *) out=""; while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
     [ -n "$out" ] && echo stub >"$out" ;;
esac"#,
        ),
        ("aws", ""),
        ("systemctl", ""),
        ("dconf", ""),
        ("usermod", ""),
        ("logger", ""),
        ("gpg", ""),
        ("ssh-keygen", ""),
        ("snap", ""),
        ("sha256sum", "cat >/dev/null"),
        ("dcv", ""),
        // Keeps what it was given on stdin, as DCV's simple external authenticator would.
        (
            "dcvsimpleextauth",
            r#"cat >"$STUB_STATE/dcvsimpleextauth.stdin""#,
        ),
        (
            "dnf",
            r#"case "$1" in
  groupinstall) mark gdm ;;
  install) for a in "$@"; do case "$a" in
      *nice-dcv-server*) mark nice-dcv-server ;; *nice-dcv-web-viewer*) mark nice-dcv-web-viewer ;;
      *nice-xdcv*) mark nice-xdcv ;;
      *nice-dcv-simple-external-authenticator*) mark nice-dcv-simple-external-authenticator ;;
      ec2-instance-connect) mark ec2-instance-connect ;;
      nodejs) printf '#!/bin/bash\necho v18.20.0\n' >"$STUB_DIR/node"; chmod +x "$STUB_DIR/node" ;;
    esac; done ;;
esac"#,
        ),
        (
            "rpm",
            r#"[ "$1" = -q ] || exit 0
shift; for p in "$@"; do has "$p" || exit 1; done"#,
        ),
        (
            "apt-get",
            r#"[ "$1" = install ] || exit 0
for a in "$@"; do case "$a" in
  *nice-dcv-server*) mark nice-dcv-server ;; *nice-dcv-web-viewer*) mark nice-dcv-web-viewer ;;
  *nice-xdcv*) mark nice-xdcv ;;
  *nice-dcv-simple-external-authenticator*) mark nice-dcv-simple-external-authenticator ;;
  -*) ;; *) mark "$a" ;;
esac; done"#,
        ),
        (
            "dpkg",
            r#"[ "$1" = -s ] || exit 0
shift; for p in "$@"; do has "$p" || exit 1; done"#,
        ),
        (
            "tar",
            r#"dir=""; while [ $# -gt 0 ]; do [ "$1" = -C ] && dir=$2; shift; done
for v in amzn2023-x86_64 amzn2023-aarch64; do
  mkdir -p "$dir/nice-dcv-$DCV_STUB_VERSION-$v"
  touch "$dir/nice-dcv-$DCV_STUB_VERSION-$v"/{nice-dcv-server-1.rpm,nice-dcv-web-viewer-1.rpm,nice-xdcv-1.rpm,nice-dcv-simple-external-authenticator-1.rpm}
done
for v in ubuntu2204-x86_64 ubuntu2204-aarch64; do
  mkdir -p "$dir/nice-dcv-$DCV_STUB_VERSION-$v"
  touch "$dir/nice-dcv-$DCV_STUB_VERSION-$v"/{nice-dcv-server_1_amd64.deb,nice-dcv-web-viewer_1_amd64.deb,nice-xdcv_1_amd64.deb,nice-dcv-simple-external-authenticator_1_amd64.deb}
done
mkdir -p "$dir/bin"; printf '#!/bin/bash\necho v20.18.1\n' >"$dir/bin/node""#,
        ),
        (
            "python3",
            r#"[ "$1" = -m ] && [ "$2" = venv ] || exit 0
venv=$3; mkdir -p "$venv/bin"
cat >"$venv/bin/pip" <<'PIP'
#!/bin/bash
echo "pip $*" >>"$STUB_LOG"
venv=$(dirname "$(dirname "$0")")
case "$1" in
  install) for a in "$@"; do case "$a" in aws-parallelcluster==*) echo "${a#*==}" >"$venv/.version" ;; esac; done ;;
  show) [ -e "$venv/.version" ] || exit 1; echo "Name: aws-parallelcluster"; echo "Version: $(cat "$venv/.version")" ;;
esac
PIP
printf '#!/bin/bash\necho 3.16.1\n' >"$venv/bin/pcluster"
chmod +x "$venv/bin/pip" "$venv/bin/pcluster""#,
        ),
    ])
}

struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    stubs: PathBuf,
    log: PathBuf,
    state: PathBuf,
    script: PathBuf,
}

impl Sandbox {
    fn new(text: &str) -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let stubs = tmp.path().join("stubs");
        let state = tmp.path().join("stub-state");
        for d in [&root, &stubs, &state, &root.join("etc/ssh")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(
            root.join("etc/ssh/ssh_host_ed25519_key.pub"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTestsOnly root@proxy\n",
        )
        .unwrap();
        for (name, body) in stub_bodies() {
            let p = stubs.join(name);
            std::fs::write(&p, format!("{STUB_PRELUDE}{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let script = tmp.path().join("user-data.sh");
        std::fs::write(&script, text).unwrap();
        Sandbox {
            log: tmp.path().join("calls.log"),
            _tmp: tmp,
            root,
            stubs,
            state,
            script,
        }
    }

    /// Runs the script as cloud-init would (bash, as root), confined to the scratch root, with
    /// stubs first on PATH so no real package manager, service manager or network is touched.
    fn run(&self, fail: &str) -> (bool, Vec<String>) {
        let _ = std::fs::remove_file(&self.log);
        let status = Command::new("bash")
            .arg(&self.script)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", self.stubs.display()))
            .env("BASTION_ROOT", &self.root)
            .env("BASTION_IMDS", "http://imds.invalid")
            .env("STUB_LOG", &self.log)
            .env("STUB_STATE", &self.state)
            .env("STUB_DIR", &self.stubs)
            .env("STUB_FAIL", fail)
            .env("DCV_STUB_VERSION", bastion::userdata::DCV_VERSION)
            .status()
            .unwrap();
        let calls = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (status.success(), calls)
    }

    /// Runs a script the user-data wrote (under the scratch root) with the same stubs; returns
    /// its stdout and the stub calls it made.
    fn run_file(&self, rel: &str) -> (String, Vec<String>) {
        let _ = std::fs::remove_file(&self.log);
        let out = Command::new("bash")
            .arg(self.root.join(rel))
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", self.stubs.display()))
            .env("STUB_LOG", &self.log)
            .env("STUB_STATE", &self.state)
            .env("STUB_DIR", &self.stubs)
            .env("STUB_FAIL", "")
            .output()
            .unwrap();
        assert!(out.status.success(), "{rel}: {out:?}");
        let calls = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (String::from_utf8_lossy(&out.stdout).into_owned(), calls)
    }

    fn file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn bootstrap_log(&self) -> String {
        self.file("var/log/bastion-bootstrap.log")
    }
}

fn position(calls: &[String], needle: &str) -> usize {
    calls
        .iter()
        .position(|c| c.contains(needle))
        .unwrap_or_else(|| panic!("no call contains {needle:?}:\n{}", calls.join("\n")))
}

fn tag_calls(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.starts_with("aws ec2 create-tags"))
        .map(|c| {
            let json = c.split("--tags ").nth(1).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            format!(
                "{}={}",
                v[0]["Key"].as_str().unwrap(),
                v[0]["Value"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn al2023_publishes_ready_first_then_installs_the_desktop_and_is_idempotent() {
    let sb = Sandbox::new(&script(ProxyOs::Al2023, 60, true));
    let (ok, calls) = sb.run("");
    assert!(
        ok,
        "first run failed:\n{}\n{}",
        calls.join("\n"),
        sb.bootstrap_log()
    );

    let tags = tag_calls(&calls);
    assert_eq!(
        tags,
        vec![
            "bastion:state=bootstrapping",
            "bastion:host-key=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTestsOnly",
            "bastion:state=ready",
            "bastion:desktop=installing",
            "bastion:desktop=ready",
        ]
    );
    // Ready (the tunnel is usable) before anything slow is installed.
    let ready = position(&calls, r#""Key":"bastion:state","Value":"ready""#);
    assert!(ready < position(&calls, "dnf groupinstall -y Desktop"));
    let desktop = position(&calls, "dnf groupinstall");
    let dcv = position(&calls, "nice-dcv-server-1.rpm");
    let venv = position(&calls, "python3 -m venv");
    let pip = position(&calls, "pip install --quiet aws-parallelcluster==3.16.1");
    let done = calls
        .iter()
        .rposition(|c| c.contains("bastion:desktop"))
        .unwrap();
    assert!(
        desktop < dcv && dcv < venv && venv < pip && pip < done,
        "{}",
        calls.join("\n")
    );
    assert!(calls.iter().any(|c| {
        c.starts_with("aws ec2 create-tags --region us-east-1 --resources i-0123456789abcdef0")
    }));

    // What it leaves on the proxy.
    let dcv_conf = sb.file("etc/dcv/dcv.conf");
    assert!(
        dcv_conf.contains("web-listen-endpoints = ['127.0.0.1:8443']"),
        "{dcv_conf}"
    );
    // No more "DCV behind the tunnel needs no password": tokens, checked by the authenticator.
    assert!(
        !dcv_conf.contains("authentication = \"none\""),
        "{dcv_conf}"
    );
    assert!(
        dcv_conf.contains("auth-token-verifier = \"https://127.0.0.1:8444\""),
        "{dcv_conf}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.contains("nice-dcv-simple-external-authenticator-1.rpm"))
    );
    assert!(
        calls
            .iter()
            .any(|c| c == "systemctl enable --now dcvsimpleextauth")
    );
    // The token helper as bastion runs it over SSH: a fresh token, given to the authenticator
    // on stdin (never on a command line) for the proxy's session and its owner, and printed.
    let (token, helper_calls) = sb.run_file("usr/local/sbin/bastion-dcv-token");
    let token = token
        .trim()
        .strip_prefix("BastionDcvToken=")
        .unwrap_or_else(|| panic!("{token}"))
        .to_string();
    assert!(
        token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "{token}"
    );
    assert_eq!(
        helper_calls,
        vec!["dcvsimpleextauth add-user --append --session bastion --user ec2-user --auth-dir /var/run/dcvsimpleextauth".to_string()]
    );
    assert_eq!(
        std::fs::read_to_string(sb.state.join("dcvsimpleextauth.stdin")).unwrap(),
        token
    );
    assert_ne!(
        sb.run_file("usr/local/sbin/bastion-dcv-token").0,
        format!("BastionDcvToken={token}\n"),
        "a fresh token each time"
    );
    assert!(
        sb.file("etc/gdm/custom.conf")
            .contains("WaylandEnable=false")
    );
    assert!(
        sb.file("usr/local/sbin/bastion-dcv-session")
            .contains("--owner ec2-user")
    );
    assert!(
        sb.file("usr/local/sbin/bastion-idle-check")
            .contains("-ge 60")
    );
    assert!(
        sb.file("etc/systemd/system/bastion-idle.timer")
            .contains("OnUnitActiveSec=1min")
    );
    assert!(
        sb.file("etc/ssh/sshd_config.d/10-bastion.conf")
            .contains("PasswordAuthentication no")
    );
    assert!(
        sb.file("etc/dconf/db/local.d/00-bastion")
            .contains("lock-enabled=false")
    );
    assert!(sb.root.join("usr/local/bin/pcluster").is_symlink());
    assert!(sb.bootstrap_log().contains("bootstrap done"));
    assert!(
        !sb.root.join("var/lib/bastion/busy").exists(),
        "the idle timer's busy flag is cleared"
    );

    // A second run installs nothing again and leaves the same files.
    let gdm_before = sb.file("etc/gdm/custom.conf");
    let (ok, calls) = sb.run("");
    assert!(ok, "second run failed:\n{}", sb.bootstrap_log());
    for again in [
        "dnf groupinstall",
        "dnf install",
        "pip install",
        "python3 -m venv",
        "rpm --import",
    ] {
        assert!(
            !calls.iter().any(|c| c.starts_with(again)),
            "second run repeated {again:?}:\n{}",
            calls.join("\n")
        );
    }
    assert_eq!(sb.file("etc/gdm/custom.conf"), gdm_before);
    assert_eq!(
        sb.file("etc/gdm/custom.conf")
            .matches("WaylandEnable")
            .count(),
        1
    );
    assert_eq!(
        tag_calls(&calls).last().map(String::as_str),
        Some("bastion:desktop=ready")
    );
}

#[test]
fn a_failing_install_reports_desktop_failed_after_ready() {
    let sb = Sandbox::new(&script(ProxyOs::Al2023, 60, true));
    let (ok, calls) = sb.run("dnf");
    assert!(!ok, "the script must exit non-zero");
    let tags = tag_calls(&calls);
    assert!(
        tags.contains(&"bastion:state=ready".to_string()),
        "{tags:?}"
    );
    assert_eq!(
        tags.last().map(String::as_str),
        Some("bastion:desktop=failed"),
        "{tags:?}"
    );
    let log = sb.bootstrap_log();
    assert!(log.contains("FAILED") && log.contains("dnf"), "{log}");
}

#[test]
fn a_failure_before_ready_reports_state_failed() {
    let sb = Sandbox::new(&script(ProxyOs::Al2023, 60, true));
    // sshd reloads but the host key never appears, and ssh-keygen cannot make one.
    std::fs::remove_file(sb.root.join("etc/ssh/ssh_host_ed25519_key.pub")).unwrap();
    let text = std::fs::read_to_string(&sb.script)
        .unwrap()
        .replace("sleep 2", "sleep 0");
    std::fs::write(&sb.script, text).unwrap();
    let (ok, calls) = sb.run("ssh-keygen");
    assert!(!ok);
    let tags = tag_calls(&calls);
    assert_eq!(
        tags,
        vec!["bastion:state=bootstrapping", "bastion:state=failed"],
        "{tags:?}"
    );
}

#[test]
fn no_dcv_and_no_idle_stop_skip_those_steps() {
    let sb = Sandbox::new(&script(ProxyOs::Al2023, 0, false));
    let (ok, calls) = sb.run("");
    assert!(ok, "{}", sb.bootstrap_log());
    assert!(
        !calls
            .iter()
            .any(|c| c.contains("nice-dcv") || c.contains("groupinstall")),
        "{calls:?}"
    );
    assert!(
        !sb.root
            .join("etc/systemd/system/bastion-idle.timer")
            .exists()
    );
    assert!(
        calls.iter().any(|c| c.starts_with("pip install")),
        "pcluster is still installed"
    );
    let tags = tag_calls(&calls);
    assert!(
        tags.contains(&"bastion:state=ready".to_string()),
        "{tags:?}"
    );
    assert_eq!(
        tags.last().map(String::as_str),
        Some("bastion:desktop=ready")
    );
}

#[test]
fn ubuntu_installs_with_apt_and_debs() {
    let sb = Sandbox::new(&script(ProxyOs::Ubuntu2204, 60, true));
    let (ok, calls) = sb.run("");
    assert!(ok, "{}\n{}", calls.join("\n"), sb.bootstrap_log());
    let desktop = position(&calls, "apt-get install -y -q ubuntu-desktop gdm3");
    // The Instance Connect agent, before the proxy is said to be ready (teammates log in with it).
    let agent = position(&calls, "apt-get install -y -q ec2-instance-connect");
    assert!(agent < position(&calls, r#""Key":"bastion:state","Value":"ready""#));
    let dcv = position(&calls, "nice-dcv-server_1_amd64.deb");
    let venv = position(&calls, "apt-get install -y -q python3-venv");
    assert!(
        position(&calls, r#""Key":"bastion:state","Value":"ready""#) < desktop
            && desktop < dcv
            && dcv < venv
    );
    assert!(calls.iter().any(|c| c == "usermod -aG video dcv"));
    assert!(
        sb.file("usr/local/sbin/bastion-dcv-session")
            .contains("--owner ubuntu")
    );
    assert!(
        sb.file("etc/gdm3/custom.conf")
            .contains("WaylandEnable=false")
    );
    let (ok, calls) = sb.run("");
    assert!(ok);
    assert!(
        !calls.iter().any(|c| c.starts_with("apt-get install")),
        "second run: {calls:?}"
    );
}

/// EC2's documented limit (User Guide, "Run commands when you launch an EC2 instance with user
/// data input"): user data is limited to 16 KB in raw form, before base64. Written here, not
/// taken from the code under test.
#[test]
fn every_variant_fits_in_ec2s_user_data_limit() {
    const EC2_USER_DATA_LIMIT: usize = 16 * 1024;
    for os in [ProxyOs::Al2023, ProxyOs::Ubuntu2204] {
        for dcv in [true, false] {
            let text = script(os, 60, dcv);
            assert!(
                text.len() <= EC2_USER_DATA_LIMIT,
                "{os:?} dcv={dcv}: {} bytes",
                text.len()
            );
            eprintln!(
                "{os:?} dcv={dcv}: {} bytes of {EC2_USER_DATA_LIMIT}",
                text.len()
            );
        }
    }
}
