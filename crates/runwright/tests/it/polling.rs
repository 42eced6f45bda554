//! Job requests: what runwright tells GitLab, long polling across entries, health and bad payloads.

use crate::harness::*;
use runwright_coordinator::{JobSpec, RunnerOptions};
use std::time::{Duration, Instant};

#[tokio::test]
async fn job_request_carries_honest_info_system_id_and_echoes_last_update() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell("one", &["true"]));
    h.final_job(id).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reqs: Vec<_> = h
        .coordinator
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/jobs/request"))
        .collect();
    assert!(reqs.len() >= 2, "{reqs:?}");
    let body = reqs[0].body.clone().expect("json body");
    let sid = body["system_id"].as_str().expect("system_id");
    assert!(sid.starts_with("s_") || sid.starts_with("r_"), "{sid}");
    assert_eq!(sid.len(), 14);
    let stored =
        std::fs::read_to_string(h.path().join(".runner_system_id")).expect("system id file");
    assert_eq!(stored.trim(), sid);
    let info = &body["info"];
    assert_eq!(info["name"], "runwright");
    assert_eq!(info["executor"], "shell");
    assert_eq!(info["features"]["two_phase_job_commit"], true);
    assert_eq!(info["features"]["cancel_gracefully"], true);
    for f in [
        "artifacts",
        "upload_multiple_artifacts",
        "upload_raw_artifacts",
        "artifacts_exclude",
        "cache",
        "fallback_cache_keys",
    ] {
        assert_eq!(info["features"][f], true, "{f}");
    }
    // Not implemented, so not advertised.
    assert_eq!(info["features"]["vault_secrets"], false);
    // A later request echoes the queue value GitLab sent.
    let queue = h.coordinator.queue_value(TOKEN).expect("queue value");
    let last = reqs.last().and_then(|r| r.body.clone()).expect("json");
    assert_eq!(last["last_update"].as_str(), Some(queue.as_str()));
}

#[tokio::test]
async fn a_long_polled_entry_does_not_delay_another_entrys_job() {
    let mut h = Harness::new().await;
    h.coordinator.add_runner(
        TOKEN,
        RunnerOptions {
            long_poll: Some(Duration::from_secs(30)),
            ..Default::default()
        },
    );
    h.coordinator.add_runner(TOKEN2, RunnerOptions::default());
    let body = format!(
        "concurrent = 4\ncheck_interval = 1\n{}{}",
        h.runner_toml("long-polled", TOKEN, ""),
        h.runner_toml("other", TOKEN2, "")
    );
    h.write_config(&body);
    h.start();
    // Let the first entry settle into its long poll (its second request carries last_update).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = Instant::now();
    let id = h
        .coordinator
        .enqueue(JobSpec::shell("quick", &["echo quick"]).for_runner(TOKEN2));
    let job = h.final_job(id).await;
    assert_eq!(job.state, "success");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "job of the other entry took {:?}",
        start.elapsed()
    );
    assert_eq!(job.runner_token.as_deref(), Some(TOKEN2));
}

#[tokio::test]
async fn concurrent_and_limit_bound_parallel_jobs() {
    let mut h = Harness::new().await;
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    let body = format!(
        "concurrent = 2\ncheck_interval = 1\n{}",
        h.runner_toml("limited", TOKEN, "  limit = 1\n  request_concurrency = 2")
    );
    h.write_config(&body);
    h.start();
    let marker = h.path().join("overlap");
    let script = format!(
        "if [ -e {m}.running ]; then touch {m}; fi; touch {m}.running; sleep 1; rm -f {m}.running",
        m = marker.display()
    );
    let ids: Vec<i64> = (0..3)
        .map(|i| {
            h.coordinator
                .enqueue(JobSpec::shell(&format!("j{i}"), &[script.as_str()]))
        })
        .collect();
    for id in ids {
        assert_eq!(h.final_job(id).await.state, "success");
    }
    assert!(!marker.exists(), "limit = 1 was exceeded");
}

#[tokio::test]
async fn malformed_payload_fails_that_job_and_the_service_goes_on() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let bad = h.coordinator.enqueue(JobSpec::raw(
        "bad",
        r#"{"id": {{JOB_ID}}, "token": "{{JOB_TOKEN}}", "steps": "not a list", "variables": 7}"#,
    ));
    let unreadable = h
        .coordinator
        .enqueue(JobSpec::raw("worse", "this is not json"));
    let good = h
        .coordinator
        .enqueue(JobSpec::shell("good", &["echo fine"]));
    let job = h.final_job(bad).await;
    assert_eq!(job.state, "failed");
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    assert!(
        job.trace_text().contains("could not be read"),
        "{}",
        job.trace_text()
    );
    assert_eq!(h.final_job(good).await.state, "success");
    // The unreadable one cannot be reported: it stays with GitLab (which times it out), and is logged.
    assert!(!h.coordinator.job(unreadable).expect("job").is_final());
    assert!(h.log().contains("unreadable job payload"), "{}", h.log());
}

#[tokio::test]
async fn forbidden_runner_backs_off_after_the_unhealthy_limit() {
    let mut h = Harness::new().await;
    // The coordinator does not know this token: every request is 403.
    let body = format!(
        "concurrent = 1\ncheck_interval = 1\n{}",
        h.runner_toml(
            "unknown",
            "glrt-t1_notregistered00001",
            "  unhealthy_requests_limit = 2\n  unhealthy_interval = \"1h\""
        )
    );
    h.write_config(&body);
    h.start();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = h
        .coordinator
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/jobs/request"))
        .count();
    assert_eq!(n, 2, "requests after two 403s: {n}\n{}", h.log());
    assert!(h.log().contains("unhealthy"), "{}", h.log());
    assert!(
        !h.log().contains("notregistered00001"),
        "token leaked to the log"
    );
}
