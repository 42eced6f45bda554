//! Polling GitLab for one `[[runners]]` entry: `request_concurrency` tasks, each taking a slot, asking
//! `POST /jobs/request`, and handing a received job to its own task (reference `protocol.md` §2.2, §2.6).

use super::health::Health;
use super::job;
use super::Shared;
use runwright_client::{Client, ClientOptions, RequestJobOutcome};
use runwright_config::RunnerConfig;
use runwright_engine::Executor;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub fn start(
    shared: Arc<Shared>,
    runner: Arc<RunnerConfig>,
    executor: Arc<dyn Executor>,
    stop: CancellationToken,
) -> Result<(), String> {
    let client = Client::new(ClientOptions {
        url: runner.url.clone(),
        tls_ca_file: runner.tls_ca_file.clone(),
        tls_cert_file: runner.tls_cert_file.clone(),
        tls_key_file: runner.tls_key_file.clone(),
        certs_dir: Some(runwright_config::default_certs_dir()),
        user_agent: crate::identity::user_agent(),
        idle_timeout: None,
    })
    .map_err(|e| e.to_string())?;
    let health = Arc::new(Mutex::new(Health::default()));
    let mut info = crate::identity::version_info(executor.as_ref());
    crate::gitlab::entry_info(&mut info, &runner);
    for _ in 0..runner.request_concurrency() {
        tokio::spawn(poll_loop(
            shared.clone(),
            runner.clone(),
            executor.clone(),
            client.clone(),
            info.clone(),
            health.clone(),
            stop.clone(),
        ));
    }
    Ok(())
}

async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}

