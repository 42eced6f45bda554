//! The service's side of the job journal (`runwright-journal`, issue 6): where it lives, what each job's record
//! starts with, how a job's end is recorded around its final update, and the recovery of jobs a crashed service
//! left behind.
//!
//! Where: `[journal] dir` of `config.toml`, else `journal/` beside `config.toml` — the directory that already
//! holds the runner's state (`.runner_system_id`), `/etc/gitlab-runner` as root and `~/.gitlab-runner`
//! otherwise, so it works for both without another setting. `runwright exec` has no config file: its jobs go
//! to `$XDG_STATE_HOME/runwright/journal` (`~/.local/state/…`) and are tagged `local`, so the service never
//! tries to report them to a GitLab.

use anyhow::Context;
use runwright_api::failure_reason::FailureReason;
use runwright_api::types::{JobResponse, VersionInfo};
use runwright_api::JobState;
use runwright_client::{Client, ClientOptions, FinalState, JobTrace, JobTraceOptions};
use runwright_config::{Config, RunnerConfig};
use runwright_engine::RunnerIdentity;
use runwright_journal::{
    now_ms, JobEntry, JobMeta, JobRecorder, JobStatus, Journal, JournalLock, Retention, RunnerRef,
    TlsFiles, TraceLimits,
};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// An open journal and whether its jobs are local (`runwright exec`) ones.
#[derive(Debug)]
pub struct JobJournal {
    pub journal: Journal,
    pub local: bool,
    /// When retention may run again: it reads every job's record, so it runs at the first job's end and then
    /// at most every [`RETENTION_EVERY`], not after each job (with the default 1000 jobs kept, a scan per job
    /// cost more than a small job itself).
    retention_due: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The shortest time between two retention scans of one journal.
pub const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// `[journal]` resolved against the config file: the directory and the retention, or `None` when disabled.
pub fn service_settings(config: &Config, config_path: &Path) -> Option<(PathBuf, Retention)> {
    let section = config.journal.clone().unwrap_or_default();
    if section.enabled == Some(false) {
        return None;
    }
    let base = config_path.parent().unwrap_or(Path::new("."));
    let dir = match section.dir {
        Some(d) if d.is_absolute() => d,
        Some(d) => base.join(d),
        None => base.join("journal"),
    };
    let defaults = Retention::default();
    let retention = Retention {
        max_jobs: section
            .max_jobs
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .unwrap_or(defaults.max_jobs),
        max_age: section.max_age.unwrap_or(defaults.max_age),
        max_size: section
            .max_size_mb
            .map(|mb| mb.saturating_mul(1024 * 1024))
            .unwrap_or(defaults.max_size),
    };
    Some((dir, retention))
}

/// `[journal] max_trace_mb` and `min_free_mb` in bytes (issue 17); unset keys take the journal's defaults.
pub fn trace_limits(config: &Config) -> TraceLimits {
    let section = config.journal.clone().unwrap_or_default();
    let mib = |n: u64| n.saturating_mul(1024 * 1024);
    TraceLimits {
        max_trace: section.max_trace_mb.map(mib),
        min_free: section.min_free_mb.map(mib),
    }
}

/// The journal of `runwright exec` runs.
pub fn local_dir() -> PathBuf {
    // XDG: a relative XDG_STATE_HOME is invalid and ignored.
    std::env::var_os(runwright_static::env_vars::XDG_STATE_HOME)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os(runwright_static::env_vars::HOME)
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(std::env::temp_dir)
        .join("runwright")
        .join("journal")
}

/// Opens the local (exec) journal; a failure costs the record, never the run.
pub fn open_local() -> Option<Arc<JobJournal>> {
    let dir = local_dir();
    match Journal::open(&dir, Retention::default()) {
        Ok(journal) => Some(Arc::new(JobJournal::new(journal, true))),
        Err(e) => {
            tracing::warn!("{e}; local runs are not journaled");
            None
        }
    }
}

/// The first part of a job's record, before it runs.
fn job_meta(
    runner: &RunnerConfig,
    identity: &RunnerIdentity,
    job: &JobResponse,
    local: bool,
    process_mark: &str,
) -> JobMeta {
    let now = now_ms();
    let var = |k: &str| {
        job.variables
            .iter()
            .find(|v| v.key == k)
            .map(|v| v.value.clone())
            .unwrap_or_default()
    };
    let project_path = if job.job_info.project_full_path.is_empty() {
        var("CI_PROJECT_PATH")
    } else {
        job.job_info.project_full_path.clone()
    };
    JobMeta {
        local,
        runner: RunnerRef {
            name: runner.name.clone(),
            short_token: runner.short_token(),
            url: runner.url.clone(),
            system_id: identity.system_id.clone(),
        },
        executor: runner.executor.clone(),
        tls: TlsFiles {
            ca_file: runner.tls_ca_file.clone(),
            cert_file: runner.tls_cert_file.clone(),
            key_file: runner.tls_key_file.clone(),
        },
        project_id: job.job_info.project_id,
        project_path,
        pipeline_id: job.job_info.pipeline_id,
        git_ref: job.git_info.ref_name.clone(),
        sha: job.git_info.sha.clone(),
        job_id: job.id,
        job_name: job.job_info.name.clone(),
        stage: job.job_info.stage.clone(),
        queued_at_ms: job
            .job_info
            .time_in_queue_seconds
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| now - (s * 1000.0) as i64),
        received_at_ms: now,
        output_limit: runner.output_limit_bytes(),
        supported_failure_reasons: job.features.failure_reasons.clone(),
        service_pid: std::process::id(),
        process_mark: Some(process_mark.to_string()),
        ..JobMeta::default()
    }
}

