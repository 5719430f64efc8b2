//! The `MeshLoadBalancingStrategy` policy: how a dataplane's proxy chooses an instance of each
//! destination (`to[]`), checked as Kuma 2.14's validator checks it.

use serde::{Deserialize, Serialize};

use crate::{
    duration::KumaDuration,
    error::Causes,
    mesh_circuit_breaker::Percent,
    permission::TargetKind,
    rules::{Inbound, Shape, Targeted},
};

/// A MeshLoadBalancingStrategy.
pub type MeshLoadBalancingStrategy = Targeted<Conf>;

/// One `default` of a MeshLoadBalancingStrategy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Conf {
    /// Preference for instances by locality; only `disabled` is served (Ward has no zones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_awareness: Option<LocalityAwareness>,
    /// The algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// What a hashing algorithm hashes, when its own `hashPolicies` are not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicy>>,
}

/// `localityAwareness`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalityAwareness {
    /// Turns locality preference off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Preference by tags within the zone; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_zone: Option<LocalZone>,
    /// Failover between zones; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_zone: Option<CrossZone>,
}

/// `localZone`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalZone {
    /// Tags whose instances are preferred, by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_tags: Option<Vec<AffinityTag>>,
}

/// One `affinityTags` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffinityTag {
    /// The tag.
    pub key: String,
    /// Its weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
}

/// `crossZone`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CrossZone {
    /// Rules in order of priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Vec<Failover>>,
    /// Below this percentage of live instances, the next priority takes traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_threshold: Option<FailoverThreshold>,
}

/// One `failover` rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failover {
    /// The zones it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Zones>,
    /// Where traffic goes.
    pub to: ToZone,
}

/// A list of zones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zones {
    /// The zones.
    pub zones: Vec<String>,
}

/// `failover[].to`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToZone {
    /// `None`, `Only`, `Any` or `AnyExcept`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The zones `Only` and `AnyExcept` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
}

/// `failoverThreshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverThreshold {
    /// The percentage.
    pub percentage: Percent,
}

string_enum! {
    /// The algorithms.
    pub enum LoadBalancerType {
        /// Each instance in turn.
        RoundRobin = "RoundRobin",
        /// The least busy of a few instances drawn at random.
        LeastRequest = "LeastRequest",
        /// Consistent hashing on a ring.
        RingHash = "RingHash",
        /// An instance drawn at random.
        Random = "Random",
        /// Consistent hashing with Maglev's lookup table.
        Maglev = "Maglev",
    }
}

/// `loadBalancer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancer {
    /// Which algorithm.
    #[serde(rename = "type")]
    pub kind: LoadBalancerType,
    /// RoundRobin's settings (none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_robin: Option<Empty>,
    /// LeastRequest's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub least_request: Option<LeastRequest>,
    /// RingHash's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// Random's settings (none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<Empty>,
    /// Maglev's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
}

/// An object without fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `leastRequest`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LeastRequest {
    /// How many instances are drawn (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice_count: Option<u32>,
    /// How strongly requests in flight lower a weighted instance's weight (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_request_bias: Option<Percent>,
}

string_enum! {
    /// The functions placing instances on a ring.
    pub enum HashFunction {
        /// xxHash64.
        XxHash = "XXHash",
        /// MurmurHash2 (64 bits).
        MurmurHash2 = "MurmurHash2",
    }
}

/// `ringHash`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RingHash {
    /// The function that places instances on the ring (default XXHash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_function: Option<HashFunction>,
    /// The fewest entries on the ring (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ring_size: Option<u32>,
    /// The most entries on the ring (default 8M).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ring_size: Option<u32>,
    /// What is hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicy>>,
}

/// `maglev`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Maglev {
    /// The lookup table's size, a prime (default 65537).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u32>,
    /// What is hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicy>>,
}

string_enum! {
    /// What a hash policy hashes.
    pub enum HashPolicyType {
        /// A request header.
        Header = "Header",
        /// A cookie.
        Cookie = "Cookie",
        /// The connection's source address.
        Connection = "Connection",
        /// The source address.
        SourceIp = "SourceIP",
        /// A query parameter.
        QueryParameter = "QueryParameter",
        /// An object of Envoy's filter state.
        FilterState = "FilterState",
    }
}

