//! The request-framing guard in front of every server connection. It reads each HTTP/1
//! request head before the HTTP server does and refuses what two HTTP parsers could frame
//! differently: both Content-Length and Transfer-Encoding, differing Content-Lengths, a
//! Transfer-Encoding whose last coding is not `chunked`, malformed chunks, oversized heads. A
//! refused request gets a 400 (or 431) written by the guard itself, and the connection closes,
//! so nothing behind the server ever sees it.
//!
//! The guard follows the framing of every request on the connection (Content-Length bodies,
//! chunked bodies and their trailers), so the second request of a keep-alive connection is
//! checked like the first. Each byte is looked at a bounded number of times however the client
//! splits its writes: a search for the end of a head resumes where the last one stopped.
//!
//! A request that offers to switch protocols (an `Upgrade` request, or CONNECT) holds what
//! follows it until the server answers: the service wrapper of [`crate::server`] tells the
//! guard through an [`UpgradeSignal`] whether the answer switched (`101`, or `2xx` to CONNECT,
//! after which bytes pass untouched) or not (HTTP/1 checks resume).
//!
//! Head timeouts: an HTTP/1 head must arrive whole within the head timeout, counted from the
//! connection's start for the first request and from its first byte for the others (slowloris
//! gets a 408). HTTP/2 frames pass untouched, but the guard reads their 9-byte frame headers:
//! the preface must arrive within the head timeout, and so must every header block from its
//! HEADERS frame to the CONTINUATION that ends it. Hyper's HTTP/2 server has no such timeout of
//! its own; a connection that keeps a header block open longer is ended (read error), which
//! frees it long before any idle timeout would.

use std::{
    future::Future,
    io,
    mem::MaybeUninit,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Buf, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

use crate::Limits;

/// The client preface of HTTP/2 (prior knowledge or after ALPN).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest chunk-size line accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Why a request was refused, and with which status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct Refusal {
    /// 400, 408 or 431.
    pub status: u16,
    /// Said in the response body and the log.
    pub reason: String,
}

impl Refusal {
    fn bad(reason: impl Into<String>) -> Self {
        Refusal { status: 400, reason: reason.into() }
    }

    /// The response the guard writes.
    fn response(&self) -> Vec<u8> {
        let phrase = match self.status {
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        };
        let body = format!("{}\n", self.reason);
        format!(
            "HTTP/1.1 {} {phrase}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

/// Where the reader is in the stream of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first bytes: HTTP/2 or HTTP/1.
    Start,
    /// Reading a request head.
    Head,
    /// Inside a Content-Length body: bytes left.
    Body(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk: bytes left, then CRLF.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// Reading trailer lines after the last chunk.
    Trailers,
    /// After a request offering to switch protocols, until the server answers it.
    UpgradeOffered,
    /// HTTP/2: frames pass, header blocks are timed.
    Http2(Http2Frames),
    /// Switched to another protocol: bytes pass untouched.
    Passthrough,
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// What a checked request head says about the bytes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CheckedHead {
    body: BodyFraming,
    offers_upgrade: bool,
}

/// HTTP/2 frame type HEADERS.
const FRAME_HEADERS: u8 = 0x1;
/// HTTP/2 frame type PUSH_PROMISE (a header block too, though clients never send it).
const FRAME_PUSH_PROMISE: u8 = 0x5;
/// HTTP/2 frame type CONTINUATION.
const FRAME_CONTINUATION: u8 = 0x9;
/// The END_HEADERS flag.
const END_HEADERS: u8 = 0x4;

/// Follows HTTP/2 frame boundaries to know when a header block is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Http2Frames {
    /// The current frame header as far as received.
    header: [u8; 9],
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// Whether the current frame carries part of a header block.
    header_frame: bool,
    /// A header block was begun and its END_HEADERS has not arrived.
    block_open: bool,
}

impl Http2Frames {
    fn pass(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len() as u64);
                self.payload_left -= n;
                data = &data[n as usize..];
                continue;
            }
            let n = (9 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == 9 {
                self.header_len = 0;
                let [l0, l1, l2, kind, flags, ..] = self.header;
                self.payload_left = u64::from(u32::from_be_bytes([0, l0, l1, l2]));
                self.header_frame = matches!(kind, FRAME_HEADERS | FRAME_PUSH_PROMISE | FRAME_CONTINUATION);
                let ends = flags & END_HEADERS != 0;
                match kind {
                    FRAME_HEADERS | FRAME_PUSH_PROMISE => self.block_open = !ends,
                    FRAME_CONTINUATION if ends => self.block_open = false,
                    _ => {}
                }
            }
        }
    }

