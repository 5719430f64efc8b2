//! Choosing an instance per request or connection, as a destination's MeshLoadBalancingStrategy
//! says: round robin (the default), least request, random, or consistent hashing of the request
//! (a ketama ring or Maglev's table) as Envoy does for Kuma.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use ward_api::mesh_load_balancing_strategy::{Conf, HashFunction, HashPolicy, HashPolicyType, LoadBalancerType};
use xxhash_rust::xxh64::xxh64;

use crate::config::Endpoint;

/// How instances are chosen: a destination's merged MeshLoadBalancingStrategy, read once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Each instance in turn.
    #[default]
    RoundRobin,
    /// Of `choices` instances drawn at random (without repeats), the one with the fewest
    /// requests in flight.
    LeastRequest {
        /// How many are drawn.
        choices: usize,
    },
    /// An instance drawn at random.
    Random,
    /// The instance after the request's hash on a ring of the instances' hashes.
    RingHash {
        /// Entries on the ring at least and at most.
        sizes: (u64, u64),
        /// Places instances on the ring.
        function: HashFunction,
        /// What is hashed.
        keys: Vec<HashKey>,
    },
    /// The instance in the slot of the request's hash in Maglev's table.
    Maglev {
        /// Slots in the table (a prime).
        table_size: u64,
        /// What is hashed.
        keys: Vec<HashKey>,
    },
}

/// One hash policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashKey {
    source: Source,
    terminal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Header(http::HeaderName),
    Cookie(String),
    Query(String),
}

impl Strategy {
    /// The strategy of a merged MeshLoadBalancingStrategy conf.
    pub fn from_conf(conf: &serde_json::Value) -> Result<Strategy, String> {
        let conf: Conf =
            serde_json::from_value(conf.clone()).map_err(|e| format!("MeshLoadBalancingStrategy conf: {e}"))?;
        let Some(lb) = &conf.load_balancer else { return Ok(Strategy::RoundRobin) };
        let keys = |own: Option<&Vec<HashPolicy>>| -> Result<Vec<HashKey>, String> {
            own.or(conf.hash_policies.as_ref()).into_iter().flatten().map(HashKey::from_policy).collect()
        };
        Ok(match lb.kind {
            LoadBalancerType::RoundRobin => Strategy::RoundRobin,
            LoadBalancerType::Random => Strategy::Random,
            LoadBalancerType::LeastRequest => Strategy::LeastRequest {
                choices: lb.least_request.as_ref().and_then(|l| l.choice_count).unwrap_or(2).max(2) as usize,
            },
            LoadBalancerType::RingHash => {
                let ring = lb.ring_hash.clone().unwrap_or_default();
                let max = u64::from(ring.max_ring_size.unwrap_or(8_388_608));
                Strategy::RingHash {
                    sizes: (u64::from(ring.min_ring_size.unwrap_or(1024)).min(max), max),
                    function: ring.hash_function.unwrap_or(HashFunction::XxHash),
                    keys: keys(ring.hash_policies.as_ref())?,
                }
            }
            LoadBalancerType::Maglev => {
                let maglev = lb.maglev.clone().unwrap_or_default();
                Strategy::Maglev {
                    table_size: u64::from(maglev.table_size.unwrap_or(65_537)),
                    keys: keys(maglev.hash_policies.as_ref())?,
                }
            }
        })
    }

    fn keys(&self) -> &[HashKey] {
        match self {
            Strategy::RingHash { keys, .. } | Strategy::Maglev { keys, .. } => keys,
            _ => &[],
        }
    }
}

impl HashKey {
    fn from_policy(policy: &HashPolicy) -> Result<HashKey, String> {
        let named = |n: Option<&ward_api::mesh_load_balancing_strategy::Named>| n.map(|n| n.name.clone());
        let source = match policy.kind {
            HashPolicyType::Header => named(policy.header.as_ref())
                .and_then(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
                .map(Source::Header),
            HashPolicyType::Cookie => policy.cookie.as_ref().map(|c| Source::Cookie(c.name.clone())),
            HashPolicyType::QueryParameter => named(policy.query_parameter.as_ref()).map(Source::Query),
            _ => None,
        };
        let source = source.ok_or_else(|| format!("hash policy {} cannot be served", policy.kind))?;
        Ok(HashKey { source, terminal: policy.terminal.unwrap_or(false) })
    }

    /// This key's hash of `request`, if the request has what it hashes.
    fn hash<B>(&self, request: &http::Request<B>) -> Option<u64> {
        match &self.source {
            Source::Header(name) => {
                let values: Vec<&[u8]> = request.headers().get_all(name).iter().map(|v| v.as_bytes()).collect();
                (!values.is_empty()).then(|| xxh64(&values.concat(), 0))
            }
            Source::Cookie(name) => request
                .headers()
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    pair.trim().split_once('=').filter(|(k, _)| *k == name.as_str()).map(|(_, v)| v.to_string())
                })
                .map(|v| xxh64(v.as_bytes(), 0)),
            Source::Query(name) => request.uri().query().into_iter().flat_map(|q| q.split('&')).find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name.as_str()).then(|| xxh64(v.as_bytes(), 0))
            }),
        }
    }
}

