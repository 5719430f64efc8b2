//! MeshTimeout's HTTP limits on one request: a deadline for the whole exchange
//! (`http.requestTimeout`, `http.maxStreamDuration`) and a limit on how long it may go without
//! a byte moving (`http.streamIdleTimeout`), held while waiting for the response and while
//! either body streams.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep, sleep_until};
use ward_api::mesh_timeout::{Timeouts, enabled};
use ward_http::{Body, BoxError, body::boxed};

use crate::{forward, io::Activity};

/// Which limit ended an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// `http.requestTimeout`.
    Request,
    /// `http.maxStreamDuration`.
    MaxStream,
    /// `http.streamIdleTimeout`.
    StreamIdle,
}

impl Expired {
    /// The answer when it ends the exchange before the response starts (Envoy's words).
    pub fn response(self) -> Response<Body> {
        match self {
            Expired::Request => forward::unavailable(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
            Expired::MaxStream => {
                forward::unavailable(StatusCode::GATEWAY_TIMEOUT, "upstream max stream duration reached")
            }
            Expired::StreamIdle => forward::unavailable(StatusCode::REQUEST_TIMEOUT, "stream timeout"),
        }
    }

    fn message(self) -> &'static str {
        match self {
            Expired::Request => "request timeout reached",
            Expired::MaxStream => "max stream duration reached",
            Expired::StreamIdle => "stream idle timeout reached",
        }
    }
}

/// The limits of one request, started when it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    deadline: Option<(Instant, Expired)>,
    idle: Option<Duration>,
}

impl Limits {
    /// The limits `timeouts` set for a request that arrived at `started`.
    pub fn new(timeouts: &Timeouts, started: Instant) -> Limits {
        let request = enabled(timeouts.request).map(|d| (started + d, Expired::Request));
        let stream = enabled(timeouts.max_stream).map(|d| (started + d, Expired::MaxStream));
        let deadline = match (request, stream) {
            (Some(r), Some(s)) => Some(if s.0 < r.0 { s } else { r }),
            (r, s) => r.or(s),
        };
        Limits { deadline, idle: enabled(timeouts.stream_idle) }
    }

    /// Whether no limit is set.
    pub fn is_none(&self) -> bool {
        self.deadline.is_none() && self.idle.is_none()
    }

    /// Runs `send` with the request's body held to the limits; the response's body is held to
    /// them too. When a limit passes before the response arrives, says which.
    pub async fn exchange<F, Fut, E>(
        &self,
        request: Request<Body>,
        send: F,
    ) -> Result<Result<Response<Body>, E>, Expired>
    where
        F: FnOnce(Request<Body>) -> Fut,
        Fut: Future<Output = Result<Response<hyper::body::Incoming>, E>>,
    {
        if self.is_none() {
            return Ok(send(request).await.map(|r| r.map(boxed)));
        }
        let activity = Activity::new();
        let request = request.map(|b| boxed(Limited::new(b, *self, Some(activity.clone()))));
        let waiting = send(request);
        // Waiting for the response is a time without bytes moving once the request's body
        // stops streaming: the idle limit counts from its last byte.
        let idle = async {
            match self.idle {
                Some(limit) => activity.idle(limit).await,
                None => std::future::pending().await,
            }
        };
        let deadline = async {
            match self.deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = waiting => result,
            () = deadline => return Err(self.deadline.map_or(Expired::Request, |(_, why)| why)),
            () = idle => return Err(Expired::StreamIdle),
        };
        Ok(result.map(|r| r.map(|b| boxed(Limited::new(b, *self, None)))))
    }
}

/// A body held to a deadline and an idle limit: it fails once either passes.
struct Limited<B> {
    inner: B,
    deadline: Option<(Pin<Box<Sleep>>, Expired)>,
    idle: Option<(Pin<Box<Sleep>>, Duration)>,
    /// Told of every frame (a request's body, whose last byte starts the wait for the response).
    activity: Option<Activity>,
}

impl<B> Limited<B> {
    fn new(inner: B, limits: Limits, activity: Option<Activity>) -> Self {
        Limited {
            inner,
            deadline: limits.deadline.map(|(at, why)| (Box::pin(sleep_until(at)), why)),
            idle: limits.idle.map(|d| (Box::pin(sleep_until(Instant::now() + d)), d)),
            activity,
        }
    }
}

impl<B> HttpBody for Limited<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some((sleep, limit)) = &mut this.idle {
                    sleep.as_mut().reset(Instant::now() + *limit);
                }
                if let Some(activity) = &this.activity {
                    activity.touch();
                }
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        if let Some((sleep, why)) = &mut this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(why.message().into())));
        }
        if let Some((sleep, _)) = &mut this.idle
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(Expired::StreamIdle.message().into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
