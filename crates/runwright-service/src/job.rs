//! One received job: live trace, two-phase commit, the engine, and the final update (reference `protocol.md`
//! §2.6, §3, §4). Whatever happens inside, the job ends with a final update attempt and never takes the service
//! down.

use super::slots::SlotGuard;
use super::Shared;
use runwright_api::failure_reason::FailureReason;
use runwright_api::types::{JobResponse, UpdateJobRequest, VersionInfo};
use runwright_api::JobState;
use runwright_cache::s3::S3Cache;
use runwright_client::{
    Client, FinalState, JobTrace, JobTraceOptions, RemoteCancel, UpdateJobState,
};
use runwright_config::RunnerConfig;
use runwright_engine::feature_flags::{self, JobSettings};
use runwright_engine::steps::JobStep;
use runwright_engine::{run_job, AbortReason, Executor, JobControl, JobEnv};
use runwright_journal::{JobRecorder, JobStatus};
use runwright_trace::{TraceBuffer, TraceOptions};
use runwright_transfer::artifacts::{DownloadArtifacts, UploadArtifacts};
use runwright_transfer::cache::{ArchiveCache, CacheStore, RestoreCache, RestoreObserver};
use std::sync::Arc;

/// The job's trace, masked and timestamped as its resolved `FF_MASK_ALL_DEFAULT_TOKENS` and `FF_TIMESTAMPS` say
/// (runner common/build.go `getNewLogger`).
fn trace_for(runner: &RunnerConfig, job: &JobResponse, settings: &JobSettings) -> TraceBuffer {
    let mut masked: Vec<String> = job
        .variables
        .iter()
        .filter(|v| v.masked && !v.value.is_empty())
        .map(|v| v.value.clone())
        .collect();
    if !job.token.is_empty() {
        masked.push(job.token.clone());
    }
    // The client key the job gets as CI_SERVER_TLS_KEY_FILE (not masked by GitLab's runner; see TlsData).
    masked.extend(job.tls_data.secret_phrases());
    TraceBuffer::new(TraceOptions {
        output_limit: runner.output_limit_bytes(),
        masked,
        token_prefixes: job.features.token_mask_prefixes.clone(),
        mask_all_default_tokens: settings
            .feature_flags
            .is_on(feature_flags::MASK_ALL_DEFAULT_TOKENS),
        timestamps: settings.feature_flags.is_on(feature_flags::TIMESTAMPS),
    })
}

fn trace_options(runner: &RunnerConfig) -> JobTraceOptions {
    JobTraceOptions {
        final_update_retry_limit: runner.final_update_retry_limit(),
        ..JobTraceOptions::default()
    }
}

/// GitLab's stage order around the script: restore_cache, download_artifacts; archive_cache,
/// upload_artifacts (`protocol.md` §7.1).
fn transfer_steps(
    runner: &RunnerConfig,
    trace: &TraceBuffer,
    metrics: &Arc<crate::metrics::Metrics>,
    job: &JobResponse,
) -> Vec<Arc<dyn JobStep>> {
    let s3 = match runner.cache.as_ref() {
        None => None,
        Some(cfg) => match S3Cache::new(cfg, &runner.short_token()) {
            Ok(s3) => s3.map(Arc::new),
            Err(e) => {
                runwright_engine::job::warn(
                    trace,
                    &format!("[runners.cache] of {}: {e}; caches stay local", runner.name),
                );
                None
            }
        },
    };
    // Cache restores count towards `runwright_cache_restores_total` (issue 6).
    let (metrics, name) = (metrics.clone(), runner.name.clone());
    let project = if job.job_info.project_full_path.is_empty() {
        job.job_info.project_id.to_string()
    } else {
        job.job_info.project_full_path.clone()
    };
    let observer: RestoreObserver =
        Arc::new(move |outcome| metrics.cache_restore(&name, &project, outcome.as_str()));
    let store = CacheStore::observed(s3, Some(observer));
    vec![
        Arc::new(RestoreCache::new(store.clone())),
        Arc::new(DownloadArtifacts::new()),
        Arc::new(ArchiveCache::new(store)),
        Arc::new(UploadArtifacts::new()),
    ]
}

