//! `bastion connect` and `bastion ssh-config` against real OpenSSH sshd in network namespaces
//! (tests/common/netlab.rs), with moto holding the VPC, the head node and the bastion.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::netlab::NetLab;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_command_runs_on_the_head_node_through_the_proxy() {
    let w = world_or_skip!();
    let r = w.connect(&[
        "--",
        "echo",
        "out:$SSH_CONNECTION;",
        "echo",
        "err",
        ">&2;",
        "exit",
        "7",
    ]);
    assert_eq!(r.status, 7, "the remote exit code is returned: {r:?}");
    // The head node saw the connection come from the proxy's side of the lab.
    let expected = format!("out:10.78.{}.1 ", w.lab.n);
    assert!(r.stdout.starts_with(&expected), "{r:?}");
    assert!(
        r.stdout.contains(&format!(" {} 22", w.lab.head_ip)),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("err") && !r.stdout.contains("err"),
        "stderr kept apart: {r:?}"
    );

    // stdin is passed through.
    let cmd = w.b.command(&w.connect_args(&["--", "sha256sum"]));
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = run_fed(cmd, Some(data.clone()), Duration::from_secs(60));
    assert_eq!(out.status, 0, "{out:?}");
    let local = sha256_hex(&data);
    assert!(
        out.stdout.starts_with(&local),
        "stdin reached the head node intact: {out:?}"
    );

    // The head node's key was pinned under its instance id; --on-proxy reaches the proxy itself.
    let known = std::fs::read_to_string(w.b.state_dir.join("known_hosts")).unwrap();
    assert!(
        known.contains(&format!("{} {}", w.head_id, w.lab.host_key("head"))),
        "{known}"
    );
    let r = w.connect(&["--on-proxy", "--", "echo", "$SSH_CONNECTION"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.contains(&format!(" {} 22", w.lab.proxy_ip)),
        "{r:?}"
    );
}

