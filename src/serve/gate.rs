//! A connection's bytes around hyper: the wait for its first request head,
//! and a deadline on writes to a client that stops reading.
//!
//! hyper gives each connection about 15 KiB (8 KiB of read buffer and its
//! state) as soon as a byte arrives, so clients that trickle a byte every
//! few seconds (slowloris) would each cost that much for as long as the
//! head timeout lets them stay. Here a connection first waits, with a
//! buffer only as large as what it has sent, for the blank line that ends a
//! request head (nothing here parses HTTP); hyper then reads those bytes
//! again from [`Conn`]. And hyper bounds how long a head may take, not how
//! long an answer may wait to be written: a client that pipelines requests
//! and never reads would hold its slot forever, so a write that makes no
//! progress for the given time fails with TimedOut.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    time::Sleep,
};

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

/// `inner` that first gives back `prefix` (what [`first_head`] read), and
/// whose writes fail when blocked for `limit`.
pub struct Conn<S> {
    prefix: Vec<u8>,
    /// How much of `prefix` has been given back.
    at: usize,
    inner: S,
    limit: Duration,
    /// Armed while a write is blocked; cleared by any progress.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S: Unpin> Conn<S> {
    pub fn new(prefix: Vec<u8>, inner: S, limit: Duration) -> Conn<S> {
        Conn {
            prefix,
            at: 0,
            inner,
            limit,
            timer: None,
        }
    }

    /// Runs a write operation on the inner stream: progress disarms the
    /// timer, a block arms it (once) and fails when it fires.
    fn watched<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let poll = op(Pin::new(&mut self.inner), cx);
        if poll.is_ready() {
            self.timer = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        let stopped = io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading");
        Poll::Ready(Err(stopped))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
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

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().watched(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .watched(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().watched(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().watched(cx, |io, cx| io.poll_shutdown(cx))
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
        let mut replay = Conn::new(head, server, Duration::from_secs(10));
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

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_never_reads_times_out() {
        let (client, _server) = tokio::io::duplex(16);
        let mut stream = Conn::new(Vec::new(), client, Duration::from_secs(10));
        let err = stream.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_keeps_the_connection() {
        let (client, mut server) = tokio::io::duplex(16);
        let mut stream = Conn::new(Vec::new(), client, Duration::from_secs(10));
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut sink)
                .await
                .unwrap();
            sink.len()
        });
        stream.write_all(&[1; 4096]).await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
        assert_eq!(reader.await.unwrap(), 4096);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_but_steady_progress_is_not_a_stall() {
        // Each 16-byte read comes 6 s after the last: no single wait reaches
        // the 10 s limit, though the whole write takes 24 s.
        let (client, mut server) = tokio::io::duplex(16);
        let mut stream = Conn::new(Vec::new(), client, Duration::from_secs(10));
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0; 16];
            loop {
                tokio::time::sleep(Duration::from_secs(6)).await;
                match tokio::io::AsyncReadExt::read(&mut server, &mut buf)
                    .await
                    .unwrap()
                {
                    0 => return got,
                    n => got += n,
                }
            }
        });
        stream.write_all(&[7; 64]).await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
        assert_eq!(reader.await.unwrap(), 64);
    }
}
