//! A config that cannot be read, or whose global keys are wrong, stops start-up with the location of the error;
//! one invalid `[[runners]]` entry stops only that runner (issue 16 item 8); the shared examples load.

use crate::harness::*;
use runwright_coordinator::{Endpoint, JobSpec, RunnerOptions};
use serde_json::Value;
use std::time::{Duration, Instant};

#[tokio::test]
async fn broken_config_stops_startup_with_file_line_and_key() {
    let h = Harness::new().await;
    h.write_config("concurrent = \"two\"\n[[runners]]\n  name = \"x\"\n  url = \"http://127.0.0.1:1/\"\n  token = \"t\"\n  executor = \"shell\"\n");
    let out = h
        .command()
        .args(["run", "-c"])
        .arg(&h.config_path)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("config.toml:1:14: concurrent"), "{err}");
}

/// A config with a valid shell runner (token [`TOKEN`]) between two invalid entries: one without a token, one
/// with a `limit` of the wrong type. `listen_address` serves the dashboard on `addr`.
fn config_with_broken_entries(h: &Harness, addr: &str) {
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    let no_token = format!(
        "[[runners]]\n  name = \"no-token\"\n  url = \"{}\"\n  executor = \"shell\"\n",
        h.coordinator.url()
    );
    let bad_limit = h.runner_toml("bad-limit", TOKEN2, "  limit = \"four\"");
    h.write_config(&format!(
        "concurrent = 2\ncheck_interval = 1\nlisten_address = \"{addr}\"\n{no_token}{}{bad_limit}",
        h.runner_toml("good", TOKEN, "")
    ));
}

