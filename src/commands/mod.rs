//! One module per subcommand, each an `Args` struct (in `cli`) and a `run`.

pub mod allow;
pub mod config;
pub mod connect;
pub mod dcv;
pub mod doctor;
pub mod down;
pub mod forget;
pub mod policy;
pub mod shell;
pub mod ssh_config;
pub mod status;
pub mod up;