/// Tries of the two-phase acknowledgement while GitLab gives no answer at all.
const ACK_ATTEMPTS: u32 = 3;
/// Wait between those tries.
const ACK_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn handle(
    shared: Arc<Shared>,
    runner: Arc<RunnerConfig>,
    executor: Arc<dyn Executor>,
    client: Client,
    info: VersionInfo,
    mut job: JobResponse,
    mut slot: SlotGuard,
) {
    let job_id = job.id;
    let settings = JobSettings::of(&runner, &job);
    let trace = trace_for(&runner, &job, &settings);
    // The journal gets every masked byte from the first one on, past `output_limit` (issue 6).
    let process_mark = runwright_engine::job::new_process_mark(job.id);
    let _mark = shared.track_mark(&process_mark);
    let journal = shared.journal();
    let rec = journal
        .as_ref()
        .and_then(|j| j.begin(&runner, &shared.identity, &job, &process_mark));
    if let Some(rec) = &rec {
        trace.set_sink(Box::new(rec.sink()));
    }
    let (jt, mut remote) = JobTrace::start(
        client.clone(),
        job.id,
        job.token.clone(),
        info.clone(),
        trace.clone(),
        trace_options(&runner),
    );
    // `CI_DEBUG_TRACE`/`CI_DEBUG_SERVICES` on: every patch says so, and GitLab marks the job's log as a debug
    // log (runner commands/multi.go: `trace.SetDebugModeEnabled(build.IsDebugModeEnabled())`).
    jt.set_debug_trace(settings.debug_mode());
    let supported = job.features.failure_reasons.clone();
    let finish =
        |success: bool, reason: Option<FailureReason>, exit_code: Option<i32>| FinalState {
            state: if success {
                JobState::Success
            } else {
                JobState::Failed
            },
            failure_reason: reason,
            exit_code,
            supported_reasons: supported.clone(),
        };

    // Two-phase commit: acknowledge right after receipt (§2.6 step 2). Without any answer (each call already
    // retried by the transport) the acknowledgement is sent again a few times: GitLab keeps an unacknowledged
    // job pending for this runner, so giving up at the first timeout would strand it.
    let ack_request = UpdateJobRequest {
        info: info.clone(),
        token: job.token.clone(),
        state: "running".into(),
        ..Default::default()
    };
    let mut ack = client.update_job(job.id, &job.token, &ack_request).await;
    for _ in 1..ACK_ATTEMPTS {
        if ack.state != UpdateJobState::NoAnswer {
            break;
        }
        let wait = if client.fast_retries() {
            runwright_static::env_vars::FAST_RETRY_CAP
        } else {
            ACK_RETRY_WAIT
        };
        tokio::time::sleep(wait).await;
        ack = client.update_job(job.id, &job.token, &ack_request).await;
    }
    match ack.state {
        UpdateJobState::Abort | UpdateJobState::NotFound | UpdateJobState::NoAnswer => {
            tracing::warn!(
                job = job_id,
                state = ?ack.state,
                "GitLab withdrew the job before it started (or never answered its acknowledgement); dropping it"
            );
            drop(jt); // stops the patch loop without a final update
            if let Some(rec) = &rec {
                trace.finish();
                let _ = rec.finish(JobStatus::Canceled, None, None, true);
            }
            return;
        }
        _ if ack.cancel_requested => {
            trace.write(b"Job was canceled before it started\n");
            report(
                jt,
                finish(false, Some(FailureReason::JobCanceled), None),
                job_id,
                &trace,
                rec.as_ref(),
            )
            .await;
            return;
        }
        _ => {}
    }
    if let Some(rec) = &rec {
        let _ = rec.update(false, |m| {
            m.started_at_ms = Some(runwright_journal::now_ms())
        });
    }
    let started = std::time::Instant::now();
    shared.metrics.job_started(
        &runner.name,
        &shared.identity.system_id,
        job.job_info.time_in_queue_seconds,
    );
    let project = if job.job_info.project_full_path.is_empty() {
        job.job_info.project_id.to_string()
    } else {
        job.job_info.project_full_path.clone()
    };
    let metrics_end = |state: &FinalState| {
        let (status, reason) = crate::journal::status_of(state);
        let stages = rec
            .as_ref()
            .map(|r| {
                r.meta()
                    .stages
                    .iter()
                    .filter_map(|s| Some((s.name.clone(), s.duration_ms()? as f64 / 1000.0)))
                    .collect()
            })
            .unwrap_or_default();
        shared.metrics.job_finished(crate::metrics::JobEnd {
            runner: &runner.name,
            system_id: &shared.identity.system_id,
            project: &project,
            state: status.as_str(),
            failure_reason: reason.as_deref(),
            duration_s: started.elapsed().as_secs_f64(),
            stages,
        });
    };

    // gitlab-runner checks these before its acknowledgement; under two-phase commit GitLab refuses a failure
    // before it (update_build_state_service.rb `handle_runner_ack_workflow` answers 400), so runwright checks
    // right after it and the job fails for certain.
    match super::job_request::check(&mut job) {
        Ok(checked) => {
            if checked.shimmed {
                trace.write(
                    b"This job uses `run:` (CI Steps). runwright has no native steps integration: as gitlab-runner \
                      does on such an executor, it runs `step-runner ci` with the steps in $STEPS, so the job's \
                      image (or the shell executor's host) must provide GitLab's step-runner.\n",
                );
            }
        }
        Err(msg) => {
            trace.write(format!("{msg}\n").as_bytes());
            let state = finish(
                false,
                Some(FailureReason::RunnerSystemFailure),
                Some(super::job_request::EXIT_CODE_UNSUPPORTED_OPTIONS),
            );
            metrics_end(&state);
            report(jt, state, job_id, &trace, rec.as_ref()).await;
            return;
        }
    }

    let control = JobControl::new().with_process_mark(process_mark);
    let watcher = {
        let control = control.clone();
        let abort_all = shared.abort_jobs.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = abort_all.cancelled() => { control.abort(AbortReason::RunnerInterrupted); return; }
                    changed = remote.changed() => {
                        if changed.is_err() { return; }
                        let state = *remote.borrow_and_update();
                        match state {
                            RemoteCancel::Graceful => control.cancel_gracefully(),
                            RemoteCancel::Abort => { control.abort(AbortReason::Remote); return; }
                            RemoteCancel::None => {}
                        }
                    }
                }
            }
        })
    };

    let (concurrent_id, concurrent_project_id) = slot.assign_job(job.job_info.project_id);
    let env = JobEnv {
        runner: &runner,
        identity: &shared.identity,
        executor: executor.as_ref(),
        working_dir: shared.working_dir.clone(),
        concurrent_id,
        concurrent_project_id,
        steps: transfer_steps(&runner, &trace, &shared.metrics, &job),
    };
    let outcome = run_job(&env, &job, &trace, &control).await;
    watcher.abort();
    tracing::info!(
        job = job_id,
        success = outcome.success,
        reason = outcome.failure_reason.map(|r| r.as_str()).unwrap_or(""),
        "job finished"
    );
    let state = finish(outcome.success, outcome.failure_reason, outcome.exit_code);
    metrics_end(&state);
    report(jt, state, job_id, &trace, rec.as_ref()).await;
    drop(slot);
    if let Some(journal) = &journal {
        journal.enforce_retention();
    }
}

