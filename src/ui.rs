//! What the user sees: progress on stderr (a spinner on a terminal, plain lines elsewhere), the
//! lines about a running session (`Progress::say`), and results on stdout, as text or JSON
//! (`emit`, `print_text`, `print_bytes`). `--quiet` silences all but results and errors.
//!
//! What prints elsewhere, and why: `main.rs` the final error; `ssh/session.rs` the remote's own
//! output, and the loss of a shell's connection in the terminal's raw mode (the `ssh` wing
//! imports nothing of the crate's); the `--dcv` status line, which rewrites itself with `\r` on a
//! terminal and is off with `--quiet`; `man --dir`'s one line, before there is any context.

use std::fmt::Display;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// How results are printed on stdout: `--output text` (the default) or `--output json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Progress of a slow command. On a terminal it is a spinner naming the phase; otherwise (or with
/// --no-progress) each phase is one log line on stderr. `--quiet` shows nothing.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress {
    /// `quiet`: nothing at all; `no_progress`: plain lines even on a terminal.
    pub fn new(quiet: bool, no_progress: bool) -> Progress {
        let bar = (!quiet && !no_progress && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar, quiet }
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

    /// A line about a running session (a forward, a lost connection, a reconnect) once the
    /// spinner is gone: `bastion: <msg>` on stderr. `--quiet` shows nothing.
    pub fn say(&self, msg: impl Display) {
        if !self.quiet {
            eprintln!("bastion: {msg}");
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

/// Prints a result that is already text (a policy document, a URL, a list of names) on stdout.
pub fn print_text(text: impl Display) {
    println!("{text}");
}

/// Writes a result that is bytes as they are (a completion script, a manual page) on stdout.
pub fn print_bytes(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::io::stdout().write_all(bytes)
}

/// `text` made safe to show on a terminal: control characters (C0, DEL and C1: `U+009B` is
/// read by terminals as `ESC [`) and the bidirectional overrides that reorder what is shown are
/// written as `\u{..}` escapes. For what AWS or a remote host says (tags, logs), never for
/// bastion's own text.
pub fn printable(text: &str) -> String {
    escape(text, false)
}

/// As [`printable`], keeping line breaks and tabs (a log's tail).
pub fn printable_lines(text: &str) -> String {
    escape(text, true)
}

fn escape(text: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let layout = keep_lines && matches!(c, '\n' | '\t');
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && !layout) || bidi {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("ready"), "ready");
        assert_eq!(printable("a\u{9b}31mb"), "a\\u{9b}31mb");
        assert_eq!(printable("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\u{a}");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(printable_lines("l1\n\tl2\u{7}"), "l1\n\tl2\\u{7}");
    }
}
