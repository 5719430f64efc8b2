//! Kuma's `serviceProbe`: a TCP probe of the application behind each inbound that asks for
//! one. Each change is recorded in the state, from where the discovery stream tells the
//! control plane, which takes an unhealthy inbound out of its callers' endpoints.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use ward_api::dataplane::Dataplane;

use crate::state::State;

/// Kuma's defaults for a probe that leaves a setting out.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_THRESHOLD: u32 = 1;

/// One inbound's probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Index of the inbound in the Dataplane.
    pub inbound: u32,
    /// Where the application listens.
    pub target: SocketAddr,
    /// Time between probes.
    pub interval: Duration,
    /// Time a connection may take.
    pub timeout: Duration,
    /// Successes in a row that make an unhealthy inbound healthy.
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy inbound unhealthy.
    pub unhealthy_threshold: u32,
}

/// The probes `dp` asks for: one per inbound with a `serviceProbe` that the proxy listens for.
pub fn probes(dp: &Dataplane) -> Vec<Probe> {
    dp.networking
        .inbound
        .iter()
        .enumerate()
        .filter(|(_, inbound)| inbound.listens())
        .filter_map(|(i, inbound)| {
            let probe = inbound.service_probe.as_ref()?;
            Some(Probe {
                inbound: i as u32,
                target: inbound.service_socket(),
                interval: probe.interval.as_ref().map_or(DEFAULT_INTERVAL, |d| d.get()),
                timeout: probe.timeout.as_ref().map_or(DEFAULT_TIMEOUT, |d| d.get()),
                healthy_threshold: probe.healthy_threshold.unwrap_or(DEFAULT_THRESHOLD),
                unhealthy_threshold: probe.unhealthy_threshold.unwrap_or(DEFAULT_THRESHOLD),
            })
        })
        .collect()
}

/// Health decided from results in a row: the first result decides, then a change needs its
/// threshold of results in a row.
#[derive(Debug, Default)]
struct Verdict {
    healthy: Option<bool>,
    streak: u32,
}

impl Verdict {
    /// Records one result; the new health when it changes.
    fn record(&mut self, ok: bool, probe: &Probe) -> Option<bool> {
        match self.healthy {
            Some(healthy) if healthy == ok => {
                self.streak = 0;
                None
            }
            Some(_) => {
                self.streak += 1;
                let needed = if ok { probe.healthy_threshold } else { probe.unhealthy_threshold };
                (self.streak >= needed).then(|| {
                    self.streak = 0;
                    self.healthy = Some(ok);
                    ok
                })
            }
            None => {
                self.healthy = Some(ok);
                Some(ok)
            }
        }
    }
}

/// Probes until `stop`, recording each change of health in `state`.
pub async fn run(probe: Probe, state: Arc<State>, stop: CancellationToken) {
    let mut verdict = Verdict::default();
    let mut ticks = tokio::time::interval(probe.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        let ok = matches!(
            tokio::time::timeout(probe.timeout, tokio::net::TcpStream::connect(probe.target)).await,
            Ok(Ok(_))
        );
        if let Some(healthy) = verdict.record(ok, &probe) {
            if healthy {
                tracing::info!(target = %probe.target, inbound = probe.inbound, "the application answers its probe: inbound healthy");
            } else {
                tracing::warn!(target = %probe.target, inbound = probe.inbound, "the application does not answer its probe: inbound unhealthy");
            }
            state.set_inbound_health(probe.inbound, healthy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataplane(yaml: &str) -> Dataplane {
        let doc = ward_api::parse::documents(yaml).unwrap().remove(0);
        match ward_api::parse::resource(doc, "test").unwrap().spec {
            ward_api::Spec::Dataplane(dp) => dp,
            _ => unreachable!(),
        }
    }

    #[test]
    fn probes_take_kumas_defaults_and_skip_ignored_inbounds() {
        let dp = dataplane(
            "type: Dataplane\nmesh: m\nname: a\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  \
             - port: 8080\n    servicePort: 80\n    serviceProbe: {tcp: {}}\n    tags: {kuma.io/service: web}\n  \
             - port: 8081\n    tags: {kuma.io/service: web}\n  \
             - port: 8082\n    serviceAddress: 10.0.0.9\n    state: Ignored\n    serviceProbe: {tcp: {}}\n    tags: {kuma.io/service: web}\n  \
             - port: 8083\n    serviceAddress: 10.0.0.9\n    \
             serviceProbe: {interval: 5s, timeout: 3s, healthyThreshold: 2, unhealthyThreshold: 3, tcp: {}}\n    \
             tags: {kuma.io/service: web}\n",
        );
        let probes = probes(&dp);
        assert_eq!(
            probes,
            [
                Probe {
                    inbound: 0,
                    target: "127.0.0.1:80".parse().unwrap(),
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(2),
                    healthy_threshold: 1,
                    unhealthy_threshold: 1,
                },
                Probe {
                    inbound: 3,
                    target: "10.0.0.9:8083".parse().unwrap(),
                    interval: Duration::from_secs(5),
                    timeout: Duration::from_secs(3),
                    healthy_threshold: 2,
                    unhealthy_threshold: 3,
                },
            ]
        );
    }

    #[test]
    fn health_changes_after_its_threshold_of_results_in_a_row() {
        let probe = Probe {
            inbound: 0,
            target: "127.0.0.1:1".parse().unwrap(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        };
        let mut verdict = Verdict::default();
        let results = [true, false, false, true, false, false, false, true, true, true];
        let changes: Vec<Option<bool>> = results.iter().map(|ok| verdict.record(*ok, &probe)).collect();
        let want = [Some(true), None, None, None, None, None, Some(false), None, Some(true), None];
        assert_eq!(changes, want);
    }
}
