//! The proxy's user-data: shellcheck-clean, and run for real with stub commands on PATH (dnf,
//! rpm, curl, aws, systemctl, dcv, ...) in a scratch root, to see the order of its steps, that
//! a second run changes nothing, and that a failure is reported in the instance's tags.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use bastion::userdata::{DCV_KEY_FINGERPRINT, ProxyOs, Settings, render};

fn script(os: ProxyOs, idle: u32, dcv: bool) -> String {
    render(&Settings {
        cluster: "demo",
        os,
        pcluster_version: "3.16.1",
        idle_stop_minutes: idle,
        install_dcv: dcv,
        head_ip: "10.0.1.10".parse().unwrap(),
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
        // Answers only the URLs in $STUB_URLS (the real addresses, each with its fixture's
        // bytes); any other fails as `curl -f` fails on a 404.
        (
            "curl",
            r#"url=""; out=""
while [ $# -gt 0 ]; do case "$1" in -o) out=$2; shift ;; -X | -H) shift ;; http*) url=$1 ;; esac; shift; done
body=$(awk -F'\t' -v u="$url" '$1 == u { print $2 }' "$STUB_URLS")
if [ -z "$body" ]; then echo "curl: (22) The requested URL returned error: 404 ($url)" >&2; exit 22; fi
if [ -n "$out" ]; then cat "$body" >"$out"; else cat "$body"; fi"#,
        ),
        ("aws", ""),
        // The established SSH sessions: $STUB_SS (one, on local port 22), listed only when
        // asked for established TCP connections to local port 22, as `ss` filters them.
        (
            "ss",
            r#"case "$*" in
  *"-Htn state established ( sport = :22 )"*) [ -n "${STUB_SS:-}" ] && echo "$STUB_SS" ;;
esac
exit 0"#,
        ),
        ("systemctl", ""),
        ("dconf", ""),
        ("usermod", ""),
        // A user exists once `useradd` made it (its last argument is the name).
        ("id", r#"[ "$1" = -u ] && has "user-$2""#),
        ("useradd", r#"mark "user-${!#}""#),
        ("nft", ""),
        ("logger", ""),
        ("ssh-keygen", ""),
        ("snap", ""),
        ("dcv", ""),
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
        // What is installed (the real rpmkeys checks signatures, below).
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

/// The real tools the scripts may run besides the stubs: nothing else is on their PATH, so a
/// tool of this machine (its own `node`, `aws`, `dnf`) can never stand in for a step.
const REAL_TOOLS: &[&str] = &[
    "awk",
    "basename",
    "bash",
    "cat",
    "chmod",
    "cut",
    "dirname",
    "gpg",
    "grep",
    "gzip",
    "head",
    "ln",
    "mkdir",
    "mktemp",
    "mv",
    "od",
    "rpmkeys",
    "rm",
    "sed",
    "seq",
    "sha256sum",
    "sleep",
    "tar",
    "touch",
    "tr",
    "uname",
    "xz",
];

/// Where the proxy fetches from, as the vendors publish them (written here, not taken from the
/// code under test): DCV's download page and Node.js's release directory.
const DCV_GPG_URL: &str = "https://d1uj6qtbmh3dt5.cloudfront.net/NICE-GPG-KEY";
const NODE_VERSION: &str = "v20.18.1";
fn dcv_url(os_arch: &str) -> String {
    format!(
        "https://d1uj6qtbmh3dt5.cloudfront.net/2025.0/Servers/nice-dcv-2025.0-20103-{os_arch}.tgz"
    )
}
fn node_url(file: &str) -> String {
    format!("https://nodejs.org/dist/{NODE_VERSION}/{file}")
}

/// NICE's signing key, played by a key of the test's own, with DCV's four packages built by the
/// real rpmbuild and signed by the real rpmsign: with that key (`nice/`), with another (`other/`)
/// and not at all (`unsigned/`); `nice.asc` and `other.asc` the public keys, `fingerprint`
/// the first's. Built once per test binary: the user-data checks them with the real gpg and
/// rpmkeys.
struct DcvSigning {
    dir: PathBuf,
    fingerprint: String,
}

const DCV_PACKAGES: [&str; 3] = ["nice-dcv-server", "nice-dcv-web-viewer", "nice-xdcv"];

fn dcv_signing() -> &'static DcvSigning {
    static SIGNING: std::sync::OnceLock<DcvSigning> = std::sync::OnceLock::new();
    SIGNING.get_or_init(|| {
        for tool in ["gpg", "gpgconf", "rpmbuild", "rpmsign"] {
            common::require_tool(tool, &[])
                .unwrap_or_else(|| panic!("{tool} is needed to build signed packages"));
        }
        let dir = tempfile::tempdir().unwrap().keep();
        let packages = DCV_PACKAGES.join(" ");
        sh(
            &format!(
                "export GNUPGHOME=\"$PWD/gnupg\"; mkdir -m 700 \"$GNUPGHOME\"
                 for k in nice other; do
                   gpg --batch --quiet --passphrase '' --quick-gen-key \"$k <$k@example.invalid>\" rsa2048 sign never 2>/dev/null
                   gpg --batch --armor --export \"$k@example.invalid\" >\"$k.asc\"
                 done
                 mkdir -p unsigned nice other
                 for p in {packages}; do
                   printf 'Name: %s\\nVersion: 1\\nRelease: 1\\nSummary: stand-in\\nLicense: none\\nBuildArch: noarch\\n%%%%description\\nstand-in\\n%%%%files\\n' \"$p\" >\"$p.spec\"
                   rpmbuild -bb --quiet --define \"_topdir $PWD/rb\" \"$p.spec\"
                   cp \"rb/RPMS/noarch/$p-1-1.noarch.rpm\" \"unsigned/$p-1.rpm\"
                   for k in nice other; do
                     cp \"unsigned/$p-1.rpm\" \"$k/\"
                     rpmsign --define \"_gpg_name $k@example.invalid\" --define \"__gpg $(command -v gpg)\" --addsign \"$k/$p-1.rpm\" >/dev/null
                   done
                 done
                 gpg --batch --with-colons --show-keys nice.asc | awk -F: '$1 == \"fpr\" {{ print $10; exit }}' >fingerprint
                 gpgconf --kill gpg-agent"
            ),
            &dir,
        );
        let fingerprint = std::fs::read_to_string(dir.join("fingerprint"))
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(fingerprint.len(), 40, "{fingerprint}");
        DcvSigning { dir, fingerprint }
    })
}

struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    stubs: PathBuf,
    log: PathBuf,
    state: PathBuf,
    script: PathBuf,
    urls: PathBuf,
    fixtures: PathBuf,
}

fn sh(cmd: &str, dir: &std::path::Path) {
    let out = Command::new("bash")
        .args(["-euc", cmd])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd}: {out:?}");
}

impl Sandbox {
    fn new(text: &str) -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let stubs = tmp.path().join("stubs");
        let state = tmp.path().join("stub-state");
        let fixtures = tmp.path().join("fixtures");
        for d in [&root, &stubs, &state, &fixtures, &root.join("etc/ssh")] {
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
        for tool in REAL_TOOLS {
            let real = common::require_tool(tool, &[])
                .unwrap_or_else(|| panic!("{tool} is needed to run the user-data"));
            std::os::unix::fs::symlink(real, stubs.join(tool)).unwrap();
        }
        // The clock: the real `date`, except `date +%s` answers $STUB_NOW when it is set (the
        // idle check's minutes).
        let date = common::require_tool("date", &[]).expect("date");
        let p = stubs.join("date");
        std::fs::write(
            &p,
            format!(
                "#!/bin/bash\n[ -n \"${{STUB_NOW:-}}\" ] && [ \"$*\" = +%s ] && {{ echo \"$STUB_NOW\"; exit 0; }}\nexec {} \"$@\"\n",
                date.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = tmp.path().join("user-data.sh");
        // NICE's key is played by the test's own: its fingerprint is the one pinned here.
        assert!(
            text.contains(DCV_KEY_FINGERPRINT),
            "the user-data pins DCV's key"
        );
        let text = text.replace(DCV_KEY_FINGERPRINT, &dcv_signing().fingerprint);
        std::fs::write(&script, text).unwrap();
        let sb = Sandbox {
            log: tmp.path().join("calls.log"),
            urls: tmp.path().join("urls.tsv"),
            _tmp: tmp,
            root,
            stubs,
            state,
            script,
            fixtures,
        };
        sb.make_fixtures();
        sb
    }

    /// Real archives, as the vendors ship them (the names inside are what the scripts expect),
    /// and Node's checksum list computed over them by the real sha256sum.
    fn make_fixtures(&self) {
        let f = &self.fixtures;
        let mut urls = vec![
            (
                "http://imds.invalid/latest/api/token".to_string(),
                "imds-token".to_string(),
                "token\n",
            ),
            (
                "http://imds.invalid/latest/meta-data/instance-id".to_string(),
                "imds-id".to_string(),
                "i-0123456789abcdef0\n",
            ),
            (
                "http://imds.invalid/latest/meta-data/placement/region".to_string(),
                "imds-region".to_string(),
                "us-east-1\n",
            ),
            (DCV_GPG_URL.to_string(), "NICE-GPG-KEY".to_string(), ""),
            // DCV's simple external authenticator, as AWS's guide has it: plain HTTP on
            // loopback (an HTTPS request to it fails, as curl's would).
            (
                "http://127.0.0.1:8444".to_string(),
                "extauth".to_string(),
                "<auth result=\"no\"/>\n",
            ),
        ];
        self.serve_dcv_key("nice");
        self.pack_dcv_rpms("nice");
        for arch in ["x86_64", "aarch64"] {
            urls.push((
                dcv_url(&format!("amzn2023-{arch}")),
                format!("nice-dcv-2025.0-20103-amzn2023-{arch}.tgz"),
                "",
            ));
        }
        for (os, files) in [(
            "ubuntu2204",
            "nice-dcv-server_1_amd64.deb nice-dcv-web-viewer_1_amd64.deb nice-xdcv_1_amd64.deb",
        )] {
            for arch in ["x86_64", "aarch64"] {
                let name = format!("nice-dcv-2025.0-20103-{os}-{arch}");
                sh(
                    &format!(
                        "mkdir -p src/{name} && (cd src/{name} && touch {files}) && tar -czf {name}.tgz -C src {name}"
                    ),
                    f,
                );
                urls.push((dcv_url(&format!("{os}-{arch}")), format!("{name}.tgz"), ""));
            }
        }
        let mut sums = String::new();
        for arch in ["x64", "arm64"] {
            let name = format!("node-{NODE_VERSION}-linux-{arch}");
            sh(
                &format!(
                    "mkdir -p src/{name}/bin && printf '#!/bin/bash\\necho {NODE_VERSION}\\n' >src/{name}/bin/node \
                     && touch src/{name}/bin/npm src/{name}/bin/npx && chmod +x src/{name}/bin/node \
                     && tar -cJf {name}.tar.xz -C src {name}"
                ),
                f,
            );
            let out = Command::new("sha256sum")
                .arg(format!("{name}.tar.xz"))
                .current_dir(f)
                .output()
                .unwrap();
            sums.push_str(&String::from_utf8(out.stdout).unwrap());
            urls.push((
                node_url(&format!("{name}.tar.xz")),
                format!("{name}.tar.xz"),
                "",
            ));
        }
        // A line for another file, as the real list has many.
        sums.push_str(&format!(
            "{}  node-{NODE_VERSION}-darwin-x64.tar.gz\n",
            "0".repeat(64)
        ));
        std::fs::write(f.join("SHASUMS256.txt"), sums).unwrap();
        urls.push((node_url("SHASUMS256.txt"), "SHASUMS256.txt".into(), ""));
        let mut table = String::new();
        for (url, file, body) in urls {
            if !body.is_empty() {
                std::fs::write(f.join(&file), body).unwrap();
            }
            table.push_str(&format!("{url}\t{}\n", f.join(&file).display()));
        }
        std::fs::write(&self.urls, table).unwrap();
    }

    /// Serves `<key>.asc` (nice: the pinned one; other; both: the two in one file) as NICE's.
    fn serve_dcv_key(&self, key: &str) {
        let read = |k: &str| std::fs::read(dcv_signing().dir.join(format!("{k}.asc"))).unwrap();
        let bytes = match key {
            "both" => [read("nice"), read("other")].concat(),
            k => read(k),
        };
        std::fs::write(self.fixtures.join("NICE-GPG-KEY"), bytes).unwrap();
    }

    /// Packs Amazon Linux's DCV tarballs with the packages signed `how` (nice, other, unsigned).
    fn pack_dcv_rpms(&self, how: &str) {
        let from = dcv_signing().dir.join(how);
        for arch in ["x86_64", "aarch64"] {
            let name = format!("nice-dcv-2025.0-20103-amzn2023-{arch}");
            sh(
                &format!(
                    "rm -rf src/{name} && mkdir -p src/{name} && cp {}/*.rpm src/{name}/ && tar -czf {name}.tgz -C src {name}",
                    from.display()
                ),
                &self.fixtures,
            );
        }
    }

    /// The environment the scripts run in: stubs and the allowed real tools only on PATH.
    fn command(&self, script: &std::path::Path) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(script);
        self.confine(&mut cmd);
        cmd
    }

    /// Gives `cmd` the scripts' environment and nothing else.
    fn confine(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", &self.stubs)
            .env("STUB_LOG", &self.log)
            .env("STUB_STATE", &self.state)
            .env("STUB_DIR", &self.stubs)
            .env("STUB_URLS", &self.urls)
            .env("STUB_FAIL", "")
            .env("BASTION_DCV_TOKENS", self.state.join("dcv-tokens"));
    }

    /// Runs the script as cloud-init would (bash, as root), confined to the scratch root, with
    /// only stubs and a few real tools on PATH so no real package manager, service manager or
    /// network is touched.
    fn run(&self, fail: &str) -> (bool, Vec<String>) {
        let _ = std::fs::remove_file(&self.log);
        let status = self
            .command(&self.script)
            .env("BASTION_ROOT", &self.root)
            .env("BASTION_IMDS", "http://imds.invalid")
            .env("STUB_FAIL", fail)
            .status()
            .unwrap();
        (status.success(), self.calls())
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Runs a script the user-data wrote (under the scratch root) with the same stubs; returns
    /// its stdout and the stub calls it made.
    fn run_file(&self, rel: &str) -> (String, Vec<String>) {
        let _ = std::fs::remove_file(&self.log);
        let out = self.command(&self.root.join(rel)).output().unwrap();
        assert!(out.status.success(), "{rel}: {out:?}");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            self.calls(),
        )
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
    let pip = position(
        &calls,
        "pip install --quiet --only-binary=:all: aws-parallelcluster==3.16.1",
    );
    // pip itself pinned by its hash before it installs anything.
    assert!(position(&calls, "pip install --quiet --require-hashes -r /dev/fd/") < pip);
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

    // The teammate login: a user of its own, made before sshd is told about it, with its
    // metadata rule loaded; sshd opens it the head node's port 22 only.
    let user = position(&calls, "useradd --system");
    assert!(calls[user].ends_with(" bastion-jump"), "{}", calls[user]);
    assert!(user < position(&calls, "nft -f"));
    assert!(position(&calls, "nft -f") < position(&calls, "systemctl reload sshd"));
    let sshd = sb.file("etc/ssh/sshd_config.d/10-bastion.conf");
    assert!(
        sshd.contains("Match User bastion-jump\n")
            && sshd.contains("    PermitOpen 10.0.1.10:22\n")
            && sshd.contains("    MaxSessions 0\n"),
        "{sshd}"
    );
    let guard = sb.file("etc/bastion/imds-guard.nft");
    assert!(
        guard.contains("meta skuid \"bastion-jump\" ip daddr 169.254.169.254 reject"),
        "{guard}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c == "systemctl enable bastion-imds-guard.service")
    );

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
        dcv_conf.contains("auth-token-verifier = \"http://127.0.0.1:8444\"")
            && !dcv_conf.contains("no-tls-strict"),
        "{dcv_conf}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c == "systemctl enable --now bastion-dcv-auth.service")
    );
    // The token helper as bastion runs it over SSH: a fresh token, printed; only its hash is
    // kept, with its expiry a minute on, its owner and session.
    std::fs::create_dir_all(sb.state.join("dcv-tokens")).unwrap();
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
    // Only whether it runs as root (then the entry goes to the verifier's user).
    assert_eq!(helper_calls, ["id -u"]);
    let kept = std::fs::read_dir(sb.state.join("dcv-tokens"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect::<Vec<_>>();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0].file_name().unwrap().to_str().unwrap(),
        sha256_hex(&token)
    );
    let entry = std::fs::read_to_string(&kept[0]).unwrap();
    let fields: Vec<&str> = entry.split_whitespace().collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = fields[0].parse().unwrap();
    assert!((now + 50..=now + 70).contains(&expiry), "{entry}");
    assert_eq!(&fields[1..], ["ec2-user", "bastion"]);
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
        "useradd",
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
    // Node.js from its release directory, checked against its SHASUMS256.txt by the real
    // sha256sum, unpacked by the real tar where the symlink points.
    let arch = if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        "x64"
    };
    for file in [
        format!("node-{NODE_VERSION}-linux-{arch}.tar.xz"),
        "SHASUMS256.txt".into(),
    ] {
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("curl") && c.contains(&node_url(&file))),
            "{file}: {calls:?}"
        );
    }
    let node = sb.root.join("opt/bastion/node/bin/node");
    let out = Command::new(&node).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), NODE_VERSION);
    assert_eq!(
        std::fs::read_link(sb.root.join("usr/local/bin/node")).unwrap(),
        PathBuf::from("/opt/bastion/node/bin/node")
    );
    let (ok, calls) = sb.run("");
    assert!(ok);
    assert!(
        !calls.iter().any(|c| c.starts_with("apt-get install")),
        "second run: {calls:?}"
    );
}