#[tokio::test]
async fn one_invalid_runner_entry_stops_only_that_runner_and_is_shown_everywhere() {
    let mut h = Harness::new().await;
    let addr = format!("127.0.0.1:{}", free_port());
    config_with_broken_entries(&h, &addr);
    let config = h.config_path.display().to_string();

    // `config check` names each broken entry with file, line, key and what is wrong, and fails.
    let out = h
        .command()
        .args(["config", "check", "-c", &config])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("2 invalid runner entries (skipped, the others run), 1 runner(s)"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("ERROR: ") && l.contains("config.toml:4:1: runners[0]: missing required key 'token'; runner \"no-token\" (runners[0]) is skipped")),
        "{text}"
    );
    assert!(
        text.contains("config.toml:19:11: runners[2].limit: invalid type: string \"four\", expected an integer"),
        "{text}"
    );
    let out = h
        .command()
        .args(["config", "check", "--json", "-c", &config])
        .output()
        .expect("runs");
    let json: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["runners"][0]["name"], "good");
    assert_eq!(json["invalid_runners"][1]["name"], "bad-limit");
    assert_eq!(json["invalid_runners"][1]["index"], 2);

    // The service starts with the good entry, logs the others, and the good one runs a job.
    h.start();
    let id = h
        .coordinator
        .enqueue(JobSpec::shell("after-a-bad-entry", &["echo ran-fine"]));
    let job = h.final_job(id).await;
    assert_eq!(job.state, "success", "{}", job.trace_text());
    let log = h.log();
    assert!(
        log.contains("invalid runner entry: ")
            && log.contains("config.toml:4:1: runners[0]: missing required key 'token'"),
        "{log}"
    );
    assert!(log.contains("config.toml:19:11: runners[2].limit"), "{log}");

    // `list`: every entry in file order, the broken ones `invalid` with the reason.
    let out = h
        .command()
        .args(["list", "-c", &config])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("no-token ")
            && lines[0].contains("State=invalid Error=\"/")
            && lines[0].ends_with("config.toml:4:1: runners[0]: missing required key 'token'\""),
        "{err}"
    );
    assert!(
        lines[1].starts_with("good ") && lines[1].contains("State="),
        "{err}"
    );
    assert!(!lines[1].contains("invalid"), "{err}");
    assert!(
        lines[2].starts_with("bad-limit ")
            && lines[2].contains("Token=testrunne")
            && lines[2].contains("State=invalid"),
        "{err}"
    );
    let out = h
        .command()
        .args(["list", "--json", "-c", &config])
        .output()
        .expect("runs");
    let json: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json[2]["state"], "invalid");
    assert!(json[1].get("error").is_none(), "{json}");

    // `status`: the broken entries with their reason, the good one with the service's view (once the service
    // says it is ready: every valid entry has polled).
    let deadline = Instant::now() + WAIT;
    let json = loop {
        let out = h
            .command()
            .args(["status", "--offline", "--json", "-c", &config])
            .output()
            .expect("runs");
        let json: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(out.status.code(), Some(0), "{json}");
        if json["service"]["ready"] == true {
            break json;
        }
        assert!(
            Instant::now() < deadline,
            "never ready: {json}\n{}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let runners = json["runners"].as_array().expect("runners");
    assert_eq!(runners.len(), 3, "{json}");
    assert!(
        runners[0]["invalid"]
            .as_str()
            .is_some_and(|e| e.contains("missing required key 'token'")),
        "{json}"
    );
    assert!(runners[1]["invalid"].is_null(), "{json}");
    assert!(
        runners[1]["service"]["last_success_at"].is_string(),
        "{json}"
    );
    assert!(
        runners[2]["invalid"]
            .as_str()
            .is_some_and(|e| e.contains("runners[2].limit")),
        "{json}"
    );
    let out = h
        .command()
        .args(["status", "--offline", "-c", &config])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    let bad = err
        .lines()
        .find(|l| l.starts_with("bad-limit "))
        .unwrap_or_default();
    assert!(
        bad.contains(" Invalid=\"/") && bad.contains("config.toml:19:11: runners[2].limit"),
        "{err}"
    );

    // The dashboard's runners: the broken ones as `invalid`, with the reason.
    let deadline = Instant::now() + WAIT;
    let auth = format!("Authorization: Bearer {}", h.dashboard_token().await);
    let body = loop {
        let (status, _, body) = http_request(
            &addr,
            "/api/v1/runners",
            &[format!("Host: {addr}"), auth.clone()],
        )
        .await;
        if status == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "dashboard: {status} {body}\n{}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let json: Value = serde_json::from_str(&body).expect("json");
    let runners = json["runners"].as_array().expect("runners");
    let state = |name: &str| {
        runners
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {json}"))
            .clone()
    };
    assert_eq!(state("good")["state"], "polling", "{json}");
    let bad = state("bad-limit");
    assert_eq!(bad["state"], "invalid", "{json}");
    assert_eq!(bad["short_token"], "testrunne", "{json}");
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.contains("runners[2].limit")),
        "{json}"
    );
    assert_eq!(state("no-token")["state"], "invalid", "{json}");
}

