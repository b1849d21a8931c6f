//! `bastion connect --dcv` in the network lab: a stand-in `pcluster_dcv_connect.sh` on the head
//! node (in a private /opt, see netlab) that prints the real line with a fresh token, and an HTTPS
//! stand-in for DCV that answers 200 only to the last token, within 30 s, once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::world::World;
use common::*;

const SESSION: &str = "AbCdEf0123456789GhIj";

/// The DCV stand-in: HTTPS on `host:port`, 200 for the newest token in `token_file` (younger
/// than 30 s, first use only), 403 otherwise. `check` false: 200 for any request.
const DCV_SERVER: &str = r#"
import http.server, ssl, sys, time, urllib.parse
token_file, cert, key, host, port, check = sys.argv[1:7]
used = set()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = True
        if check == "1":
            tok = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("authToken", [""])[0]
            try:
                last, issued = open(token_file).read().split()
            except Exception:
                last, issued = "", "0"
            ok = bool(tok) and tok == last and tok not in used and time.time() - float(issued) < 30
            if ok:
                used.add(tok)
        self.send_response(200 if ok else 403)
        self.end_headers()
        self.wfile.write(b"DCV OK\n" if ok else b"denied\n")
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer((host, int(port)), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

fn dcv_script(token_file: &std::path::Path) -> String {
    format!(
        "#!/bin/bash\n# stand-in for ParallelCluster's pcluster_dcv_connect.sh\n\
         tok=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n')\n\
         echo \"$tok $(date +%s.%N)\" > {file}\n\
         echo \"$tok\" >> {file}.runs\n\
         echo \"PclusterDcvServerPort=8443 PclusterDcvSessionId={SESSION} PclusterDcvSessionToken=$tok\"\n",
        file = token_file.display()
    )
}

fn start_dcv_server(w: &mut World, host: &str, bind: &str, check: bool) {
    let dir = w.lab.dir.path().to_path_buf();
    let (cert, key) = (dir.join("dcv.crt"), dir.join("dcv.key"));
    if !cert.exists() {
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ])
            .args(["-subj", "/CN=dcv-stand-in", "-days", "1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl makes the stand-in's certificate");
    }
    let server = dir.join("dcv_server.py");
    std::fs::write(&server, DCV_SERVER).unwrap();
    let python = venv().join("bin/python");
    let args: Vec<String> = vec![
        python.display().to_string(),
        server.display().to_string(),
        dir.join("dcv-token").display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
        bind.to_string(),
        "8443".into(),
        if check { "1" } else { "0" }.into(),
    ];
    let name = format!("dcv-{host}");
    w.lab.spawn_in(
        host,
        &name,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // Wait for it from inside its own host (it may listen on that host's loopback only).
    let ns = if host == "head" {
        w.lab.head_ns.clone()
    } else {
        w.lab.proxy_ns.clone()
    };
    let probe = format!(
        "for i in $(seq 150); do (exec 3<>/dev/tcp/{bind}/8443) 2>/dev/null && exit 0; sleep 0.1; done; exit 1"
    );
    let up = Command::new("ip")
        .args(["netns", "exec", &ns, "bash", "-c", &probe])
        .status()
        .unwrap();
    assert!(up.success(), "the DCV stand-in did not start on {host}");
}

/// The head node's DCV as a test sees it: the script stand-in in its /opt and the HTTPS stand-in
/// on its address, checking the script's last token.
fn start_head_dcv(w: &mut World) {
    let token_file = w.lab.path("dcv-token");
    w.lab
        .set_head_scripts(&[("pcluster_dcv_connect.sh", &dcv_script(&token_file))]);
    let head_ip = w.lab.head_ip.clone();
    start_dcv_server(w, "head", &head_ip, true);
}

/// A running `connect --dcv`: its stdout lines through `rx`, its stderr gathered as it comes.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    err: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Lines {
    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits until stderr holds `needle` `count` times; false after 150 s.
    fn wait_stderr(&self, needle: &str, count: usize) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(150);
        while std::time::Instant::now() < deadline {
            if self.stderr().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// The tokens the head node's script issued, one per run, oldest first.
fn token_runs(file: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The `authToken` of a DCV URL.
fn token_of(url: &str) -> String {
    let t = url.split("authToken=").nth(1).unwrap_or_default();
    t.split('#').next().unwrap_or_default().to_string()
}

/// Starts `connect --dcv ... --show-url --output json`, with stdin piped (Enter = fresh URL).
/// The child's stdout lines, read by a thread, so a test can wait for one with a deadline.
fn start_dcv(w: &World, extra: &[&str]) -> (Guard, Lines) {
    let mut args = w.connect_args(&["--dcv", "--show-url", "--output", "json"]);
    args.extend_from_slice(extra);
    spawn_lines(&w.b, &args)
}

/// Starts bastion with `args`, stdin piped; its stdout lines come through the receiver, its
/// stderr is read as it comes (a full pipe never stalls it).
fn spawn_lines(b: &Bastion, args: &[&str]) -> (Guard, Lines) {
    let mut cmd = b.command(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Guard(Some(cmd.spawn().unwrap()));
    let out = BufReader::new(child.child().stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = err.clone();
    let pipe = BufReader::new(child.child().stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in pipe.lines().map_while(Result::ok) {
            let mut e = sink.lock().unwrap();
            e.push_str(&line);
            e.push('\n');
        }
    });
    (child, Lines { rx, err })
}

/// The next URL line; fails (never hangs) when none comes within 90 s.
fn next_url(out: &Lines, child: &mut Guard) -> serde_json::Value {
    match out.rx.recv_timeout(Duration::from_secs(90)) {
        Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")),
        Err(e) => {
            let _ = child.child().kill();
            panic!("connect --dcv gave no URL ({e}): {}", out.stderr());
        }
    }
}

async fn fetch(url: &str) -> u16 {
    bastion::install_crypto();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn stop(mut child: Guard, out: &Lines) -> String {
    let status = child.interrupt(Duration::from_secs(30));
    let err = out.stderr();
    assert!(
        status.success(),
        "connect --dcv stops cleanly on Ctrl-C: {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn the_one_time_url_works_once_and_enter_mints_a_fresh_one() {
    if require_tool("openssl", &[]).is_none() {
        return;
    }
    let mut w = world_or_skip!();
    start_head_dcv(&mut w);
    // DCV travels inside the head node's own session, where root on the proxy cannot read it
    // (the teammate's --dcv, through a proxy whose sshd opens the head node's port 22 and
    // nothing else, proves it takes no other path).

    let (mut child, out) = start_dcv(&w, &[]);
    let first = next_url(&out, &mut child);
    assert_eq!(first["session_id"], SESSION);
    assert_eq!(first["expires_in_s"], 30);
    let port = first["local_port"].as_u64().unwrap();
    let url = first["url"].as_str().unwrap().to_string();
    // The URL names the very address the tunnel listens on (not `localhost`, which another
    // local user could bind on ::1 first).
    assert!(
        url.starts_with(&format!("https://127.0.0.1:{port}?authToken="))
            && url.ends_with(&format!("#{SESSION}")),
        "{url}"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_err(),
        "bastion holds 127.0.0.1:{port}"
    );
    assert_eq!(fetch(&url).await, 200, "the URL works through the tunnel");
    // bastion ran the head node's script once, and its URL carries the token that run issued.
    let runs = w.lab.path("dcv-token.runs");
    assert_eq!(token_runs(&runs), [token_of(&url)]);

    // Enter: the script runs once more, and the new URL carries the newest token (a reused one
    // would be refused by DCV: the token is single use).
    std::io::Write::write_all(child.child().stdin.as_mut().unwrap(), b"\n").unwrap();
    let second = next_url(&out, &mut child);
    assert_eq!(second["local_port"], first["local_port"]);
    let second_url = second["url"].as_str().unwrap();
    let issued = token_runs(&runs);
    assert_eq!(issued.len(), 2, "one script run per Enter: {issued:?}");
    assert_eq!(
        token_of(second_url),
        issued[1],
        "the newest token in the URL"
    );
    assert_ne!(issued[1], issued[0]);
    assert_eq!(fetch(second_url).await, 200);
    stop(child, &out);
    assert_eq!(token_runs(&runs).len(), 2, "no run without an Enter");

    // Opening the browser: its command line (which /proc shows every local user) names a
    // local page only this user can read, and the page holds the URL with the token.
    let seen = w.lab.path("browser-seen");
    let browser = w.lab.path("browser.sh");
    std::fs::write(
        &browser,
        format!(
            "#!/bin/bash\nf=\"${{1#file://}}\"\n{{ printf '%s\\n' \"$@\"; stat -c %a \"$f\"; cat \"$f\"; }} > {}.tmp && mv {}.tmp {}\n",
            seen.display(),
            seen.display(),
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &browser,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut cmd = w.b.command(&w.connect_args(&["--dcv"]));
    cmd.env("BROWSER", &browser)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = Guard(Some(cmd.spawn().unwrap()));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !seen.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&seen).unwrap_or_default();
    stop(child, &out);
    let mut lines = text.lines();
    let arg = lines.next().unwrap_or_default();
    assert!(
        arg.starts_with("file://") && !arg.contains("authToken"),
        "the browser's argument: {text}"
    );
    assert_eq!(lines.next(), Some("600"), "{text}");
    assert!(
        text.contains("https://127.0.0.1:") && text.contains("authToken="),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dcv_failures_give_advice() {
    let mut w = world_or_skip!();
    // A head node without the script: the cluster was created without DCV.
    w.lab.set_head_scripts(&[]);
    let r = w.b.run(&w.connect_args(&["--dcv", "--show-url"]));
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("HeadNode/Dcv/Enabled"), "{r:?}");

    // The script's ERROR: lines are shown as they are.
    w.lab.set_head_scripts(&[(
        "pcluster_dcv_connect.sh",
        "#!/bin/bash\necho 'ERROR: DCV service is not active on the head node' >&2\nexit 1\n",
    )]);
    let r = w.b.run(&w.connect_args(&["--dcv", "--show-url"]));
    assert_eq!(r.status, 1);
    assert!(
        r.stderr
            .contains("ERROR: DCV service is not active on the head node"),
        "{r:?}"
    );

    // The script answers, but nothing listens on the DCV port: said, with what to check.
    let token_file = w.lab.path("dcv-token");
    w.lab
        .set_head_scripts(&[("pcluster_dcv_connect.sh", &dcv_script(&token_file))]);
    let r = w.b.run(&w.connect_args(&["--dcv", "--show-url"]));
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("DCV does not answer at")
            && r.stderr.contains("systemctl status dcvserver"),
        "{r:?}"
    );
}

/// Stand-in for the token helper the proxy's user-data installs: the real one hands the token to
/// DCV's authenticator; this one to the DCV stand-in, through its token file.
fn proxy_token_helper(token_file: &std::path::Path) -> String {
    format!(
        "#!/bin/bash\n# stand-in for bastion-dcv-token\n\
         tok=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')\n\
         echo \"$tok $(date +%s.%N)\" > {}\n\
         echo \"BastionDcvToken=$tok\"\n",
        token_file.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn desktop_reaches_the_proxys_own_dcv_on_its_loopback_with_a_token_per_url() {
    if require_tool("openssl", &[]).is_none() {
        return;
    }
    let mut w = world_or_skip!();
    // The proxy's DCV listens on its 127.0.0.1 only (as its user-data configures it), and admits
    // only a token its authenticator was given.
    let token_file = w.lab.path("dcv-token");
    // The helper runs as the proxy's login user, not root.
    std::fs::write(&token_file, "").unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    w.lab
        .set_proxy_sbin(&[("bastion-dcv-token", &proxy_token_helper(&token_file))]);
    start_dcv_server(&mut w, "proxy", "127.0.0.1", true);

    // Still installing: connect waits; failed: the log is read and the exit is non-zero.
    w.aws
        .set_instance_tags(&w.proxy_id, &[("bastion:desktop", "failed")])
        .await;
    let r =
        w.b.run(&w.connect_args(&["--dcv", "--desktop", "--show-url"]));
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("installing the proxy's desktop failed"),
        "{r:?}"
    );

    w.aws
        .set_instance_tags(&w.proxy_id, &[("bastion:desktop", "installing")])
        .await;
    let (mut child, out) = start_dcv(&w, &["--desktop"]);
    // bastion says it waits, and polls twice more seeing the desktop still installing: no URL
    // may come out meanwhile.
    let polling = format!("{}: proxy ready; desktop installing", w.proxy_id);
    assert!(
        out.wait_stderr("the proxy's desktop is still installing", 1)
            && out.wait_stderr(&polling, 2),
        "{}",
        out.stderr()
    );
    assert!(
        matches!(out.rx.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)),
        "no URL while the desktop installs: {}",
        out.stderr()
    );
    w.aws
        .set_instance_tags(&w.proxy_id, &[("bastion:desktop", "ready")])
        .await;
    let url = next_url(&out, &mut child);
    assert_eq!(url["session_id"], "bastion");
    let port = url["local_port"].as_u64().unwrap();
    let u = url["url"].as_str().unwrap().to_string();
    assert!(
        u.starts_with(&format!("https://127.0.0.1:{port}?authToken=")) && u.ends_with("#bastion"),
        "{u}"
    );
    // Another local user who finds the forwarded port, without the token: nothing.
    let bare = format!("https://127.0.0.1:{port}/#bastion");
    assert_eq!(fetch(&bare).await, 403, "no token, no desktop");
    assert_eq!(
        fetch(&u).await,
        200,
        "the proxy's desktop answers through the tunnel"
    );
    assert_eq!(fetch(&u).await, 403, "a used token is refused");
    // Enter: a fresh token.
    std::io::Write::write_all(child.child().stdin.as_mut().unwrap(), b"\n").unwrap();
    let second = next_url(&out, &mut child);
    assert_ne!(second["url"], url["url"]);
    assert_eq!(fetch(second["url"].as_str().unwrap()).await, 200);
    stop(child, &out);
}

/// The proxy's link cut under `connect --dcv`: the loss is said, bastion reconnects by itself,
/// and Enter then gives a URL that works through the same local port.
#[tokio::test(flavor = "multi_thread")]
async fn the_dcv_tunnel_outlives_a_cut_link() {
    if require_tool("openssl", &[]).is_none() {
        return;
    }
    let mut w = world_or_skip!();
    start_head_dcv(&mut w);
    let (mut child, out) = start_dcv(&w, &[]);
    let first = next_url(&out, &mut child);
    assert_eq!(fetch(first["url"].as_str().unwrap()).await, 200);

    w.lab.set_proxy_link(false);
    let lost = out.wait_stderr("was lost", 1);
    w.lab.set_proxy_link(true);
    assert!(lost, "the loss is reported: {}", out.stderr());
    assert!(
        out.wait_stderr("reconnected to", 1),
        "bastion reconnects by itself: {}",
        out.stderr()
    );
    std::io::Write::write_all(child.child().stdin.as_mut().unwrap(), b"\n").unwrap();
    let second = next_url(&out, &mut child);
    assert_eq!(
        second["local_port"], first["local_port"],
        "the same local port"
    );
    assert_eq!(fetch(second["url"].as_str().unwrap()).await, 200);
    let status = child.interrupt(Duration::from_secs(30));
    assert!(status.success());
}

/// A teammate with no proxy key (EC2 Instance Connect's one-time key, see tests/teams.rs) gets
/// the head node's desktop the same way.
#[tokio::test(flavor = "multi_thread")]
async fn a_teammate_without_the_proxy_key_opens_the_desktop() {
    if require_tool("openssl", &[]).is_none() {
        return;
    }
    let mut w = world_or_skip!();
    start_head_dcv(&mut w);
    let t = w.teammate(&format!("10.77.{}.1", w.lab.n)).await;
    let args = w.teammate_args(&["--dcv", "--show-url", "--output", "json"]);
    let (mut child, out) = spawn_lines(&t.b, &args);
    let url = next_url(&out, &mut child);
    assert_eq!(url["session_id"], SESSION);
    assert_eq!(fetch(url["url"].as_str().unwrap()).await, 200);
    stop(child, &out);
    let pushes = t.eic.pushes();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].instance, w.proxy_id);
    assert_eq!(pushes[0].user, bastion::userdata::TEAMMATE_USER);
    assert!(
        !t.b.state_dir
            .join(format!("123456789012/{REGION}/{CLUSTER}/id_ed25519"))
            .exists(),
        "the teammate has no proxy key"
    );
}

/// The head node's desktop through the EC2 Instance Connect Endpoint (`--via eice`): the URL
/// works, and the only tunnel into the lab was the endpoint stand-in's.
#[tokio::test(flavor = "multi_thread")]
async fn the_head_nodes_desktop_through_the_endpoint() {
    if require_tool("openssl", &[]).is_none() {
        return;
    }
    let mut w = world_or_skip!();
    start_head_dcv(&mut w);
    let attached =
        common::endpoint::attach(&mut w.lab, &mut w.b, &w.aws.ec2, &w.moto.url, &w.head_id).await;
    let key = w.cluster_key.to_str().unwrap().to_string();
    let args = [
        "connect",
        "--cluster",
        CLUSTER,
        "--via",
        "eice",
        "--user",
        "root",
        "-i",
        &key,
        "--dcv",
        "--show-url",
        "--output",
        "json",
    ];
    let (mut child, out) = spawn_lines(&w.b, &args);
    let first = next_url(&out, &mut child);
    assert_eq!(first["session_id"], SESSION);
    let url = first["url"].as_str().unwrap().to_string();
    assert_eq!(fetch(&url).await, 200, "the URL works through the endpoint");
    stop(child, &out);
    let opened = attached.service.events_named("open");
    assert_eq!(opened.len(), 1, "{:?}", attached.service.events());
    assert_eq!(opened[0]["ip"], w.lab.head_ip.as_str());
}
