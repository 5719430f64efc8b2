//! The accept loop every listener of the proxy and the gateway runs: a cap on the connections
//! open at once on the listener and, optionally, from one client address; backing off when the
//! process is out of file descriptors instead of spinning; every connection tracked, so that
//! shutdown can stop accepting and wait for the open ones to finish.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::Limits;

/// First pause after an accept failure that is not the connection's own.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// Longest pause between accept attempts while failures last.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accept errors that concern one connection only, after which the next accept may follow at once.
const CONNECTION_ERRORS: [io::ErrorKind; 3] =
    [io::ErrorKind::ConnectionAborted, io::ErrorKind::ConnectionReset, io::ErrorKind::Interrupted];

/// Connections open from each client address.
#[derive(Debug, Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

impl PerClient {
    /// A slot for one more connection from `ip`, unless it holds `max` already.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut open = self.0.lock().expect("per-client counts lock");
        let count = open.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ClientSlot { counts: self.clone(), ip })
    }
}

/// One open connection of a client address; counted until dropped.
struct ClientSlot {
    counts: Arc<PerClient>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.counts.0.lock().expect("per-client counts lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` until `stop`, handing each to `handle` in a task that
/// `connections` tracks. Beyond `limits.max_connections` open on this listener, or
/// `limits.max_connections_per_client` from one address, a new connection is closed at once.
/// The listener is closed when this returns, so connecting fails from then on.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    limits: &Limits,
    connections: &TaskTracker,
    stop: CancellationToken,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient::default());
    let mut backoff = FIRST_BACKOFF;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if CONNECTION_ERRORS.contains(&e.kind()) => continue,
            Err(e) => {
                // Out of file descriptors or memory: the pending connection stays queued in the
                // kernel; try again later rather than at once.
                if backoff == FIRST_BACKOFF {
                    tracing::warn!(error = %e, "accept failed: backing off until it succeeds again");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, limit = limits.max_connections, "listener connection limit reached: connection closed");
            continue;
        };
        let slot = match limits.max_connections_per_client {
            Some(max) => match per_client.take(peer.ip().to_canonical(), max) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(%peer, limit = max, "per-client connection limit reached: connection closed");
                    continue;
                }
            },
            None => None,
        };
        let _ = tcp.set_nodelay(true);
        let connection = handle(tcp, peer);
        connections.spawn(async move {
            connection.await;
            drop((permit, slot));
        });
    }
}

/// Stops tracking new connections and waits up to `grace` for the open ones to finish; whether
/// they all did.
pub async fn drain(connections: &TaskTracker, grace: Duration) -> bool {
    connections.close();
    if tokio::time::timeout(grace, connections.wait()).await.is_ok() {
        return true;
    }
    tracing::warn!(open = connections.len(), ?grace, "shutdown grace period over; closing what is left");
    false
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A listener on loopback serving with `limits`; each connection is held until the client closes it.
    async fn listen(limits: Limits) -> (SocketAddr, CancellationToken, TaskTracker) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
        let (s, t) = (stop.clone(), tracker.clone());
        tokio::spawn(async move {
            serve(listener, &limits, &t, s, |mut tcp, _| async move {
                let mut buf = [0u8; 1];
                let _ = tcp.read(&mut buf).await;
            })
            .await
        });
        (address, stop, tracker)
    }

    /// Whether the server closes a new connection from `source` at once.
    async fn closed_at_once(address: SocketAddr, source: IpAddr) -> (bool, TcpStream) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let mut tcp = socket.connect(address).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await;
        (matches!(read, Ok(Ok(0)) | Ok(Err(_))), tcp)
    }

    #[tokio::test]
    async fn caps_connections_per_listener_and_per_client() {
        let limits = Limits { max_connections: 3, max_connections_per_client: Some(2), ..Limits::default() };
        let (address, _stop, _tracker) = listen(limits).await;
        let one: IpAddr = [127, 0, 0, 1].into();
        let two: IpAddr = [127, 0, 0, 2].into();
        let mut held = Vec::new();
        for _ in 0..2 {
            let (closed, tcp) = closed_at_once(address, one).await;
            assert!(!closed, "within the per-client cap");
            held.push(tcp);
        }
        assert!(closed_at_once(address, one).await.0, "a third from the same address is closed");
        let (closed, tcp) = closed_at_once(address, two).await;
        assert!(!closed, "another address is served");
        held.push(tcp);
        assert!(closed_at_once(address, [127, 0, 0, 3].into()).await.0, "beyond the listener's cap");
        drop(held.remove(0));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while closed_at_once(address, one).await.0 {
            assert!(tokio::time::Instant::now() < deadline, "a freed slot is given again");
        }
    }

    #[tokio::test]
    async fn stopping_closes_the_listener_and_drain_waits_for_connections() {
        let (address, stop, tracker) = listen(Limits::default()).await;
        let tcp = TcpStream::connect(address).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tracker.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the connection is tracked");
            tokio::task::yield_now().await;
        }
        stop.cancel();
        while TcpStream::connect(address).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "connecting fails once stopped");
            tokio::task::yield_now().await;
        }
        assert!(!drain(&tracker, Duration::from_millis(100)).await, "the open connection is still there");
        drop(tcp);
        assert!(drain(&tracker, Duration::from_secs(5)).await);
    }
}
