//! A [`Cloud`](crate::aws::Cloud) wrapper that fails the AWS calls `BASTION_FAILPOINT` names (see
//! [`crate::failpoint`] for the syntax): `<op>` is the method name, e.g. `run_instance`,
//! `create_role`, `authorize_ingress#2:after`, `delete_security_group`. Unset, it is inert.

use crate::failpoint::Failpoints;

macro_rules! write_op {
    ($self:ident, $op:literal, $call:expr) => {{
        // Counts this call of `$op`; the mode of the point that fires on it, if any.
        let mode = $self.points.mode_for($op);
        match mode {
            Some($crate::failpoint::Mode::Before) => {
                return Err($crate::aws::AwsError::Injected {
                    action: $op.to_string(),
                });
            }
            Some($crate::failpoint::Mode::Pause) => {
                $crate::failpoint::announce_pause($op);
                tokio::time::sleep(std::time::Duration::from_secs(30)).await
            }
            _ => {}
        }
        let result = $call.await;
        if mode == Some($crate::failpoint::Mode::After) {
            return Err($crate::aws::AwsError::Injected {
                action: $op.to_string(),
            });
        }
        result
    }};
}

mod account;
mod iam;
mod instances;
mod network;

pub struct Faulty<C> {
    inner: C,
    points: &'static Failpoints,
}

impl<C> Faulty<C> {
    pub fn new(inner: C, points: &'static Failpoints) -> Self {
        Faulty { inner, points }
    }
}
