//! `PATCH /api/v4/jobs/:id/trace` (gitlab lib/api/ci/runner.rb, app/services/ci/append_build_trace_service.rb):
//! trace chunks appended at the offset their `Content-Range` starts at, `416` with the stored length otherwise.

use super::gate::HandlerFault;
#[cfg(feature = "faults")]
use super::inject;
use super::respond::{
    forbidden, header_str, invalid_params, job_forbidden, message, query_param, set_header,
};
#[cfg(feature = "faults")]
use crate::faults::Fault;
use crate::log::Endpoint;
use crate::state::{token_eq, Shared};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::Extension;
use std::sync::Arc;

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

pub(super) async fn patch_trace(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    Extension(fault): Extension<HandlerFault>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (resp, unused) = patch_trace_inner(&sh, &id, fault, &uri, &headers, &body);
    unused.give_back(&sh, Endpoint::PatchTrace);
    sh.notify();
    resp
}

fn patch_trace_inner(
    sh: &Shared,
    id: &str,
    fault: HandlerFault,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, HandlerFault) {
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

    #[cfg(feature = "faults")]
    let mut fault = fault;
    #[cfg(feature = "faults")]
    if let Some(applied) = fault.take(sh, Endpoint::PatchTrace, &Fault::RangeMismatch) {
        return (
            inject::range_mismatch(job, applied),
            HandlerFault::default(),
        );
    }

    if start != stored as i64 {
        let mut resp = message(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "416 Range Not Satisfiable",
        );
        set_header(&mut resp, "range", &format!("0-{stored}"));
        return (resp, fault);
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
    (resp, fault)
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
}
