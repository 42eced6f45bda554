//! Job artifacts as GitLab serves them to runners (reference `protocol.md` §5, gitlab lib/api/ci/runner.rb):
//!
//! * `POST /api/v4/jobs/:id/artifacts` — `authenticate_job!`, Grape's parameter rules (`artifact_type` default
//!   `archive`, `artifact_format` default `zip`, both from GitLab's enums), one multipart file field `file`
//!   streamed to disk (as Workhorse does), the instance's maximum artifacts size (`413`), and `201` with the
//!   plain-text body `"201"` (`status :created; body "201"`);
//! * `GET /api/v4/jobs/:id/artifacts` — a running job's token may read any job's `archive` (GitLab checks the
//!   dependency relation; this test double does not); `?direct_download=true` is answered with a `302` to a
//!   token-free "object storage" URL when [`crate::CoordinatorOptions::object_storage_redirect`] is on;
//! * `GET /object-storage/:id` — that object storage;
//! * the `dependencies` entries of a job payload for [`crate::JobSpec::artifact_dependencies`] (gitlab
//!   lib/api/entities/ci/job_request/dependency.rb).
//!
//! Uploaded archives live in a temporary directory owned by the coordinator (mode 0700, files 0600) and removed
//! with it.

use crate::error::CoordinatorError;
use crate::log::Endpoint;
use crate::server::{
    forbidden, header_str, invalid_params, job_forbidden, message, query_param, set_header,
    with_content_type, HandlerFault,
};
use crate::state::{Job, Shared};
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::Extension;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// `Ci::JobArtifact.file_formats` (gitlab app/models/ci/job_artifact.rb).
const FILE_FORMATS: &[&str] = &["raw", "zip", "gzip"];

/// `Ci::JobArtifact.file_types` keys (gitlab app/models/concerns/enums/ci/job_artifact.rb `file_type`).
const FILE_TYPES: &[&str] = &[
    "archive",
    "metadata",
    "trace",
    "junit",
    "sast",
    "dependency_scanning",
    "container_scanning",
    "dast",
    "codequality",
    "license_scanning",
    "performance",
    "metrics",
    "metrics_referee",
    "network_referee",
    "lsif",
    "dotenv",
    "cobertura",
    "terraform",
    "accessibility",
    "cluster_applications",
    "secret_detection",
    "requirements",
    "coverage_fuzzing",
    "browser_performance",
    "load_performance",
    "api_fuzzing",
    "cluster_image_scanning",
    "cyclonedx",
    "requirements_v2",
    "annotations",
    "repository_xray",
    "jacoco",
    "scip",
    "sarif",
];

/// A request body answered before it was read is still read (and dropped) up to this much, so the client
/// finishes sending and sees the answer instead of a connection reset.
const DRAIN_CAP: u64 = 256 * 1024 * 1024;

/// One uploaded artifact of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    /// `artifact_type` (`archive` when the upload named none).
    pub artifact_type: String,
    /// `artifact_format` (`zip` when the upload named none).
    pub artifact_format: String,
    /// File name of the multipart field.
    pub filename: String,
    /// `expire_in` as sent, if it was.
    pub expire_in: Option<String>,
    /// Bytes stored.
    pub size: u64,
    /// Where the bytes are (inside the coordinator's temporary directory; gone once the coordinator is).
    pub path: PathBuf,
}

/// The coordinator's artifact files and the object-storage links handed out for them.
pub(crate) struct ArtifactStore {
    dir: tempfile::TempDir,
    next: AtomicU64,
    /// Object-storage id → (file, file name).
    links: Mutex<HashMap<String, (PathBuf, String)>>,
}

