//! The job journal (issue 6): a service killed with SIGKILL mid-job is finalised by the next one from the journal,
//! with its trace and without survivors; the journal keeps the full trace past `output_limit`; `runwright
//! history` and `runwright logs` read it.

use crate::harness::*;
use nix::sys::signal::Signal;
use runwright_coordinator::JobSpec;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn journal_dir(h: &Harness) -> PathBuf {
    h.path().join("journal")
}

/// The one job directory of `id` in the service's journal.
fn job_dir(h: &Harness, id: i64) -> PathBuf {
    let jobs = journal_dir(h).join("jobs");
    let found: Vec<PathBuf> = std::fs::read_dir(&jobs)
        .expect("journal jobs dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.split('-').nth(1) == Some(&id.to_string()))
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().expect("one")
}

fn meta(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json"))
        .expect("meta json")
}

async fn wait_meta(dir: &Path, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = meta(dir);
        if f(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "journal never got there: {m:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigkill_mid_job_is_finalised_from_the_journal_after_restart_and_nothing_survives() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let pids = h.path().join("pids");
    std::fs::create_dir_all(&pids).expect("pids dir");
    let id = h.coordinator.enqueue(JobSpec::shell(
        "crashy",
        &[
            "echo started",
            // One process that left the job's process group: only the mark finds it.
            &format!("setsid sleep 300 & echo $! > {}/setsid.pid", pids.display()),
            &format!("echo $$ > {}/shell.pid", pids.display()),
            "echo before-the-kill",
            "sleep 300",
            "echo never-printed",
        ],
    ));
    h.wait_trace(id, "before-the-kill\n").await;
    let shell = read_pid(&pids.join("shell.pid")).await;
    let escaped = read_pid(&pids.join("setsid.pid")).await;
    let dir = job_dir(&h, id);
    assert_eq!(meta(&dir)["state"], "running");

    h.signal(Signal::SIGKILL);
    h.wait_exit(WAIT).await;
    // The crash leaves the job's processes behind and the job running on the coordinator.
    assert!(alive(shell) && alive(escaped));
    assert_eq!(h.coordinator.job(id).expect("job").state, "running");

    h.start();
    let job = h.final_job(id).await;
    assert_eq!(job.state, "failed", "{}", h.log());
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    let trace = job.trace_text();
    assert!(trace.contains("started\n"), "{trace}");
    assert!(trace.contains("before-the-kill\n"), "{trace}");
    assert!(!trace.contains("never-printed"), "{trace}");
    assert!(
        trace.contains("finalised from the job journal after a restart"),
        "{trace}"
    );
    assert_eq!(job.final_checksum_ok, Some(true), "{trace}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while (alive(shell) || alive(escaped)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(shell), "the job's shell survived the recovery");
    assert!(!alive(escaped), "a setsid process of the job survived");

    // GitLab has the final state a moment before the journal records that it does.
    let m = wait_meta(&dir, |m| m["reported"] == true).await;
    assert_eq!(m["state"], "failed");
    assert_eq!(m["failure_reason"], "runner_system_failure");
    assert_eq!(m["recovered"], true);
    assert_eq!(m["reported"], true);
    assert!(
        !dir.join("job-token").exists(),
        "token kept after the report"
    );

    // The restarted service goes on taking jobs.
    let next = h
        .coordinator
        .enqueue(JobSpec::shell("next", &["echo next"]));
    assert_eq!(h.final_job(next).await.state, "success");
}

fn runwright(h: &Harness, args: &[&str]) -> (String, String) {
    let out = h.command().args(args).output().expect("runwright runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "runwright {args:?} failed: {stderr}\n{stdout}"
    );
    (stdout, stderr)
}

#[tokio::test]
async fn journal_keeps_the_full_masked_trace_and_history_and_logs_read_it() {
    let mut h = Harness::new().await;
    // output_limit is in KiB: GitLab gets 1 KiB of this job's ~9 KiB.
    h.single_runner("", "  output_limit = 1");
    h.start();
    let mut spec = JobSpec::shell(
        "numbers",
        &[
            "echo \"secret is $MY_SECRET\"",
            "seq 1 2000",
            "echo the-end",
        ],
    );
    let mut secret = runwright_coordinator::variable("MY_SECRET", "hunter2-swordfish");
    secret.masked = true;
    spec.variables.push(secret);
    let id = h.coordinator.enqueue(spec);
    let job = h.final_job(id).await;
    assert_eq!(job.state, "success", "{}", h.log());
    let gitlab = job.trace_text();
    assert!(gitlab.contains("Job's log exceeded limit"), "{gitlab}");
    assert!(!gitlab.contains("the-end"));

    let dir = job_dir(&h, id);
    let m = wait_meta(&dir, |m| m["reported"] == true).await;
    assert_eq!(m["state"], "success");
    let stages: Vec<&str> = m["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(stages.contains(&"step_script"), "{stages:?}");
    let journal = plain_trace(&std::fs::read(dir.join("trace.log")).expect("trace"));
    assert!(journal.contains("\n1999\n2000\n"), "the journal is cut");
    assert!(journal.contains("the-end"));
    assert!(journal.contains("secret is [MASKED]"));
    assert!(!journal.contains("hunter2-swordfish"));
    assert!(!journal.contains("Job's log exceeded limit"));

    let config = h.config_path.to_string_lossy().into_owned();
    // The table.
    let (table, _) = runwright(&h, &["history", "-c", &config]);
    let mut lines = table.lines();
    let header = lines.next().expect("header");
    assert!(header.starts_with("JOB  STATUS"), "{table}");
    let row = lines.next().expect("a row");
    assert!(
        row.starts_with(&format!("{id} "))
            && row.contains("success")
            && row.contains("test-runner"),
        "{table}"
    );
    // JSON, and the filters.
    let (json, _) = runwright(&h, &["history", "-c", &config, "--json", "--since", "1h"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("history --json");
    let jobs = v.as_array().expect("array");
    assert_eq!(jobs.len(), 1, "{json}");
    assert_eq!(jobs[0]["job_id"], id);
    assert_eq!(jobs[0]["status"], "success");
    assert_eq!(jobs[0]["job_name"], "numbers");
    assert_eq!(jobs[0]["runner"]["name"], "test-runner");
    assert!(jobs[0]["duration_ms"].as_i64().is_some());
    assert!(!json.contains("hunter2-swordfish") && !json.contains(TOKEN));
    for (flag, value, want) in [
        ("--status", "failed", 0),
        ("--status", "success", 1),
        ("--runner", "test-runner", 1),
        ("--runner", "other", 0),
        ("--project", "no/such", 0),
    ] {
        let (json, _) = runwright(&h, &["history", "-c", &config, "--json", flag, value]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v.as_array().map(Vec::len), Some(want), "{flag} {value}");
    }

    // Not a terminal: plain text, the whole trace.
    let (plain, _) = runwright(&h, &["logs", &id.to_string(), "-c", &config]);
    assert!(
        plain.contains("\n2000\n$ echo the-end\nthe-end\n"),
        "{plain}"
    );
    assert!(plain.contains("secret is [MASKED]"));
    assert!(!plain.contains('\x1b') && !plain.contains("section_start"));
    let (raw, _) = runwright(
        &h,
        &["logs", &id.to_string(), "-c", &config, "--color", "always"],
    );
    assert_eq!(raw, journal);

    // --follow: a running job's trace until it ends.
    let slow = h.coordinator.enqueue(JobSpec::shell(
        "slow",
        &["echo first-line", "sleep 2", "echo second-line"],
    ));
    // The coordinator's copy stops at this runner's 1 KiB `output_limit` (the timestamp headers fill it before the
    // script prints): the journal's copy is not cut.
    let deadline = std::time::Instant::now() + WAIT;
    while !std::fs::read_dir(journal_dir(&h).join("jobs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().split('-').nth(1) == Some(&slow.to_string()))
        .any(|e| {
            plain_trace(&std::fs::read(e.path().join("trace.log")).unwrap_or_default())
                .contains("\nfirst-line\n")
        })
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow job never printed: {}",
            h.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let follower = h
        .command()
        .args(["logs", &slow.to_string(), "-c", &config, "--follow"])
        .output()
        .expect("logs --follow");
    let followed = String::from_utf8_lossy(&follower.stdout);
    assert!(follower.status.success());
    assert!(
        followed.contains("first-line") && followed.contains("second-line"),
        "{followed}"
    );
    assert!(followed.contains("Job succeeded"), "{followed}");

    // An unknown job says where it looked.
    let out = h
        .command()
        .args(["logs", "999999", "-c", &config])
        .output()
        .expect("logs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("job 999999 is not in the journal"), "{err}");
}

#[tokio::test]
async fn exec_runs_land_in_the_local_journal_tagged_local() {
    let h = Harness::new().await;
    h.make_repo(
        "grp/local",
        &[(
            ".gitlab-ci.yml",
            "build:\n  script:\n    - echo local-build-output\nfails:\n  script:\n    - exit 4\n",
        )],
    );
    let dir = h.path().join("src/grp/local");
    let out = h
        .command()
        .args(["exec", "--executor", "shell", "-j", "1"])
        .current_dir(&dir)
        .output()
        .expect("runwright exec runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The service's journal (beside a config) is not where exec's jobs go.
    assert!(!journal_dir(&h).exists());

    let (json, _) = runwright(&h, &["history", "--local", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("history --json");
    let jobs = v.as_array().expect("array");
    let by_name = |n: &str| {
        jobs.iter()
            .find(|j| j["job_name"] == n)
            .unwrap_or_else(|| panic!("{n} not in {json}"))
    };
    let build = by_name("build");
    assert_eq!(build["local"], true);
    assert_eq!(build["status"], "success");
    assert!(!build["trace_path"]
        .as_str()
        .expect("path")
        .contains(&h.path().join("journal").to_string_lossy().into_owned()));
    let fails = by_name("fails");
    assert_eq!(fails["status"], "failed");
    assert_eq!(fails["exit_code"], 4);
    assert_eq!(fails["failure_reason"], "script_failure");

    let id = build["job_id"].as_i64().expect("id").to_string();
    let (log, _) = runwright(&h, &["logs", &id, "--local"]);
    assert!(log.contains("local-build-output\n"), "{log}");
}

/// Prometheus text format, strictly: every line a comment (`# HELP`/`# TYPE`) or `name{labels} value`.
/// Returns sample → value (chunked transfer encoding is undone by ignoring hex length lines).
fn parse_prometheus(body: &str) -> std::collections::HashMap<String, f64> {
    let mut samples = std::collections::HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().expect("name").to_string();
            let kind = parts.next().expect("kind");
            assert!(
                ["counter", "gauge", "histogram", "summary"].contains(&kind),
                "{line}"
            );
            typed.insert(name);
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        if u64::from_str_radix(line.trim(), 16).is_ok() && !line.contains(' ') {
            continue; // a chunk length
        }
        let (sample, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let name = sample.split('{').next().expect("name");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample without # TYPE: {line}");
        if let Some(labels) = sample.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        samples.insert(sample.to_string(), value);
    }
    samples
}

#[tokio::test]
async fn listen_address_serves_metrics_with_gitlab_names_and_health() {
    let mut h = Harness::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    h.single_runner(&format!("listen_address = \"{addr}\""), "  limit = 3");
    h.start();
    let ok = h.coordinator.enqueue(JobSpec::shell("ok", &["echo fine"]));
    let bad = h.coordinator.enqueue(JobSpec::shell("bad", &["exit 3"]));
    assert_eq!(h.final_job(ok).await.state, "success");
    assert_eq!(h.final_job(bad).await.state, "failed");

    let (status, _) = http_get(&addr, "/health/live").await;
    assert_eq!(status, 200);
    let (status, _) = http_get(&addr, "/health/ready").await;
    assert_eq!(status, 200);

    // The final update reaches the coordinator just before the job's metrics are final: poll briefly.
    let deadline = Instant::now() + WAIT;
    let samples = loop {
        let (status, body) = http_get(&addr, "/metrics").await;
        assert_eq!(status, 200);
        let samples = parse_prometheus(&body);
        let done = samples.iter().any(|(k, v)| {
            k.starts_with("gitlab_runner_job_duration_seconds_count{runner=\"test-runner\"")
                && *v == 2.0
        });
        if done {
            break samples;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let get = |prefix: &str| -> f64 {
        samples
            .iter()
            .find(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{prefix} missing: {samples:#?}"))
    };
    assert_eq!(get("gitlab_runner_concurrent"), 4.0);
    assert_eq!(get("gitlab_runner_limit{runner=\"test-runner\"}"), 3.0);
    assert_eq!(get("gitlab_runner_jobs_total{runner=\"test-runner\""), 2.0);
    assert_eq!(
        get("gitlab_runner_jobs{runner=\"test-runner\",state=\"running\""),
        0.0
    );
    assert_eq!(
        get("gitlab_runner_failed_jobs_total{failure_reason=\"script_failure\",runner=\"test-runner\""),
        1.0
    );
    assert_eq!(get("gitlab_runner_version_info{"), 1.0);
    assert!(get("runwright_job_stage_duration_seconds_count{runner=\"test-runner\",stage=\"step_script\"}") >= 2.0);

    // A graceful stop is no longer ready (and then gone).
    h.signal(Signal::SIGQUIT);
    h.wait_exit(WAIT).await;
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}

#[tokio::test]
async fn sigkill_mid_docker_job_leaves_no_container_network_or_volume_after_restart() {
    use crate::docker::{docker_ready, leftovers, service, sourceless, BUSYBOX, EXPOSED};
    if !docker_ready(&[BUSYBOX, EXPOSED]) {
        return;
    }
    let mut h = Harness::new().await;
    // disable_cache gives the job temporary volumes too; the service gives it a network.
    let token = h.docker_runner(
        "  [runners.feature_flags]\n    FF_NETWORK_PER_BUILD = true",
        "    disable_cache = true\n    volumes = [\"/cache\"]",
    );
    h.start();
    let mut spec = sourceless("crashy-docker", &["echo started-in-docker", "sleep 300"]);
    spec.services = vec![service(EXPOSED, "web")];
    let id = h.coordinator.enqueue(spec);
    h.wait_trace(id, "started-in-docker").await;

    h.signal(Signal::SIGKILL);
    h.wait_exit(WAIT).await;
    // The crash leaves the build and service containers, the network and the temporary volumes behind.
    let left = leftovers(&token, id);
    for kind in ["container ", "network ", "volume "] {
        assert!(
            left.iter().any(|l| l.starts_with(kind)),
            "no {kind}after the kill: {left:?}"
        );
    }
    assert!(
        left.iter().filter(|l| l.starts_with("container ")).count() >= 2,
        "build and service containers: {left:?}"
    );

    h.start();
    let job = h.final_job(id).await;
    assert_eq!(job.state, "failed", "{}", h.log());
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    assert!(job.trace_text().contains("started-in-docker"));
    // The recovery removes them before it reports the job.
    assert_eq!(leftovers(&token, id), Vec::<String>::new(), "{}", h.log());
    assert!(
        h.log().contains("removed what the job left on Docker"),
        "{}",
        h.log()
    );
}
