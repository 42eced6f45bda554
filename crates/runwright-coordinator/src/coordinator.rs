//! The [`Coordinator`] handle: starts the HTTP server, and lets a test (or the local-pipeline mode) register
//! runners, enqueue jobs, cancel them, inject faults and read back what happened.

use crate::error::CoordinatorError;
#[cfg(feature = "faults")]
use crate::faults::FaultPlan;
use crate::jobs::{JobRecord, JobSpec, Status};
use crate::log::RequestLog;
use crate::server;
use crate::server::artifacts::{ArtifactStore, StoredArtifact};
use crate::state::Shared;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How to start a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// Listening address; default `127.0.0.1:0` (a free port).
    pub bind: SocketAddr,
    /// Seconds sent as `X-GitLab-Trace-Update-Interval` on accepted trace patches (GitLab: 60, or 3 while
    /// someone watches the log). Default 3.
    pub trace_update_interval: u64,
    /// Serve the bare repositories under this directory through `git http-backend`.
    pub git_root: Option<PathBuf>,
    /// Strict mode (default on): on top of GitLab's own validation, `jobs/request` must carry `info` and a
    /// `system_id`, bodies must be `application/json`, and the runner token must be in the body (GitLab's
    /// `requires :token`). Off: GitLab's own rules only, plus the `RUNNER-TOKEN`/`JOB-TOKEN` headers as
    /// fallback for a missing body token — for peers such as gitlab-python-runner.
    pub strict: bool,
    /// GitLab's `ci_jobs_trace_size_limit` plan limit in MiB: a patch making the trace reach it drops the job
    /// with `trace_size_exceeded` and answers `403`. `None`: no limit.
    pub trace_size_limit_mb: Option<u64>,
    /// The instance's maximum artifacts size in bytes: a larger upload is answered `413`
    /// `{"message":"413 Request Entity Too Large"}`. `None`: no limit.
    pub max_artifact_size: Option<u64>,
    /// Answer artifact downloads that ask for `direct_download=true` with a `302` to a token-free
    /// `<url>/object-storage/<id>`, as GitLab does with object storage and direct downloads on. Default off
    /// (the archive is served by the API itself).
    pub object_storage_redirect: bool,
    /// Serve HTTPS with this identity (`url()` is then `https://…`, and so are the repositories' URLs in
    /// payloads). `None`: plain HTTP.
    pub tls: Option<crate::CoordinatorTls>,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        CoordinatorOptions {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            trace_update_interval: 3,
            git_root: None,
            strict: true,
            trace_size_limit_mb: None,
            max_artifact_size: None,
            object_storage_redirect: false,
            tls: None,
        }
    }
}

/// A runner the coordinator accepts (by token).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunnerOptions {
    /// Paused runners get `204` with `X-GitLab-Last-Update`, never a job (gitlab
    /// lib/api/ci/helpers/job_request.rb `acquire_ci_job!`).
    pub paused: bool,
    /// Emulate Workhorse long polling (`apiCiLongPollingDuration`) for this runner's requests (gitlab
    /// workhorse/internal/builds/register.go).
    pub long_poll: Option<Duration>,
    /// Features (`info.features` keys) every job handed to this runner requires; a runner that does not
    /// advertise one sees the job dropped with `runner_unsupported`, as GitLab does for job requirements.
    pub features_required: Vec<String>,
    /// `CI_RUNNER_DESCRIPTION`.
    pub description: String,
    /// `CI_RUNNER_TAGS`.
    pub tags: Vec<String>,
}

struct Lifetime {
    shutdown: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A running coordinator. Cheap to clone; the server stops on [`Coordinator::shutdown`] or when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Coordinator {
    shared: Arc<Shared>,
    lifetime: Arc<Lifetime>,
    /// Held so the uploaded archives stay on disk as long as any handle exists (the server holds one too).
    _artifact_store: Arc<ArtifactStore>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("url", &self.shared.base_url)
            .finish()
    }
}

