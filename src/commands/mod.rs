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

use crate::cli::RouteArgs;
use crate::route::RouteOptions;

/// The route flags as `route` takes them; the other options at their defaults.
fn route_options(r: &RouteArgs) -> RouteOptions {
    RouteOptions {
        user: r.user.clone(),
        identity: r.identity.clone(),
        bastion_user: r.bastion_user.clone(),
        bastion_address: r.bastion_address.clone(),
        via: r.via.as_deref().and_then(|v| v.parse().ok()),
        ..RouteOptions::default()
    }
}
