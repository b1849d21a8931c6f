//! Test harness: a moto server per test (the AWS stand-in), a VPC built like a ParallelCluster
//! deployment, the built `bastion` binary run against it, and read-backs of what AWS holds.
//! Nothing here talks to real AWS: every client and every run of the binary is pointed at the
//! moto server on loopback, with dummy keys and no profile files.
//!
//! By subject: `tools` (what a test needs installed, and small waits), `moto` (the server and
//! the world it starts from), `run` (the built binary, run as a user would), `netlab` (the SSH
//! lab in network namespaces), `front` (AWS's real answers where moto is kinder), `eic` (EC2
//! Instance Connect, which moto lacks), `endpoint` (its Endpoint, which moto lacks too), `world` (the lab and moto together).
#![allow(dead_code)]

pub mod eic;
pub mod endpoint;
pub mod front;
pub mod moto;
pub mod netlab;
pub mod run;
pub mod tools;
pub mod world;

pub use moto::*;
pub use run::*;
pub use tools::*;

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

/// How long one run of a command may take before the test fails instead of hanging (the
/// slowest, `up` waiting out its own `--timeout 2`, takes about two minutes).
pub const RUN_LIMIT: Duration = Duration::from_secs(300);

/// What is kept of a run's stdout and of its stderr (a runaway writer cannot fill memory).
pub const OUTPUT_CAP: u64 = 16 << 20;

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
