//! `bastion doctor` against moto: what it reports for a VPC without endpoints in each partition,
//! what `--fix` creates (and that a second run is clean), and each misconfiguration.

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
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let b = Bastion::new(&moto, tmp.path());
    // One endpoint is already there, made by someone else: doctor must leave it alone.
    let rt = private_route_table(&aws, &lab).await;
    aws.ec2
        .create_vpc_endpoint()
        .vpc_id(&lab.vpc)
        .service_name("com.amazonaws.us-east-1.dynamodb")
        .vpc_endpoint_type(ec2t::VpcEndpointType::Gateway)
        .route_table_ids(&rt)
        .send()
        .await
        .unwrap();

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
    let again = b.run(&["doctor", "--cluster", CLUSTER, "--fix"]);
    assert_eq!(again.status, 0);
    assert!(!again.stdout.contains("changed"), "{again:?}");
}

async fn private_route_table(aws: &Clients, lab: &Lab) -> String {
    let out = aws
        .ec2
        .describe_route_tables()
        .filters(filter("association.subnet-id", &lab.private_subnet))
        .send()
        .await
        .unwrap();
    out.route_tables()[0].route_table_id().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_misconfiguration_is_the_right_problem() {
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    let lab = aws.build_lab(LabOptions::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let b = Bastion::new(&moto, tmp.path());
    // S3 on the wrong route table (the public one); logs without private DNS.
    let public_rt = aws
        .ec2
        .describe_route_tables()
        .filters(filter("association.subnet-id", &lab.public_subnet))
        .send()
        .await
        .unwrap()
        .route_tables()[0]
        .route_table_id()
        .unwrap()
        .to_string();
    aws.ec2
        .create_vpc_endpoint()
        .vpc_id(&lab.vpc)
        .service_name("com.amazonaws.us-east-1.s3")
        .vpc_endpoint_type(ec2t::VpcEndpointType::Gateway)
        .route_table_ids(&public_rt)
        .send()
        .await
        .unwrap();
    aws.ec2
        .create_vpc_endpoint()
        .vpc_id(&lab.vpc)
        .service_name("com.amazonaws.us-east-1.logs")
        .vpc_endpoint_type(ec2t::VpcEndpointType::Interface)
        .subnet_ids(&lab.private_subnet)
        .private_dns_enabled(false)
        .send()
        .await
        .unwrap();
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
        aws.ec2
            .create_vpc_endpoint()
            .vpc_id(&lab.vpc)
            .service_name(format!("com.amazonaws.us-east-1.{service}"))
            .vpc_endpoint_type(ec2t::VpcEndpointType::Interface)
            .subnet_ids(subnet)
            .private_dns_enabled(true)
            .send()
            .await
            .unwrap();
    }
    let r = b.run(&["doctor", "--cluster", CLUSTER, "--output", "json"]);
    assert_eq!(r.status, 1);
    let all = statuses(&r);
    let ec2 = status_of(&all, "endpoint.ec2");
    assert!(
        !ec2.2.contains("availability zone"),
        "same AZ is fine: {ec2:?}"
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
    let moto = moto_or_skip!();
    let aws = moto.clients().await;
    aws.build_lab(LabOptions::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let b = Bastion::new(&moto, tmp.path());
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
