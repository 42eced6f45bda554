//! Runner registration and token management, as GitLab answers them (reference `protocol.md` §1.2–§1.6):
//!
//! * `POST /api/v4/runners` — legacy registration token → `201 {id, token, token_expires_at}`; `403` for an
//!   unknown registration token, `410` when registration tokens are disabled, `400` for missing parameters
//!   (gitlab lib/api/ci/runner.rb, lib/api/entities/ci/runner_registration_details.rb);
//! * `POST /api/v4/runners/verify` — `200 {id, token, token_expires_at}`, `403`, `422` for an orphaned runner;
//!   records the runner manager by `system_id` (`<legacy>` without one);
//! * `DELETE /api/v4/runners` — `204`, `403`; `DELETE /api/v4/runners/managers` — `204`, `404` without that
//!   manager, `403`;
//! * `POST /api/v4/runners/reset_authentication_token` — `201 {token, token_expires_at}`, `403`; and the
//!   `PRIVATE-TOKEN` variant `POST /api/v4/runners/:id/reset_authentication_token` (`401` without a valid access
//!   token, `404` for an unknown runner);
//! * `GET /api/v4/runners/:id` and `GET /api/v4/runners/all` with `PRIVATE-TOKEN` (GitLab's REST API, `doc/api/
//!   runners.md`): `paused`, `status` (`online`, `offline`, `never_contacted`), `contacted_at`, tags, …
//!
//! An expired runner token is unknown to GitLab: every endpoint answers `403` for it (jobs/request included,
//! see `server/jobs.rs`).

use crate::server::{
    body_object, forbidden, invalid_params, message, non_null, valid_system_id, with_content_type,
};
use crate::state::{random_hex, Shared};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What the coordinator knows of a runner beyond its token (defaults: never contacted, not expiring).
#[derive(Debug, Clone, Default)]
pub(crate) struct RunnerRecord {
    pub expires_at: Option<OffsetDateTime>,
    pub contacted_at: Option<OffsetDateTime>,
    /// Runner managers by `system_id` (`<legacy>` for requests without one).
    pub managers: BTreeSet<String>,
    pub orphaned: bool,
    pub registered: Option<Value>,
    pub resets: u32,
}

impl RunnerRecord {
    pub(crate) fn expired(&self) -> bool {
        self.expires_at
            .is_some_and(|at| at <= OffsetDateTime::now_utc())
    }

    pub(crate) fn contacted(&mut self, system_id: Option<&str>) {
        self.contacted_at = Some(OffsetDateTime::now_utc());
        self.managers
            .insert(system_id.unwrap_or("<legacy>").to_string());
    }
}

/// Instance-wide registration settings.
#[derive(Debug, Default)]
pub(crate) struct RegistrationState {
    pub registration_tokens: HashSet<String>,
    /// `allow_runner_registration_token` off: `POST /runners` answers `410 Gone`.
    pub registration_disallowed: bool,
    /// Lifetime of tokens handed out by register and reset (`runner_token_expiration_interval`).
    pub token_lifetime: Option<Duration>,
    /// Access tokens accepted as `PRIVATE-TOKEN` (admin).
    pub admin_tokens: HashSet<String>,
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v4/runners", post(register).delete(unregister))
        .route("/api/v4/runners/verify", post(verify))
        .route(
            "/api/v4/runners/managers",
            axum::routing::delete(unregister_manager),
        )
        .route(
            "/api/v4/runners/reset_authentication_token",
            post(reset_token),
        )
        .route(
            "/api/v4/runners/{id}/reset_authentication_token",
            post(reset_token_pat),
        )
        .route("/api/v4/runners/all", get(list_all))
        .route("/api/v4/runners/{id}", get(show))
}

fn rfc3339(t: Option<OffsetDateTime>) -> Value {
    t.and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    with_content_type(status, "application/json", body.to_string())
}

fn new_runner_token() -> String {
    format!("glrtr-{}", random_hex(10))
}

