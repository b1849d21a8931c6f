//! A failure at any step of `up`, of its rollback or of `down`: nothing left behind, or what was
//! left named, kept in the ledger, and finished by a later `down`.

use super::*;

/// What a successful `up` records in its ledger, in order (the pcluster policy on: three inline
/// policies). A failure at a step has created the entries before it.
const LEDGER: [&str; 12] = [
    "local_key",
    "key_pair",
    "security_group",
    "ingress_rule",
    "role",
    "inline_policy",
    "inline_policy",
    "inline_policy",
    "attached_policy",
    "instance_profile",
    "role_in_profile",
    "instance",
];

/// The kind of one `removed ...` line (the ledger's wording, or the sweep's).
fn removed_kind(line: &str) -> &'static str {
    let what = line.trim_start().trim_start_matches("removed ");
    for (prefix, kind) in [
        ("local key ", "local_key"),
        ("key pair ", "key_pair"),
        ("security group ", "security_group"),
        ("ingress rule ", "ingress_rule"),
        ("IAM role ", "role"),
        ("inline policy ", "inline_policy"),
        ("policy ", "attached_policy"),
        ("instance profile ", "instance_profile"),
        ("role ", "role_in_profile"),
        ("instance ", "instance"),
    ] {
        if what.starts_with(prefix) {
            return kind;
        }
    }
    panic!("unknown removed line: {line}")
}

/// The kinds a failed `up` says it removed, sorted.
fn removed_kinds(stderr: &str) -> Vec<&'static str> {
    let mut kinds: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("  removed "))
        .map(removed_kind)
        .collect();
    kinds.sort();
    kinds
}