impl JobJournal {
    pub fn new(journal: Journal, local: bool) -> JobJournal {
        JobJournal {
            journal,
            local,
            retention_due: std::sync::Mutex::new(None),
        }
    }

    /// Starts the record of a job; `None` (with a warning) when the journal cannot take it.
    pub fn begin(
        &self,
        runner: &RunnerConfig,
        identity: &RunnerIdentity,
        job: &JobResponse,
        process_mark: &str,
    ) -> Option<JobRecorder> {
        let meta = job_meta(runner, identity, job, self.local, process_mark);
        match self.journal.begin(meta, &job.token) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(job = job.id, "{e}; this job is not journaled");
                None
            }
        }
    }

    /// Applies retention off the async threads, at most every [`RETENTION_EVERY`] per journal — also across
    /// processes: a `runwright exec` run lasts seconds, and one scan per run would still be one per pipeline.
    pub fn enforce_retention(self: &Arc<Self>) {
        let now = std::time::Instant::now();
        match self.retention_due.lock() {
            Ok(mut due) if due.is_none_or(|d| now >= d) => *due = Some(now + RETENTION_EVERY),
            _ => return,
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            match me.journal.enforce_retention_every(RETENTION_EVERY) {
                Ok(Some(r)) if r.removed > 0 => tracing::info!(
                    removed = r.removed,
                    freed_bytes = r.freed_bytes,
                    kept = r.kept,
                    "journal retention"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("journal retention: {e}"),
            }
        });
    }
}

/// How the journal names a final state.
pub fn status_of(state: &FinalState) -> (JobStatus, Option<String>) {
    match state.state {
        JobState::Success => (JobStatus::Success, None),
        _ => {
            let reason = state.failure_reason.unwrap_or(FailureReason::ScriptFailure);
            let status = if reason == FailureReason::JobCanceled {
                JobStatus::Canceled
            } else {
                JobStatus::Failed
            };
            (status, Some(reason.as_str().to_string()))
        }
    }
}

