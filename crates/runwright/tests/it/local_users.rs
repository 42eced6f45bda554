//! Issue 17: what another local account on the build host can do to runwright, tried by that account. Each
//! test creates its own user with `useradd` (a unique name, removed when the test ends) and runs the
//! attacker's commands as it (a child with its uid and gid), against loopback only. Creating users needs
//! root: without it the tests say they are skipped (CI runs them as root).

use crate::attackers::LocalUser;
use crate::harness::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The runner token every `runwright exec` used before issue 17 (what an attacker tries first).
const OLD_EXEC_TOKEN: &str = "glrt-t1_runwrightexec00000001";

/// The TCP ports process `pid` listens on (its sockets' inodes looked up in /proc/net/tcp{,6}).
fn listening_ports(pid: u32) -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(inode.to_string());
                }
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, …, st (0A: LISTEN), …, inode
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                if let Some(port) = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
    }
    ports
}

/// A background `runwright exec` whose stdout is collected as it comes.
pub(crate) struct Exec {
    pub(crate) child: Child,
    out: Arc<Mutex<String>>,
}

impl Exec {
    pub(crate) fn start(mut cmd: Command) -> Exec {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runwright exec starts");
        let out = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = out.lock().expect("out");
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Exec { child, out }
    }

    pub(crate) fn text(&self) -> String {
        self.out.lock().expect("out").clone()
    }

    /// Waits until the output has a line containing `needle`; that line.
    pub(crate) fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.text().lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                panic!("exec ended ({st}) before {needle:?}:\n{}", self.text());
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the end, at most `limit`; the exit status and how long it took.
    pub(crate) fn wait_end(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // The reader threads finish with the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return (st, t0.elapsed());
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "exec did not end within {limit:?} (killed):\n{}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").mode() & 0o777
}

const HOLD_PIPELINE: &str = r#"
hold:
  script:
    - echo "pwd=$PWD"
    - while [ ! -e "$RELEASE" ]; do sleep 0.1; done
    - echo "released, secret of length ${#SECRET}"
"#;

const SECRET: &str = "s3cr3t-of-the-exec-user";

