//! The HTTP side of the coordinator: the accept loop (each connection can be dropped on its own, for an injected
//! reset), the router, and one module per endpoint family of GitLab's runner API:
//!
//! * `gate.rs` — the middleware around every route: the request log, and `inject.rs` (feature `faults`) applying
//!   the faults of the coordinator's fault plan;
//! * `jobs.rs` — `POST /api/v4/jobs/request` (with Workhorse long polling in front of it) and `PUT
//!   /api/v4/jobs/:id`;
//! * `trace.rs` — `PATCH /api/v4/jobs/:id/trace`;
//! * `artifacts.rs` — `POST`/`GET /api/v4/jobs/:id/artifacts` and the object storage behind them;
//! * `registration.rs` — `/api/v4/runners…`: registration, verification, token resets, runner details;
//! * `git.rs` — git smart HTTP and the Git LFS batch API for job tokens (the router's fallback);
//! * `respond.rs` — Grape's answers and parameter checks, shared by the handlers.
//!
//! Authentication follows gitlab lib/api/ci/helpers/runner.rb (`authenticate_runner!`, `authenticate_job!`).
//! Request input is never trusted: every malformed request gets a 4xx, nothing panics.

pub(crate) mod artifacts;
mod gate;
pub(crate) mod git;
#[cfg(feature = "faults")]
mod inject;
mod jobs;
pub(crate) mod registration;
mod respond;
mod trace;

pub(crate) use gate::HandlerFault;
pub(crate) use respond::{
    body_object, forbidden, header_str, invalid_params, job_forbidden, message, non_null,
    query_param, set_header, valid_system_id, with_content_type,
};
pub use trace::content_range_start;

use crate::log::Endpoint;
use crate::state::Shared;
use artifacts::ArtifactStore;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, patch, post, put};
use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Largest API request body buffered (trace patches are at most 1 MiB from GitLab's runner).
const MAX_API_BODY: usize = 64 * 1024 * 1024;

/// Accept connections until `shutdown`; each connection can be killed on its own. With `tls`, each is a TLS
/// connection first (a failed handshake only ends that connection).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    store: Arc<ArtifactStore>,
    shutdown: CancellationToken,
) {
    let router = router(shared, store);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                // Without TCP_NODELAY a response written in more than one piece (headers, then a streamed body:
                // git http-backend's output, artifact downloads) waits for the client's delayed ACK, ~40 ms a
                // request on Linux; a local fetch made three such waits.
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(%err, "cannot set TCP_NODELAY");
                }
                stream
            }
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let kill = shutdown.child_token();
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, router, kill).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        h = acceptor.accept(stream) => h,
                        _ = kill.cancelled() => return,
                    };
                    match handshake {
                        Ok(stream) => serve_connection(stream, router, kill).await,
                        Err(err) => tracing::debug!(%err, "TLS handshake failed"),
                    }
                }
            }
        });
    }
}

/// HTTP/1.1 on one accepted connection until it ends or `kill` fires.
async fn serve_connection<IO>(io: IO, router: Router, kill: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    #[cfg(feature = "faults")]
    let conn_kill = inject::ConnKill(kill.clone());
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        #[cfg(feature = "faults")]
        let req = {
            let mut req = req;
            req.extensions_mut().insert(conn_kill.clone());
            req
        };
        router.clone().oneshot(req.map(Body::new))
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::select! {
        res = conn => {
            if let Err(err) = res {
                tracing::debug!(%err, "connection ended with an error");
            }
        }
        _ = kill.cancelled() => {}
    }
}

fn router(shared: Arc<Shared>, store: Arc<ArtifactStore>) -> Router {
    Router::new()
        .route("/api/v4/jobs/request", post(jobs::request_job))
        .route("/api/v4/jobs/{id}", put(jobs::update_job))
        .route("/api/v4/jobs/{id}/trace", patch(trace::patch_trace))
        .route(
            "/api/v4/jobs/{id}/artifacts",
            // Uploads are streamed to disk; the size limit is `max_artifact_size`, not axum's default.
            post(artifacts::upload)
                .layer(DefaultBodyLimit::disable())
                .get(artifacts::download),
        )
        .route("/object-storage/{id}", get(artifacts::object_storage))
        .merge(registration::routes())
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(shared.clone(), gate::gate))
        .layer(Extension(store))
        .with_state(shared)
}

/// Everything else: git smart HTTP or 404.
async fn fallback(
    State(sh): State<Arc<Shared>>,
    Extension(fault): Extension<HandlerFault>,
    req: Request,
) -> Response {
    fault.give_back(&sh, Endpoint::Git);
    if git::split_git_path(req.uri().path()).is_some() {
        return git::serve(&sh, req).await;
    }
    with_content_type(
        StatusCode::NOT_FOUND,
        "application/json",
        json!({ "error": "404 Not Found" }).to_string(),
    )
}
