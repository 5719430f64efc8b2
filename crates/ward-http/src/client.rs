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

/// Whether an open connection may still take new requests.
pub type Fresh = Box<dyn Fn() -> bool + Send + Sync>;

type Slot = Arc<tokio::sync::Mutex<Option<(http2::SendRequest<Body>, Fresh)>>>;

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
        let always: fn() -> Fresh = || Box::new(|| true);
        self.sender_until(key, || async { connect().await.map(|io| (io, std::future::pending::<()>(), always())) })
            .await
    }

    /// Like [`Http2Connections::sender`], for connections that must also end, with every
    /// stream on them, when a future of their own completes (a peer no longer trusted), and
    /// that take new requests only while they are fresh (say, until either side renewed its
    /// certificate): `connect` gives the connection, that future and the freshness test. A
    /// connection no longer fresh is left to finish its requests; the next one opens anew.
    pub async fn sender_until<F, Fut, IO, S, E>(
        &self,
        key: K,
        connect: F,
    ) -> Result<http2::SendRequest<Body>, Http2ConnectError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(IO, S, Fresh), E>>,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Future<Output = ()> + Send + 'static,
    {
        let slot = self.slots.lock().expect("HTTP/2 connections lock").entry(key.clone()).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some((sender, _)) = slot.as_ref().filter(|(s, fresh)| !s.is_closed() && fresh()) {
            return Ok(sender.clone());
        }
        // A stale connection's sender goes: it closes once its last request is answered.
        *slot = None;
        let (io, stop, fresh) = connect().await.map_err(Http2ConnectError::Connect)?;
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
        *slot = Some((sender.clone(), fresh));
        Ok(sender)
    }
}
