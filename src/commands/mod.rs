//! One module per subcommand, each an `Args` struct (in `cli`) and a `run`.

pub mod down;
pub mod status;
pub mod up;
