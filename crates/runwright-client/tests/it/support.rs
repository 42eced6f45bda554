//! A scriptable fake GitLab on loopback for the client tests: records every request, answers from a closure.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use axum::Router;
use runwright_client::{Client, ClientOptions};

pub const USER_AGENT: &str = "gitlab-runner 17.0.0 (main; go1.22; linux/amd64)";
pub const RUNNER_TOKEN: &str = "glrt-RUNNERSECRET123";
pub const JOB_TOKEN: &str = "glcbt-JOBSECRET456";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// The answer to send.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn json(self, value: &serde_json::Value) -> Reply {
        self.raw_json(value.to_string().as_bytes())
    }

    pub fn raw_json(mut self, body: &[u8]) -> Reply {
        self.headers
            .push(("Content-Type".into(), "application/json".into()));
        self.body = body.to_vec();
        self
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> Reply {
        self.headers
            .push(("Content-Type".into(), content_type.into()));
        self.body = body.to_vec();
        self
    }
}

type Handler = Box<dyn FnMut(&Recorded) -> Reply + Send>;

struct ServerState {
    log: Mutex<Vec<Recorded>>,
    handler: Mutex<Handler>,
}

/// A fake GitLab on 127.0.0.1 with a random port; stops when dropped.
pub struct FakeGitLab {
    pub addr: SocketAddr,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitLab {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGitLab {
    pub async fn start(handler: impl FnMut(&Recorded) -> Reply + Send + 'static) -> FakeGitLab {
        let state = Arc::new(ServerState {
            log: Mutex::new(Vec::new()),
            handler: Mutex::new(Box::new(handler)),
        });
        let app = Router::new().fallback(serve).with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGitLab { addr, state, task }
    }

    /// The runner-facing URL, as it would be in config.toml.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.log.lock().expect("log lock").clone()
    }

    pub fn count(&self, method: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method)
            .count()
    }
}

async fn serve(State(state): State<Arc<ServerState>>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers,
        body,
    };
    let reply = {
        let mut handler = state.handler.lock().expect("handler lock");
        (handler)(&recorded)
    };
    state.log.lock().expect("log lock").push(recorded);
    let mut resp =
        Response::builder().status(StatusCode::from_u16(reply.status).expect("valid status"));
    for (k, v) in &reply.headers {
        resp = resp.header(k, v);
    }
    resp.body(Body::from(reply.body)).expect("response")
}

/// A client for `url` with `RUNWRIGHT_FAST_RETRIES=1` (every test sets the same value, so setting it from
/// parallel tests is harmless).
pub fn fast_client(url: &str) -> Client {
    std::env::set_var(runwright_client::env::RUNWRIGHT_FAST_RETRIES, "1");
    let client = Client::new(ClientOptions {
        url: url.to_owned(),
        user_agent: USER_AGENT.to_owned(),
        ..Default::default()
    })
    .expect("client");
    assert!(client.fast_retries());
    client
}

/// A job payload as GitLab sends it (trimmed).
pub fn job_json(id: i64) -> serde_json::Value {
    serde_json::json!({
        "id": id, "token": JOB_TOKEN, "allow_git_fetch": true,
        "job_info": {"id": id, "name": "test", "stage": "test", "pipeline_id": 9, "project_id": 42, "project_name": "app"},
        "git_info": {"repo_url": format!("https://gitlab-ci-token:{JOB_TOKEN}@host/g/app.git"), "ref": "main",
                     "sha": "a", "before_sha": "b", "ref_type": "branch", "refspecs": [], "depth": 20},
        "runner_info": {"timeout": 3600},
        "variables": [{"key": "CI_JOB_ID", "value": id.to_string(), "public": true, "masked": false}],
        "steps": [{"name": "script", "script": ["echo hi"], "timeout": 3600, "when": "on_success", "allow_failure": false}],
        "features": {"trace_sections": true, "failure_reasons": ["script_failure"]}
    })
}

/// Asserts none of our tokens appear in `text`.
pub fn assert_no_secrets(text: &str) {
    for secret in [RUNNER_TOKEN, JOB_TOKEN, "RUNNERSECRET", "JOBSECRET"] {
        assert!(
            !text.contains(secret),
            "secret {secret:?} leaked into: {text}"
        );
    }
}
