//! `down` without a ledger, or beside others' resources: what carries bastion's tag and names
//! goes, everything else stays.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn down_without_a_ledger_finds_resources_by_tag_and_spares_the_untagged() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    // Look-alikes without bastion's tag: never touched.
    let decoy_sg = aws
        .ec2
        .create_security_group()
        .group_name("bastion-demo-decoy")
        .description("not bastion's")
        .vpc_id(&lab.vpc)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    aws.ec2
        .import_key_pair()
        .key_name("bastion-demo-decoy")
        .public_key_material(aws_sdk_ec2::primitives::Blob::new(format!(
            "{PROXY_KEY} decoy"
        )))
        .send()
        .await
        .unwrap();
    aws.iam
        .create_role()
        .role_name("bastion-demo-decoy")
        .path("/bastion/")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let b = Bastion::new(&moto, tmp.path());
    let up = b.up_no_wait();
    assert_eq!(up.status, 0, "{up:?}");
    // Another machine: no ledger, no key.
    let other = tempfile::tempdir().unwrap();
    let b2 = Bastion::new(&moto, other.path());
    let down = b2.run(&["down", "--cluster", CLUSTER, "--output", "json"]);
    assert_eq!(down.status, 0, "{down:?}");
    let left = aws.leftovers(CLUSTER).await;
    assert_eq!(
        left,
        vec!["role bastion-demo-decoy".to_string()],
        "only the untagged decoy role stays"
    );
    let sg = aws
        .ec2
        .describe_security_groups()
        .group_ids(&decoy_sg)
        .send()
        .await;
    assert!(sg.is_ok(), "the untagged group was not touched");
    let k = aws
        .ec2
        .describe_key_pairs()
        .key_names("bastion-demo-decoy")
        .send()
        .await
        .unwrap();
    assert_eq!(
        k.key_pairs().len(),
        1,
        "the untagged key pair was not touched"
    );
}

/// `down` of one cluster leaves another cluster's bastion, and the same cluster's bastion in
/// another region, intact; the head node and its group are as they were before `up`.
#[tokio::test(flavor = "multi_thread")]
async fn down_spares_other_clusters_and_other_regions() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    aws.build_lab(LabOptions {
        cluster: "other",
        cidr: "10.21",
        ..LabOptions::default()
    })
    .await;
    let west = moto.clients_in("us-west-2").await;
    west.build_lab(LabOptions::default()).await;
    let head_rules_before = aws.ingress(&lab.head_sg).await;
    let tmp = tempfile::tempdir().unwrap();
    let b = Bastion::new(&moto, tmp.path());
    let up = |cluster: &str, region: &str| {
        let r = b.run(&[
            "up",
            "--cluster",
            cluster,
            "--region",
            region,
            "--allow-cidr",
            ALLOW,
            "--no-wait",
        ]);
        assert_eq!(r.status, 0, "{cluster} in {region}: {r:?}");
    };
    up(CLUSTER, REGION);
    up("other", REGION);
    up(CLUSTER, "us-west-2");
    let other_before = aws.bastion_instances("other").await.len();
    let west_before = west.bastion_instances(CLUSTER).await.len();
    assert_eq!((other_before, west_before), (1, 1));

    let r = b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(r.status, 0, "{r:?}");
    // What is left under /bastion/ (IAM is global) is the other two bastions' only.
    let left: Vec<String> = aws
        .leftovers(CLUSTER)
        .await
        .into_iter()
        .filter(|l| {
            !l.ends_with("bastion-other-us-east-1") && !l.ends_with("bastion-demo-us-west-2")
        })
        .collect();
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(aws.ingress(&lab.head_sg).await, head_rules_before);
    let live = |v: Vec<aws_sdk_ec2::types::Instance>| {
        v.iter()
            .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some("running"))
            .count()
    };
    assert_eq!(
        live(aws.bastion_instances("other").await),
        1,
        "the other cluster's bastion"
    );
    assert_eq!(
        live(west.bastion_instances(CLUSTER).await),
        1,
        "the same cluster's bastion in us-west-2"
    );
    // IAM is global: the other region's role and profile (named per region) are still there.
    let roles = aws
        .iam
        .list_roles()
        .path_prefix("/bastion/")
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = roles.roles().iter().map(|r| r.role_name()).collect();
    assert!(
        names.contains(&"bastion-demo-us-west-2") && names.contains(&"bastion-other-us-east-1"),
        "{names:?}"
    );
    assert!(!names.contains(&"bastion-demo-us-east-1"), "{names:?}");
    for (cluster, region) in [("other", REGION), (CLUSTER, "us-west-2")] {
        let r = b.run(&["down", "--cluster", cluster, "--region", region]);
        assert_eq!(r.status, 0, "{r:?}");
    }
    assert_eq!(aws.leftovers("other").await, Vec::<String>::new());
    assert_eq!(west.leftovers(CLUSTER).await, Vec::<String>::new());
}

/// The ledger is a file, so untrusted: one that names another path as the proxy key gets that
/// path left alone by `down` (bastion deletes only what it made in its state dir), said on
/// stderr, and the rest is removed.
#[tokio::test(flavor = "multi_thread")]
async fn down_deletes_no_file_the_ledger_names_outside_what_bastion_made() {
    let (_moto, aws, _, tmp, b) = moto_test!();
    assert_eq!(b.up_no_wait().status, 0);
    let victim = tmp.path().join("precious");
    std::fs::write(&victim, "mine").unwrap();
    std::fs::write(victim.with_extension("pub"), "mine too").unwrap();
    let ledger = b
        .state_dir
        .join(format!("123456789012/{REGION}/{CLUSTER}/ledger.json"));
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ledger).unwrap()).unwrap();
    let text = doc.to_string();
    let own = b
        .state_dir
        .join(format!("123456789012/{REGION}/{CLUSTER}/id_ed25519"));
    assert!(text.contains(own.to_str().unwrap()), "{text}");
    doc = serde_json::from_str(&text.replace(own.to_str().unwrap(), victim.to_str().unwrap()))
        .unwrap();
    std::fs::write(&ledger, doc.to_string()).unwrap();

    let r = b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("not deleting {}", victim.display())),
        "{r:?}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine");
    assert!(victim.with_extension("pub").exists());
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
}
