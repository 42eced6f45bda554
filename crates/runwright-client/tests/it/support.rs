//! A scriptable fake GitLab on loopback for the client tests: records every request, answers from a closure.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    std::env::set_var(runwright_static::env_vars::RUNWRIGHT_FAST_RETRIES, "1");
    let client = Client::new(ClientOptions {
        url: url.to_owned(),
        user_agent: USER_AGENT.to_owned(),
        ..Default::default()
    })
    .expect("client");
    assert!(client.fast_retries());
    client
}

/// Like [`fast_client`], with a short answer timeout.
pub fn client_with_timeout(url: &str, timeout: Duration) -> Client {
    std::env::set_var(runwright_static::env_vars::RUNWRIGHT_FAST_RETRIES, "1");
    Client::new(ClientOptions {
        url: url.to_owned(),
        user_agent: USER_AGENT.to_owned(),
        idle_timeout: Some(timeout),
        ..Default::default()
    })
    .expect("client")
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

/// What [`RawGitLab`] does with one request.
pub enum RawAnswer {
    /// Say nothing for this long, then close the connection.
    Hold(Duration),
    /// Send `head` (status line and headers, without the blank line), then `body` bytes of spaces after
    /// `prefix` — with `Content-Length` when `sized`, else chunked — streamed in 64 KiB slices; stops when the
    /// client hangs up.
    Stream {
        head: String,
        prefix: Vec<u8>,
        body: u64,
        sized: bool,
    },
}

/// A raw HTTP/1.1 server on loopback for answers axum cannot script (stalls, endless bodies). The closure gets
/// the request's number (from 0) and its head; each connection serves one request.
pub struct RawGitLab {
    pub addr: SocketAddr,
    /// Requests seen.
    pub seen: Arc<std::sync::atomic::AtomicUsize>,
    /// Body bytes actually written to clients (all connections).
    pub written: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawGitLab {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawGitLab {
    pub async fn start(
        answer: impl Fn(usize, &str) -> RawAnswer + Send + Sync + 'static,
    ) -> RawGitLab {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let answer = Arc::new(answer);
        let (seen2, written2) = (Arc::clone(&seen), Arc::clone(&written));
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let n = seen2.fetch_add(1, Ordering::SeqCst);
                let answer = Arc::clone(&answer);
                let written = Arc::clone(&written2);
                tokio::spawn(async move {
                    raw_serve(sock, n, answer.as_ref(), &written).await;
                });
            }
        });
        RawGitLab {
            addr,
            seen,
            written,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

async fn raw_serve(
    mut sock: tokio::net::TcpStream,
    n: usize,
    answer: &(dyn Fn(usize, &str) -> RawAnswer + Send + Sync),
    written: &std::sync::atomic::AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read the head, then as much body as Content-Length says.
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    match answer(n, &head) {
        RawAnswer::Hold(d) => {
            tokio::time::sleep(d).await;
        }
        RawAnswer::Stream {
            head,
            prefix,
            body,
            sized,
        } => {
            let total = prefix.len() as u64 + body;
            let framing = if sized {
                format!("Content-Length: {total}\r\n")
            } else {
                "Transfer-Encoding: chunked\r\n".to_owned()
            };
            if sock
                .write_all(format!("{head}\r\n{framing}\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let spaces = vec![b' '; 64 * 1024];
            let mut pieces: Vec<&[u8]> = vec![&prefix];
            let mut left = body;
            let send = |piece: &[u8]| -> Vec<u8> {
                if sized {
                    piece.to_vec()
                } else {
                    let mut v = format!("{:x}\r\n", piece.len()).into_bytes();
                    v.extend_from_slice(piece);
                    v.extend_from_slice(b"\r\n");
                    v
                }
            };
            loop {
                let piece: &[u8] = match pieces.pop() {
                    Some(p) => p,
                    None if left > 0 => {
                        let k = left.min(spaces.len() as u64) as usize;
                        left -= k as u64;
                        &spaces[..k]
                    }
                    None => break,
                };
                if piece.is_empty() {
                    continue;
                }
                if sock.write_all(&send(piece)).await.is_err() {
                    return;
                }
                written.fetch_add(piece.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            if !sized {
                let _ = sock.write_all(b"0\r\n\r\n").await;
            }
        }
    }
}
