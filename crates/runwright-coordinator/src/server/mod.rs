//! The HTTP side: an accept loop that can drop a single connection on purpose (for [`Fault::Reset`]), the
//! `gate` middleware (request log + fault injection), and GitLab's runner endpoints:
//!
//! * `POST /api/v4/jobs/request` — gitlab lib/api/ci/runner.rb, lib/api/ci/helpers/job_request.rb, with
//!   Workhorse long polling in front of it (gitlab workhorse/internal/builds/register.go);
//! * `PUT /api/v4/jobs/:id` — gitlab lib/api/ci/runner.rb, app/services/ci/update_build_state_service.rb;
//! * `PATCH /api/v4/jobs/:id/trace` — gitlab lib/api/ci/runner.rb, app/services/ci/append_build_trace_service.rb;
//! * `POST`/`GET /api/v4/jobs/:id/artifacts` and the object storage behind them — see `artifacts.rs`.
//!
//! Authentication follows gitlab lib/api/ci/helpers/runner.rb (`authenticate_runner!`, `authenticate_job!`).
//! Request input is never trusted: every malformed request gets a 4xx, nothing panics.

use artifacts::ArtifactStore;
pub(crate) mod artifacts;
pub(crate) mod git;
pub(crate) mod registration;

use crate::faults::{Drawn, Endpoint, Fault, FaultContext};
use crate::jobs::Status;
use crate::log::{RequestLog, REQUEST_HEADERS, RESPONSE_HEADERS};
use crate::payload::{self, PayloadContext, GITLAB_FAILURE_REASONS};
use crate::state::{token_eq, Shared};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch, post, put};
use axum::{Extension, Router};
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Largest API request body buffered (trace patches are at most 1 MiB from GitLab's runner).
const MAX_API_BODY: usize = 64 * 1024 * 1024;

/// Per-connection switch: cancelling it drops the connection without a response.
#[derive(Clone)]
pub(crate) struct ConnKill(CancellationToken);

/// The handler-level fault drawn for this request (RangeMismatch / Accepted202), if any.
#[derive(Clone)]
pub(crate) struct HandlerFault(pub(crate) Option<Drawn>);

/// Set on a response when the handler applied its fault (for the request log).
#[derive(Clone)]
struct AppliedFault(Fault);

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
    let conn_kill = ConnKill(kill.clone());
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(conn_kill.clone());
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
        .route("/api/v4/jobs/request", post(request_job))
        .route("/api/v4/jobs/{id}", put(update_job))
        .route("/api/v4/jobs/{id}/trace", patch(patch_trace))
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
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .layer(Extension(store))
        .with_state(shared)
}

fn classify(method: &Method, path: &str) -> Endpoint {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["api", "v4", "jobs", "request"]) => Endpoint::RequestJob,
        (&Method::PUT, ["api", "v4", "jobs", _]) => Endpoint::UpdateJob,
        (&Method::PATCH, ["api", "v4", "jobs", _, "trace"]) => Endpoint::PatchTrace,
        (&Method::POST, ["api", "v4", "jobs", _, "artifacts"]) => Endpoint::ArtifactUpload,
        (&Method::GET, ["api", "v4", "jobs", _, "artifacts"]) => Endpoint::ArtifactDownload,
        (&Method::GET, ["object-storage", _]) => Endpoint::ObjectStorage,
        _ if git::split_git_path(path).is_some() => Endpoint::Git,
        _ => Endpoint::Other,
    }
}

