//! The head node's host key, pinned on first use, against real OpenSSH sshd in network
//! namespaces: a key of another algorithm is refused like a changed one, OpenSSH's hashed
//! known_hosts lines are honoured, and `bastion forget` is the one way to re-pin.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use std::process::Command;

use common::netlab;
use common::*;

fn fingerprint(public_key_file: &std::path::Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// A key pair that is not the proxy's, made in `dir` under `name`: its private key file and its
/// public key as `type base64` (the comment dropped, as a tag or a console line holds it).
fn foreign_key(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let (file, public) = netlab::NetLab::key_pair(dir, name);
    let public = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    (file, public)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_head_node_stays_pinned_across_algorithms_and_hashing() {
    let mut w = world_or_skip!();
    let known_hosts = w.b.state_dir.join("known_hosts");
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 0, "{r:?}");
    // moto's console output lists no host keys: trust on first use, said as such, with why and
    // what to compare (not the console-checked path's line, which also starts "pinned").
    assert!(
        r.stderr.contains("pinned the head node's host key")
            && r.stderr
                .contains("on first use, unverified: its console output")
            && r.stderr.contains("Compare it with the head node's own"),
        "{r:?}"
    );
    let ed25519 = fingerprint(&w.lab.path("head_host_ed25519.pub"));
    assert!(r.stderr.contains(&ed25519), "{r:?}");

    // OpenSSH's HashKnownHosts form (Debian's and Ubuntu's default) is matched, not skipped.
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&known_hosts)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let hashed = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(hashed.lines().all(|l| l.starts_with("|1|")), "{hashed}");
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(!r.stderr.contains("pinned"), "no second pin: {r:?}");
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), hashed);

    // The head node comes back with only an ECDSA host key: refused like a changed key.
    let ecdsa = w.lab.path("head_host_ecdsa");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
        .arg(&ecdsa)
        .output()
        .unwrap();
    assert!(out.status.success());
    w.lab
        .add_sshd_config("head", &format!("HostKey {}", ecdsa.display()));
    w.lab.start_sshd("head");
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr.contains("host key changed")
            && r.stderr.contains(&ed25519)
            && r.stderr
                .contains(&format!("bastion forget --cluster {CLUSTER}")),
        "{r:?}"
    );
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), hashed);

    // Re-pinning on purpose: forget prints what it removes, and the next connect pins anew.
    let f = w.b.run(&["forget", "--cluster", CLUSTER]);
    assert_eq!(f.status, 0, "{f:?}");
    assert!(f.stdout.contains(&ed25519), "{f:?}");
    let again = w.b.run(&["forget", "--cluster", CLUSTER]);
    assert!(again.stdout.contains("no host key was pinned"), "{again:?}");
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 0, "{r:?}");
    let ecdsa_fp = fingerprint(&ecdsa.with_extension("pub"));
    assert!(r.stderr.contains(&ecdsa_fp), "{r:?}");
}

/// Puts the world's bastion behind the wire-level front, which answers GetConsoleOutput for
/// `instance` with the text in the returned cell (base64 on the wire, as AWS words it); the
/// front serves as long as it is kept.
async fn serve_console(
    w: &mut common::world::World,
    instance: &str,
    text: String,
) -> (
    common::front::Front,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    let front = common::front::Front::start(&w.moto.url).await;
    w.b.endpoint = front.url.clone();
    let console = std::sync::Arc::new(std::sync::Mutex::new(text));
    let (instance, cell) = (instance.to_string(), console.clone());
    front.rule(move |c| {
        (c.action == "GetConsoleOutput" && c.param("InstanceId") == Some(instance.as_str()))
            .then(|| common::front::Reply::console_output(&instance, &cell.lock().unwrap()))
    });
    (front, console)
}

/// First use, anchored where AWS allows: the head node's console output (served by the
/// wire-level front, as AWS words GetConsoleOutput) lists its host keys, and a key that is not
/// among them is refused; one that is gets pinned, and `ssh-config` pins them all for OpenSSH.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_use_key_absent_from_the_console_output_is_refused() {
    let mut w = world_or_skip!();
    let known_hosts = w.b.state_dir.join("known_hosts");
    let (_, other) = netlab::NetLab::key_pair(w.lab.dir.path(), "not-the-head");
    let block = |key: &str| {
        format!(
            "[  OK  ] Started cloud-final.service.\r\n-----BEGIN SSH HOST KEY KEYS-----\r\n{key}\r\n\
             -----END SSH HOST KEY KEYS-----\r\n[   42.0] cloud-init[1020]: done\r\n"
        )
    };
    let head = w.head_id.clone();
    let (front, console) = serve_console(&mut w, &head, block(&other)).await;

    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("not one of the host keys it printed to its console"),
        "{r:?}"
    );
    assert!(
        !std::fs::read_to_string(&known_hosts)
            .unwrap_or_default()
            .contains(&w.head_id),
        "nothing pinned"
    );

    *console.lock().unwrap() = block(&format!("{} root@head", w.lab.host_key("head")));
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stderr.contains("printed to its console at first boot"),
        "{r:?}"
    );
    assert!(
        front.injected() >= 2,
        "the front answered the console reads"
    );

    // ssh-config on a machine that never connected: the console's keys pinned for OpenSSH,
    // which then checks the head node strictly.
    assert_eq!(w.b.run(&["forget", "--cluster", CLUSTER]).status, 0);
    let mut args = vec!["ssh-config"];
    args.extend(w.route_args(&w.lab.proxy_ip));
    let r = w.b.run(&args);
    assert_eq!(r.status, 0, "{r:?}");
    let pinned = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(
        pinned.contains(&format!("{} {}", w.head_id, w.lab.host_key("head"))),
        "{pinned}"
    );
    let head_block = r
        .stdout
        .split(&format!("Host {CLUSTER}-head"))
        .nth(1)
        .unwrap();
    assert!(
        head_block.contains("StrictHostKeyChecking yes"),
        "{}",
        r.stdout
    );
}

