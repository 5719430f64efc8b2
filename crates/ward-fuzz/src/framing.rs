//! The HTTP/1 request-framing guard that every HTTP/1 server connection of the proxy and the
//! gateway sits behind: one connection's bytes, delivered in reads of arbitrary sizes.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use arbitrary::{Arbitrary, Unstructured};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The client preface of HTTP/2, after which the guard passes everything.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longer than any run: the guard's clock is real, and a connection here never waits.
const HEAD_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest chunk-size line the guard lets through.
const MAX_CHUNK_LINE: usize = 4096;

/// One connection: the guard's limits, how the client's bytes are cut into reads, the bytes.
#[derive(Debug)]
struct Connection<'a> {
    max_head_bytes: usize,
    max_headers: usize,
    /// Read sizes, used in turn; 0 delivers all that is left at once.
    read_sizes: [u8; 8],
    stream: &'a [u8],
}

impl<'a> Arbitrary<'a> for Connection<'a> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Connection {
            max_head_bytes: u.int_in_range(16..=8192)?,
            max_headers: u.int_in_range(1..=64)?,
            read_sizes: u.arbitrary()?,
            stream: u.bytes(u.len())?,
        })
    }
}

/// What came out of the guard: the bytes the server read, and what the guard wrote back.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    passed: Vec<u8>,
    written: Vec<u8>,
}

/// Runs one connection through the guard: once in the reads the input asks for, once in a
/// single read. Invariants: the server reads a prefix of what the client sent; heads within
/// the limits, framed one way only (see [`check_passed`]); whether a connection is refused does
/// not depend on how its bytes were cut into reads; a refusal is a 400 or a 431.
pub fn run(data: &[u8]) {
    let Ok(c) = Connection::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let mut reads = Vec::new();
    let mut rest = c.stream;
    for size in c.read_sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = if *size == 0 { rest.len() } else { rest.len().min(usize::from(*size)) };
        reads.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    let split = guard(reads, c.max_head_bytes, c.max_headers);
    let whole = guard(vec![c.stream.to_vec()], c.max_head_bytes, c.max_headers);

    for outcome in [&split, &whole] {
        assert!(c.stream.starts_with(&outcome.passed), "the guard passed bytes the client did not send");
        if !outcome.written.is_empty() {
            let status = outcome.written.get(..13);
            assert!(
                status == Some(b"HTTP/1.1 400 ") || status == Some(b"HTTP/1.1 431 "),
                "refusal {:?}",
                String::from_utf8_lossy(&outcome.written)
            );
        }
        check_passed(&outcome.passed, c.max_head_bytes, c.max_headers);
    }
    assert_eq!(
        split.written.is_empty(),
        whole.written.is_empty(),
        "refused in one read but not in {} reads: {:?} / {:?}",
        c.read_sizes.len(),
        String::from_utf8_lossy(&whole.written),
        String::from_utf8_lossy(&split.written),
    );
    // A refusal in one read drops the requests before it that were still in the same read.
    assert!(split.passed.starts_with(&whole.passed), "a single read passed more than split reads");
    if whole.written.is_empty() {
        assert_eq!(split.passed, whole.passed, "split reads passed other bytes than one read");
    }
}

/// The guard under test, over a connection whose client sends `reads` and then closes.
/// The one place that names the guard's type, to repoint when it moves.
fn guard(reads: Vec<Vec<u8>>, max_head_bytes: usize, max_headers: usize) -> Outcome {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let client = Client { reads: reads.into(), written: Vec::new() };
            let limits = ward_http::Limits {
                max_header_bytes: max_head_bytes,
                max_headers,
                header_read_timeout: HEAD_TIMEOUT,
                ..Default::default()
            };
            let (mut guarded, upgrades) = ward_http::framing::FramingGuard::new(client, &limits);
            // The server behind the guard declines every offer to switch protocols.
            let declining = async {
                loop {
                    upgrades.answer(false);
                    tokio::task::yield_now().await;
                }
            };
            let mut passed = Vec::new();
            tokio::select! {
                read = guarded.read_to_end(&mut passed) => read.expect("the scripted client does not fail"),
                never = declining => never,
            };
            Outcome { passed, written: guarded.get_ref().written.clone() }
        })
    })
}

/// A client that sends its reads, then closes; it keeps what it is sent.
struct Client {
    reads: VecDeque<Vec<u8>>,
    written: Vec<u8>,
}

