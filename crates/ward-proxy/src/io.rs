//! Connection wrappers: replaying bytes read ahead for protocol detection, and noticing idleness.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What a connection speaks, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// HTTP/1.x or HTTP/2.
    Http,
    /// Anything else.
    Tcp,
}

/// HTTP methods a request line may start with.
const METHODS: [&[u8]; 9] =
    [b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];
/// How long detection waits for the client's first bytes; a protocol where the server speaks first is TCP.
const DETECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Reads the first bytes of `io` (up to half a second) and tells whether it is HTTP; the bytes
/// are replayed by the returned connection.
pub async fn detect<IO: AsyncRead + Unpin>(mut io: IO) -> io::Result<(Detected, Prefixed<IO>)> {
    let mut buf = vec![0u8; 24];
    let mut filled = 0;
    let deadline = tokio::time::Instant::now() + DETECT_TIMEOUT;
    while filled < buf.len() {
        match tokio::time::timeout_at(deadline, io.read(&mut buf[filled..])).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => filled += n,
            Ok(Err(e)) => return Err(e),
        }
        if looks_like(&buf[..filled]).is_some() {
            break;
        }
    }
    buf.truncate(filled);
    let detected = looks_like(&buf).unwrap_or(Detected::Tcp);
    Ok((detected, Prefixed::new(Bytes::from(buf), io)))
}

/// `Some` once the bytes decide.
fn looks_like(bytes: &[u8]) -> Option<Detected> {
    const H2: &[u8] = b"PRI * HTTP/2.0";
    if bytes.starts_with(H2) || METHODS.iter().any(|m| bytes.starts_with(m)) {
        return Some(Detected::Http);
    }
    let could_still_be = |prefix: &[u8]| prefix.starts_with(bytes);
    if could_still_be(H2) || METHODS.iter().any(|m| could_still_be(m)) { None } else { Some(Detected::Tcp) }
}

/// A connection whose first bytes were already read and are given back first.
pub struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Prefixed<IO> {
    /// `io`, with `prefix` read before it.
    pub fn new(prefix: Bytes, io: IO) -> Self {
        Prefixed { prefix, io }
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// When a connection last moved a byte, shared with whoever watches it for idleness.
#[derive(Clone)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// Activity starting now.
    pub fn new() -> Self {
        Activity { start: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }

    /// Records that a byte moved now.
    pub fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the last byte.
    pub fn idle_for(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Completes once nothing moved for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }
}

/// A connection that records its activity and counts its bytes.
pub struct Counted<IO> {
    io: IO,
    activity: Activity,
    /// Bytes read from the peer.
    pub read: u64,
    /// Bytes written to the peer.
    pub written: u64,
}

impl<IO> Counted<IO> {
    /// Wraps `io`, reporting to `activity`.
    pub fn new(io: IO, activity: Activity) -> Self {
        Counted { io, activity, read: 0, written: 0 }
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read += n as u64;
            self.activity.touch();
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            self.written += n as u64;
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            self.written += n as u64;
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_http_by_its_first_bytes() {
        let cases: &[(&[u8], Option<Detected>)] = &[
            (b"GET / HTTP/1.1", Some(Detected::Http)),
            (b"PRI * HTTP/2.0\r\n", Some(Detected::Http)),
            (b"DELETE /x", Some(Detected::Http)),
            (b"GE", None),
            (b"", None),
            (b"\x16\x03\x01", Some(Detected::Tcp)),
            (b"SSH-2.0-OpenSSH", Some(Detected::Tcp)),
            (b"GETX", Some(Detected::Tcp)),
        ];
        for (bytes, want) in cases {
            assert_eq!(looks_like(bytes), *want, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[tokio::test]
    async fn replays_what_detection_read() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"POST /a HTTP/1.1\r\n\r\n").await.unwrap();
        drop(client);
        let (detected, mut io) = detect(server).await.unwrap();
        assert_eq!(detected, Detected::Http);
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "POST /a HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_silent_client_is_tcp() {
        let (_client, server) = tokio::io::duplex(64);
        let (detected, _) = detect(server).await.unwrap();
        assert_eq!(detected, Detected::Tcp);
    }
}
