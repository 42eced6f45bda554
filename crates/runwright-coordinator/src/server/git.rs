//! Git over HTTP for job tokens: `GET /<path>.git/info/refs?service=git-upload-pack` and
//! `POST /<path>.git/git-upload-pack`, served by running `git http-backend` as a CGI program.
//!
//! Authentication mirrors GitLab's (gitlab lib/gitlab/auth.rb `build_access_token_check`,
//! app/controllers/repositories/git_http_client_controller.rb): HTTP basic auth with user `gitlab-ci-token`
//! and the token of a job that is running (or canceling, or awaiting its two-phase ack); otherwise `401` with
//! `WWW-Authenticate: Basic realm="GitLab"`, which is also what makes git send the credentials from the URL.
//! A valid token for a project it may not read gets `404`, as GitLab hides such projects. Pushing is refused.
//!
//! Git LFS as GitLab serves it to job tokens (gitlab app/controllers/repositories/lfs_api_controller.rb `batch`,
//! lfs_storage_controller.rb `download`): `POST /<path>.git/info/lfs/objects/batch` answers a download with an
//! `href` to `/<path>.git/gitlab-lfs/objects/<oid>` and the request's own `Authorization`; the objects come from
//! the served repository's LFS store (`lfs/objects/<oid[0..2]>/<oid[2..4]>/<oid>`, where git-lfs keeps them).
//! Uploads are refused like pushes.

use crate::error::CoordinatorError;
use crate::state::Shared;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use futures::TryStreamExt;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::io::{ReaderStream, StreamReader};

/// Split `/grp/app.git/info/refs` into (`grp/app`, `info/refs`).
pub(crate) fn split_git_path(path: &str) -> Option<(&str, &str)> {
    let path = path.strip_prefix('/')?;
    let idx = path.find(".git/")?;
    let project = &path[..idx];
    let rest = &path[idx + ".git/".len()..];
    if project.is_empty()
        || project
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return None;
    }
    Some((project, rest))
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut resp = Response::new(Body::from(text.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn unauthorized() -> Response {
    let mut resp = plain(StatusCode::UNAUTHORIZED, "HTTP Basic: Access denied\n");
    resp.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"GitLab\""),
    );
    resp
}

fn not_found() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "The project you were looking for could not be found or you don't have permission to view it.\n",
    )
}

fn basic_credentials(req: &Request) -> Option<(String, String)> {
    let value = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// Serve one git smart-HTTP request.
pub(crate) async fn serve(sh: &Shared, req: Request) -> Response {
    let Some(root) = sh.opts.git_root.clone() else {
        return not_found();
    };
    let path = req.uri().path().to_string();
    let Some((project_path, rest)) = split_git_path(&path) else {
        return not_found();
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();

    // Job token authentication first (GitLab answers 401 before revealing anything about the project).
    let repo_dir = {
        let Some((user, pass)) = basic_credentials(&req) else {
            return unauthorized();
        };
        let st = sh.lock();
        let Some(job) = st
            .job_by_active_token(&pass)
            .filter(|_| user == "gitlab-ci-token")
        else {
            return unauthorized();
        };
        let own = &job.spec.project;
        if own.full_path != project_path && !own.token_access.iter().any(|p| p == project_path) {
            return not_found();
        }
        match st.projects.get(project_path) {
            Some(project) => project.repo_dir(),
            None if own.full_path == project_path => own.repo_dir(),
            None => format!("{project_path}.git"),
        }
    };
    if !root.join(&repo_dir).is_dir() {
        return not_found();
    }
    match (method.as_str(), rest) {
        ("POST", "info/lfs/objects/batch") => {
            return lfs_batch(req, project_path, &root.join(&repo_dir)).await
        }
        ("GET", r) if r.starts_with("gitlab-lfs/objects/") => {
            return lfs_download(&root.join(&repo_dir), &r["gitlab-lfs/objects/".len()..]).await
        }
        _ => {}
    }
    let service_ok = match (method.as_str(), rest) {
        ("GET", "info/refs") => query.split('&').any(|kv| kv == "service=git-upload-pack"),
        ("POST", "git-upload-pack") => true,
        ("POST", "git-receive-pack") => false,
        _ => return not_found(),
    };
    if !service_ok {
        return plain(
            StatusCode::FORBIDDEN,
            "You are not allowed to push code to this project.\n",
        );
    }
    run_cgi(&root, &format!("/{repo_dir}/{rest}"), &query, req).await
}

const LFS_CONTENT_TYPE: &str = "application/vnd.git-lfs+json";
/// Larger batch requests are refused (a batch of 100 objects is well below).
const MAX_LFS_BATCH: usize = 4 * 1024 * 1024;

fn lfs_json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static(LFS_CONTENT_TYPE),
    );
    resp
}

