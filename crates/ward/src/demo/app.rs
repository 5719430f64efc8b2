//! `ward demo-app --name users|items|invoices`: the marketplace's small JSON services.
//! invoices builds an invoice by calling users and items through its proxy's outbounds.

use std::{net::SocketAddr, sync::Arc};

use anyhow::{Context, bail};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

/// The three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    /// Customers.
    Users,
    /// The catalogue.
    Items,
    /// Invoices built from users and items.
    Invoices,
}

/// `ward demo-app` arguments.
#[derive(Debug, Args)]
pub struct DemoAppArgs {
    /// Which service to be.
    #[arg(long, value_enum)]
    name: Service,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8101")]
    listen: SocketAddr,
    /// Base URL of users (invoices only): its proxy's outbound, e.g. http://127.0.0.1:8331.
    #[arg(long)]
    users_url: Option<String>,
    /// Base URL of items (invoices only): its proxy's outbound, e.g. http://127.0.0.1:8332.
    #[arg(long)]
    items_url: Option<String>,
}

struct App {
    name: Service,
    users_url: String,
    items_url: String,
    http: reqwest::Client,
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(args: DemoAppArgs) -> anyhow::Result<()> {
    let (users_url, items_url) = match (args.name, args.users_url, args.items_url) {
        (Service::Invoices, Some(u), Some(i)) => (u, i),
        (Service::Invoices, _, _) => bail!("--users-url and --items-url: invoices needs both (its proxy's outbounds)"),
        (_, _, _) => (String::new(), String::new()),
    };
    let app =
        Arc::new(App { name: args.name, users_url, items_url, http: reqwest::Client::builder().no_proxy().build()? });
    let router = Router::new()
        .route("/", get(index))
        .route("/users", get(users))
        .route("/users/{id}", get(user))
        .route("/items", get(items))
        .route("/invoices/{id}", get(invoice))
        .with_state(app.clone());
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("--listen {}", args.listen))?;
    tracing::info!(service = ?args.name, address = %args.listen, "demo app listening");
    axum::serve(listener, router).with_graceful_shutdown(crate::cp::shutdown_signal()).await?;
    Ok(())
}

/// Who called, as the proxy in front says.
fn caller(headers: &HeaderMap) -> Value {
    headers.get("x-ward-peer-identity").and_then(|v| v.to_str().ok()).map_or(Value::Null, |v| v.into())
}

fn service_name(name: Service) -> &'static str {
    match name {
        Service::Users => "users",
        Service::Items => "items",
        Service::Invoices => "invoices",
    }
}

type Answer = (StatusCode, Json<Value>);

fn not_served(app: &App, what: &str) -> Answer {
    let message = format!("{} does not serve {what}", service_name(app.name));
    (StatusCode::NOT_FOUND, Json(json!({ "error": message })))
}

async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Json<Value> {
    Json(json!({ "service": service_name(app.name), "caller": caller(&headers) }))
}

const USERS: [(u64, &str); 2] = [(1, "Ada Lovelace"), (2, "Grace Hopper")];
const ITEMS: [(u64, &str, u64); 3] = [(1, "fountain pen", 3500), (2, "notebook", 450), (3, "ink", 900)];

async fn users(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    if app.name != Service::Users {
        return not_served(&app, "/users");
    }
    let list: Vec<Value> = USERS.iter().map(|(id, name)| json!({ "id": id, "name": name })).collect();
    (StatusCode::OK, Json(json!({ "service": "users", "caller": caller(&headers), "users": list })))
}

async fn user(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<u64>) -> Answer {
    if app.name != Service::Users {
        return not_served(&app, "/users/{id}");
    }
    match USERS.iter().find(|(i, _)| *i == id) {
        Some((id, name)) => {
            (StatusCode::OK, Json(json!({ "service": "users", "caller": caller(&headers), "id": id, "name": name })))
        }
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no user {id}") }))),
    }
}

async fn items(State(app): State<Arc<App>>, headers: HeaderMap) -> Answer {
    if app.name != Service::Items {
        return not_served(&app, "/items");
    }
    let list: Vec<Value> =
        ITEMS.iter().map(|(id, name, cents)| json!({ "id": id, "name": name, "priceCents": cents })).collect();
    (StatusCode::OK, Json(json!({ "service": "items", "caller": caller(&headers), "items": list })))
}

/// An invoice for user `id`: the user from users, the lines from items' catalogue.
async fn invoice(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<u64>) -> Answer {
    if app.name != Service::Invoices {
        return not_served(&app, "/invoices/{id}");
    }
    let fetch = |url: String| {
        let http = app.http.clone();
        async move {
            let response = http.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if !status.is_success() {
                return Err(format!("{url} answered {}: {}", status.as_u16(), body.trim()));
            }
            serde_json::from_str::<Value>(&body).map_err(|e| format!("{url}: {e}"))
        }
    };
    let (customer, catalogue) =
        tokio::join!(fetch(format!("{}/users/{id}", app.users_url)), fetch(format!("{}/items", app.items_url)));
    let (customer, catalogue) = match (customer, catalogue) {
        (Ok(c), Ok(i)) => (c, i),
        (Err(e), _) | (_, Err(e)) => return (StatusCode::BAD_GATEWAY, Json(json!({ "error": e }))),
    };
    let lines: Vec<Value> = catalogue["items"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, item)| {
            let quantity = i as u64 + 1;
            let amount = item["priceCents"].as_u64().unwrap_or(0) * quantity;
            json!({ "item": item["name"], "quantity": quantity, "amountCents": amount })
        })
        .collect();
    let total: u64 = lines.iter().filter_map(|l| l["amountCents"].as_u64()).sum();
    let body = json!({
        "service": "invoices",
        "caller": caller(&headers),
        "invoice": id,
        "customer": customer["name"],
        "lines": lines,
        "totalCents": total,
    });
    (StatusCode::OK, Json(body))
}
