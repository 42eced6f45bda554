//! Grape's answers (`error!`, `job_forbidden!`, plain-text statuses) and its parameter checks, as the handlers of
//! every endpoint family give them.

use crate::jobs::Status;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Map, Value};

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

pub(crate) fn no_content() -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

pub(crate) fn no_content_with_update(last_update: &str) -> Response {
    let mut resp = no_content();
    set_header(&mut resp, "x-gitlab-last-update", last_update);
    resp
}

/// The API's plain-text status body (`content_type :txt`, `body result.status.to_s`).
pub(crate) fn status_text(status: StatusCode, job_status: Status) -> Response {
    let mut resp = with_content_type(status, "text/plain", status.as_u16().to_string());
    set_header(&mut resp, "job-status", job_status.as_str());
    resp
}

pub(crate) fn is_json(headers: &HeaderMap) -> bool {
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
pub(crate) enum Kind {
    Str,
    Int,
    Hash,
}

pub(crate) fn check_param(
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

pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_id_format() {
        assert!(valid_system_id("s_0123456789ab"));
        assert!(valid_system_id("r_ABCdef123456"));
        assert!(!valid_system_id("s_0123456789a"));
        assert!(!valid_system_id("x_0123456789ab"));
        assert!(!valid_system_id("s_01234567890é"));
        assert!(!valid_system_id(""));
    }
}
