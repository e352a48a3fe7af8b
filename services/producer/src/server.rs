//! The HTTP server loop: what `axum::serve` does, plus the connection limits it does not offer.
//!
//! - At most `max_connections` connections are open; at the limit the loop stops accepting and
//!   new connections wait in the kernel's backlog (nothing is read from them, so they cost no
//!   memory here).
//! - A connection that has not sent a complete request head within `header_read_timeout` is
//!   closed: a client sending its headers a byte at a time, and an idle keep-alive connection,
//!   alike, and one that sends nothing (hyper starts that timer as soon as it waits for a head).
//! - On shutdown the listener closes, idle connections close at once, requests in progress
//!   finish; after `drain_timeout` whatever is still open is dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// How the server treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a complete request head (also the idle keep-alive limit).
    pub header_read_timeout: Duration,
    /// Longest wait for requests in progress at shutdown.
    pub drain_timeout: Duration,
}

/// How long the loop waits after a failed `accept` (for example too many open files) before
/// trying again, as `axum::serve` does.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` completes, then drains (see the module docs).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    // HTTP/1.1 only: protocol detection (for cleartext HTTP/2) would wait for a first byte
    // with no timeout at all, and no client of this API speaks HTTP/2 without TLS.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let service = router.map_request(|req: Request<Incoming>| req.map(axum::body::Body::new));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed; leaving the loop is the only sane answer.
                Err(_closed) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; retrying in 1s");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let hyper_service = TowerToHyperService::new(service.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), hyper_service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // A client that goes away, or one closed for a slow head, ends here.
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("every HTTP connection closed"),
        () = tokio::time::sleep(limits.drain_timeout) => tracing::warn!(
            drain_timeout = ?limits.drain_timeout,
            "HTTP connections still open after the drain timeout; dropping them"
        ),
    }
}
