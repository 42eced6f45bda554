//! Test support (cargo feature `testing`): a real S3-compatible server for tests, moto's
//! `moto_server`, started from the venv `scripts/install-test-deps` makes. Tests of any crate can
//! depend on `runwright-cache` with `features = ["testing"]` and call [`MotoServer::start`].
//!
//! A missing moto is a test failure with a message saying how to install it, never a skip: a
//! cache suite that silently runs nothing would hide a broken distributed cache.
//!
//! moto accepts any credentials and does not check signatures, so these tests prove requests are
//! well-formed and objects land where they should, not that signatures are right.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runwright_config::{CacheConfig, CacheS3Config, CacheType};

/// Where `scripts/install-test-deps` puts the venv unless `RUNWRIGHT_TEST_VENV` says otherwise.
pub const DEFAULT_VENV: &str = "/opt/runwright-test-venv";

/// How long moto may take to answer after starting (it imports a lot of Python).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The access key the helpers configure; moto accepts any.
pub const ACCESS_KEY: &str = "runwright-test-access";
/// The secret key the helpers configure.
pub const SECRET_KEY: &str = "runwright-test-secret";

/// A `moto_server` on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl MotoServer {
    /// `<venv>/bin/moto_server`, the venv being `$RUNWRIGHT_TEST_VENV` or [`DEFAULT_VENV`].
    pub fn binary() -> PathBuf {
        let venv = std::env::var_os(runwright_static::env_vars::RUNWRIGHT_TEST_VENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_VENV));
        venv.join("bin").join("moto_server")
    }

    /// Starts moto and waits until it answers.
    ///
    /// # Panics
    /// When moto is not installed (the message says to run `scripts/install-test-deps`) or
    /// does not come up; this is test support, where a panic is the failure report.
    pub fn start() -> MotoServer {
        match MotoServer::try_start() {
            Ok(server) => server,
            Err(message) => panic!("{message}"),
        }
    }

    /// [`MotoServer::start`] with the failure as a message instead of a panic.
    pub fn try_start() -> Result<MotoServer, String> {
        let binary = MotoServer::binary();
        if !binary.is_file() {
            return Err(format!(
                "{} is missing: the S3 cache tests need moto's S3 server. Run \
                 scripts/install-test-deps (as root, or with sudo), or point RUNWRIGHT_TEST_VENV \
                 at a venv with `pip install 'moto[server]'`",
                binary.display()
            ));
        }
        // The port is found free and handed over; another process could take it in between,
        // so a server that dies at once is retried on a new port.
        let mut last_error = String::new();
        for _ in 0..3 {
            match MotoServer::spawn(&binary) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn spawn(binary: &Path) -> Result<MotoServer, String> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free loopback port: {e}"))?
            .port();
        let log_dir = tempfile::tempdir().map_err(|e| format!("creating a log directory: {e}"))?;
        let log = log_dir.path().join("moto.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let mut server = MotoServer {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            log,
            _log_dir: log_dir,
        };
        server.wait_until_ready()?;
        Ok(server)
    }

    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "moto_server exited with {status} before answering; its log:\n{}",
                    self.log_tail()
                ));
            }
            if matches!(self.request("GET", "/"), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "moto_server did not answer on {} within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    self.addr,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `127.0.0.1:<port>`, what `[runners.cache.s3] ServerAddress` takes.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket (an unsigned `PUT /<bucket>`, which moto accepts).
    ///
    /// # Panics
    /// When moto refuses.
    pub fn create_bucket(&self, bucket: &str) {
        match self.request("PUT", &format!("/{bucket}")) {
            Ok((200, _)) => {}
            Ok((status, body)) => panic!("creating bucket {bucket}: HTTP {status}: {body}"),
            Err(e) => panic!("creating bucket {bucket}: {e}"),
        }
    }

    /// Creates a bucket in `region` (`CreateBucketConfiguration` with its `LocationConstraint`), which
    /// `GetBucketLocation` then reports.
    ///
    /// # Panics
    /// When moto refuses.
    pub fn create_bucket_in(&self, bucket: &str, region: &str) {
        let body = format!(
            "<CreateBucketConfiguration><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
        );
        match self.request_with_body("PUT", &format!("/{bucket}"), "application/xml", &body) {
            Ok((200, _)) => {}
            Ok((status, body)) => {
                panic!("creating bucket {bucket} in {region}: HTTP {status}: {body}")
            }
            Err(e) => panic!("creating bucket {bucket} in {region}: {e}"),
        }
    }

    /// A `[runners.cache]` of `Type = "s3"` pointing at this server and `bucket`: path style,
    /// plain HTTP, access-key authentication, not shared, no `Path`.
    pub fn cache_config(&self, bucket: &str) -> CacheConfig {
        CacheConfig {
            cache_type: Some(CacheType::S3),
            s3: Some(CacheS3Config {
                server_address: Some(self.address()),
                access_key: Some(ACCESS_KEY.to_owned()),
                secret_key: Some(SECRET_KEY.to_owned()),
                bucket_name: Some(bucket.to_owned()),
                insecure: true,
                path_style: Some(true),
                ..CacheS3Config::default()
            }),
            ..CacheConfig::default()
        }
    }

    /// One plain HTTP/1.1 request without a body: `(status, body)`. Blocking and dependency-free
    /// so it also works from `Drop` and outside any async runtime.
    pub fn request(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        self.request_with_body(method, path, "application/octet-stream", "")
    }

    /// [`MotoServer::request`] with a body of `content_type` (moto stores a form-encoded body empty).
    pub fn request_with_body(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {response:.200}")))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
