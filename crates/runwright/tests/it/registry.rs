//! A private image registry on loopback for pull tests: the Docker Registry HTTP API v2 (the subset dockerd's
//! pull uses: `/v2/`, manifests, blobs) with Basic authentication, serving an image exported from the local
//! dockerd with `docker save`. dockerd treats 127.0.0.0/8 registries as insecure, so plain HTTP is enough.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Response, StatusCode, Uri};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub struct Registry {
    /// `127.0.0.1:<port>`, the image name prefix.
    pub host: String,
    /// User names of the authenticated requests, in order.
    pub users: Arc<Mutex<Vec<String>>>,
}

struct State {
    /// repository → tag → manifest bytes.
    manifests: HashMap<String, HashMap<String, Vec<u8>>>,
    blobs: HashMap<String, Vec<u8>>,
    user: String,
    password: String,
    users: Arc<Mutex<Vec<String>>>,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Registry {
    /// Serves the local image `source` as `<host>/<repository>:<tag>` to `user`/`password` only.
    pub async fn start(
        source: &str,
        repository: &str,
        tag: &str,
        user: &str,
        password: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let saved = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {source} | tar -x -C {}",
                dir.path().display()
            ))
            .status()
            .expect("docker save");
        assert!(saved.success(), "docker save {source}");
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("manifest.json")).expect("manifest.json"),
        )
        .expect("manifest.json is JSON");
        let entry = &manifest[0];
        let config = std::fs::read(dir.path().join(entry["Config"].as_str().expect("Config")))
            .expect("config");
        let mut blobs = HashMap::new();
        let config_digest = sha256(&config);
        let mut layers = Vec::new();
        for layer in entry["Layers"].as_array().expect("Layers") {
            let tar =
                std::fs::read(dir.path().join(layer.as_str().expect("layer"))).expect("layer");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&tar).expect("gzip");
            let gz = gz.finish().expect("gzip");
            let digest = sha256(&gz);
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": gz.len(),
                "digest": digest,
            }));
            blobs.insert(digest, gz);
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.len(),
                "digest": config_digest,
            },
            "layers": layers,
        }))
        .expect("manifest");
        blobs.insert(config_digest, config);
        let users = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            manifests: HashMap::from([(
                repository.to_string(),
                HashMap::from([(tag.to_string(), manifest)]),
            )]),
            blobs,
            user: user.into(),
            password: password.into(),
            users: users.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        let app =
            axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
                let state = state.clone();
                async move { serve(&state, &method, uri.path(), &headers) }
            });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Registry { host, users }
    }
}

fn reply(status: StatusCode, headers: &[(&str, String)], body: Vec<u8>) -> Response<Body> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.header("Docker-Distribution-API-Version", "registry/2.0")
        .body(Body::from(body))
        .expect("response")
}

fn error(status: StatusCode, code: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": code.to_lowercase()}]});
    let mut headers = vec![(
        header::CONTENT_TYPE.as_str(),
        "application/json".to_string(),
    )];
    if status == StatusCode::UNAUTHORIZED {
        headers.push((
            header::WWW_AUTHENTICATE.as_str(),
            "Basic realm=\"runwright-test\"".to_string(),
        ));
    }
    reply(status, &headers, body.to_string().into_bytes())
}

fn serve(state: &State, method: &Method, path: &str, headers: &HeaderMap) -> Response<Body> {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let Some((user, password)) = credentials
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .map(|(u, p)| (u.to_string(), p.to_string()))
    else {
        return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    };
    state.users.lock().expect("users").push(user.clone());
    if user != state.user || password != state.password {
        return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    if path == "/v2/" || path == "/v2" {
        return reply(StatusCode::OK, &[], b"{}".to_vec());
    }
    let head = method == Method::HEAD;
    let rest = path.strip_prefix("/v2/").unwrap_or_default();
    if let Some((repository, reference)) = rest.rsplit_once("/manifests/") {
        let manifest = state.manifests.get(repository).and_then(|tags| {
            tags.get(reference)
                .or_else(|| tags.values().find(|m| sha256(m) == reference))
        });
        return match manifest {
            Some(m) => reply(
                StatusCode::OK,
                &[
                    (header::CONTENT_TYPE.as_str(), MANIFEST_TYPE.to_string()),
                    ("Docker-Content-Digest", sha256(m)),
                    (header::CONTENT_LENGTH.as_str(), m.len().to_string()),
                ],
                if head { Vec::new() } else { m.clone() },
            ),
            None => error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        };
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        return match state.blobs.get(digest) {
            Some(b) => reply(
                StatusCode::OK,
                &[
                    (
                        header::CONTENT_TYPE.as_str(),
                        "application/octet-stream".to_string(),
                    ),
                    ("Docker-Content-Digest", digest.to_string()),
                    (header::CONTENT_LENGTH.as_str(), b.len().to_string()),
                ],
                if head { Vec::new() } else { b.clone() },
            ),
            None => error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        };
    }
    error(StatusCode::NOT_FOUND, "NAME_UNKNOWN")
}
