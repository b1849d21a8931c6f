//! `up --via eice` and `down` with the VPC's EC2 Instance Connect Endpoint: what AWS holds after
//! each. moto has no endpoint API, so the front plays it as AWS answers it (create in progress,
//! then complete; one per VPC; a deleted one listed as `delete-complete`; a group an endpoint
//! uses refused to `DeleteSecurityGroup`).

use super::*;
use common::endpoint::{Api, Described, Endpoints, serve_api};
use common::front::Front;

/// A moto VPC built like a cluster's, a front before it that plays the endpoint API, and
/// bastion pointed at the front.
struct World {
    _moto: Moto,
    aws: Clients,
    lab: Lab,
    _tmp: tempfile::TempDir,
    b: Bastion,
    _front: Front,
    endpoints: Endpoints,
    api: Api,
}

async fn world() -> Option<World> {
    let moto = Moto::start()?;
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bastion::new(&moto, tmp.path());
    let front = Front::start(&moto.url).await;
    b.endpoint = front.url.clone();
    let endpoints: Endpoints = Default::default();
    let api = serve_api(&front, endpoints.clone());
    {
        let mut played = api.lock().unwrap();
        // Two describes in progress each way: bastion waits, with progress, as on AWS.
        played.settle = 2;
        for subnet in [&lab.private_subnet, &lab.public_subnet] {
            played.subnets.insert(subnet.clone(), lab.vpc.clone());
        }
    }
    Some(World {
        _moto: moto,
        aws,
        lab,
        _tmp: tmp,
        b,
        _front: front,
        endpoints,
        api,
    })
}

macro_rules! world_or_skip {
    () => {
        match world().await {
            Some(w) => w,
            None => return,
        }
    };
}

impl World {
    fn up(&self, cluster: &str, extra: &[&str]) -> Run {
        let mut args = vec![
            "up",
            "--cluster",
            cluster,
            "--via",
            "eice",
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        self.b.run(&args)
    }

    /// The endpoints the front lists that are not deleted.
    fn live(&self) -> Vec<Described> {
        self.endpoints
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.state != "delete-complete")
            .cloned()
            .collect()
    }

    /// A group's egress, as (port, target group or CIDR); None when the group is gone.
    async fn egress(&self, group: &str) -> Option<Vec<(i32, String)>> {
        self.aws.egress(group).await
    }

    /// The VPC's groups by name.
    async fn group_names(&self) -> Vec<String> {
        let out = self
            .aws
            .ec2
            .describe_security_groups()
            .filters(filter("vpc-id", &self.lab.vpc))
            .send()
            .await
            .unwrap();
        let mut names: Vec<String> = out
            .security_groups()
            .iter()
            .filter_map(|g| g.group_name().map(str::to_string))
            .collect();
        names.sort();
        names
    }
}

