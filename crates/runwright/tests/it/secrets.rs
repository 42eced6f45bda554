//! The secrets audit (issue 7): a run that uses every kind of secret a runner holds — the runner token, job
//! tokens, masked variables (plain, file-type, and one split across output writes), registry credentials,
//! `DOCKER_AUTH_CONFIG`, the distributed cache's S3 secret key — then every place the runner writes to is
//! searched for them: the service's log at trace level (text and JSON), the traces GitLab received, the
//! journal's files, `/metrics`, and the output (plain and `--json`) of every reading verb. Journal files must be
//! 0600 and its directories 0700.

use crate::harness::*;
use runwright_api::types::{Cache, Credentials, JobVariable};
use runwright_coordinator::masked_variable as masked;
use runwright_coordinator::{variable, JobSpec, RunnerOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const RUNNER_TOKEN: &str = "glrt-t1_AUDITrunnerSECRETtail0123456789";
const MASKED: &str = "AUDIT-masked-Zq81vW3kLp";
const FILE_SECRET: &str = "AUDIT-file-secret-Hh27xPq9";
const REGISTRY_PASSWORD: &str = "AUDIT-registry-pw-Yt55mN0r";
const AUTH_CONFIG_PASSWORD: &str = "AUDIT-dockerauth-Kk90bB2s";
const S3_SECRET_KEY: &str = "AUDIT-s3-secret-Ww44cC7d";

/// The part of a token that may never be shown: everything after the 8 characters GitLab's runner shows
/// (after the `glrt-t1_` / `glcbt-` prefixes).
fn secret_part(token: &str) -> &str {
    let rest = token
        .strip_prefix("glrt-t1_")
        .or_else(|| token.strip_prefix("glrt-"))
        .or_else(|| token.strip_prefix("glcbt-"))
        .unwrap_or(token);
    rest.get(8..).filter(|s| s.len() >= 8).unwrap_or(rest)
}

/// Every secret of the run (name, text that must not appear).
fn secrets(job_tokens: &[String]) -> Vec<(String, String)> {
    let mut s = vec![
        (
            "runner token".to_string(),
            secret_part(RUNNER_TOKEN).to_string(),
        ),
        ("masked variable".into(), MASKED.into()),
        ("file variable".into(), FILE_SECRET.into()),
        ("registry password".into(), REGISTRY_PASSWORD.into()),
        (
            "DOCKER_AUTH_CONFIG password".into(),
            AUTH_CONFIG_PASSWORD.into(),
        ),
        ("S3 secret key".into(), S3_SECRET_KEY.into()),
    ];
    for t in job_tokens {
        s.push(("job token".into(), secret_part(t).to_string()));
    }
    s
}

fn audit(place: &str, text: &str, secrets: &[(String, String)], leaks: &mut Vec<String>) {
    for (what, value) in secrets {
        if let Some(at) = text.find(value.as_str()) {
            let from = text[..at]
                .char_indices()
                .rev()
                .nth(80)
                .map_or(0, |(i, _)| i);
            let to = (at + value.len() + 40).min(text.len());
            let to = (to..=text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            leaks.push(format!("{what} in {place}: …{}…", &text[from..to]));
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.path());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
}

// Multi-threaded: the verbs run as blocking child processes while the harness coordinator answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_a_trace_the_journal_metrics_or_any_output() {
    let h = Harness::new().await;
    h.coordinator
        .add_runner(RUNNER_TOKEN, RunnerOptions::default());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // A distributed cache that cannot be reached: its errors go to the trace and the log, with the key around.
    let extra = format!(
        "  [runners.cache]\n    Type = \"s3\"\n    Shared = true\n    [runners.cache.s3]\n      ServerAddress = \"127.0.0.1:1\"\n      AccessKey = \"AUDITACCESSKEY\"\n      SecretKey = \"{S3_SECRET_KEY}\"\n      BucketName = \"audit\"\n      Insecure = true\n"
    );
    h.write_config(&format!(
        "concurrent = 2\ncheck_interval = 1\nlisten_address = \"{addr}\"\n{}",
        h.runner_toml("audit", RUNNER_TOKEN, &extra)
    ));
    let auth_config = format!(
        "{{\"auths\":{{\"registry.example.com\":{{\"auth\":\"{}\"}}}}}}",
        base64_of(&format!("audit:{AUTH_CONFIG_PASSWORD}"))
    );

    // Every kind of secret in the payload; the script prints each, whole and split across writes.
    let mut echo = JobSpec::shell(
        "echo-secrets",
        &[
            "echo \"masked: $AUDIT_MASKED\"",
            "printf 'split: %s' \"${AUDIT_MASKED%????????}\"; sleep 0.3; printf '%s\\n' \"${AUDIT_MASKED#${AUDIT_MASKED%????????}}\"",
            "echo \"job token: $CI_JOB_TOKEN\"",
            "echo \"file: $(cat \"$AUDIT_FILE\")\"",
            "echo \"registry: $CI_REGISTRY_PASSWORD\"",
            "echo \"auth config: $DOCKER_AUTH_CONFIG\"",
            "env | sort",
            "mkdir -p keep && echo kept > keep/file",
        ],
    )
    .for_runner(RUNNER_TOKEN);
    echo.variables.push(masked("AUDIT_MASKED", MASKED));
    echo.variables.push(JobVariable {
        file: true,
        ..masked("AUDIT_FILE", FILE_SECRET)
    });
    echo.variables
        .push(masked("CI_REGISTRY_PASSWORD", REGISTRY_PASSWORD));
    echo.variables
        .push(masked("DOCKER_AUTH_CONFIG", &auth_config));
    echo.credentials.push(Credentials {
        kind: "registry".into(),
        url: "registry.example.com".into(),
        username: "audit".into(),
        password: REGISTRY_PASSWORD.into(),
    });
    echo.cache.push(Cache {
        key: "audit".into(),
        paths: vec!["keep".into()],
        policy: "pull-push".into(),
        when: "on_success".into(),
        ..Cache::default()
    });
    let echo_id = h.coordinator.enqueue(echo);

    // A fetch that fails: git's error names the URL, which holds the job token.
    let mut fetch = JobSpec::shell("fetch-fails", &["true"]).for_runner(RUNNER_TOKEN);
    fetch.variables = vec![
        variable("GIT_STRATEGY", "fetch"),
        masked("AUDIT_MASKED", MASKED),
    ];
    fetch.project = runwright_coordinator::ProjectSpec::new(77, "audit/does-not-exist");
    let fetch_id = h.coordinator.enqueue(fetch);

    // A job whose task panics (test fault injection): the panic message and its handling go to the log.
    let mut panics = JobSpec::shell("panics", &["echo \"$AUDIT_MASKED\""]).for_runner(RUNNER_TOKEN);
    panics.variables.push(masked("AUDIT_MASKED", MASKED));
    panics.variables.push(variable("RUNWRIGHT_TEST_PANIC", "1"));
    let panic_id = h.coordinator.enqueue(panics);

    // The service at its most talkative, logging JSON.
    let log_path = h.path().join("audit-service.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut service = h
        .command()
        .env("RUNWRIGHT_LOG", "trace")
        .args(["--debug", "--log-format", "json", "run", "-c"])
        .arg(&h.config_path)
        .arg("-d")
        .arg(h.work_dir())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("runwright starts");

    let mut job_tokens = Vec::new();
    for id in [echo_id, fetch_id, panic_id] {
        let rec = h.final_job(id).await;
        job_tokens.push(rec.token.clone());
    }
    let echo_rec = h.coordinator.job(echo_id).expect("job");
    let echo_trace = String::from_utf8_lossy(&echo_rec.trace).into_owned();
    assert_eq!(echo_rec.state, "success", "{echo_trace}");
    assert!(echo_trace.contains("masked: [MASKED]"), "{echo_trace}");
    assert!(echo_trace.contains("split: [MASKED]"), "{echo_trace}");
    assert!(echo_trace.contains("job token: [MASKED]"), "{echo_trace}");
    let fetch_rec = h.coordinator.job(fetch_id).expect("job");
    assert_eq!(fetch_rec.state, "failed");
    assert_eq!(
        h.coordinator.job(panic_id).map(|r| r.state),
        Some("failed".to_string())
    );

    let (_, metrics) = http_get(&addr, "/metrics").await;
    assert!(metrics.contains("gitlab_runner_jobs_total"), "{metrics}");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(service.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while service.try_wait().ok().flatten().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let _ = service.kill();

    let secrets = secrets(&job_tokens);
    let mut leaks = Vec::new();
    // The search itself finds what it looks for.
    audit("a self-check", &format!("x{MASKED}y"), &secrets, &mut leaks);
    audit(
        "a self-check",
        &format!("token {}", job_tokens[0]),
        &secrets,
        &mut leaks,
    );
    assert_eq!(leaks.len(), 2, "{leaks:?}");
    leaks.clear();
    let mut places = 0;
    let mut check = |place: &str, text: &str, leaks: &mut Vec<String>| {
        places += 1;
        audit(place, text, &secrets, leaks);
    };

    let service_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        service_log.contains("panic"),
        "the panic is logged: {service_log}"
    );
    check(
        "the service log (JSON, trace level)",
        &service_log,
        &mut leaks,
    );
    for rec in h.coordinator.jobs() {
        check(
            &format!("the trace of job {} at the coordinator", rec.name),
            &String::from_utf8_lossy(&rec.trace),
            &mut leaks,
        );
        for u in &rec.updates {
            check(
                &format!("a job update of {}", rec.name),
                &format!("{:?}", u.failure_reason),
                &mut leaks,
            );
        }
    }
    check("/metrics", &metrics, &mut leaks);

    // The journal: every file (the job-token file is gone once GitLab has the final state).
    let journal = h.config_path.parent().expect("dir").join("journal");
    let mut files = Vec::new();
    walk(&journal, &mut files);
    assert!(!files.is_empty(), "a journal at {}", journal.display());
    for f in &files {
        let mode = std::fs::metadata(f).expect("stat").permissions().mode() & 0o777;
        if f.is_dir() {
            assert_eq!(mode, 0o700, "{}", f.display());
        } else {
            assert_eq!(mode, 0o600, "{}", f.display());
            assert_ne!(
                f.file_name().and_then(|n| n.to_str()),
                Some("job-token"),
                "a job token left in the journal after its job was reported: {}",
                f.display()
            );
            check(
                &format!("journal file {}", f.display()),
                &String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()),
                &mut leaks,
            );
        }
    }
    let journal_mode = std::fs::metadata(&journal)
        .expect("journal")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(journal_mode, 0o700);

    // The reading verbs, plain and --json, and one that fails (verify against a coordinator that refuses).
    let config = h.config_path.display().to_string();
    let id = echo_id.to_string();
    let fid = fetch_id.to_string();
    for args in [
        vec!["history", "-c", &config],
        vec!["history", "-c", &config, "--json"],
        vec!["logs", &id, "-c", &config],
        vec!["logs", &fid, "-c", &config],
        vec!["list", "-c", &config],
        vec!["list", "-c", &config, "--json"],
        vec!["status", "-c", &config, "--offline"],
        vec!["status", "-c", &config, "--offline", "--json"],
        vec!["config", "check", "-c", &config],
        vec!["verify", "-c", &config],
        vec!["--debug", "verify", "-c", &config],
    ] {
        let out = h.command().args(&args).output().expect("runwright runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        check(
            &format!("`runwright {}`", args.join(" ")),
            &text,
            &mut leaks,
        );
    }
    assert!(places > 15, "places searched: {places}");
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