    fn head_pending(&self) -> bool {
        self.block_open || (self.header_frame && self.payload_left > 0)
    }
}

/// Follows request framing over the bytes of one connection.
#[derive(Debug)]
pub struct Framing {
    stage: Stage,
    held: BytesMut,
    /// How far into `held` a delimiter was already looked for.
    scanned: usize,
    /// Bytes looked at while searching for delimiters, over the connection's life.
    examined: u64,
    /// The request being read offers to switch protocols.
    offered: bool,
    max_head_bytes: usize,
    max_headers: usize,
}

impl Framing {
    /// A connection's framing with these head limits.
    pub fn new(max_head_bytes: usize, max_headers: usize) -> Self {
        Framing {
            stage: Stage::Start,
            held: BytesMut::new(),
            scanned: 0,
            examined: 0,
            offered: false,
            max_head_bytes,
            max_headers,
        }
    }

    /// Takes bytes read from the client; returns those now checked, to pass on, or the refusal.
    pub fn feed(&mut self, data: &[u8]) -> Result<BytesMut, Refusal> {
        self.held.extend_from_slice(data);
        self.advance()
    }

    /// The server answered the request that offered to switch protocols: `switched` or not.
    /// Returns the bytes held since, now checked.
    pub fn upgrade_answered(&mut self, switched: bool) -> Result<BytesMut, Refusal> {
        if self.stage == Stage::UpgradeOffered {
            self.stage = if switched { Stage::Passthrough } else { Stage::Head };
        }
        self.advance()
    }

    /// Whether the guard waits for the server's answer to an upgrade offer.
    pub fn awaits_upgrade_answer(&self) -> bool {
        self.stage == Stage::UpgradeOffered
    }

    /// Whether a request head (HTTP/1) or header block (HTTP/2) has begun and not yet ended;
    /// the first one begins with the connection.
    pub fn head_pending(&self) -> bool {
        match self.stage {
            Stage::Start => true,
            Stage::Head => !self.held.is_empty(),
            Stage::Http2(frames) => frames.head_pending(),
            _ => false,
        }
    }

    /// Whether the connection speaks HTTP/2.
    pub fn is_http2(&self) -> bool {
        matches!(self.stage, Stage::Http2(_))
    }

    /// Bytes looked at while searching for the ends of heads and lines, over the connection's
    /// life: linear in what the client sent, however it split its writes.
    pub fn bytes_examined(&self) -> u64 {
        self.examined
    }

