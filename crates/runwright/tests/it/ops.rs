//! The operating verbs against the test coordinator's registration endpoints (reference `protocol.md` §1, §9):
//! register, unregister, verify, reset-token, list, status, config check, the service lock, token rotation
//! and the systemd unit. Every config write is checked to keep comments and order and the file's mode (0600 for a
//! new file; issue 17 item 7); every failure to be one line, a non-zero exit and an untouched config.

use crate::harness::*;
use runwright_coordinator::RunnerOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const REG_TOKEN: &str = "GR1348941RegistrationTok";
const ADMIN: &str = "glpat-admin-token-0000000";

/// A config with comments, a global section and one runner, as a person leaves it.
fn commented_config(h: &Harness, token: &str) -> String {
    format!(
        "# Build host runners -- edited by hand\nconcurrent = 4 # jobs at once\ncheck_interval = 1\n\n[session_server]\n  session_timeout = 1800\n\n# the shell runner\n[[runners]]\n  name = \"first\" # keep this name\n  url = \"{}\"\n  id = 1\n  token = \"{token}\"\n  executor = \"shell\"\n  [runners.custom_build_dir]\n    enabled = true # per-job dirs\n",
        h.coordinator.url()
    )
}

fn run(h: &Harness, args: &[&str]) -> Output {
    h.command().args(args).output().expect("runwright runs")
}

fn run_with(h: &Harness, args: &[&str], f: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = h.command();
    cmd.args(args);
    f(&mut cmd);
    cmd.output().expect("runwright runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn cfg(h: &Harness) -> String {
    std::fs::read_to_string(&h.config_path).unwrap_or_default()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

/// A mode no write would choose by itself: each write must keep it (issue 17 item 7).
const KEPT_MODE: u32 = 0o640;

/// config.toml with `text`, mode [`KEPT_MODE`].
fn write_config_kept_mode(h: &Harness, text: &str) {
    h.write_config(text);
    std::fs::set_permissions(&h.config_path, std::fs::Permissions::from_mode(KEPT_MODE))
        .expect("chmod");
}

/// One `error: …` line, non-zero exit, no full token anywhere.
fn assert_one_line_failure(o: &Output, secrets: &[&str]) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "should fail: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {err}");
    assert!(!err.contains("caused by"), "one line expected: {err}");
    for s in secrets {
        assert!(!err.contains(s), "secret printed: {err}");
    }
    err
}

