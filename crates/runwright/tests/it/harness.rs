//! Test support: a temp dir, a coordinator, a config file and the `runwright run` process.

use runwright_coordinator::{Coordinator, CoordinatorOptions, RunnerOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A trace (or the journal's copy of it) as GitLab's log viewer reads it: `FF_TIMESTAMPS` headers dropped, continued
/// lines joined (what `JobRecord::trace_text` gives for the coordinator's copy).
pub fn plain_trace(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&runwright_trace::timestamp::strip(bytes)).into_owned()
}

pub const TOKEN: &str = "glrt-t1_testrunner0000001";
pub const TOKEN2: &str = "glrt-t1_testrunner0000002";
pub const WAIT: Duration = Duration::from_secs(60);

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub coordinator: Coordinator,
    pub config_path: PathBuf,
    child: Option<Child>,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_options(|_| {}).await
    }

    pub async fn with_options(f: impl FnOnce(&mut CoordinatorOptions)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let git_root = dir.path().join("git");
        std::fs::create_dir_all(&git_root).expect("git root");
        std::fs::create_dir_all(dir.path().join("work")).expect("work dir");
        std::fs::write(
            dir.path().join("gitconfig"),
            "[user]\n\temail = tests@runwright.invalid\n\tname = runwright tests\n[protocol \"file\"]\n\tallow = always\n[init]\n\tdefaultBranch = main\n",
        )
        .expect("gitconfig");
        let mut opts = CoordinatorOptions {
            trace_update_interval: 1,
            git_root: Some(git_root),
            ..Default::default()
        };
        f(&mut opts);
        let coordinator = Coordinator::start(opts).await.expect("coordinator starts");
        let config_path = dir.path().join("config.toml");
        Self {
            dir,
            coordinator,
            config_path,
            child: None,
        }
    }

    /// A harness whose coordinator (and the git it serves) containers reach: it listens on the gateway of the
    /// suite's own Docker network `runwright-test-reach` (made when missing), an address of this host that
    /// every container gets to, instead of 127.0.0.1, which inside a container is the container itself. Git
    /// clones and transfers run in the job's helper container. Without a daemon: loopback, as `new`.
    pub async fn docker() -> Self {
        Self::docker_with_options(|_| {}).await
    }

    /// `docker` with more coordinator options.
    pub async fn docker_with_options(f: impl FnOnce(&mut CoordinatorOptions)) -> Self {
        let gateway = reach_address().await;
        Self::with_options(|o| {
            if let Some(ip) = gateway {
                o.bind = std::net::SocketAddr::new(ip, 0);
            }
            f(o)
        })
        .await
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// A `[[runners]]` entry for the shell executor pointing at the coordinator.
    pub fn runner_toml(&self, name: &str, token: &str, extra: &str) -> String {
        format!(
            "[[runners]]\n  name = \"{name}\"\n  url = \"{}\"\n  token = \"{token}\"\n  executor = \"shell\"\n{extra}\n",
            self.coordinator.url()
        )
    }

    /// Writes config.toml with `global` settings and one shell runner (token [`TOKEN`]) registered at the
    /// coordinator.
    pub fn single_runner(&self, global: &str, runner_extra: &str) {
        self.coordinator.add_runner(TOKEN, RunnerOptions::default());
        let body = format!(
            "concurrent = 4\ncheck_interval = 1\n{global}\n{}",
            self.runner_toml("test-runner", TOKEN, runner_extra)
        );
        self.write_config(&body);
    }

    pub fn write_config(&self, body: &str) {
        std::fs::write(&self.config_path, body).expect("write config");
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runwright"));
        // Jobs run `bash -l`: a HOME of the test's own keeps the machine's login profile (pyenv, …) out of them.
        let home = self.dir.path().join("home");
        let _ = std::fs::create_dir_all(&home);
        cmd.env("HOME", &home)
            .env("RUNWRIGHT_FAST_RETRIES", "1")
            .env("RUNWRIGHT_KILL_GRACE_SECONDS", "2")
            // Armed, but only jobs with the variable RUNWRIGHT_TEST_PANIC trigger it.
            .env("RUNWRIGHT_TEST_FAULT", "panic-in-job")
            .env("GIT_CONFIG_GLOBAL", self.dir.path().join("gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("RUNWRIGHT_LOG")
            // `runwright exec` keeps pipeline directories and caches in the test's own temp dir, whatever the
            // machine's XDG dirs.
            .env("RUNWRIGHT_EXEC_STATE_DIR", self.dir.path().join("state"))
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_CACHE_HOME")
            .stdin(Stdio::null());
        cmd
    }

    /// A git checkout (branch `main`, one commit) of the README's example pipeline (`examples/demo/project`) in
    /// the temp dir under `name`.
    pub fn example_checkout(&self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo/project");
        std::fs::create_dir_all(&dir).expect("dir");
        for e in std::fs::read_dir(&src).expect("example") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), dir.join(e.file_name())).expect("copy");
        }
        self.git(&dir, &["init", "-q", "-b", "main"]);
        self.git(&dir, &["add", "-A"]);
        self.git(&dir, &["commit", "-q", "-m", "example"]);
        dir
    }

    /// Starts `runwright run`; its stderr goes to `service.log` in the temp dir.
    pub fn start(&mut self) {
        self.start_with(|_| {});
    }

    /// [`Harness::start`] with `f` adjusting the command first (environment).
    pub fn start_with(&mut self, f: impl FnOnce(&mut Command)) {
        let log = std::fs::File::create(self.dir.path().join("service.log")).expect("log file");
        let mut cmd = self.command();
        f(&mut cmd);
        let child = cmd
            .args(["run", "-c"])
            .arg(&self.config_path)
            .arg("-d")
            .arg(self.work_dir())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("runwright starts");
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("started")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    /// Waits for the service to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .expect("started")
                .try_wait()
                .expect("try_wait")
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "service did not exit within {timeout:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn final_job(&self, id: i64) -> runwright_coordinator::JobRecord {
        match self.coordinator.wait_for_final(id, WAIT).await {
            Ok(rec) => rec,
            Err(e) => panic!(
                "job {id} did not finish: {e}\nrecord: {:?}\nservice log:\n{}",
                self.coordinator
                    .job(id)
                    .map(|j| (j.state.clone(), j.trace_text())),
                self.log()
            ),
        }
    }

    /// Waits until the job's trace contains `needle`.
    /// Waits until the service's log shows `needle` (a reload's "runner entry changed", …).
    pub async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the service's log never showed {needle:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_trace(&self, id: i64, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(j) = self.coordinator.job(id) {
                if j.trace_text().contains(needle) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "trace of job {id} never showed {needle:?}: {:?}\nservice log:\n{}",
                self.coordinator.job(id).map(|j| j.trace_text()),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs git with the test's own global config.
    pub fn git(&self, cwd: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("GIT_CONFIG_GLOBAL", self.dir.path().join("gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Creates the bare repository `<git root>/<path>.git` with one commit of `files`; returns the commit sha.
    pub fn make_repo(&self, path: &str, files: &[(&str, &str)]) -> String {
        let work = self.dir.path().join("src").join(path);
        std::fs::create_dir_all(&work).expect("src dir");
        self.git(&work, &["init", "-q", "-b", "main"]);
        self.commit(path, files, "initial")
    }

    /// Adds a commit to the repository made by [`Harness::make_repo`]; returns its sha.
    pub fn commit(&self, path: &str, files: &[(&str, &str)], message: &str) -> String {
        let work = self.dir.path().join("src").join(path);
        for (name, content) in files {
            let p = work.join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("dirs");
            }
            std::fs::write(p, content).expect("file");
        }
        self.git(&work, &["add", "-A"]);
        self.git(&work, &["commit", "-q", "-m", message]);
        self.publish(path);
        self.git(&work, &["rev-parse", "HEAD"])
    }

    /// Like [`Harness::make_repo`], for a repository of another object format (`sha256`), served as such.
    pub fn make_repo_with_format(
        &self,
        path: &str,
        format: &str,
        files: &[(&str, &str)],
    ) -> String {
        let work = self.dir.path().join("src").join(path);
        std::fs::create_dir_all(&work).expect("src dir");
        let fmt = format!("--object-format={format}");
        self.git(&work, &["init", "-q", "-b", "main", &fmt]);
        let bare = self.dir.path().join("git").join(format!("{path}.git"));
        std::fs::create_dir_all(&bare).expect("bare dir");
        self.git(&bare, &["init", "-q", "--bare", &fmt]);
        self.commit(path, files, "initial")
    }

    /// Makes files matching `pattern` Git LFS files in the source repository of `path` (`git lfs track`); the
    /// next [`Harness::publish`] uploads their objects into the served repository's LFS store, as a push to
    /// GitLab does.
    pub fn lfs_track(&self, path: &str, pattern: &str) {
        let work = self.dir.path().join("src").join(path);
        self.git(&work, &["lfs", "install", "--local"]);
        self.git(&work, &["lfs", "track", pattern]);
    }

    /// Mirrors the source repository into the bare one the coordinator serves (over a `file://` URL, which
    /// git-lfs's pre-push hook can upload LFS objects to).
    pub fn publish(&self, path: &str) {
        let work = self.dir.path().join("src").join(path);
        let bare = self.dir.path().join("git").join(format!("{path}.git"));
        if !bare.exists() {
            std::fs::create_dir_all(&bare).expect("bare dir");
            self.git(&bare, &["init", "-q", "--bare"]);
        }
        let bare_url = url::Url::from_file_path(&bare)
            .expect("absolute path")
            .to_string();
        self.git(
            &work,
            &["push", "-q", "--force", &bare_url, "HEAD:refs/heads/main"],
        );
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM first: the service aborts its jobs and removes their containers, so a failed test leaves
            // nothing on the shared dockerd; SIGKILL when it takes too long.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut ended = false;
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    ended = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !ended {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.remove_cache_volumes();
    }
}

impl Harness {
    /// Cache volumes outlive jobs on purpose (GitLab reuses them); a test's runner tokens are its own, so its
    /// volumes go with it instead of piling up on the shared dockerd run after run.
    fn remove_cache_volumes(&self) {
        let Ok(text) = std::fs::read_to_string(&self.config_path) else {
            return;
        };
        let Ok(loaded) = runwright_config::parse(&text, &self.config_path) else {
            return;
        };
        for r in loaded
            .config
            .runners
            .iter()
            .filter(|r| r.executor == "docker")
        {
            let Ok(out) = Command::new("docker")
                .args([
                    "volume",
                    "ls",
                    "-q",
                    "--filter",
                    "label=com.gitlab.gitlab-runner.managed=true",
                    "--filter",
                    &format!(
                        "label=com.gitlab.gitlab-runner.runner.id={}",
                        r.short_token()
                    ),
                ])
                .stderr(Stdio::null())
                .output()
            else {
                return;
            };
            let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !names.is_empty() {
                let _ = Command::new("docker")
                    .args(["volume", "rm", "-f"])
                    .args(&names)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// The gateway of the suite's Docker network `runwright-test-reach` (made when missing): an address of this
/// host that containers reach (see `Harness::docker`); `None` without a daemon.
pub async fn reach_address() -> Option<std::net::IpAddr> {
    let d = runwright_docker::connect(None, None, false).await.ok()?;
    runwright_docker::reach::gateway(
        &d,
        "runwright-test-reach",
        std::collections::HashMap::from([("org.runwright.test".to_string(), "reach".to_string())]),
    )
    .await
    .ok()
}

/// `GET path` over plain HTTP/1.1; (status, body).
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http_request(addr, path, &[format!("Host: {addr}")]).await;
    (status, body)
}

/// `GET path` over plain HTTP/1.1 with exactly `headers` (`Name: value`; `Host` included, or none is sent);
/// (status, the response's header lines, body).
pub async fn http_request(addr: &str, path: &str, headers: &[String]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to listen_address");
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

impl Harness {
    /// The dashboard's token the service generated beside config.toml when it sets none (issue 17 item 4),
    /// once it is there.
    pub async fn dashboard_token(&self) -> String {
        let path = self.path().join(".runwright_dashboard_token");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(t) = std::fs::read_to_string(&path) {
                if !t.trim().is_empty() {
                    return t.trim().to_string();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no dashboard token at {}:\n{}",
                path.display(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether `user = "nobody"` tests can run here: they need root and a `nobody` user.
pub fn can_run_as_nobody() -> bool {
    let ok = nix::unistd::Uid::effective().is_root()
        && std::process::Command::new("id")
            .arg("nobody")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if !ok {
        eprintln!("skipped: needs root and a 'nobody' user");
    }
    ok
}

impl Harness {
    /// A builds dir `nobody` can use inside the (root-only) temp dir, a cache dir of nobody's own (the helper
    /// archives and extracts caches as the job's user, as gitlab-runner's does, so that user must be able to
    /// write there), and a config with `user = "nobody"` and those dirs for the one shell runner. Returns the
    /// builds dir.
    pub fn single_runner_as_nobody(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let builds = self.path().join("shared-builds");
        std::fs::create_dir_all(&builds).expect("builds");
        std::fs::set_permissions(&builds, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let cache = self.path().join("nobody-cache");
        std::fs::create_dir_all(&cache).expect("cache dir");
        let nobody = nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .expect("user nobody");
        nix::unistd::chown(&cache, Some(nobody.uid), Some(nobody.gid)).expect("chown");
        self.single_runner(
            "user = \"nobody\"",
            &format!(
                "  builds_dir = \"{}\"\n  cache_dir = \"{}\"",
                builds.display(),
                cache.display()
            ),
        );
        builds
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The pid a job wrote to `path`, once it is there (fails the test after [`WAIT`]).
pub async fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many processes run exactly `argv` (e.g. `["sleep", "613"]`): a job's leftovers, found by a command
/// line no other test uses.
pub fn processes_running(argv: &[&str]) -> usize {
    let mut cmdline = Vec::new();
    for arg in argv {
        cmdline.extend_from_slice(arg.as_bytes());
        cmdline.push(0);
    }
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == cmdline))
                .count()
        })
        .unwrap_or(0)
}

/// `t` as config.toml's `token_obtained_at`/`token_expires_at` hold it (RFC 3339, whole seconds).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .expect("ns")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("fmt")
}