fn sorted(kinds: &[&'static str]) -> Vec<&'static str> {
    let mut v = kinds.to_vec();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_at_any_creation_step_leaves_nothing_behind() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let head_rules_before = aws.ingress(&lab.head_sg).await;
    // (failpoint, ledger entries made before it fires, what its `:after` leaves unrecorded for
    // the sweep by run tag to find, exit code). Local steps fail as a state dir that cannot be
    // written does: exit 4.
    let steps: &[(&str, usize, Option<&str>, i32)] = &[
        // The first save of the ledger, before anything exists: no rollback at all.
        ("ledger_save#1", 0, None, 4),
        // The key's record: the key is not made.
        ("ledger_save#2", 0, None, 4),
        // The key files written, the call failing after.
        ("generate_key", 1, None, 4),
        ("import_key_pair", 1, Some("key_pair"), 1),
        ("ledger_save#3", 2, None, 4),
        ("create_security_group", 2, Some("security_group"), 1),
        ("set_egress", 3, None, 1),
        ("authorize_ingress", 3, None, 1),
        // The second: the rule on the head node's group (a group bastion does not own).
        ("authorize_ingress#2", 3, Some("ingress_rule"), 1),
        ("ledger_save#5", 4, None, 4),
        ("create_role", 4, Some("role"), 1),
        ("put_role_policy", 5, None, 1),
        ("put_role_policy#2", 6, None, 1),
        ("put_role_policy#3", 7, None, 1),
        ("attach_role_policy", 8, None, 1),
        ("create_instance_profile", 9, Some("instance_profile"), 1),
        ("add_role_to_instance_profile", 10, None, 1),
        ("run_instance", 11, Some("instance"), 1),
        // The instance launched, its record lost.
        ("ledger_save#13", 12, None, 4),
    ];
    for &(step, made, lost, code) in steps {
        for mode in ["", ":after"] {
            let failpoint = format!("{step}{mode}");
            let tmp = tempfile::tempdir().unwrap();
            let mut b = Bastion::new(&moto, tmp.path());
            b.env.push(("BASTION_FAILPOINT".into(), failpoint.clone()));
            let up = b.up_no_wait();
            assert_eq!(up.status, code, "{failpoint}: {up:?}");
            assert!(
                up.stderr.contains("injected failure"),
                "{failpoint}: the original error is shown: {up:?}"
            );
            // A local write that fails before its work made nothing (`generate_key`); after it,
            // the files exist and are the run's to remove.
            let mut expected: Vec<&str> = LEDGER[..made].to_vec();
            if step == "generate_key" && mode.is_empty() {
                expected.clear();
            }
            if mode == ":after"
                && let Some(lost) = lost
            {
                expected.push(lost);
            }
            if step == "ledger_save#1" {
                assert!(!up.stderr.contains("cleaned up"), "{failpoint}: {up:?}");
            } else if expected.is_empty() {
                assert!(
                    up.stderr.contains("nothing had been created"),
                    "{failpoint}: {up:?}"
                );
            } else {
                assert!(up.stderr.contains("cleaned up"), "{failpoint}: {up:?}");
            }
            // Exactly what this run created is said to be removed: each once, nothing more.
            assert_eq!(
                removed_kinds(&up.stderr),
                sorted(&expected),
                "{failpoint}: {up:?}"
            );
            assert!(!up.stderr.contains("NOT removed"), "{failpoint}: {up:?}");
            assert_eq!(
                aws.leftovers(CLUSTER).await,
                Vec::<String>::new(),
                "{failpoint}: {up:?}"
            );
            assert_eq!(
                aws.ingress(&lab.head_sg).await,
                head_rules_before,
                "{failpoint}"
            );
            let files = walk(&b.state_dir);
            let left: Vec<_> = files
                .iter()
                .filter(|p| p.contains("id_ed25519") || p.contains("ledger.json"))
                .collect();
            assert!(left.is_empty(), "{failpoint}: local files left: {left:?}");
        }
    }
}

/// Teardown's own calls, failing in `up`'s rollback and then in `down`: what could not be
/// removed is named (and kept in the ledger), the exit code is 1, and a later `down` finishes.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_that_cannot_finish_names_what_it_left_and_down_finishes_it() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let head_rules_before = aws.ingress(&lab.head_sg).await;
    // (teardown call, the ledger kind it leaves, the creation failure that starts the
    // rollback: `:after` leaves an unrecorded resource for the run's sweep).
    let cases = [
        ("terminate_instance", "instance", "run_instance:after"),
        // The role fails; the profile (its creation's answer lost, so the sweep's to find)
        // still goes, and is not hidden behind the role of the same name.
        ("delete_role", "role", "create_instance_profile:after"),
        ("revoke_ingress", "ingress_rule", "run_instance"),
        ("delete_security_group", "security_group", "run_instance"),
        ("delete_key_pair", "key_pair", "run_instance"),
        (
            "remove_role_from_instance_profile",
            "role_in_profile",
            "run_instance",
        ),
        (
            "delete_instance_profile",
            "instance_profile",
            "run_instance",
        ),
        ("detach_role_policy", "attached_policy", "run_instance"),
        ("delete_role_policy", "inline_policy", "run_instance"),
        ("delete_role", "role", "run_instance"),
    ];
    for (call, kind, launch) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let mut b = Bastion::new(&moto, tmp.path());
        b.env
            .push(("BASTION_FAILPOINT".into(), format!("{launch},{call}")));
        let up = b.up_no_wait();
        assert_eq!(up.status, 1, "{call}: {up:?}");
        let creation = launch.split(':').next().unwrap();
        assert!(
            up.stderr
                .contains(&format!("error: {creation}: injected failure")),
            "{call}: the original error first: {up:?}"
        );
        let not_removed: Vec<_> = up
            .stderr
            .lines()
            .filter(|l| l.starts_with("  NOT removed "))
            .collect();
        // The failed call is named; what depends on it (a role still in its profile) says its
        // own reason; each resource once, however many times it was tried.
        assert!(
            not_removed
                .iter()
                .any(|l| l.contains(&format!("{call}: injected failure"))),
            "{call}: {up:?}"
        );
        let mut named: Vec<&str> = not_removed
            .iter()
            .map(|l| {
                l.split(": ")
                    .next()
                    .unwrap()
                    .trim_start_matches("  NOT removed ")
            })
            .map(|w| w.split(" (").next().unwrap())
            .collect();
        let count = named.len();
        named.sort();
        named.dedup();
        assert_eq!(named.len(), count, "{call}: named twice: {up:?}");
        // Only what the failed call holds up stays: with the profile made, it still goes.
        if launch.starts_with("create_instance_profile") {
            assert!(
                up.stderr.contains("  removed instance profile "),
                "{call}: {up:?}"
            );
        }
        assert!(
            up.stderr.contains(&format!(
                "run `bastion down --cluster {CLUSTER}` to retry the rest"
            )),
            "{call}: {up:?}"
        );
        assert!(!aws.leftovers(CLUSTER).await.is_empty(), "{call}");
        // The ledger keeps what is left (a recorded resource), so `down` knows it.
        if !launch.ends_with(":after") || kind != "instance" {
            let kinds = ledger_kinds(&b);
            assert!(kinds.iter().any(|k| k == kind), "{call}: ledger {kinds:?}");
        }

        // `down` meets the same failure: it says so and keeps the ledger.
        let down = b.run(&["down", "--cluster", CLUSTER]);
        assert_eq!(down.status, 1, "{call}: {down:?}");
        assert!(
            down.stdout.contains("NOT removed") && down.stderr.contains("could not be removed"),
            "{call}: {down:?}"
        );
        assert!(!aws.leftovers(CLUSTER).await.is_empty(), "{call}");

        // Without it, `down` finishes the job.
        b.env.clear();
        let down = b.run(&["down", "--cluster", CLUSTER]);
        assert_eq!(down.status, 0, "{call}: {down:?}");
        assert!(!down.stdout.contains("NOT removed"), "{call}: {down:?}");
        assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new(), "{call}");
        assert_eq!(aws.ingress(&lab.head_sg).await, head_rules_before, "{call}");
        assert!(!ledger_path(&b).exists(), "{call}");
        let keys: Vec<_> = walk(&b.state_dir)
            .into_iter()
            .filter(|p| p.contains("id_ed25519"))
            .collect();
        assert!(keys.is_empty(), "{call}: {keys:?}");
    }
}

