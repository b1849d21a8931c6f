//! The TCP stream to the proxy, acknowledging what it receives at once.
//!
//! OpenSSH's sshd leaves Nagle's algorithm on for a session without a terminal, so the small
//! packets it sends (window adjusts above all: its own, and the head node's it relays) wait in
//! its kernel until everything it sent before is acknowledged. Linux delays an acknowledgement
//! up to 40 ms when it has no data to carry it, which is exactly when bastion, its window used
//! up, waits for that adjust: an upload then stalls 40 ms at a time (seen with tcpdump on the
//! bench lab's proxy: the proxy's adjust leaves the moment bastion's delayed ACK arrives, 39-42 ms
//! after the head node sent it; the laptop's side idle 85% of an upload). Quick-ack mode is not
//! sticky in Linux (the kernel leaves it again on its own), so it is set after every read that
//! brought data. Elsewhere this stream is the plain TCP stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct QuickAck(TcpStream);

impl QuickAck {
    pub fn new(stream: TcpStream) -> QuickAck {
        QuickAck(stream)
    }

    #[cfg(target_os = "linux")]
    fn ack_now(&self) {
        // A failure changes nothing but timing.
        let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
    }

    #[cfg(not(target_os = "linux"))]
    fn ack_now(&self) {}
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.ack_now();
        }
        r
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