fn interesting(headers: &HeaderMap, names: &[&str]) -> BTreeMap<String, String> {
    names
        .iter()
        .filter_map(|name| {
            let values: Vec<String> = headers
                .get_all(*name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            (!values.is_empty()).then(|| (name.to_string(), values.join(", ")))
        })
        .collect()
}

fn final_update_with_checksum(body: Option<&Value>) -> bool {
    let Some(obj) = body.and_then(Value::as_object) else {
        return false;
    };
    let state = obj.get("state").and_then(Value::as_str).unwrap_or("");
    let has_checksum = obj
        .get("checksum")
        .is_some_and(|c| c.as_str().is_some_and(|s| !s.is_empty()))
        || obj
            .get("output")
            .and_then(|o| o.get("checksum"))
            .is_some_and(|c| c.as_str().is_some_and(|s| !s.is_empty()));
    !matches!(state, "running" | "pending") && has_checksum
}

/// Which resource a request is about, for the random mode's streak cap: method and path; for git the job
/// (its credentials) alone, since one fetch is several requests on several paths and GitLab's runner retries
/// the whole fetch (`GET_SOURCES_ATTEMPTS`).
fn fault_key(method: &Method, path: &str, headers: &HeaderMap, endpoint: Endpoint) -> String {
    if endpoint == Endpoint::Git {
        let auth = headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
            .unwrap_or_default();
        return format!("git {auth}");
    }
    format!("{method} {path}")
}

/// Request log + fault injection around every route.
async fn gate(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let seq = sh.next_log_seq();
    let at = sh.started.elapsed();
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let endpoint = classify(&method, req.uri().path());
    let request_headers = interesting(req.headers(), REQUEST_HEADERS);
    let kill = req.extensions().get::<ConnKill>().cloned();

    let mut entry = RequestLog {
        seq,
        endpoint,
        method: method.to_string(),
        path,
        status: None,
        request_headers,
        response_headers: BTreeMap::new(),
        body: None,
        body_len: 0,
        fault: None,
        at,
        took: Duration::ZERO,
    };

    // Git traffic and artifact uploads are streamed by their handlers, never buffered here.
    let mut req = if matches!(endpoint, Endpoint::Git | Endpoint::ArtifactUpload) {
        req
    } else {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_API_BODY).await {
            Ok(bytes) => bytes,
            Err(_) => {
                let resp = message(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "413 Request Entity Too Large",
                );
                return finish(&sh, entry, started, resp);
            }
        };
        // Trace chunks are text: a chunk that happens to parse as JSON ("42") is not a JSON body.
        if endpoint != Endpoint::PatchTrace {
            entry.body = serde_json::from_slice(&bytes).ok();
        }
        entry.body_len = bytes.len();
        Request::from_parts(parts, Body::from(bytes))
    };

    let ctx = FaultContext {
        endpoint,
        final_update_with_checksum: endpoint == Endpoint::UpdateJob
            && final_update_with_checksum(entry.body.as_ref()),
        key: fault_key(&method, req.uri().path(), req.headers(), endpoint),
    };
    let mut reset_after = false;
    let mut handler_fault = None;
    let mut oversized = None;
    if let Some(drawn) = sh.faults.draw(&ctx) {
        if let Fault::OversizedAnswer { bytes } = drawn.fault {
            // Applied to the answer below (or given back when the answer may carry no body).
            oversized = Some((bytes, drawn));
        } else if drawn.fault.is_transport() {
            sh.faults.record(endpoint, &drawn.fault);
            entry.fault = Some(drawn.fault.clone());
            match drawn.fault {
                Fault::Status(code) => {
                    let status =
                        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let resp = message(status, &status.to_string());
                    let resp = answer_unread(endpoint, req, resp).await;
                    return finish(&sh, entry, started, resp);
                }
                Fault::TooManyRequests { retry_after } => {
                    let mut resp = message(StatusCode::TOO_MANY_REQUESTS, "429 Too Many Requests");
                    set_header(&mut resp, "retry-after", &retry_after.to_string());
                    let resp = answer_unread(endpoint, req, resp).await;
                    return finish(&sh, entry, started, resp);
                }
                Fault::TemporaryRedirect { to } => {
                    let location = format!("{}{}", to.trim_end_matches('/'), entry.path);
                    let mut resp =
                        message(StatusCode::TEMPORARY_REDIRECT, "307 Temporary Redirect");
                    set_header(&mut resp, "location", &location);
                    let resp = answer_unread(endpoint, req, resp).await;
                    return finish(&sh, entry, started, resp);
                }
                Fault::Reset => return reset(&sh, entry, started, kill).await,
                Fault::ResetAfterProcessing => reset_after = true,
                Fault::Stall(delay) => tokio::time::sleep(delay).await,
                Fault::Hang(delay) => {
                    // Logged first: the client gives up before the delay is over, and hyper then drops this
                    // future together with the connection.
                    entry.took = delay;
                    sh.push_log(entry);
                    tokio::time::sleep(delay).await;
                    return match kill {
                        Some(ConnKill(token)) => {
                            token.cancel();
                            std::future::pending::<Response>().await
                        }
                        None => message(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Timeout"),
                    };
                }
                Fault::RangeMismatch | Fault::Accepted202 | Fault::OversizedAnswer { .. } => {}
            }
        } else {
            handler_fault = Some(drawn);
        }
    }
    req.extensions_mut().insert(HandlerFault(handler_fault));

    let mut resp = next.run(req).await;
    if let Some(applied) = resp.extensions().get::<AppliedFault>() {
        entry.fault = Some(applied.0.clone());
    }
    if let Some((bytes, drawn)) = oversized {
        if matches!(resp.status().as_u16(), 204 | 304) {
            sh.faults.not_applied(endpoint, drawn);
        } else {
            sh.faults.record(endpoint, &drawn.fault);
            entry.fault = Some(drawn.fault);
            resp = padded(resp, bytes).await;
        }
    }
    if reset_after {
        entry.response_headers = interesting(resp.headers(), RESPONSE_HEADERS);
        return reset(&sh, entry, started, kill).await;
    }
    finish(&sh, entry, started, resp)
}

/// `resp` with `bytes` spaces after its body, streamed in 64 KiB slices (never held whole).
async fn padded(resp: Response, bytes: u64) -> Response {
    let (mut parts, body) = resp.into_parts();
    let head = axum::body::to_bytes(body, MAX_API_BODY)
        .await
        .unwrap_or_default();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    const SLICE: u64 = 64 * 1024;
    let spaces = Bytes::from(vec![b' '; SLICE as usize]);
    let tail = futures::stream::unfold(bytes, move |left| {
        let spaces = spaces.clone();
        async move {
            (left > 0).then(|| {
                let n = left.min(SLICE);
                (
                    Ok::<Bytes, std::io::Error>(spaces.slice(..n as usize)),
                    left - n,
                )
            })
        }
    });
    let stream =
        futures::stream::once(async move { Ok::<Bytes, std::io::Error>(head) }).chain(tail);
    Response::from_parts(parts, Body::from_stream(stream))
}

/// A fault's answer to a request the handler never saw. A streamed upload is read to its end first:
/// answering mid-body makes the client see a broken connection instead of the status, at random.
async fn answer_unread(endpoint: Endpoint, req: Request, resp: Response) -> Response {
    if endpoint == Endpoint::ArtifactUpload {
        artifacts::drain_then(req.into_body(), resp).await
    } else {
        resp
    }
}

fn finish(sh: &Shared, mut entry: RequestLog, started: Instant, resp: Response) -> Response {
    entry.status = Some(resp.status().as_u16());
    entry.response_headers = interesting(resp.headers(), RESPONSE_HEADERS);
    entry.took = started.elapsed();
    sh.push_log(entry);
    resp
}

/// Drop the connection without answering.
async fn reset(
    sh: &Shared,
    mut entry: RequestLog,
    started: Instant,
    kill: Option<ConnKill>,
) -> Response {
    entry.status = None;
    entry.took = started.elapsed();
    sh.push_log(entry);
    match kill {
        Some(ConnKill(token)) => {
            token.cancel();
            // The connection task drops this future together with the connection.
            std::future::pending::<Response>().await
        }
        None => {
            // Not served by our accept loop: a body that fails makes the client see a broken response.
            let stream = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("injected reset"))
            });
            Response::new(Body::from_stream(stream))
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Response helpers

pub(crate) fn set_header(resp: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

pub(crate) fn with_content_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    resp
}

/// Grape's `error!(message, status)`: `{"message": "..."}`.
pub(crate) fn message(status: StatusCode, msg: &str) -> Response {
    with_content_type(
        status,
        "application/json",
        json!({ "message": msg }).to_string(),
    )
}

/// Grape's parameter validation failure: `400 {"error": "token is missing"}`.
pub(crate) fn invalid_params(errors: &[String]) -> Response {
    with_content_type(
        StatusCode::BAD_REQUEST,
        "application/json",
        json!({ "error": errors.join(", ") }).to_string(),
    )
}

pub(crate) fn forbidden() -> Response {
    message(StatusCode::FORBIDDEN, "403 Forbidden")
}

/// `job_forbidden!`: 403 with the job's status.
pub(crate) fn job_forbidden(status: Status, reason: &str) -> Response {
    let mut resp = message(StatusCode::FORBIDDEN, &format!("403 Forbidden - {reason}"));
    set_header(&mut resp, "job-status", status.as_str());
    resp
}

fn no_content() -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

fn no_content_with_update(last_update: &str) -> Response {
    let mut resp = no_content();
    set_header(&mut resp, "x-gitlab-last-update", last_update);
    resp
}

/// The API's plain-text status body (`content_type :txt`, `body result.status.to_s`).
fn status_text(status: StatusCode, job_status: Status) -> Response {
    let mut resp = with_content_type(status, "text/plain", status.as_u16().to_string());
    set_header(&mut resp, "job-status", job_status.as_str());
    resp
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The JSON object of a body, as Grape sees it: only parsed for `application/json` in strict mode.
pub(crate) fn body_object(strict: bool, headers: &HeaderMap, body: &[u8]) -> Map<String, Value> {
    if strict && !is_json(headers) {
        return Map::new();
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => obj,
        _ => Map::new(),
    }
}

/// Grape `type: String` / `Integer` / `Hash` checks for an optional parameter.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Hash,
}

fn check_param(
    obj: &Map<String, Value>,
    key: &str,
    label: &str,
    kind: Kind,
    errors: &mut Vec<String>,
) {
    let ok = match obj.get(key) {
        None | Some(Value::Null) => true,
        Some(v) => match kind {
            Kind::Str => v.is_string(),
            Kind::Int => {
                v.as_i64().is_some() || v.as_str().is_some_and(|s| s.trim().parse::<i64>().is_ok())
            }
            Kind::Hash => v.is_object(),
        },
    };
    if !ok {
        errors.push(format!("{label} is invalid"));
    }
}

pub(crate) fn non_null<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// `system_id` as GitLab's runner makes it: `s_`/`r_` + 12 characters (runner
/// commands/internal/configfile/system_id_state.go).
pub(crate) fn valid_system_id(s: &str) -> bool {
    let (Some(prefix), Some(rest)) = (s.get(..2), s.get(2..)) else {
        return false;
    };
    matches!(prefix, "s_" | "r_")
        && rest.len() == 12
        && rest.chars().all(|c| c.is_ascii_alphanumeric())
}

// ---------------------------------------------------------------------------------------------------------
// POST /api/v4/jobs/request

enum WatchStatus {
    AlreadyChanged,
    SeenChange,
    Timeout,
}

/// Workhorse's `watchForRunnerChange` on `runner:build_queue:<token>`.
async fn watch_queue(sh: &Shared, token: &str, expected: &str, duration: Duration) -> WatchStatus {
    let mut changes = sh.subscribe();
    let current = |sh: &Shared| {
        sh.lock()
            .runners
            .get(token)
            .map(|r| r.queue_value.clone())
            .unwrap_or_default()
    };
    if current(sh) != expected {
        return WatchStatus::AlreadyChanged;
    }
    let deadline = tokio::time::Instant::now() + duration;
    loop {
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {
                if current(sh) != expected {
                    return WatchStatus::SeenChange;
                }
            }
            Ok(Err(_)) | Err(_) => return WatchStatus::Timeout,
        }
    }
}