/// `token` of a JSON body (Grape's `requires :token, type: String`).
// The error is the finished answer, returned at once by the handler: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn token_param(
    sh: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Map<String, Value>, String), Response> {
    let obj = body_object(sh.opts.strict, headers, body);
    match non_null(&obj, "token") {
        Some(Value::String(t)) => {
            let t = t.clone();
            Ok((obj, t))
        }
        Some(_) => Err(invalid_params(&["token is invalid".to_string()])),
        None => Err(invalid_params(&["token is missing".to_string()])),
    }
}

fn expiry(lifetime: Option<Duration>) -> Option<OffsetDateTime> {
    lifetime.map(|d| {
        OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::now_utc())
            + d
    })
}

async fn register(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (obj, token) = match token_param(&sh, &headers, &body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let mut st = sh.lock();
    if st.registration.registration_disallowed {
        return message(StatusCode::GONE, "runner_registration_disallowed");
    }
    if !st.registration.registration_tokens.contains(&token) {
        return forbidden();
    }
    let description = obj
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let tags: Vec<String> = obj
        .get("tag_list")
        .map(|t| match t {
            Value::String(s) => s
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        })
        .unwrap_or_default();
    let paused = obj.get("paused").and_then(Value::as_bool).unwrap_or(false)
        || obj.get("active").and_then(Value::as_bool) == Some(false);
    let new_token = new_runner_token();
    let lifetime = st.registration.token_lifetime;
    let id = st.add_runner(
        &new_token,
        crate::RunnerOptions {
            paused,
            description: description.clone(),
            tags: tags.clone(),
            ..Default::default()
        },
    );
    let expires_at = expiry(lifetime);
    if let Some(r) = st.runners.get_mut(&new_token) {
        r.reg.expires_at = expires_at;
        let mut registered = obj.clone();
        registered.remove("token");
        r.reg.registered = Some(Value::Object(registered));
    }
    drop(st);
    sh.notify();
    json_response(
        StatusCode::CREATED,
        json!({"id": id, "token": new_token, "token_expires_at": rfc3339(expires_at)}),
    )
}

async fn verify(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (obj, token) = match token_param(&sh, &headers, &body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let system_id = non_null(&obj, "system_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    if system_id.as_deref().is_some_and(|s| !valid_system_id(s)) {
        return invalid_params(&["system_id is invalid".to_string()]);
    }
    let mut st = sh.lock();
    let Some(r) = st.runners.get_mut(&token) else {
        return forbidden();
    };
    if r.reg.expired() {
        return forbidden();
    }
    if r.reg.orphaned {
        return message(StatusCode::UNPROCESSABLE_ENTITY, "422 Runner is orphaned");
    }
    r.reg.contacted(system_id.as_deref());
    if let Some(info) = non_null(&obj, "info") {
        r.info = Some(info.clone());
    }
    let body = json!({"id": r.id, "token": token, "token_expires_at": rfc3339(r.reg.expires_at)});
    json_response(StatusCode::OK, body)
}

async fn unregister(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (_, token) = match token_param(&sh, &headers, &body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let mut st = sh.lock();
    match st.runners.get(&token) {
        Some(r) if !r.reg.expired() => {
            st.runners.remove(&token);
        }
        _ => return forbidden(),
    }
    drop(st);
    sh.notify();
    no_content()
}

async fn unregister_manager(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (obj, token) = match token_param(&sh, &headers, &body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some(system_id) = non_null(&obj, "system_id")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return invalid_params(&["system_id is missing".to_string()]);
    };
    let mut st = sh.lock();
    let Some(r) = st.runners.get_mut(&token).filter(|r| !r.reg.expired()) else {
        return forbidden();
    };
    if !r.reg.managers.remove(&system_id) {
        return message(StatusCode::NOT_FOUND, "404 Runner Manager Not Found");
    }
    no_content()
}

/// Moves the runner to a new token, as `Ci::Runner#reset_token!` does; returns `(token, expires_at)`.
fn rotate(st: &mut crate::state::State, old: &str) -> Option<(String, Option<OffsetDateTime>)> {
    let mut runner = st.runners.remove(old)?;
    let new_token = new_runner_token();
    runner.reg.resets += 1;
    if runner.reg.expires_at.is_some() || st.registration.token_lifetime.is_some() {
        runner.reg.expires_at = expiry(st.registration.token_lifetime);
    }
    let expires_at = runner.reg.expires_at;
    st.runners.insert(new_token.clone(), runner);
    Some((new_token, expires_at))
}

fn reset_answer(token: String, expires_at: Option<OffsetDateTime>) -> Response {
    let mut body = json!({ "token": token });
    if expires_at.is_some() {
        body["token_expires_at"] = rfc3339(expires_at);
    }
    json_response(StatusCode::CREATED, body)
}

async fn reset_token(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (_, token) = match token_param(&sh, &headers, &body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let mut st = sh.lock();
    if st.runners.get(&token).is_none_or(|r| r.reg.expired()) {
        return forbidden();
    }
    let Some((new_token, expires_at)) = rotate(&mut st, &token) else {
        return forbidden();
    };
    drop(st);
    sh.notify();
    reset_answer(new_token, expires_at)
}

/// `PRIVATE-TOKEN` check: `401 Unauthorized` as GitLab's API answers a missing or unknown access token.
#[allow(clippy::result_large_err)]
fn admin(sh: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let pat = crate::server::header_str(headers, "private-token").unwrap_or("");
    if pat.is_empty() || !sh.lock().registration.admin_tokens.contains(pat) {
        return Err(message(StatusCode::UNAUTHORIZED, "401 Unauthorized"));
    }
    Ok(())
}

fn token_by_id(st: &crate::state::State, id: &str) -> Option<String> {
    let id: i64 = id.parse().ok()?;
    st.runners
        .iter()
        .find(|(_, r)| r.id == id)
        .map(|(t, _)| t.clone())
}

async fn reset_token_pat(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = admin(&sh, &headers) {
        return resp;
    }
    let mut st = sh.lock();
    let Some(token) = token_by_id(&st, &id) else {
        return message(StatusCode::NOT_FOUND, "404 Runner Not Found");
    };
    let Some((new_token, expires_at)) = rotate(&mut st, &token) else {
        return message(StatusCode::NOT_FOUND, "404 Runner Not Found");
    };
    drop(st);
    sh.notify();
    reset_answer(new_token, expires_at)
}

/// GitLab's `Ci::Runner#status`: `online` when contacted within the last 2 hours, `never_contacted`,
/// `offline` otherwise (`stale` after 7 days is not reached in tests).
fn runner_json(r: &crate::state::Runner) -> Value {
    let status = match r.reg.contacted_at {
        None => "never_contacted",
        Some(at) if OffsetDateTime::now_utc() - at < time::Duration::hours(2) => "online",
        Some(_) => "offline",
    };
    let info = r.info.clone().unwrap_or(Value::Null);
    let field = |k: &str| info.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "id": r.id,
        "description": r.opts.description,
        "ip_address": null,
        "active": !r.opts.paused,
        "paused": r.opts.paused,
        "is_shared": true,
        "runner_type": "instance_type",
        "name": field("name"),
        "online": status == "online",
        "status": status,
        "contacted_at": rfc3339(r.reg.contacted_at),
        "tag_list": r.opts.tags,
        "version": field("version"),
        "revision": field("revision"),
        "platform": field("platform"),
        "architecture": field("architecture"),
        "token_expires_at": rfc3339(r.reg.expires_at),
    })
}

async fn show(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = admin(&sh, &headers) {
        return resp;
    }
    let st = sh.lock();
    let Some(token) = token_by_id(&st, &id) else {
        return message(StatusCode::NOT_FOUND, "404 Runner Not Found");
    };
    match st.runners.get(&token) {
        Some(r) => json_response(StatusCode::OK, runner_json(r)),
        None => message(StatusCode::NOT_FOUND, "404 Runner Not Found"),
    }
}

async fn list_all(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(resp) = admin(&sh, &headers) {
        return resp;
    }
    let st = sh.lock();
    let mut all: Vec<&crate::state::Runner> = st.runners.values().collect();
    all.sort_by_key(|r| r.id);
    json_response(
        StatusCode::OK,
        Value::Array(all.into_iter().map(runner_json).collect()),
    )
}

fn no_content() -> Response {
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}
