//! Records the commit bastion is built from, for `bastion --version`: from git when built in a
//! checkout, else from `.cargo_vcs_info.json` (a published crate), else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The `sha1` of `.cargo_vcs_info.json`, which `cargo package` writes: `{"git": {"sha1": "..."}}`.
fn vcs_info_sha() -> Option<String> {
    let text = std::fs::read_to_string(".cargo_vcs_info.json").ok()?;
    let at = text.find("\"sha1\"")?;
    let rest = &text[at + 6..];
    let start = rest.find('"')? + 1;
    let end = rest[start..].find('"')? + start;
    let sha = &rest[start..end];
    (sha.len() >= 7 && sha.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| sha[..12.min(sha.len())].to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");
    println!("cargo:rerun-if-changed=.cargo_vcs_info.json");
    let commit = git(&["rev-parse", "--short=12", "HEAD"])
        .or_else(vcs_info_sha)
        .unwrap_or_else(|| "unknown".into());
    let date = git(&["log", "-1", "--format=%cs"]).unwrap_or_else(|| "date unknown".into());
    println!("cargo:rustc-env=BASTION_COMMIT={commit}");
    println!("cargo:rustc-env=BASTION_COMMIT_DATE={date}");
}
