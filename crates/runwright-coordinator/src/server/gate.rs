//! The middleware around every route: each request is classified by [`Endpoint`] and logged
//! ([`RequestLog`]); with the `faults` feature it is also given the fault its endpoint drew (`inject.rs`), and
//! the handler-level ones (`416` on trace patches, `202` on final updates) travel to the handler as
//! [`HandlerFault`].

use super::git;
#[cfg(feature = "faults")]
use super::inject;
use super::respond::message;
use super::MAX_API_BODY;
#[cfg(feature = "faults")]
use crate::faults::{Drawn, Fault};
use crate::log::{Endpoint, RequestLog, REQUEST_HEADERS, RESPONSE_HEADERS};
use crate::state::Shared;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The handler-level fault drawn for this request (`RangeMismatch` / `Accepted202`), if any; a handler that
/// does not apply it gives it back. Without the `faults` feature there is never one.
#[derive(Clone, Default)]
pub(crate) struct HandlerFault(#[cfg(feature = "faults")] pub(super) Option<Drawn>);

impl HandlerFault {
    /// An unused fault goes back to the head of `endpoint`'s queue (or is dropped, if it was random).
    pub(crate) fn give_back(self, sh: &Shared, endpoint: Endpoint) {
        #[cfg(feature = "faults")]
        if let Some(drawn) = self.0 {
            sh.faults.give_back(endpoint, drawn);
        }
        #[cfg(not(feature = "faults"))]
        let _ = (sh, endpoint);
    }

    /// Takes the drawn fault if it is `fault`, counting it as injected on `endpoint`; the handler applies it.
    #[cfg(feature = "faults")]
    pub(super) fn take(&mut self, sh: &Shared, endpoint: Endpoint, fault: &Fault) -> Option<Fault> {
        let drawn = self.0.take_if(|d| d.fault == *fault)?;
        sh.faults.record(endpoint, &drawn.fault);
        Some(drawn.fault)
    }
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

pub(super) fn interesting(headers: &HeaderMap, names: &[&str]) -> BTreeMap<String, String> {
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

/// Request log (and, with the `faults` feature, fault injection) around every route.
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
    #[cfg(feature = "faults")]
    let kill = req.extensions().get::<inject::ConnKill>().cloned();

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
        #[cfg(feature = "faults")]
        fault: None,
        at,
        took: Duration::ZERO,
    };

    // Git traffic and artifact uploads are streamed by their handlers, never buffered here.
    let req = if matches!(endpoint, Endpoint::Git | Endpoint::ArtifactUpload) {
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

    #[cfg(feature = "faults")]
    let (req, entry, injected) = match inject::before(&sh, &method, entry, req, started, kill).await
    {
        Ok(go_on) => go_on,
        Err(answered) => return answered,
    };
    #[cfg(not(feature = "faults"))]
    let req = {
        let mut req = req;
        req.extensions_mut().insert(HandlerFault::default());
        req
    };

    let resp = next.run(req).await;
    #[cfg(feature = "faults")]
    let (entry, resp) = match inject::after(&sh, entry, started, resp, injected).await {
        Ok(go_on) => go_on,
        Err(dropped) => return dropped,
    };
    finish(&sh, entry, started, resp)
}

pub(super) fn finish(
    sh: &Shared,
    mut entry: RequestLog,
    started: Instant,
    resp: Response,
) -> Response {
    entry.status = Some(resp.status().as_u16());
    entry.response_headers = interesting(resp.headers(), RESPONSE_HEADERS);
    entry.took = started.elapsed();
    sh.push_log(entry);
    resp
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