fn lfs_message(status: StatusCode, message: &str) -> Response {
    lfs_json(status, &serde_json::json!({ "message": message }))
}

/// Where git-lfs keeps an object in a repository: `lfs/objects/<oid[0..2]>/<oid[2..4]>/<oid>`. `None` for
/// anything but a SHA-256 in lower-case hex.
fn lfs_object_path(repo: &Path, oid: &str) -> Option<std::path::PathBuf> {
    if oid.len() != 64 || !oid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Some(
        repo.join("lfs/objects")
            .join(&oid[..2])
            .join(&oid[2..4])
            .join(oid),
    )
}

/// `POST <repo>.git/info/lfs/objects/batch` (gitlab `LfsApiController#batch`).
async fn lfs_batch(req: Request, project_path: &str, repo: &Path) -> Response {
    let scheme_host = {
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_string();
        format!("http://{host}")
    };
    let authorization = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_LFS_BATCH).await else {
        return lfs_message(StatusCode::PAYLOAD_TOO_LARGE, "Request too large.");
    };
    let Ok(serde_json::Value::Object(batch)) = serde_json::from_slice::<serde_json::Value>(&body)
    else {
        return lfs_message(StatusCode::UNPROCESSABLE_ENTITY, "Invalid batch request.");
    };
    let objects: Vec<serde_json::Value> = match batch.get("objects") {
        Some(serde_json::Value::Array(a)) if !a.is_empty() => a.clone(),
        _ => return lfs_message(StatusCode::NOT_FOUND, "Not found."),
    };
    match batch.get("operation").and_then(serde_json::Value::as_str) {
        Some("download") => {}
        // A job token cannot push (gitlab `lfs_upload_access?`).
        Some("upload") => {
            return lfs_message(
                StatusCode::FORBIDDEN,
                "Access forbidden. Check your access level.",
            )
        }
        _ => return lfs_message(StatusCode::UNPROCESSABLE_ENTITY, "Invalid batch request."),
    }
    let mut out = Vec::with_capacity(objects.len());
    for mut object in objects {
        let oid = object
            .get("oid")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string();
        let exists = lfs_object_path(repo, &oid).is_some_and(|p| p.is_file());
        if let serde_json::Value::Object(map) = &mut object {
            if exists {
                let mut header = serde_json::Map::new();
                if let Some(a) = &authorization {
                    header.insert("Authorization".into(), a.clone().into());
                }
                map.insert(
                    "actions".into(),
                    serde_json::json!({ "download": {
                        "href": format!("{scheme_host}/{project_path}.git/gitlab-lfs/objects/{oid}"),
                        "header": header,
                    }}),
                );
                map.insert("authenticated".into(), true.into());
            } else {
                map.insert(
                    "error".into(),
                    serde_json::json!({
                        "code": 404,
                        "message": "Object does not exist on the server or you don't have permissions to access it",
                    }),
                );
            }
        }
        out.push(object);
    }
    lfs_json(StatusCode::OK, &serde_json::json!({ "objects": out }))
}