async fn request_job(
    State(sh): State<Arc<Shared>>,
    Extension(fault): Extension<HandlerFault>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(drawn) = fault.0 {
        sh.faults.give_back(Endpoint::RequestJob, drawn);
    }
    // Workhorse sits in front of Rails: it only looks at `token` and `last_update` of a JSON body.
    let parsed = serde_json::from_slice::<Value>(&body).ok();
    let wh_token = parsed
        .as_ref()
        .and_then(|v| v.get("token"))
        .and_then(Value::as_str);
    let wh_last_update = parsed
        .as_ref()
        .and_then(|v| v.get("last_update"))
        .and_then(Value::as_str);
    let long_poll = wh_token.and_then(|t| sh.lock().runners.get(t).and_then(|r| r.opts.long_poll));
    let Some(duration) = long_poll else {
        return rails_request_job(&sh, &headers, &body);
    };
    let mut resp = match (wh_token, wh_last_update) {
        (Some(token), Some(last_update))
            if is_json(&headers) && !token.is_empty() && !last_update.is_empty() =>
        {
            match watch_queue(&sh, token, last_update, duration).await {
                WatchStatus::AlreadyChanged => rails_request_job(&sh, &headers, &body),
                // Seen change or timeout: a bare 204 without X-GitLab-Last-Update.
                WatchStatus::SeenChange | WatchStatus::Timeout => no_content(),
            }
        }
        _ => rails_request_job(&sh, &headers, &body),
    };
    set_header(&mut resp, "gitlab-ci-builds-polling", "yes");
    resp
}