/// The route as users get it: no `--bastion-address`, no `--bastion-user`. The proxy's address
/// is its public IP from DescribeInstances (where moto makes one up, the front puts the lab
/// proxy's, as AWS would give the real one) and its login user comes from its OS tag; `connect`
/// and OpenSSH through `ssh-config` both reach the head node that way.
#[tokio::test(flavor = "multi_thread")]
async fn the_proxys_address_and_login_user_are_found_as_users_find_them() {
    let mut w = world_or_skip!();
    let front = common::front::Front::start(&w.moto.url).await;
    let described = w
        .aws
        .ec2
        .describe_instances()
        .instance_ids(&w.proxy_id)
        .send()
        .await
        .unwrap();
    let moto_ip = described.reservations()[0].instances()[0]
        .public_ip_address()
        .expect("moto gives the proxy a public IP")
        .to_string();
    assert_ne!(moto_ip, w.lab.proxy_ip);
    let (from, to) = (
        format!("<ipAddress>{moto_ip}</ipAddress>"),
        format!("<ipAddress>{}</ipAddress>", w.lab.proxy_ip),
    );
    front.rewrite(move |call, body| {
        if call.action == "DescribeInstances" {
            *body = body.replace(&from, &to);
        }
    });
    w.b.endpoint = front.url.clone();
    let key = w.cluster_key.to_str().unwrap().to_string();
    let r = w.b.run(&[
        "connect",
        "--cluster",
        CLUSTER,
        "--user",
        "root",
        "-i",
        &key,
        "-v",
        "--",
        "echo",
        "via:$SSH_CONNECTION",
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.contains(&format!("via:10.78.{}.1 ", w.lab.n)),
        "{r:?}"
    );
    assert!(
        r.stderr.contains(&format!(
            "logged in to the proxy {} as ec2-user",
            w.proxy_id
        )),
        "{r:?}"
    );

    if common::require_tool("ssh", &[]).is_none() {
        return;
    }
    let r = w.b.run(&[
        "ssh-config",
        "--cluster",
        CLUSTER,
        "--user",
        "root",
        "-i",
        &key,
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stdout.contains(&w.lab.proxy_ip) && r.stdout.contains("ec2-user"),
        "{r:?}"
    );
    let config = w.lab.path("ssh_config_found");
    std::fs::write(&config, &r.stdout).unwrap();
    let mut ssh = Command::new("ssh");
    ssh.arg("-F")
        .arg(&config)
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=30"])
        .args(["demo-head", "echo via:$SSH_CONNECTION"])
        .stdin(std::process::Stdio::null());
    let out = run_within(ssh, Duration::from_secs(120));
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("via:10.78.{}.1 ", w.lab.n)),
        "{out:?}"
    );
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn host_keys_are_verified_not_trusted() {
    let mut w = world_or_skip!();
    // The proxy presents a key other than its tag's: refused, both fingerprints named.
    let other = NetLab::key_pair(w.lab.dir.path(), "imposter").1;
    w.aws
        .set_instance_tags(&w.proxy_id, &[("bastion:host-key", &other)])
        .await;
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 1, "{r:?}");
    // Both named, as OpenSSH's ssh-keygen prints them: what the tag says, what the proxy showed.
    assert!(
        r.stderr.contains("bastion:host-key tag")
            && r.stderr.contains(&key_fingerprint(&other))
            && r.stderr
                .contains(&key_fingerprint(&w.lab.host_key("proxy"))),
        "{r:?}"
    );
    w.aws
        .set_instance_tags(
            &w.proxy_id,
            &[("bastion:host-key", &w.lab.host_key("proxy"))],
        )
        .await;

    // First use pins the head node; a changed key is then refused, both keys named.
    assert_eq!(w.connect(&["--", "true"]).status, 0);
    let pinned = key_fingerprint(&w.lab.host_key("head"));
    w.lab.new_host_key("head");
    let presented = key_fingerprint(&w.lab.host_key("head"));
    assert_ne!(pinned, presented);
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr.contains("host key changed")
            && r.stderr.contains("known_hosts")
            && r.stderr.contains(&pinned)
            && r.stderr.contains(&presented),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_say_what_to_do() {
    let mut w = world_or_skip!();
    // Authentication refused: which user and key were tried.
    let r = w.b.run(&[
        "connect",
        "--cluster",
        CLUSTER,
        "--bastion-address",
        &w.lab.proxy_ip,
        "--bastion-user",
        common::netlab::HEAD_LOGIN_USER,
        "--user",
        "nobody-here",
        "-i",
        w.cluster_key.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("refused authentication as 'nobody-here'")
            && r.stderr.contains("cluster-key"),
        "{r:?}"
    );

    // The head node's sshd is down: the proxy cannot reach it.
    w.lab.stop("sshd-head");
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr
            .contains("could not open a connection to the head node")
            && r.stderr.contains("security group"),
        "{r:?}"
    );

    // No bastion for the cluster.
    let r = w.b.run(&["connect", "--cluster", "other", "--", "true"]);
    assert_eq!(r.status, 2, "{r:?}");
    assert!(r.stderr.contains("bastion up --cluster other"), "{r:?}");

    // An unreadable key file.
    let r = w.b.run(&[
        "connect",
        "--cluster",
        CLUSTER,
        "--bastion-address",
        &w.lab.proxy_ip,
        "--bastion-user",
        common::netlab::HEAD_LOGIN_USER,
        "-i",
        "/nonexistent/key",
        "--",
        "true",
    ]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("/nonexistent/key"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_proxy_is_started_before_connecting() {
    let w = world_or_skip!();
    w.aws.stop_instance(&w.proxy_id).await;
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 0, "{r:?}");
    let i = w.aws.bastion_instances(CLUSTER).await;
    assert_eq!(
        i[0].state().and_then(|s| s.name()).map(|n| n.as_str()),
        Some("running")
    );
}

/// Reads everything a connection sends back while a thread writes `data`; returns the echo.
/// `connect -N` with one `-L <free port>:localhost:<remote>` per remote port, stderr to a file in
/// the lab; returns once every local port listens.
fn forward_to(
    w: &common::world::World,
    remotes: &[u16],
    log: &str,
) -> (Guard, std::path::PathBuf, Vec<u16>) {
    forward_with(w, remotes, log, &[])
}

/// As [`forward_to`], with more flags for `connect`.
fn forward_with(
    w: &common::world::World,
    remotes: &[u16],
    log: &str,
    flags: &[&str],
) -> (Guard, std::path::PathBuf, Vec<u16>) {
    let ports: Vec<u16> = remotes.iter().map(|_| free_port()).collect();
    let specs: Vec<String> = ports
        .iter()
        .zip(remotes)
        .map(|(p, r)| format!("{p}:localhost:{r}"))
        .collect();
    let mut extra: Vec<&str> = specs.iter().flat_map(|s| ["-L", s.as_str()]).collect();
    extra.push("-N");
    extra.extend(flags);
    let mut cmd = w.b.command(&w.connect_args(&extra));
    let stderr_log = w.lab.path(log);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_log).unwrap());
    let child = Guard(Some(cmd.spawn().unwrap()));
    for p in &ports {
        wait_listening(*p);
    }
    (child, stderr_log, ports)
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forwards_carry_256_mib_and_50_concurrent_connections() {
    if common::require_tool("socat", &[]).is_none() {
        return;
    }
    let mut w = world_or_skip!();
    w.spawn_echo();
    let (mut child, stderr_log, ports) = forward_to(&w, &[9000], "forward-stderr");
    let port = ports[0];

    // 256 MiB each way through one forward, checksums compared.
    let big: Vec<u8> = (0..256u32 * 1024 * 1024 / 4)
        .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
        .collect();
    let t = std::time::Instant::now();
    let back = echo_through(port, &big);
    eprintln!("256 MiB echoed through -L in {:?}", t.elapsed());
    assert_eq!(back.len(), big.len());
    assert_eq!(sha256_hex(&back), sha256_hex(&big));

    // 50 connections at once, each its own channel.
    let handles: Vec<_> = (0..50u32)
        .map(|i| {
            std::thread::spawn(move || {
                let data: Vec<u8> = (0..1024 * 1024u32)
                    .map(|j| (j.wrapping_mul(31).wrapping_add(i)) as u8)
                    .collect();
                let back = echo_through(port, &data);
                if sha256_hex(&back) == sha256_hex(&data) {
                    Ok(())
                } else {
                    Err(format!(
                        "connection {i}: {} of {} bytes came back",
                        back.len(),
                        data.len()
                    ))
                }
            })
        })
        .collect();
    let failures: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap().err())
        .collect();
    let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{failures:?}\nbastion's stderr:\n{log}"
    );

    // A stalled connection (never read) does not freeze the others.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let unread = stalled.try_clone().unwrap();
    let junk = vec![7u8; 8 * 1024 * 1024];
    let writer = std::thread::spawn(move || {
        let _ = stalled.write_all(&junk);
        stalled
    });
    // Stalled for real: the echo has come back and sits unread in our socket.
    wait_unread(&unread, 64 * 1024);
    let t = std::time::Instant::now();
    let data = vec![1u8; 1024 * 1024];
    assert_eq!(echo_through(port, &data), data);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "a live connection waited behind a stalled one"
    );
    drop(writer);

    let status = child.interrupt(Duration::from_secs(30));
    assert!(status.success(), "-N exits cleanly on Ctrl-C");
}