/// `GET <repo>.git/gitlab-lfs/objects/<oid>` (gitlab `LfsStorageController#download`), streamed.
async fn lfs_download(repo: &Path, oid: &str) -> Response {
    let Some(path) = lfs_object_path(repo, oid) else {
        return not_found();
    };
    let Ok(file) = tokio::fs::File::open(&path).await else {
        return not_found();
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    let mut resp = Response::new(Body::from_stream(ReaderStream::new(file)));
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(len) = len {
        resp.headers_mut()
            .insert(axum::http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

/// The object format of a served repository (`extensions.objectformat` in its config), as GitLab reports its
/// project's repository in `git_info.repo_object_format`: `sha1` unless it says otherwise.
pub(crate) fn object_format(repo: &Path) -> String {
    let Ok(config) = std::fs::read_to_string(repo.join("config")) else {
        return "sha1".to_string();
    };
    let mut in_extensions = false;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_extensions = line
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .eq_ignore_ascii_case("extensions");
            continue;
        }
        if !in_extensions {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            if k.trim().eq_ignore_ascii_case("objectformat") {
                return v.trim().trim_matches('"').to_ascii_lowercase();
            }
        }
    }
    "sha1".to_string()
}

/// Run `git http-backend` for one request, streaming the request body in and the response body out.
async fn run_cgi(root: &Path, path_info: &str, query: &str, req: Request) -> Response {
    let headers = req.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env(
            "PATH",
            std::env::var_os(runwright_static::env_vars::PATH).unwrap_or_default(),
        )
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", req.method().as_str())
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "gitlab-ci-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(home) = std::env::var_os(runwright_static::env_vars::HOME) {
        cmd.env("HOME", home);
    }
    for (cgi, http) in [
        ("CONTENT_TYPE", "content-type"),
        ("CONTENT_LENGTH", "content-length"),
        ("HTTP_CONTENT_ENCODING", "content-encoding"),
        ("HTTP_GIT_PROTOCOL", "git-protocol"),
    ] {
        if let Some(v) = header(http) {
            cmd.env(cgi, v);
        }
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => {
            tracing::warn!(%err, "cannot start git http-backend");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "git http-backend unavailable\n",
            );
        }
    };
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "git http-backend pipes unavailable\n",
        );
    };

    // Request body → stdin, concurrently with reading stdout.
    let body = req
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    tokio::spawn(async move {
        let mut reader = StreamReader::new(body);
        if let Err(err) = tokio::io::copy(&mut reader, &mut stdin).await {
            tracing::debug!(%err, "feeding git http-backend stopped");
        }
        let _ = stdin.shutdown().await;
    });
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(%line, "git http-backend");
        }
        match child.wait().await {
            Ok(status) if !status.success() => tracing::debug!(%status, "git http-backend exited"),
            Ok(_) => {}
            Err(err) => tracing::debug!(%err, "waiting for git http-backend"),
        }
    });

    // CGI response headers, then the body as a stream.
    let mut out = BufReader::new(stdout);
    let mut resp = Response::new(Body::empty());
    let mut line = String::new();
    loop {
        line.clear();
        match out.read_line(&mut line).await {
            Ok(0) => {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    "git http-backend sent no response\n",
                )
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(%err, "reading git http-backend headers");
                return plain(StatusCode::BAD_GATEWAY, "git http-backend failed\n");
            }
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        let Some((name, value)) = trimmed.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok());
            if let Some(status) = code.and_then(|c| StatusCode::from_u16(c).ok()) {
                *resp.status_mut() = status;
            }
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    *resp.body_mut() = Body::from_stream(ReaderStream::new(out));
    resp
}

/// `git update-ref <name> <sha>` in a bare repository.
pub(crate) fn update_ref(repo: &Path, name: &str, sha: &str) -> Result<(), CoordinatorError> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["update-ref", name, sha])
        .output()
        .map_err(|source| CoordinatorError::Io {
            action: "running git update-ref in",
            path: repo.to_path_buf(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CoordinatorError::Git {
            command: format!("git --git-dir {} update-ref {name} {sha}", repo.display()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_paths() {
        assert_eq!(
            split_git_path("/grp/app.git/info/refs"),
            Some(("grp/app", "info/refs"))
        );
        assert_eq!(
            split_git_path("/a/b/c.git/git-upload-pack"),
            Some(("a/b/c", "git-upload-pack"))
        );
        assert_eq!(split_git_path("/../x.git/info/refs"), None);
        assert_eq!(split_git_path("/.git/info/refs"), None);
        assert_eq!(split_git_path("/api/v4/jobs"), None);
    }

    #[test]
    fn lfs_objects_live_where_git_lfs_keeps_them() {
        let oid = "00aac9431ac62e8db88a7a4a2b11f0ee490217ad05311f93e9a9cb3cabf53161";
        assert_eq!(
            lfs_object_path(Path::new("/r.git"), oid),
            Some(std::path::PathBuf::from(format!(
                "/r.git/lfs/objects/00/aa/{oid}"
            )))
        );
        for bad in [
            "../../etc/passwd",
            "00AAC9",
            &oid.to_uppercase(),
            &format!("{oid}0"),
        ] {
            assert_eq!(lfs_object_path(Path::new("/r.git"), bad), None, "{bad}");
        }
    }

    #[test]
    fn object_format_comes_from_the_repository_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(object_format(dir.path()), "sha1");
        std::fs::write(
            dir.path().join("config"),
            "[core]\n\trepositoryformatversion = 1\n[extensions]\n\tobjectformat = sha256\n",
        )
        .expect("config");
        assert_eq!(object_format(dir.path()), "sha256");
    }
}