/// `up --via eice` makes the endpoint in the head node's subnet, a group of its own that lets
/// out tcp 22 to the head node's group and nothing else, and one rule on the head node's group
/// admitting it; no instance, key pair, role or profile. It waits for `create-complete` and
/// says how long it took. `down` removes all of it, in the order AWS needs (the endpoint gone
/// before its group), and the head node's group is as it was.
#[tokio::test(flavor = "multi_thread")]
async fn up_via_eice_makes_the_endpoint_its_group_and_one_rule_and_down_leaves_nothing() {
    let w = world_or_skip!();
    let head_before = w.aws.ingress(&w.lab.head_sg).await;
    let groups_before = w.group_names().await;

    let up = w.up(CLUSTER, &[]);
    assert_eq!(up.status, 0, "{up:?}");
    let r = up.json();
    assert_eq!(r["via"], "eice", "{r}");
    assert_eq!(r["created"], true, "{r}");
    assert_eq!(r["state"], "create-complete", "{r}");
    assert!(r["ready_after_seconds"].is_u64(), "{r}");
    assert_eq!(r["subnet_id"], w.lab.private_subnet.as_str(), "{r}");

    let live = w.live();
    assert_eq!(live.len(), 1, "{live:?}");
    let e = &live[0];
    assert_eq!(e.id, r["endpoint_id"], "{r}");
    assert_eq!(e.state, "create-complete");
    assert_eq!(e.subnet, w.lab.private_subnet);
    assert_eq!(e.groups.len(), 1);
    assert!(
        e.tags
            .iter()
            .any(|(k, v)| k == "bastion:cluster" && v == CLUSTER),
        "{:?}",
        e.tags
    );
    let group = e.groups[0].clone();
    // Out: tcp 22 to the head node's group, nothing else.
    assert_eq!(
        w.egress(&group).await,
        Some(vec![(22, w.lab.head_sg.clone())])
    );
    // In, on the head node's group: what was there, and tcp 22 from the endpoint's group.
    let mut head_after = head_before.clone();
    head_after.push((22, group.clone()));
    head_after.sort();
    assert_eq!(w.aws.ingress(&w.lab.head_sg).await, head_after);
    let mut groups_after = groups_before.clone();
    groups_after.push(format!("bastion-eice-{}", w.lab.vpc));
    groups_after.sort();
    assert_eq!(w.group_names().await, groups_after);
    // Nothing of a proxy: the group and the two rules are all that carries the cluster's tag.
    let left = w.aws.leftovers(CLUSTER).await;
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(
        left.iter()
            .all(|l| l.starts_with("security group ") || l.starts_with("rule ")),
        "{left:?}"
    );

    // `status` lists it, made by bastion.
    let status = w.b.run(&["status", "--output", "json"]);
    assert_eq!(status.status, 0, "{status:?}");
    let rows = status.json()["endpoints"].clone();
    assert_eq!(rows[0]["endpoint_id"], e.id.as_str(), "{rows}");
    assert_eq!(rows[0]["created_by_bastion"], true, "{rows}");
    let table = w.b.run(&["status"]);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with(&e.id) && l.ends_with("bastion")),
        "{table:?}"
    );

    // Again: the endpoint set up before is said as it stands; nothing new.
    let again = w.up(CLUSTER, &[]);
    assert_eq!(again.status, 0, "{again:?}");
    assert_eq!(again.json()["created"], false);
    assert_eq!(w.api.lock().unwrap().log.len(), 1);

    let down = w.b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(down.status, 0, "{down:?}");
    assert!(
        down.stdout
            .contains(&format!("removed EC2 Instance Connect Endpoint {}", e.id)),
        "{down:?}"
    );
    assert!(w.live().is_empty(), "{:?}", w.live());
    assert_eq!(w.egress(&group).await, None, "the endpoint's group is gone");
    assert_eq!(w.aws.ingress(&w.lab.head_sg).await, head_before);
    assert_eq!(w.group_names().await, groups_before);
    assert_eq!(w.aws.leftovers(CLUSTER).await, Vec::<String>::new());
    assert_eq!(
        w.api.lock().unwrap().log,
        [format!("create {}", e.id), format!("delete {}", e.id)]
    );
    assert!(
        walk(&w.b.state_dir).is_empty(),
        "{:?}",
        walk(&w.b.state_dir)
    );
}

/// Two clusters in one VPC: the second `up --via eice` uses the endpoint the first made (one
/// per VPC), adding its own egress rule and its own rule on its head node's group. The first
/// `down` removes the first cluster's rules and keeps the endpoint, saying why; the second
/// `down` removes the endpoint and its group.
#[tokio::test(flavor = "multi_thread")]
async fn the_second_cluster_of_a_vpc_shares_the_endpoint_and_the_first_down_leaves_it() {
    let w = world_or_skip!();
    let other = "other";
    let ip = "10.20.2.11";
    let (other_sg, _) = w
        .aws
        .add_head_node(
            &w.lab.vpc,
            &w.lab.private_subnet,
            other,
            ip,
            "203.0.113.0/24",
            "x86_64",
        )
        .await;
    let (demo_before, other_before) = (
        w.aws.ingress(&w.lab.head_sg).await,
        w.aws.ingress(&other_sg).await,
    );

    let first = w.up(CLUSTER, &[]);
    assert_eq!(first.status, 0, "{first:?}");
    let second = w.up(other, &[]);
    assert_eq!(second.status, 0, "{second:?}");
    let (a, b) = (first.json(), second.json());
    assert_eq!(a["endpoint_id"], b["endpoint_id"]);
    assert_eq!(
        (a["created"].clone(), b["created"].clone()),
        (true.into(), false.into())
    );
    assert_eq!(b["bastions"], true, "{b}");
    assert_eq!(w.live().len(), 1);
    let group = w.live()[0].groups[0].clone();
    let mut both = vec![(22, w.lab.head_sg.clone()), (22, other_sg.clone())];
    both.sort();
    assert_eq!(w.egress(&group).await, Some(both));

    let down = w.b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(down.status, 0, "{down:?}");
    assert!(
        down.stdout.contains("kept EC2 Instance Connect Endpoint")
            && down.stdout.contains(&other_sg),
        "the first down says what it keeps, and for whom: {down:?}"
    );
    assert_eq!(
        w.live().len(),
        1,
        "the endpoint stays for the other cluster"
    );
    assert_eq!(w.egress(&group).await, Some(vec![(22, other_sg.clone())]));
    assert_eq!(w.aws.ingress(&w.lab.head_sg).await, demo_before);
    assert_eq!(
        w.aws
            .leftovers(CLUSTER)
            .await
            .iter()
            .filter(|l| l.starts_with("rule"))
            .count(),
        0
    );

    let down = w.b.run(&["down", "--cluster", other]);
    assert_eq!(down.status, 0, "{down:?}");
    assert!(w.live().is_empty(), "{:?}", w.live());
    assert_eq!(w.egress(&group).await, None);
    assert_eq!(w.aws.ingress(&other_sg).await, other_before);
    assert_eq!(w.aws.leftovers(CLUSTER).await, Vec::<String>::new());
    assert_eq!(w.aws.leftovers(other).await, Vec::<String>::new());
}