    fn advance(&mut self) -> Result<BytesMut, Refusal> {
        let mut out = BytesMut::new();
        loop {
            match self.stage {
                Stage::Start => {
                    let n = self.held.len().min(H2_PREFACE.len());
                    if self.held[..n] != H2_PREFACE[..n] {
                        self.stage = Stage::Head;
                    } else if n == H2_PREFACE.len() {
                        out.unsplit(self.take(n));
                        self.stage = Stage::Http2(Http2Frames::default());
                    } else {
                        break;
                    }
                }
                Stage::Head => {
                    // Blank lines between requests are allowed (RFC 9112, 2.2).
                    while self.held.starts_with(b"\r\n") {
                        out.unsplit(self.take(2));
                    }
                    let Some(end) = self.find(b"\r\n\r\n") else {
                        if self.held.len() > self.max_head_bytes {
                            return Err(too_large(self.max_head_bytes));
                        }
                        break;
                    };
                    if end + 4 > self.max_head_bytes {
                        return Err(too_large(self.max_head_bytes));
                    }
                    let head = check_head(&self.held[..end + 4], self.max_headers)?;
                    out.unsplit(self.take(end + 4));
                    self.offered = head.offers_upgrade;
                    self.stage = match head.body {
                        BodyFraming::None => self.message_end(),
                        BodyFraming::Length(n) => Stage::Body(n),
                        BodyFraming::Chunked => Stage::ChunkSize,
                    };
                }
                Stage::Body(left) => {
                    let n = left.min(self.held.len() as u64);
                    out.unsplit(self.take(n as usize));
                    if left > n {
                        self.stage = Stage::Body(left - n);
                        break;
                    }
                    self.stage = self.message_end();
                }
                Stage::ChunkSize => {
                    let Some(end) = self.find(b"\r\n") else {
                        if self.held.len() > MAX_CHUNK_LINE {
                            return Err(Refusal::bad("chunk-size line too long"));
                        }
                        break;
                    };
                    // The same limit when the whole line arrived in one read.
                    if end + 2 > MAX_CHUNK_LINE {
                        return Err(Refusal::bad("chunk-size line too long"));
                    }
                    let size = chunk_size(&self.held[..end])?;
                    out.unsplit(self.take(end + 2));
                    self.stage = if size == 0 { Stage::Trailers } else { Stage::ChunkData(size) };
                }
                Stage::ChunkData(left) => {
                    let n = left.min(self.held.len() as u64);
                    out.unsplit(self.take(n as usize));
                    if left > n {
                        self.stage = Stage::ChunkData(left - n);
                        break;
                    }
                    self.stage = Stage::ChunkEnd;
                }
                Stage::ChunkEnd => {
                    if self.held.len() < 2 {
                        break;
                    }
                    if &self.held[..2] != b"\r\n" {
                        return Err(Refusal::bad("chunk data is not followed by CRLF"));
                    }
                    out.unsplit(self.take(2));
                    self.stage = Stage::ChunkSize;
                }
                Stage::Trailers => {
                    let Some(end) = self.find(b"\r\n") else {
                        if self.held.len() > self.max_head_bytes {
                            return Err(too_large(self.max_head_bytes));
                        }
                        break;
                    };
                    if end + 2 > self.max_head_bytes {
                        return Err(too_large(self.max_head_bytes));
                    }
                    out.unsplit(self.take(end + 2));
                    if end == 0 {
                        self.stage = self.message_end();
                    }
                }
                Stage::UpgradeOffered => break,
                Stage::Http2(mut frames) => {
                    let bytes = self.take(self.held.len());
                    frames.pass(&bytes);
                    self.stage = Stage::Http2(frames);
                    out.unsplit(bytes);
                    break;
                }
                Stage::Passthrough => {
                    out.unsplit(self.take(self.held.len()));
                    break;
                }
            }
            if self.held.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    /// The stage after a whole request: the next head, or the server's answer to an upgrade offer.
    fn message_end(&mut self) -> Stage {
        if std::mem::take(&mut self.offered) { Stage::UpgradeOffered } else { Stage::Head }
    }

    /// The first `n` held bytes, now passed on.
    fn take(&mut self, n: usize) -> BytesMut {
        self.scanned = 0;
        self.held.split_to(n)
    }

    /// Where `needle` starts in the held bytes, resuming the search where the last one stopped.
    fn find(&mut self, needle: &[u8]) -> Option<usize> {
        let from = self.scanned.saturating_sub(needle.len() - 1);
        self.examined += (self.held.len() - from) as u64;
        let found = self.held[from..].windows(needle.len()).position(|w| w == needle).map(|i| from + i);
        if found.is_none() {
            self.scanned = self.held.len();
        }
        found
    }
}

fn too_large(max: usize) -> Refusal {
    Refusal { status: 431, reason: format!("request head larger than {max} bytes") }
}

/// Whether a request with this method and these headers offers to switch protocols: CONNECT,
/// or an `Upgrade` header that `Connection` lists.
pub fn offers_upgrade<'a>(method: &str, headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> bool {
    let (mut upgrade, mut connection_lists_it) = (false, false);
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        } else if name.eq_ignore_ascii_case("connection") {
            connection_lists_it |= value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        }
    }
    method.eq_ignore_ascii_case("CONNECT") || (upgrade && connection_lists_it)
}

