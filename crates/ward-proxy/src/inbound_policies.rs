//! MeshRateLimit and MeshFaultInjection in the callee's proxy, per inbound.
//!
//! Rate limits are Envoy's local token buckets: `num` tokens, all given back every `interval`;
//! a request (or connection) finding none is refused. Buckets live as long as the proxy and
//! keep their tokens across configuration changes that leave their rate unchanged.
//!
//! Faults apply as Envoy's fault filters, one per `http[]` entry in order: each may delay the
//! request, then abort it with a status, and slow its response body; each share is drawn on
//! its own.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use ward_api::{
    mesh_fault_injection::Injected,
    mesh_rate_limit::{Limit, Limits},
};
use ward_http::{
    Body,
    body::{BoxError, boxed, text},
};

/// Envoy's body for a request its local rate limit refused.
pub const RATE_LIMITED_BODY: &str = "local_rate_limited";
/// Envoy's body for a request its fault filter aborted.
pub const ABORTED_BODY: &str = "fault filter abort";

/// A token bucket refilled whole every interval.
#[derive(Debug)]
struct Bucket {
    limit: Limit,
    state: Mutex<(u32, Instant)>,
}

impl Bucket {
    fn new(limit: Limit) -> Bucket {
        Bucket { limit, state: Mutex::new((limit.num, Instant::now() + limit.interval)) }
    }

    /// Takes a token, if one is left.
    fn take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now >= state.1 {
            // Whole intervals passed since the last fill: the bucket is full again.
            let interval = self.limit.interval.max(Duration::from_millis(1));
            let behind = now.duration_since(state.1).as_nanos() / interval.as_nanos();
            let skipped = u32::try_from(behind + 1).unwrap_or(u32::MAX);
            state.0 = self.limit.num;
            state.1 += interval.saturating_mul(skipped);
        }
        if state.0 == 0 {
            return false;
        }
        state.0 -= 1;
        true
    }
}

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counting {
    /// HTTP requests.
    Requests,
    /// Connections.
    Connections,
}

/// The buckets of every inbound, by inbound index and what they count.
#[derive(Debug, Default)]
pub struct Buckets(Mutex<HashMap<(usize, Counting), Arc<Bucket>>>);

impl Buckets {
    /// Takes a token from the bucket of inbound `index` for `limit`; true when allowed. A
    /// bucket whose rate changed starts again full.
    pub fn take(&self, index: usize, counted: Counting, limit: Limit) -> bool {
        let bucket = {
            let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let bucket = all.entry((index, counted)).or_insert_with(|| Arc::new(Bucket::new(limit)));
            if bucket.limit != limit {
                *bucket = Arc::new(Bucket::new(limit));
            }
            bucket.clone()
        };
        bucket.take()
    }
}

