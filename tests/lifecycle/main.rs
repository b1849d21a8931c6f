//! `bastion up` / `down` / `status` against a moto server: what the user sees, and what AWS holds.
//! By subject: `creation`, `rollback`, `sweep`, `endpoint` (`up --via eice`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

#[path = "../common/mod.rs"]
mod common;

mod creation;
mod endpoint;
mod rollback;
mod sweep;

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use common::*;

/// How long a background `up` may take to say or do what a test waits for (a deadline, never a
/// verdict: it only turns a hang into a failure).
pub const LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

pub async fn wait_for_instance(aws: &Clients) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(i) = aws.bastion_instances(CLUSTER).await.first() {
            return i.instance_id().unwrap().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no bastion instance appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}
