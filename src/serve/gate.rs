//! Waiting for a connection's first request head before hyper sees it.
//!
//! hyper gives each connection 8 KiB of read buffer as soon as a byte
//! arrives, and a few KiB more of state: about 15 KiB a connection, measured
//! here. Clients that trickle a byte every few seconds (slowloris) would
//! then cost that much each for as long as the head timeout lets them stay.
//! Here a connection first waits, with a buffer only as large as what it
//! has sent, for the blank line that ends a request head (or for
//! [`super::MAX_BUF`] bytes, or the end of the stream); only then is it
//! handed to hyper, which reads those bytes again from [`Prefixed`] and
//! parses them itself. Nothing here parses HTTP: it only looks for the end
//! of the head.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Reads from `stream` until a request head is complete (a blank line), the
/// stream ends, or `max` bytes came without one; returns what was read.
/// The caller bounds how long this may take.
pub async fn first_head<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> io::Result<Vec<u8>> {
    let mut head: Vec<u8> = Vec::new();
    loop {
        if head.len() == head.capacity() {
            // Grow with what arrives (doubling from 512 bytes): a trickle
            // stays small.
            head.reserve_exact(head.len().max(512).min(max - head.len()));
        }
        let searched_from = head.len().saturating_sub(3);
        let spare = head.capacity().min(max) - head.len();
        let read = (&mut *stream)
            .take(spare as u64)
            .read_buf(&mut head)
            .await?;
        if read == 0 || ends_head(&head[searched_from..]) || head.len() >= max {
            return Ok(head);
        }
    }
}

/// Whether `bytes` contain the end of a request head: CRLF CRLF, or the
/// bare LF LF that HTTP/1.1 parsers also accept.
fn ends_head(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(2).any(|w| w == b"\n\n")
}

/// A stream that first gives back `prefix` (what [`first_head`] read),
/// then reads on from `inner`; writes go to `inner`.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    /// How much of `prefix` has been given back.
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                // Given back in full: free it.
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn stops_at_the_end_of_the_head_and_gives_everything_back() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n";
        let writer = tokio::spawn(async move {
            // A byte at a time, as a trickling client sends.
            for byte in request {
                client.write_all(&[*byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let head = first_head(&mut server, 16 * 1024).await.unwrap();
        assert!(head.ends_with(b"\r\n\r\n"), "{head:?}");
        assert!(
            head.capacity() <= 512,
            "a trickle took {} bytes",
            head.capacity()
        );
        let _client = writer.await.unwrap();
        let mut replay = Prefixed::new(head, server);
        let mut got = vec![0; request.len()];
        replay.read_exact(&mut got).await.unwrap();
        assert_eq!(got, request);
    }

    #[tokio::test]
    async fn stops_at_the_limit_and_at_the_end_of_the_stream() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[b'a'; 20_000]).await.unwrap();
        let head = first_head(&mut server, 16 * 1024).await.unwrap();
        assert_eq!(head.len(), 16 * 1024);
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET / HT").await.unwrap();
        drop(client);
        assert_eq!(
            first_head(&mut server, 16 * 1024).await.unwrap(),
            b"GET / HT"
        );
    }

    #[test]
    fn head_ends() {
        assert!(ends_head(b"\r\n\r\n"));
        assert!(ends_head(b"x\n\n"));
        assert!(!ends_head(b"GET / HTTP/1.1\r\nHost: x\r\n"));
    }
}
