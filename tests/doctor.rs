//! `bastion doctor` against moto: what it reports for a VPC without endpoints in each partition,
//! what `--fix` creates (and that a second run is clean), and each misconfiguration.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use aws_sdk_ec2::types as ec2t;
use common::*;

fn statuses(r: &Run) -> Vec<(String, String, String)> {
    r.json()
        .as_array()
        .unwrap_or_else(|| panic!("a JSON array: {r:?}"))
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn status_of<'a>(all: &'a [(String, String, String)], id: &str) -> &'a (String, String, String) {
    all.iter()
        .find(|(i, _, _)| i == id)
        .unwrap_or_else(|| panic!("no check {id} in {all:?}"))
}

const GOOD_CONFIG: &str = "HeadNode:\n  Networking:\n    SubnetId: SUBNET\nScheduling:\n  Scheduler: slurm\n  SlurmSettings:\n    Dns:\n      DisableManagedDns: true\n      UseEc2Hostnames: true\n  SlurmQueues:\n  - Name: q\n    Networking:\n      SubnetIds: [SUBNET]\n";

#[tokio::test(flavor = "multi_thread")]
async fn every_missing_endpoint_is_reported_with_the_partitions_names() {
    let moto = moto_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    for (region, ec2_name, cfn_name) in [
        (
            "us-east-1",
            "com.amazonaws.us-east-1.ec2",
            "com.amazonaws.us-east-1.cloudformation",
        ),
        (
            "us-gov-west-1",
            "com.amazonaws.us-gov-west-1.ec2",
            "com.amazonaws.us-gov-west-1.cloudformation",
        ),
        (
            "cn-north-1",
            "cn.com.amazonaws.cn-north-1.ec2",
            "cn.com.amazonaws.cn-north-1.cloudformation",
        ),
    ] {
        let aws = moto.clients_in(region).await;
        let lab = aws.build_lab(LabOptions::default()).await;
        let mut b = Bastion::new(&moto, tmp.path());
        b.env.push(("AWS_REGION".into(), region.into()));
        for directory_service in [false, true] {
            let cfg = tmp
                .path()
                .join(format!("{region}-{directory_service}.yaml"));
            let mut text = GOOD_CONFIG.replace("SUBNET", &lab.private_subnet);
            if directory_service {
                text.push_str("DirectoryService:\n  DomainName: corp.example.com\n");
            }
            std::fs::write(&cfg, text).unwrap();
            let r = b.run(&[
                "doctor",
                "--cluster",
                CLUSTER,
                "--config",
                cfg.to_str().unwrap(),
                "--output",
                "json",
            ]);
            assert_eq!(r.status, 1, "{region}: {r:?}");
            let all = statuses(&r);
            let mut expected = vec!["logs", "cloudformation", "ec2", "s3", "dynamodb"];
            if directory_service {
                expected.push("secretsmanager");
            } else {
                assert!(
                    all.iter().all(|(i, _, _)| i != "endpoint.secretsmanager"),
                    "{region}: {all:?}"
                );
            }
            for short in expected {
                let (_, status, detail) = status_of(&all, &format!("endpoint.{short}"));
                assert_eq!(status, "problem", "{region} {short}");
                assert!(detail.starts_with("no "), "{detail}");
            }
            assert!(
                status_of(&all, "endpoint.ec2").2.contains(ec2_name),
                "{region}: {all:?}"
            );
            assert!(
                status_of(&all, "endpoint.cloudformation")
                    .2
                    .contains(cfn_name),
                "{region}"
            );
            assert!(
                status_of(&all, "endpoint.s3").2.contains("Gateway"),
                "{region}"
            );
            // Everything else about this subnet and config is right.
            for id in [
                "subnet.no-internet",
                "subnet.public-ip",
                "vpc.dns",
                "config.scheduler",
                "config.dns",
                "config.ec2-hostnames",
                "config.subnets",
            ] {
                assert_eq!(status_of(&all, id).1, "ok", "{region} {id}: {all:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fix_creates_exactly_the_missing_endpoints_and_a_second_run_is_clean() {
    let (_moto, aws, lab, _tmp, b) = moto_test!();
    // One endpoint is already there, made by someone else: doctor must leave it alone.
    let rt = private_route_table(&aws, &lab).await;
    endpoint(&aws, &lab, "dynamodb", Via::RouteTable(&rt, None)).await;

    let r = b.run(&["doctor", "--cluster", CLUSTER, "--fix"]);
    assert_eq!(r.status, 0, "{r:?}");
    let created = r
        .stdout
        .lines()
        .filter(|l| l.contains("changed  created") && l.contains("endpoint"))
        .count();
    assert_eq!(created, 4, "logs, cloudformation, ec2, s3: {r:?}");
    let eps = aws
        .ec2
        .describe_vpc_endpoints()
        .filters(filter("vpc-id", &lab.vpc))
        .send()
        .await
        .unwrap();
    let eps = eps.vpc_endpoints();
    assert_eq!(eps.len(), 5);
    for e in eps {
        let doctor_tag = e
            .tags()
            .iter()
            .any(|t| t.key() == Some("bastion:doctor") && t.value() == Some(CLUSTER));
        if e.service_name() == Some("com.amazonaws.us-east-1.dynamodb") {
            assert!(!doctor_tag, "the existing endpoint was not touched");
            continue;
        }
        assert!(doctor_tag, "{e:?}");
        if e.vpc_endpoint_type() == Some(&ec2t::VpcEndpointType::Interface) {
            assert_eq!(e.private_dns_enabled(), Some(true));
            assert_eq!(e.subnet_ids(), std::slice::from_ref(&lab.private_subnet));
            let sg = e.groups()[0].group_id().unwrap();
            assert_eq!(
                aws.ingress(sg).await,
                vec![(443, "10.20.0.0/16".to_string())]
            );
        } else {
            assert_eq!(e.route_table_ids(), std::slice::from_ref(&rt));
        }
    }
    // A second doctor is clean, and a second --fix changes nothing.
    let again = b.run(&["doctor", "--cluster", CLUSTER, "--output", "json"]);
    assert_eq!(again.status, 0, "{again:?}");
    assert!(
        statuses(&again).iter().all(|(_, s, _)| s == "ok"),
        "{again:?}"
    );
    let before = network_state(&aws, &lab).await;
    let again = b.run(&["doctor", "--cluster", CLUSTER, "--fix"]);
    assert_eq!(again.status, 0);
    assert!(!again.stdout.contains("changed"), "{again:?}");
    assert_eq!(
        network_state(&aws, &lab).await,
        before,
        "a second --fix changed what AWS holds"
    );
}

/// What `--fix` could change, as AWS holds it: every endpoint of the VPC (with its subnets,
/// route tables, groups, DNS, policy and tags), every group with its rules, every route.
async fn network_state(aws: &Clients, lab: &Lab) -> Vec<String> {
    let vpc = filter("vpc-id", &lab.vpc);
    let mut out = Vec::new();
    let eps = aws
        .ec2
        .describe_vpc_endpoints()
        .filters(vpc.clone())
        .send()
        .await
        .unwrap();
    for e in eps.vpc_endpoints() {
        let mut tags: Vec<_> = e
            .tags()
            .iter()
            .map(|t| format!("{:?}={:?}", t.key(), t.value()))
            .collect();
        tags.sort();
        out.push(format!(
            "endpoint {:?} {:?} {:?} {:?} subnets {:?} tables {:?} groups {:?} dns {:?} policy {:?} tags {tags:?}",
            e.vpc_endpoint_id(),
            e.service_name(),
            e.vpc_endpoint_type(),
            e.state(),
            e.subnet_ids(),
            e.route_table_ids(),
            e.groups().iter().map(|g| g.group_id()).collect::<Vec<_>>(),
            e.private_dns_enabled(),
            e.policy_document(),
        ));
    }
    let groups = aws
        .ec2
        .describe_security_groups()
        .filters(vpc.clone())
        .send()
        .await
        .unwrap();
    for g in groups.security_groups() {
        let id = g.group_id().unwrap_or_default();
        out.push(format!("group {id} ingress {:?}", aws.ingress(id).await));
    }
    let tables = aws
        .ec2
        .describe_route_tables()
        .filters(vpc)
        .send()
        .await
        .unwrap();
    for t in tables.route_tables() {
        let mut routes: Vec<_> = t
            .routes()
            .iter()
            .map(|r| {
                format!(
                    "{:?}->{:?}{:?}{:?}",
                    r.destination_cidr_block(),
                    r.gateway_id(),
                    r.nat_gateway_id(),
                    r.destination_prefix_list_id()
                )
            })
            .collect();
        routes.sort();
        out.push(format!("table {:?} {routes:?}", t.route_table_id()));
    }
    out.sort();
    out
}

/// Each check the issue lists comes out as a problem when AWS holds the fault: an endpoint of
/// the wrong type, one deleted (and `--fix` replaces it), the S3 endpoint's policy read from
/// AWS, public IPv4 on launch, VPC DNS off (each half), and a proxy whose subnet lost its route
/// to the internet.
#[tokio::test(flavor = "multi_thread")]
async fn each_check_is_a_problem_when_aws_holds_the_fault() {
    let (_moto, aws, lab, _tmp, b) = moto_test!();
    let doctor = || {
        let r = b.run(&["doctor", "--cluster", CLUSTER, "--output", "json"]);
        assert_eq!(r.status, 1, "{r:?}");
        statuses(&r)
    };
    let rt = private_route_table(&aws, &lab).await;

    // ec2 as a Gateway endpoint; logs made, then deleted (AWS lists it as `deleted` a while).
    endpoint(&aws, &lab, "ec2", Via::RouteTable(&rt, None)).await;
    let logs = endpoint(&aws, &lab, "logs", Via::Subnet(&lab.private_subnet, true)).await;
    aws.ec2
        .delete_vpc_endpoints()
        .vpc_endpoint_ids(&logs)
        .send()
        .await
        .unwrap();
    // S3 on the right route table, with a policy that keeps CloudFormation's wait condition out.
    let narrow = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::my-bucket/*"}]}"#;
    let s3 = endpoint(&aws, &lab, "s3", Via::RouteTable(&rt, Some(narrow))).await;
    let all = doctor();
    let ec2 = status_of(&all, "endpoint.ec2");
    assert!(
        ec2.1 == "problem" && ec2.2.contains("is a Gateway endpoint, not Interface"),
        "{ec2:?}"
    );
    let l = status_of(&all, "endpoint.logs");
    assert!(
        l.1 == "problem" && l.2.contains(&format!("{logs} is deleted")),
        "{l:?}"
    );
    let p = status_of(&all, "endpoint.s3.policy");
    assert!(
        p.1 == "problem" && p.2.contains("wait condition") && p.2.contains(&s3),
        "{p:?}"
    );
    // A policy that lets the wait condition through: the row goes away.
    let wide = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::cloudformation-waitcondition-us-east-1/*"},{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::my-bucket/*"}]}"#;
    aws.ec2
        .modify_vpc_endpoint()
        .vpc_endpoint_id(&s3)
        .policy_document(wide)
        .send()
        .await
        .unwrap();
    let all = doctor();
    assert!(
        all.iter().all(|(id, _, _)| id != "endpoint.s3.policy"),
        "{all:?}"
    );
    // --fix replaces the deleted logs endpoint (it carries nothing) and leaves the wrong-type
    // one alone (it edits nothing it did not make).
    let r = b.run(&["doctor", "--cluster", CLUSTER, "--fix", "--output", "json"]);
    let eps = aws
        .ec2
        .describe_vpc_endpoints()
        .filters(filter("vpc-id", &lab.vpc))
        .filters(filter("service-name", "com.amazonaws.us-east-1.logs"))
        .send()
        .await
        .unwrap();
    let states: Vec<_> = eps
        .vpc_endpoints()
        .iter()
        .map(|e| {
            e.state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default()
        })
        .collect();
    assert!(
        states.iter().any(|s| s == "available"),
        "a new logs endpoint: {states:?}
{r:?}"
    );
    let all = statuses(&r);
    assert_eq!(status_of(&all, "endpoint.logs").1, "ok", "{all:?}");
    assert_eq!(status_of(&all, "endpoint.ec2").1, "problem", "{all:?}");

    // The subnet: public IPv4 on launch.
    aws.ec2
        .modify_subnet_attribute()
        .subnet_id(&lab.private_subnet)
        .map_public_ip_on_launch(ec2t::AttributeBooleanValue::builder().value(true).build())
        .send()
        .await
        .unwrap();
    assert_eq!(status_of(&doctor(), "subnet.public-ip").1, "problem");
    // The VPC's DNS, each half alone.
    for (support, hostnames, needle) in [
        (false, true, "DNS support off"),
        (true, false, "DNS hostnames off"),
    ] {
        let set = |on: bool| ec2t::AttributeBooleanValue::builder().value(on).build();
        aws.ec2
            .modify_vpc_attribute()
            .vpc_id(&lab.vpc)
            .enable_dns_support(set(support))
            .send()
            .await
            .unwrap();
        aws.ec2
            .modify_vpc_attribute()
            .vpc_id(&lab.vpc)
            .enable_dns_hostnames(set(hostnames))
            .send()
            .await
            .unwrap();
        let all = doctor();
        let dns = status_of(&all, "vpc.dns");
        assert!(dns.1 == "problem" && dns.2.contains(needle), "{dns:?}");
    }

    // A proxy whose public subnet lost its route to the internet.
    let up = b.up_no_wait();
    assert_eq!(up.status, 0, "{up:?}");
    assert_eq!(status_of(&doctor(), "bastion.subnet-public").1, "ok");
    let public_rt = aws.route_table_of(&lab.public_subnet).await;
    aws.ec2
        .delete_route()
        .route_table_id(&public_rt)
        .destination_cidr_block("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    let all = doctor();
    let c = status_of(&all, "bastion.subnet-public");
    assert_eq!(c.1, "problem", "{c:?}");
    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);
}

/// Where a test's endpoint goes: Interface in a subnet (private DNS on or off), or Gateway on a
/// route table (with a policy, or AWS's default one).
enum Via<'a> {
    Subnet(&'a str, bool),
    RouteTable(&'a str, Option<&'a str>),
}

/// Creates an endpoint for `com.amazonaws.us-east-1.<service>` in the lab's VPC; its id.
async fn endpoint(aws: &Clients, lab: &Lab, service: &str, via: Via<'_>) -> String {
    let req = aws
        .ec2
        .create_vpc_endpoint()
        .vpc_id(&lab.vpc)
        .service_name(format!("com.amazonaws.us-east-1.{service}"));
    let req = match via {
        Via::Subnet(subnet, private_dns) => req
            .vpc_endpoint_type(ec2t::VpcEndpointType::Interface)
            .subnet_ids(subnet)
            .private_dns_enabled(private_dns),
        Via::RouteTable(table, policy) => req
            .vpc_endpoint_type(ec2t::VpcEndpointType::Gateway)
            .route_table_ids(table)
            .set_policy_document(policy.map(str::to_string)),
    };
    req.send()
        .await
        .unwrap()
        .vpc_endpoint()
        .unwrap()
        .vpc_endpoint_id()
        .unwrap()
        .to_string()
}

async fn private_route_table(aws: &Clients, lab: &Lab) -> String {
    aws.route_table_of(&lab.private_subnet).await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_misconfiguration_is_the_right_problem() {
    let (_moto, aws, lab, tmp, b) = moto_test!();
    // S3 on the wrong route table (the public one); logs without private DNS.
    let public_rt = aws.route_table_of(&lab.public_subnet).await;
    endpoint(&aws, &lab, "s3", Via::RouteTable(&public_rt, None)).await;
    endpoint(&aws, &lab, "logs", Via::Subnet(&lab.private_subnet, false)).await;
    // ec2 in another subnet of the same AZ (fine); cloudformation only in another AZ (not).
    let other_az = aws
        .ec2
        .create_subnet()
        .vpc_id(&lab.vpc)
        .cidr_block("10.20.9.0/24")
        .availability_zone("us-east-1b")
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_string();
    for (service, subnet) in [("ec2", &lab.public_subnet), ("cloudformation", &other_az)] {
        endpoint(&aws, &lab, service, Via::Subnet(subnet, true)).await;
    }
    let r = b.run(&["doctor", "--cluster", CLUSTER, "--output", "json"]);
    assert_eq!(r.status, 1);
    let all = statuses(&r);
    let ec2 = status_of(&all, "endpoint.ec2");
    assert!(
        !ec2.2.contains("availability zone"),
        "same AZ is fine: {ec2:?}"
    );
    // moto gives an endpoint made without groups none: nothing admits the cluster on 443.
    assert!(
        ec2.1 == "problem" && ec2.2.contains("no security group admitting tcp 443"),
        "{ec2:?}"
    );
    let cfn = status_of(&all, "endpoint.cloudformation");
    assert!(
        cfn.1 == "problem" && cfn.2.contains("availability zone us-east-1a"),
        "{cfn:?}"
    );
    let s3 = status_of(&all, "endpoint.s3");
    assert!(
        s3.1 == "problem" && s3.2.contains("is not associated with"),
        "{s3:?}"
    );
    let logs = status_of(&all, "endpoint.logs");
    assert!(
        logs.1 == "problem" && logs.2.contains("private DNS off"),
        "{logs:?}"
    );

    // Configs: awsbatch, UseEc2Hostnames false, malformed YAML.
    let cfg = tmp.path().join("c.yaml");
    let base = GOOD_CONFIG.replace("SUBNET", &lab.private_subnet);
    for (text, id, needle) in [
        (
            base.replace("Scheduler: slurm", "Scheduler: awsbatch"),
            "config.scheduler",
            "awsbatch",
        ),
        (
            base.replace("UseEc2Hostnames: true", "UseEc2Hostnames: false"),
            "config.ec2-hostnames",
            "is false",
        ),
        (
            "Scheduling:\n  Scheduler: slurm\n  SlurmQueues: [unclosed\n".to_string(),
            "config.yaml",
            "line ",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let r = b.run(&[
            "doctor",
            "--cluster",
            CLUSTER,
            "--config",
            cfg.to_str().unwrap(),
            "--output",
            "json",
        ]);
        assert_eq!(r.status, 1, "{r:?}");
        let all = statuses(&r);
        let c = status_of(&all, id);
        assert!(c.1 == "problem" && c.2.contains(needle), "{id}: {c:?}");
    }

    // A subnet with an internet route, checked before the cluster exists.
    std::fs::write(&cfg, GOOD_CONFIG.replace("SUBNET", &lab.public_subnet)).unwrap();
    let r = b.run(&[
        "doctor",
        "--subnet",
        &lab.public_subnet,
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(r.status, 1, "{r:?}");
    let all = statuses(&r);
    assert_eq!(status_of(&all, "subnet.no-internet").1, "warning");
    let subnets = status_of(&all, "config.subnets");
    assert!(
        subnets.1 == "problem" && subnets.2.contains("igw-"),
        "{subnets:?}"
    );

    // Doctor itself cannot run: exit 2.
    let r = b.run(&["doctor", "--cluster", "nosuch"]);
    assert_eq!(r.status, 2, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_bastion_up_its_reach_is_checked() {
    let (_moto, aws, _, _tmp, b) = moto_test!();
    let up = b.run(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        "0.0.0.0/0",
        "--no-wait",
    ]);
    assert_eq!(up.status, 0, "{up:?}");
    let r = b.run(&["doctor", "--cluster", CLUSTER, "--output", "json"]);
    let all = statuses(&r);
    assert_eq!(
        status_of(&all, "bastion.head-node-ingress").1,
        "ok",
        "{all:?}"
    );
    assert_eq!(status_of(&all, "bastion.subnet-public").1, "ok");
    assert_eq!(
        status_of(&all, "bastion.open-to-world").1,
        "warning",
        "an explicit 0.0.0.0/0 is flagged"
    );
    // Without the rule `up` added on the head node's group, the proxy cannot reach it.
    let rules = aws
        .ec2
        .describe_security_group_rules()
        .filters(filter("tag:bastion:cluster", CLUSTER))
        .send()
        .await
        .unwrap();
    for rule in rules.security_group_rules() {
        aws.ec2
            .revoke_security_group_ingress()
            .group_id(rule.group_id().unwrap())
            .security_group_rule_ids(rule.security_group_rule_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    let r = b.run(&["doctor", "--cluster", CLUSTER, "--output", "json"]);
    let all = statuses(&r);
    let c = status_of(&all, "bastion.head-node-ingress");
    assert!(c.1 == "problem" && c.2.contains("22"), "{c:?}");
    assert_eq!(b.run(&["down", "--cluster", CLUSTER]).status, 0);
}

/// What `pcluster`'s own loader (`pcluster.utils.yaml_load`, from the pcluster venv) makes of a
/// file: `Ok(type name)` or `Err((line, column, problem))`, 1-based as PyYAML prints a mark.
fn pcluster_loads(
    python: &std::path::Path,
    file: &std::path::Path,
) -> Result<String, (u64, u64, String)> {
    let program = r#"
import json, sys
from pcluster.utils import yaml_load
try:
    d = yaml_load(open(sys.argv[1], encoding="utf-8").read())
    print(json.dumps({"ok": type(d).__name__}))
except Exception as e:
    m = getattr(e, "problem_mark", None)
    print(json.dumps({"line": m.line + 1, "column": m.column + 1, "problem": str(getattr(e, "problem", e))}))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", program])
        .arg(file)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    match v["ok"].as_str() {
        Some(t) => Ok(t.to_string()),
        None => Err((
            v["line"].as_u64().unwrap(),
            v["column"].as_u64().unwrap(),
            v["problem"].as_str().unwrap().to_string(),
        )),
    }
}

/// marshmallow's `fields.Boolean` (pcluster's schema field for DisableManagedDns) over what
/// PyYAML made of `DisableManagedDns: <spelling>`: Some(bool), or None when it refuses it.
fn pcluster_bool(python: &std::path::Path, spelling: &str) -> Option<bool> {
    let program = r#"
import sys, yaml
from marshmallow import fields, ValidationError
v = yaml.safe_load("k: " + sys.argv[1])["k"]
try:
    print(fields.Boolean().deserialize(v))
except ValidationError:
    print("invalid")
"#;
    let out = std::process::Command::new(python)
        .args(["-c", program, spelling])
        .output()
        .unwrap();
    match String::from_utf8_lossy(&out.stdout).trim() {
        "True" => Some(true),
        "False" => Some(false),
        "invalid" => None,
        other => panic!("{other}: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

fn fixture(name: &str, subs: &[(&str, &str)], dir: &std::path::Path) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/doctor")
        .join(name);
    let mut text = std::fs::read_to_string(&src).unwrap();
    for (k, v) in subs {
        text = text.replace(k, v);
    }
    let out = dir.join(name);
    std::fs::write(&out, text).unwrap();
    out
}

/// The YAML as pcluster reads it: every verdict compared with pcluster's own loader and schema,
/// so the expectations come from pcluster, not from our memory of it.
#[tokio::test(flavor = "multi_thread")]
async fn the_configuration_is_read_as_pcluster_reads_it() {
    let Some(python) = require_tool("python3", &[pcluster_venv().join("bin/python")]) else {
        return;
    };
    let (_moto, _aws, lab, tmp, b) = moto_test!();
    let subs = [("SUBNET", lab.private_subnet.as_str())];
    let doctor = |file: &std::path::Path| {
        let r = b.run(&[
            "doctor",
            "--cluster",
            CLUSTER,
            "--config",
            file.to_str().unwrap(),
            "--output",
            "json",
        ]);
        assert!(r.status == 0 || r.status == 1, "{r:?}");
        statuses(&r)
    };

    // Files pcluster's loader refuses: one problem, at the place PyYAML names.
    for name in [
        "merge-queue.yaml",
        "merge-dns.yaml",
        "two-documents.yaml",
        "tab.yaml",
        "duplicate-key.yaml",
        "stray-line.yaml",
    ] {
        let file = fixture(name, &subs, tmp.path());
        let (line, column, problem) =
            pcluster_loads(&python, &file).expect_err(&format!("pcluster refuses {name}"));
        let all = doctor(&file);
        let (_, status, detail) = status_of(&all, "config.yaml");
        assert_eq!(status, "problem", "{name}: {detail}");
        assert!(
            detail.contains(&format!("line {line}, column {column}")),
            "{name}: pcluster says line {line}, column {column} ({problem}); doctor: {detail}"
        );
        assert!(
            !detail.contains("String(") && !detail.contains("Scalar("),
            "{detail}"
        );
        assert!(
            !all.iter().any(|(id, _, _)| id == "config.dns"),
            "{name}: no advice from a file pcluster refuses"
        );
        if problem.contains("merge") {
            assert!(detail.contains("tag:yaml.org,2002:merge"), "{detail}");
        }
    }

    // Files pcluster loads but refuses as a configuration: said in one line.
    for (name, words) in [
        ("empty.yaml", "empty"),
        ("comments.yaml", "empty"),
        ("list.yaml", "is a list, not a mapping"),
        ("scalar.yaml", "is a string, not a mapping"),
    ] {
        let file = fixture(name, &subs, tmp.path());
        let loaded = pcluster_loads(&python, &file).expect("PyYAML loads it");
        assert_ne!(loaded, "dict", "{name}");
        let all = doctor(&file);
        let config: Vec<_> = all
            .iter()
            .filter(|(id, _, _)| id.starts_with("config."))
            .collect();
        assert_eq!(config.len(), 1, "{name}: one line: {config:?}");
        assert!(config[0].2.contains(words), "{name}: {config:?}");
    }

    // Every boolean spelling, as pcluster's schema reads it.
    for spelling in [
        "yes", "on", "Y", "1", "\"true\"", "True", "tRue", "2", "no", "off", "n", "0",
    ] {
        let want = pcluster_bool(&python, spelling);
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/doctor/custom-security-groups.yaml"),
        )
        .unwrap()
        .replace("SUBNET", &lab.private_subnet)
        .replace("    SecurityGroups: [ENDPOINT_SG]\n", "")
        .replace("      SecurityGroups: [ENDPOINT_SG]\n", "")
        .replace(
            "DisableManagedDns: true",
            &format!("DisableManagedDns: {spelling}"),
        );
        let file = tmp.path().join("bool.yaml");
        std::fs::write(&file, text).unwrap();
        let all = doctor(&file);
        let (_, status, detail) = status_of(&all, "config.dns");
        match want {
            Some(true) => assert_eq!(status, "ok", "{spelling}: {detail}"),
            Some(false) => assert!(
                status == "problem" && detail.contains("is false"),
                "{spelling}: {detail}"
            ),
            None => assert!(
                status == "problem" && detail.contains("does not accept as a boolean"),
                "{spelling}: {detail}"
            ),
        }
    }

    // Wrong types are named as such; a placeholder map is not skipped.
    let file = fixture("placeholder-map.yaml", &subs, tmp.path());
    let all = doctor(&file);
    let types: Vec<&String> = all
        .iter()
        .filter(|(id, _, _)| id == "config.types")
        .map(|(_, _, d)| d)
        .collect();
    for (path, what) in [
        ("HeadNode/Networking/SubnetId", "is a mapping, not a string"),
        ("Scheduling/Scheduler", "is a list, not a string"),
        (
            "Scheduling/SlurmQueues[0]/Networking/SubnetIds",
            "is a string, not a list",
        ),
    ] {
        assert!(
            types
                .iter()
                .any(|d| d.starts_with(path) && d.contains(what)),
            "{path} {what}: {types:?}"
        );
    }

    // awsbatch: one clear problem, no SlurmSettings advice.
    let all = doctor(&fixture("awsbatch.yaml", &subs, tmp.path()));
    let (_, status, detail) = status_of(&all, "config.scheduler");
    assert_eq!(status, "problem");
    assert!(
        detail.contains("awsbatch needs internet access for its ECS instances"),
        "{detail}"
    );
    assert!(
        !all.iter()
            .any(|(id, _, _)| id == "config.dns" || id == "config.ec2-hostnames")
    );
}

/// Subnets of another VPC or none, custom SecurityGroups with --subnet, LoginNodes pools and
/// secrets read from Secrets Manager.
#[tokio::test(flavor = "multi_thread")]
async fn config_sections_bring_their_subnets_groups_and_endpoints() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let other = aws
        .build_lab(LabOptions {
            cluster: "other",
            cidr: "10.30",
            ..LabOptions::default()
        })
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let b = Bastion::new(&moto, tmp.path());
    let subs = [
        ("OTHER_VPC_SUBNET", other.private_subnet.as_str()),
        ("SUBNET", lab.private_subnet.as_str()),
    ];
    let run = |args: &[&str]| {
        let mut a = vec!["doctor", "--output", "json"];
        a.extend_from_slice(args);
        let r = b.run(&a);
        assert!(r.status == 0 || r.status == 1, "{r:?}");
        statuses(&r)
    };

    let file = fixture("subnets-elsewhere.yaml", &subs, tmp.path());
    let all = run(&["--cluster", CLUSTER, "--config", file.to_str().unwrap()]);
    let (_, status, detail) = status_of(&all, "config.subnets");
    assert_eq!(status, "problem", "{detail}");
    assert!(
        detail.contains(&format!(
            "{} (Scheduling/SlurmQueues[0]/Networking/SubnetIds",
            other.private_subnet
        )) && detail.contains(&format!("is in {}, not in {}", other.vpc, lab.vpc)),
        "{detail}"
    );
    assert!(
        detail.contains("subnet-0000000000000dead") && detail.contains("does not exist"),
        "{detail}"
    );

    // Custom SecurityGroups replace the default ones: the endpoint check counts them, with
    // --subnet as with --cluster. The group is the one doctor --fix made for the endpoints.
    let fixed = b.run(&["doctor", "--cluster", CLUSTER, "--fix"]);
    assert!(fixed.status == 0 || fixed.status == 1, "{fixed:?}");
    let groups = aws
        .ec2
        .describe_security_groups()
        .filters(filter("tag:bastion:doctor", CLUSTER))
        .send()
        .await
        .unwrap();
    let endpoint_sg = groups.security_groups()[0].group_id().unwrap().to_string();
    // The endpoints' group admits 443 from the VPC; make it admit its own members only, so
    // only a cluster that runs with that group reaches them.
    let vpc_rule = groups.security_groups()[0].ip_permissions()[0].clone();
    aws.ec2
        .revoke_security_group_ingress()
        .group_id(&endpoint_sg)
        .ip_permissions(vpc_rule)
        .send()
        .await
        .unwrap();
    aws.ec2
        .authorize_security_group_ingress()
        .group_id(&endpoint_sg)
        .ip_permissions(
            ec2t::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(443)
                .to_port(443)
                .user_id_group_pairs(
                    ec2t::UserIdGroupPair::builder()
                        .group_id(&endpoint_sg)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let subs_sg = [
        ("ENDPOINT_SG", endpoint_sg.as_str()),
        ("SUBNET", lab.private_subnet.as_str()),
    ];
    let file = fixture("custom-security-groups.yaml", &subs_sg, tmp.path());
    let all = run(&[
        "--subnet",
        &lab.private_subnet,
        "--config",
        file.to_str().unwrap(),
    ]);
    for id in ["endpoint.logs", "endpoint.cloudformation", "endpoint.ec2"] {
        let (_, status, detail) = status_of(&all, id);
        assert_eq!(status, "ok", "{id}: {detail}");
    }
    // --subnet must be the config's head node subnet.
    let all = run(&[
        "--subnet",
        &other.private_subnet,
        "--config",
        file.to_str().unwrap(),
    ]);
    let (_, status, detail) = status_of(&all, "config.head-subnet");
    assert_eq!(status, "problem", "{detail}");

    // LoginNodes: ELB and Auto Scaling endpoints, the pool's subnet checked; a munge key secret:
    // Secrets Manager's.
    let file = fixture("login-nodes-and-secrets.yaml", &subs, tmp.path());
    let all = run(&["--cluster", CLUSTER, "--config", file.to_str().unwrap()]);
    for id in [
        "endpoint.elasticloadbalancing",
        "endpoint.autoscaling",
        "endpoint.secretsmanager",
    ] {
        let (_, status, _) = status_of(&all, id);
        assert_eq!(status, "problem", "{id} is required and missing");
    }
    let (_, _, detail) = status_of(&all, "config.subnets");
    assert!(detail.contains("LoginNodes/Pools[0]"), "{detail}");
}

/// Exit 2 (doctor could not run) still prints JSON on stdout.
#[tokio::test(flavor = "multi_thread")]
async fn a_doctor_that_cannot_run_says_so_in_json_too() {
    let (_moto, _aws, _, tmp, b) = moto_test!();
    let not_utf8 = tmp.path().join("latin1.yaml");
    std::fs::write(&not_utf8, b"HeadNode: caf\xe9\n").unwrap();
    for config in [
        tmp.path().join("missing.yaml"),
        not_utf8,
        tmp.path().to_path_buf(),
    ] {
        let r = b.run(&[
            "doctor",
            "--cluster",
            CLUSTER,
            "--config",
            config.to_str().unwrap(),
            "--output",
            "json",
        ]);
        assert_eq!(r.status, 2, "{r:?}");
        let j = r.json();
        assert!(
            j["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot read")),
            "{r:?}"
        );
    }
}

/// States moto never shows, played by the front on DescribeVpcEndpoints: a pending endpoint is
/// on its way (a problem, but `--fix` makes no second one); one being deleted is waited for (a
/// new one would clash with its private DNS names); a failed one does not count (`--fix`
/// replaces it).
#[tokio::test(flavor = "multi_thread")]
async fn endpoints_on_their_way_or_on_their_way_out_are_told_apart() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let front = common::front::Front::start(&moto.url).await;
    let state = std::sync::Arc::new(std::sync::Mutex::new(String::from("available")));
    let shown = state.clone();
    front.rewrite(move |call, body| {
        if call.action == "DescribeVpcEndpoints" {
            let to = format!("<state>{}</state>", shown.lock().unwrap());
            *body = body.replace("<state>available</state>", &to);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bastion::new(&moto, tmp.path());
    b.endpoint = front.url.clone();
    // The only endpoint of the VPC, so the front's edit names it alone.
    let logs = endpoint(&aws, &lab, "logs", Via::Subnet(&lab.private_subnet, true)).await;
    let logs_endpoints = async || {
        aws.ec2
            .describe_vpc_endpoints()
            .filters(filter("vpc-id", &lab.vpc))
            .filters(filter("service-name", "com.amazonaws.us-east-1.logs"))
            .send()
            .await
            .unwrap()
            .vpc_endpoints()
            .len()
    };
    for (shown_state, detail, fixed) in [
        ("pending", format!("{logs} is pending, not available"), 1),
        ("deleting", format!("that works ({logs} is deleting)"), 1),
        ("failed", format!("that works ({logs} is failed)"), 2),
    ] {
        *state.lock().unwrap() = shown_state.to_string();
        let r = b.run(&["doctor", "--cluster", CLUSTER, "--output", "json"]);
        assert_eq!(r.status, 1, "{shown_state}: {r:?}");
        let all = statuses(&r);
        let l = status_of(&all, "endpoint.logs");
        assert!(
            l.1 == "problem" && l.2.contains(&detail),
            "{shown_state}: {l:?}"
        );
        let r = b.run(&["doctor", "--cluster", CLUSTER, "--fix"]);
        assert_eq!(logs_endpoints().await, fixed, "{shown_state}: {r:?}");
        if shown_state == "deleting" {
            assert!(
                r.stdout.contains(&format!("{logs} is being deleted")),
                "{r:?}"
            );
        }
    }
}
