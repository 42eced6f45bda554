//! The middleware around every route: each request is classified by [`Endpoint`], logged ([`RequestLog`]) and
//! given the fault its endpoint has drawn from the coordinator's [`crate::FaultPlan`]. Transport faults
//! (statuses, resets, stalls, oversized answers) are applied here, before or instead of the handler; the
//! handler-level ones (`416` on trace patches, `202` on final updates) travel to the handler as
//! [`HandlerFault`].

use super::artifacts;
use super::git;
use super::respond::{message, set_header};
use super::MAX_API_BODY;
use crate::faults::{Drawn, Endpoint, Fault, FaultContext};
use crate::log::{RequestLog, REQUEST_HEADERS, RESPONSE_HEADERS};
use crate::state::Shared;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Per-connection switch: cancelling it drops the connection without a response.
#[derive(Clone)]
pub(super) struct ConnKill(pub(super) CancellationToken);

/// The handler-level fault drawn for this request (RangeMismatch / Accepted202), if any.
#[derive(Clone)]
pub(crate) struct HandlerFault(pub(crate) Option<Drawn>);

/// Set on a response when the handler applied its fault (for the request log).
#[derive(Clone)]
pub(super) struct AppliedFault(pub(super) Fault);

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
pub(super) async fn gate(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

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
