//! SSH with russh: one native client, no `ssh` binary needed. `client` connects and verifies,
//! `known_hosts` pins, `session` runs commands and shells, `forward` carries `-L` ports.

pub mod client;
pub mod forward;
pub mod known_hosts;
pub mod quickack;
pub mod session;
pub mod tunnel;