/// The stubs say no: a download whose bytes do not match Node's published checksum, or any
/// address the vendors do not publish, fails the desktop phase (the proxy stays usable for SSH).
fn sha256_hex(text: &str) -> String {
    let out = Command::new("bash")
        .args([
            "-c",
            "printf '%s' \"$1\" | sha256sum | cut -d' ' -f1",
            "-",
            text,
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One POST to DCV's token verifier at `port`, as DCV sends it; its body.
fn verify(port: u16, session: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let body = format!("sessionId={session}&authenticationToken={token}&clientAddress=127.0.0.1");
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// The proxy's desktop tokens, against the verifier the user-data installs (run with the real
/// python3, speaking DCV's external-authentication protocol): a token minted by the helper is
/// good once, for its session, before its minute is out.
#[test]
fn a_desktop_token_is_good_once_for_its_session_within_its_minute() {
    let python = common::require_tool("python3", &[]).expect("python3");
    let sb = Sandbox::new(&script(ProxyOs::Al2023, 60, true));
    assert!(sb.run("").0, "{}", sb.bootstrap_log());
    let tokens = sb.state.join("dcv-tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _server = common::Guard(Some(
        Command::new(python)
            .arg(sb.root.join("usr/local/sbin/bastion-dcv-auth"))
            .env("BASTION_DCV_TOKENS", &tokens)
            .env("BASTION_DCV_AUTH_PORT", port.to_string())
            .spawn()
            .unwrap(),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the verifier never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mint = || {
        let (out, _) = sb.run_file("usr/local/sbin/bastion-dcv-token");
        out.trim()
            .strip_prefix("BastionDcvToken=")
            .unwrap()
            .to_string()
    };
    let yes = "<auth result=\"yes\"><username>ec2-user</username></auth>";
    let no = "<auth result=\"no\"/>";

    let token = mint();
    assert_eq!(verify(port, "bastion", &token), yes);
    assert_eq!(verify(port, "bastion", &token), no, "used once, gone");

    let token = mint();
    assert_eq!(verify(port, "another", &token), no, "another session");
    assert_eq!(
        verify(port, "bastion", &token),
        no,
        "a refused try spends it too"
    );

    let token = mint();
    let file = tokens.join(sha256_hex(&token));
    let entry = std::fs::read_to_string(&file).unwrap();
    let rest = entry.split_once(' ').unwrap().1.to_string();
    std::fs::write(&file, format!("1000 {rest}")).unwrap();
    assert_eq!(verify(port, "bastion", &token), no, "expired");
    assert_eq!(verify(port, "bastion", "not-a-token"), no);
}

/// DCV's packages are installed only when NICE's key (its fingerprint pinned in the user-data)
/// signs every one of them, checked by the real gpg and rpmkeys on real packages: another key
/// served in its place, packages signed with another key, or unsigned ones fail the desktop
/// phase, and no DCV package reaches the package manager. Ubuntu's key is held to the pin too.
#[test]
fn dcv_packages_must_carry_the_pinned_keys_signature() {
    // The production script pins NICE's real key.
    assert!(
        script(ProxyOs::Al2023, 60, true)
            .contains(&format!("DCV_KEY_FINGERPRINT='{DCV_KEY_FINGERPRINT}'"))
    );
    let sb = Sandbox::new(&script(ProxyOs::Al2023, 60, true));
    let (ok, calls) = sb.run("");
    assert!(ok, "{}", sb.bootstrap_log());
    assert!(
        calls.iter().any(
            |c| c.starts_with("dnf install -y --setopt=localpkg_gpgcheck=1 ")
                && c.contains("nice-dcv-server-1.rpm")
        ),
        "{calls:?}"
    );
    for (packages, key, says) in [
        ("other", "nice", "SIGNATURES NOT OK"),
        ("unsigned", "nice", "SIGNATURES NOT OK"),
        ("nice", "other", "not exactly the pinned"),
        // NICE's key with another beside it: packages signed with the other are refused.
        ("other", "both", "not exactly the pinned"),
    ] {
        let sb = Sandbox::new(&script(ProxyOs::Al2023, 60, true));
        sb.pack_dcv_rpms(packages);
        sb.serve_dcv_key(key);
        let (ok, calls) = sb.run("");
        let log = sb.bootstrap_log();
        assert!(!ok, "packages {packages}, key {key}: {log}");
        assert_eq!(
            tag_calls(&calls).last().map(String::as_str),
            Some("bastion:desktop=failed"),
            "{packages}/{key}"
        );
        assert!(log.contains(says), "{packages}/{key}: {log}");
        assert!(
            !calls
                .iter()
                .any(|c| c.starts_with("dnf install") && c.contains("nice-dcv")),
            "{packages}/{key}: {calls:?}"
        );
    }
    let sb = Sandbox::new(&script(ProxyOs::Ubuntu2204, 60, true));
    sb.serve_dcv_key("other");
    let (ok, calls) = sb.run("");
    assert!(!ok);
    assert!(sb.bootstrap_log().contains("not exactly the pinned"));
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("apt-get install") && c.contains("nice-dcv"))
    );
}

#[test]
fn a_wrong_checksum_or_address_fails_the_desktop_phase() {
    let sb = Sandbox::new(&script(ProxyOs::Ubuntu2204, 60, false));
    let arch = if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        "x64"
    };
    let tarball = sb
        .fixtures
        .join(format!("node-{NODE_VERSION}-linux-{arch}.tar.xz"));
    let mut bytes = std::fs::read(&tarball).unwrap();
    bytes.push(0);
    std::fs::write(&tarball, bytes).unwrap();
    let (ok, calls) = sb.run("");
    assert!(!ok, "a tampered download must fail");
    let tags = tag_calls(&calls);
    assert_eq!(
        tags.last().map(String::as_str),
        Some("bastion:desktop=failed")
    );
    let log = sb.bootstrap_log();
    assert!(log.contains("FAILED") && log.contains("sha256sum"), "{log}");
    assert!(!sb.root.join("opt/bastion/node/bin/node").exists());

    for (os, wrong) in [
        (
            ProxyOs::Al2023,
            ("d1uj6qtbmh3dt5.cloudfront.net", "example.invalid"),
        ),
        (ProxyOs::Ubuntu2204, ("/Servers/", "/servers/")),
        (
            ProxyOs::Ubuntu2204,
            ("nodejs.org/dist", "nodejs.org/download"),
        ),
    ] {
        let text = script(os, 60, true).replace(wrong.0, wrong.1);
        let sb = Sandbox::new(&text);
        let (ok, calls) = sb.run("");
        assert!(!ok, "{wrong:?}: an unknown address must fail");
        assert_eq!(
            tag_calls(&calls).last().map(String::as_str),
            Some("bastion:desktop=failed"),
            "{wrong:?}"
        );
    }
}

/// The idle check the user-data installs, run as the timer runs it, with the clock (`date`),
/// the sessions (`ss`) and the power (`systemctl`) stubbed: it powers off once the proxy has had
/// no SSH session for the minutes asked, and not a minute before. It writes /run and reads
/// /var/lib/bastion, so it runs in a mount namespace of its own with both on scratch dirs.
#[test]
fn the_idle_check_powers_off_after_the_idle_minutes_and_not_before() {
    if !common::require_root("a private mount namespace") {
        return;
    }
    let Some(unshare) = common::require_tool("unshare", &[]) else {
        return;
    };
    // Root without the right to make a mount namespace (a confined container) cannot run it.
    let can = Command::new(&unshare)
        .args(["--mount", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !can {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must allow mount namespaces (unshare --mount)"
        );
        common::skip("unshare --mount is not allowed here");
        return;
    }
    let sb = Sandbox::new(&script(ProxyOs::Al2023, 45, false));
    let (ok, _) = sb.run("");
    assert!(ok, "{}", sb.bootstrap_log());
    let scratch = sb._tmp.path().join("idle");
    let (run, lib) = (scratch.join("run"), scratch.join("var-lib"));
    std::fs::create_dir_all(&run).unwrap();
    std::fs::create_dir_all(lib.join("bastion")).unwrap();
    let check = sb.root.join("usr/local/sbin/bastion-idle-check");
    let mount = common::require_tool("mount", &[PathBuf::from("/usr/bin/mount")]).unwrap();
    let bash = common::require_tool("bash", &[]).unwrap();
    // One run of the check at minute `minute` (since t0), with or without an SSH session.
    let at = |minute: u64, session: bool| -> bool {
        let _ = std::fs::remove_file(&sb.log);
        let now = 1_800_000_000 + minute * 60;
        let inner = format!(
            "{mount} --bind {run} /run && {mount} --bind {lib} /var/lib && exec {bash} {check}",
            mount = mount.display(),
            bash = bash.display(),
            run = run.display(),
            lib = lib.display(),
            check = check.display()
        );
        let mut cmd = Command::new(&unshare);
        cmd.args(["--mount", "--propagation", "private"])
            .arg(&bash)
            .args(["-c", &inner]);
        sb.confine(&mut cmd);
        let out = cmd
            .env("STUB_NOW", now.to_string())
            .env(
                "STUB_SS",
                if session {
                    "ESTAB 0 0 10.0.1.5:22 198.51.100.7:50000"
                } else {
                    ""
                },
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "minute {minute}: {out:?}");
        sb.calls().iter().any(|c| c == "systemctl poweroff")
    };
    // The first run after boot only starts the clock.
    assert!(!at(0, false));
    assert!(!at(44, false), "44 idle minutes of 45");
    assert!(at(45, false), "45 idle minutes: power off");
    // A session resets the clock; idle minutes count from its end.
    assert!(!at(46, true));
    assert!(!at(90, false), "44 minutes after the session");
    assert!(at(91, false), "45 minutes after the session");
    // The bootstrap's busy flag holds the proxy up, however long it takes.
    std::fs::write(lib.join("bastion/busy"), "").unwrap();
    assert!(!at(500, false), "busy");
    std::fs::remove_file(lib.join("bastion/busy")).unwrap();
    assert!(!at(544, false));
    assert!(at(545, false));
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