/// Checks one request head; how its body is framed.
fn check_head(head: &[u8], max_headers: usize) -> Result<CheckedHead, Refusal> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        // A bare LF ended the head early (httparse, and so the server, ends a head at LF LF):
        // what follows would be read as another request, unchecked.
        Ok(httparse::Status::Complete(_)) => return Err(Refusal::bad("request head ends with a bare LF")),
        Ok(httparse::Status::Partial) => return Err(Refusal::bad("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal { status: 431, reason: format!("more than {max_headers} request headers") });
        }
        Err(e) => return Err(Refusal::bad(format!("malformed request head: {e}"))),
    }
    let mut content_length: Option<u64> = None;
    let mut transfer_codings: Vec<String> = Vec::new();
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value).map_err(|_| Refusal::bad("Content-Length is not text"))?;
            for part in value.split(',') {
                let n: u64 = part
                    .trim()
                    .parse()
                    .ok()
                    .filter(|_| !part.trim().is_empty() && part.trim().bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| Refusal::bad(format!("invalid Content-Length {value:?}")))?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(Refusal::bad("conflicting Content-Length values"));
                }
                content_length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = std::str::from_utf8(h.value).map_err(|_| Refusal::bad("Transfer-Encoding is not text"))?;
            transfer_codings.extend(value.split(',').map(|c| c.trim().to_ascii_lowercase()));
        }
    }
    let offers_upgrade =
        offers_upgrade(request.method.unwrap_or_default(), request.headers.iter().map(|h| (h.name, h.value)));
    let is_http11 = request.version == Some(1);
    let body = match (content_length, transfer_codings.is_empty()) {
        (Some(_), false) => {
            return Err(Refusal::bad("both Content-Length and Transfer-Encoding: refused (request smuggling)"));
        }
        (_, false) if !is_http11 => return Err(Refusal::bad("Transfer-Encoding in an HTTP/1.0 request")),
        (_, false) => {
            let chunked_last = transfer_codings.last().is_some_and(|c| c == "chunked");
            let chunked_once = transfer_codings.iter().filter(|c| *c == "chunked").count() == 1;
            if !(chunked_last && chunked_once) {
                let codings = transfer_codings.join(", ");
                return Err(Refusal::bad(format!("unsupported Transfer-Encoding {codings:?}")));
            }
            BodyFraming::Chunked
        }
        (Some(0) | None, true) => BodyFraming::None,
        (Some(n), true) => BodyFraming::Length(n),
    };
    Ok(CheckedHead { body, offers_upgrade })
}

/// The size of a chunk from its size line (extensions ignored).
fn chunk_size(line: &[u8]) -> Result<u64, Refusal> {
    let text = std::str::from_utf8(line).map_err(|_| Refusal::bad("chunk-size line is not text"))?;
    let digits = text.split(';').next().unwrap_or("").trim_end_matches([' ', '\t']);
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Refusal::bad(format!("invalid chunk size {digits:?}")));
    }
    u64::from_str_radix(digits, 16).map_err(|_| Refusal::bad(format!("invalid chunk size {digits:?}")))
}

/// The server's answer to a request that offered to switch protocols, passed from the
/// service to the guard of its connection.
#[derive(Debug, Clone, Default)]
pub struct UpgradeSignal(Arc<SignalState>);