/// A ring (sorted hashes) or Maglev table (slots) of (hash or slot, instance index), with the
/// instances it was built for.
type KeptTable = (Vec<SocketAddr>, Arc<Vec<(u64, usize)>>);

/// Chooses instances of one destination and counts what is in flight to each.
#[derive(Debug, Default)]
pub struct Balancer {
    strategy: Strategy,
    next: AtomicUsize,
    in_flight: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
    /// The ring or table, with the instances it was built for.
    table: Mutex<Option<KeptTable>>,
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

    /// The strategy it uses.
    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }

    /// The request's hash under the strategy's hash policies, as Envoy combines them: each
    /// policy's hash folded into the previous ones, and a terminal policy that made one ends
    /// the list. `None`: nothing to hash (a hashing strategy then picks at random).
    pub fn hash<B>(&self, request: &http::Request<B>) -> Option<u64> {
        let mut hash: Option<u64> = None;
        for key in self.strategy.keys() {
            if let Some(h) = key.hash(request) {
                hash = Some(hash.map_or(h, |old| old.rotate_left(1) ^ h));
                if key.terminal {
                    break;
                }
            }
        }
        hash
    }

    /// An endpoint for a request or connection without a hash, and its in-flight mark.
    pub fn pick<'a>(&self, endpoints: &'a [Endpoint]) -> Option<(&'a Endpoint, InFlight)> {
        self.pick_hashed(endpoints, None)
    }

    /// An endpoint for a request of hash `hash`, and its in-flight mark; `None` when there is none.
    pub fn pick_hashed<'a>(&self, endpoints: &'a [Endpoint], hash: Option<u64>) -> Option<(&'a Endpoint, InFlight)> {
        let n = endpoints.len();
        let index = match (&self.strategy, n) {
            (_, 0) => return None,
            (_, 1) => 0,
            (Strategy::RoundRobin, n) => self.next.fetch_add(1, Ordering::Relaxed) % n,
            (Strategy::Random, n) => rand::random_range(0..n),
            (Strategy::LeastRequest { choices }, n) => {
                let drawn = rand::seq::index::sample(&mut rand::rng(), n, (*choices).min(n));
                drawn.iter().min_by_key(|&i| self.load(&endpoints[i])).unwrap_or(0)
            }
            (Strategy::RingHash { .. } | Strategy::Maglev { .. }, n) => match hash {
                None => rand::random_range(0..n),
                Some(hash) => self.lookup(endpoints, hash),
            },
        };
        let endpoint = &endpoints[index];
        let counter = self.counter(endpoint);
        counter.fetch_add(1, Ordering::Relaxed);
        Some((endpoint, InFlight(counter)))
    }

    /// The index of the instance `hash` falls to, building the ring or table for these
    /// instances when they changed.
    fn lookup(&self, endpoints: &[Endpoint], hash: u64) -> usize {
        let addresses: Vec<SocketAddr> = endpoints.iter().map(|e| e.address).collect();
        let table = {
            let mut kept = self.table.lock().expect("hash table lock");
            match kept.as_ref() {
                Some((seen, table)) if *seen == addresses => table.clone(),
                _ => {
                    let table = Arc::new(match &self.strategy {
                        Strategy::Maglev { table_size, .. } => maglev_table(&addresses, *table_size),
                        Strategy::RingHash { sizes, function, .. } => ring(&addresses, *sizes, *function),
                        _ => Vec::new(),
                    });
                    *kept = Some((addresses, table.clone()));
                    table
                }
            }
        };
        match &self.strategy {
            Strategy::Maglev { table_size, .. } => table[(hash % table_size) as usize].1,
            _ => {
                let at = table.partition_point(|(h, _)| *h < hash);
                table[if at == table.len() { 0 } else { at }].1
            }
        }
    }

    fn load(&self, endpoint: &Endpoint) -> usize {
        self.counter(endpoint).load(Ordering::Relaxed)
    }

    fn counter(&self, endpoint: &Endpoint) -> Arc<AtomicUsize> {
        self.in_flight.lock().expect("in-flight lock").entry(endpoint.address).or_default().clone()
    }
}

/// A ketama ring of equally weighted `hosts`: each placed `size / n` times (the size between
/// the ring's bounds), at the hashes of `"ADDRESS_i"`, sorted.
fn ring(hosts: &[SocketAddr], (min, max): (u64, u64), function: HashFunction) -> Vec<(u64, usize)> {
    let n = hosts.len() as u64;
    let size = min.div_ceil(n).saturating_mul(n).min(max).max(n);
    let per_host = size / n;
    let mut ring = Vec::with_capacity(size as usize);
    for (index, host) in hosts.iter().enumerate() {
        for i in 0..per_host {
            let key = format!("{host}_{i}");
            let hash = match function {
                HashFunction::XxHash => xxh64(key.as_bytes(), 0),
                HashFunction::MurmurHash2 => murmur2_64(key.as_bytes(), 0xc70f_6907),
            };
            ring.push((hash, index));
        }
    }
    ring.sort_unstable();
    ring
}