/// One `hashPolicies` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HashPolicy {
    /// What it hashes.
    #[serde(rename = "type")]
    pub kind: HashPolicyType,
    /// Once a hash is made, this policy's (if it made one) ends the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<bool>,
    /// The header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<Named>,
    /// The cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<Cookie>,
    /// The connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
    /// The query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<Named>,
    /// The filter state object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_state: Option<FilterState>,
}

/// A header or query parameter by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named {
    /// Its name.
    pub name: String,
}

/// `cookie`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cookie {
    /// Its name.
    pub name: String,
    /// Makes the proxy set the cookie when absent, for this long; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<KumaDuration>,
    /// The path of the cookie the proxy sets; refused as not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `connection`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Connection {
    /// Hash the source IP.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "sourceIP")]
    pub source_ip: Option<bool>,
}

/// `filterState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterState {
    /// The object's key.
    pub key: String,
}

/// Checks a MeshLoadBalancingStrategy as Kuma's validator does, with what depends on where an
/// entry points.
pub fn check(policy: &MeshLoadBalancingStrategy, causes: &mut Causes) {
    policy.check(&shape(), causes);
    let top = policy.target_ref.as_ref().map_or(TargetKind::Mesh, |t| t.kind);
    for (i, entry) in policy.to.iter().flatten().enumerate() {
        let (at, conf, target) = (format!("spec.to[{i}]"), &entry.default, &entry.target_ref);
        if target.kind == TargetKind::MeshHTTPRoute {
            for (field, set) in [
                ("loadBalancer", conf.load_balancer.is_some()),
                ("localityAwareness", conf.locality_awareness.is_some()),
            ] {
                if set {
                    causes.add(
                        format!("{at}.default.{field}"),
                        "field is not allowed when targetRef.kind is MeshHTTPRoute, only hashPolicies is supported",
                    );
                }
            }
        }
        if top == TargetKind::MeshGateway && conf.load_balancer.is_some() && target.kind != TargetKind::Mesh {
            causes.add(
                format!("{at}.targetRef.kind"),
                "value 'MeshGateway' is not supported, only Mesh is allowed if loadBalancer is set",
            );
        }
        if target.kind == TargetKind::MeshExternalService && top != TargetKind::Mesh {
            causes.add(
                format!("{at}.targetRef.kind"),
                "kind MeshExternalService is only allowed with targetRef.kind: Mesh as it is configured on the Zone \
                 Egress and shared by all clients in the mesh",
            );
        }
        let local = target.section_name.as_deref().is_some_and(|s| !s.is_empty())
            || target.labels.as_ref().is_some_and(|l| !l.is_empty());
        let cross_zone = conf.locality_awareness.as_ref().and_then(|l| l.cross_zone.as_ref());
        if target.kind == TargetKind::MeshService && local && cross_zone.is_some() {
            causes.add(
                format!("{at}.default.localityAwareness.crossZone"),
                "must not be set: MeshService traffic is local",
            );
        }
    }
}