/// The project path exec prints first (`… of grp/app`).
fn project_path(first_line: &str) -> String {
    first_line
        .rsplit(" of ")
        .next()
        .expect("project path")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_can_neither_take_nor_touch_an_exec_runs_jobs_nor_read_its_files() {
    let Some(attacker) = LocalUser::create_or_skip("exec attack") else {
        return;
    };
    let h = Harness::new().await;
    h.make_repo("grp/app", &[(".gitlab-ci.yml", HOLD_PIPELINE)]);
    let dir = h.path().join("src/grp/app");
    // Untracked: it reaches the job through the working tree's snapshot.
    std::fs::write(dir.join("notes.txt"), format!("{SECRET}\n")).expect("untracked file");
    // Open to others (as a home directory of mode 0755 is): only runwright's own modes stand in the
    // attacker's way.
    std::fs::set_permissions(h.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let release = h.path().join("release");
    let state = h.path().join("state");
    let mut cmd = h.command();
    cmd.args(["exec", "--executor", "shell", "--view", "lines", "-j", "1"])
        .arg("--variable")
        .arg(format!("SECRET={SECRET}"))
        .arg("--variable")
        .arg(format!("RELEASE={}", release.display()))
        .current_dir(&dir);
    let mut exec = Exec::start(cmd);
    let project = project_path(&exec.wait_line("runwright exec: pipeline 1 for"));
    let pwd = exec
        .wait_line("pwd=")
        .trim_start_matches("pwd=")
        .trim()
        .to_string();
    let ports = listening_ports(exec.child.id());
    assert_eq!(ports.len(), 1, "exec's coordinator: {ports:?}");
    let base = format!("http://127.0.0.1:{}", ports[0]);
    let mut seen = String::new();

    // The runner API with the token every exec used to have, and with a guess of the new format.
    for token in [OLD_EXEC_TOKEN, "glrt-t1_AAAAAAAAAAAAAAAAAAAA"] {
        let body = format!(
            r#"{{"token":"{token}","system_id":"s_0123456789ab","info":{{"features":{{"two_phase_job_commit":true}}}}}}"#
        );
        let url = format!("{base}/api/v4/jobs/request");
        let (code, text) =
            attacker.http(&["-H", "Content-Type: application/json", "-d", &body, &url]);
        assert_eq!(code, 403, "jobs/request with {token}: {text}");
        seen.push_str(&text);
        for (method, path) in [
            ("POST", "/api/v4/runners/verify"),
            ("POST", "/api/v4/runners/reset_authentication_token"),
            ("DELETE", "/api/v4/runners"),
        ] {
            let url = format!("{base}{path}");
            let (code, text) = attacker.http(&[
                "-X",
                method,
                "-H",
                "Content-Type: application/json",
                "-d",
                &format!(r#"{{"token":"{token}"}}"#),
                &url,
            ]);
            assert_eq!(code, 403, "{method} {path} with {token}: {text}");
        }
    }
    // Job endpoints with guessed job tokens.
    let guess = "glcbt-AAAAAAAAAAAAAAAAAAAA";
    let (code, _) = attacker.http(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "-d",
        &format!(r#"{{"token":"{guess}","state":"success","exit_code":0}}"#),
        &format!("{base}/api/v4/jobs/1"),
    ]);
    assert_eq!(code, 403, "final update with a guessed job token");
    let (code, _) = attacker.http(&[
        "-X",
        "PATCH",
        "-H",
        &format!("JOB-TOKEN: {guess}"),
        "-H",
        "Content-Range: 0-4",
        "--data-binary",
        "fake!",
        &format!("{base}/api/v4/jobs/1/trace"),
    ]);
    assert_eq!(code, 403, "trace patch with a guessed job token");
    let (code, _) = attacker.http(&[
        "-F",
        "file=@/etc/hostname;filename=artifacts.zip",
        &format!("{base}/api/v4/jobs/1/artifacts?token={guess}"),
    ]);
    assert_eq!(code, 403, "artifact upload with a guessed job token");
    let (code, _) = attacker.http(&[&format!("{base}/api/v4/jobs/1/artifacts?token={guess}")]);
    assert_eq!(code, 401, "artifact download with a guessed job token");
    let (code, _) = attacker.http(&[
        "-u",
        &format!("gitlab-ci-token:{guess}"),
        &format!("{base}/{project}.git/info/refs?service=git-upload-pack"),
    ]);
    assert_eq!(code, 401, "git fetch with a guessed job token");
    let (code, _) = attacker.http(&[
        "-u",
        &format!("gitlab-ci-token:{guess}"),
        "-H",
        "Content-Type: application/vnd.git-lfs+json",
        "-d",
        r#"{"operation":"download","objects":[]}"#,
        &format!("{base}/{project}.git/info/lfs/objects/batch"),
    ]);
    assert_eq!(code, 401, "Git LFS batch with a guessed job token");

    // The pipeline directory, its plan and the job's build directory (with the snapshot of untracked files).
    let plan = state.join("1/plan.json");
    assert!(plan.is_file(), "{}", plan.display());
    for (what, program, path) in [
        ("the pipeline directory", "ls", state.clone()),
        ("plan.json", "cat", plan.clone()),
        ("the job's log", "cat", state.join("1/hold.log")),
        ("the job's build directory", "ls", PathBuf::from(&pwd)),
        (
            "the untracked file's copy",
            "cat",
            Path::new(&pwd).join("notes.txt"),
        ),
    ] {
        let out = attacker.run(program, &[path.to_str().expect("utf-8 path")]);
        assert!(
            !out.status.success(),
            "the attacker read {what} ({}):\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("1")), 0o700);
    assert_eq!(mode(&plan), 0o600);
    assert_eq!(mode(&state.join("1/hold.log")), 0o600);
    assert!(!seen.contains(SECRET), "the attacker saw the secret");

    // The run itself was not disturbed: the job ends as its script says.
    std::fs::write(&release, "").expect("release");
    let (status, _) = exec.wait_end(WAIT);
    let text = exec.text();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("released, secret of length {}", SECRET.len())),
        "{text}"
    );
    assert_eq!(mode(&state.join("1/summary.json")), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_runs_runner_config_is_private_and_its_token_random_and_sigterm_ends_it() {
    let Some(attacker) = LocalUser::create_or_skip("served exec") else {
        return;
    };
    let h = Harness::new().await;
    h.make_repo("grp/app", &[(".gitlab-ci.yml", HOLD_PIPELINE)]);
    let dir = h.path().join("src/grp/app");
    std::fs::set_permissions(h.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut tokens = Vec::new();
    for run in 1..=2 {
        let mut cmd = h.command();
        cmd.args(["exec", "--view", "lines", "--serve"])
            .current_dir(&dir);
        let mut exec = Exec::start(cmd);
        let line = exec.wait_line("run them with: runwright run -c ");
        let config = PathBuf::from(
            line.rsplit("runwright run -c ")
                .next()
                .expect("path")
                .trim(),
        );
        assert_eq!(mode(&config), 0o600, "{}", config.display());
        let text = std::fs::read_to_string(&config).expect("runner.toml");
        let token = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("token = \""))
            .and_then(|t| t.strip_suffix('"'))
            .expect("a token in runner.toml")
            .to_string();
        assert!(
            token.starts_with("glrt-t1_") && token.len() >= 28 && token != OLD_EXEC_TOKEN,
            "{token}"
        );
        assert!(!exec.text().contains(&token), "the token was printed");
        let out = attacker.run("cat", &[config.to_str().expect("utf-8")]);
        assert!(!out.status.success(), "the attacker read runner.toml");
        let port = listening_ports(exec.child.id())[0];
        let (code, _) = attacker.http(&[
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!(r#"{{"token":"{OLD_EXEC_TOKEN}","system_id":"s_0123456789ab","info":{{}}}}"#),
            &format!("http://127.0.0.1:{port}/api/v4/jobs/request"),
        ]);
        assert_eq!(code, 403);
        tokens.push(token);

        // Nobody runs the served job: SIGTERM cancels it and ends the run at once.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(exec.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let (status, took) = exec.wait_end(Duration::from_secs(20));
        let text = exec.text();
        assert_eq!(status.code(), Some(143), "{text}");
        assert!(took < Duration::from_secs(5), "took {took:?}:\n{text}");
        assert!(text.contains("pipeline canceled by SIGTERM"), "{text}");
        let summary: serde_json::Value = serde_json::from_slice(
            &std::fs::read(h.path().join(format!("state/{run}/summary.json"))).expect("summary"),
        )
        .expect("json");
        assert_eq!(summary["status"], "canceled");
        assert_eq!(summary["interrupted_by"], "SIGTERM");
        assert_eq!(summary["jobs"][0]["status"], "canceled");
    }
    assert_ne!(tokens[0], tokens[1], "each run has its own token");
}

/// Where runwright used to put the lock and state of `config` when its directory was not writable (and where
/// readers always looked): `/tmp/runwright-<FNV-1a of the config's absolute path>.{lock,state.json}`.
fn old_temp_paths(config: &Path) -> (PathBuf, PathBuf) {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in config.to_string_lossy().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let tmp = std::env::temp_dir();
    (
        tmp.join(format!("runwright-{h:016x}.lock")),
        tmp.join(format!("runwright-{h:016x}.state.json")),
    )
}

/// Removes files when dropped (the attacker's, which the test made in a shared directory).
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn status(h: &Harness) -> Output {
    h.command()
        .args(["status", "--offline", "-c"])
        .arg(&h.config_path)
        .output()
        .expect("status runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_lock_in_the_temp_directory_neither_blocks_the_service_nor_fakes_status() {
    let Some(attacker) = LocalUser::create_or_skip("temp lock") else {
        return;
    };
    let mut h = Harness::new().await;
    h.single_runner("", "");
    let (lock, state) = old_temp_paths(&h.config_path);
    let _cleanup = RemoveOnDrop(vec![lock.clone(), state.clone()]);
    // The attacker writes a state that shows a healthy service, and holds the lock for as long as it likes.
    let fake = serde_json::json!({
        "pid": 1, "started_at": "2020-01-01T00:00:00Z", "ready": true, "stopping": false,
        "runners": {},
    });
    let out = attacker.run(
        "sh",
        &[
            "-c",
            r#"printf '1\n' > "$1" && printf '%s\n' "$3" > "$2" && chmod 644 "$1" "$2""#,
            "sh",
            lock.to_str().expect("utf-8"),
            state.to_str().expect("utf-8"),
            &fake.to_string(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let mut hold = attacker.command("flock");
    hold.args(["--no-fork", "--exclusive"])
        .arg(&lock)
        .args(["sleep", "300"]);
    attacker.spawn(hold);
    // Held before the service starts.
    let deadline = Instant::now() + WAIT;
    while Command::new("flock")
        .args(["--nonblock", "--shared"])
        .arg(&lock)
        .arg("true")
        .status()
        .expect("flock")
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the attacker never held the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // `status` does not take the attacker's file for a running service.
    let o = status(&h);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Service has stopped"), "{err}");

    // The service starts, and `status` shows it, not the attacker's state.
    h.start();
    let deadline = Instant::now() + WAIT;
    let running = loop {
        let o = status(&h);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if err.contains("Service is running") {
            break err;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not start: {err}\n{}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(running.contains(&format!("PID={}", h.pid())), "{running}");
    h.signal(nix::sys::signal::Signal::SIGQUIT);
    assert!(h.wait_exit(WAIT).await.success(), "{}", h.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_or_foreign_lock_file_stops_the_service_with_a_clear_error() {
    let Some(attacker) = LocalUser::create_or_skip("planted lock") else {
        return;
    };
    let h = Harness::new().await;
    h.single_runner("", "");
    let lock = h.path().join(".runwright-config.toml.lock");
    // A service that starts anyway is stopped after a while (and the test fails on its exit status).
    let run = || {
        let mut cmd = h.command();
        cmd.args(["run", "-c"])
            .arg(&h.config_path)
            .arg("-d")
            .arg(h.work_dir());
        let mut exec = Exec::start(cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        while exec.child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = exec.child.kill();
        let status = exec.child.wait().expect("wait");
        std::thread::sleep(Duration::from_millis(100));
        (status.code(), exec.text())
    };
    // A symbolic link to a file the service must not clobber.
    let victim = h.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    std::os::unix::fs::symlink(&victim, &lock).expect("symlink");
    let (code, err) = run();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&lock.display().to_string()) && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );

    // A lock file that belongs to another user.
    std::fs::remove_file(&lock).expect("rm");
    std::fs::write(&lock, "").expect("lock");
    nix::unistd::chown(
        &lock,
        Some(nix::unistd::Uid::from_raw(attacker.uid())),
        None,
    )
    .expect("chown");
    let (code, err) = run();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&lock.display().to_string())
            && err.contains(&format!("belongs to uid {}", attacker.uid())),
        "{err}"
    );
}
