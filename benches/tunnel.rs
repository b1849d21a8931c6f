//! Tunnel benchmark: `bastion connect -L` against OpenSSH `ssh -L` through the same proxy, in the
//! same run, in the network-namespace lab (real sshd on the proxy and head node hosts, moto for
//! AWS). Prints figures and ratios; asserts nothing about speed.
//!
//!   cargo bench --bench tunnel            (root, with iperf3, socat, ssh, moto; see .ci/run)
//!
//! Cases: iperf3 download and upload through one forward on loopback and at 50 ms RTT (a
//! userspace delay proxy in front of the proxy's sshd, 25 ms each way), each the median of
//! `BASTION_BENCH_ROUNDS` (5) rounds with a fresh forward per tool and round; 8 and 16 parallel
//! download streams through one forward (many busy channels: the window trade-off in
//! src/ssh/client.rs); the latency of a small request while 8 streams run; connection setup time
//! (`connect -- true` against `ssh -J ... true`, the operator's and a teammate's); peak RSS with 50
//! open forwarded connections; the soak (`BASTION_BENCH_CASES=soak`); the two ways in side by
//! side (`BASTION_BENCH_CASES=eice`): download, upload and setup through the EC2 Instance Connect
//! Endpoint stand-in (tests/eice_standin.py, Python: its figures are the stand-in's, not AWS's)
//! against the proxy, both bastion.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "the bench is a test harness: a panic ends the run with its message"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::world::{World, world};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Seconds per iperf3 run (`BASTION_BENCH_SECONDS`, default 6; CI's short run uses 3).
fn iperf_seconds() -> String {
    std::env::var("BASTION_BENCH_SECONDS")
        .ok()
        .filter(|v| v.parse::<u32>().is_ok_and(|n| n > 0))
        .unwrap_or_else(|| "6".into())
}

/// The lab of the connect tests, plus iperf3 and an echo service on the head node.
struct Setup {
    w: World,
}

async fn setup() -> Option<Setup> {
    for tool in ["iperf3", "socat", "ssh"] {
        require_tool(tool, &[])?;
    }
    let mut w = world().await?;
    w.lab.spawn_in(
        "head",
        "iperf3",
        &["iperf3", "-s", "-B", "127.0.0.1", "-p", "5201"],
    );
    // A second server on the head node's own address, which the proxy can reach too: the DCV
    // path case compares the two ways to its port.
    let head_ip = w.lab.head_ip.clone();
    w.lab.spawn_in(
        "head",
        "iperf3-head-ip",
        &["iperf3", "-s", "-B", &head_ip, "-p", "5202"],
    );
    w.spawn_echo();
    std::thread::sleep(Duration::from_millis(500));
    Some(Setup { w })
}

/// A TCP proxy on loopback that delays every chunk by `one_way` in each direction.
async fn delay_proxy(target: String, one_way: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(delayed(cr, sw, one_way), delayed(sr, cw, one_way));
            });
        }
    });
    port
}