/// A local reader that stops while the far end keeps sending (a source without end): the session
/// must not stop for the other forwards, and the stalled connection is reset (not closed cleanly,
/// which would pass for a complete transfer) once it falls the budget behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_reader_of_an_endless_source_is_reset_and_the_rest_carries_on() {
    if common::require_tool("socat", &[]).is_none() {
        return;
    }
    let mut w = world_or_skip!();
    w.lab.spawn_in(
        "head",
        "zeros",
        &[
            "socat",
            "TCP-LISTEN:9101,bind=127.0.0.1,fork,reuseaddr",
            "OPEN:/dev/zero,rdonly",
        ],
    );
    w.spawn_echo();
    let (mut child, stderr_log, ports) = forward_to(&w, &[9101, 9000], "stall-stderr");
    let (zeros, echo) = (ports[0], ports[1]);

    let mut stalled = TcpStream::connect(("127.0.0.1", zeros)).unwrap();
    // The source is pushing and nobody reads: the far end is ahead of the reader.
    wait_unread(&stalled, 64 * 1024);
    // Meanwhile the session still carries another forward.
    let t = std::time::Instant::now();
    let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let back = echo_through(echo, &data);
    assert!(
        back == data,
        "the echo forward returned {} of {} bytes",
        back.len(),
        data.len()
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the echo forward waited behind the stalled connection"
    );
    // Still unread, it falls the budget behind, and bastion says it resets it.
    assert!(
        wait_for_text(
            &stderr_log,
            "reset a connection whose local reader fell",
            Duration::from_secs(120)
        ),
        "no reset of the stalled connection:\n{}",
        std::fs::read_to_string(&stderr_log).unwrap_or_default()
    );
    // The stalled connection ends with a reset, after some data, not with a clean end.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0usize;
    // The budget is 32 MiB plus what the sockets hold: far past it, no reset is coming.
    let give_up = Instant::now() + Duration::from_secs(120);
    let end = loop {
        if got > 512 << 20 || Instant::now() > give_up {
            break None;
        }
        match stalled.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => got += n,
            Err(e) => break Some(e.kind()),
        }
    };
    let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
    assert_eq!(
        end,
        Some(std::io::ErrorKind::ConnectionReset),
        "after {got} bytes\nbastion's stderr:\n{log}"
    );
    assert!(
        log.contains("reset a connection whose local reader fell"),
        "bastion says why:\n{log}"
    );
    // bastion itself is still up and forwarding.
    assert!(echo_through(echo, &data[..1024]) == data[..1024]);
    let status = child.interrupt(Duration::from_secs(30));
    assert!(status.success(), "-N exits cleanly on Ctrl-C");
}