fn rails_request_job(sh: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let strict = sh.opts.strict;
    let obj = body_object(strict, headers, body);

    // Grape parameter validation (gitlab lib/api/ci/helpers/job_request.rb `request_job_params`).
    let mut errors = Vec::new();
    let token = match non_null(&obj, "token") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => {
            errors.push("token is invalid".to_string());
            None
        }
        None if !strict => header_str(headers, "runner-token").map(str::to_string),
        None => None,
    };
    if token.is_none() && errors.is_empty() {
        errors.push("token is missing".to_string());
    }
    check_param(&obj, "system_id", "system_id", Kind::Str, &mut errors);
    check_param(&obj, "last_update", "last_update", Kind::Str, &mut errors);
    check_param(&obj, "info", "info", Kind::Hash, &mut errors);
    check_param(&obj, "session", "session", Kind::Hash, &mut errors);
    if let Some(Value::Object(info)) = obj.get("info") {
        for key in [
            "name",
            "version",
            "revision",
            "platform",
            "architecture",
            "executor",
        ] {
            check_param(info, key, &format!("info[{key}]"), Kind::Str, &mut errors);
        }
        check_param(info, "features", "info[features]", Kind::Hash, &mut errors);
        check_param(info, "config", "info[config]", Kind::Hash, &mut errors);
        check_param(info, "labels", "info[labels]", Kind::Hash, &mut errors);
    }
    let system_id = non_null(&obj, "system_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(id) = &system_id {
        if !valid_system_id(id) {
            errors.push("system_id is invalid".to_string());
        }
    }
    if strict {
        if non_null(&obj, "info").is_none() {
            errors.push("info is missing".to_string());
        }
        if system_id.is_none() {
            errors.push("system_id is missing".to_string());
        }
    }
    if !errors.is_empty() {
        return invalid_params(&errors);
    }
    let Some(token) = token else {
        return invalid_params(&["token is missing".to_string()]);
    };
    let last_update = non_null(&obj, "last_update").and_then(Value::as_str);
    let info = non_null(&obj, "info").cloned();

    let mut guard = sh.lock();
    let st = &mut *guard;
    // authenticate_runner!
    let Some(runner) = st.runners.get_mut(&token) else {
        return forbidden();
    };
    if runner.reg.expired() {
        return forbidden();
    }
    runner.reg.contacted(system_id.as_deref());
    if info.is_some() {
        runner.info = info.clone();
    }
    if system_id.is_some() {
        runner.system_id = system_id.clone();
    }
    if runner.opts.paused {
        return no_content_with_update(&runner.queue_value);
    }
    if last_update == Some(runner.queue_value.as_str()) {
        return no_content_with_update(&runner.queue_value);
    }
    let new_update = runner.queue_value.clone();

    // Ci::RegisterJobService: the oldest pending job this runner may take.
    let features = info
        .as_ref()
        .and_then(|i| i.get("features"))
        .and_then(Value::as_object);
    let has = |f: &str| {
        features
            .and_then(|m| m.get(f))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let runner = &*runner;
    let artifact_sources = artifacts::dependency_sources(&st.jobs);
    let mut handed = None;
    let mut changed = false;
    for job in st.jobs.values_mut() {
        if !job.queued() || !job.may_run_on(&token) {
            continue;
        }
        let unsupported = job
            .spec
            .required_features
            .iter()
            .chain(runner.opts.features_required.iter())
            .any(|f| !has(f));
        if unsupported {
            job.drop_with("runner_unsupported");
            changed = true;
            continue;
        }
        job.record.runner_token = Some(token.clone());
        job.record.system_id = system_id.clone();
        job.record.cancel_gracefully = has("cancel_gracefully");
        if has("two_phase_job_commit") {
            // Two-phase commit: the job stays pending until the runner acknowledges it.
            job.record.waiting_for_ack = true;
        } else {
            job.set_status(Status::Running);
        }
        let bytes = match &job.spec.raw_payload {
            Some(template) => payload::raw(template, job, &sh.base_url),
            None => {
                let object_format = sh.opts.git_root.as_ref().map_or_else(
                    || "sha1".to_string(),
                    |root| git::object_format(&root.join(job.spec.project.repo_dir())),
                );
                let ctx = PayloadContext {
                    base_url: &sh.base_url,
                    host_port: &sh.host_port,
                    runner,
                    artifact_sources: &artifact_sources,
                    object_format: &object_format,
                };
                serde_json::to_vec(&payload::build(job, &ctx)).unwrap_or_default()
            }
        };
        job.record.payload = Some(bytes.clone());
        handed = Some(bytes);
        changed = true;
        break;
    }
    drop(guard);
    if changed {
        sh.notify();
    }
    match handed {
        Some(bytes) => with_content_type(StatusCode::CREATED, "application/json", bytes),
        None => no_content_with_update(&new_update),
    }
}

