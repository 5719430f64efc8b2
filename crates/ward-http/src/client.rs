//! One multiplexed HTTP/2 connection per destination, shared by every request to it and
//! opened again when it closed.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex},
};

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Body;

/// Why no HTTP/2 connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum Http2ConnectError<E> {
    /// Connecting (TCP, TLS) failed.
    #[error(transparent)]
    Connect(E),
    /// The HTTP/2 handshake failed.
    #[error("HTTP/2 handshake: {0}")]
    Handshake(hyper::Error),
}

type Slot = Arc<tokio::sync::Mutex<Option<http2::SendRequest<Body>>>>;

/// Open HTTP/2 connections by destination.
pub struct Http2Connections<K> {
    builder: http2::Builder<TokioExecutor>,
    slots: Mutex<HashMap<K, Slot>>,
}

impl<K> fmt::Debug for Http2Connections<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Http2Connections")
    }
}

impl<K: Eq + Hash + Clone + fmt::Debug + Send + 'static> Http2Connections<K> {
    /// Connections opened with `builder`.
    pub fn new(builder: http2::Builder<TokioExecutor>) -> Self {
        Http2Connections { builder, slots: Mutex::default() }
    }

    /// A sender on the open connection to `key`, ready for a request; `connect` opens one
    /// when there is none (one connect at a time per destination).
    pub async fn sender<F, Fut, IO, E>(
        &self,
        key: K,
        connect: F,
    ) -> Result<http2::SendRequest<Body>, Http2ConnectError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<IO, E>>,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.sender_until(key, || async { connect().await.map(|io| (io, std::future::pending::<()>())) }).await
    }

    /// Like [`Http2Connections::sender`], for connections that must also end, with every
    /// stream on them, when a future of their own completes (a peer no longer trusted):
    /// `connect` gives the connection and that future.
    pub async fn sender_until<F, Fut, IO, S, E>(
        &self,
        key: K,
        connect: F,
    ) -> Result<http2::SendRequest<Body>, Http2ConnectError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(IO, S), E>>,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Future<Output = ()> + Send + 'static,
    {
        let slot = self.slots.lock().expect("HTTP/2 connections lock").entry(key.clone()).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let (io, stop) = connect().await.map_err(Http2ConnectError::Connect)?;
        let (sender, connection) =
            self.builder.handshake(TokioIo::new(io)).await.map_err(Http2ConnectError::Handshake)?;
        tokio::spawn(async move {
            tokio::select! {
                result = connection => if let Err(e) = result {
                    tracing::debug!(destination = ?key, error = %e, "HTTP/2 connection ended");
                },
                () = stop => tracing::debug!(destination = ?key, "HTTP/2 connection closed by its owner"),
            }
        });
        *slot = Some(sender.clone());
        Ok(sender)
    }
}
