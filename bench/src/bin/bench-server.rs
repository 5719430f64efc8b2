//! The application behind the proxies: answers every request with 200 and a 1 KiB body, over
//! HTTP/1.1 keep-alive or h2c (prior knowledge).
//!
//! Usage: bench-server PORT

use std::convert::Infallible;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};

const BODY: [u8; 1024] = [b'w'; 1024];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args().nth(1).context("usage: bench-server PORT")?.parse()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_request: Request<Incoming>| async {
                let mut response = Response::new(Full::new(Bytes::from_static(&BODY)));
                response.headers_mut().insert("content-type", "text/plain".parse().expect("valid header"));
                Ok::<_, Infallible>(response)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
