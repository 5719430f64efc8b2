//! MeshHTTPRoute's RequestMirror: a copy of a request sent to another service, fire and
//! forget. The copy's body is teed from the request's as it streams, never buffered ahead of
//! it: the request is never delayed, and a copy that falls behind is abandoned (its body ends
//! in an error, so the mirror target never takes a cut body for a whole one).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::mpsc;
use ward_api::rules::routes::Mirror;
use ward_http::{Body, BoxError, body::boxed};

use crate::{Proxy, member::Try, routes::Target};

/// How many body frames a copy may lag behind its request before it is abandoned.
const LAG: usize = 64;

/// What the request's body tells its copy.
enum Piece {
    Frame(Frame<Bytes>),
    End,
}

/// A request body that passes a copy of every frame to a mirror.
struct Tee {
    inner: Body,
    copies: Vec<mpsc::Sender<Piece>>,
}

impl Tee {
    fn send(&mut self, piece: impl Fn() -> Piece) {
        // A copy that cannot keep up is dropped; its body then ends in an error.
        self.copies.retain(|tx| tx.try_send(piece()).is_ok());
    }
}

impl HttpBody for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let copy = || match (frame.data_ref(), frame.trailers_ref()) {
                    (Some(data), _) => Piece::Frame(Frame::data(data.clone())),
                    (None, Some(trailers)) => Piece::Frame(Frame::trailers(trailers.clone())),
                    (None, None) => Piece::End,
                };
                self.send(copy);
                if self.inner.is_end_stream() {
                    self.send(|| Piece::End);
                }
            }
            Poll::Ready(None) => self.send(|| Piece::End),
            Poll::Ready(Some(Err(_))) => self.copies.clear(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body of a copy: the frames teed, then its end; an error if the tee gave up on it.
fn copy_body(rx: mpsc::Receiver<Piece>) -> Body {
    let stream = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Piece::Frame(frame)) => Some((Ok(frame), Some(rx))),
            Some(Piece::End) => None,
            None => Some((Err(BoxError::from("the mirrored request fell behind or failed")), None)),
        }
    });
    boxed(StreamBody::new(stream))
}

/// Sends copies of `request` to the `mirrors` drawn by their percentages, each in a task of its
/// own whose answer is dropped; gives back the request to send on.
pub fn send_copies(proxy: &Arc<Proxy>, mirrors: &[Mirror], request: Request<Body>) -> Request<Body> {
    let drawn: Vec<&Mirror> =
        mirrors.iter().filter(|m| m.percentage >= 100.0 || rand::random_range(0.0..100.0) < m.percentage).collect();
    if drawn.is_empty() {
        return request;
    }
    let (parts, body) = request.into_parts();
    let empty = body.is_end_stream();
    let mut copies = Vec::new();
    for mirror in drawn {
        let mut copy = Request::from_parts(parts.clone(), ());
        // As Envoy marks them: the copy's host ends in `-shadow`.
        if let Some(host) = copy.headers().get(header::HOST).and_then(|h| h.to_str().ok())
            && let Ok(shadow) = HeaderValue::from_str(&format!("{host}-shadow"))
        {
            copy.headers_mut().insert(header::HOST, shadow);
        }
        let body = if empty {
            boxed(Empty::<Bytes>::new())
        } else {
            let (tx, rx) = mpsc::channel(LAG);
            copies.push(tx);
            copy_body(rx)
        };
        let (proxy, backend) = (proxy.clone(), mirror.backend.clone());
        let copy = copy.map(|()| body);
        tokio::spawn(async move {
            let target = Target::of(&backend);
            let config = proxy.state().config();
            let timeouts = config.as_ref().map(|c| c.outbound_timeouts(target.key)).unwrap_or_default();
            let how = Try { timeouts, subset: target.subset, ..Try::default() };
            match proxy.member.send(target.key, copy, how).await {
                Ok((response, _)) => {
                    // Read the answer through, so the connection is left clean, and drop it.
                    let _ = response.into_body().collect().await;
                }
                Err(e) => tracing::debug!(mirror = %target.key, error = %e, "a mirrored request was not carried"),
            }
        });
    }
    let body = if copies.is_empty() { body } else { boxed(Tee { inner: body, copies }) };
    Request::from_parts(parts, body)
}