// ---------------------------------------------------------------------------------------------------------
// PUT /api/v4/jobs/:id

/// `Gitlab::Ci::Runner::Backoff#to_seconds` for a pending state created at `since`.
fn backoff_seconds(since: Instant) -> u64 {
    let duration = since.elapsed().as_secs_f64();
    let slot = if duration <= 1.0 {
        0
    } else {
        (duration.log2().floor() as i64 - 1).max(0)
    };
    1u64 << slot.min(6)
}

fn crc32_label(data: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(data))
}

async fn update_job(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    Extension(fault): Extension<HandlerFault>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (resp, unused) = update_job_inner(&sh, &id, fault.0, &headers, &body);
    if let Some(drawn) = unused {
        sh.faults.give_back(Endpoint::UpdateJob, drawn);
    }
    sh.notify();
    resp
}

fn update_job_inner(
    sh: &Shared,
    id: &str,
    fault: Option<Drawn>,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, Option<Drawn>) {
    let strict = sh.opts.strict;
    let Ok(id) = id.parse::<i64>() else {
        return (invalid_params(&["id is invalid".to_string()]), fault);
    };
    let obj = body_object(strict, headers, body);
    let mut errors = Vec::new();
    let body_token = match non_null(&obj, "token") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => {
            errors.push("token is invalid".to_string());
            None
        }
        None => None,
    };
    let header_token = header_str(headers, "job-token");
    if body_token.is_none() && errors.is_empty() && (strict || header_token.is_none()) {
        errors.push("token is missing".to_string());
    }
    for (key, kind) in [
        ("state", Kind::Str),
        ("checksum", Kind::Str),
        ("failure_reason", Kind::Str),
        ("exit_code", Kind::Int),
        ("output", Kind::Hash),
    ] {
        check_param(&obj, key, key, kind, &mut errors);
    }
    if let Some(Value::Object(output)) = obj.get("output") {
        check_param(
            output,
            "checksum",
            "output[checksum]",
            Kind::Str,
            &mut errors,
        );
        check_param(
            output,
            "bytesize",
            "output[bytesize]",
            Kind::Int,
            &mut errors,
        );
    }
    if !errors.is_empty() {
        return (invalid_params(&errors), fault);
    }
    // `params[:token] || env['HTTP_JOB_TOKEN']` (helpers/runner.rb `job_token`).
    let token = body_token.as_deref().or(header_token).unwrap_or_default();

    let mut guard = sh.lock();
    // authenticate_job!
    let Some(job) = guard.jobs.get_mut(&id) else {
        return (forbidden(), fault);
    };
    let real = job.record.token.as_str();
    if !token_eq(real, token) || (strict && header_token.is_some_and(|h| !token_eq(real, h))) {
        return (forbidden(), fault);
    }
    if !(job.status.is_executing() || job.waiting_for_ack()) {
        return (
            job_forbidden(job.status, "Job is not processing on runner"),
            fault,
        );
    }
    if let Ok(update) = serde_json::from_value(Value::Object(obj.clone())) {
        job.record.updates.push(update);
    }
    let state = non_null(&obj, "state")
        .and_then(Value::as_str)
        .unwrap_or("");

    // handle_runner_ack_workflow
    if job.waiting_for_ack() {
        match state {
            "pending" => return (status_text(StatusCode::OK, job.status), fault),
            "running" => job.set_status(Status::Running),
            _ => return (status_text(StatusCode::BAD_REQUEST, job.status), fault),
        }
    }

    let output = obj.get("output").and_then(Value::as_object);
    let checksum = output
        .and_then(|o| non_null(o, "checksum"))
        .or_else(|| non_null(&obj, "checksum"))
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty());
    let bytesize = output.and_then(|o| non_null(o, "bytesize")).and_then(|b| {
        b.as_u64()
            .or_else(|| b.as_str().and_then(|s| s.trim().parse::<u64>().ok()))
    });
    let mut unused = fault;
    // accept_available?: not `running`, a checksum, live trace on.
    if state != "running" {
        if let Some(checksum) = checksum {
            if let Some(drawn) = unused.take_if(|d| d.fault == Fault::Accepted202) {
                // Live trace chunks still "pending": accept_build_state!
                sh.faults.record(Endpoint::UpdateJob, &drawn.fault);
                let since = *job.pending_state_since.get_or_insert_with(Instant::now);
                job.record.accepted_202 += 1;
                let mut resp = status_text(StatusCode::ACCEPTED, job.status);
                set_header(
                    &mut resp,
                    "x-gitlab-trace-update-interval",
                    &backoff_seconds(since).to_string(),
                );
                resp.extensions_mut().insert(AppliedFault(drawn.fault));
                return (resp, None);
            }
            // validate_build_trace!
            let ok = checksum == crc32_label(&job.record.trace)
                && bytesize.is_none_or(|b| b == job.record.trace.len() as u64);
            job.record.final_checksum_ok = Some(ok);
        }
    }

    // update_build_state!
    let exit_code = non_null(&obj, "exit_code").and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse::<i64>().ok()))
            .and_then(|c| i32::try_from(c).ok())
    });
    let status = match state {
        "running" => StatusCode::OK,
        "success" => {
            job.record.exit_code = exit_code;
            if job.status == Status::Canceling {
                job.set_status(Status::Canceled);
            } else {
                job.set_status(Status::Success);
            }
            StatusCode::OK
        }
        "failed" => {
            job.record.exit_code = exit_code;
            if job.status == Status::Canceling {
                job.set_status(Status::Canceled);
            } else {
                let reason = non_null(&obj, "failure_reason")
                    .and_then(Value::as_str)
                    .filter(|r| GITLAB_FAILURE_REASONS.contains(r))
                    .unwrap_or("unknown_failure");
                job.drop_with(reason);
            }
            StatusCode::OK
        }
        _ => StatusCode::BAD_REQUEST,
    };
    (status_text(status, job.status), unused)
}

