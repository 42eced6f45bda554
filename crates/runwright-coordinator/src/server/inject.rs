//! Fault injection into the HTTP exchange (feature `faults`): the fault a request draws from the coordinator's
//! [`crate::FaultPlan`] is applied here when it is a transport fault — a status, `429`, `307`, a reset before
//! or after processing, a stall, a hang, an oversized answer — and otherwise handed to the handler as
//! [`HandlerFault`].

use super::artifacts;
use super::gate::{finish, interesting, HandlerFault};
use super::respond::{message, set_header, status_text};
use super::MAX_API_BODY;
use crate::faults::{Drawn, Endpoint, Fault, FaultContext};
use crate::log::{RequestLog, RESPONSE_HEADERS};
use crate::state::{Job, Shared};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Per-connection switch: cancelling it drops the connection without a response.
#[derive(Clone)]
pub(super) struct ConnKill(pub(super) CancellationToken);

/// Set on a response when the handler applied its fault (for the request log).
#[derive(Clone)]
pub(super) struct AppliedFault(pub(super) Fault);

/// What [`before`] left for [`after`] to apply to the handler's answer.
pub(super) struct Injected {
    reset_after: bool,
    stall_after: Option<std::time::Duration>,
    oversized: Option<(u64, Drawn)>,
    kill: Option<ConnKill>,
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

/// Draws the request's fault and applies a transport fault: `Err` with the answer when the handler must not
/// see the request, else the request (carrying the [`HandlerFault`]) and what [`after`] applies.
pub(super) async fn before(
    sh: &Shared,
    method: &Method,
    mut entry: RequestLog,
    mut req: Request,
    started: Instant,
    kill: Option<ConnKill>,
) -> Result<(Request, RequestLog, Injected), Response> {
    let endpoint = entry.endpoint;
    let ctx = FaultContext {
        endpoint,
        final_update_with_checksum: endpoint == Endpoint::UpdateJob
            && final_update_with_checksum(entry.body.as_ref()),
        key: fault_key(method, req.uri().path(), req.headers(), endpoint),
    };
    let mut reset_after = false;
    let mut stall_after = None;
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
                    return Err(finish(sh, entry, started, resp));
                }
                Fault::TooManyRequests { retry_after } => {
                    let mut resp = message(StatusCode::TOO_MANY_REQUESTS, "429 Too Many Requests");
                    set_header(&mut resp, "retry-after", &retry_after.to_string());
                    let resp = answer_unread(endpoint, req, resp).await;
                    return Err(finish(sh, entry, started, resp));
                }
                Fault::TemporaryRedirect { to } => {
                    let location = format!("{}{}", to.trim_end_matches('/'), entry.path);
                    let mut resp =
                        message(StatusCode::TEMPORARY_REDIRECT, "307 Temporary Redirect");
                    set_header(&mut resp, "location", &location);
                    let resp = answer_unread(endpoint, req, resp).await;
                    return Err(finish(sh, entry, started, resp));
                }
                Fault::Reset => return Err(reset(sh, entry, started, kill).await),
                Fault::ResetAfterProcessing => reset_after = true,
                Fault::Stall(delay) => tokio::time::sleep(delay).await,
                Fault::StallAfterProcessing(delay) => stall_after = Some(delay),
                Fault::Hang(delay) => {
                    // Logged first: the client gives up before the delay is over, and hyper then drops this
                    // future together with the connection.
                    entry.took = delay;
                    sh.push_log(entry);
                    tokio::time::sleep(delay).await;
                    return Err(match kill {
                        Some(ConnKill(token)) => {
                            token.cancel();
                            std::future::pending::<Response>().await
                        }
                        None => message(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Timeout"),
                    });
                }
                Fault::RangeMismatch | Fault::Accepted202 | Fault::OversizedAnswer { .. } => {}
            }
        } else {
            handler_fault = Some(drawn);
        }
    }
    req.extensions_mut().insert(HandlerFault(handler_fault));
    let injected = Injected {
        reset_after,
        stall_after,
        oversized,
        kill,
    };
    Ok((req, entry, injected))
}

/// The handler's answer with the fault it applied logged and an oversized answer applied, to be finished; `Err`
/// when the connection was dropped instead (a reset after processing).
pub(super) async fn after(
    sh: &Shared,
    mut entry: RequestLog,
    started: Instant,
    mut resp: Response,
    injected: Injected,
) -> Result<(RequestLog, Response), Response> {
    if let Some(applied) = resp.extensions().get::<AppliedFault>() {
        entry.fault = Some(applied.0.clone());
    }
    if let Some((bytes, drawn)) = injected.oversized {
        if matches!(resp.status().as_u16(), 204 | 304) {
            sh.faults.not_applied(entry.endpoint, drawn);
        } else {
            sh.faults.record(entry.endpoint, &drawn.fault);
            entry.fault = Some(drawn.fault);
            resp = padded(resp, bytes).await;
        }
    }
    if let Some(delay) = injected.stall_after {
        tokio::time::sleep(delay).await;
    }
    if injected.reset_after {
        entry.response_headers = interesting(resp.headers(), RESPONSE_HEADERS);
        return Err(reset(sh, entry, started, injected.kill).await);
    }
    Ok((entry, resp))
}

/// A final update's `202 Accepted` for [`Fault::Accepted202`]: GitLab's answer while live trace chunks are still
/// being persisted (accept_build_state!), with its back-off in `X-GitLab-Trace-Update-Interval`.
pub(super) fn accepted_202(job: &mut Job, applied: Fault) -> Response {
    let since = *job.pending_state_since.get_or_insert_with(Instant::now);
    job.record.accepted_202 += 1;
    let mut resp = status_text(StatusCode::ACCEPTED, job.status);
    set_header(
        &mut resp,
        "x-gitlab-trace-update-interval",
        &backoff_seconds(since).to_string(),
    );
    resp.extensions_mut().insert(AppliedFault(applied));
    resp
}

/// `Gitlab::Ci::Runner::Backoff#to_seconds` for a pending state created at `since` (the `202` of an injected
/// `Fault::Accepted202`).
fn backoff_seconds(since: Instant) -> u64 {
    let duration = since.elapsed().as_secs_f64();
    let slot = if duration <= 1.0 {
        0
    } else {
        (duration.log2().floor() as i64 - 1).max(0)
    };
    1u64 << slot.min(6)
}

/// A trace patch's `416` for [`Fault::RangeMismatch`]: the stored trace truncated to half its length, which the
/// answer claims, so the bytes the runner resends stay consistent.
pub(super) fn range_mismatch(job: &mut Job, applied: Fault) -> Response {
    let stored = job.record.trace.len() as u64;
    let claimed = stored / 2;
    job.record.trace.truncate(claimed as usize);
    job.record.range_truncations.push(claimed);
    let mut resp = message(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "416 Range Not Satisfiable",
    );
    set_header(&mut resp, "range", &format!("0-{claimed}"));
    resp.extensions_mut().insert(AppliedFault(applied));
    resp
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
    use std::time::Duration;

    #[test]
    #[cfg(feature = "faults")]
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
}