impl ArtifactStore {
    pub(crate) fn new() -> Result<ArtifactStore, CoordinatorError> {
        // The archives are the jobs' (their files, maybe secrets): readable by this user only, as a GitLab
        // instance's object storage is by nobody but the instance.
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("runwright-coordinator-artifacts-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|source| CoordinatorError::Io {
                action: "creating the artifacts directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        Ok(ArtifactStore {
            dir,
            next: AtomicU64::new(1),
            links: Mutex::new(HashMap::new()),
        })
    }

    fn new_path(&self, job_id: i64, artifact_type: &str) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // `artifact_type` was checked against FILE_TYPES: safe in a file name.
        self.dir
            .path()
            .join(format!("job-{job_id}-{artifact_type}-{n}"))
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, HashMap<String, (PathBuf, String)>> {
        self.links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh, unguessable object-storage id for `artifact`.
    fn link(&self, artifact: &StoredArtifact) -> String {
        let id = crate::state::random_hex(16);
        self.lock_links().insert(
            id.clone(),
            (artifact.path.clone(), artifact.filename.clone()),
        );
        id
    }

    fn resolve(&self, id: &str) -> Option<(PathBuf, String)> {
        self.lock_links().get(id).cloned()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Dependencies in the job payload

/// What a dependency entry needs to know about the job it points at.
pub(crate) struct DependencySource {
    name: String,
    /// File name and size of the job's `archive` upload.
    archive: Option<(String, u64)>,
}

/// The jobs named in any queued job's `artifact_dependencies` (collected before the handout loop borrows the
/// job table mutably).
pub(crate) fn dependency_sources(jobs: &BTreeMap<i64, Job>) -> HashMap<i64, DependencySource> {
    let wanted: Vec<i64> = jobs
        .values()
        .filter(|j| j.queued())
        .flat_map(|j| j.spec.artifact_dependencies.iter().copied())
        .collect();
    wanted
        .into_iter()
        .filter_map(|id| {
            let job = jobs.get(&id)?;
            let archive = job
                .record
                .artifacts
                .iter()
                .find(|a| a.artifact_type == "archive")
                .map(|a| (a.filename.clone(), a.size));
            Some((
                id,
                DependencySource {
                    name: job.record.name.clone(),
                    archive,
                },
            ))
        })
        .collect()
}

/// `dependencies[]` entries as gitlab's `Entities::Ci::JobRequest::Dependency` exposes them: `token` is the
/// *running* job's token (FF `ci_expose_running_job_token_for_artifacts`, on in current GitLab) and
/// `artifacts_file` is present only when the job has artifacts (`expose … if: available_artifacts?` — the key
/// is left out, not `null`). Ids of unknown jobs are skipped.
pub(crate) fn dependency_entries(
    ids: &[i64],
    sources: &HashMap<i64, DependencySource>,
    running_token: &str,
) -> Vec<Value> {
    ids.iter()
        .filter_map(|id| {
            let Some(source) = sources.get(id) else {
                tracing::warn!(
                    job = id,
                    "artifact dependency names a job the coordinator does not know; left out"
                );
                return None;
            };
            let mut entry = json!({"id": id, "name": source.name, "token": running_token});
            if let Some((filename, size)) = &source.archive {
                entry["artifacts_file"] = json!({"filename": filename, "size": size});
            }
            Some(entry)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Response helpers

fn unauthorized() -> Response {
    message(StatusCode::UNAUTHORIZED, "401 Unauthorized")
}

fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "404 Not Found")
}

fn internal_error() -> Response {
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "500 Internal Server Error",
    )
}

/// Reads and drops what is left of a request body (see [`DRAIN_CAP`]), then answers `resp`.
pub(crate) async fn drain_then(body: Body, resp: Response) -> Response {
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        total += chunk.len() as u64;
        if total > DRAIN_CAP {
            break;
        }
    }
    resp
}

/// Reads and drops the remaining parts of a multipart body (see [`DRAIN_CAP`]).
async fn drain_multipart(multipart: &mut Multipart) {
    let mut total = 0u64;
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(chunk)) = field.chunk().await {
            total += chunk.len() as u64;
            if total > DRAIN_CAP {
                return;
            }
        }
    }
}

async fn remove_quietly(path: &std::path::Path) {
    if let Err(err) = tokio::fs::remove_file(path).await {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %err, "cannot remove a rejected artifact upload");
        }
    }
}

/// `200` streaming a stored file (never read into memory), as Workhorse's send-file does.
async fn serve_file(path: &std::path::Path, filename: &str) -> Response {
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "stored artifact cannot be opened");
            return not_found();
        }
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    let stream = tokio_util::io::ReaderStream::new(file);
    let mut resp = with_content_type(
        StatusCode::OK,
        "application/octet-stream",
        Body::from_stream(stream),
    );
    if let Some(len) = len {
        set_header(&mut resp, "content-length", &len.to_string());
    }
    let quoted = filename.replace(['"', '\\', '\r', '\n'], "_");
    set_header(
        &mut resp,
        "content-disposition",
        &format!("attachment; filename=\"{quoted}\""),
    );
    resp
}

// ---------------------------------------------------------------------------------------------------------
// POST /api/v4/jobs/:id/artifacts

pub(crate) async fn upload(
    State(sh): State<Arc<Shared>>,
    Extension(store): Extension<Arc<ArtifactStore>>,
    Extension(fault): Extension<HandlerFault>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    fault.give_back(&sh, Endpoint::ArtifactUpload);
    let resp = upload_inner(&sh, &store, &id, req).await;
    sh.notify();
    resp
}

