//! The byte stream that carries the head node's SSH session inside a channel of the proxy's.
//!
//! russh's `Channel::into_stream` reads the channel only when the inner session reads. The inner
//! session reads and writes in one task: while it waits for window to write, it stops reading, the
//! proxy session then blocks delivering to this channel's bounded queue, and can no longer process
//! the window adjust the writer waits for. Deadlock (seen with 50 concurrent forwards of 1 MiB).
//! Here a task drains the channel continuously, so the proxy session never blocks on it; what it
//! buffers is bounded by the windows the inner session grants.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use russh::ChannelMsg;
use russh::client::Msg;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

pub struct Tunnel {
    rx: mpsc::UnboundedReceiver<Bytes>,
    pending: Bytes,
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    _drain: tokio::task::JoinHandle<()>,
    _write_half: russh::ChannelWriteHalf<Msg>,
}

impl Tunnel {
    pub fn new(channel: russh::Channel<Msg>) -> Tunnel {
        let (mut rd, wr) = channel.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let drain = tokio::spawn(async move {
            while let Some(msg) = rd.wait().await {
                let data = match msg {
                    ChannelMsg::Data { data } => data,
                    ChannelMsg::Eof | ChannelMsg::Close => break,
                    _ => continue,
                };
                if tx.send(data).is_err() {
                    break;
                }
            }
        });
        Tunnel {
            rx,
            pending: Bytes::new(),
            writer: Box::pin(wr.make_writer()),
            _drain: drain,
            _write_half: wr,
        }
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.pending.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => self.pending = b,
                Poll::Ready(None) => return Poll::Ready(Ok(())), // EOF
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self._drain.abort();
    }
}
