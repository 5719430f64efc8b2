//! Choosing an endpoint per request or connection: round robin, or the less loaded of two
//! random endpoints (power of two choices, least request).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::config::Endpoint;

/// How endpoints are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Of two endpoints drawn at random, the one with fewer requests in flight.
    LeastRequest,
}

/// Chooses endpoints of one service and counts what is in flight to each.
#[derive(Debug, Default)]
pub struct Balancer {
    strategy: Strategy,
    next: AtomicUsize,
    in_flight: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
}

/// Marks a request in flight to an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    /// A balancer using `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        Balancer { strategy, ..Default::default() }
    }

    /// An endpoint for the next request, and its in-flight mark; `None` when there is none.
    pub fn pick<'a>(&self, endpoints: &'a [Endpoint]) -> Option<(&'a Endpoint, InFlight)> {
        let index = match (self.strategy, endpoints.len()) {
            (_, 0) => return None,
            (_, 1) => 0,
            (Strategy::RoundRobin, n) => self.next.fetch_add(1, Ordering::Relaxed) % n,
            (Strategy::LeastRequest, n) => {
                let a = rand::random_range(0..n);
                let b = (a + rand::random_range(1..n)) % n;
                if self.load(&endpoints[b]) < self.load(&endpoints[a]) { b } else { a }
            }
        };
        let endpoint = &endpoints[index];
        let counter = self.counter(endpoint);
        counter.fetch_add(1, Ordering::Relaxed);
        Some((endpoint, InFlight(counter)))
    }

    fn load(&self, endpoint: &Endpoint) -> usize {
        self.counter(endpoint).load(Ordering::Relaxed)
    }

    fn counter(&self, endpoint: &Endpoint) -> Arc<AtomicUsize> {
        self.in_flight.lock().expect("in-flight lock").entry(endpoint.address).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u16) -> Vec<Endpoint> {
        let identity = ward_pki::SpiffeId::for_service("m", "s").unwrap();
        (0..n)
            .map(|i| Endpoint {
                address: ([127, 0, 0, 1], 1000 + i).into(),
                dataplane: format!("dp-{i}"),
                identity: identity.clone(),
            })
            .collect()
    }

    #[test]
    fn round_robin_takes_each_in_turn() {
        let b = Balancer::new(Strategy::RoundRobin);
        let eps = endpoints(3);
        let picked: Vec<u16> = (0..6).map(|_| b.pick(&eps).unwrap().0.address.port()).collect();
        assert_eq!(picked, [1000, 1001, 1002, 1000, 1001, 1002]);
        assert!(b.pick(&[]).is_none());
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let b = Balancer::new(Strategy::LeastRequest);
        let eps = endpoints(2);
        // Hold many requests on the first endpoint: every pick must go to the other.
        let held: Vec<InFlight> = (0..5)
            .map(|_| {
                InFlight({
                    let c = b.counter(&eps[0]);
                    c.fetch_add(1, Ordering::Relaxed);
                    c
                })
            })
            .collect();
        for _ in 0..20 {
            assert_eq!(b.pick(&eps).unwrap().0.address.port(), 1001);
        }
        drop(held);
        assert_eq!(b.load(&eps[0]), 0);
    }
}
