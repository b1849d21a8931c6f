//! Test-only fault injection, so tests can prove that a failure at any step (of `up`, of its
//! rollback, of `down`) leaves nothing behind and says what it left. Unset, every point is inert.
//!
//! `BASTION_FAILPOINT=<point>[#N][:after|:pause][,<point>...]`:
//! - `<point>` is an AWS call (the `Cloud` method name: `run_instance`, `create_role`,
//!   `delete_security_group`, ...; see `aws::faults`) or a local step: `generate_key` (the proxy's
//!   key files) and `ledger_save` (every write of the ledger).
//! - `#N` fires on the Nth call of that point only (1-based), every call otherwise.
//! - no mode fails before the work; `:after` does the work, then fails (a lost response: the
//!   resource exists but the caller never learns it); `:pause` sleeps 30 s before an AWS call
//!   (tests interrupt `up` there; local steps ignore it), first writing the point's name to the
//!   file `BASTION_FAILPOINT_PAUSED` names, if any.
//!
//! Several points, comma-separated, each count their own calls: `run_instance,delete_role` fails
//! the launch and then the rollback's removal of the role.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Before,
    After,
    Pause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failpoint {
    pub op: String,
    pub mode: Mode,
    /// Fire on this call of `op` only (1-based); on every call when None.
    pub nth: Option<u32>,
}

impl Failpoint {
    /// One point; None for an empty or malformed spec (a malformed one is warned about by
    /// [`Failpoints::parse`]).
    pub fn parse(spec: &str) -> Option<Failpoint> {
        let spec = spec.trim();
        if spec.is_empty() {
            return None;
        }
        let (op, mode) = match spec.split_once(':') {
            Some((op, "after")) => (op, Mode::After),
            Some((op, "pause")) => (op, Mode::Pause),
            Some((op, "")) => (op, Mode::Before),
            Some(_) => return None,
            None => (spec, Mode::Before),
        };
        let (op, nth) = match op.split_once('#') {
            Some((op, n)) => (op, Some(n.parse().ok().filter(|&n| n > 0)?)),
            None => (op, None),
        };
        let well_formed = !op.is_empty() && op.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        well_formed.then(|| Failpoint {
            op: op.to_string(),
            mode,
            nth,
        })
    }
}

/// The points in effect, each with its own count of calls.
#[derive(Debug, Default)]
pub struct Failpoints {
    points: Vec<(Failpoint, AtomicU32)>,
}

impl Failpoints {
    pub fn parse(spec: &str) -> Failpoints {
        let mut points = Vec::new();
        for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
            match Failpoint::parse(part) {
                Some(f) => points.push((f, AtomicU32::new(0))),
                // A typo must not pass for a step that cannot fail.
                None => tracing::warn!("BASTION_FAILPOINT: ignoring malformed point '{part}'"),
            }
        }
        Failpoints { points }
    }

    pub fn from_env() -> Failpoints {
        std::env::var("BASTION_FAILPOINT")
            .map(|s| Failpoints::parse(&s))
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Counts a call of `op`; the mode of the first point that fires on this call.
    pub fn mode_for(&self, op: &str) -> Option<Mode> {
        let mut fired = None;
        for (f, calls) in self.points.iter().filter(|(f, _)| f.op == op) {
            let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
            if fired.is_none() && f.nth.is_none_or(|nth| nth == n) {
                fired = Some(f.mode);
            }
        }
        fired
    }
}

/// The process's points, read from the environment once.
pub fn global() -> &'static Failpoints {
    static POINTS: OnceLock<Failpoints> = OnceLock::new();
    POINTS.get_or_init(Failpoints::from_env)
}

/// Says that a `:pause` point is holding its call (the point's name, written to the file
/// `BASTION_FAILPOINT_PAUSED` names), so a test acts on the pause, not on a guess at its time.
pub fn announce_pause(op: &str) {
    if let Some(file) = std::env::var_os("BASTION_FAILPOINT_PAUSED") {
        let _ = std::fs::write(file, op);
    }
}

/// The error a local step reports when its point fires.
pub fn injected(op: &str) -> std::io::Error {
    std::io::Error::other(format!("{op}: injected failure (BASTION_FAILPOINT)"))
}

/// Runs a local step through its point: `work` is skipped (before) or its result replaced by
/// the injected error, made into the step's own error type by `as_error` (after). `:pause` is
/// for AWS calls only and changes nothing here.
pub fn local<T, E>(
    op: &str,
    work: impl FnOnce() -> Result<T, E>,
    as_error: impl FnOnce(std::io::Error) -> E,
) -> Result<T, E> {
    match global().mode_for(op) {
        Some(Mode::Before) => Err(as_error(injected(op))),
        Some(Mode::After) => {
            work()?;
            Err(as_error(injected(op)))
        }
        Some(Mode::Pause) | None => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points() {
        let f = Failpoint::parse("run_instance").unwrap();
        assert_eq!((f.op.as_str(), f.mode), ("run_instance", Mode::Before));
        let f = Failpoint::parse("create_role:after").unwrap();
        assert_eq!((f.op.as_str(), f.mode), ("create_role", Mode::After));
        let f = Failpoint::parse("import_key_pair:pause").unwrap();
        assert_eq!(f.mode, Mode::Pause);
        assert!(Failpoint::parse("  ").is_none());
        let f = Failpoint::parse("authorize_ingress#2:after").unwrap();
        assert_eq!(
            (f.op.as_str(), f.mode, f.nth),
            ("authorize_ingress", Mode::After, Some(2))
        );
        for bad in [
            "authorize_ingress#x",
            "authorize_ingress#0",
            "run_instance:later",
            "Run",
        ] {
            assert!(Failpoint::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn each_point_counts_its_own_calls() {
        let p = Failpoints::parse("put_role_policy#2, delete_role:after ,ledger_save#1");
        assert_eq!(p.mode_for("put_role_policy"), None);
        assert_eq!(p.mode_for("put_role_policy"), Some(Mode::Before));
        assert_eq!(p.mode_for("put_role_policy"), None);
        assert_eq!(p.mode_for("delete_role"), Some(Mode::After));
        assert_eq!(p.mode_for("delete_role"), Some(Mode::After));
        assert_eq!(p.mode_for("ledger_save"), Some(Mode::Before));
        assert_eq!(p.mode_for("ledger_save"), None);
        assert_eq!(p.mode_for("run_instance"), None);
        assert!(Failpoints::parse("").is_empty());
    }
}
