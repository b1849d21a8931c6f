//! The config file (`~/.config/bastion/config.toml`): precedence in every direction (flag,
//! environment, the cluster's table, the top level, the AWS profile's region, built-in), what
//! `up`, `status` and `ssh-config` then do against moto, and the errors for a malformed file
//! or an unknown key, with line and column.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use common::*;

fn write_config(b: &Bastion, text: &str) {
    let dir = b.home.join(".config/bastion");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

/// bastion as the user runs it, with no AWS_REGION of the harness's: the region comes from the
/// flag, the environment given here, the config file or the profile.
fn run_env(b: &Bastion, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = b.command(args);
    cmd.env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION");
    for (k, v) in env {
        cmd.env(k, v);
    }
    b.run_cmd(cmd)
}

/// `config show --output json` as {key: (value, from)}.
fn shown(b: &Bastion, env: &[(&str, &str)], extra: &[&str]) -> Vec<(String, String, String)> {
    let mut args = vec!["config", "show", "--output", "json"];
    args.extend_from_slice(extra);
    let r = run_env(b, env, &args);
    assert_eq!(r.status, 0, "{r:?}");
    r.json()["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap().to_string(),
                s["value"].as_str().unwrap_or("").to_string(),
                s["from"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn setting<'a>(all: &'a [(String, String, String)], key: &str) -> (&'a str, &'a str) {
    let s = all.iter().find(|s| s.0 == key).unwrap();
    (s.1.as_str(), s.2.as_str())
}

#[test]
fn config_show_names_where_each_setting_comes_from() {
    let tmp = tempfile::tempdir().unwrap();
    // No moto needed: `config show` reads local files only (a dead endpoint proves it).
    let mut b = Bastion::offline(tmp.path());
    b.endpoint = "http://127.0.0.1:9".into();
    std::fs::write(
        b.home.join("no-aws-config"),
        "[default]\nregion = sa-east-1\n\n[profile team]\nregion = ap-south-1\n",
    )
    .unwrap();
    write_config(
        &b,
        "region = \"eu-west-1\"\ninstance-type = \"t3.large\"\nallow-cidr = [\"198.51.100.0/24\", \"203.0.113.7\"]\n\n\
         [cluster.demo]\nregion = \"us-west-2\"\nos = \"ubuntu2204\"\nbastion-user = \"admin\"\n",
    );

    let top = shown(&b, &[], &[]);
    assert_eq!(
        setting(&top, "region"),
        ("eu-west-1", "config file (top level)")
    );
    assert_eq!(
        setting(&top, "instance-type"),
        ("t3.large", "config file (top level)")
    );
    assert_eq!(
        setting(&top, "allow-cidr"),
        ("198.51.100.0/24,203.0.113.7", "config file (top level)")
    );
    assert_eq!(setting(&top, "os"), ("al2023", "built-in"));
    assert_eq!(setting(&top, "idle-stop"), ("60", "built-in"));

    // The cluster's table wins over the top level, key by key.
    let demo = shown(&b, &[], &["--cluster", "demo"]);
    assert_eq!(
        setting(&demo, "region"),
        ("us-west-2", "config file [cluster.demo]")
    );
    assert_eq!(
        setting(&demo, "os"),
        ("ubuntu2204", "config file [cluster.demo]")
    );
    assert_eq!(
        setting(&demo, "bastion-user"),
        ("admin", "config file [cluster.demo]")
    );
    assert_eq!(
        setting(&demo, "instance-type"),
        ("t3.large", "config file (top level)")
    );
    let other = shown(&b, &[], &["--cluster", "other"]);
    assert_eq!(
        setting(&other, "region"),
        ("eu-west-1", "config file (top level)")
    );

    // The environment wins over the file; the flag over both.
    let env = shown(
        &b,
        &[("AWS_REGION", "ca-central-1")],
        &["--cluster", "demo"],
    );
    assert_eq!(
        setting(&env, "region"),
        ("ca-central-1", "environment (AWS_REGION)")
    );
    let flag = shown(
        &b,
        &[("AWS_REGION", "ca-central-1")],
        &["--cluster", "demo", "--region", "eu-north-1"],
    );
    assert_eq!(setting(&flag, "region"), ("eu-north-1", "flag"));

    // Without a region in the file: the profile's own, for the profile in effect.
    write_config(&b, "profile = \"team\"\n");
    let p = shown(&b, &[], &[]);
    assert_eq!(setting(&p, "profile"), ("team", "config file (top level)"));
    assert_eq!(setting(&p, "region"), ("ap-south-1", "AWS profile team"));
    let p = shown(&b, &[("AWS_PROFILE", "default")], &[]);
    assert_eq!(
        setting(&p, "profile"),
        ("default", "environment (AWS_PROFILE)")
    );
    assert_eq!(setting(&p, "region"), ("sa-east-1", "AWS profile default"));
}

#[tokio::test(flavor = "multi_thread")]
async fn up_status_and_ssh_config_take_their_defaults_from_the_file() {
    let (_moto, aws, _, tmp, b) = moto_test!();
    // The cluster lives in us-east-1; the top level names another region, the table this one.
    write_config(
        &b,
        "region = \"eu-west-1\"\nallow-cidr = [\"192.0.2.0/24\"]\n\n[cluster.demo]\nregion = \"us-east-1\"\n\
         instance-type = \"t3.large\"\nidle-stop = 15\nos = \"ubuntu2204\"\nallow-cidr = [\"198.51.100.0/24\"]\n\
         bastion-address = \"192.0.2.44:2222\"\nbastion-user = \"admin\"\nuser = \"rocky\"\n\
         identity = \"~/cluster.pem\"\n",
    );
    // moto has no Ubuntu SSM parameter: name an AMI it knows.
    let images = aws.ec2.describe_images().send().await.unwrap();
    let ami = images.images()[0].image_id().unwrap().to_string();
    let plan = run_env(
        &b,
        &[],
        &[
            "up",
            "--cluster",
            CLUSTER,
            "--dry-run",
            "--output",
            "json",
            "--ami",
            &ami,
        ],
    );
    assert_eq!(
        plan.status, 0,
        "the cluster's table named its region: {plan:?}"
    );
    let p = plan.json();
    assert_eq!(p["instance_type"], "t3.large");
    assert_eq!(p["idle_stop_minutes"], 15);
    assert_eq!(p["os"], "ubuntu2204");
    assert_eq!(p["allow_cidrs"], serde_json::json!(["198.51.100.0/24"]));

    // Flags win, each on its own.
    let plan = run_env(
        &b,
        &[],
        &[
            "up",
            "--cluster",
            CLUSTER,
            "--dry-run",
            "--output",
            "json",
            "--instance-type",
            "t3.small",
            "--os",
            "al2023",
            "--idle-stop",
            "0",
            "--allow-cidr",
            "203.0.113.0/24",
        ],
    );
    assert_eq!(plan.status, 0, "{plan:?}");
    let p = plan.json();
    assert_eq!(p["instance_type"], "t3.small");
    assert_eq!(p["os"], "al2023");
    assert_eq!(p["idle_stop_minutes"], 0);
    assert_eq!(p["allow_cidrs"], serde_json::json!(["203.0.113.0/24"]));

    // The environment wins over the table: in eu-west-1 there is no such cluster.
    let r = run_env(
        &b,
        &[("AWS_REGION", "eu-west-1")],
        &["up", "--cluster", CLUSTER, "--dry-run"],
    );
    assert_eq!(r.status, 2, "{r:?}");
    // No --cluster: the top level's region.
    let r = run_env(&b, &[], &["status", "--output", "json"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.json()["region"], "eu-west-1");

    // ssh-config takes the route's settings from the table.
    let up = run_env(
        &b,
        &[],
        &[
            "up",
            "--cluster",
            CLUSTER,
            "--no-wait",
            "--output",
            "json",
            "--ami",
            &ami,
        ],
    );
    assert_eq!(up.status, 0, "{up:?}");
    let proxy = up.json()["instance_id"].as_str().unwrap().to_string();
    let key = common::netlab::NetLab::key_pair(tmp.path(), "host");
    aws.set_instance_tags(
        &proxy,
        &[
            ("bastion:host-key", key.1.trim()),
            ("bastion:state", "ready"),
        ],
    )
    .await;
    std::fs::write(b.home.join("cluster.pem"), "").unwrap();
    let r = run_env(&b, &[], &["ssh-config", "--cluster", CLUSTER]);
    assert_eq!(r.status, 0, "{r:?}");
    for line in [
        "HostName 192.0.2.44",
        "Port 2222",
        "User admin",
        "User rocky",
        &format!("IdentityFile {}", b.home.join("cluster.pem").display()),
    ] {
        assert!(r.stdout.contains(line), "{line}: {}", r.stdout);
    }
    // A flag still wins.
    let r = run_env(
        &b,
        &[],
        &["ssh-config", "--cluster", CLUSTER, "--user", "ec2-user"],
    );
    assert!(
        r.stdout.contains("User ec2-user") && !r.stdout.contains("User rocky"),
        "{r:?}"
    );
    assert_eq!(run_env(&b, &[], &["down", "--cluster", CLUSTER]).status, 0);
    assert_eq!(aws.leftovers(CLUSTER).await, Vec::<String>::new());
}

#[test]
fn a_malformed_file_or_an_unknown_key_is_an_error_with_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bastion::offline(tmp.path());
    b.endpoint = "http://127.0.0.1:9".into();
    let file = b.home.join(".config/bastion/config.toml");
    for (text, at, words) in [
        (
            "region = \"eu-west-1\"\nprofle = \"x\"\n",
            "2:1",
            "unknown field `profle`",
        ),
        ("[cluster.demo]\nregion = \n", "2:10", ""),
        ("os = \"windows\"\n", "1:6", "is not an os bastion knows"),
        ("idle-stop = \"soon\"\n", "1:13", ""),
        (
            "[cluster.demo]\nuser = \"root\\nProxyCommand x\"\n",
            "2:8",
            "is not a login name",
        ),
        (
            "[cluster.\"no good\"]\nregion = \"eu-west-1\"\n",
            "1:",
            "cluster name",
        ),
    ] {
        write_config(&b, text);
        for args in [vec!["status"], vec!["config", "show"]] {
            let r = run_env(&b, &[], &args);
            assert_eq!(r.status, 2, "{text:?} {args:?}: {r:?}");
            let want = format!("error: {}:{at}", file.display());
            assert!(
                r.stderr.starts_with(&want) && r.stderr.contains(words),
                "{text:?}: want {want} ... {words}: {r:?}"
            );
        }
    }
}