/// Several busy downloads through one forward, together past 1 GiB: where russh's default limits
/// start a rekey from this side, which dropped the session while the channels' windows were in
/// flight ("Pending buffer limit reached"). Every byte must arrive and the session stay up.
#[tokio::test(flavor = "multi_thread")]
async fn busy_forwards_past_one_gib_keep_the_session() {
    if common::require_tool("socat", &[]).is_none() {
        return;
    }
    let mut w = world_or_skip!();
    const STREAMS: usize = 8;
    const EACH: usize = 144 * 1024 * 1024; // 8 x 144 MiB = 1.125 GiB
    let file = w.lab.path("download.bin");
    let data: Vec<u8> = (0..(EACH / 4) as u32)
        .flat_map(|i| i.wrapping_mul(2246822519).to_le_bytes())
        .collect();
    std::fs::write(&file, &data).unwrap();
    let want = sha256_hex(&data);
    drop(data);
    // socat reads the file itself (no child process, no pipe between cat and socat).
    let serve = format!("OPEN:{},rdonly", file.display());
    w.lab.spawn_in(
        "head",
        "download",
        &[
            "socat",
            "TCP-LISTEN:9100,bind=127.0.0.1,fork,reuseaddr,backlog=64",
            &serve,
        ],
    );
    let (mut child, stderr_log, ports) = forward_to(&w, &[9100], "download-stderr");
    let port = ports[0];

    let t = std::time::Instant::now();
    let readers: Vec<_> = (0..STREAMS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                let mut hash = <sha2::Sha256 as sha2::Digest>::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0usize;
                let give_up = Instant::now() + Duration::from_secs(600);
                let end = loop {
                    // Bounded: a forward that sends more than the file, or trickles, fails.
                    if n > EACH || Instant::now() > give_up {
                        break format!("still reading after {n} bytes");
                    }
                    match s.read(&mut buf) {
                        Ok(0) => break "end of stream".to_string(),
                        Err(e) => break format!("read error: {e}"),
                        Ok(k) => {
                            sha2::Digest::update(&mut hash, &buf[..k]);
                            n += k;
                        }
                    }
                };
                (n, format!("{:x}", sha2::Digest::finalize(hash)), end)
            })
        })
        .collect();
    let got: Vec<(usize, String, String)> =
        readers.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!(
        "{STREAMS} x {} MiB downloaded through -L in {:?}",
        EACH >> 20,
        t.elapsed()
    );
    let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
    let content = std::fs::read(&file).unwrap();
    for (i, (n, h, end)) in got.iter().enumerate() {
        let what = if *h == want {
            "checksum matches"
        } else if sha256_hex(&content[..(*n).min(EACH)]) == *h {
            "a prefix of the file: the tail is missing"
        } else {
            "bytes differ"
        };
        assert!(
            *n == EACH && *h == want,
            "stream {i}: {n} of {EACH} bytes ({end}), {what}\nbastion's stderr:\n{log}"
        );
    }
    assert!(
        child.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "bastion exited after the downloads:\n{log}"
    );
    // The session still carries a new connection.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut first = [0u8; 16];
    s.read_exact(&mut first).unwrap();
    assert_eq!(
        first,
        file_prefix(&file),
        "a new connection after the downloads"
    );
    drop(s);
    let status = child.interrupt(Duration::from_secs(30));
    assert!(status.success(), "-N exits cleanly on Ctrl-C");
}