/// The proxy's host key is anchored by AWS, not by its tag: the keys it printed to its console
/// (served by the front, as AWS words GetConsoleOutput) decide a first use, and a tag that
/// disagrees with them is refused, both fingerprints named; the key is then pinned under the
/// proxy's instance id, and a decoy at its address with the tag rewritten to the decoy's key is
/// refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_proxys_key_is_anchored_by_its_console_and_pinned_not_taken_from_its_tag() {
    let mut w = world_or_skip!();
    let known_hosts = w.b.state_dir.join("known_hosts");
    let (other_file, other) = foreign_key(w.lab.dir.path(), "not-the-proxy");
    let real = w.lab.host_key("proxy");
    let real_fp = fingerprint(&w.lab.path("proxy_host_ed25519.pub"));
    let other_fp = fingerprint(&other_file.with_extension("pub"));
    let block = |key: &str| {
        format!(
            "[  OK  ] Started sshd.service.\r\n-----BEGIN SSH HOST KEY KEYS-----\r\n{key} root@proxy\r\n\
             -----END SSH HOST KEY KEYS-----\r\n"
        )
    };
    let proxy = w.proxy_id.clone();
    let (_front, console) = serve_console(&mut w, &proxy, block(&other)).await;
    let pinned = || {
        std::fs::read_to_string(&known_hosts)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&w.proxy_id))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    // The console says one key, the tag (the real one) another: refused before dialling.
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr.contains("bastion:host-key tag names")
            && r.stderr.contains(&real_fp)
            && r.stderr.contains(&other_fp)
            && r.stderr.contains("printed to its console"),
        "both named: {r:?}"
    );
    // The tag rewritten to agree with a console that lists someone else's key: the proxy
    // presents its own, which is not the console's, and is refused.
    w.aws
        .set_instance_tags(&w.proxy_id, &[("bastion:host-key", &other)])
        .await;
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr.contains(&real_fp) && r.stderr.contains(&other_fp),
        "{r:?}"
    );
    assert!(pinned().is_empty(), "nothing pinned: {:?}", pinned());

    // Console and tag agree with the proxy: pinned under its instance id.
    *console.lock().unwrap() = block(&real);
    w.aws
        .set_instance_tags(&w.proxy_id, &[("bastion:host-key", &real)])
        .await;
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(pinned(), vec![format!("{} {real}", w.proxy_id)]);

    // A decoy sshd at the proxy's address, with the tag rewritten to the decoy's key: the pin
    // decides, and both keys are named.
    w.lab.new_host_key("proxy");
    let decoy = w.lab.host_key("proxy");
    let decoy_fp = fingerprint(&w.lab.path("proxy_host_ed25519.pub"));
    w.aws
        .set_instance_tags(&w.proxy_id, &[("bastion:host-key", &decoy)])
        .await;
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr.contains(&decoy_fp) && r.stderr.contains(&real_fp),
        "{r:?}"
    );
    assert_eq!(
        pinned(),
        vec![format!("{} {real}", w.proxy_id)],
        "the pin stays"
    );
}

/// A proxy key pinned from the tag (its console showing no keys yet) is checked against the
/// console once the console shows keys: a console without the pinned key is refused, one with
/// it anchors the pin for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_key_pinned_from_its_tag_is_checked_once_its_console_shows_keys() {
    let mut w = world_or_skip!();
    let real = w.lab.host_key("proxy");
    let (other_file, other) = foreign_key(w.lab.dir.path(), "not-the-proxy-2");
    let proxy = w.proxy_id.clone();
    let (_front, console) = serve_console(
        &mut w,
        &proxy,
        "[  OK  ] booting, no keys yet\r\n".to_string(),
    )
    .await;
    let block = |key: &str| {
        format!("-----BEGIN SSH HOST KEY KEYS-----\r\n{key}\r\n-----END SSH HOST KEY KEYS-----\r\n")
    };

    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stderr.contains("console output shows no host keys yet"),
        "{r:?}"
    );

    *console.lock().unwrap() = block(&other);
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.stderr.contains("came from its bastion:host-key tag")
            && r.stderr
                .contains(&fingerprint(&other_file.with_extension("pub"))),
        "{r:?}"
    );

    *console.lock().unwrap() = block(&real);
    assert_eq!(w.connect(&["--", "true"]).status, 0);
    // Anchored now: a console that later shows something else no longer matters.
    *console.lock().unwrap() = block(&other);
    let r = w.connect(&["--", "true"]);
    assert_eq!(r.status, 0, "{r:?}");
}
