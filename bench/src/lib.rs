//! Shared pieces of the benchmarks: processes under test (pinned to cores, their RSS and CPU),
//! the load generators, a control plane with its discovery stream, and the peers (HAProxy,
//! nginx) Ward is compared with.

pub mod control_plane;
pub mod discovery;
pub mod handshakes;
pub mod load;
pub mod peers;
pub mod pki;
pub mod process;
pub mod ward_proxy;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::bail;
pub use process::{Cpus, Proc};

/// Waits until `path` exists, up to `timeout`.
pub fn wait_for_file(path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`, up to `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A free port on 127.0.0.1; never the same twice in one process.
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut given = GIVEN.lock().expect("ports lock");
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

/// A latency histogram in microseconds, 1 µs to 60 s.
pub fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// `p50 / p99 / p99.9` of a histogram in milliseconds.
pub fn percentiles_ms(h: &hdrhistogram::Histogram<u64>) -> (f64, f64, f64) {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    (ms(0.50), ms(0.99), ms(0.999))
}

/// Whether the scenario runs in quick mode (`--quick` among the arguments).
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// Prints one result as a JSON line on standard output, tagged with its scenario.
pub fn emit(scenario: &str, mut fields: serde_json::Value) {
    fields["scenario"] = scenario.into();
    println!("{fields}");
}
