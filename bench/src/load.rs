//! Load generators: open loop at a fixed rate (latency from each request's intended send
//! time, so a slow response cannot hold back the requests behind it: no coordinated
//! omission), closed loop at saturation, and the step search for the highest rate that keeps
//! p99 under a limit.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::{histogram, percentiles_ms};

/// The request a generator sends again and again.
#[derive(Clone)]
pub struct Target {
    /// The client (its pool of keep-alive connections, or one HTTP/2 connection).
    pub client: reqwest::Client,
    /// What to GET.
    pub url: String,
    /// Extra request headers.
    pub headers: Vec<(&'static str, String)>,
}

impl Target {
    /// A target over plain HTTP: HTTP/1.1 keep-alive, or HTTP/2 with prior knowledge (h2c).
    pub fn plain(url: String, h2c: bool) -> anyhow::Result<Self> {
        let builder =
            reqwest::Client::builder().no_proxy().pool_max_idle_per_host(4096).timeout(Duration::from_secs(10));
        let builder = if h2c { builder.http2_prior_knowledge() } else { builder.http1_only() };
        Ok(Target { client: builder.build()?, url, headers: vec![] })
    }

    /// Sends the request once and reads the whole body; whether it answered 2xx.
    pub async fn once(&self) -> bool {
        let mut request = self.client.get(&self.url);
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        match request.send().await {
            Ok(response) => {
                let ok = response.status().is_success();
                response.bytes().await.is_ok() && ok
            }
            Err(_) => false,
        }
    }
}

/// What one run measured.
pub struct Outcome {
    /// Latency of the successful requests, µs (open loop: from the intended send time).
    pub latencies: Histogram<u64>,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests failed, refused or timed out.
    pub errors: u64,
    /// Wall-clock seconds from the first request to the last answer.
    pub seconds: f64,
}

impl Outcome {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    /// p99 in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        percentiles_ms(&self.latencies).1
    }

    /// The figures as JSON fields.
    pub fn json(&self) -> serde_json::Value {
        let (p50, p99, p999) = percentiles_ms(&self.latencies);
        json!({"ok": self.ok, "errors": self.errors, "seconds": self.seconds, "achieved_rps": self.rate(),
               "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": self.latencies.max() as f64 / 1000.0})
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
}

/// Sends `rate` requests per second for `duration`, each at its own scheduled instant (paced
/// by a dedicated thread, so the runtime's 1 ms timer granularity does not bunch them), and
/// records each latency from that instant.
pub async fn open_loop(target: &Target, rate: f64, duration: Duration) -> Outcome {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let latencies = Arc::new(Mutex::new(histogram()));
    let tally = Arc::new(Tally::default());
    let runtime = tokio::runtime::Handle::current();
    let (target, l, t) = (target.clone(), latencies.clone(), tally.clone());
    let start = Instant::now() + Duration::from_millis(5);
    let pacer = std::thread::spawn(move || {
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let intended = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            let (target, latencies, tally) = (target.clone(), l.clone(), t.clone());
            tasks.push(runtime.spawn(async move {
                if target.once().await {
                    let micros = intended.elapsed().as_micros() as u64;
                    latencies.lock().expect("histogram lock").saturating_record(micros.max(1));
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tasks
    });
    let tasks = tokio::task::spawn_blocking(move || pacer.join().expect("pacer thread")).await.expect("pacer");
    for task in tasks {
        let _ = task.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let latencies = latencies.lock().expect("histogram lock").clone();
    Outcome { latencies, ok: tally.ok.load(Ordering::Relaxed), errors: tally.errors.load(Ordering::Relaxed), seconds }
}

/// `concurrency` workers each sending the next request as soon as the last one is answered,
/// for `duration`: the throughput at saturation.
pub async fn closed_loop(target: &Target, concurrency: usize, duration: Duration) -> Outcome {
    let latencies = Arc::new(Mutex::new(histogram()));
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (target, latencies, tally) = (target.clone(), latencies.clone(), tally.clone());
            tokio::spawn(async move {
                let mut local = histogram();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    if target.once().await {
                        local.saturating_record((sent.elapsed().as_micros() as u64).max(1));
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies.lock().expect("histogram lock").add(&local).expect("same bounds");
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let latencies = latencies.lock().expect("histogram lock").clone();
    Outcome { latencies, ok: tally.ok.load(Ordering::Relaxed), errors: tally.errors.load(Ordering::Relaxed), seconds }
}

/// The highest of `rates` (tried in order, each for `step`) whose p99 stays under `p99_limit_ms`
/// with every request answered and the rate achieved; stops at the first rate that fails.
/// Returns that rate (0 if none) and each step's `(rate, p99 ms, errors)`.
pub async fn max_rate(
    target: &Target,
    rates: &[f64],
    step: Duration,
    p99_limit_ms: f64,
) -> (f64, Vec<(f64, f64, u64)>) {
    let mut best = 0.0;
    let mut steps = Vec::new();
    for &rate in rates {
        let outcome = open_loop(target, rate, step).await;
        let p99 = outcome.p99_ms();
        steps.push((rate, p99, outcome.errors));
        let kept_up = outcome.errors == 0 && outcome.ok as f64 >= 0.99 * rate * step.as_secs_f64();
        if p99 >= p99_limit_ms || !kept_up {
            break;
        }
        best = rate;
        // Let queues drain between steps.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    (best, steps)
}
