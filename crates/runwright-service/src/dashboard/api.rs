//! The dashboard's JSON API under `/api/v1` (issue 6): the runner entries and their state, the jobs of the
//! journal (running and past, with `runwright history`'s filters) and a job's trace, whole or from an offset
//! so a running job's log can be followed by polling. Tokens never appear: runners show their short token.

use super::{disk, Dashboard};
use crate::history::{json_of, shown_status, JobFilter};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use runwright_journal::JobEntry;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

/// Jobs listed when the request names no `limit`.
const DEFAULT_JOBS: usize = 100;
/// Most trace bytes in one answer given an `offset` (the dashboard asks again for the rest).
const MAX_CHUNK: u64 = 4 * 1024 * 1024;

/// An error answer: `{"error": "…"}` with its status.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// What a runner entry is doing, in a word, from the service's record of its polls.
pub fn runner_state(st: Option<&crate::state::RunnerState>, stopping: bool) -> &'static str {
    let Some(st) = st else {
        return "starting";
    };
    if stopping {
        return "stopping";
    }
    let outcome = st.last_outcome.as_deref().unwrap_or("");
    let backing_off = st.unhealthy_until.as_deref().is_some_and(|u| {
        time::OffsetDateTime::parse(u, &time::format_description::well_known::Rfc3339)
            .is_ok_and(|t| t > time::OffsetDateTime::now_utc())
    });
    if outcome.starts_with("not_started") {
        "not started"
    } else if backing_off {
        "backing off"
    } else if outcome == "forbidden" {
        "token invalid"
    } else if outcome == "orphaned" {
        "orphaned"
    } else if outcome == "unavailable" || outcome.starts_with("failed") {
        "GitLab unreachable"
    } else if outcome.is_empty() {
        "starting"
    } else {
        "polling"
    }
}

/// The host of a GitLab URL (config URLs carry no credentials, and none is shown if one did).
fn url_host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            })
        })
        .unwrap_or_default()
}

pub async fn runners(State(d): State<Arc<Dashboard>>) -> Json<Value> {
    let config = d.config();
    let snapshot = d.state.snapshot();
    let runners: Vec<Value> = config
        .runners
        .iter()
        .map(|r| {
            let st = snapshot.for_runner(&r.url, &r.token);
            json!({
                "name": r.name,
                "url_host": url_host(&r.url),
                "short_token": r.short_token(),
                "executor": r.executor,
                "state": runner_state(st, snapshot.stopping),
                "last_outcome": st.and_then(|s| s.last_outcome.clone()),
                "last_contact": st.and_then(|s| s.last_poll_at.clone()),
                "last_success": st.and_then(|s| s.last_success_at.clone()),
                "running_jobs": st.map(|s| s.running_jobs.clone()).unwrap_or_default(),
                "unhealthy_until": st.and_then(|s| s.unhealthy_until.clone()),
                "limit": r.limit,
            })
        })
        .collect();
    // Entries that failed validation are listed too, with why they do not poll (issue 16 item 8).
    let invalid = d.invalid_runners();
    let runners: Vec<Value> = runners
        .into_iter()
        .chain(invalid.iter().map(|r| {
            json!({
                "name": r.name,
                "url_host": url_host(&r.url),
                "short_token": r.short_token,
                "executor": r.executor,
                "state": "invalid",
                "error": r.error,
                "last_outcome": format!("invalid: {}", r.error),
                "last_contact": null,
                "last_success": null,
                "running_jobs": [],
                "unhealthy_until": null,
                "limit": null,
            })
        }))
        .collect();
    Json(json!({
        "service": {
            "pid": std::process::id(),
            "version": crate::identity::VERSION,
            "started_at": snapshot.started_at,
            "ready": d.metrics.ready(),
            "stopping": snapshot.stopping,
            "concurrent": config.concurrent,
            "journal": d.journal.as_ref().map(|j| j.journal.dir().display().to_string()),
        },
        "runners": runners,
    }))
}

#[derive(Deserialize, Default)]
pub struct JobsQuery {
    runner: Option<String>,
    project: Option<String>,
    status: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

fn journal(d: &Dashboard) -> Result<runwright_journal::Journal, ApiError> {
    d.journal
        .as_ref()
        .map(|j| j.journal.clone())
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                "the job journal is disabled ([journal] enabled = false)".into(),
            )
        })
}

/// `GET /api/v1/jobs`: as `runwright history --json` (oldest first), at most `limit` (default 100) newest.
pub async fn jobs(
    State(d): State<Arc<Dashboard>>,
    Query(q): Query<JobsQuery>,
) -> Result<Json<Value>, ApiError> {
    let journal = journal(&d)?;
    if let Some(s) = q.status.as_deref() {
        if !["running", "success", "failed", "canceled", "lost"].contains(&s) {
            return Err(bad_request(format!(
                "status {s:?}: expected running, success, failed, canceled or lost"
            )));
        }
    }
    let filter = JobFilter {
        runner: q.runner.filter(|s| !s.is_empty()),
        project: q.project.filter(|s| !s.is_empty()),
        status: q.status.filter(|s| !s.is_empty()),
        since: q.since.filter(|s| !s.is_empty()),
        limit: Some(q.limit.unwrap_or(DEFAULT_JOBS)),
    };
    let values = blocking(move || {
        let entries = journal.list().map_err(anyhow::Error::from)?;
        let entries = filter
            .apply(entries)
            .map_err(|e| bad_request(e.to_string()))?;
        Ok(entries
            .iter()
            .map(json_of)
            .collect::<anyhow::Result<Vec<_>>>()?)
    })
    .await?;
    Ok(Json(Value::Array(values)))
}