/// Maglev's lookup table of equally weighted `hosts`: each host fills the slots of its
/// permutation (offset and skip from its address's hashes) in turn until every slot is taken.
fn maglev_table(hosts: &[SocketAddr], size: u64) -> Vec<(u64, usize)> {
    let prefs: Vec<(u64, u64)> = hosts
        .iter()
        .map(|h| {
            let key = h.to_string();
            (xxh64(key.as_bytes(), 0) % size, xxh64(key.as_bytes(), 1) % (size - 1) + 1)
        })
        .collect();
    let mut table = vec![(0u64, usize::MAX); size as usize];
    let mut next = vec![0u64; hosts.len()];
    let mut filled = 0;
    'fill: loop {
        for (index, (offset, skip)) in prefs.iter().enumerate() {
            loop {
                let slot = ((offset + next[index] * skip) % size) as usize;
                next[index] += 1;
                if table[slot].1 == usize::MAX {
                    table[slot] = (slot as u64, index);
                    filled += 1;
                    break;
                }
            }
            if filled == size {
                break 'fill;
            }
        }
    }
    table
}

/// MurmurHash64A, as libstdc++'s 64-bit `_Hash_bytes` (Envoy's MurmurHash2).
fn murmur2_64(data: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    let mut hash = seed ^ (data.len() as u64).wrapping_mul(M);
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut k = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> 47;
        k = k.wrapping_mul(M);
        hash ^= k;
        hash = hash.wrapping_mul(M);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate() {
            hash ^= u64::from(*b) << (8 * i);
        }
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 47;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 47;
    hash
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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

    fn strategy(lb: serde_json::Value) -> Strategy {
        Strategy::from_conf(&json!({ "loadBalancer": lb })).unwrap()
    }

    fn request(header: &str) -> http::Request<()> {
        http::Request::builder().uri("/?user=u1").header("x-user", header).body(()).unwrap()
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
        let b = Balancer::new(strategy(json!({"type": "LeastRequest"})));
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

    #[test]
    fn hashing_strategies_keep_a_key_on_one_instance_and_move_few_keys_when_one_goes() {
        let policies = json!([{"type": "Header", "header": {"name": "x-user"}}]);
        for lb in [
            json!({"type": "RingHash", "ringHash": {"hashPolicies": policies}}),
            json!({"type": "RingHash", "ringHash": {"hashFunction": "MurmurHash2", "hashPolicies": policies}}),
            json!({"type": "Maglev", "maglev": {"tableSize": 65537, "hashPolicies": policies}}),
        ] {
            let b = Balancer::new(strategy(lb.clone()));
            let eps = endpoints(5);
            let chosen = |eps: &[Endpoint], key: &str| {
                let hash = b.hash(&request(key));
                b.pick_hashed(eps, hash).unwrap().0.address
            };
            let before: Vec<SocketAddr> = (0..200).map(|k| chosen(&eps, &format!("user-{k}"))).collect();
            for (k, address) in before.iter().enumerate() {
                assert_eq!(chosen(&eps, &format!("user-{k}")), *address, "{lb}: the same key, the same instance");
            }
            let spread: std::collections::HashSet<_> = before.iter().collect();
            assert_eq!(spread.len(), 5, "{lb}: keys spread over every instance");
            let fewer = &eps[1..];
            let moved =
                (0..200).filter(|k| before[*k] != eps[0].address && chosen(fewer, &format!("user-{k}")) != before[*k]);
            assert!(moved.count() < 30, "{lb}: keys of the remaining instances mostly stay");
        }
    }

    #[test]
    fn hash_policies_read_headers_cookies_and_query_parameters_and_stop_at_a_terminal_one() {
        let b = Balancer::new(strategy(json!({"type": "RingHash", "ringHash": {"hashPolicies": [
            {"type": "QueryParameter", "queryParameter": {"name": "user"}, "terminal": true},
            {"type": "Header", "header": {"name": "x-user"}},
        ]}})));
        assert_eq!(b.hash(&request("a")), b.hash(&request("b")), "the terminal query parameter decides");
        let cookie = Balancer::new(strategy(json!({"type": "Maglev", "maglev": {"hashPolicies": [
            {"type": "Cookie", "cookie": {"name": "session"}},
        ]}})));
        let with = |c: &str| http::Request::builder().header("cookie", c).body(()).unwrap();
        assert_eq!(cookie.hash(&with("a=1; session=s1")), cookie.hash(&with("session=s1")));
        assert_ne!(cookie.hash(&with("session=s1")), cookie.hash(&with("session=s2")));
        assert_eq!(cookie.hash(&with("other=1")), None);
    }
}
