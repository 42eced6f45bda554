//! The job endpoints: `POST /api/v4/jobs/request` (gitlab lib/api/ci/runner.rb, lib/api/ci/helpers/job_request.rb)
//! with Workhorse long polling in front of it (gitlab workhorse/internal/builds/register.go), and `PUT
//! /api/v4/jobs/:id` (gitlab lib/api/ci/runner.rb, app/services/ci/update_build_state_service.rb).

use super::artifacts;
use super::gate::HandlerFault;
use super::git;
#[cfg(feature = "faults")]
use super::inject;
use super::respond::{
    body_object, check_param, forbidden, header_str, invalid_params, is_json, job_forbidden,
    no_content, no_content_with_update, non_null, set_header, status_text, valid_system_id,
    with_content_type, Kind,
};
#[cfg(feature = "faults")]
use crate::faults::Fault;
use crate::jobs::Status;
use crate::log::Endpoint;
use crate::payload::{self, PayloadContext, GITLAB_FAILURE_REASONS};
use crate::state::{token_eq, Shared};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

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

pub(super) async fn request_job(
    State(sh): State<Arc<Shared>>,
    Extension(fault): Extension<HandlerFault>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fault.give_back(&sh, Endpoint::RequestJob);
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

fn crc32_label(data: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(data))
}

pub(super) async fn update_job(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    Extension(fault): Extension<HandlerFault>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (resp, unused) = update_job_inner(&sh, &id, fault, &headers, &body);
    unused.give_back(&sh, Endpoint::UpdateJob);
    sh.notify();
    resp
}

fn update_job_inner(
    sh: &Shared,
    id: &str,
    fault: HandlerFault,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, HandlerFault) {
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
    #[cfg(feature = "faults")]
    let mut fault = fault;
    // accept_available?: not `running`, a checksum, live trace on.
    if state != "running" {
        if let Some(checksum) = checksum {
            #[cfg(feature = "faults")]
            if let Some(applied) = fault.take(sh, Endpoint::UpdateJob, &Fault::Accepted202) {
                return (inject::accepted_202(job, applied), HandlerFault::default());
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
    (status_text(status, job.status), fault)
}
