//! The tools a test needs (and the skip that fails under `CI=true` when one is missing), the
//! Python venvs, and the small network waits every lab test uses.

use super::*;

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