#[derive(Debug, Default)]
struct SignalState {
    answer: AtomicU8,
    waker: AtomicWaker,
}

const UNANSWERED: u8 = 0;
const SWITCHED: u8 = 1;
const DECLINED: u8 = 2;

impl UpgradeSignal {
    /// Tells the guard whether the connection switched protocols.
    pub fn answer(&self, switched: bool) {
        self.0.answer.store(if switched { SWITCHED } else { DECLINED }, Ordering::Release);
        self.0.waker.wake();
    }

    /// The answer once given (and forgotten, ready for the next offer).
    fn poll_answer(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.0.waker.register(cx.waker());
        match self.0.answer.swap(UNANSWERED, Ordering::AcqRel) {
            UNANSWERED => Poll::Pending,
            answer => Poll::Ready(answer == SWITCHED),
        }
    }
}

/// A server connection behind the framing guard.
pub struct FramingGuard<IO> {
    io: IO,
    framing: Framing,
    upgrades: UpgradeSignal,
    checked: BytesMut,
    refusal: Option<(Vec<u8>, usize)>,
    head_timeout: Duration,
    head_deadline: Option<Pin<Box<Sleep>>>,
}

impl<IO> FramingGuard<IO> {
    /// Guards `io` with the head limits of `limits`; the server answers upgrade offers through
    /// the returned signal.
    pub fn new(io: IO, limits: &Limits) -> (Self, UpgradeSignal) {
        let upgrades = UpgradeSignal::default();
        let guard = FramingGuard {
            io,
            framing: Framing::new(limits.max_header_bytes, limits.max_headers),
            upgrades: upgrades.clone(),
            checked: BytesMut::new(),
            refusal: None,
            head_timeout: limits.header_read_timeout,
            head_deadline: Some(Box::pin(tokio::time::sleep(limits.header_read_timeout))),
        };
        (guard, upgrades)
    }