async fn upload_inner(sh: &Shared, store: &ArtifactStore, id: &str, req: Request) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return drain_then(
            req.into_body(),
            invalid_params(&["id is invalid".to_string()]),
        )
        .await;
    };
    let uri = req.uri().clone();
    // `params[:token] || env['HTTP_JOB_TOKEN']` (helpers/runner.rb `job_token`).
    let token = query_param(&uri, "token")
        .or_else(|| header_str(req.headers(), "job-token").map(str::to_string));

    // authenticate_job! — Workhorse asks Rails (`/authorize`) before it accepts the body.
    let denied = {
        let guard = sh.lock();
        match guard.jobs.get(&id) {
            None => Some(forbidden()),
            Some(job)
                if !token
                    .as_deref()
                    .is_some_and(|t| crate::state::token_eq(&job.record.token, t)) =>
            {
                Some(forbidden())
            }
            Some(job) if !(job.status.is_executing() || job.waiting_for_ack()) => {
                Some(job_forbidden(job.status, "Job is not processing on runner"))
            }
            Some(_) => None,
        }
    };
    if let Some(resp) = denied {
        return drain_then(req.into_body(), resp).await;
    }

    // Grape: `values:` checks answer `400 {"error": "<param> does not have a valid value"}`.
    let artifact_format = query_param(&uri, "artifact_format").unwrap_or_else(|| "zip".into());
    let artifact_type = query_param(&uri, "artifact_type").unwrap_or_else(|| "archive".into());
    let expire_in = query_param(&uri, "expire_in");
    let mut errors = Vec::new();
    if !FILE_TYPES.contains(&artifact_type.as_str()) {
        errors.push("artifact_type does not have a valid value".to_string());
    }
    if !FILE_FORMATS.contains(&artifact_format.as_str()) {
        errors.push("artifact_format does not have a valid value".to_string());
    }
    if !errors.is_empty() {
        return drain_then(req.into_body(), invalid_params(&errors)).await;
    }

    let mut multipart = match Multipart::from_request(req, &()).await {
        Ok(m) => m,
        // Not multipart/form-data: Workhorse finds no file, Grape reports the missing parameter.
        Err(_) => return invalid_params(&["file is missing".to_string()]),
    };
    let path = store.new_path(id, &artifact_type);
    let mut stored: Option<(String, u64)> = None;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) => {
                remove_quietly(&path).await;
                return message(
                    StatusCode::BAD_REQUEST,
                    &format!("400 Bad request - {}", err.body_text()),
                );
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        let filename = field.file_name().map(str::to_string);
        let rejection = if name != "file" {
            Some(format!(
                "unexpected form field {name:?}: only `file` is accepted"
            ))
        } else if stored.is_some() {
            Some("file is given more than once".to_string())
        } else if filename.is_none() {
            // Workhorse only turns parts with a file name into uploaded files.
            Some("file is invalid".to_string())
        } else {
            None
        };
        if let Some(error) = rejection {
            drop(field);
            drain_multipart(&mut multipart).await;
            remove_quietly(&path).await;
            return invalid_params(&[error]);
        }

        let mut out = match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await
        {
            Ok(f) => f,
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "cannot create the artifact file");
                drop(field);
                drain_multipart(&mut multipart).await;
                return internal_error();
            }
        };
        let mut size = 0u64;
        let mut too_large = false;
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(err) => {
                    drop(out);
                    remove_quietly(&path).await;
                    return message(
                        StatusCode::BAD_REQUEST,
                        &format!("400 Bad request - {}", err.body_text()),
                    );
                }
            };
            size += chunk.len() as u64;
            if sh.opts.max_artifact_size.is_some_and(|max| size > max) {
                too_large = true;
                break;
            }
            if let Err(err) = out.write_all(&chunk).await {
                tracing::warn!(path = %path.display(), %err, "cannot write the artifact file");
                drop(out);
                remove_quietly(&path).await;
                drop(field);
                drain_multipart(&mut multipart).await;
                return internal_error();
            }
        }
        if too_large {
            drop(out);
            remove_quietly(&path).await;
            // Keep reading what the client still sends, so it gets to read the answer.
            while let Ok(Some(_)) = field.chunk().await {}
            drop(field);
            drain_multipart(&mut multipart).await;
            return message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 Request Entity Too Large",
            );
        }
        if let Err(err) = out.flush().await {
            tracing::warn!(path = %path.display(), %err, "cannot write the artifact file");
            remove_quietly(&path).await;
            return internal_error();
        }
        stored = filename.map(|f| (f, size));
    }
    let Some((filename, size)) = stored else {
        return invalid_params(&["file is missing".to_string()]);
    };

    // Decided under the lock, cleaned up after it: no guard is held across an `.await`.
    let rejected = {
        let mut guard = sh.lock();
        match guard.jobs.get_mut(&id) {
            None => Some(forbidden()),
            // The unique index on (job, file_type): gitlab app/services/ci/job_artifacts/create_service.rb
            // `persist_artifact` rescues RecordNotUnique with this 400.
            Some(job)
                if job
                    .record
                    .artifacts
                    .iter()
                    .any(|a| a.artifact_type == artifact_type) =>
            {
                Some(message(
                    StatusCode::BAD_REQUEST,
                    "another artifact of the same type already exists",
                ))
            }
            Some(job) => {
                job.record.artifacts.push(StoredArtifact {
                    artifact_type,
                    artifact_format,
                    filename,
                    expire_in,
                    size,
                    path: path.clone(),
                });
                None
            }
        }
    };
    if let Some(resp) = rejected {
        remove_quietly(&path).await;
        return resp;
    }
    // `status :created; body "201"` with the API's text content type.
    with_content_type(StatusCode::CREATED, "text/plain", "201")
}