fn check_locality(locality: &LocalityAwareness, at: &str, causes: &mut Causes) {
    if let Some(local) = &locality.local_zone {
        let tags = local.affinity_tags.as_deref().unwrap_or_default();
        for (i, tag) in tags.iter().enumerate() {
            if tag.key.is_empty() {
                causes.add(format!("{at}.localZone.affinityTags[{i}].key"), "must not be empty");
            }
            if tag.weight.is_some_and(|w| w <= 0) {
                causes.add(format!("{at}.localZone.affinityTags[{i}].weight"), "must be greater than 0");
            }
        }
        let weighted = tags.iter().filter(|t| t.weight.is_some()).count();
        if weighted > 0 && weighted != tags.len() {
            causes.add(format!("{at}.localZone.affinityTags"), "all or none affinity tags should have weight");
        }
    }
    if let Some(cross) = &locality.cross_zone {
        for (i, rule) in cross.failover.iter().flatten().enumerate() {
            let at = format!("{at}.crossZone.failover[{i}]");
            if let Some(from) = &rule.from {
                if from.zones.is_empty() {
                    causes.add(format!("{at}.from.zones"), "must not be empty");
                }
                for (z, zone) in from.zones.iter().enumerate() {
                    if zone.is_empty() {
                        causes.add(format!("{at}.from.zones[{z}]"), "must not be empty");
                    }
                }
            }
            let zones = rule.to.zones.as_ref().is_some_and(|z| !z.is_empty());
            match rule.to.kind.as_str() {
                "Any" | "None" if zones => {
                    causes.add(format!("{at}.to.zones"), format!("must be empty when type is {}", rule.to.kind));
                }
                "AnyExcept" | "Only" if !zones => {
                    causes.add(format!("{at}.to.zones"), format!("must not be empty when type is {}", rule.to.kind));
                }
                "Any" | "None" | "AnyExcept" | "Only" => {}
                _ => causes.add(format!("{at}.to.type"), "unrecognized type"),
            }
        }
        if let Some(threshold) = &cross.failover_threshold {
            match threshold.percentage.number() {
                None => causes.add(format!("{at}.crossZone.failoverThreshold.percentage"), "invalid number"),
                Some(p) if p <= 0.0 || p > 100.0 => causes.add(
                    format!("{at}.crossZone.failoverThreshold.percentage"),
                    "must be in inclusive range [0.0, 100.0]",
                ),
                _ => {}
            }
        }
    }
}

/// The shape Ward serves: outbound destinations only.
pub fn shape() -> Shape<'static, Conf> {
    use TargetKind::*;
    Shape {
        top: &[Mesh, MeshSubset, MeshService, MeshServiceSubset, Dataplane],
        gateways: "Ward's gateway balances with its upstreams' own algorithms (Kong's)",
        to: &[Mesh, MeshService],
        routed_to: None,
        from: &[Mesh],
        inbound: Inbound::None,
        unsupported: &[
            (MeshGateway, "Ward has no MeshGateway"),
            (MeshHTTPRoute, "Ward has no MeshHTTPRoute yet"),
            (MeshMultiZoneService, "Ward runs one zone and has no MeshMultiZoneService"),
            (MeshExternalService, "Ward reaches a MeshExternalService's endpoints directly, without a balancer"),
        ],
        conf: &check_conf,
        conditioned: &|_, _, _| {},
    }
}

/// Envoy's largest ring and Maglev table.
const MAX_RING: u32 = 8_388_608;
const MAX_TABLE: u32 = 5_000_011;

fn check_conf(conf: &Conf, at: &str, causes: &mut Causes) {
    if let Some(locality) = &conf.locality_awareness {
        check_locality(locality, &format!("{at}.localityAwareness"), causes);
        for (field, set) in [("localZone", locality.local_zone.is_some()), ("crossZone", locality.cross_zone.is_some())]
        {
            if set {
                causes.unsupported(
                    format!("{at}.localityAwareness.{field}"),
                    "Ward runs one zone and does not prefer instances by locality; every instance of a \
                     destination is equally near",
                );
            }
        }
    }
    check_hash_policies(conf.hash_policies.as_deref(), &format!("{at}.hashPolicies"), causes);
    let Some(lb) = &conf.load_balancer else { return };
    let at = format!("{at}.loadBalancer");
    let nested = [
        ("roundRobin", lb.round_robin.is_some(), LoadBalancerType::RoundRobin),
        ("leastRequest", lb.least_request.is_some(), LoadBalancerType::LeastRequest),
        ("ringHash", lb.ring_hash.is_some(), LoadBalancerType::RingHash),
        ("random", lb.random.is_some(), LoadBalancerType::Random),
        ("maglev", lb.maglev.is_some(), LoadBalancerType::Maglev),
    ];
    for (field, set, kind) in nested {
        if set && kind != lb.kind {
            causes.add(format!("{at}.{field}"), format!("must not be set when type is {}", lb.kind));
        }
    }
    if let Some(least) = &lb.least_request {
        if least.choice_count.is_some_and(|c| c < 2) {
            causes.add(format!("{at}.leastRequest.choiceCount"), "must be greater than or equal to 2");
        }
        match least.active_request_bias.as_ref().map(Percent::number) {
            Some(None) => causes.add(format!("{at}.leastRequest.activeRequestBias"), "invalid number"),
            Some(Some(b)) if b < 0.0 => {
                causes.add(format!("{at}.leastRequest.activeRequestBias"), "must be greater or equal then: 0");
            }
            _ => {}
        }
    }
    if let Some(ring) = &lb.ring_hash {
        let at = format!("{at}.ringHash");
        for (field, size) in [("minRingSize", ring.min_ring_size), ("maxRingSize", ring.max_ring_size)] {
            if size.is_some_and(|s| s == 0 || s > MAX_RING) {
                causes.add(format!("{at}.{field}"), format!("must be in inclusive range [1, {MAX_RING}]"));
            }
        }
        if let (Some(min), Some(max)) = (ring.min_ring_size, ring.max_ring_size)
            && min > max
        {
            causes.add(format!("{at}.minRingSize"), "must not be greater than maxRingSize");
        }
        check_hash_policies(ring.hash_policies.as_deref(), &format!("{at}.hashPolicies"), causes);
        if conf.hash_policies.is_some() && ring.hash_policies.is_some() {
            causes.add(format!("{at}.hashPolicies"), "hashPolicies already specified in the root level");
        }
    }
    if let Some(maglev) = &lb.maglev {
        let at = format!("{at}.maglev");
        if maglev.table_size.is_some_and(|s| s > MAX_TABLE || !is_prime(s)) {
            causes.add(format!("{at}.tableSize"), format!("must be a prime number up to {MAX_TABLE}"));
        }
        check_hash_policies(maglev.hash_policies.as_deref(), &format!("{at}.hashPolicies"), causes);
        if conf.hash_policies.is_some() && maglev.hash_policies.is_some() {
            causes.add(format!("{at}.hashPolicies"), "hashPolicies already specified in the root level");
        }
    }
}

