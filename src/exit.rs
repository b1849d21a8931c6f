//! Exit statuses, as the README's "Exit status" lists them. Each error type that decides one says
//! so beside its definition, by implementing [`ExitStatus`]; `lib.rs::exit_code` finds the first
//! such error in a chain. An error that says nothing exits with [`FAILED`].

/// The operation failed.
pub const FAILED: u8 = 1;
/// Invalid input: a bad flag or config value, an unknown cluster, no public subnet.
pub const INVALID: u8 = 2;
/// AWS credentials or permissions: the user's to fix.
pub const DENIED: u8 = 3;
/// Local state: the state dir or the ledger cannot be written or read.
pub const LOCAL_STATE: u8 = 4;
/// Interrupted (Ctrl-C): 128 + SIGINT.
pub const INTERRUPTED: u8 = 130;

/// The exit status an error stands for.
pub trait ExitStatus {
    /// The status; None: this error does not decide it (the next cause in the chain may).
    fn exit_status(&self) -> Option<u8>;

    /// An error this one carries without making it its source (its message already holds that
    /// error's), whose status is this one's.
    fn carries(&self) -> Option<&anyhow::Error> {
        None
    }
}