/// An endpoint someone else made is used as it is: while its group lets nothing out to the head
/// node, `up` names the rule to add and changes nothing; once it does, `up` adds only the rule
/// on the head node's group, and `down` removes that rule and names the endpoint it leaves.
#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_someone_else_made_is_used_as_it_is_and_never_removed() {
    let w = world_or_skip!();
    let theirs = w
        .aws
        .ec2
        .create_security_group()
        .group_name("team-eice")
        .description("the team's endpoint")
        .vpc_id(&w.lab.vpc)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    // Their group lets nothing out (its default allow-all removed, as a careful team does).
    w.aws
        .ec2
        .revoke_security_group_egress()
        .group_id(&theirs)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("-1")
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let id = "eice-0123456789abcdef9";
    w.endpoints.lock().unwrap().push(Described {
        id: id.into(),
        vpc: w.lab.vpc.clone(),
        subnet: w.lab.private_subnet.clone(),
        state: "create-complete".into(),
        dns_name: format!("{id}.1a2b3c4d.ec2-instance-connect-endpoint.{REGION}.amazonaws.com"),
        groups: vec![theirs.clone()],
        tags: vec![("team".into(), "hpc".into())],
    });
    let head_before = w.aws.ingress(&w.lab.head_sg).await;

    let up = w.up(CLUSTER, &[]);
    assert_eq!(up.status, 1, "{up:?}");
    assert!(
        up.stderr.contains("not made by bastion")
            && up.stderr.contains(&format!(
                "authorize-security-group-egress --group-id {theirs}"
            ))
            && up.stderr.contains(&w.lab.head_sg),
        "{up:?}"
    );
    assert_eq!(w.egress(&theirs).await, Some(vec![]));
    assert_eq!(w.aws.ingress(&w.lab.head_sg).await, head_before);
    assert_eq!(w.aws.leftovers(CLUSTER).await, Vec::<String>::new());

    // They add the rule the message named.
    w.aws
        .ec2
        .authorize_security_group_egress()
        .group_id(&theirs)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .user_id_group_pairs(
                    aws_sdk_ec2::types::UserIdGroupPair::builder()
                        .group_id(&w.lab.head_sg)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let up = w.up(CLUSTER, &[]);
    assert_eq!(up.status, 0, "{up:?}");
    let r = up.json();
    assert_eq!(
        (r["created"].clone(), r["bastions"].clone()),
        (false.into(), false.into()),
        "{r}"
    );
    let mut head_after = head_before.clone();
    head_after.push((22, theirs.clone()));
    head_after.sort();
    assert_eq!(w.aws.ingress(&w.lab.head_sg).await, head_after);
    assert!(
        w.api.lock().unwrap().log.is_empty(),
        "nothing created or deleted"
    );

    let down = w.b.run(&["down", "--cluster", CLUSTER]);
    assert_eq!(down.status, 0, "{down:?}");
    assert!(
        down.stdout
            .contains(&format!("kept EC2 Instance Connect Endpoint {id}"))
            && down.stdout.contains("not made by bastion"),
        "{down:?}"
    );
    assert_eq!(w.live().len(), 1);
    assert_eq!(w.live()[0].state, "create-complete");
    assert_eq!(
        w.egress(&theirs).await,
        Some(vec![(22, w.lab.head_sg.clone())])
    );
    assert_eq!(w.aws.ingress(&w.lab.head_sg).await, head_before);
    assert!(w.api.lock().unwrap().log.is_empty(), "nothing deleted");
}