// ---------------------------------------------------------------------------------------------------------
// GET /api/v4/jobs/:id/artifacts

pub(crate) async fn download(
    State(sh): State<Arc<Shared>>,
    Extension(store): Extension<Arc<ArtifactStore>>,
    Extension(fault): Extension<HandlerFault>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    fault.give_back(&sh, Endpoint::ArtifactDownload);
    let Ok(id) = id.parse::<i64>() else {
        return invalid_params(&["id is invalid".to_string()]);
    };
    let token = query_param(&uri, "token")
        .or_else(|| header_str(&headers, "job-token").map(str::to_string))
        .filter(|t| !t.is_empty());
    let artifact = {
        let guard = sh.lock();
        let Some(token) = token else {
            return unauthorized();
        };
        // `authenticate_job_via_dependent_job!`: the token must belong to a job that is running.
        let Some(reader) = guard
            .jobs
            .values()
            .find(|j| crate::state::token_eq(&j.record.token, &token))
        else {
            return unauthorized();
        };
        if !(reader.status.is_executing() || reader.waiting_for_ack()) {
            return job_forbidden(reader.status, "Job is not processing on runner");
        }
        guard.jobs.get(&id).and_then(|j| {
            j.record
                .artifacts
                .iter()
                .find(|a| a.artifact_type == "archive")
                .cloned()
        })
    };
    let Some(artifact) = artifact else {
        return not_found();
    };
    // Grape `type: Boolean`.
    let direct = query_param(&uri, "direct_download")
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "t" | "yes"));
    if direct && sh.opts.object_storage_redirect {
        let link = store.link(&artifact);
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::FOUND;
        set_header(
            &mut resp,
            "location",
            &format!("{}object-storage/{link}", sh.base_url),
        );
        return resp;
    }
    serve_file(&artifact.path, &artifact.filename).await
}

// ---------------------------------------------------------------------------------------------------------
// GET /object-storage/:id

pub(crate) async fn object_storage(
    State(sh): State<Arc<Shared>>,
    Extension(store): Extension<Arc<ArtifactStore>>,
    Extension(fault): Extension<HandlerFault>,
    Path(link): Path<String>,
) -> Response {
    fault.give_back(&sh, Endpoint::ObjectStorage);
    // The id is the authorization, as a signed URL's signature is; no token is looked at.
    match store.resolve(&link) {
        Some((path, filename)) => serve_file(&path, &filename).await,
        None => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_entries_follow_gitlab_entity() {
        let mut sources = HashMap::new();
        sources.insert(
            3,
            DependencySource {
                name: "build".into(),
                archive: Some(("default.zip".into(), 12)),
            },
        );
        sources.insert(
            4,
            DependencySource {
                name: "lint".into(),
                archive: None,
            },
        );
        let entries = dependency_entries(&[3, 4, 99], &sources, "glcbt-running");
        assert_eq!(
            entries,
            vec![
                json!({"id": 3, "name": "build", "token": "glcbt-running",
                       "artifacts_file": {"filename": "default.zip", "size": 12}}),
                json!({"id": 4, "name": "lint", "token": "glcbt-running"}),
            ]
        );
    }
}