fn path_str(h: &Harness) -> String {
    h.config_path.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------------------
// register

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_registration_token_appends_entry_and_keeps_the_rest() {
    let h = Harness::new().await;
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.coordinator.add_registration_token(REG_TOKEN);
    h.coordinator
        .set_token_lifetime(Some(Duration::from_secs(30 * 24 * 3600)));
    let before = commented_config(&h, TOKEN);
    write_config_kept_mode(&h, &before);
    let url = h.coordinator.url();
    let c = path_str(&h);
    let o = run(
        &h,
        &[
            "register",
            "--non-interactive",
            "-c",
            &c,
            "--url",
            &url,
            "--registration-token",
            REG_TOKEN,
            "--name",
            "second",
            "--executor",
            "shell",
            "--tag-list",
            "linux,big",
            "--run-untagged=false",
            "--locked=false",
            "--maximum-timeout",
            "600",
            "--paused",
            "--limit",
            "2",
            "--request-concurrency",
            "3",
        ],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("Runner registered successfully"), "{err}");
    let after = cfg(&h);
    assert!(
        after.starts_with(&before),
        "the existing text must stay as it was:\n{after}"
    );
    let new_token = h
        .coordinator
        .runner_tokens()
        .into_iter()
        .find(|t| t.starts_with("glrtr-"))
        .expect("runner created");
    assert!(!err.contains(&new_token), "full token printed: {err}");
    let id = h.coordinator.runner_id(&new_token).expect("id");
    let added = &after[before.len()..];
    assert!(added.contains(&format!("  name = \"second\"\n  url = \"{url}\"\n  id = {id}\n  token = \"{new_token}\"\n  token_obtained_at = ")), "{added}");
    assert!(
        !added.contains("token_expires_at = 0001"),
        "expiry written: {added}"
    );
    assert!(
        added.contains("  limit = 2\n  request_concurrency = 3\n  executor = \"shell\"\n"),
        "{added}"
    );
    assert_eq!(mode(&h.config_path), KEPT_MODE);
    let sent = h
        .coordinator
        .registration_request(&new_token)
        .expect("request body");
    assert_eq!(sent["description"], "second");
    assert_eq!(sent["tag_list"], "linux,big");
    assert_eq!(sent["run_untagged"], false);
    assert_eq!(sent["locked"], false);
    assert_eq!(sent["paused"], true);
    assert_eq!(sent["maximum_timeout"], 600);
    assert_eq!(sent["info"]["name"], "runwright");
    // The file still loads, with both runners.
    let list = run(&h, &["list", "-c", &c]);
    assert!(stderr(&list).contains("second"), "{}", stderr(&list));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_from_environment_creates_a_new_docker_config() {
    let h = Harness::new().await;
    h.coordinator.add_registration_token(REG_TOKEN);
    let sub = h.path().join("etc/gitlab-runner/config.toml");
    let url = h.coordinator.url();
    let o = run_with(&h, &["register"], |c| {
        c.env("REGISTER_NON_INTERACTIVE", "true")
            .env("CONFIG_FILE", &sub)
            .env("CI_SERVER_URL", &url)
            .env("REGISTRATION_TOKEN", REG_TOKEN)
            .env("RUNNER_NAME", "env-runner")
            .env("RUNNER_EXECUTOR", "docker")
            .env("DOCKER_IMAGE", "alpine:3")
            .env("RUNNER_TAG_LIST", "docker");
    });
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&sub).expect("created");
    assert!(text.starts_with("concurrent = 1\n"), "{text}");
    assert!(text.contains("name = \"env-runner\""), "{text}");
    assert!(text.contains("  [runners.docker]\n    image = \"alpine:3\"\n    privileged = false\n    volumes = [\"/cache\"]\n"), "{text}");
    assert!(
        text.contains("token_expires_at = 0001-01-01T00:00:00Z"),
        "{text}"
    );
    assert_eq!(mode(&sub), 0o600);
    assert!(sub.with_file_name(".runner_system_id").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_runner_token_only_verifies() {
    let h = Harness::new().await;
    h.coordinator.add_runner(TOKEN2, RunnerOptions::default());
    h.coordinator
        .set_token_expiry(TOKEN2, Some(Duration::from_secs(3600)));
    h.write_config(&commented_config(&h, TOKEN));
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    let url = h.coordinator.url();
    let c = path_str(&h);
    let o = run(
        &h,
        &[
            "register",
            "-n",
            "-c",
            &c,
            "--url",
            &url,
            "--token",
            TOKEN2,
            "--name",
            "glrt",
            "--executor",
            "shell",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let id = h.coordinator.runner_id(TOKEN2).expect("id");
    let text = cfg(&h);
    assert!(
        text.contains(&format!("  id = {id}\n  token = \"{TOKEN2}\"\n")),
        "{text}"
    );
    assert!(!text.contains(&format!("token = \"{TOKEN2}\"\n  token_obtained_at = 0001")));
    assert_eq!(
        h.coordinator.runner_managers(TOKEN2).len(),
        1,
        "verify registered this host's manager"
    );
    assert!(
        h.requests_to("/api/v4/runners").is_empty(),
        "POST /runners must not be called"
    );

    // Server-side settings cannot come with a glrt- token: fatal, nothing written.
    let before = cfg(&h);
    let o = run(
        &h,
        &[
            "register",
            "-n",
            "-c",
            &c,
            "--url",
            &url,
            "--token",
            TOKEN2,
            "--executor",
            "shell",
            "--locked=false",
            "--tag-list",
            "x",
        ],
    );
    let err = assert_one_line_failure(&o, &[TOKEN2]);
    assert!(
        err.contains("--locked") && err.contains("--tag-list"),
        "{err}"
    );
    assert_eq!(cfg(&h), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_failures_are_one_line_and_leave_the_config_alone() {
    let h = Harness::new().await;
    h.coordinator.add_registration_token(REG_TOKEN);
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    let before = commented_config(&h, TOKEN);
    h.write_config(&before);
    let url = h.coordinator.url();
    let c = path_str(&h);
    let base = |token: &str, url: &str| -> Vec<String> {
        [
            "register",
            "-n",
            "-c",
            &c,
            "--url",
            url,
            "-r",
            token,
            "--executor",
            "shell",
            "--name",
            "x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let call = |v: Vec<String>| {
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        run(&h, &refs)
    };

    // Wrong registration token: 403.
    let o = call(base("GR1348941wrongwrongwrong", &url));
    let err = assert_one_line_failure(&o, &["GR1348941wrongwrongwrong"]);
    assert!(
        err.contains("403") && err.contains("token is wrong"),
        "{err}"
    );
    assert_eq!(cfg(&h), before);

    // Registration tokens disabled on the instance: 410 says to use a glrt- token.
    h.coordinator.set_registration_disallowed(true);
    let o = call(base(REG_TOKEN, &url));
    let err = assert_one_line_failure(&o, &[REG_TOKEN]);
    assert!(err.contains("410") && err.contains("glrt-"), "{err}");
    assert_eq!(cfg(&h), before);
    h.coordinator.set_registration_disallowed(false);

    // Nothing listens there.
    let o = call(base(REG_TOKEN, "http://127.0.0.1:9/"));
    let err = assert_one_line_failure(&o, &[REG_TOKEN]);
    assert!(err.contains("reachable"), "{err}");
    assert_eq!(cfg(&h), before);

    // Missing flags in non-interactive mode.
    let o = run(
        &h,
        &[
            "register",
            "-n",
            "-c",
            &c,
            "--url",
            &url,
            "--executor",
            "shell",
        ],
    );
    let err = assert_one_line_failure(&o, &[]);
    assert!(err.contains("--token"), "{err}");

    // A config that cannot be written: nothing is registered, the file stays.
    let ro = h.path().join("ro");
    std::fs::create_dir_all(&ro).expect("dir");
    let ro_cfg = ro.join("config.toml");
    std::fs::write(&ro_cfg, &before).expect("write");
    std::fs::set_permissions(&ro_cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    std::fs::set_permissions(h.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let before_tokens = h.coordinator.runner_tokens();
    let ro_s = ro_cfg.to_string_lossy().into_owned();
    let o = run_with(
        &h,
        &[
            "register",
            "-n",
            "-c",
            &ro_s,
            "--url",
            &url,
            "-r",
            REG_TOKEN,
            "--executor",
            "shell",
            "--name",
            "x",
        ],
        |cmd| {
            if nix::unistd::getuid().is_root() {
                use std::os::unix::process::CommandExt;
                cmd.uid(65534).gid(65534);
            }
        },
    );
    let err = assert_one_line_failure(&o, &[REG_TOKEN]);
    assert!(err.contains("cannot write config file"), "{err}");
    assert_eq!(std::fs::read_to_string(&ro_cfg).expect("read"), before);
    assert_eq!(
        h.coordinator.runner_tokens(),
        before_tokens,
        "no runner created in GitLab"
    );
}

// ---------------------------------------------------------------------------------------------------------
// unregister, verify, reset-token

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_uses_managers_for_glrt_and_runners_otherwise() {
    let h = Harness::new().await;
    let legacy = "glrtr-legacyrunnertoken01";
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.coordinator.add_runner(legacy, RunnerOptions::default());
    let c = path_str(&h);
    let text = format!(
        "{}\n# legacy one\n{}",
        commented_config(&h, TOKEN),
        h.runner_toml("legacy", legacy, "")
    );
    write_config_kept_mode(&h, &text);
    // This host's manager exists once verify ran.
    let o = run(&h, &["verify", "-c", &c]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(h.coordinator.runner_managers(TOKEN).len(), 1);

    let o = run(&h, &["unregister", "-c", &c, "--name", "first"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        h.coordinator.runner_tokens().contains(&TOKEN.to_string()),
        "a glrt runner stays in GitLab"
    );
    assert!(
        h.coordinator.runner_managers(TOKEN).is_empty(),
        "this host's manager is gone"
    );
    let after = cfg(&h);
    assert!(!after.contains("name = \"first\""), "{after}");
    assert!(
        after
            .starts_with("# Build host runners -- edited by hand\nconcurrent = 4 # jobs at once\n"),
        "{after}"
    );
    assert!(
        after.contains("# legacy one\n[[runners]]\n  name = \"legacy\""),
        "{after}"
    );
    assert_eq!(mode(&h.config_path), KEPT_MODE);

    // A token GitLab no longer knows: the entry stays, one line says what to do.
    h.coordinator.set_token_expiry(legacy, Some(Duration::ZERO));
    let before = cfg(&h);
    let o = run(&h, &["unregister", "-c", &c, "--name", "legacy"]);
    let err = assert_one_line_failure(&o, &[legacy]);
    assert!(
        err.contains("403") && err.contains("verify --delete"),
        "{err}"
    );
    assert_eq!(cfg(&h), before);
    h.coordinator.set_token_expiry(legacy, None);

    let o = run(&h, &["unregister", "-c", &c, "--all-runners"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !h.coordinator.runner_tokens().contains(&legacy.to_string()),
        "DELETE /runners removes it"
    );
    assert!(!cfg(&h).contains("[[runners]]"));

    let o = run(&h, &["unregister", "-c", &c]);
    assert_one_line_failure(&o, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_and_deletes_invalid_runners() {
    let h = Harness::new().await;
    let gone = "glrtr-deletedinGitLab0001";
    let orphan = "glrt-orphanedrunner000001";
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.coordinator.add_runner(orphan, RunnerOptions::default());
    h.coordinator.set_orphaned(orphan, true);
    let c = path_str(&h);
    write_config_kept_mode(
        &h,
        &format!(
            "{}\n# deleted in GitLab\n{}\n{}",
            commented_config(&h, TOKEN),
            h.runner_toml("gone", gone, ""),
            h.runner_toml("orphan", orphan, "")
        ),
    );
    let o = run(&h, &["verify", "-c", &c, "--name", "first"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Verifying runner... is valid"),
        "{}",
        stderr(&o)
    );

    let before = cfg(&h);
    let o = run(&h, &["verify", "-c", &c]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("Verifying runner... is removed"), "{err}");
    assert!(err.contains("422") && err.contains("orphaned"), "{err}");
    assert!(
        err.contains("\"gone\"") && err.contains("--delete"),
        "{err}"
    );
    assert!(!err.contains(gone) && !err.contains(orphan), "{err}");
    assert_eq!(cfg(&h), before);

    // An expired token is a removed one too.
    h.coordinator.set_token_expiry(TOKEN, Some(Duration::ZERO));
    let o = run(&h, &["verify", "-c", &c, "--delete"]);
    let after = cfg(&h);
    assert!(
        !after.contains("name = \"gone\"") && !after.contains("name = \"first\""),
        "{after}"
    );
    assert!(
        after.contains("name = \"orphan\""),
        "422 is not a deleted runner: {after}"
    );
    assert!(
        after.starts_with("# Build host runners -- edited by hand\n"),
        "{after}"
    );
    assert!(
        !o.status.success(),
        "the orphaned runner still fails: {}",
        stderr(&o)
    );
    assert_eq!(mode(&h.config_path), KEPT_MODE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_token_saves_the_new_token_and_expiry() {
    let h = Harness::new().await;
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.coordinator
        .set_token_expiry(TOKEN, Some(Duration::from_secs(3600)));
    h.coordinator
        .set_token_lifetime(Some(Duration::from_secs(7 * 24 * 3600)));
    h.coordinator.add_admin_token(ADMIN);
    let before = commented_config(&h, TOKEN);
    write_config_kept_mode(&h, &before);
    let c = path_str(&h);
    let o = run(&h, &["reset-token", "-c", &c, "--name", "first"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let tokens = h.coordinator.runner_tokens();
    assert_eq!(tokens.len(), 1);
    let new = tokens[0].clone();
    assert_ne!(new, TOKEN);
    assert!(!err.contains(&new), "{err}");
    let after = cfg(&h);
    assert!(
        after.contains(&format!("  token = \"{new}\"\n  token_obtained_at = ")),
        "{after}"
    );
    assert!(!after.contains("token_expires_at = 0001"), "{after}");
    // Comments and everything else as before.
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.trim_start().starts_with("token"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&after), strip(&before));
    assert_eq!(mode(&h.config_path), KEPT_MODE);

    // The old token is gone: resetting with it again is 403 — by name it uses the new one, so force the old.
    let o = run(
        &h,
        &["reset-token", "-c", &c, "--all-runners", "--pat", ADMIN],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!h.coordinator.runner_tokens().contains(&new));
    // A wrong access token: 401, one line, config untouched.
    let before = cfg(&h);
    let o = run_with(&h, &["reset-token", "-c", &c, "--name", "first"], |cmd| {
        cmd.env("GITLAB_TOKEN", "glpat-wrong");
    });
    let err = assert_one_line_failure(&o, &["glpat-wrong"]);
    assert!(err.contains("401"), "{err}");
    assert_eq!(cfg(&h), before);
}

impl Harness {
    fn requests_to(&self, path: &str) -> Vec<runwright_coordinator::RequestLog> {
        self.coordinator
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------------------
// the running service: lock, readiness, status, list, rotation

/// Replaces what differs between runs (URL, paths, pids, times) so whole outputs can be compared.
fn filter(h: &Harness, text: &str) -> String {
    let mut s = text
        .replace(&h.coordinator.url(), "[URL]/")
        .replace(&path_str(h), "[CONFIG]");
    // RFC 3339 times (2026-11-28T12:00:00Z) → [TIME]
    let bytes: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let window: String = bytes[i..(i + 20).min(bytes.len())].iter().collect();
        let is_time = window.len() == 20
            && window.chars().enumerate().all(|(k, c)| match k {
                4 | 7 => c == '-',
                10 => c == 'T',
                13 | 16 => c == ':',
                19 => c == 'Z',
                _ => c.is_ascii_digit(),
            });
        if is_time {
            out.push_str("[TIME]");
            i += 20;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    s = out;
    // PID=123 / "pid": 123
    let mut res = String::new();
    for line in s.lines() {
        let mut l = line.to_string();
        for key in ["PID=", "\"pid\": "] {
            if let Some(p) = l.find(key) {
                let start = p + key.len();
                let end = l[start..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(l.len(), |e| start + e);
                l.replace_range(start..end, "[PID]");
            }
        }
        res.push_str(&l);
        res.push('\n');
    }
    res
}

async fn wait_ready(h: &Harness) -> serde_json::Value {
    let c = path_str(h);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let o = run(h, &["status", "-c", &c, "--json", "--offline"]);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&stdout(&o)) {
            if v["service"]["ready"] == true {
                return v;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "service never got ready: {}\n{}",
            stderr(&o),
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_service_on_one_config_is_refused() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    wait_ready(&h).await;
    let c = path_str(&h);
    let o = run(&h, &["run", "-c", &c]);
    let err = assert_one_line_failure(&o, &[TOKEN]);
    assert!(
        err.contains("already running") && err.contains(&format!("pid {}", h.pid())),
        "{err}"
    );
    // The first one is unaffected.
    h.signal(nix::sys::signal::Signal::SIGQUIT);
    assert!(h.wait_exit(WAIT).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_list_with_and_without_json() {
    let mut h = Harness::new().await;
    h.coordinator.add_admin_token(ADMIN);
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.coordinator.add_runner(
        TOKEN2,
        RunnerOptions {
            paused: true,
            ..Default::default()
        },
    );
    let far = "2099-01-01T00:00:00Z";
    let id1 = h.coordinator.runner_id(TOKEN).expect("id");
    let id2 = h.coordinator.runner_id(TOKEN2).expect("id");
    h.write_config(&format!(
        "concurrent = 2\ncheck_interval = 1\n{}{}",
        h.runner_toml("alpha", TOKEN, &format!("  id = {id1}")),
        h.runner_toml("beta", TOKEN2, &format!("  id = {id2}\n  token_obtained_at = 2025-01-01T00:00:00Z\n  token_expires_at = {far}"))
    ));
    let c = path_str(&h);

    // Stopped: GitLab's line, exit 1.
    let o = run(&h, &["status", "-c", &c, "--offline"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("gitlab-runner: Service has stopped\n"),
        "{}",
        stderr(&o)
    );
    let o = run(&h, &["list", "-c", &c]);
    assert_eq!(
        filter(&h, &stderr(&o)),
        "Listing configured runners                         ConfigFile=[CONFIG]\n\
alpha                                               Executor=shell Token=testrunne URL=[URL]/ State=service-stopped\n\
beta                                                Executor=shell Token=testrunne URL=[URL]/ State=service-stopped\n"
    );

    h.start();
    wait_ready(&h).await;
    let o = run_with(&h, &["status", "-c", &c], |cmd| {
        cmd.env("GITLAB_TOKEN", ADMIN);
    });
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        filter(&h, &stderr(&o)),
        "gitlab-runner: Service is running\n\
Runners                                             ConfigFile=[CONFIG] PID=[PID] Ready=true\n\
alpha                                               Token=testrunne TokenState=valid Paused=false GitLabStatus=online LastContact=[TIME] LastPoll=[TIME] Outcome=no_job RunningJobs=0\n\
beta                                                Token=testrunne TokenState=valid([TIME]) Paused=true GitLabStatus=online LastContact=[TIME] LastPoll=[TIME] Outcome=no_job RunningJobs=0 NextTokenRotation=[TIME]\n"
    );
    assert!(!stderr(&o).contains(TOKEN) && !stderr(&o).contains(ADMIN));

    let o = run_with(&h, &["status", "-c", &c, "--json"], |cmd| {
        cmd.env("GITLAB_TOKEN", ADMIN);
    });
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["service"]["running"], true);
    assert_eq!(v["service"]["name"], "gitlab-runner");
    assert_eq!(v["runners"][0]["name"], "alpha");
    assert_eq!(v["runners"][0]["token"], "testrunne");
    assert_eq!(v["runners"][0]["token_state"]["state"], "valid");
    assert_eq!(v["runners"][0]["gitlab"]["paused"], false);
    assert_eq!(v["runners"][1]["gitlab"]["paused"], true);
    assert_eq!(v["runners"][1]["token_state"]["expires_at"], far);
    assert_eq!(
        v["runners"][1]["service"]["next_token_rotation"],
        "2080-07-02T00:00:00Z"
    );
    assert!(v["runners"][0]["service"]["last_success_at"].is_string());
    assert_eq!(
        v["runners"][0]["service"]["running_jobs"],
        serde_json::json!([])
    );
    assert!(!stdout(&o).contains(TOKEN));

    let o = run(&h, &["list", "-c", &c]);
    assert_eq!(
        filter(&h, &stderr(&o)),
        "Listing configured runners                         ConfigFile=[CONFIG]\n\
alpha                                               Executor=shell Token=testrunne URL=[URL]/ State=polling\n\
beta                                                Executor=shell Token=testrunne URL=[URL]/ State=polling\n"
    );
    let o = run(&h, &["list", "-c", &c, "--json"]);
    assert_eq!(
        filter(&h, &stdout(&o)),
        format!("[\n  {{\n    \"name\": \"alpha\",\n    \"url\": \"[URL]/\",\n    \"id\": {id1},\n    \"executor\": \"shell\",\n    \"token\": \"testrunne\",\n    \"token_expires_at\": null,\n    \"state\": \"polling\"\n  }},\n  {{\n    \"name\": \"beta\",\n    \"url\": \"[URL]/\",\n    \"id\": {id2},\n    \"executor\": \"shell\",\n    \"token\": \"testrunne\",\n    \"token_expires_at\": \"[TIME]\",\n    \"state\": \"polling\"\n  }}\n]\n")
    );

    // A token GitLab no longer accepts shows as invalid, in status and (once the service saw 403) in list.
    h.coordinator.set_token_expiry(TOKEN, Some(Duration::ZERO));
    let o = run(&h, &["status", "-c", &c, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["runners"][0]["token_state"]["state"], "invalid");
    h.signal(nix::sys::signal::Signal::SIGQUIT);
    assert!(h.wait_exit(WAIT).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rotate_at_three_quarters_of_their_lifetime_and_are_saved() {
    let mut h = Harness::new().await;
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.coordinator
        .set_token_expiry(TOKEN, Some(Duration::from_secs(20)));
    h.coordinator
        .set_token_lifetime(Some(Duration::from_secs(3600)));
    let now = time::OffsetDateTime::now_utc();
    // 80 s of a 100 s lifetime are gone: past 75%, the service resets the token at start.
    let extra = format!(
        "  # obtained and expiry, kept in place\n  token_obtained_at = {}\n  token_expires_at = {}",
        rfc3339(now - time::Duration::seconds(80)),
        rfc3339(now + time::Duration::seconds(20))
    );
    write_config_kept_mode(
        &h,
        &format!(
            "# rotation test\nconcurrent = 1\ncheck_interval = 1\n{}",
            h.runner_toml("rot", TOKEN, &extra)
        ),
    );
    h.start();
    let deadline = std::time::Instant::now() + WAIT;
    let new = loop {
        let tokens = h.coordinator.runner_tokens();
        if tokens.len() == 1 && tokens[0] != TOKEN && cfg(&h).contains(&tokens[0]) {
            break tokens[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rotation: {}\n{}",
            cfg(&h),
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = cfg(&h);
    assert!(text.starts_with("# rotation test\n"), "{text}");
    assert!(
        text.contains("  # obtained and expiry, kept in place\n  token_obtained_at = "),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
    assert_eq!(mode(&h.config_path), KEPT_MODE);
    let deadline = std::time::Instant::now() + WAIT;
    while !h.log().contains("runner token rotated and saved") {
        assert!(std::time::Instant::now() < deadline, "{}", h.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The service picks the new token up and polls with it; the next rotation is 45 minutes out.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let polled_new = h.coordinator.requests().iter().any(|r| {
            r.path == "/api/v4/jobs/request"
                && r.body.as_ref().and_then(|b| b["token"].as_str()) == Some(new.as_str())
        });
        if polled_new {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new token never used: {}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = path_str(&h);
    let deadline = std::time::Instant::now() + WAIT;
    let next = loop {
        let v = wait_ready(&h).await;
        if let Some(n) = v["runners"][0]["service"]["next_token_rotation"].as_str() {
            break n.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rotation scheduled: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let next = time::OffsetDateTime::parse(&next, &time::format_description::well_known::Rfc3339)
        .expect("time");
    let in_ = next - time::OffsetDateTime::now_utc();
    assert!(
        in_ > time::Duration::minutes(44) && in_ < time::Duration::minutes(46),
        "{in_}"
    );
    let _ = c;
    h.signal(nix::sys::signal::Signal::SIGQUIT);
    assert!(h.wait_exit(WAIT).await.success());
}

// ---------------------------------------------------------------------------------------------------------
// config check, systemd, drop-in

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_prints_the_slot_model_and_warns() {
    let h = Harness::new().await;
    h.write_config(&format!(
        "concurrent = 2\n{}{}",
        h.runner_toml("big", TOKEN, "  limit = 5\n  request_concurrency = 3"),
        h.runner_toml("small", TOKEN2, "  limit = 1")
    ));
    let c = path_str(&h);
    let o = run(&h, &["config", "check", "-c", &c]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        filter(&h, &stdout(&o)),
        "[CONFIG]: valid, 2 runner(s)\n\
concurrent = 2 (jobs at once in the whole service), check_interval = 3s\n\
RUNNER  EXECUTOR  LIMIT  REQUEST_CONCURRENCY  MAX_JOBS  MAX_REQUESTS\n\
big     shell         5                    3         2             2\n\
small   shell         1                    1         1             1\n\
WARNING: runner \"big\": limit = 5 can never be reached: concurrent = 2 caps the whole service\n\
WARNING: runner \"big\": request_concurrency = 3 can never be reached: a job request holds a job slot and at most 2 are available to it\n"
    );
    let o = run(&h, &["config", "check", "-c", &c, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["runners"][0]["max_jobs"], 2);
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(2));
    h.write_config("concurrent = \"two\"\n");
    let o = run(&h, &["config", "check", "-c", &c]);
    let err = assert_one_line_failure(&o, &[]);
    assert!(
        err.contains("config.toml:1:") && err.contains("concurrent"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_unit_is_valid_and_drains_on_stop() {
    let h = Harness::new().await;
    h.single_runner("shutdown_timeout = 45", "");
    let units = h.path().join("units");
    let c = path_str(&h);
    let wd = h.work_dir().to_string_lossy().into_owned();
    let o = run_with(
        &h,
        &[
            "install",
            "-n",
            "runwright-test",
            "-c",
            &c,
            "-d",
            &wd,
            "--user",
            "nobody",
        ],
        |cmd| {
            cmd.env("RUNWRIGHT_SYSTEMD_UNIT_DIR", &units);
        },
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let unit_path = units.join("runwright-test.service");
    let unit = std::fs::read_to_string(&unit_path).expect("unit written");
    for line in [
        "Type=notify\n",
        "NotifyAccess=main\n",
        "WatchdogSec=120\n",
        "KillSignal=SIGQUIT\n",
        "KillMode=mixed\n",
        "TimeoutStopSec=3945\n",
        // Each shell job's cgroup goes below the unit's (issue 17 item 6).
        "Delegate=yes\n",
        "ExecReload=/bin/kill -HUP $MAINPID\n",
        "Restart=always\n",
        "WantedBy=multi-user.target\n",
    ] {
        assert!(unit.contains(line), "{line:?} missing:\n{unit}");
    }
    let exe = env!("CARGO_BIN_EXE_runwright");
    assert!(
        unit.contains(&format!("ExecStart=\"{exe}\" \"run\" \"--config\" \"{c}\" \"--working-directory\" \"{wd}\" \"--service\" \"runwright-test\" \"--user\" \"nobody\"\n")),
        "{unit}"
    );
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(_) => {
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&unit_path)
                .output()
                .expect("systemd-analyze runs");
            let err = String::from_utf8_lossy(&out.stderr);
            let about_us: Vec<&str> = err
                .lines()
                .filter(|l| l.contains("runwright-test"))
                .collect();
            assert!(
                out.status.success() && about_us.is_empty(),
                "systemd-analyze verify: {err}\n{unit}"
            );
        }
        Err(_) => eprintln!("SKIPPED: systemd-analyze verify (install the Debian package systemd)"),
    }
    let o = run_with(&h, &["uninstall", "-n", "runwright-test"], |cmd| {
        cmd.env("RUNWRIGHT_SYSTEMD_UNIT_DIR", &units);
    });
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!unit_path.exists());
    if !Path::new("/run/systemd/system").exists() {
        let o = run(&h, &["start", "-n", "runwright-test"]);
        let err = assert_one_line_failure(&o, &[]);
        assert!(err.contains("systemd is not running"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_as_gitlab_runner_when_linked_under_that_name() {
    let h = Harness::new().await;
    h.single_runner("", "");
    let link = h.path().join("bin/gitlab-runner");
    std::fs::create_dir_all(link.parent().expect("dir")).expect("dir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_runwright"), &link).expect("symlink");
    let out = Command::new(&link).arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: gitlab-runner"), "{help}");
    for verb in [
        "register",
        "unregister",
        "verify",
        "reset-token",
        "list",
        "status",
        "install",
        "uninstall",
        "start",
        "stop",
        "restart",
        "run",
    ] {
        assert!(
            help.contains(&format!("\n  {verb} ")),
            "{verb} missing: {help}"
        );
    }
    let c = path_str(&h);
    let out = Command::new(&link)
        .args(["list", "-c", &c])
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("test-runner"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&link)
        .args(["bogus-verb"])
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gitlab-runner"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A changed entry's old pollers stop: every job after the reload runs with the new settings (before, the old
/// pollers went on beside the new ones and took about every other job with the old settings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reload_no_job_runs_with_the_entrys_old_settings() {
    let mut h = Harness::new().await;
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    let (old, new) = (
        h.runner_toml("reloaded", TOKEN, "  environment = [\"RW_RELOAD=old\"]"),
        h.runner_toml("reloaded", TOKEN, "  environment = [\"RW_RELOAD=new\"]"),
    );
    let body = |entry: &str| format!("concurrent = 4\ncheck_interval = 1\n{entry}");
    h.write_config(&body(&old));
    h.start();
    wait_ready(&h).await;
    h.write_config(&body(&new));
    h.wait_log("runner entry changed").await;
    for i in 0..8 {
        let id = h.coordinator.enqueue(runwright_coordinator::JobSpec::shell(
            &format!("after-reload-{i}"),
            &["echo \"setting=$RW_RELOAD\""],
        ));
        let j = h.final_job(id).await;
        let t = j.trace_text();
        assert_eq!(j.state, "success", "{t}");
        assert!(
            t.contains("setting=new\n"),
            "job {i} ran with the old settings: {t}"
        );
    }
    h.signal(nix::sys::signal::Signal::SIGQUIT);
    assert!(h.wait_exit(WAIT).await.success());
}

/// A reload while the entry's request is in flight: GitLab has already handed the job out (it is `running` there),
/// its answer is slow to arrive. The old poller must still take and run that job; abandoning the request lost it
/// until GitLab timed it out (gitlab-runner likewise runs a job requested before a reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_handed_out_while_its_entry_is_reloaded_still_runs() {
    let mut h = Harness::new().await;
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    let (old, new) = (
        h.runner_toml("reloaded", TOKEN, "  environment = [\"RW_RELOAD=old\"]"),
        h.runner_toml("reloaded", TOKEN, "  environment = [\"RW_RELOAD=new\"]"),
    );
    let body = |entry: &str| format!("concurrent = 4\ncheck_interval = 1\n{entry}");
    h.write_config(&body(&old));
    // The service's first request takes the job and waits for its answer.
    h.coordinator.faults().push(
        runwright_coordinator::Endpoint::RequestJob,
        runwright_coordinator::Fault::StallAfterProcessing(Duration::from_secs(8)),
    );
    let id = h.coordinator.enqueue(runwright_coordinator::JobSpec::shell(
        "in-flight",
        &["echo \"setting=$RW_RELOAD\""],
    ));
    h.start();
    // Handed out (taken by the runner's token at the coordinator) while its answer is held: now the reload. (The service reports
    // ready only after its first poll, which is the held one.)
    let deadline = std::time::Instant::now() + WAIT;
    while h.coordinator.job(id).and_then(|j| j.runner_token).is_none() {
        assert!(std::time::Instant::now() < deadline, "never handed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!h.log().contains("received job"), "{}", h.log());
    h.write_config(&body(&new));
    h.wait_log("runner entry changed").await;
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    // Requested under the old settings, it runs with them (as gitlab-runner's would).
    assert!(t.contains("setting=old\n"), "{t}");
    h.signal(nix::sys::signal::Signal::SIGQUIT);
    assert!(h.wait_exit(WAIT).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_restarts_only_the_changed_entry_and_logs_what_changed() {
    let mut h = Harness::new().await;
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.coordinator.add_runner(TOKEN2, RunnerOptions::default());
    let steady = h.runner_toml("steady", TOKEN, "");
    let tuned = h.runner_toml("tuned", TOKEN2, "  limit = LIMIT");
    let body = |limit: u32| {
        format!(
            "concurrent = 4\ncheck_interval = 1\n{steady}{}",
            tuned.replace("LIMIT", &limit.to_string())
        )
    };
    h.write_config(&body(1));
    h.start();
    wait_ready(&h).await;
    h.write_config(&body(3));
    h.wait_log("runner entry changed").await;
    let log = h.log();
    let line = log
        .lines()
        .find(|l| l.contains("runner entry changed"))
        .expect("line");
    assert!(
        line.contains("runner=\"tuned\"") || line.contains("runner=tuned"),
        "{line}"
    );
    assert!(line.contains("limit: 3"), "{line}");
    assert!(!line.contains(TOKEN2), "{line}");
    assert_eq!(
        log.matches("runner entry started runner=steady").count(),
        1,
        "the unchanged entry keeps running: {log}"
    );
    h.signal(nix::sys::signal::Signal::SIGQUIT);
    assert!(h.wait_exit(WAIT).await.success());
}