impl AsyncRead for Client {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(mut read) = self.reads.pop_front() {
            let n = read.len().min(buf.remaining());
            buf.put_slice(&read[..n]);
            if n < read.len() {
                self.reads.push_front(read.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Walks what the server read, request by request, as an independent reader of HTTP/1
/// framing, and checks each head: complete and well formed, no larger than `max_head_bytes`,
/// at most `max_headers` headers, one Content-Length value, no Transfer-Encoding beside a
/// Content-Length, chunked last and once, and only in HTTP/1.1; chunked bodies well formed.
fn check_passed(mut rest: &[u8], max_head_bytes: usize, max_headers: usize) {
    if rest.starts_with(H2_PREFACE) {
        return;
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    loop {
        while let Some(after) = rest.strip_prefix(b"\r\n") {
            rest = after;
        }
        if rest.is_empty() {
            return;
        }
        let end = find(rest, b"\r\n\r\n").unwrap_or_else(|| panic!("passed part of a head: {:?}", text(rest))) + 4;
        let head = &rest[..end];
        assert!(head.len() <= max_head_bytes, "passed a head of {} bytes, limit {max_head_bytes}", head.len());
        let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
        let mut request = httparse::Request::new(&mut headers);
        let parsed = request.parse(head);
        assert!(matches!(parsed, Ok(httparse::Status::Complete(n)) if n == end), "passed {:?}: {parsed:?}", text(head));
        let mut lengths = Vec::new();
        let mut codings = Vec::new();
        for h in request.headers.iter() {
            let framing = ["content-length", "transfer-encoding"].iter().any(|n| h.name.eq_ignore_ascii_case(n));
            let value =
                if framing { std::str::from_utf8(h.value).expect("passed a non-text framing header") } else { "" };
            if h.name.eq_ignore_ascii_case("content-length") {
                for v in value.split(',').map(str::trim) {
                    assert!(!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()), "passed Content-Length {value:?}");
                    lengths.push(v.parse::<u64>().expect("passed a Content-Length beyond u64"));
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                codings.extend(value.split(',').map(|c| c.trim().to_ascii_lowercase()));
            }
        }
        assert!(lengths.windows(2).all(|w| w[0] == w[1]), "passed differing Content-Lengths: {:?}", text(head));
        rest = &rest[end..];
        if codings.is_empty() {
            let length = lengths.first().copied().unwrap_or(0);
            let Some(after) = rest.get(usize::try_from(length).unwrap_or(usize::MAX)..) else { return };
            rest = after;
            continue;
        }
        assert!(lengths.is_empty(), "passed both Content-Length and Transfer-Encoding: {:?}", text(head));
        assert_eq!(request.version, Some(1), "passed Transfer-Encoding in HTTP/1.0: {:?}", text(head));
        assert_eq!(codings.last().map(String::as_str), Some("chunked"), "passed {:?}", text(head));
        assert_eq!(codings.iter().filter(|c| *c == "chunked").count(), 1, "passed {:?}", text(head));
        match skip_chunked(rest, max_head_bytes) {
            Some(after) => rest = after,
            None => return,
        }
    }
}

/// The bytes after a chunked body and its trailers; `None` when the passed bytes end inside it.
fn skip_chunked(mut rest: &[u8], max_head_bytes: usize) -> Option<&[u8]> {
    loop {
        let Some(end) = find(rest, b"\r\n") else {
            assert!(rest.is_empty(), "passed part of a chunk-size line: {:?}", String::from_utf8_lossy(rest));
            return None;
        };
        assert!(end <= MAX_CHUNK_LINE, "passed a chunk-size line of {end} bytes, limit {MAX_CHUNK_LINE}");
        let line = std::str::from_utf8(&rest[..end]).expect("passed a chunk-size line that is not text");
        let digits = line.split(';').next().unwrap_or("").trim_end_matches([' ', '\t']);
        let size = u64::from_str_radix(digits, 16).unwrap_or_else(|_| panic!("passed chunk size {digits:?}"));
        rest = &rest[end + 2..];
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let data_end = size.checked_add(2)?;
        let chunk = rest.get(..data_end)?;
        assert!(chunk.ends_with(b"\r\n"), "passed a chunk not followed by CRLF");
        rest = &rest[data_end..];
    }
    loop {
        let Some(end) = find(rest, b"\r\n") else {
            assert!(rest.is_empty(), "passed part of a trailer line: {:?}", String::from_utf8_lossy(rest));
            return None;
        };
        assert!(end <= max_head_bytes, "passed a trailer line of {end} bytes, limit {max_head_bytes}");
        rest = &rest[end + 2..];
        if end == 0 {
            return Some(rest);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