fn file_prefix(file: &std::path::Path) -> [u8; 16] {
    let mut f = std::fs::File::open(file).unwrap();
    let mut b = [0u8; 16];
    f.read_exact(&mut b).unwrap();
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn the_interactive_shell_has_a_pty_follows_resizes_and_restores_the_terminal() {
    let Some(tmux) = common::require_tool("tmux", &[]) else {
        return;
    };
    let w = world_or_skip!();
    let socket = w.lab.path("tmux.sock");
    let done = w.lab.path("shell-exit");
    let args: Vec<String> = w.connect_args(&[]).iter().map(|a| a.to_string()).collect();
    // Run bastion in a tmux pane through a wrapper that records the exit code and whether the
    // terminal settings came back.
    let bin = env!("CARGO_BIN_EXE_bastion");
    let mut env = String::new();
    for (k, v) in w.b.command(&[]).get_envs() {
        if let (k, Some(v)) = (k.to_string_lossy(), v) {
            env.push_str(&format!("{k}='{}' ", v.to_string_lossy()));
        }
    }
    let script = format!(
        "before=$(stty -g); env {env} TERM=xterm-256color {bin} {args}; code=$?; after=$(stty -g); \
         echo \"$code $([ \"$before\" = \"$after\" ] && echo restored || echo broken)\" > {done}.tmp; \
         mv {done}.tmp {done}; sleep 30",
        args = args.join(" "),
        done = done.display(),
    );
    let tm = |a: &[&str]| {
        Command::new(&tmux)
            .arg("-S")
            .arg(&socket)
            .args(a)
            .output()
            .unwrap()
    };
    assert!(
        tm(&[
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            "bash",
            "-c",
            &script
        ])
        .status
        .success()
    );
    let capture = || String::from_utf8_lossy(&tm(&["capture-pane", "-p"]).stdout).into_owned();
    let wait_for = |needle: &str| {
        for _ in 0..200 {
            if capture().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("never saw {needle:?} in:\n{}", capture());
    };
    // Wait for the remote prompt, then ask the remote PTY its size.
    tm(&["send-keys", "echo SHELL-$((40+2))", "Enter"]);
    wait_for("SHELL-42");
    tm(&["send-keys", "stty size; echo TERM=$TERM", "Enter"]);
    wait_for("30 100");
    wait_for("TERM=xterm-256color");
    tm(&["resize-window", "-x", "120", "-y", "40"]);
    // The window change travels to the remote PTY on its own time: ask again until it answers
    // with the new size (a deadline, not a guess at how long it takes).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tm(&["send-keys", "clear; stty size", "Enter"]);
        std::thread::sleep(Duration::from_millis(300));
        if capture().contains("40 120") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the remote PTY never took the new size:\n{}",
            capture()
        );
    }
    tm(&["send-keys", "exit 3", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Written whole and renamed: never read half-written.
    let result = std::fs::read_to_string(&done).unwrap_or_default();
    tm(&["kill-server"]);
    assert_eq!(
        result.trim(),
        "3 restored",
        "exit code and terminal state: {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_config_lets_openssh_reach_the_head_node() {
    if common::require_tool("ssh", &[]).is_none() {
        return;
    }
    let mut w = world_or_skip!();
    let mut args = vec!["ssh-config"];
    args.extend(w.route_args(&w.lab.proxy_ip));
    let r = w.b.run(&args);
    assert_eq!(r.status, 0, "{r:?}");
    let config = w.lab.path("ssh_config");
    std::fs::write(&config, &r.stdout).unwrap();
    let ssh = |host: &str, cfg: &std::path::Path| {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg(cfg)
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=30"])
            .args([host, "echo via:$SSH_CONNECTION"])
            .stdin(std::process::Stdio::null());
        run_within(cmd, Duration::from_secs(120))
    };
    let out = ssh("demo-head", &config);
    let stdout = out.stdout.clone();
    assert!(out.status == 0, "ssh demo-head: {}", out.stderr.clone());
    assert!(
        stdout.contains(&format!("via:10.78.{}.1 ", w.lab.n)),
        "{stdout}"
    );
    // As `pcluster ssh` runs it: ssh <user>@<private ip>.
    let out = ssh(&format!("root@{}", w.lab.head_ip), &config);
    assert!(out.status == 0, "ssh root@ip: {}", out.stderr.clone());

    // --install: one Include line in ~/.ssh/config (idempotent), and the same works from there.
    for _ in 0..2 {
        let mut a = args.to_vec();
        a.push("--install");
        let r = w.b.run(&a);
        assert_eq!(r.status, 0, "{r:?}");
    }
    let main = w.b.home.join(".ssh/config");
    let text = std::fs::read_to_string(&main).unwrap();
    assert_eq!(text.matches("Include ").count(), 1, "{text}");
    let out = ssh(&format!("root@{}", w.lab.head_ip), &main);
    assert!(out.status == 0, "ssh via Include: {}", out.stderr.clone());

    // OpenSSH refuses a proxy whose key is not the tag's (someone in its place), as bastion does.
    w.lab.new_host_key("proxy");
    let out = ssh("demo-head", &main);
    let err = out.stderr.clone();
    assert_eq!(out.status, 255, "{err}");
    assert!(
        err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || err.contains("Host key verification failed"),
        "{err}"
    );

    // down removes the installed file.
    let installed: Vec<_> = std::fs::read_dir(w.b.state_dir.join("ssh"))
        .unwrap()
        .collect();
    assert_eq!(installed.len(), 1);
    assert_eq!(w.b.run(&["down", "--cluster", CLUSTER]).status, 0);
    let installed: Vec<_> = std::fs::read_dir(w.b.state_dir.join("ssh"))
        .unwrap()
        .collect();
    assert!(
        installed.is_empty(),
        "down removes the ssh config it installed"
    );
}

/// ParallelCluster's own `pcluster ssh -n NAME` (from PyPI, reading the head node from moto)
/// reaches the head node through the proxy once the config from `ssh-config --install` is in
/// place, logging in as the user the cluster's OS has, as does `connect` when no `--user` is
/// given.
#[tokio::test(flavor = "multi_thread")]
async fn pcluster_ssh_goes_through_the_proxy_with_the_installed_config() {
    let Some(pcluster) = require_tool("pcluster", &[pcluster_venv().join("bin/pcluster")]) else {
        return;
    };
    if common::require_tool("ssh", &[]).is_none() {
        return;
    }
    let w = world_or_skip!();
    let user = common::netlab::HEAD_LOGIN_USER;
    let via = format!("via:10.78.{}.1 ", w.lab.n);

    // connect without --user logs in as the OS's user, read from parallelcluster:attributes.
    let mut args = vec!["connect"];
    args.extend(w.route_args_default_user(&w.lab.proxy_ip));
    args.extend(["--", "echo", "user:$USER"]);
    let r = w.b.run(&args);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), format!("user:{user}"), "{r:?}");

    let mut args = vec!["ssh-config", "--install"];
    args.extend(w.route_args_default_user(&w.lab.proxy_ip));
    let r = w.b.run(&args);
    assert_eq!(r.status, 0, "{r:?}");

    // OpenSSH reads ~/.ssh/config from the passwd entry's home, not $HOME, so the test names the
    // file that --install wrote the Include line into. pcluster appends its extra arguments to
    // `ssh <user>@<ip>`.
    // pcluster reads its region from AWS_DEFAULT_REGION only.
    let pcluster_ssh = |extra: &[&str]| {
        let mut cmd = w.b.aws_command(&pcluster);
        cmd.env("AWS_DEFAULT_REGION", REGION)
            .args(["ssh", "-n", CLUSTER])
            .args(extra);
        w.b.run_cmd(cmd)
    };
    let config = w.b.home.join(".ssh/config");
    let r = pcluster_ssh(&[
        "-F",
        config.to_str().unwrap(),
        "-o",
        "BatchMode=yes",
        "echo via:$SSH_CONNECTION user:$USER",
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.starts_with(&via), "through the proxy: {r:?}");
    assert!(
        r.stdout
            .contains(&format!(" {} 22 user:{user}", w.lab.head_ip)),
        "{r:?}"
    );

    // What pcluster ran, as its --dryrun prints it: the head node's private IP, no jump.
    let r = pcluster_ssh(&["--dryrun", "true"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        r.json()["command"].as_str().unwrap().trim(),
        format!("ssh {user}@{}", w.lab.head_ip),
        "{r:?}"
    );
}

/// The proxy's link cut under `connect -N` (its interface down, so packets vanish as on a
/// dead Wi-Fi): keepalives find the loss and say so; with the link back, bastion reconnects on
/// its own and the same local port carries data again.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_link_is_reported_and_forwards_carry_on_once_it_is_back() {
    let mut w = world_or_skip!();
    w.spawn_echo();
    let (child, log, ports) = forward_to(&w, &[9000], "cut-link.log");
    assert_eq!(echo_through(ports[0], b"before"), b"before");

    // The idle timer stops the proxy (as AWS records it; the lab's host stays up), and the link
    // dies: the reconnect finds it stopped and starts it again.
    w.aws.stop_instance(&w.proxy_id).await;
    w.lab.set_proxy_link(false);
    let lost = wait_for_text(&log, "was lost", Duration::from_secs(150));
    w.lab.set_proxy_link(true);
    assert!(
        lost,
        "the loss is reported: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        wait_for_text(&log, "reconnected to", Duration::from_secs(150)),
        "bastion reconnects by itself: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(echo_through(ports[0], b"after"), b"after");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(text.matches("reconnected to").count(), 1, "{text}");
    assert!(text.contains("starting the stopped bastion"), "{text}");
    drop(child);
}

/// `--quiet` silences the loss and reconnect lines like every other: the link is mended all the
/// same. The test follows it through bastion's log at info level (tracing, which `BASTION_LOG`
/// raises past `--quiet`), and no line of bastion's own is said on stderr.
#[tokio::test(flavor = "multi_thread")]
async fn with_quiet_a_cut_link_is_mended_in_silence() {
    let mut w = world_or_skip!();
    w.spawn_echo();
    w.b.env
        .push(("BASTION_LOG".into(), "warn,bastion=info".into()));
    let (child, log, ports) = forward_with(&w, &[9000], "quiet-cut.log", &["--quiet"]);
    assert_eq!(echo_through(ports[0], b"before"), b"before");
    w.lab.set_proxy_link(false);
    let lost = wait_for_text(&log, "session lost", Duration::from_secs(150));
    w.lab.set_proxy_link(true);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(lost, "the loss is logged: {}", text());
    assert!(
        wait_for_text(&log, "session reconnected", Duration::from_secs(150)),
        "{}",
        text()
    );
    assert_eq!(echo_through(ports[0], b"after"), b"after");
    let said: Vec<String> = text()
        .lines()
        .filter(|l| l.starts_with("bastion: "))
        .map(str::to_string)
        .collect();
    assert!(said.is_empty(), "--quiet, yet: {said:#?}");
    drop(child);
}

/// A reconnect that meets a changed head node key stops there: the tunnel ends with the
/// refusal (someone may be in the middle) instead of retrying past it.
#[tokio::test(flavor = "multi_thread")]
async fn a_reconnect_that_meets_a_changed_host_key_ends_the_tunnel() {
    let mut w = world_or_skip!();
    w.spawn_echo();
    let (mut child, log, ports) = forward_to(&w, &[9000], "rekeyed.log");
    assert_eq!(echo_through(ports[0], b"pinned"), b"pinned");

    w.lab.set_proxy_link(false);
    assert!(
        wait_for_text(&log, "was lost", Duration::from_secs(150)),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Meanwhile something else answers at the head node's address with another key.
    let (other, _) = NetLab::key_pair(w.lab.dir.path(), "impostor_host_ed25519");
    w.lab
        .add_sshd_config("head", &format!("HostKey {}", other.display()));
    w.lab.start_sshd("head");
    w.lab.set_proxy_link(true);
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(s) = child.child().try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connect -N kept retrying: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("host key changed"), "{text}");
    assert!(!text.contains("reconnected to"), "{text}");
}

/// Waits (30 s at most) until at least `bytes` have arrived on `s` and sit unread. Blocking
/// peeks with a read timeout: `O_NONBLOCK` would be shared with a clone still writing.
fn wait_unread(s: &TcpStream, bytes: usize) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = vec![0u8; bytes];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if matches!(s.peek(&mut buf), Ok(n) if n >= bytes) {
            break;
        }
        assert!(Instant::now() < deadline, "no {bytes} bytes queued in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.set_read_timeout(None).unwrap();
}
