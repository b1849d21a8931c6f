//! No test may send a packet to the internet by mistake: moto makes up public addresses in
//! 54.214.0.0/16, so a test that forgot `--bastion-address` (or the front's address) would try
//! to reach the real one. `scripts/test` routes the range `unreachable` in the root namespace for
//! the whole run; this checks that the route is there and that the kernel refuses the range at
//! once, before anything leaves the machine.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail, with its message"
)]

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn moto_public_addresses_are_unreachable_during_the_suite() {
    let Ok(range) = std::env::var("BASTION_TEST_MOTO_ROUTE") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "the suite must run through scripts/test, which routes moto's public range away"
            );
        }
        common::skip("run through scripts/test (as root) to route moto's public range away");
        return;
    };
    let out = Command::new("ip")
        .args(["route", "show", &range])
        .output()
        .expect("ip runs");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.starts_with("unreachable"),
        "{range} must be routed unreachable in the root namespace, found: {shown:?}"
    );
    // Only now, with the route checked: a connection to an address moto hands out is refused
    // by the kernel itself, at once.
    let r = std::net::TcpStream::connect_timeout(
        &"54.214.0.1:22".parse().unwrap(),
        Duration::from_secs(2),
    );
    let err = r.expect_err("nothing may be reachable in moto's public range");
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::HostUnreachable,
        "refused by the route (not a timeout, not an answer): {err}"
    );
}
