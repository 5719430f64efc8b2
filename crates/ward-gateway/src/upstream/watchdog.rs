//! The service's timeouts, enforced as nginx enforces them by a watchdog that follows the
//! request's phases: connecting, then between two writes of the request, then from the end
//! of the request to the response head, then between two reads of the response body.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::balancer::InFlight;
use super::{Picked, Service, Timeouts, UpstreamError};
use crate::reply::{Body, BoxError};

/// When the request last made progress, to enforce the write and read timeouts as nginx
/// does: between two writes of the request, then from the end of the request to the
/// response head.
pub(crate) struct Progress {
    origin: Instant,
    /// Wakes the request's watchdog when a phase changes.
    changed: tokio::sync::Notify,
    /// Milliseconds after `origin`, plus one; zero: not yet.
    head_written: AtomicU64,
    last_write: AtomicU64,
    done: AtomicU64,
}

impl Progress {
    /// Progress of a request that starts now.
    pub fn new() -> Self {
        Progress {
            origin: Instant::now(),
            changed: tokio::sync::Notify::new(),
            head_written: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }

    fn stamp(&self, slot: &AtomicU64) {
        let ms = self.origin.elapsed().as_millis() as u64 + 1;
        slot.store(ms, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn at(&self, slot: &AtomicU64) -> Option<Instant> {
        match slot.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.origin + Duration::from_millis(ms - 1)),
        }
    }

    /// The deadline of the current phase and the error it ends with.
    fn deadline(&self, t: Timeouts) -> (Instant, UpstreamError) {
        if let Some(done) = self.at(&self.done) {
            (done + t.read, UpstreamError::ReadTimeout)
        } else if let Some(last) = self.at(&self.last_write).or(self.at(&self.head_written)) {
            (last + t.write, UpstreamError::WriteTimeout)
        } else {
            // Still connecting (the connector's own timeout usually ends this first).
            (self.origin + t.connect + Duration::from_secs(1), UpstreamError::ConnectTimeout)
        }
    }
}

/// The request body, reporting progress as the upstream connection takes it.
pub(crate) struct TrackedBody {
    pub inner: Body,
    pub progress: Arc<Progress>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => self.progress.stamp(&self.progress.last_write),
            Poll::Ready(None) => self.progress.stamp(&self.progress.done),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // The connection asks this as it writes the request head.
        if self.progress.head_written.load(Ordering::Acquire) == 0 {
            self.progress.stamp(&self.progress.head_written);
        }
        let end = self.inner.is_end_stream();
        if end && self.progress.done.load(Ordering::Acquire) == 0 {
            self.progress.stamp(&self.progress.done);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Sends a request, ending it with 504 if the upstream stalls past the service's timeouts.
pub(crate) async fn send_timed(
    service: &Service,
    picked: &Picked,
    request: Request<Body>,
    progress: &Progress,
    timeouts: Timeouts,
) -> Result<Response<Incoming>, UpstreamError> {
    let send = service.send(picked, request);
    tokio::pin!(send);
    loop {
        // Listen for a phase change before reading the phase, so that none is missed.
        let changed = progress.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let (deadline, error) = progress.deadline(timeouts);
        tokio::select! {
            result = &mut send => return result,
            _ = &mut changed => {}
            _ = tokio::time::sleep_until(deadline) => {
                if progress.deadline(timeouts).0 <= Instant::now() {
                    return Err(error);
                }
            }
        }
    }
}

/// The upstream's response body, ended with an error if it stalls for `timeout`.
pub(crate) struct IdleTimeoutBody {
    inner: Incoming,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    _in_flight: Option<InFlight>,
}

impl IdleTimeoutBody {
    /// `inner`, ended with an error when it stalls for `timeout`; `in_flight` counts the
    /// request as in flight to its target until the body is dropped.
    pub fn new(inner: Incoming, timeout: Duration, in_flight: Option<InFlight>) -> Self {
        IdleTimeoutBody { inner, timeout, sleep: Box::pin(tokio::time::sleep(timeout)), _in_flight: in_flight }
    }
}

/// The upstream stopped sending its response body.
#[derive(Debug, thiserror::Error)]
#[error("the upstream stalled for {0:?} while sending its response")]
struct Stalled(Duration);

impl HttpBody for IdleTimeoutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = Instant::now() + self.timeout;
                self.sleep.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(|e| Box::new(e) as BoxError)))
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled(self.timeout))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
