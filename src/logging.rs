//! Logging: tracing to stderr, never stdout (stdout carries results). Default filter
//! `warn,bastion=warn`; -v/-vv/-vvv raise bastion's level; `BASTION_LOG` overrides everything.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warn,bastion=info",
        (false, 2) => "info,bastion=debug",
        // The WebSocket and SigV4 crates log requests at debug and trace, and the endpoint's
        // tunnel URL is a credential for 60 s: they stay at info.
        (false, _) => "debug,bastion=trace,tungstenite=info,tokio_tungstenite=info,aws_sigv4=info",
    };
    let filter = EnvFilter::try_from_env("BASTION_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}