/// Opens the service's journal and takes its lock. `Ok(None)` when the journal is disabled. Without the lock
/// (another service uses the same journal) jobs are still journaled, but nothing is recovered.
pub fn open_service(
    config: &Config,
    config_path: &Path,
) -> anyhow::Result<Option<(Arc<JobJournal>, Option<JournalLock>)>> {
    let Some((dir, retention)) = service_settings(config, config_path) else {
        return Ok(None);
    };
    let journal = Journal::open(&dir, retention)
        .with_context(|| {
            format!(
                "opening the job journal {} (set [journal] dir to a writable directory, or enabled = false)",
                dir.display()
            )
        })?
        .with_trace_limits(trace_limits(config));
    let lock = journal.try_lock()?;
    if lock.is_none() {
        tracing::warn!(
            journal = %dir.display(),
            "another process holds the journal's lock: jobs it shows as running are left to it"
        );
    }
    Ok(Some((Arc::new(JobJournal::new(journal, false)), lock)))
}

/// Finalises towards GitLab every job a previous service left unfinished: what is left of its processes is
/// killed (and of a docker job its containers, network and temporary volumes removed), its trace is flushed
/// from the journal, and it is failed with `runner_system_failure` — or, when the service had recorded the
/// job's end but died before GitLab confirmed it, the recorded state is sent again. `config` says which
/// Docker daemon a docker job's runner entry used.
pub async fn recover(journal: Arc<JobJournal>, info: VersionInfo, config: Arc<Config>) {
    let entries = match journal.journal.unfinished() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("journal recovery: {e}");
            return;
        }
    };
    for entry in entries {
        let id = entry.meta.job_id;
        match recover_one(&journal.journal, &entry, &info, &config).await {
            Ok(()) => tracing::warn!(
                job = id,
                runner = %entry.meta.runner.name,
                "job left unfinished by a previous service finalised from the journal"
            ),
            Err(e) => tracing::error!(job = id, "journal recovery: {e:#}"),
        }
    }
    journal.enforce_retention();
}

async fn recover_one(
    journal: &Journal,
    entry: &JobEntry,
    info: &VersionInfo,
    config: &Config,
) -> anyhow::Result<()> {
    let meta = &entry.meta;
    if let Some(mark) = meta.process_mark.as_deref() {
        let mark = mark.to_string();
        tokio::task::spawn_blocking(move || kill_marked(&mark))
            .await
            .context("killing the job's leftover processes")?;
    }
    if meta.executor == "docker" {
        remove_docker_leftovers(meta, config).await;
    }
    let rec = entry.reopen(journal)?;
    let final_state = if meta.state.is_final() {
        let state = if meta.state == JobStatus::Success {
            JobState::Success
        } else {
            JobState::Failed
        };
        FinalState {
            state,
            failure_reason: meta
                .failure_reason
                .as_deref()
                .and_then(FailureReason::from_wire),
            exit_code: meta.exit_code,
            supported_reasons: meta.supported_failure_reasons.clone(),
        }
    } else {
        let line = format!(
            "\n{}ERROR: Job failed (system failure): the runwright service (pid {}) stopped while the job was \
             running; finalised from the job journal after a restart{}\n",
            runwright_trace::ansi::BOLD_RED,
            meta.service_pid,
            runwright_trace::ansi::RESET
        );
        use std::io::Write;
        rec.sink()
            .write_all(line.as_bytes())
            .context("appending to the journal's trace")?;
        rec.finish(
            JobStatus::Failed,
            Some(FailureReason::RunnerSystemFailure.as_str().to_string()),
            None,
            false,
        )?;
        rec.update(true, |m| m.recovered = true)?;
        FinalState::failed(
            FailureReason::RunnerSystemFailure,
            None,
            meta.supported_failure_reasons.clone(),
        )
    };
    let Some(token) = entry.job_token() else {
        // Without the job token GitLab cannot be told; nothing more to try.
        rec.mark_reported()?;
        anyhow::bail!(
            "the journal has no job token for job {} (its directory {} lost it): GitLab will time the job out",
            meta.job_id,
            entry.dir.display()
        );
    };
    let client = Client::new(ClientOptions {
        url: meta.runner.url.clone(),
        tls_ca_file: meta.tls.ca_file.clone(),
        tls_cert_file: meta.tls.cert_file.clone(),
        tls_key_file: meta.tls.key_file.clone(),
        certs_dir: Some(runwright_config::default_certs_dir()),
        user_agent: crate::identity::user_agent(),
        idle_timeout: None,
    })
    .with_context(|| format!("building a client for {}", meta.runner.url))?;
    // The journal holds the masked trace before the output limit: cut it where GitLab's copy was cut, so the
    // checksum matches what GitLab received.
    // The journal's bytes are final (masked, timestamped): nothing is masked or stamped again.
    let buffer = runwright_trace::TraceBuffer::new(runwright_trace::TraceOptions {
        output_limit: meta.output_limit,
        masked: Vec::new(),
        token_prefixes: Vec::new(),
        mask_all_default_tokens: false,
        timestamps: false,
    });
    let path = entry.trace_path();
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut chunk)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        buffer.write(&chunk[..n]);
        if buffer.limit_exceeded() {
            break;
        }
    }
    let (jt, _remote) = JobTrace::start(
        client,
        meta.job_id,
        token,
        info.clone(),
        buffer,
        JobTraceOptions::default(),
    );
    jt.finish(final_state)
        .await
        .with_context(|| format!("final update of job {}", meta.job_id))?;
    rec.mark_reported()?;
    Ok(())
}

