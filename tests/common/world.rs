//! A cluster in moto whose head node is the network lab's head host, with a bastion made by
//! `up --no-wait` whose bootstrap the test plays (host key tag, ready, key authorized).

#![allow(unused_macros)]

use super::netlab::{self, NetLab};
use super::*;

/// A cluster whose head node's private IP is the lab's head host, with a bastion from
/// `up --no-wait` whose bootstrap the test plays: host key tag, ready, key authorized.
pub struct World {
    pub lab: NetLab,
    pub moto: Moto,
    pub aws: Clients,
    pub b: Bastion,
    _tmp: tempfile::TempDir,
    pub proxy_id: String,
    pub head_id: String,
    pub cluster_key: std::path::PathBuf,
}

pub async fn world() -> Option<World> {
    if !netlab::available() {
        return None;
    }
    let moto = Moto::start()?;
    let lab = NetLab::new();
    let aws = moto.clients().await;
    let fixture = aws
        .build_lab(LabOptions {
            cidr: "10.78",
            public_third: 0,
            private_third: lab.n,
            ..LabOptions::default()
        })
        .await;
    assert_eq!(fixture.head_ip, lab.head_ip);
    let tmp = tempfile::tempdir().unwrap();
    let b = Bastion::new(&moto, tmp.path());
    let up = b.run(&[
        "up",
        "--cluster",
        CLUSTER,
        "--allow-cidr",
        "10.77.0.0/16",
        "--no-wait",
        "--output",
        "json",
    ]);
    assert_eq!(up.status, 0, "{up:?}");
    let r = up.json();
    let proxy_id = r["instance_id"].as_str().unwrap().to_string();
    let key_file = r["key_file"].as_str().unwrap().to_string();
    // Play the proxy's bootstrap.
    aws.set_instance_tags(
        &proxy_id,
        &[
            ("bastion:host-key", &lab.host_key("proxy")),
            ("bastion:state", "ready"),
        ],
    )
    .await;
    lab.authorize(
        "proxy",
        &std::fs::read_to_string(format!("{key_file}.pub")).unwrap(),
    );
    // The cluster's own key pair, authorized on the head node.
    let (cluster_key, cluster_pub) = NetLab::key_pair(tmp.path(), "cluster-key");
    lab.authorize("head", &cluster_pub);
    Some(World {
        head_id: fixture.head_node,
        lab,
        moto,
        aws,
        b,
        _tmp: tmp,
        proxy_id,
        cluster_key,
    })
}

impl World {
    /// The route to the head node through the proxy at `address`, as `connect` and `ssh-config`
    /// take it: the proxy's login user (the operator's), root on the head node with the
    /// cluster's key.
    pub fn route_args<'a>(&'a self, address: &'a str) -> Vec<&'a str> {
        let mut v = self.route_args_default_user(address);
        v.extend(["--user", "root"]);
        v
    }

    /// The same route with the head node user left to bastion: the one the cluster's OS logs
    /// in as (`netlab::HEAD_LOGIN_USER`).
    pub fn route_args_default_user<'a>(&'a self, address: &'a str) -> Vec<&'a str> {
        vec![
            "--cluster",
            CLUSTER,
            "--bastion-address",
            address,
            "--bastion-user",
            netlab::HEAD_LOGIN_USER,
            "-i",
            self.cluster_key.to_str().unwrap(),
        ]
    }

    pub fn connect_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["connect"];
        v.extend(self.route_args(&self.lab.proxy_ip));
        v.extend_from_slice(extra);
        v
    }

    /// An echo service on the head node, reachable there as localhost:9000. `-t30`: socat's
    /// default 0.5 s to finish after one side ends is short for a loaded tunnel.
    pub fn spawn_echo(&mut self) {
        self.lab.spawn_in(
            "head",
            "echo",
            &[
                "socat",
                "-t30",
                "TCP-LISTEN:9000,bind=127.0.0.1,fork,reuseaddr,backlog=128",
                "EXEC:cat",
            ],
        );
    }

    pub fn connect(&self, extra: &[&str]) -> Run {
        self.b.run(&self.connect_args(extra))
    }
}

/// A teammate of the world's operator: a state dir and HOME of their own (no proxy key), the
/// EC2 Instance Connect stand-in as their endpoint for it (the SDK's service-specific variable),
/// a public address of their own, and the proxy's sshd reading the keys pushed for it.
pub struct Teammate {
    pub b: Bastion,
    pub eic: eic::InstanceConnect,
    pub address: eic::AddressService,
    _tmp: tempfile::TempDir,
}

impl World {
    /// Makes the proxy's sshd take keys pushed through Instance Connect (as the agent on a real
    /// proxy does) and returns a teammate whose public address is `address`.
    pub async fn teammate(&mut self, address: &str) -> Teammate {
        let eic = eic::InstanceConnect::start(self.aws.ec2.clone(), &self.lab.path("eic")).await;
        self.lab.add_sshd_config(
            "proxy",
            &format!(
                "AuthorizedKeysCommand {} %u\nAuthorizedKeysCommandUser root",
                eic::KEYS_COMMAND
            ),
        );
        let name = eic::KEYS_COMMAND.rsplit('/').next().unwrap();
        self.lab
            .set_proxy_sbin(&[(name, &eic.keys_command(&self.proxy_id))]);
        let address = eic::AddressService::start(address).await;
        let tmp = tempfile::tempdir().unwrap();
        let mut b = Bastion::new(&self.moto, tmp.path());
        b.env.push((
            "AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT".into(),
            eic.url.clone(),
        ));
        b.env
            .push(("BASTION_IP_LOOKUP_URL".into(), address.url.clone()));
        Teammate {
            b,
            eic,
            address,
            _tmp: tmp,
        }
    }

    /// `connect` as a teammate runs it: the proxy's login user left to bastion (its OS's,
    /// `ec2-user`), root on the head node with the cluster's key.
    pub fn teammate_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "connect",
            "--cluster",
            CLUSTER,
            "--bastion-address",
            &self.lab.proxy_ip,
            "--user",
            "root",
            "-i",
            self.cluster_key.to_str().unwrap(),
        ];
        v.extend_from_slice(extra);
        v
    }
}

macro_rules! world_or_skip {
    () => {
        match world().await {
            Some(w) => w,
            None => return,
        }
    };
}

#[macro_export]
#[allow(unused_macros)]
macro_rules! world_or_skip {
    () => {
        match $crate::common::world::world().await {
            Some(w) => w,
            None => return,
        }
    };
}