// ---------------------------------------------------------------------------------------------------------
// PATCH /api/v4/jobs/:id/trace

/// Ruby's `String#to_i`: optional leading whitespace and sign, then digits; anything else gives 0.
/// The start offset of a trace patch's `Content-Range` (`start-end`), read as GitLab reads it: only the start is
/// trusted, the end is computed from the body (append_build_trace_service.rb `content_range.split('-').first.to_i`).
pub fn content_range_start(header: &[u8]) -> i64 {
    let range = String::from_utf8_lossy(header);
    ruby_to_i(range.split('-').next().unwrap_or(""))
}

fn ruby_to_i(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut n: i64 = 0;
    for c in digits.chars() {
        let Some(d) = c.to_digit(10) else { break };
        n = n.saturating_mul(10).saturating_add(i64::from(d));
    }
    if neg {
        -n
    } else {
        n
    }
}

pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn patch_trace(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    Extension(fault): Extension<HandlerFault>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (resp, unused) = patch_trace_inner(&sh, &id, fault.0, &uri, &headers, &body);
    if let Some(drawn) = unused {
        sh.faults.give_back(Endpoint::PatchTrace, drawn);
    }
    sh.notify();
    resp
}

fn patch_trace_inner(
    sh: &Shared,
    id: &str,
    fault: Option<Drawn>,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, Option<Drawn>) {
    let Ok(id) = id.parse::<i64>() else {
        return (invalid_params(&["id is invalid".to_string()]), fault);
    };
    let token =
        query_param(uri, "token").or_else(|| header_str(headers, "job-token").map(str::to_string));
    let mut guard = sh.lock();
    let Some(job) = guard.jobs.get_mut(&id) else {
        return (forbidden(), fault);
    };
    if !token
        .as_deref()
        .is_some_and(|t| token_eq(&job.record.token, t))
    {
        return (forbidden(), fault);
    }
    if !(job.status.is_executing() || job.waiting_for_ack()) {
        return (
            job_forbidden(job.status, "Job is not processing on runner"),
            fault,
        );
    }
    let Some(range) = headers.get("content-range") else {
        return (
            message(StatusCode::BAD_REQUEST, "400 Missing header Content-Range"),
            fault,
        );
    };
    let start = content_range_start(range.as_bytes());
    let stored = job.record.trace.len() as u64;
    let body_end = start.saturating_add(body.len() as i64);
    // GitLab `first_debug_chunk?`: the chunk at offset 0 decides, before anything is appended.
    if start == 0 && query_param(uri, "debug_trace").is_some_and(|v| v == "true" || v == "1") {
        job.record.debug_trace = true;
    }

    if let Some(limit) = sh.opts.trace_size_limit_mb.filter(|l| *l > 0) {
        if (body_end.max(0) as u64) / (1024 * 1024) >= limit {
            job.drop_with("trace_size_exceeded");
            return (forbidden(), fault);
        }
    }

    let mut unused = fault;
    if let Some(drawn) = unused.take_if(|d| d.fault == Fault::RangeMismatch) {
        sh.faults.record(Endpoint::PatchTrace, &drawn.fault);
        let claimed = stored / 2;
        job.record.trace.truncate(claimed as usize);
        job.record.range_truncations.push(claimed);
        let mut resp = message(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "416 Range Not Satisfiable",
        );
        set_header(&mut resp, "range", &format!("0-{claimed}"));
        resp.extensions_mut().insert(AppliedFault(drawn.fault));
        return (resp, None);
    }

    if start != stored as i64 {
        let mut resp = message(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "416 Range Not Satisfiable",
        );
        set_header(&mut resp, "range", &format!("0-{stored}"));
        return (resp, unused);
    }
    job.record.trace.extend_from_slice(body);
    job.record.patches.push((stored, body.len()));
    let new_len = job.record.trace.len();
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    set_header(&mut resp, "job-status", job.status.as_str());
    set_header(&mut resp, "range", &format!("0-{new_len}"));
    set_header(
        &mut resp,
        "x-gitlab-trace-update-interval",
        &sh.opts.trace_update_interval.to_string(),
    );
    (resp, unused)
}

