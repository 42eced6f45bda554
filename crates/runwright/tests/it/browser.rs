//! Headless Chromium for the dashboard test: Debian's `chromium` driven by Debian's `chromedriver` over the plain
//! WebDriver protocol (HTTP + JSON through reqwest, so no browser-driving crate). Missing programs fail the test
//! with what to install, never skip it.

use crate::harness::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os(runwright_static::env_vars::PATH).and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Chromium and chromedriver; a clear failure (CI installs both) when either is missing.
pub fn programs() -> (PathBuf, PathBuf) {
    match (find_program("chromium"), find_program("chromedriver")) {
        (Some(chromium), Some(driver)) => (chromium, driver),
        _ => panic!(
            "this test needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver) on \
             PATH: run scripts/install-test-deps"
        ),
    }
}

/// chromedriver and the Chromium session it drives; both are ended on drop, found by the session's own
/// profile directory.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    pub async fn start(dir: &Path) -> Browser {
        let (chromium, driver) = programs();
        let port = free_port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = dir.join("chromium-profile");
        let mut browser = Browser {
            http,
            base,
            session: String::new(),
            driver,
            profile: profile.clone(),
        };
        // As root Chromium needs --no-sandbox; the rest keeps it off the (closed) network.
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1400,1100",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let v = browser.call("POST", "/session", caps).await;
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        browser
    }

    /// One WebDriver command; its `value`.
    pub async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Evaluates `script` until it returns something truthy.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.eval(script).await;
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            if Instant::now() > deadline {
                let body = self.eval("return document.body.innerText").await;
                panic!(
                    "the dashboard never showed {what}; it shows:\n{}",
                    body.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v = self.call("GET", "/screenshot", Value::Null).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 png"))
            .expect("png")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium outlives a killed chromedriver: end the processes of this session's profile only.
        let needle = format!("--user-data-dir={}", self.profile.display());
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.filter_map(Result::ok) {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline)
                    .split('\0')
                    .any(|a| a == needle)
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// `<target>/test-artifacts`, beside the binary under test (`<target>/debug/runwright`).
pub fn artifacts_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_runwright"));
    let target = bin
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    target.join("test-artifacts")
}
