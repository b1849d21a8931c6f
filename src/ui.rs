//! What the user sees: progress on stderr (a spinner on a terminal, plain lines elsewhere) and
//! results on stdout, as text or JSON. Nothing else in the crate prints.

use std::fmt::Display;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::{GlobalOpts, OutputFormat};

/// Progress of a slow command. On a terminal it is a spinner naming the phase; otherwise (or with
/// --no-progress) each phase is one log line on stderr. `--quiet` shows nothing.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress {
    pub fn new(opts: &GlobalOpts) -> Progress {
        let bar =
            (!opts.quiet && !opts.no_progress && std::io::stderr().is_terminal()).then(|| {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} [{elapsed_precise}] {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            });
        Progress {
            bar,
            quiet: opts.quiet,
        }
    }

    pub fn hidden() -> Progress {
        Progress {
            bar: None,
            quiet: true,
        }
    }

    /// Names the current phase.
    pub fn phase(&self, msg: impl Into<String>) {
        let msg = msg.into();
        match &self.bar {
            Some(bar) => bar.set_message(msg),
            None if !self.quiet => eprintln!("bastion: {msg}"),
            None => {}
        }
    }

    /// A line that stays (a warning, a created resource), printed above the spinner.
    pub fn note(&self, msg: impl Into<String>) {
        let msg = msg.into();
        match &self.bar {
            Some(bar) => bar.println(format!("  {msg}")),
            None if !self.quiet => eprintln!("bastion: {msg}"),
            None => {}
        }
    }

    /// Clears the spinner; call before printing a result or an error.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Prints a command's result on stdout.
pub fn emit<T: Serialize + Display>(format: OutputFormat, value: &T) -> anyhow::Result<()> {
    match format {
        OutputFormat::Text => println!("{value}"),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}
