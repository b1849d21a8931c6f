//! What bastion gives the shell: completion scripts (bash completes commands, and `--cluster`
//! from the state dir without AWS), manual pages that render without warnings, a version that
//! names its commit, and help that lists the global options apart. No AWS is involved.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::require_tool;

fn bastion(args: &[&str], state: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bastion"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BASTION_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completion_scripts_generate_and_bash_completes_commands_and_known_clusters() {
    let Some(bash) = require_tool("bash", &[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    for d in [
        "123456789012/us-east-1/demo",
        "123456789012/eu-west-1/other",
        "1/r/9-not-a-name",
    ] {
        std::fs::create_dir_all(state.join(d)).unwrap();
    }
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let (code, out, err) = bastion(&["completions", shell], &state);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(
            out.contains("connect") && out.contains("cluster"),
            "{shell}"
        );
    }
    let (_, script, _) = bastion(&["completions", "bash"], &state);
    let file = tmp.path().join("bastion.bash");
    std::fs::write(&file, script).unwrap();
    let complete = |words: &[&str]| -> Vec<String> {
        let line = words.join(" ");
        let array = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let program = format!(
            "source {}; COMP_WORDS=({array}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT={}; \
             _bastion_with_clusters bastion '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display(),
            words.len() - 1,
            line.len(),
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let out = Command::new(&bash)
            .args(["--norc", "-c", &program])
            .env("PATH", path_with_bastion())
            .env("BASTION_STATE_DIR", &state)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    assert_eq!(complete(&["bastion", "conn"]), vec!["connect".to_string()]);
    assert_eq!(
        complete(&["bastion", "connect", "--cluster", ""]),
        vec!["demo".to_string(), "other".to_string()],
        "the state dir's clusters, and nothing that is not a cluster name"
    );
    assert_eq!(
        complete(&["bastion", "down", "--cluster", "o"]),
        vec!["other".to_string()]
    );
}

/// zsh loads the script (compinit, then the file as a completion function would be) and its
/// `--cluster` completer offers the state dir's clusters (`_describe` stubbed to print what it
/// is given, as zsh's completion system would offer it).
#[test]
fn zsh_loads_the_script_and_completes_known_clusters() {
    let Some(zsh) = require_tool("zsh", &[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    for d in [
        "123456789012/us-east-1/demo",
        "123456789012/eu-west-1/other",
    ] {
        std::fs::create_dir_all(state.join(d)).unwrap();
    }
    let (code, script, err) = bastion(&["completions", "zsh"], &state);
    assert_eq!(code, 0, "{err}");
    assert!(
        script.starts_with("#compdef bastion\n"),
        "the tag stays first"
    );
    assert!(
        script.contains(":CLUSTER:_bastion_clusters'"),
        "--cluster is completed by the state dir's clusters"
    );
    assert!(!script.contains(":CLUSTER:_default'"), "every --cluster");
    let file = tmp.path().join("_bastion");
    std::fs::write(&file, &script).unwrap();
    let program = format!(
        "autoload -U compinit && compinit -u -d {dump} && source {file} && \
         _describe() {{ print -l -- ${{(P)2}} }} && _bastion_clusters",
        dump = tmp.path().join("zcompdump").display(),
        file = file.display()
    );
    let out = Command::new(&zsh)
        .args(["-f", "-c", &program])
        .env("PATH", path_with_bastion())
        .env("BASTION_STATE_DIR", &state)
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let offered: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        offered,
        vec!["demo".to_string(), "other".to_string()],
        "{out:?}"
    );

    // PowerShell's script carries the same hook ahead of clap's completer.
    let (_, ps, _) = bastion(&["completions", "powershell"], &state);
    let hook = ps.find("bastion __clusters").expect("the hook is there");
    let param = ps.find("param($wordToComplete").unwrap();
    let switch = ps.find("$completions = @(switch").unwrap();
    assert!(param < hook && hook < switch, "the hook runs first");
}

/// PATH with the built bastion first, as a shell that completes finds it.
fn path_with_bastion() -> String {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_bastion")).parent().unwrap();
    format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn manual_pages_render_without_warnings() {
    let (Some(groff), Some(man)) = (require_tool("groff", &[]), require_tool("man", &[])) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dir = tmp.path().join("man");
    let (code, _, err) = bastion(&["man", "--dir", dir.to_str().unwrap()], &state);
    assert_eq!(code, 0, "{err}");
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "bastion.1",
        "bastion-up.1",
        "bastion-connect.1",
        "bastion-forget.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} in {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("__clusters")), "{pages:?}");
    for p in &pages {
        let out = Command::new(&groff)
            .args(["-ww", "-man", "-Tutf8", "-z"])
            .arg(dir.join(p))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{p}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(&man)
        .args(["-l", "-P", "cat"])
        .arg(dir.join("bastion-connect.1"))
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("--cluster"), "{text}");

    let (code, page, _) = bastion(&["man", "forget"], &state);
    assert_eq!(code, 0);
    assert!(page.contains("bastion\\-forget"), "{page}");
    let (code, _, err) = bastion(&["man", "nope"], &state);
    assert_ne!(code, 0);
    assert!(err.contains("no command named 'nope'"), "{err}");
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, _) = bastion(&["--version"], tmp.path());
    assert_eq!(code, 0);
    let out = out.trim();
    let version = env!("CARGO_PKG_VERSION");
    assert!(out.starts_with(&format!("bastion {version} (")), "{out}");
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success());
    if let Some(g) = git {
        let commit = String::from_utf8_lossy(&g.stdout).trim().to_string();
        assert!(out.contains(&format!("({commit} ")), "{out} names {commit}");
    }
    let date = out.rsplit(' ').next().unwrap().trim_end_matches(')');
    assert!(
        date.len() == 10 && date.chars().filter(|c| *c == '-').count() == 2,
        "{out}"
    );
}

#[test]
fn help_lists_the_commands_own_options_first_and_the_global_ones_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, help, _) = bastion(&["connect", "--help"], tmp.path());
    assert_eq!(code, 0);
    let global = help.find("Global options:").expect("a heading of its own");
    let cluster = help.find("--cluster").unwrap();
    let profile = help.find("--profile").unwrap();
    assert!(cluster < global && global < profile, "{help}");
}