async fn delayed(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    d: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((tokio::time::Instant::now() + d, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    while let Some((at, chunk)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        if w.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
    reader.abort();
}

struct Tool {
    name: &'static str,
    child: Child,
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Setup {
    fn bastion_args<'a>(&'a self, address: &'a str) -> Vec<&'a str> {
        let mut v = vec!["connect"];
        v.extend(self.w.route_args(address));
        v.push("-q");
        v
    }

    /// An OpenSSH config for the same route, written by `bastion ssh-config`.
    fn ssh_config(&self, address: &str) -> std::path::PathBuf {
        let mut args = vec!["ssh-config"];
        args.extend(self.w.route_args(address));
        let r = self.w.b.run(&args);
        assert_eq!(r.status, 0, "{r:?}");
        let path = self.w.lab.path(&format!(
            "bench-ssh-config-{}",
            address.replace([':', '.'], "-")
        ));
        std::fs::write(&path, r.stdout).unwrap();
        path
    }

    /// bastion's `connect -N -L port:<head ip>:remote`, inside the head node's session (what
    /// `--dcv` does) or, with `on_proxy`, from the proxy (what `--dcv` did before).
    fn forward_to_head_ip(&self, address: &str, remote: u16, on_proxy: bool) -> (Tool, u16) {
        let port = free_port();
        let spec = format!("{port}:{}:{remote}", self.w.lab.head_ip);
        let mut args = self.bastion_args(address);
        args.extend(["-L", &spec, "-N"]);
        if on_proxy {
            args.push("--on-proxy");
        }
        let mut cmd = self.w.b.command(&args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().unwrap();
        wait_listening(port);
        std::thread::sleep(Duration::from_secs(1));
        let name = if on_proxy { "proxy" } else { "head" };
        (Tool { name, child }, port)
    }

    /// `connect -N -L port:127.0.0.1:remote` by bastion or OpenSSH.
    fn forward(&self, tool: &'static str, address: &str, remote: u16) -> (Tool, u16) {
        let port = free_port();
        let spec = format!("{port}:127.0.0.1:{remote}");
        let child = if tool == "bastion" {
            let mut args = self.bastion_args(address);
            args.extend(["-L", &spec, "-N"]);
            let mut cmd = self.w.b.command(&args);
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            cmd.spawn().unwrap()
        } else {
            Command::new("ssh")
                .arg("-F")
                .arg(self.ssh_config(address))
                .args(["-o", "BatchMode=yes", "-N", "-L", &spec, "demo-head"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        wait_listening(port);
        // The probe above was a connection through the tunnel: give the service a moment to
        // finish with it (iperf3 serves one client at a time).
        std::thread::sleep(Duration::from_secs(1));
        (Tool { name: tool, child }, port)
    }
}

/// MiB/s from iperf3's JSON (`end.sum_received`); up to 3 tries (the server may still be busy).
fn iperf(port: u16, reverse: bool, streams: u32) -> f64 {
    for _ in 0..3 {
        let mbs = iperf_once(port, reverse, streams);
        if mbs > 0.0 {
            return mbs;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    0.0
}

fn iperf_once(port: u16, reverse: bool, streams: u32) -> f64 {
    let mut cmd = Command::new("iperf3");
    cmd.args([
        "-c",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        &iperf_seconds(),
        "-J",
        "-P",
        &streams.to_string(),
    ]);
    if reverse {
        cmd.arg("-R");
    }
    let out = cmd.output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    if bps == 0.0 {
        eprintln!(
            "iperf3 failed: {}",
            String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(400)
                .collect::<String>()
        );
    }
    bps / 8.0 / 1024.0 / 1024.0
}

/// Round trip of a 64-byte request through the echo forward, median of 20, in ms.
fn echo_latency(port: u16) -> f64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut samples = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..20 {
        let t = Instant::now();
        s.write_all(&[42u8; 64]).unwrap();
        s.read_exact(&mut buf).unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(50));
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// CPU time (user + system, seconds) of `pid` and its direct children (ssh's -J helper).
fn cpu_seconds(pid: u32) -> f64 {
    let fields = |p: &str| -> Vec<String> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let after = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.to_string())
            .unwrap_or_default();
        after.split_whitespace().map(str::to_string).collect()
    };
    // After the command: state is field 0, ppid 1, utime 11, stime 12 (clock ticks).
    let ticks = |f: &[String]| -> u64 {
        [11, 12]
            .iter()
            .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
            .sum()
    };
    let mut total = ticks(&fields(&pid.to_string()));
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.chars().all(|c| c.is_ascii_digit()) {
            let f = fields(&name);
            if f.get(1).map(String::as_str) == Some(pid.to_string().as_str()) {
                total += ticks(&f);
            }
        }
    }
    total as f64 / 100.0
}

fn vm_hwm_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// A `/proc/PID/status` figure in KiB (0 when missing).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn vm_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One connection through `port`: `n` bytes out and back, checksummed; false on any mismatch.
fn echo_checked(port: u16, n: usize, seed: u8) -> bool {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
    let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
    let Ok(mut w) = c.try_clone() else {
        return false;
    };
    let out = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&out).is_ok());
    let mut back = vec![0u8; n];
    let read = c.read_exact(&mut back).is_ok();
    writer.join().unwrap_or(false) && read && back == data
}

/// The soak: 10,000 sequential and 200 concurrent connections through one `connect -N`, each
/// checksummed, with the forwarder's open file descriptors and RSS before and after.
fn soak(s: &Setup, address: &str) {
    let (t, port) = s.forward("bastion", address, 9000);
    let pid = t.child.id();
    assert!(echo_checked(port, 4096, 0), "the soak's first echo");
    let (fds0, rss0) = (open_fds(pid), vm_rss_kib(pid));
    let start = Instant::now();
    let mut failed = 0;
    for i in 0..10_000u32 {
        if !echo_checked(port, 4096, i as u8) {
            failed += 1;
        }
    }
    let sequential = start.elapsed();
    let (fds1, rss1) = (open_fds(pid), vm_rss_kib(pid));
    // Three rounds of 200 at once: memory the allocator keeps after the first round is not a
    // leak unless the later rounds add to it.
    let mut rounds = Vec::new();
    for round in 0..3u32 {
        let start = Instant::now();
        let workers: Vec<_> = (0..200u32)
            .map(|i| std::thread::spawn(move || echo_checked(port, 256 * 1024, (i + round) as u8)))
            .collect();
        let failed = workers
            .into_iter()
            .map(|w| w.join())
            .filter(|r| !matches!(r, Ok(true)))
            .count();
        let took = start.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        rounds.push((
            took,
            failed,
            open_fds(pid),
            vm_rss_kib(pid),
            status_kib(pid, "RssAnon:"),
        ));
    }
    println!(
        "soak       10,000 sequential (4 KiB each): {:.1} s, {failed} failed; bastion's open fds {fds0} -> {fds1}, RSS {:.1} -> {:.1} MiB",
        sequential.as_secs_f64(),
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0
    );
    for (i, (took, failed, fds, rss, anon)) in rounds.iter().enumerate() {
        println!(
            "soak       200 concurrent (256 KiB each), round {}: {:.1} s, {failed} failed; open fds {fds}, RSS {:.1} MiB (anon {:.1})",
            i + 1,
            took.as_secs_f64(),
            *rss as f64 / 1024.0,
            *anon as f64 / 1024.0
        );
    }
    drop(t);
}

/// `BASTION_BENCH_CASES="loopback/download,..."` runs only those throughput cases.
fn wanted(net: &str, case: &str) -> bool {
    match std::env::var("BASTION_BENCH_CASES") {
        Ok(list) => list.split(',').any(|w| {
            let (n, c) = w.split_once('/').unwrap_or((w, ""));
            net.starts_with(n) && case.starts_with(c)
        }),
        Err(_) => true,
    }
}

/// `BASTION_BENCH_HOLD=1`: keep the lab up with one forward per tool and network, print how to
/// reach them (for profiling by hand: `perf record -p PID`, iperf3 against the ports), and wait
/// for Enter.
fn hold(s: &Setup, networks: &[(&str, String)]) {
    let mut held = Vec::new();
    for (net, address) in networks {
        for tool in ["bastion", "openssh"] {
            let (t, port) = s.forward(tool, address, 5201);
            println!(
                "{net:<10} {tool:<8} pid {:>7}  iperf3 -c 127.0.0.1 -p {port} [-R]",
                t.child.id()
            );
            held.push(t);
        }
    }
    println!("the lab stays up until Enter");
    let _ = std::io::stdin().read_line(&mut String::new());
}

/// Rounds per throughput case (`BASTION_BENCH_ROUNDS`, default 5): the figure is the median.
fn rounds() -> usize {
    std::env::var("BASTION_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5)
}

/// Setup times in ms of two commands, run 9 times each taking turns to go first (OpenSSH's
/// own time moves by a fifth from run to run): their medians.
fn setup_medians(a: &dyn Fn() -> bool, b: &dyn Fn() -> bool) -> (f64, f64) {
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..9 {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let start = Instant::now();
            let ok = if i == 0 { a() } else { b() };
            assert!(ok, "the setup-time command failed");
            times[i].push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    (median(&times[0]), median(&times[1]))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    format!("{lo:.0}-{hi:.0}")
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: measure only under cargo bench.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("tunnel benchmark: run it with `cargo bench --bench tunnel`");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(mut s) = rt.block_on(setup()) else {
        eprintln!(
            "benchmark skipped: it needs root, iperf3, socat, ssh and moto (run .ci/run first)"
        );
        return;
    };
    let direct = s.w.lab.proxy_ip.clone();
    let delayed_port = rt.block_on(delay_proxy(
        format!("{direct}:22"),
        Duration::from_millis(25),
    ));
    let networks = [
        ("loopback", direct.clone()),
        ("50 ms RTT", format!("127.0.0.1:{delayed_port}")),
    ];
    if std::env::var_os("BASTION_BENCH_HOLD").is_some() {
        hold(&s, &networks);
        return;
    }

    println!(
        "tunnel benchmark: one -L forward through the proxy to the head node (iperf3, {} s each, median of {} rounds)",
        iperf_seconds(),
        rounds()
    );
    println!(
        "{:<10} {:<18} {:>12} {:>12} {:>8}",
        "network", "case", "bastion", "openssh", "ratio"
    );
    let _guard = rt.enter();
    for (net, address) in &networks {
        for (case, reverse, streams) in [
            ("download MiB/s", true, 1),
            ("upload MiB/s", false, 1),
            ("8 streams MiB/s", true, 8),
            ("16 streams MiB/s", true, 16),
        ] {
            if !wanted(net, case) {
                continue;
            }
            // Each round: a fresh forward per tool (the first transfer of a session, what a
            // user gets), the tools alternating so that both see the same machine, and taking
            // turns to go first.
            let mut figures = [Vec::new(), Vec::new()];
            let mut cpu = [Vec::new(), Vec::new()];
            for round in 0..rounds() {
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for i in order {
                    let tool = ["bastion", "openssh"][i];
                    let (t, port) = s.forward(tool, address, 5201);
                    let before = cpu_seconds(t.child.id());
                    figures[i].push(iperf(port, reverse, streams));
                    cpu[i].push(cpu_seconds(t.child.id()) - before);
                    drop(t);
                }
            }
            let (b, o) = (median(&figures[0]), median(&figures[1]));
            println!(
                "{net:<10} {case:<18} {b:>12.1} {o:>12.1} {:>8}   (range: bastion {}, openssh {}; CPU s: bastion {:.1}, openssh {:.1})",
                ratio(b, o),
                range(&figures[0]),
                range(&figures[1]),
                median(&cpu[0]),
                median(&cpu[1])
            );
        }
        // Latency of a small request while 8 download streams run.
        let mut lat = Vec::new();
        for tool in ["bastion", "openssh"] {
            let (t, port) = s.forward(tool, address, 5201);
            let (e, eport) = s.forward(tool, address, 9000);
            let bulk = std::thread::spawn(move || iperf(port, true, 8));
            std::thread::sleep(Duration::from_secs(2));
            lat.push(echo_latency(eport));
            let _ = bulk.join();
            drop((t, e));
        }
        println!(
            "{net:<10} {:<18} {:>12.1} {:>12.1} {:>8}",
            "small req ms (busy)",
            lat[0],
            lat[1],
            ratio(lat[0], lat[1])
        );
    }

    // The DCV path: the head node's port reached inside its own session (end to end, as
    // `--dcv` does now) against the proxy opening it (`proxy -> head:8443`, as before).
    for (net, address) in &networks {
        for (case, reverse, streams) in [
            ("dcv download MiB/s", true, 1),
            ("dcv 4 streams MiB/s", true, 4),
        ] {
            if !wanted(net, case) {
                continue;
            }
            let mut figures = [Vec::new(), Vec::new()];
            for round in 0..rounds() {
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for i in order {
                    let (t, port) = s.forward_to_head_ip(address, 5202, i == 1);
                    figures[i].push(iperf(port, reverse, streams));
                    drop(t);
                }
            }
            let (h, p) = (median(&figures[0]), median(&figures[1]));
            println!(
                "{net:<10} {case:<18} {h:>12.1} {p:>12.1} {:>8}   (head node's session vs from the proxy; range {} / {})",
                ratio(h, p),
                range(&figures[0]),
                range(&figures[1])
            );
        }
    }

    if wanted("soak", "") {
        soak(&s, &direct);
    }
    if wanted("eice", "") {
        rt.block_on(ways_in(&mut s, &direct));
    }

    // Setup time: connect and run `true` on the head node (see setup_medians).
    let config = s.ssh_config(&direct);
    // Both timed by a blocking wait for the process (the harness's `run` polls every 50 ms).
    let status_of = |mut cmd: Command| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|st| st.success())
            .unwrap_or(false)
    };
    let bastion_once = || {
        let mut args = s.bastion_args(&direct);
        args.extend(["--", "true"]);
        status_of(s.w.b.command(&args))
    };
    let ssh_once = || {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg(&config)
            .args(["-o", "BatchMode=yes", "demo-head", "true"]);
        status_of(cmd)
    };
    let (bastion_setup, ssh_setup) = setup_medians(&bastion_once, &ssh_once);
    println!(
        "{:<10} {:<18} {:>12.0} {:>12.0} {:>8}   (bastion includes its AWS look-ups, against moto)",
        "loopback",
        "setup ms",
        bastion_setup,
        ssh_setup,
        ratio(bastion_setup, ssh_setup)
    );

    // Peak RSS with 50 open connections, each having echoed 1 MiB.
    let (mut rss, mut anon, mut file) = (Vec::new(), Vec::new(), Vec::new());
    for tool in ["bastion", "openssh"] {
        let (t, port) = s.forward(tool, &direct, 9000);
        let conns: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let data = vec![5u8; 1024 * 1024];
                let mut w = c.try_clone().unwrap();
                let writer = std::thread::spawn(move || w.write_all(&data).unwrap());
                let mut back = vec![0u8; 1024 * 1024];
                c.read_exact(&mut back).unwrap();
                writer.join().unwrap();
                c
            })
            .collect();
        rss.push(vm_hwm_kib(t.child.id()) as f64 / 1024.0);
        // The peak counts the executable's pages the process touched (shared page cache, read
        // in whole large folios by a recent kernel); what the connections cost is anonymous.
        anon.push(status_kib(t.child.id(), "RssAnon:") as f64 / 1024.0);
        file.push(status_kib(t.child.id(), "RssFile:") as f64 / 1024.0);
        eprintln!("{}: {} connections open", t.name, conns.len());
        drop(conns);
        drop(t);
    }
    println!(
        "{:<10} {:<18} {:>12.1} {:>12.1} {:>8}   (openssh: the ssh client process; its -J helper not counted)",
        "loopback",
        "peak RSS MiB (50)",
        rss[0],
        rss[1],
        ratio(rss[0], rss[1])
    );
    println!(
        "{:<10} {:<18} {:>12.1} {:>12.1} {:>8}   (of it file-backed: bastion {:.1}, openssh {:.1} MiB)",
        "loopback",
        "anon RSS MiB (50)",
        anon[0],
        anon[1],
        ratio(anon[0], anon[1]),
        file[0],
        file[1]
    );

    // A teammate's setup: no proxy key on this machine, so each connect pushes a one-time key
    // through EC2 Instance Connect (the lab's stand-in) first. Last, since it makes the proxy's
    // sshd ask the stand-in for keys. One connect first pins the host keys, as the operator's
    // are pinned above.
    let n = s.w.lab.n;
    let t = rt.block_on(s.w.teammate(&format!("10.77.{n}.1")));
    let teammate_once = || status_of(t.b.command(&s.w.teammate_args(&["--", "true"])));
    let first = t.b.run(&s.w.teammate_args(&["--", "true"]));
    assert_eq!(first.status, 0, "the teammate's first connect: {first:?}");
    let (teammate_setup, ssh_setup) = setup_medians(&teammate_once, &ssh_once);
    println!(
        "{:<10} {:<18} {:>12.0} {:>12.0} {:>8}   (a teammate: one Instance Connect push more)",
        "loopback",
        "teammate setup ms",
        teammate_setup,
        ssh_setup,
        ratio(teammate_setup, ssh_setup)
    );
}

/// The two ways in, both bastion: through the EC2 Instance Connect Endpoint stand-in against
/// through the proxy, on loopback. Download, upload (a fresh forward per round, the ways taking
/// turns) and setup (`connect -- true`).
async fn ways_in(s: &mut Setup, direct: &str) {
    let saved = (s.w.b.endpoint.clone(), s.w.b.env.clone());
    let _attached = common::endpoint::attach(
        &mut s.w.lab,
        &mut s.w.b,
        &s.w.aws.ec2,
        &s.w.moto.url,
        &s.w.head_id,
    )
    .await;
    let key = s.w.cluster_key.to_str().unwrap().to_string();
    let eice_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "connect",
            "--cluster",
            CLUSTER,
            "--via",
            "eice",
            "--user",
            "root",
            "-i",
            &key,
            "-q",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    let proxy_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = s
            .bastion_args(direct)
            .iter()
            .map(|a| a.to_string())
            .collect();
        v.extend(["--via".to_string(), "proxy".to_string()]);
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    let forward = |eice: bool| -> (Tool, u16) {
        let port = free_port();
        let spec = format!("{port}:127.0.0.1:5201");
        let args = if eice {
            eice_args(&["-N", "-L", &spec])
        } else {
            proxy_args(&["-N", "-L", &spec])
        };
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = s.w.b.command(&refs);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().unwrap();
        wait_listening(port);
        std::thread::sleep(Duration::from_secs(1));
        let name = if eice { "endpoint" } else { "proxy" };
        (Tool { name, child }, port)
    };
    for (case, reverse) in [("download MiB/s", true), ("upload MiB/s", false)] {
        let mut figures = [Vec::new(), Vec::new()];
        for round in 0..rounds() {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let (t, port) = forward(i == 0);
                figures[i].push(iperf(port, reverse, 1));
                drop(t);
            }
        }
        let (e, p) = (median(&figures[0]), median(&figures[1]));
        println!(
            "{:<10} {case:<18} {e:>12.1} {p:>12.1} {:>8}   (endpoint stand-in vs proxy, both bastion; range {} / {})",
            "eice",
            ratio(e, p),
            range(&figures[0]),
            range(&figures[1])
        );
    }
    let status_of = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        s.w.b
            .command(&refs)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|st| st.success())
            .unwrap_or(false)
    };
    let first = status_of(eice_args(&["--", "true"]));
    assert!(first, "the first connect through the endpoint failed");
    let (e, p) = setup_medians(&|| status_of(eice_args(&["--", "true"])), &|| {
        status_of(proxy_args(&["--", "true"]))
    });
    println!(
        "{:<10} {:<18} {e:>12.0} {p:>12.0} {:>8}   (endpoint stand-in vs proxy: a presigned TLS WebSocket against an outer SSH session)",
        "eice",
        "setup ms",
        ratio(e, p)
    );
    (s.w.b.endpoint, s.w.b.env) = saved;
    s.w.b.hosts = None;
}