/// A failure at each step of `up --via eice`, before the call and after it (a lost response:
/// the resource exists, the run never learns its id), leaves nothing behind; the error is shown.
#[tokio::test(flavor = "multi_thread")]
async fn a_failure_at_any_step_of_up_via_eice_leaves_nothing_behind() {
    let w = world_or_skip!();
    let head_before = w.aws.ingress(&w.lab.head_sg).await;
    let groups_before = w.group_names().await;
    for step in [
        "create_security_group",
        "set_egress",
        "create_instance_connect_endpoint",
        "authorize_egress",
        "authorize_ingress",
        // The endpoint's record in the ledger (the third save: the run, its group, then it).
        "ledger_save#3",
    ] {
        for mode in ["", ":after"] {
            let failpoint = format!("{step}{mode}");
            let tmp = tempfile::tempdir().unwrap();
            let mut b = Bastion::new(&w._moto, tmp.path());
            b.endpoint = w.b.endpoint.clone();
            b.env.push(("BASTION_FAILPOINT".into(), failpoint.clone()));
            let args = ["up", "--cluster", CLUSTER, "--via", "eice"];
            let up = b.run(&args);
            assert_ne!(up.status, 0, "{failpoint}: {up:?}");
            assert!(
                up.stderr.contains("injected failure"),
                "{failpoint}: the original error is shown: {up:?}"
            );
            assert!(w.live().is_empty(), "{failpoint}: {:?}", w.live());
            assert_eq!(
                w.aws.ingress(&w.lab.head_sg).await,
                head_before,
                "{failpoint}"
            );
            assert_eq!(w.group_names().await, groups_before, "{failpoint}");
            assert_eq!(
                w.aws.leftovers(CLUSTER).await,
                Vec::<String>::new(),
                "{failpoint}: {up:?}"
            );
            // A local write that failed (the ledger) leaves what it could not remove in its
            // ledger, for `down`; a failure in AWS leaves no ledger at all.
            let ledgers: Vec<String> = walk(&b.state_dir)
                .into_iter()
                .filter(|f| f.ends_with("ledger-eice.json"))
                .collect();
            assert!(ledgers.is_empty(), "{failpoint}: {ledgers:?}");
        }
    }
}

/// AWS refusing a second endpoint in the VPC (one still being deleted) ends `up` with AWS's own
/// words and what to do, and leaves nothing; the flags that only mean something for a proxy
/// are refused before anything is asked of AWS.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_endpoint_and_proxy_flags_end_up_with_what_to_do() {
    let w = world_or_skip!();
    let flags = w.up(
        CLUSTER,
        &["--instance-type", "t3.small", "--allow-cidr", ALLOW],
    );
    assert_eq!(flags.status, 2, "{flags:?}");
    assert!(
        flags
            .stderr
            .contains("--instance-type, --allow-cidr only mean something for a proxy"),
        "{flags:?}"
    );

    let id = "eice-0123456789abcdef8";
    w.endpoints.lock().unwrap().push(Described {
        id: id.into(),
        vpc: w.lab.vpc.clone(),
        subnet: w.lab.private_subnet.clone(),
        state: "delete-in-progress".into(),
        dns_name: format!("{id}.1a2b3c4d.ec2-instance-connect-endpoint.{REGION}.amazonaws.com"),
        groups: vec![w.lab.head_sg.clone()],
        tags: Vec::new(),
    });
    // Deleting takes a while here.
    w.api.lock().unwrap().settle = 1000;
    let groups_before = w.group_names().await;
    let up = w.up(CLUSTER, &[]);
    assert_eq!(up.status, 1, "{up:?}");
    assert!(
        up.stderr.contains("ResourceLimitExceeded")
            && up.stderr.contains("1 per VPC")
            && up.stderr.contains("a VPC at most one"),
        "{up:?}"
    );
    assert_eq!(w.group_names().await, groups_before);
    assert_eq!(w.aws.leftovers(CLUSTER).await, Vec::<String>::new());
}

/// Ctrl-C while `up --via eice` waits for `create-complete` (here an endpoint that stays in
/// progress): exit 130, and the endpoint, its group and the rules are removed, the endpoint
/// waited out of existence before its group.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_while_the_endpoint_is_made_removes_what_up_created() {
    let w = world_or_skip!();
    let head_before = w.aws.ingress(&w.lab.head_sg).await;
    w.api.lock().unwrap().settle = 1_000_000;
    let child = w.b.watch(&["up", "--cluster", CLUSTER, "--via", "eice"]);
    // Wait until the endpoint exists and both rules are there: up is then waiting.
    let deadline = std::time::Instant::now() + LIMIT;
    while w.aws.leftovers(CLUSTER).await.len() < 3 || w.live().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "up never made the endpoint"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Deleting takes two describes from here, as AWS takes a while.
    w.api.lock().unwrap().settle = 2;
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.finish(LIMIT);
    assert_eq!(out.status, 130, "{}", out.stderr);
    assert!(
        out.stderr.contains("interrupted")
            && out.stderr.contains("removed EC2 Instance Connect Endpoint"),
        "{}",
        out.stderr
    );
    assert!(w.live().is_empty(), "{:?}", w.live());
    assert_eq!(w.aws.ingress(&w.lab.head_sg).await, head_before);
    assert_eq!(w.aws.leftovers(CLUSTER).await, Vec::<String>::new());
}