impl Coordinator {
    /// Bind and start serving.
    pub async fn start(opts: CoordinatorOptions) -> Result<Coordinator, CoordinatorError> {
        let listener = tokio::net::TcpListener::bind(opts.bind)
            .await
            .map_err(|source| CoordinatorError::Bind {
                addr: opts.bind,
                source,
            })?;
        let mut addr = listener
            .local_addr()
            .map_err(|source| CoordinatorError::Bind {
                addr: opts.bind,
                source,
            })?;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let host_port = addr.to_string();
        let acceptor = opts.tls.as_ref().map(|t| t.acceptor()).transpose()?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{host_port}/");
        let store = Arc::new(ArtifactStore::new()?);
        let shared = Arc::new(Shared::new(opts, base_url, host_port));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::serve(
            listener,
            acceptor,
            shared.clone(),
            store.clone(),
            shutdown.clone(),
        ));
        Ok(Coordinator {
            _artifact_store: store,
            shared,
            lifetime: Arc::new(Lifetime {
                shutdown,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// Base URL, `http://127.0.0.1:PORT/` (`https://` with [`CoordinatorOptions::tls`]; what goes into a
    /// runner's `url`).
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Accept a runner token. Registering the same token again replaces its options.
    pub fn add_runner(&self, token: &str, opts: RunnerOptions) {
        self.shared.lock().add_runner(token, opts);
        self.shared.notify();
    }

    /// Pause or unpause a runner (ticks its queue value, as GitLab does when `active` changes).
    pub fn set_paused(&self, token: &str, paused: bool) {
        if let Some(r) = self.shared.lock().runners.get_mut(token) {
            r.opts.paused = paused;
            r.tick();
        }
        self.shared.notify();
    }

    /// The runner's current queue value (what `X-GitLab-Last-Update` carries).
    pub fn queue_value(&self, token: &str) -> Option<String> {
        self.shared
            .lock()
            .runners
            .get(token)
            .map(|r| r.queue_value.clone())
    }

    /// Accept `token` as a legacy registration token at `POST /api/v4/runners`.
    pub fn add_registration_token(&self, token: &str) {
        self.shared
            .lock()
            .registration
            .registration_tokens
            .insert(token.to_string());
    }

    /// Disable registration tokens on the instance: `POST /api/v4/runners` answers `410 Gone`.
    pub fn set_registration_disallowed(&self, disallowed: bool) {
        self.shared.lock().registration.registration_disallowed = disallowed;
    }

    /// Tokens handed out by registration and reset from now on expire after `lifetime` (GitLab's
    /// `runner_token_expiration_interval`); `None`: they never expire.
    pub fn set_token_lifetime(&self, lifetime: Option<Duration>) {
        self.shared.lock().registration.token_lifetime = lifetime;
    }

    /// Make the runner's current token expire `in_` from now (`Duration::ZERO`: expired now; every
    /// endpoint then answers `403`), or never (`None`).
    pub fn set_token_expiry(&self, token: &str, in_: Option<Duration>) {
        if let Some(r) = self.shared.lock().runners.get_mut(token) {
            r.reg.expires_at = in_.map(|d| time::OffsetDateTime::now_utc() + d);
        }
        self.shared.notify();
    }

    /// Mark the runner orphaned: verify answers `422`.
    pub fn set_orphaned(&self, token: &str, orphaned: bool) {
        if let Some(r) = self.shared.lock().runners.get_mut(token) {
            r.reg.orphaned = orphaned;
        }
    }

    /// Accept `pat` as an administrator's access token (`PRIVATE-TOKEN`).
    pub fn add_admin_token(&self, pat: &str) {
        self.shared
            .lock()
            .registration
            .admin_tokens
            .insert(pat.to_string());
    }

    /// Every runner token the coordinator currently accepts (after registrations, resets, deletions).
    pub fn runner_tokens(&self) -> Vec<String> {
        let mut tokens: Vec<String> = self.shared.lock().runners.keys().cloned().collect();
        tokens.sort();
        tokens
    }

    /// The token of the runner with this id, if it still exists.
    pub fn token_of(&self, id: i64) -> Option<String> {
        self.shared
            .lock()
            .runners
            .iter()
            .find(|(_, r)| r.id == id)
            .map(|(t, _)| t.clone())
    }

    /// The runner managers (`system_id`s) GitLab would list for this runner.
    pub fn runner_managers(&self, token: &str) -> Vec<String> {
        self.shared
            .lock()
            .runners
            .get(token)
            .map(|r| r.reg.managers.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The body of the `POST /api/v4/runners` that created this runner (without the registration token).
    pub fn registration_request(&self, token: &str) -> Option<serde_json::Value> {
        self.shared
            .lock()
            .runners
            .get(token)
            .and_then(|r| r.reg.registered.clone())
    }

    /// The runner's id (`CI_RUNNER_ID`).
    pub fn runner_id(&self, token: &str) -> Option<i64> {
        self.shared.lock().runners.get(token).map(|r| r.id)
    }

    /// The `info` object of the runner's last authenticated job request.
    pub fn runner_info(&self, token: &str) -> Option<serde_json::Value> {
        self.shared
            .lock()
            .runners
            .get(token)
            .and_then(|r| r.info.clone())
    }

    /// Queue a job; returns its id. Ticks the queue value of every runner that may take it and, when a git
    /// root is served, creates the pipeline's persistent ref `refs/pipelines/<id>` at the job's sha in the
    /// project's repository (GitLab creates it with the pipeline; the runner always fetches it).
    pub fn enqueue(&self, spec: JobSpec) -> i64 {
        let repo = self
            .shared
            .opts
            .git_root
            .as_ref()
            .map(|root| root.join(spec.project.repo_dir()));
        let sha = spec.sha.clone();
        let merge_request = spec.merge_request_iid;
        let (id, pipeline_id, _token) = self.shared.lock().enqueue(spec);
        if let Some(repo) = repo.filter(|r| r.is_dir()) {
            let make = |name: String, what: &str| {
                let key = (repo.clone(), name, sha.clone());
                if self.shared.lock().refs_made.contains(&key) {
                    return;
                }
                match crate::server::git::update_ref(&repo, &key.1, &sha) {
                    Ok(()) => {
                        self.shared.lock().refs_made.insert(key);
                    }
                    Err(err) => tracing::warn!(job = id, %err, "cannot create the {what}"),
                }
            };
            make(
                format!("refs/pipelines/{pipeline_id}"),
                "persistent pipeline ref",
            );
            // GitLab keeps a merge request's source commit at its ref (`CI_MERGE_REQUEST_REF_PATH`).
            if let Some(iid) = merge_request {
                make(crate::payload::merge_request_ref(iid), "merge request ref");
            }
        }
        self.shared.notify();
        id
    }

    /// A snapshot of a job.
    pub fn job(&self, id: i64) -> Option<JobRecord> {
        self.shared.lock().jobs.get(&id).map(|j| j.record.clone())
    }

    /// The artifact of `artifact_type` (`archive`, `junit`, …) the job uploaded, if it did.
    pub fn artifact(&self, job_id: i64, artifact_type: &str) -> Option<StoredArtifact> {
        self.shared.lock().jobs.get(&job_id).and_then(|j| {
            j.record
                .artifacts
                .iter()
                .find(|a| a.artifact_type == artifact_type)
                .cloned()
        })
    }

    /// Every job, by id.
    pub fn jobs(&self) -> Vec<JobRecord> {
        self.shared
            .lock()
            .jobs
            .values()
            .map(|j| j.record.clone())
            .collect()
    }

    /// Wait until the job is `success`, `failed` or `canceled`.
    pub async fn wait_for_final(
        &self,
        id: i64,
        timeout: Duration,
    ) -> Result<JobRecord, CoordinatorError> {
        self.wait_for(id, timeout, JobRecord::is_final).await
    }

    /// Wait until `pred` holds for the job.
    pub async fn wait_for(
        &self,
        id: i64,
        timeout: Duration,
        pred: impl Fn(&JobRecord) -> bool,
    ) -> Result<JobRecord, CoordinatorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.shared.subscribe();
        loop {
            let record = self.job(id).ok_or(CoordinatorError::UnknownJob(id))?;
            if pred(&record) {
                return Ok(record);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    let record = self.job(id).ok_or(CoordinatorError::UnknownJob(id))?;
                    if pred(&record) {
                        return Ok(record);
                    }
                    return Err(CoordinatorError::Timeout {
                        id,
                        state: record.state,
                        waited: timeout,
                    });
                }
            }
        }
    }

    /// Cancel as GitLab's UI does (gitlab app/models/commit_status.rb `cancel`): a queued job, or one still
    /// waiting for its two-phase ack, becomes `canceled`; a running job becomes `canceling` if its runner
    /// advertised `cancel_gracefully`, else `canceled`. Final jobs are left alone.
    pub fn cancel(&self, id: i64) {
        if let Some(job) = self.shared.lock().jobs.get_mut(&id) {
            match job.status {
                Status::Pending => job.set_status(Status::Canceled),
                Status::Running if job.record.cancel_gracefully => {
                    job.set_status(Status::Canceling)
                }
                Status::Running => job.set_status(Status::Canceled),
                Status::Canceling | Status::Canceled | Status::Success | Status::Failed => {}
            }
        }
        self.shared.notify();
    }

    /// Force-cancel: any job that is not final becomes `canceled`.
    pub fn force_cancel(&self, id: i64) {
        if let Some(job) = self.shared.lock().jobs.get_mut(&id) {
            if !job.status.is_final() {
                job.set_status(Status::Canceled);
            }
        }
        self.shared.notify();
    }

    /// The shared fault plan (feature `faults`).
    #[cfg(feature = "faults")]
    pub fn faults(&self) -> &FaultPlan {
        &self.shared.faults
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.log_snapshot()
    }

    /// Stop accepting, close every connection and wait for the server task.
    pub async fn shutdown(self) {
        self.lifetime.shutdown.cancel();
        let task = self
            .lifetime
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task {
            if let Err(err) = task.await {
                tracing::warn!(%err, "coordinator server task ended abnormally");
            }
        }
    }
}
