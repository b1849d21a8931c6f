//! Running things on a session: a command (stdout and stderr kept apart, stdin passed, the exit
//! code returned) or an interactive shell (PTY with the caller's TERM and size, raw mode restored
//! on every exit path, window resizes forwarded).

use std::io::IsTerminal;

use russh::ChannelMsg;
use russh::client::Handle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::Verifier;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the session with {what} dropped: {reason}")]
    Dropped { what: String, reason: String },
}

/// The remote side's exit status: its code, or 255 when it ended without one (a signal, a drop).
pub type ExitCode = u8;

fn dropped(what: &str, e: impl std::fmt::Display) -> SessionError {
    SessionError::Dropped {
        what: what.into(),
        reason: e.to_string(),
    }
}

/// Restores the terminal on drop, whatever path leaves the shell.
struct RawMode;

impl RawMode {
    fn enable() -> std::io::Result<RawMode> {
        crossterm::terminal::enable_raw_mode()?;
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Runs `command` (or a shell without PTY when `command` is None), streaming stdin, stdout and
/// stderr; returns the exit code.
pub async fn exec(
    handle: &Handle<Verifier>,
    what: &str,
    command: Option<&str>,
) -> Result<ExitCode, SessionError> {
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| dropped(what, e))?;
    match command {
        Some(c) => channel.exec(true, c).await.map_err(|e| dropped(what, e))?,
        None => channel
            .request_shell(true)
            .await
            .map_err(|e| dropped(what, e))?,
    }
    let (mut rd, wr) = channel.split();
    // stdin is pumped by its own task; the channel is always drained below.
    let stdin_task = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if wr
                        .data_bytes(bytes::Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = wr.eof().await;
    });
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut code = None;
    while let Some(msg) = rd.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                stdout
                    .write_all(&data)
                    .await
                    .map_err(|e| dropped(what, e))?;
                stdout.flush().await.map_err(|e| dropped(what, e))?;
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                stderr
                    .write_all(&data)
                    .await
                    .map_err(|e| dropped(what, e))?;
            }
            ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                tracing::warn!("the remote command was killed by signal {signal_name:?}");
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    stdin_task.abort();
    stdout.flush().await.ok();
    stderr.flush().await.ok();
    if code.is_none() && handle.is_closed() {
        eprintln!("bastion: the connection to {what} was lost");
    }
    Ok(code.map(|c| c.min(255) as u8).unwrap_or(255))
}

/// An interactive shell on a PTY; falls back to [`exec`] without a PTY when stdin is not a terminal.
pub async fn shell(handle: &Handle<Verifier>, what: &str) -> Result<ExitCode, SessionError> {
    if !std::io::stdin().is_terminal() {
        return exec(handle, what, None).await;
    }
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| dropped(what, e))?;
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
    let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
    channel
        .request_pty(true, &term, cols as u32, rows as u32, 0, 0, &[])
        .await
        .map_err(|e| dropped(what, e))?;
    channel
        .request_shell(true)
        .await
        .map_err(|e| dropped(what, e))?;
    let (mut rd, wr) = channel.split();
    let _raw = RawMode::enable().map_err(|e| dropped(what, e))?;

    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(|e| dropped(what, e))?;
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut buf = vec![0u8; 16 * 1024];
    let mut stdin_open = true;
    let mut code = None;
    loop {
        tokio::select! {
            msg = rd.wait() => match msg {
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    stdout.write_all(&data).await.map_err(|e| dropped(what, e))?;
                    stdout.flush().await.map_err(|e| dropped(what, e))?;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => code = Some(exit_status),
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    let _ = wr.eof().await;
                }
                Ok(n) => wr
                    .data_bytes(bytes::Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .map_err(|e| dropped(what, e))?,
            },
            _ = winch.recv() => {
                if let Ok((c, r)) = crossterm::terminal::size() {
                    let _ = wr.window_change(c as u32, r as u32, 0, 0).await;
                }
            }
        }
    }
    if code.is_none() && handle.is_closed() {
        // A shell cannot outlive its link; say so, and exit 255 as ssh does.
        eprint!("\r\nbastion: the connection to {what} was lost\r\n");
    }
    Ok(code.map(|c| c.min(255) as u8).unwrap_or(255))
}

/// Runs `command` without stdin and returns its exit code and its stdout and stderr, merged.
pub async fn capture(
    handle: &Handle<Verifier>,
    what: &str,
    command: &str,
) -> Result<(ExitCode, String), SessionError> {
    let mut channel = handle
        .channel_open_session()
        .await
        .map_err(|e| dropped(what, e))?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| dropped(what, e))?;
    channel.eof().await.map_err(|e| dropped(what, e))?;
    let mut output = Vec::new();
    let mut code = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                output.extend_from_slice(&data)
            }
            ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok((
        code.map(|c| c.min(255) as u8).unwrap_or(255),
        String::from_utf8_lossy(&output).into_owned(),
    ))
}