/// The final update. With a journal, the job's end is recorded first and marked reported once GitLab has it:
/// a service dying in between leaves a record the next one re-sends.
async fn report(
    jt: JobTrace,
    state: FinalState,
    job_id: i64,
    trace: &TraceBuffer,
    rec: Option<&JobRecorder>,
) {
    if let Some(rec) = rec {
        // Flushes what the masker held back into the journal before its trace is closed.
        trace.finish();
        let (status, reason) = crate::journal::status_of(&state);
        if let Err(e) = rec.finish(status, reason, state.exit_code, false) {
            tracing::warn!(job = job_id, "{e}");
        }
    }
    match jt.finish(state).await {
        Ok(()) => {
            if let Some(rec) = rec {
                if let Err(e) = rec.mark_reported() {
                    tracing::warn!(job = job_id, "{e}");
                }
            }
        }
        Err(e) => tracing::error!(job = job_id, "final update failed: {e}"),
    }
}

/// A job GitLab handed out whose payload did not decode, though its id and token did.
pub struct Unreadable {
    pub id: i64,
    pub token: String,
    /// Name, stage and project as far as the raw payload says them (for the journal).
    pub identity: runwright_client::MalformedJobIdentity,
    /// What failed, with the JSON path; never a value.
    pub error: String,
}