// ---------------------------------------------------------------------------------------------------------
// Everything else: git smart HTTP or 404.

async fn fallback(
    State(sh): State<Arc<Shared>>,
    Extension(fault): Extension<HandlerFault>,
    req: Request,
) -> Response {
    if let Some(drawn) = fault.0 {
        sh.faults.give_back(Endpoint::Git, drawn);
    }
    if git::split_git_path(req.uri().path()).is_some() {
        return git::serve(&sh, req).await;
    }
    with_content_type(
        StatusCode::NOT_FOUND,
        "application/json",
        json!({ "error": "404 Not Found" }).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_to_i_matches_ruby() {
        assert_eq!(ruby_to_i("10"), 10);
        assert_eq!(ruby_to_i(" 42abc"), 42);
        assert_eq!(ruby_to_i("bytes 0"), 0);
        assert_eq!(ruby_to_i("-5"), -5);
        assert_eq!(ruby_to_i(""), 0);
        assert_eq!(ruby_to_i("99999999999999999999999"), i64::MAX);
    }

    #[test]
    fn system_id_format() {
        assert!(valid_system_id("s_0123456789ab"));
        assert!(valid_system_id("r_ABCdef123456"));
        assert!(!valid_system_id("s_0123456789a"));
        assert!(!valid_system_id("x_0123456789ab"));
        assert!(!valid_system_id("s_01234567890é"));
        assert!(!valid_system_id(""));
    }

    #[test]
    fn backoff_follows_gitlab_table() {
        let now = Instant::now();
        assert_eq!(backoff_seconds(now), 1);
        if let Some(past) = now.checked_sub(Duration::from_secs(9)) {
            assert_eq!(backoff_seconds(past), 4);
        }
        if let Some(past) = now.checked_sub(Duration::from_secs(1000)) {
            assert_eq!(backoff_seconds(past), 64);
        }
    }

    #[test]
    fn classify_endpoints() {
        assert_eq!(
            classify(&Method::POST, "/api/v4/jobs/request"),
            Endpoint::RequestJob
        );
        assert_eq!(
            classify(&Method::PUT, "/api/v4/jobs/12"),
            Endpoint::UpdateJob
        );
        assert_eq!(
            classify(&Method::PATCH, "/api/v4/jobs/12/trace"),
            Endpoint::PatchTrace
        );
        assert_eq!(
            classify(&Method::GET, "/grp/app.git/info/refs"),
            Endpoint::Git
        );
        assert_eq!(classify(&Method::GET, "/api/v4/other"), Endpoint::Other);
        assert_eq!(
            classify(&Method::POST, "/api/v4/jobs/12/artifacts"),
            Endpoint::ArtifactUpload
        );
        assert_eq!(
            classify(&Method::GET, "/api/v4/jobs/12/artifacts"),
            Endpoint::ArtifactDownload
        );
        assert_eq!(
            classify(&Method::GET, "/object-storage/abc"),
            Endpoint::ObjectStorage
        );
    }
}
