//! The agent's HTTP front door, built for hostile clients: at most
//! `MAX_CONNECTIONS` at once, request headers within `HEADER_TIMEOUT`, a
//! response started within `REQUEST_TIMEOUT` (an archive to deploy within
//! `UPLOAD_TIMEOUT`, with no pause over `IDLE_TIMEOUT`). A flood waits at accept and
//! slow clients are cut off, so the dashboard and real webhooks get through.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 1024;
/// A client must send a request's headers within this (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A request (its body included) must be answered within this; a stream
/// such as the live log only has to start.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Serve `router` on `listener` until `shutdown` completes; then accept no
/// more (connections already open finish with the process).
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    raise_open_file_limit();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let router = router.layer(axum::middleware::from_fn(time_limit));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => return,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: back off, then retry.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn time_limit(request: Request, next: Next) -> Response {
    // An archive to deploy may take long to arrive; its handler cuts off
    // one that stalls.
    let limit = if super::upload::is_archive(request.headers()) {
        super::upload::UPLOAD_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "the request took too long\n").into_response(),
    }
}

/// Every connection is a file descriptor: lift the soft limit to the hard
/// one (systemd's default soft limit is 1024) so accept never starves.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(%error, "cannot raise the open file limit");
        }
    }
}