fn entry(journal: &runwright_journal::Journal, key: &str) -> Result<JobEntry, ApiError> {
    journal
        .get(key)
        .map_err(anyhow::Error::from)?
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no job {key:?} in the journal"),
            )
        })
}

/// `GET /api/v1/jobs/{key}`.
pub async fn job(
    State(d): State<Arc<Dashboard>>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let journal = journal(&d)?;
    let v = blocking(move || Ok(json_of(&entry(&journal, &key)?)?)).await?;
    Ok(Json(v))
}

#[derive(Deserialize, Default)]
pub struct TraceQuery {
    offset: Option<u64>,
    limit: Option<u64>,
}

/// `bytes=A-B` or `bytes=A-` of a `Range` header, as (offset, length).
fn parse_range(h: &str) -> Option<(u64, Option<u64>)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let b = b.trim();
    if b.is_empty() {
        return Some((start, None));
    }
    let end: u64 = b.parse().ok()?;
    (end >= start).then(|| (start, Some(end - start + 1)))
}

/// `GET /api/v1/jobs/{key}/trace`: the full masked trace as the job printed it (ANSI and section markers
/// kept). `?offset=N[&limit=M]` or `Range: bytes=N-[M]` gives part of it; the headers say where to go on:
/// `X-Trace-Size` (bytes so far), `X-Trace-Next-Offset`, `X-Job-Status` (`running` while more may come).
pub async fn trace(
    State(d): State<Arc<Dashboard>>,
    Path(key): Path<String>,
    Query(q): Query<TraceQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let journal = journal(&d)?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v).ok_or_else(|| bad_request(format!("unsupported Range {v:?}"))))
        .transpose()?;
    let ranged = range.is_some();
    let (offset, limit) = match range {
        Some((o, l)) => (Some(o), l),
        None => (q.offset, q.limit),
    };
    let (entry, status) = blocking(move || {
        let e = entry(&journal, &key)?;
        let status = shown_status(&e);
        Ok((e, status))
    })
    .await?;
    let path = entry.trace_path();
    let Some(offset) = offset else {
        // The whole trace, streamed.
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
        let mut resp = body.into_response();
        trace_headers(resp.headers_mut(), size, size, status);
        return Ok(resp);
    };
    let want = limit.unwrap_or(MAX_CHUNK).min(MAX_CHUNK);
    let (bytes, size) = blocking(move || {
        let mut f = std::fs::File::open(&path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = offset.min(size);
        f.seek(SeekFrom::Start(start))
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let mut buf = Vec::new();
        f.take(want)
            .read_to_end(&mut buf)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Ok((buf, size))
    })
    .await?;
    let start = offset.min(size);
    let next = start + bytes.len() as u64;
    let partial = ranged && !bytes.is_empty();
    let mut resp = bytes.into_response();
    if partial {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", next - 1)) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    trace_headers(resp.headers_mut(), size.max(next), next, status);
    Ok(resp)
}

fn trace_headers(h: &mut HeaderMap, size: u64, next: u64, status: &str) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (k, v) in [
        ("x-trace-size", size.to_string()),
        ("x-trace-next-offset", next.to_string()),
        ("x-job-status", status.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
}

/// `GET /api/v1/disk`: builds and cache directories of the runner entries, and the runner-managed docker
/// volumes (or why there are none to show).
pub async fn disk_use(State(d): State<Arc<Dashboard>>) -> Json<Value> {
    Json(disk::usage(&d).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RunnerState;

    #[test]
    fn ranges_are_read() {
        assert_eq!(parse_range("bytes=10-"), Some((10, None)));
        assert_eq!(parse_range("bytes=10-19"), Some((10, Some(10))));
        assert_eq!(parse_range("bytes=19-10"), None);
        assert_eq!(parse_range("items=1-2"), None);
    }

    #[test]
    fn runner_states_in_a_word() {
        let st = |outcome: &str| RunnerState {
            last_outcome: Some(outcome.into()),
            ..RunnerState::default()
        };
        assert_eq!(runner_state(None, false), "starting");
        assert_eq!(runner_state(Some(&st("no_job")), false), "polling");
        assert_eq!(runner_state(Some(&st("forbidden")), false), "token invalid");
        assert_eq!(
            runner_state(Some(&st("unavailable")), false),
            "GitLab unreachable"
        );
        assert_eq!(
            runner_state(Some(&st("not_started: x")), false),
            "not started"
        );
        assert_eq!(runner_state(Some(&st("no_job")), true), "stopping");
        let mut off = st("forbidden");
        off.unhealthy_until = Some("2999-01-01T00:00:00Z".into());
        assert_eq!(runner_state(Some(&off), false), "backing off");
        assert_eq!(
            url_host("https://gitlab.example.com:8443/x"),
            "gitlab.example.com:8443"
        );
    }
}