    /// The guarded connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn refuse(&mut self, refusal: Refusal) {
        tracing::warn!(status = refusal.status, reason = %refusal.reason, "HTTP request refused before reaching the server");
        self.refusal = Some((refusal.response(), 0));
    }

    fn checked(&mut self, result: Result<BytesMut, Refusal>) {
        match result {
            Ok(checked) => self.checked = checked,
            Err(refusal) => self.refuse(refusal),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if let Some((response, written)) = &mut this.refusal {
                while *written < response.len() {
                    let n = ready!(Pin::new(&mut this.io).poll_write(cx, &response[*written..]))?;
                    if n == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    *written += n;
                }
                ready!(Pin::new(&mut this.io).poll_flush(cx))?;
                let _ = Pin::new(&mut this.io).poll_shutdown(cx);
                return Poll::Ready(Ok(()));
            }
            if !this.checked.is_empty() {
                let n = this.checked.len().min(buf.remaining());
                buf.put_slice(&this.checked[..n]);
                this.checked.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.framing.awaits_upgrade_answer() {
                let switched = ready!(this.upgrades.poll_answer(cx));
                let result = this.framing.upgrade_answered(switched);
                this.checked(result);
                continue;
            }
            if let Some(deadline) = &mut this.head_deadline
                && deadline.as_mut().poll(cx).is_ready()
            {
                if this.framing.is_http2() {
                    tracing::warn!(timeout = ?this.head_timeout, "HTTP/2 header block not completed in time: connection closed");
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "header block timed out")));
                }
                let reason = format!("request head not received within {:?}", this.head_timeout);
                this.refuse(Refusal { status: 408, reason });
                continue;
            }
            let mut scratch = [MaybeUninit::<u8>::uninit(); 8192];
            let mut read = ReadBuf::uninit(&mut scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            let result = this.framing.feed(read.filled());
            this.checked(result);
            match (this.framing.head_pending(), this.head_deadline.is_some()) {
                (true, false) => this.head_deadline = Some(Box::pin(tokio::time::sleep(this.head_timeout))),
                (false, true) => this.head_deadline = None,
                _ => {}
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stream: &[u8]) -> Result<Vec<u8>, Refusal> {
        let mut framing = Framing::new(8192, 32);
        // Feed byte by byte too: the outcome must not depend on how reads split the stream.
        let whole = Framing::new(8192, 32).feed(stream).map(|b| b.to_vec());
        let mut out = Vec::new();
        for byte in stream {
            out.extend_from_slice(&framing.feed(std::slice::from_ref(byte))?);
        }
        assert_eq!(whole.as_ref().ok(), Some(&out), "split reads agree");
        whole
    }

    #[test]
    fn passes_well_framed_requests_whole() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12anything at all",
        ];
        for stream in cases {
            assert_eq!(run(stream).unwrap(), stream.to_vec(), "{}", String::from_utf8_lossy(stream));
        }
    }

    #[test]
    fn refuses_what_parsers_could_frame_differently() {
        let cases: &[(&[u8], u16, &str)] = &[
            (
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                400,
                "both Content-Length and Transfer-Encoding",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
                400,
                "both Content-Length and Transfer-Encoding",
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", 400, "conflicting Content-Length"),
            (b"POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n", 400, "invalid Content-Length"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "unsupported Transfer-Encoding"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400, "unsupported Transfer-Encoding"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", 400, "unsupported Transfer-Encoding"),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "invalid chunk size"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY", 400, "not followed by CRLF"),
            (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400, "malformed request head"),
            (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400, "malformed request head"),
            // The smuggled second request of a keep-alive connection is checked too.
            (
                b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
                "both",
            ),
        ];
        for (stream, status, reason) in cases {
            let refusal = run(stream).unwrap_err();
            assert_eq!(refusal.status, *status, "{}", String::from_utf8_lossy(stream));
            assert!(refusal.reason.contains(reason), "{} -> {}", String::from_utf8_lossy(stream), refusal.reason);
        }
    }

    #[test]
    fn refuses_a_head_ended_by_a_bare_lf() {
        // Found by fuzzing: httparse (and so the server) ends a head at "\n\n", which let a
        // second request hide, unchecked, inside what the guard took for the first head.
        let stream = b"GET / HTTP/1.1\r\n\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let refusal = Framing::new(8192, 32).feed(stream).unwrap_err();
        assert_eq!((refusal.status, refusal.reason.as_str()), (400, "request head ends with a bare LF"));
        // Bare LFs inside a head that ends with CRLF CRLF frame the same for both parsers.
        assert!(run(b"GET / HTTP/1.1\nHost: a\r\n\r\n").is_ok());
    }

    #[test]
    fn limits_trailer_and_chunk_size_lines_however_they_arrive() {
        // A line over the limit was refused when it arrived in pieces but passed when it
        // arrived in one read (the limit was checked only while waiting for its CRLF).
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let trailer = format!("{chunked}0\r\nX-T: {}\r\n\r\n", "a".repeat(8200));
        let size_line = format!("{chunked}1;{}\r\na\r\n0\r\n\r\n", "x".repeat(MAX_CHUNK_LINE));
        for (stream, status) in [(trailer, 431), (size_line, 400)] {
            assert_eq!(Framing::new(8192, 32).feed(stream.as_bytes()).unwrap_err().status, status, "in one read");
        }
    }

    #[test]
    fn limits_head_size_and_header_count() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(run(big.as_bytes()).unwrap_err().status, 431);
        let many: String = (0..40).map(|i| format!("X-{i}: v\r\n")).collect();
        let refusal = run(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).unwrap_err();
        assert_eq!((refusal.status, refusal.reason.as_str()), (431, "more than 32 request headers"));
    }

    #[test]
    fn a_head_sent_byte_by_byte_is_scanned_in_linear_work() {
        let head = format!("GET / HTTP/1.1\r\n{}\r\n", "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(1500));
        assert!(head.len() > 50_000);
        let mut framing = Framing::new(64 * 1024, 2000);
        let mut passed = 0;
        for byte in head.as_bytes() {
            passed += framing.feed(std::slice::from_ref(byte)).unwrap().len();
        }
        assert_eq!(passed, head.len(), "the whole head passes once complete");
        let examined = framing.bytes_examined();
        assert!(
            examined <= 4 * head.len() as u64,
            "{examined} bytes examined for a {}-byte head: the search must resume, not restart",
            head.len()
        );
    }

    #[test]
    fn the_servers_answer_decides_whether_an_upgrade_switches() {
        let offer = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n";
        let frame = b"\x81\x05hello not http at all\r\n\r\n";
        let mut framing = Framing::new(8192, 32);
        assert_eq!(framing.feed(offer).unwrap().to_vec(), offer.to_vec());
        assert!(framing.feed(frame).unwrap().is_empty(), "held until the server answers");
        assert_eq!(framing.upgrade_answered(true).unwrap().to_vec(), frame.to_vec(), "switched: passed untouched");
        assert_eq!(framing.feed(frame).unwrap().to_vec(), frame.to_vec());

        // Declined: what follows is HTTP/1 again, and checked.
        let mut framing = Framing::new(8192, 32);
        framing.feed(offer).unwrap();
        let smuggled = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(framing.feed(smuggled).unwrap().is_empty());
        assert_eq!(framing.upgrade_answered(false).unwrap_err().status, 400);

        // A response that merely looks like a 101 changes nothing: only the server's word counts.
        let mut framing = Framing::new(8192, 32);
        framing.feed(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(framing.feed(smuggled).unwrap_err().status, 400);
    }

    #[test]
    fn http2_header_blocks_are_pending_until_end_headers() {
        let mut framing = Framing::new(8192, 32);
        assert!(framing.head_pending(), "the preface is awaited");
        framing.feed(H2_PREFACE).unwrap();
        assert!(!framing.head_pending());
        // SETTINGS (empty), then HEADERS of 3 bytes without END_HEADERS.
        framing.feed(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
        assert!(!framing.head_pending());
        framing.feed(b"\x00\x00\x03\x01\x01\x00\x00\x00\x01ab").unwrap();
        assert!(framing.head_pending(), "HEADERS without END_HEADERS opens a block");
        framing.feed(b"c").unwrap();
        assert!(framing.head_pending());
        // CONTINUATION without, then with END_HEADERS.
        framing.feed(b"\x00\x00\x01\x09\x00\x00\x00\x00\x01x").unwrap();
        assert!(framing.head_pending());
        framing.feed(b"\x00\x00\x01\x09\x04\x00\x00\x00\x01x").unwrap();
        assert!(!framing.head_pending(), "END_HEADERS closes it");
        // A complete HEADERS frame whose payload is still coming is pending too.
        framing.feed(b"\x00\x00\x04\x01\x04\x00\x00\x00\x03ab").unwrap();
        assert!(framing.head_pending());
        framing.feed(b"cd").unwrap();
        assert!(!framing.head_pending());
        // DATA frames never are.
        framing.feed(b"\x00\x00\x05\x00\x00\x00\x00\x00\x03abc").unwrap();
        assert!(!framing.head_pending());
    }

    #[tokio::test]
    async fn an_open_http2_header_block_ends_the_connection_after_the_head_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = Limits { header_read_timeout: Duration::from_millis(300), ..Limits::default() };
        let (mut client, server) = tokio::io::duplex(4096);
        let (mut guard, _upgrades) = FramingGuard::new(server, &limits);
        client.write_all(H2_PREFACE).await.unwrap();
        client.write_all(b"\x00\x00\x03\x01\x01\x00\x00\x00\x01abc").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut read = 0;
        while read < H2_PREFACE.len() + 12 {
            read += guard.read(&mut buf[read..]).await.unwrap();
        }
        let started = tokio::time::Instant::now();
        let error = guard.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(250), "not before the head timeout");
    }
}