/// Removes what a docker job left on its daemon: the daemon of its runner entry (by URL and short token), or
/// the default one when the entry is gone. A daemon that does not answer costs a warning, never the recovery.
async fn remove_docker_leftovers(meta: &JobMeta, config: &Config) {
    let docker_cfg = config
        .runners
        .iter()
        .find(|r| r.url == meta.runner.url && r.short_token() == meta.runner.short_token)
        .and_then(|r| r.docker.clone())
        .unwrap_or_default();
    let docker = match runwright_docker::connect(
        docker_cfg.host.as_deref(),
        docker_cfg.tls_cert_path.as_deref(),
        docker_cfg.tls_verify,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(
                job = meta.job_id,
                "the job's containers and network may be left on Docker: {}",
                e.with_hint()
            );
            return;
        }
    };
    let labels = runwright_docker::leftovers::JobLabels {
        job_id: meta.job_id,
        short_token: meta.runner.short_token.clone(),
        system_id: meta.runner.system_id.clone(),
    };
    match runwright_docker::leftovers::remove_job_leftovers(&docker, &labels).await {
        Ok(r) if !r.is_empty() => tracing::info!(
            job = meta.job_id,
            containers = %r.containers.join(","),
            networks = %r.networks.join(","),
            volumes = %r.volumes.join(","),
            "removed what the job left on Docker"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            job = meta.job_id,
            "the job's Docker leftovers: {}",
            e.with_hint()
        ),
    }
}

/// What the recovery says about itself: the runner without an executor (the one that ran the job is gone).
pub fn recovery_info() -> VersionInfo {
    VersionInfo {
        name: "runwright".into(),
        version: crate::identity::VERSION.into(),
        revision: crate::identity::REVISION.into(),
        platform: std::env::consts::OS.into(),
        architecture: crate::identity::architecture().into(),
        ..VersionInfo::default()
    }
}

/// Kills the job's cgroup (what left the process group and cleared its environment is there), then every
/// process carrying the job's mark, again until none is left (a dying shell may still fork).
pub(crate) fn kill_marked(mark: &str) {
    runwright_shell::cgroup::kill_leftover(mark);
    for _ in 0..10 {
        if runwright_shell::sweep_marked(runwright_shell::PROCESS_MARK_VAR, mark) == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
