//! Refused requests, said by who refused them: each is counted with the deciding policy, and
//! logged at info with the caller, destination, method and path, at most [`PER_SECOND`] lines
//! a second (the lines left out are counted in the next one).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use http::{HeaderValue, Response};
use ward_http::Body;

use crate::{metrics::DeniedLabels, state::State};

/// Log lines of denials per second, at most.
pub const PER_SECOND: u32 = 10;

/// The header naming the deciding policy, when the mesh asks for it.
pub const DENIED_BY: &str = "x-ward-denied-by";

/// The rate limit of denial log lines.
#[derive(Debug)]
pub struct Log(Mutex<Window>);

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    left_out: u64,
}

impl Default for Log {
    fn default() -> Self {
        Log(Mutex::new(Window { started: Instant::now(), logged: 0, left_out: 0 }))
    }
}

impl Log {
    /// Whether a line may be logged now, and how many were left out before it.
    fn admit(&self) -> Option<u64> {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if w.started.elapsed() >= Duration::from_secs(1) {
            w.started = Instant::now();
            w.logged = 0;
        }
        if w.logged >= PER_SECOND {
            w.left_out += 1;
            return None;
        }
        w.logged += 1;
        Some(std::mem::take(&mut w.left_out))
    }
}

/// One refused request.
#[derive(Debug, Clone, Copy)]
pub struct Denial<'a> {
    /// The caller: its SPIFFE ID, or `anonymous`.
    pub caller: &'a str,
    /// The service of the inbound.
    pub destination: &'a str,
    /// The request's method.
    pub method: &'a str,
    /// The request's path.
    pub path: &'a str,
    /// `Type/name` of the deciding policy, or `default-deny`.
    pub policy: &'a str,
}

impl Denial<'_> {
    /// Counts and logs the denial, and names the policy in `response` when `named`.
    pub fn record(self, state: &State, log: &Log, named: bool, response: &mut Response<Body>) {
        let labels = DeniedLabels { destination: self.destination.to_string(), policy: self.policy.to_string() };
        state.metrics.requests_denied.get_or_create(&labels).inc();
        if let Some(left_out) = log.admit() {
            tracing::info!(
                caller = self.caller,
                destination = self.destination,
                method = self.method,
                path = self.path,
                policy = self.policy,
                earlier_denials_not_logged = left_out,
                "request denied"
            );
        }
        if named && let Ok(value) = HeaderValue::from_str(self.policy) {
            response.headers_mut().insert(DENIED_BY, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_limited_per_second_and_the_rest_counted() {
        let log = Log::default();
        let admitted: Vec<_> = (0..15).map(|_| log.admit()).collect();
        assert_eq!(admitted.iter().filter(|a| a.is_some()).count(), PER_SECOND as usize);
        log.0.lock().unwrap().started -= Duration::from_secs(1);
        assert_eq!(log.admit(), Some(5));
        assert_eq!(log.admit(), Some(0));
    }
}