#[tokio::test]
async fn fixing_an_invalid_entry_starts_it_on_reload() {
    let mut h = Harness::new().await;
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.coordinator.add_runner(TOKEN2, RunnerOptions::default());
    let good = h.runner_toml("good", TOKEN, "");
    h.write_config(&format!(
        "concurrent = 2\ncheck_interval = 1\n{good}{}",
        h.runner_toml("second", TOKEN2, "  limit = \"one\"")
    ));
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell("first", &["true"]));
    assert_eq!(h.final_job(id).await.state, "success");
    assert!(h.log().contains("runners[1].limit"), "{}", h.log());
    // Only the good runner has asked for jobs.
    let asked = |token: &str| {
        h.coordinator
            .requests()
            .iter()
            .filter(|r| r.endpoint == Endpoint::RequestJob && r.body_str("token") == Some(token))
            .count()
    };
    assert_eq!(asked(TOKEN2), 0);

    // Fixed in the file: the reload starts it, and it polls.
    h.write_config(&format!(
        "concurrent = 2\ncheck_interval = 1\n{good}{}",
        h.runner_toml("second", TOKEN2, "  limit = 1")
    ));
    h.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + WAIT;
    while asked(TOKEN2) == 0 {
        assert!(
            Instant::now() < deadline,
            "the fixed entry never polled:\n{}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Broken again: that entry stops polling (the other goes on), and the log says why.
    h.write_config(&format!(
        "concurrent = 2\ncheck_interval = 1\n{good}{}",
        h.runner_toml("second", TOKEN2, "  limit = \"one\"")
    ));
    h.signal(nix::sys::signal::Signal::SIGHUP);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = asked(TOKEN2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(asked(TOKEN2), before, "{}", h.log());
    assert!(
        h.log().matches("runners[1].limit").count() >= 2,
        "{}",
        h.log()
    );
    let id = h
        .coordinator
        .enqueue(JobSpec::shell("still-polling", &["true"]));
    assert_eq!(h.final_job(id).await.state, "success");
}

#[tokio::test]
async fn list_prints_gitlab_lines_with_shortened_tokens() {
    let h = Harness::new().await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runwright-config/tests/fixtures/build-host.toml");
    let out = h
        .command()
        .args(["list", "-c"])
        .arg(&examples)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("wb31-projrunner-shellexec"), "{err}");
    assert!(
        err.contains("Executor=shell Token=AsX-3Txxx URL=https://git.gfz.de/"),
        "{err}"
    );
    assert!(
        !err.contains("AsX-3Txxxxxxxxxxxxxxxxxxxxxx"),
        "full token printed: {err}"
    );
}

#[tokio::test]
async fn labels_reach_gitlab_as_info_labels_on_every_job_request_and_update() {
    let mut h = Harness::new().await;
    h.single_runner(
        "[labels]\n  env = \"prod\"\n  team = \"infra\"\n",
        "  [runners.labels]\n    env = \"staging\"\n    gpu_model = \"a100\"\n",
    );
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell("labelled", &["true"]));
    assert_eq!(h.final_job(id).await.state, "success");
    let expected = serde_json::json!({"env": "staging", "gpu_model": "a100", "team": "infra"});
    let info = h
        .coordinator
        .runner_info(TOKEN)
        .expect("a job request with info");
    assert_eq!(info["labels"], expected, "{info}");
    // The job's updates carry the same info (runner network/gitlab.go `UpdateJob`).
    let updates: Vec<_> = h
        .coordinator
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::UpdateJob)
        .collect();
    assert!(!updates.is_empty());
    for u in &updates {
        let body = u.body.as_ref().expect("json body");
        assert_eq!(body["info"]["labels"], expected, "{body}");
    }
}

#[tokio::test]
async fn config_check_lists_the_keys_runwright_reads_but_does_not_honour() {
    let h = Harness::new().await;
    h.write_config(&format!(
        "sentry_dsn = \"https://sentry.example.com/1\"\n[session_server]\n  listen_address = \"[::]:8093\"\n{}",
        h.runner_toml(
            "r",
            TOKEN,
            "  use_slot_cgroups = true\n  [runners.cache]\n    Type = \"s3\"\n    [runners.cache.s3]\n      BucketName = \"b\"\n      ServerSideEncryption = \"KMS\""
        )
    ));
    let out = h
        .command()
        .args(["config", "check", "-c"])
        .arg(&h.config_path)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for key in [
        "sentry_dsn",
        "session_server.listen_address",
        "runners[0].cache.s3.ServerSideEncryption",
    ] {
        assert!(
            err.lines().any(|l| l.starts_with("WARNING: ")
                && l.contains(&format!(
                    ": {key} is not supported by runwright and is ignored: "
                ))),
            "{key}:\n{err}"
        );
    }
    // The shell executor places each job's cgroup with it (issue 17 item 6).
    assert!(!err.contains("use_slot_cgroups is not supported"), "{err}");
}