fn check_hash_policies(policies: Option<&[HashPolicy]>, at: &str, causes: &mut Causes) {
    for (i, p) in policies.into_iter().flatten().enumerate() {
        let at = format!("{at}[{i}]");
        let (field, defined) = match p.kind {
            HashPolicyType::Header => ("header", p.header.is_some()),
            HashPolicyType::Cookie => ("cookie", p.cookie.is_some()),
            HashPolicyType::QueryParameter => ("queryParameter", p.query_parameter.is_some()),
            HashPolicyType::FilterState => ("filterState", p.filter_state.is_some()),
            HashPolicyType::Connection | HashPolicyType::SourceIp => ("connection", p.connection.is_some()),
        };
        if !defined {
            causes.add(format!("{at}.{field}"), "must be defined");
            continue;
        }
        match p.kind {
            HashPolicyType::Header if p.header.as_ref().is_some_and(|h| h.name.is_empty()) => {
                causes.add(format!("{at}.header.name"), "must not be empty");
            }
            HashPolicyType::QueryParameter if p.query_parameter.as_ref().is_some_and(|q| q.name.is_empty()) => {
                causes.add(format!("{at}.queryParameter.name"), "must not be empty");
            }
            HashPolicyType::Cookie => {
                let cookie = p.cookie.as_ref().expect("checked above");
                if cookie.path.as_ref().is_some_and(|p| !p.starts_with('/')) {
                    causes.add(format!("{at}.cookie.path"), "must be an absolute path");
                } else if cookie.ttl.is_some() || cookie.path.is_some() {
                    let field = if cookie.ttl.is_some() { "ttl" } else { "path" };
                    causes.unsupported(
                        format!("{at}.cookie.{field}"),
                        "Ward's proxies hash a cookie the application sends and do not set one",
                    );
                }
            }
            HashPolicyType::Connection | HashPolicyType::SourceIp => causes.unsupported(
                format!("{at}.connection"),
                "a sidecar's callers are its one local application, so Ward does not hash on their address",
            ),
            HashPolicyType::FilterState => {
                causes.unsupported(format!("{at}.filterState"), "Ward's proxies have no Envoy filter state");
            }
            _ => {}
        }
    }
}

fn is_prime(n: u32) -> bool {
    n >= 2 && (2..).take_while(|d: &u32| u64::from(*d) * u64::from(*d) <= u64::from(n)).all(|d| !n.is_multiple_of(d))
}