/// `--keep-on-failure` keeps every resource and its ledger (marked finished, so the next `up`
/// never takes it for a dead run); `down` removes them.
#[tokio::test(flavor = "multi_thread")]
async fn keep_on_failure_keeps_everything_for_down() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let head_rules_before = aws.ingress(&lab.head_sg).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bastion::new(&moto, tmp.path());
    b.env
        .push(("BASTION_FAILPOINT".into(), "run_instance:after".into()));
    let up = b.up_no_wait_with(&["--keep-on-failure"]);
    assert_eq!(up.status, 1, "{up:?}");
    assert!(
        up.stderr.contains(&format!(
            "kept what was created (--keep-on-failure); remove it with `bastion down --cluster {CLUSTER}`"
        )),
        "{up:?}"
    );
    assert!(!up.stderr.contains("removed"), "{up:?}");
    let mut left: Vec<String> = aws
        .leftovers(CLUSTER)
        .await
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    left.sort();
    left.dedup();
    for kind in ["instance", "security", "rule", "key", "role", "volume"] {
        assert!(left.iter().any(|l| l == kind), "{kind} kept: {left:?}");
    }
    assert_ne!(aws.ingress(&lab.head_sg).await, head_rules_before);
    let ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ledger_path(&b)).unwrap()).unwrap();
    assert_eq!(ledger["complete"], true, "{ledger}");
    // Everything up to the launch, whose response was lost (the sweep by tag finds it).
    assert_eq!(ledger_kinds(&b), LEDGER[..11].to_vec());

    b.env.clear();
    let down = b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(down.status, 0, "{down:?}");
    assert!(down.stdout.contains("removed instance i-"), "{down:?}");
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
    assert_eq!(aws.ingress(&lab.head_sg).await, head_rules_before);
    assert!(!ledger_path(&b).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_up_removes_what_it_created() {
    let (_moto, aws, _, tmp, mut b) = moto_test!();
    b.env
        .push(("BASTION_FAILPOINT".into(), "run_instance:pause".into()));
    let paused = tmp.path().join("paused");
    b.env.push((
        "BASTION_FAILPOINT_PAUSED".into(),
        paused.display().to_string(),
    ));
    let child = b.watch(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        ALLOW,
        "--no-wait",
    ]);
    // Wait until up is held before RunInstances (it says so): everything else exists by then.
    let deadline = std::time::Instant::now() + LIMIT;
    while !paused.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "up never reached RunInstances"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!aws.leftovers(CLUSTER).await.is_empty());
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.finish(LIMIT);
    let stderr = out.stderr.clone();
    assert_eq!(out.status, 130, "{stderr}");
    assert!(
        stderr.contains("interrupted") && stderr.contains("removed"),
        "{stderr}"
    );
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
}
