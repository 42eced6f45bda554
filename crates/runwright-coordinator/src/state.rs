//! The coordinator's shared state: known runners with their queue values, the job table, the request log and
//! a change counter that long polls and `wait_for_final` wait on. One `std::sync::Mutex`, never held across an
//! `.await`.

use crate::coordinator::{CoordinatorOptions, RunnerOptions};
#[cfg(feature = "faults")]
use crate::faults::FaultPlan;
use crate::jobs::{JobRecord, JobSpec, ProjectSpec, Status};
use crate::log::RequestLog;
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;

/// Everything the handlers and the [`crate::Coordinator`] handle share.
pub(crate) struct Shared {
    pub opts: CoordinatorOptions,
    /// `http://127.0.0.1:PORT/`
    pub base_url: String,
    /// `127.0.0.1:PORT`
    pub host_port: String,
    pub started: Instant,
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    #[cfg(feature = "faults")]
    pub faults: FaultPlan,
    log: Mutex<Vec<RequestLog>>,
    log_seq: AtomicU64,
}

impl Shared {
    pub(crate) fn new(opts: CoordinatorOptions, base_url: String, host_port: String) -> Self {
        Shared {
            opts,
            base_url,
            host_port,
            started: Instant::now(),
            state: Mutex::new(State::default()),
            changes: watch::Sender::new(0),
            #[cfg(feature = "faults")]
            faults: FaultPlan::default(),
            log: Mutex::new(Vec::new()),
            log_seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wake everyone waiting for a state change (long polls, `wait_for_final`).
    pub(crate) fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Subscribe *before* checking the condition, then await `changed()`.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn next_log_seq(&self) -> u64 {
        self.log_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn push_log(&self, entry: RequestLog) {
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Keep arrival order even though responses finish out of order.
        let pos = log.partition_point(|e| e.seq < entry.seq);
        log.insert(pos, entry);
    }

    pub(crate) fn log_snapshot(&self) -> Vec<RequestLog> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// A runner the coordinator knows (`add_runner`).
pub(crate) struct Runner {
    pub id: i64,
    pub opts: RunnerOptions,
    /// The opaque `runner:build_queue:<token>` value (gitlab app/models/ci/runner.rb
    /// `ensure_runner_queue_value`, `tick_runner_queue`).
    pub queue_value: String,
    /// `info` of the last authenticated jobs/request.
    pub info: Option<serde_json::Value>,
    pub system_id: Option<String>,
    /// What registration, verify and the admin API know about the runner (`registration.rs`).
    pub reg: crate::server::registration::RunnerRecord,
}

impl Runner {
    pub(crate) fn tick(&mut self) {
        self.queue_value = random_hex(16);
    }
}

/// One job.
pub(crate) struct Job {
    pub spec: JobSpec,
    pub status: Status,
    pub record: JobRecord,
    pub queued_at: Instant,
    /// When the first final update was answered `202` (`Ci::BuildPendingState#created_at`): only an injected
    /// `Fault::Accepted202` answers so.
    #[cfg(feature = "faults")]
    pub pending_state_since: Option<Instant>,
}

impl Job {
    pub(crate) fn set_status(&mut self, status: Status) {
        self.status = status;
        self.record.state = status.as_str().to_string();
        if status != Status::Pending {
            self.record.waiting_for_ack = false;
        }
    }

    /// Waiting for the runner's two-phase commit acknowledgement (gitlab app/models/ci/build.rb
    /// `waiting_for_runner_ack?`).
    pub(crate) fn waiting_for_ack(&self) -> bool {
        self.status == Status::Pending && self.record.waiting_for_ack
    }

    /// Not yet handed out.
    pub(crate) fn queued(&self) -> bool {
        self.status == Status::Pending && self.record.runner_token.is_none()
    }

    pub(crate) fn may_run_on(&self, runner_token: &str) -> bool {
        self.spec
            .runner_token
            .as_deref()
            .is_none_or(|t| t == runner_token)
    }

    /// `drop` with a failure reason.
    pub(crate) fn drop_with(&mut self, reason: &str) {
        self.record.failure_reason = Some(reason.to_string());
        self.set_status(Status::Failed);
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub runners: HashMap<String, Runner>,
    pub jobs: BTreeMap<i64, Job>,
    /// Projects by full path (for git access).
    pub projects: HashMap<String, ProjectSpec>,
    next_job_id: i64,
    next_pipeline_id: i64,
    next_runner_id: i64,
    /// Registration tokens, admin tokens and token lifetimes (`registration.rs`).
    pub registration: crate::server::registration::RegistrationState,
    /// The refs `enqueue` made, as (repository, ref, commit): each is made once, not once per job (a `git
    /// update-ref` on the path of every job handed out).
    pub refs_made: std::collections::HashSet<(std::path::PathBuf, String, String)>,
}

impl State {
    pub(crate) fn add_runner(&mut self, token: &str, opts: RunnerOptions) -> i64 {
        if let Some(existing) = self.runners.get_mut(token) {
            existing.opts = opts;
            existing.tick();
            return existing.id;
        }
        self.next_runner_id += 1;
        let id = self.next_runner_id;
        self.runners.insert(
            token.to_string(),
            Runner {
                id,
                opts,
                queue_value: random_hex(16),
                info: None,
                system_id: None,
                reg: Default::default(),
            },
        );
        id
    }

    /// Store a job and tick the queues of the runners that may take it (gitlab app/services/ci/
    /// update_build_queue_service.rb `tick_for`).
    pub(crate) fn enqueue(&mut self, spec: JobSpec) -> (i64, i64, String) {
        self.next_job_id += 1;
        let id = self.next_job_id;
        let pipeline_id = match spec.pipeline_id {
            Some(p) => {
                self.next_pipeline_id = self.next_pipeline_id.max(p);
                p
            }
            None => {
                self.next_pipeline_id += 1;
                self.next_pipeline_id
            }
        };
        let token = new_job_token();
        self.projects
            .entry(spec.project.full_path.clone())
            .or_insert_with(|| spec.project.clone());
        for (runner_token, runner) in self.runners.iter_mut() {
            if spec
                .runner_token
                .as_deref()
                .is_none_or(|t| t == runner_token)
            {
                runner.tick();
            }
        }
        let record = JobRecord {
            id,
            name: spec.name.clone(),
            token: token.clone(),
            pipeline_id,
            state: Status::Pending.as_str().to_string(),
            waiting_for_ack: false,
            failure_reason: None,
            exit_code: None,
            trace: Vec::new(),
            patches: Vec::new(),
            range_truncations: Vec::new(),
            debug_trace: false,
            updates: Vec::new(),
            final_checksum_ok: None,
            accepted_202: 0,
            runner_token: None,
            system_id: None,
            cancel_gracefully: false,
            payload: None,
            artifacts: Vec::new(),
        };
        self.jobs.insert(
            id,
            Job {
                spec,
                status: Status::Pending,
                record,
                queued_at: Instant::now(),
                #[cfg(feature = "faults")]
                pending_state_since: None,
            },
        );
        (id, pipeline_id, token)
    }

    /// Find the job that owns a job token and may use it (running, canceling, or waiting for the two-phase
    /// ack — gitlab app/finders/ci/auth_job_finder.rb `validate_executing_job!`).
    pub(crate) fn job_by_active_token(&self, token: &str) -> Option<&Job> {
        self.jobs.values().find(|j| {
            token_eq(&j.record.token, token) && (j.status.is_executing() || j.waiting_for_ack())
        })
    }
}

/// `n` random bytes as lower-case hex (GitLab's `SecureRandom.hex`).
pub(crate) fn random_hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// A job token in GitLab's current format (`glcbt-` prefix).
pub(crate) fn new_job_token() -> String {
    format!("glcbt-{}", Alphanumeric.sample_string(&mut rand::rng(), 20))
}

/// A runner authentication token as GitLab mints one for a runner created in the UI (an instance runner):
/// `glrt-` + `t1_` (the runner type's partition prefix) + `Devise.friendly_token` (20 characters, ~119 bits)
/// — gitlab app/models/ci/runner.rb `prefix_for_new_and_legacy_runner`, `partition_id_prefix_in_16_bit_encode`.
/// `rand::rng()` is a CSPRNG seeded by the OS: a local user cannot guess it.
pub fn new_runner_token() -> String {
    format!(
        "glrt-t1_{}",
        Alphanumeric.sample_string(&mut rand::rng(), 20)
    )
}

/// Compares a presented token with the real one in time that does not depend on where they differ, so a
/// client on the same host cannot learn a token byte by byte from answer times.
pub(crate) fn token_eq(real: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    real.len() == presented.len() && bool::from(real.as_bytes().ct_eq(presented.as_bytes()))
}