/// A job whose payload did not decode: its trace says why, it fails (`runner_system_failure`), and the journal
/// keeps its record, so `history`, `logs` and the dashboard show it with its reason. gitlab-runner drops such a
/// job silently and GitLab fails it much later as stuck; failing it at once says what happened.
pub async fn fail_malformed(
    shared: Arc<Shared>,
    runner: Arc<RunnerConfig>,
    client: Client,
    info: VersionInfo,
    unreadable: Unreadable,
    slot: SlotGuard,
) {
    let Unreadable {
        id,
        token,
        identity,
        error,
    } = unreadable;
    let job = JobResponse {
        id,
        token: token.clone(),
        job_info: runwright_api::types::JobInfo {
            id,
            name: identity.name,
            stage: identity.stage,
            project_full_path: identity.project_full_path,
            project_id: identity.project_id.unwrap_or_default(),
            pipeline_id: identity.pipeline_id.unwrap_or_default(),
            ..Default::default()
        },
        ..Default::default()
    };
    let trace = trace_for(&runner, &job, &JobSettings::of(&runner, &job));
    let journal = shared.journal();
    let rec = journal.as_ref().and_then(|j| {
        j.begin(
            &runner,
            &shared.identity,
            &job,
            &runwright_engine::job::new_process_mark(id),
        )
    });
    if let Some(rec) = &rec {
        trace.set_sink(Box::new(rec.sink()));
    }
    let (jt, _remote) = JobTrace::start(
        client.clone(),
        id,
        token.clone(),
        info.clone(),
        trace.clone(),
        trace_options(&runner),
    );
    // Acknowledged first: under two-phase commit GitLab answers a `failed` update of a job still waiting for its
    // acknowledgement with 400 (update_build_state_service.rb `handle_runner_ack_workflow`) and would hand the
    // job out again, to fail the same way.
    let _ = client
        .update_job(
            id,
            &token,
            &UpdateJobRequest {
                info,
                token: token.clone(),
                state: "running".into(),
                ..Default::default()
            },
        )
        .await;
    trace.write(
        format!(
            "{}ERROR: Job failed (system failure): the job payload from GitLab could not be read: {error}{}\n",
            runwright_trace::ansi::BOLD_RED,
            runwright_trace::ansi::RESET
        )
        .as_bytes(),
    );
    report(
        jt,
        FinalState {
            state: JobState::Failed,
            failure_reason: Some(FailureReason::RunnerSystemFailure),
            exit_code: None,
            supported_reasons: Vec::new(),
        },
        id,
        &trace,
        rec.as_ref(),
    )
    .await;
    drop(slot);
    if let Some(journal) = &journal {
        journal.enforce_retention();
    }
}