/// The answer to a request over the rate of `limits`.
pub fn rate_limited(limits: &Limits) -> Response<Body> {
    let mut response = text(StatusCode::TOO_MANY_REQUESTS, RATE_LIMITED_BODY);
    *response.status_mut() = StatusCode::from_u16(limits.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    let headers = response.headers_mut();
    let pair = |(name, value): &(String, String)| {
        Some((HeaderName::from_bytes(name.as_bytes()).ok()?, HeaderValue::from_str(value).ok()?))
    };
    for (name, value) in limits.set.iter().filter_map(pair) {
        headers.insert(name, value);
    }
    for (name, value) in limits.add.iter().filter_map(pair) {
        headers.append(name, value);
    }
    response
}

/// Whether a draw with probability `share` succeeds.
fn drawn(share: f64) -> bool {
    share >= 1.0 || (share > 0.0 && rand::random::<f64>() < share)
}

/// What the faults decided for one request, before it is sent.
#[derive(Debug, Default)]
pub struct Decision {
    /// How long to wait before going on.
    pub delay: Duration,
    /// The status to answer instead of sending it.
    pub abort: Option<StatusCode>,
    /// The bandwidth of the response body, in bytes per second (the lowest drawn).
    pub bandwidth: Option<u64>,
}

/// Draws the faults of one request.
pub fn decide(faults: &[Injected]) -> Decision {
    let mut decision = Decision::default();
    for fault in faults {
        if let Some((delay, share)) = fault.delay
            && drawn(share)
        {
            decision.delay += delay;
        }
        if let Some((status, share)) = fault.abort
            && drawn(share)
        {
            decision.abort = StatusCode::from_u16(status).ok();
            break;
        }
        if let Some((rate, share)) = fault.bandwidth
            && drawn(share)
        {
            decision.bandwidth = Some(decision.bandwidth.map_or(rate, |r| r.min(rate)));
        }
    }
    decision
}

/// The answer to an aborted request.
pub fn aborted(status: StatusCode) -> Response<Body> {
    let mut response = text(status, ABORTED_BODY);
    *response.status_mut() = status;
    response
}

/// Slows `response`'s body to `rate` bytes per second.
pub fn throttle(response: Response<Body>, rate: u64) -> Response<Body> {
    response.map(|body| boxed(Throttled::new(body, rate)))
}

/// A body that lets at most `rate` bytes a second through: each piece goes out once the time
/// it takes at that rate has passed.
struct Throttled {
    inner: Body,
    rate: u64,
    pending: Bytes,
    wait: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl Throttled {
    fn new(inner: Body, rate: u64) -> Throttled {
        Throttled { inner, rate: rate.max(1), pending: Bytes::new(), wait: None, done: false }
    }

    /// Pieces of a twentieth of a second.
    fn piece(&self) -> usize {
        usize::try_from(self.rate / 20).unwrap_or(usize::MAX).max(1)
    }
}

impl hyper::body::Body for Throttled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(wait) = &mut this.wait {
                ready!(wait.as_mut().poll(cx));
                this.wait = None;
                let n = this.piece().min(this.pending.len());
                let piece = this.pending.split_to(n);
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if !this.pending.is_empty() {
                let n = this.piece().min(this.pending.len());
                let nanos = (n as u128 * 1_000_000_000 / u128::from(this.rate)).min(u128::from(u64::MAX));
                let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
                this.wait = Some(Box::pin(tokio::time::sleep(Duration::from_nanos(nanos))));
                continue;
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.pending = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let pending = self.pending.len() as u64;
        hint.set_lower(hint.lower().saturating_add(pending));
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(pending));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_bucket_refuses_past_its_rate_and_refills_after_the_interval() {
        let buckets = Buckets::default();
        let limit = Limit { num: 3, interval: Duration::from_millis(200) };
        let taken: Vec<bool> = (0..5).map(|_| buckets.take(0, Counting::Requests, limit)).collect();
        assert_eq!(taken, [true, true, true, false, false]);
        assert!(buckets.take(1, Counting::Requests, limit), "each inbound has its own bucket");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(buckets.take(0, Counting::Requests, limit));
        let wider = Limit { num: 10, interval: Duration::from_millis(200) };
        assert!((0..10).all(|_| buckets.take(0, Counting::Requests, wider)), "a new rate starts full");
    }

    #[test]
    fn shares_of_zero_and_one_are_never_and_always() {
        let fault = Injected { abort: Some((503, 0.0)), delay: Some((Duration::from_secs(1), 1.0)), bandwidth: None };
        let d = decide(&[fault]);
        assert_eq!((d.delay, d.abort), (Duration::from_secs(1), None));
        let abort = Injected { abort: Some((503, 1.0)), delay: None, bandwidth: None };
        assert_eq!(decide(&[abort]).abort, Some(StatusCode::SERVICE_UNAVAILABLE));
    }

    #[tokio::test]
    async fn a_throttled_body_takes_its_size_over_the_rate() {
        let body = ward_http::body::full(vec![b'x'; 4000]);
        let started = std::time::Instant::now();
        let bytes = Throttled::new(body, 10_000).collect().await.expect("body").to_bytes();
        assert_eq!(bytes.len(), 4000);
        assert!(started.elapsed() >= Duration::from_millis(390), "{:?}", started.elapsed());
    }
}
