//! The tour: every call the demo tries, what DESIGN.md says should happen, and what did.

use std::{fmt, time::Duration};

use super::ports::{Ports, SERVICES};

/// Who may call whom in the marketplace.
const ALLOWED: [(&str, &str); 3] = [("invoices", "users"), ("invoices", "items"), ("users", "invoices")];

/// What a call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer.
    Status(u16),
    /// No HTTP answer: the connection was refused or closed.
    Refused,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Status(s) => write!(f, "{s}"),
            Outcome::Refused => f.write_str("refused"),
        }
    }
}

/// One call of the tour.
pub struct Row {
    from: String,
    to: String,
    call: String,
    expected: Outcome,
    actual: Outcome,
    note: String,
}

impl Row {
    /// Whether it went as expected.
    pub fn matched(&self) -> bool {
        self.expected == self.actual
    }
}

async fn get(http: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (Outcome, String) {
    let mut request = http.get(url).timeout(Duration::from_secs(10));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (Outcome::Status(status), r.text().await.unwrap_or_default())
        }
        Err(_) => (Outcome::Refused, String::new()),
    }
}

/// A few words on an answer's body, for the table.
fn summary(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if let Some(total) = json["totalCents"].as_u64() {
        return format!(
            "invoice for {} built from users and items: {} cents",
            json["customer"].as_str().unwrap_or("?"),
            total
        );
    }
    if let Some(caller) = json["caller"].as_str() {
        return format!("the application saw caller {caller}");
    }
    json["message"]
        .as_str()
        .or(json["error"].as_str())
        .map_or_else(|| body.trim().chars().take(60).collect(), String::from)
}

/// Tries every call through the proxies (and, with `gateway_key`, through the gateway).
pub async fn run(ports: Ports, gateway_key: Option<&str>) -> Vec<Row> {
    let http = reqwest::Client::builder().no_proxy().build().expect("HTTP client");
    let mut rows = Vec::new();
    if let Some(key) = gateway_key {
        let gateway = format!("http://127.0.0.1:{}", ports.gateway());
        for (path, headers, expected) in [
            ("/users", vec![("apikey", key)], 200),
            ("/items", vec![("apikey", key)], 200),
            ("/invoices/1", vec![("apikey", key)], 200),
            ("/users", vec![], 401),
            ("/users", vec![("apikey", "wrong-key")], 401),
        ] {
            let (actual, body) = get(&http, &format!("{gateway}{path}"), &headers).await;
            let call = if headers.is_empty() {
                format!("GET {path}, no key")
            } else if headers[0].1 == key {
                format!("GET {path} with the key")
            } else {
                format!("GET {path}, wrong key")
            };
            rows.push(Row {
                from: "internet".into(),
                to: "gateway".into(),
                call,
                expected: Outcome::Status(expected),
                actual,
                note: summary(&body),
            });
        }
    }
    for (c, caller) in SERVICES.iter().enumerate().map(|(i, s)| (i + 1, *s)) {
        for (s, service) in SERVICES.iter().enumerate().map(|(i, s)| (i + 1, *s)) {
            let path = if (caller, service) == ("users", "invoices") {
                "/invoices/1".to_string()
            } else {
                format!("/{service}")
            };
            let url = format!("http://127.0.0.1:{}{path}", ports.outbound(c, s));
            let (actual, body) = get(&http, &url, &[]).await;
            let expected = if ALLOWED.contains(&(caller, service)) { 200 } else { 403 };
            rows.push(Row {
                from: caller.into(),
                to: service.into(),
                call: format!("GET {path}"),
                expected: Outcome::Status(expected),
                actual,
                note: summary(&body),
            });
        }
    }
    for (s, service) in SERVICES.iter().enumerate().map(|(i, s)| (i + 1, *s)) {
        let url = format!("http://127.0.0.1:{}/{service}", ports.inbound(s));
        let (actual, _) = get(&http, &url, &[]).await;
        let note = "plaintext straight to the inbound: no certificate, no entry".to_string();
        rows.push(Row {
            from: "outsider".into(),
            to: service.into(),
            call: format!("GET /{service}"),
            expected: Outcome::Refused,
            actual,
            note,
        });
    }
    rows
}

/// The tour as a table.
pub fn table(rows: &[Row]) -> String {
    let header = ["FROM", "TO", "CALL", "EXPECTED", "ACTUAL", "", "WHAT HAPPENED"].map(String::from);
    let cells: Vec<[String; 7]> = std::iter::once(header)
        .chain(rows.iter().map(|r| {
            [
                r.from.clone(),
                r.to.clone(),
                r.call.clone(),
                r.expected.to_string(),
                r.actual.to_string(),
                if r.matched() { "ok" } else { "MISMATCH" }.to_string(),
                r.note.clone(),
            ]
        }))
        .collect();
    let widths: Vec<usize> = (0..7).map(|c| cells.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}
