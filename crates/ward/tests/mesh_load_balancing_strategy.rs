//! MeshLoadBalancingStrategy through real proxies, over three `web` instances that answer with
//! their names: round robin by default, consistent hashing of a header, least request, random.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use common::policy_lab::{Extras, Lab, answered_by, outbound_has};

async fn three_webs() -> Lab {
    Lab::start_with(Extras { named_webs: 2, ..Extras::default() }).await
}

async fn apply(lab: &Lab, load_balancer: &str) {
    let policy = format!(
        "type: MeshLoadBalancingStrategy\nmesh: lab\nname: lb-web\nspec:\n  to:\n  - targetRef: {{kind: MeshService, name: web}}\n    \
         default:\n      loadBalancer: {load_balancer}\n"
    );
    let kind = load_balancer.split("type: ").nth(1).and_then(|t| t.split([',', '}']).next()).unwrap().to_string();
    lab.apply(&policy, &lab.client, |r| outbound_has(r, "MeshLoadBalancingStrategy", &kind)).await;
}

/// Connections open now at `proxy`'s inbound.
fn inbound_connections(proxy: &common::mesh::Proxy) -> u64 {
    let (_, metrics) = tokio::task::block_in_place(|| proxy.admin_get("/metrics"));
    metrics
        .lines()
        .filter(|l| l.starts_with("ward_open_connections{") && l.contains("inbound"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Who answers a request to `path` with `headers`.
async fn who(http: &reqwest::Client, lab: &Lab, path: &str, headers: &[(&str, &str)]) -> String {
    let mut request = http.get(lab.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    answered_by(&response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_policy_instances_take_turns() {
    let lab = three_webs().await;
    let http = common::http_client();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        *seen.entry(who(&http, &lab, "/", &[]).await).or_default() += 1;
    }
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), [10, 10, 10], "round robin: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ring_hash_on_a_header_keeps_each_key_on_one_instance() {
    let lab = three_webs().await;
    apply(&lab, "{type: RingHash, ringHash: {hashPolicies: [{type: Header, header: {name: x-user}}]}}").await;
    let http = common::http_client();
    let mut homes = BTreeSet::new();
    for user in 0..20 {
        let user = format!("user-{user}");
        let first = who(&http, &lab, "/", &[("x-user", &user)]).await;
        for _ in 0..5 {
            assert_eq!(who(&http, &lab, "/", &[("x-user", &user)]).await, first, "{user} stays on {first}");
        }
        homes.insert(first);
    }
    assert!(homes.len() >= 2, "different keys land on different instances: {homes:?}");
    // A request without the header has no hash: it may go anywhere.
    let anywhere: BTreeSet<String> = {
        let mut seen = BTreeSet::new();
        for _ in 0..60 {
            seen.insert(who(&http, &lab, "/", &[]).await);
        }
        seen
    };
    assert_eq!(anywhere.len(), 3, "{anywhere:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_request_keeps_away_from_a_busy_instance() {
    let lab = three_webs().await;
    // Drawing all three, the proxy always takes one without a request in flight.
    apply(&lab, "{type: LeastRequest, leastRequest: {choiceCount: 3}}").await;
    let http = common::http_client();
    // One slow request keeps its instance busy; meanwhile every quick one goes elsewhere (round
    // robin would send a third of them to it).
    let slow = tokio::spawn({
        let (http, url) = (http.clone(), lab.url("/?ms=3000"));
        async move { answered_by(&http.get(url).send().await.unwrap().text().await.unwrap()) }
    });
    // It is in flight once an instance's proxy has a connection from the client: there was no
    // traffic to any of them before.
    let proxies = std::iter::once(&lab.web).chain(lab.named.iter().map(|n| &n.proxy)).collect::<Vec<_>>();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxies.iter().any(|p| inbound_connections(p) > 0) {
        assert!(Instant::now() < deadline, "the slow request never reached an instance");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut quick: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..12 {
        *quick.entry(who(&http, &lab, "/", &[]).await).or_default() += 1;
    }
    let busy = slow.await.unwrap();
    assert!(!quick.contains_key(&busy), "{busy} was busy, yet took {quick:?}");
    assert_eq!(quick.len(), 2, "the two others share the quick requests: {quick:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_reaches_every_instance() {
    let lab = three_webs().await;
    apply(&lab, "{type: Random}").await;
    let http = common::http_client();
    let mut order = Vec::new();
    for _ in 0..90 {
        order.push(who(&http, &lab, "/", &[]).await);
    }
    let reached: BTreeSet<&String> = order.iter().collect();
    assert_eq!(reached.len(), 3, "{order:?}");
    // Not in turns, as round robin would be.
    assert!(order.windows(4).any(|w| w[0] != w[3]), "{order:?}");
}