async fn poll_loop(
    shared: Arc<Shared>,
    runner: Arc<RunnerConfig>,
    executor: Arc<dyn Executor>,
    client: Client,
    info: runwright_api::types::VersionInfo,
    health: Arc<Mutex<Health>>,
    stop: CancellationToken,
) {
    let key = format!("{}\u{0}{}", runner.url, runner.token);
    let name = runner.name.as_str();
    loop {
        if stop.is_cancelled() {
            return;
        }
        let skip = health.lock().ok().and_then(|h| h.skip_for());
        if let Some(wait) = skip {
            shared.state.unhealthy(&runner.url, &runner.token, wait);
            tracing::warn!(
                runner = name,
                "runner is unhealthy: skipping requests for {wait:?}"
            );
            if !sleep_or_stop(wait, &stop).await {
                return;
            }
            continue;
        }
        let slot = tokio::select! {
            s = shared.slots.acquire(&key, runner.limit) => s,
            _ = stop.cancelled() => return,
        };
        // Only the service's shutdown abandons a request in flight: a reloaded or removed entry's poller ends
        // after it, running the job GitLab may already have assigned (dropping the answer would lose that job
        // until GitLab times it out). gitlab-runner cancels a request only at an interrupt signal or the end of
        // its run, never at a reload (commands/multi.go `doJobRequest`).
        let outcome = tokio::select! {
            o = client.request_job(&runner.token, &shared.identity.system_id, &info) => o,
            _ = shared.stop_requests.cancelled() => return,
        };
        let set_health = |ok: bool| {
            if let Ok(mut h) = health.lock() {
                if ok {
                    h.succeeded()
                } else {
                    h.failed(
                        runner.unhealthy_requests_limit(),
                        runner.unhealthy_interval(),
                    )
                }
            }
        };
        let (label, success) = match &outcome {
            RequestJobOutcome::Job(_) => ("job".to_string(), true),
            RequestJobOutcome::NoJob => ("no_job".to_string(), true),
            RequestJobOutcome::Malformed { .. } => ("malformed_job".to_string(), true),
            RequestJobOutcome::Forbidden => ("forbidden".to_string(), false),
            RequestJobOutcome::Conflict => ("conflict".to_string(), true),
            RequestJobOutcome::Orphaned => ("orphaned".to_string(), false),
            RequestJobOutcome::Unavailable => ("unavailable".to_string(), false),
            RequestJobOutcome::Failed(msg) => (format!("failed: {msg}"), false),
        };
        shared
            .state
            .polled(&runner.url, &runner.token, &label, success);
        match outcome {
            RequestJobOutcome::Job(received) => {
                set_health(true);
                tracing::info!(runner = name, job = received.id, "received job");
                let received_id = received.id;
                let job_token = received.token.clone();
                let inject_panic = std::env::var(runwright_static::env_vars::RUNWRIGHT_TEST_FAULT)
                    .is_ok_and(|v| v == "panic-in-job")
                    && received
                        .variables
                        .iter()
                        .any(|v| v.key == "RUNWRIGHT_TEST_PANIC");
                let task = job::handle(
                    shared.clone(),
                    runner.clone(),
                    executor.clone(),
                    client.clone(),
                    info.clone(),
                    *received,
                    slot,
                );
                let job_id = received_id;
                let (url, token) = (runner.url.clone(), runner.token.clone());
                shared.state.job(&url, &token, job_id, true);
                let task = async move {
                    if inject_panic {
                        panic!("RUNWRIGHT_TEST_FAULT=panic-in-job");
                    }
                    task.await
                };
                let guarded = fail_on_panic(task, client.clone(), info.clone(), job_id, job_token);
                let live = shared.state.clone();
                shared.jobs.spawn(async move {
                    guarded.await;
                    live.job(&url, &token, job_id, false);
                });
                // GitLab's runner asks again at once unless strict_check_interval (§2.6 step 3).
                if runner.strict_check_interval
                    && !sleep_or_stop(shared.check_interval(), &stop).await
                {
                    return;
                }
                continue;
            }
            RequestJobOutcome::Malformed {
                id,
                token,
                name: identity,
                error,
            } => {
                set_health(true);
                match (id, token) {
                    (Some(id), Some(token)) => {
                        tracing::error!(
                            runner = name,
                            job = id,
                            "job payload is malformed: {error}; failing the job"
                        );
                        shared.jobs.spawn(job::fail_malformed(
                            shared.clone(),
                            runner.clone(),
                            client.clone(),
                            info.clone(),
                            job::Unreadable {
                                id,
                                token,
                                identity,
                                error,
                            },
                            slot,
                        ));
                    }
                    _ => {
                        tracing::error!(runner = name, "unreadable job payload skipped: {error}");
                        drop(slot);
                    }
                }
                continue;
            }
            RequestJobOutcome::NoJob => {
                set_health(true);
                tracing::debug!(runner = name, "no job");
            }
            RequestJobOutcome::Forbidden => {
                set_health(false);
                tracing::error!(runner = name, "job request forbidden (403): the runner token is invalid, expired or the runner was deleted");
            }
            RequestJobOutcome::Conflict => {
                tracing::debug!(runner = name, "job request conflict (409)");
            }
            RequestJobOutcome::Orphaned => {
                tracing::warn!(
                    runner = name,
                    "job request failed (422): runner is orphaned"
                );
            }
            RequestJobOutcome::Unavailable => {
                tracing::warn!(runner = name, "GitLab instance currently unavailable (503)");
            }
            RequestJobOutcome::Failed(msg) => {
                tracing::warn!(runner = name, "job request failed: {msg}");
            }
        }
        drop(slot);
        if !sleep_or_stop(shared.check_interval(), &stop).await {
            return;
        }
    }
}

/// Runs a job's task; if it panics (a bug, never expected), the service goes on and GitLab learns at once that
/// the job failed (`runner_system_failure`) instead of waiting for its stuck-job timeout. The trace stays as
/// far as it was sent.
async fn fail_on_panic(
    task: impl std::future::Future<Output = ()>,
    client: Client,
    info: runwright_api::types::VersionInfo,
    id: i64,
    token: String,
) {
    use futures::FutureExt;
    let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await else {
        return;
    };
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    tracing::error!(
        job = id,
        "the job's task panicked ({what}); failing the job as runner_system_failure"
    );
    // With GitLab's two-phase commit the job may still wait for its `running` acknowledgement: send it first
    // (GitLab answers it harmlessly when the job is already running).
    for (state, reason) in [("running", None), ("failed", Some("runner_system_failure"))] {
        let update = runwright_api::types::UpdateJobRequest {
            info: info.clone(),
            token: token.clone(),
            state: state.into(),
            failure_reason: reason.map(str::to_string),
            ..Default::default()
        };
        let _ = client.update_job(id, &token, &update).await;
    }
}
