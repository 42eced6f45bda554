//! `runwright run`: one process coordinating every `[[runners]]` entry of `config.toml`, across any number of
//! GitLab instances (reference `protocol.md` §2, §8, §9.3).
//!
//! Each entry polls on its own tasks (`request_concurrency` of them, `poll.rs`), so one entry's long poll never
//! delays another's jobs; a shared slot pool (`slots.rs`) enforces `concurrent` and `limit`; each job runs in a
//! task of its own (`job.rs`, `job_request.rs`), recorded in the job journal (`journal.rs`) and counted in
//! `metrics.rs`. Shutdown is one `select!` over the signals: SIGQUIT drains, SIGTERM/SIGINT abort running jobs
//! (`runner_interrupted`), SIGHUP and a changed file reload the configuration without touching running jobs.
//!
//! State owned: [`Shared`], which every entry's tasks share — the slots, the journal, the metrics and the live
//! runner state (`state::Registry`, written to the state file `runwright status` reads, and shown by the
//! dashboard). Also here: `listen_address` (`dashboard/`), systemd notifications and the token rotation loop
//! (`sd.rs`, `rotation.rs`), and what runwright says of itself to GitLab (`identity.rs`, `gitlab.rs`).
//! `runwright exec` (crate `runwright-exec`) starts the same pollers and job handling through
//! [`Shared::new`] and [`start_entry`].
#![allow(clippy::print_stderr)]

pub mod dashboard;
mod error;
pub mod gitlab;
mod health;
pub mod history;
pub mod identity;
mod job;
mod job_request;
pub mod journal;
pub mod metrics;
mod poll;
pub mod rotation;
pub mod sd;
mod slots;
pub mod state;

pub use error::ServiceError;

use anyhow::Context;
use runwright_config::{Config, RunnerConfig};
use runwright_engine::{Executor, RunnerIdentity};
use slots::Slots;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the config file's mtime is checked (runner commands/multi.go: every 3 s).
const RELOAD_CHECK: Duration = Duration::from_secs(3);

/// State shared by every entry's tasks.
pub struct Shared {
    pub identity: RunnerIdentity,
    pub working_dir: PathBuf,
    pub user: Option<String>,
    pub slots: Slots,
    /// Cancelled on any shutdown: no new requests, in-flight requests dropped.
    pub stop_requests: CancellationToken,
    /// Cancelled on a forceful shutdown: running jobs are aborted with `runner_interrupted`.
    pub abort_jobs: CancellationToken,
    /// Every job task, so shutdown can wait for final updates.
    pub jobs: TaskTracker,
    pub check_interval: std::sync::Mutex<Duration>,
    /// The job journal: set by `runwright run` from `[journal]`; a `Shared` nobody set it on (`runwright
    /// exec`) opens the local journal at its first job. `None` inside: journaling is off or failed to open.
    pub journal: std::sync::OnceLock<Option<Arc<crate::journal::JobJournal>>>,
    /// What `/metrics` on `listen_address` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The live state of the runner entries (last poll, running jobs, back-off) and of the service: written to
    /// the state file by `sd::supervise`, shown by the dashboard.
    pub state: Arc<state::Registry>,
    /// The process marks (`RUNWRIGHT_JOB_MARK`) of the jobs being handled now ([`Shared::kill_running_jobs`]).
    running_marks: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Keeps a job's process mark in [`Shared`]'s set while the job is handled.
pub struct MarkGuard {
    shared: Arc<Shared>,
    mark: String,
}

impl Drop for MarkGuard {
    fn drop(&mut self) {
        if let Ok(mut marks) = self.shared.running_marks.lock() {
            marks.remove(&self.mark);
        }
    }
}

impl Shared {
    /// The state every entry's pollers and jobs share; `runwright run` and `runwright exec` both start here.
    pub fn new(
        identity: RunnerIdentity,
        working_dir: PathBuf,
        user: Option<String>,
        concurrent: usize,
        check_interval: Duration,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            identity,
            working_dir,
            user,
            slots: Slots::new(concurrent),
            stop_requests: CancellationToken::new(),
            abort_jobs: CancellationToken::new(),
            jobs: TaskTracker::new(),
            check_interval: std::sync::Mutex::new(check_interval),
            journal: std::sync::OnceLock::new(),
            metrics: Arc::default(),
            state: Arc::default(),
            running_marks: std::sync::Mutex::default(),
        })
    }

    /// Records `mark` as a running job's until the guard is dropped.
    pub fn track_mark(self: &Arc<Self>, mark: &str) -> MarkGuard {
        if let Ok(mut marks) = self.running_marks.lock() {
            marks.insert(mark.to_string());
        }
        MarkGuard {
            shared: self.clone(),
            mark: mark.to_string(),
        }
    }

    /// SIGKILLs every process of the jobs being handled (found by their mark, as the journal's recovery finds
    /// a dead service's): for a caller that will not wait out an abort's SIGTERM grace (`runwright exec` at a
    /// second signal). Their job tasks then end as after any kill and send their final update.
    pub async fn kill_running_jobs(&self) {
        let marks: Vec<String> = self
            .running_marks
            .lock()
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || {
            for mark in marks {
                crate::journal::kill_marked(&mark);
            }
        })
        .await;
    }

    /// The journal jobs are recorded in (see [`Shared::journal`]'s field).
    pub fn journal(&self) -> Option<Arc<crate::journal::JobJournal>> {
        self.journal.get_or_init(crate::journal::open_local).clone()
    }

    pub fn check_interval(&self) -> Duration {
        self.check_interval
            .lock()
            .map(|d| *d)
            .unwrap_or(Duration::from_secs(3))
    }
}

/// A running `[[runners]]` entry: its pollers stop when `stop` fires; its jobs live on in `Shared::jobs`.
struct Entry {
    config: RunnerConfig,
    stop: CancellationToken,
}

/// Entries are keyed by URL and token: a renamed entry is the same runner, a new token is a new one.
fn entry_key(r: &RunnerConfig) -> String {
    format!("{}\u{0}{}", r.url, r.token)
}

pub fn make_executor(
    runner: &RunnerConfig,
    shared: &Shared,
) -> Result<Arc<dyn Executor>, ServiceError> {
    match runner.executor.as_str() {
        "shell" => {
            let exec = runwright_shell::ShellExecutor::new(
                runner.shell.as_deref(),
                shared.user.as_deref(),
                shared.working_dir.clone(),
                kill_grace(),
            )
            .map_err(|e| ServiceError::Entry(e.to_string()))?;
            let confinement = job_cgroups(runner, shared.user.as_deref());
            Ok(Arc::new(exec.with_confinement(&confinement)) as Arc<dyn Executor>)
        }
        "docker" => {
            runwright_docker::DockerExecutor::new(runner, shared.working_dir.clone(), kill_grace())
                .map(|e| Arc::new(e) as Arc<dyn Executor>)
                .map_err(|e| ServiceError::Entry(e.with_hint()))
        }
        other => Err(ServiceError::Entry(format!(
            "executor {other:?} is not supported by this runwright build yet; runner {:?} will not request jobs",
            runner.name
        ))),
    }
}

/// How a shell entry's jobs are confined (a cgroup each, or only process group and mark), checked when the
/// entry starts and said once in the log: a warning when cgroups cannot be used.
pub fn job_cgroups(
    runner: &RunnerConfig,
    user: Option<&str>,
) -> runwright_shell::cgroup::Confinement {
    use runwright_shell::cgroup::{detect, Confinement};
    let confinement = detect(&cgroup_settings(runner, user));
    let line = confinement.describe();
    // Several entries (or a reload) find the same: one line each, once per service.
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let first = SAID.lock().is_ok_and(|mut said| {
        let new = !said.contains(&line);
        if new {
            said.push(line.clone());
        }
        new
    });
    match &confinement {
        Confinement::Cgroups { warning, .. } => {
            if first {
                tracing::info!(runner = %runner.name, "{line}");
            }
            if let Some(w) = warning {
                tracing::warn!(runner = %runner.name, "{w}");
            }
        }
        Confinement::Unavailable { required: true, .. } => {
            tracing::error!(runner = %runner.name, "{line}")
        }
        Confinement::Unavailable { .. } if first => tracing::warn!(runner = %runner.name, "{line}"),
        Confinement::Unavailable { .. } => {}
    }
    confinement
}

/// The entry's `use_slot_cgroups` / `slot_cgroup_template`, and the user jobs run as.
pub fn cgroup_settings(
    runner: &RunnerConfig,
    user: Option<&str>,
) -> runwright_shell::cgroup::CgroupSettings {
    runwright_shell::cgroup::CgroupSettings {
        use_slot_cgroups: runner.use_slot_cgroups,
        slot_cgroup_template: runner.slot_cgroup_template.clone(),
        user: user.map(str::to_string),
    }
}

/// Grace between SIGTERM and SIGKILL for a stage's processes; `RUNWRIGHT_KILL_GRACE_SECONDS` overrides it
/// (tests use a short one).
fn kill_grace() -> Duration {
    std::env::var(runwright_static::env_vars::RUNWRIGHT_KILL_GRACE_SECONDS)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(10))
}

fn load(path: &std::path::Path) -> anyhow::Result<runwright_config::LoadedConfig> {
    let loaded = runwright_config::load(path)?;
    log_load_findings(&loaded);
    Ok(loaded)
}

/// Logs the warnings of a load, and each `[[runners]]` entry that failed validation: that entry does not poll,
/// the others do (issue 16 item 8; GitLab's runner logs an entry without a token and skips it when polling,
/// runner commands/multi.go `reloadConfig`, `feedRunner`).
fn log_load_findings(loaded: &runwright_config::LoadedConfig) {
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    for r in &loaded.invalid_runners {
        tracing::error!(runner = %r.name, "invalid runner entry: {r}");
    }
}

fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// What `runwright run` is given on its command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `config.toml`.
    pub config: PathBuf,
    /// Changed to before starting (relative builds_dir are resolved against it).
    pub working_directory: Option<PathBuf>,
    /// Shell-executor jobs run as this user (the service must run as root); else `user` of the config.
    pub user: Option<String>,
}

/// Runs the service until a signal ends it. `init_logging` is called once, with the config's `log_level` and
/// `log_format` (none when the config does not load).
pub async fn run(
    args: RunOptions,
    init_logging: impl FnOnce(Option<&str>, Option<&str>),
) -> Result<ExitCode, ServiceError> {
    if let Some(dir) = &args.working_directory {
        std::env::set_current_dir(dir)
            .with_context(|| format!("changing to working directory {}", dir.display()))?;
    }
    let config_path = std::path::absolute(&args.config).context("resolving the config path")?;
    let (config, invalid_runners) = match runwright_config::load(&config_path) {
        Ok(l) => {
            init_logging(
                l.config.log_level.as_deref(),
                l.config.log_format.as_deref(),
            );
            log_load_findings(&l);
            (l.config, l.invalid_runners)
        }
        Err(e) => {
            init_logging(None, None);
            return Err(ServiceError::Config(e));
        }
    };
    let system_id = match runwright_config::load_or_create_system_id(&config_path) {
        Ok(id) => id,
        // As GitLab's runner: a read-only config directory costs a stable ID, not the service.
        Err(runwright_config::ConfigError::SystemIdWrite { id, path, error }) => {
            tracing::warn!(
                "could not save the system ID to {}: {error}; using {id} for this run only",
                path.display()
            );
            id
        }
        Err(e) => return Err(ServiceError::SystemId(e)),
    };
    let identity = crate::identity::identity(&system_id);
    tracing::info!(
        arch = crate::identity::architecture(),
        os = std::env::consts::OS,
        pid = std::process::id(),
        revision = crate::identity::REVISION,
        version = crate::identity::VERSION,
        "Runtime platform"
    );
    tracing::info!(
        config = %config_path.display(),
        concurrent = config.concurrent,
        runners = config.runners.len(),
        invalid_runners = invalid_runners.len(),
        "Starting multi-runner"
    );
    if config.concurrent < config.runners.len() {
        tracing::warn!(
            "concurrent = {} is less than the number of runners ({}): runners wait for each other's slots, and a long poll of one delays the others",
            config.concurrent,
            config.runners.len()
        );
    }

    let shared = Shared::new(
        identity,
        std::env::current_dir().context("reading the working directory")?,
        args.user.clone().or(config.user.clone()),
        config.concurrent,
        config.check_interval(),
    );

    // Handlers before the lock: once `status` can see the service running, a signal sent to it must be handled
    // (SIGQUIT's default action dumps core).
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigquit = signal(SignalKind::quit())?;
    let mut sighup = signal(SignalKind::hangup())?;

    // One service per config (issue 5): a second one would run every job twice.
    let service_lock = state::lock(&config_path)?;
    let ops_stop = CancellationToken::new();
    shared.state.start(std::process::id());
    tokio::spawn(sd::supervise(
        shared.state.clone(),
        state::state_path_for_lock(&service_lock.path),
        ops_stop.clone(),
    ));
    let _ops_stop = ops_stop.clone().drop_guard();

    // The journal before the first poll: jobs a crashed predecessor left running are finalised towards GitLab
    // (in the background: GitLab may be slow) and new jobs are recorded from their first byte. The lock lives
    // as long as the service.
    let opened = crate::journal::open_service(&config, &config_path).unwrap_or_else(|e| {
        // A read-only config directory costs the journal, not the service (as with `.runner_system_id`).
        tracing::error!("{e:#}; jobs are not journaled");
        None
    });
    let _journal_lock = match opened {
        Some((journal, lock)) => {
            let _ = shared.journal.set(Some(journal.clone()));
            if lock.is_some() {
                shared.jobs.spawn(crate::journal::recover(
                    journal,
                    crate::journal::recovery_info(),
                    Arc::new(config.clone()),
                ));
            }
            lock
        }
        None => {
            let _ = shared.journal.set(None);
            None
        }
    };

    // `listen_address` (read at start only, as GitLab's runner does): metrics, health and the dashboard.
    set_metrics_config(&shared, &config);
    let dashboard = config
        .listen_address
        .as_deref()
        .filter(|a| !a.is_empty())
        .map(|addr| {
            let dashboard = crate::dashboard::Dashboard::new(
                shared.metrics.clone(),
                shared.state.clone(),
                shared.journal.get().cloned().flatten(),
                shared.working_dir.clone(),
                config_path.clone(),
                &config,
            );
            dashboard.set_invalid_runners(&invalid_runners);
            let (addr, d, stop) = (
                addr.to_string(),
                dashboard.clone(),
                shared.stop_requests.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = crate::dashboard::serve(&addr, d, stop).await {
                    tracing::error!("{e:#}");
                }
            });
            dashboard
        });
    shared.metrics.set_ready(true);

    let mut entries: HashMap<String, Entry> = HashMap::new();
    shared.state.set_entries(&sd::entries(&config));
    apply_config(&shared, &mut entries, &config);
    let mut last_mtime = mtime(&config_path);
    let mut shutdown_timeout = config.shutdown_timeout();

    // After `last_mtime` and the SIGHUP handler: a rotation saves the new token and raises SIGHUP to reload.
    tokio::spawn(sd::rotate_tokens(config_path.clone(), ops_stop.clone()));
    let mut tick = tokio::time::interval(RELOAD_CHECK);
    tick.tick().await;

    let graceful = loop {
        let reload = tokio::select! {
            _ = sigquit.recv() => break true,
            _ = sigterm.recv() => break false,
            _ = sigint.recv() => break false,
            _ = sighup.recv() => { tracing::info!("SIGHUP: reloading configuration"); true }
            _ = tick.tick() => {
                let now = mtime(&config_path);
                let changed = now != last_mtime;
                if changed { tracing::info!("configuration file changed: reloading"); }
                changed
            }
        };
        if reload {
            last_mtime = mtime(&config_path);
            match load(&config_path) {
                Ok(runwright_config::LoadedConfig {
                    config: new,
                    invalid_runners,
                    ..
                }) => {
                    shared.slots.set_concurrent(new.concurrent);
                    if let Ok(mut ci) = shared.check_interval.lock() {
                        *ci = new.check_interval();
                    }
                    shutdown_timeout = new.shutdown_timeout();
                    shared.state.set_entries(&sd::entries(&new));
                    apply_config(&shared, &mut entries, &new);
                    set_metrics_config(&shared, &new);
                    if let Some(d) = &dashboard {
                        d.set_config(&new);
                        d.set_invalid_runners(&invalid_runners);
                    }
                    tracing::info!("configuration loaded");
                }
                Err(e) => tracing::error!(
                    "keeping the previous configuration: the new one is invalid: {e:#}"
                ),
            }
        }
    };

    sd::notify("STOPPING=1\nSTATUS=finishing running jobs");
    shared.state.stopping();
    shared.metrics.set_ready(false);
    shared.stop_requests.cancel();
    shared.jobs.close();
    if graceful {
        tracing::info!(
            running = shared.jobs.len(),
            "SIGQUIT: graceful shutdown, no new jobs; waiting for running jobs to finish"
        );
        tokio::select! {
            _ = shared.jobs.wait() => {}
            _ = sigterm.recv() => return abort_and_wait(&shared, shutdown_timeout, &mut sigterm, &mut sigint).await,
            _ = sigint.recv() => return abort_and_wait(&shared, shutdown_timeout, &mut sigterm, &mut sigint).await,
        }
        tracing::info!("all jobs finished; exiting");
        Ok(ExitCode::SUCCESS)
    } else {
        abort_and_wait(&shared, shutdown_timeout, &mut sigterm, &mut sigint).await
    }
}

fn set_metrics_config(shared: &Shared, config: &Config) {
    let limits: Vec<(String, usize)> = config
        .runners
        .iter()
        .map(|r| (r.name.clone(), r.limit))
        .collect();
    shared.metrics.set_config(config.concurrent, &limits);
}

/// Forceful shutdown: abort every job (each still sends its final update), wait up to `shutdown_timeout`;
/// a second signal exits at once.
async fn abort_and_wait(
    shared: &Shared,
    timeout: Duration,
    sigterm: &mut tokio::signal::unix::Signal,
    sigint: &mut tokio::signal::unix::Signal,
) -> Result<ExitCode, ServiceError> {
    tracing::warn!(
        running = shared.jobs.len(),
        "forceful shutdown: aborting running jobs (runner_interrupted)"
    );
    shared.abort_jobs.cancel();
    tokio::select! {
        _ = shared.jobs.wait() => { tracing::info!("all jobs finalised; exiting"); return Ok(ExitCode::SUCCESS) }
        _ = tokio::time::sleep(timeout) => {
            tracing::error!("shutdown_timeout of {timeout:?} reached with jobs still finishing; exiting");
        }
        _ = sigterm.recv() => tracing::warn!("second signal: exiting now"),
        _ = sigint.recv() => tracing::warn!("second signal: exiting now"),
    }
    // gitlab-runner exits here and leaves a job that ignores SIGTERM running (commands/multi.go
    // `handleForcefulShutdown`: "forced exit with stop signal" / "shutdown timed out"); nothing of a job outlives the service that ran it (issue 17): its processes and
    // cgroups go now, and the next start finalises the jobs from the journal.
    shared.kill_running_jobs().await;
    Ok(ExitCode::from(1))
}

/// Starts, stops or restarts entries so they match `config`. Unchanged entries are left alone; a changed entry
/// gets new pollers while its running jobs finish with the settings they started with.
fn apply_config(shared: &Arc<Shared>, entries: &mut HashMap<String, Entry>, config: &Config) {
    let mut wanted: HashMap<String, &RunnerConfig> = HashMap::new();
    for r in &config.runners {
        wanted.insert(entry_key(r), r);
    }
    entries.retain(|key, entry| {
        let keep = wanted.get(key).is_some_and(|r| **r == entry.config);
        if let Some(new) = wanted.get(key).filter(|_| !keep) {
            // What changed, from the (token-masking) Debug form of both entries.
            let (old, new) = (format!("{:#?}", entry.config), format!("{new:#?}"));
            let before: std::collections::HashSet<&str> = old.lines().collect();
            let changed: Vec<&str> = new
                .lines()
                .filter(|l| !before.contains(l))
                .map(str::trim)
                .collect();
            tracing::info!(runner = %entry.config.name, changed = %changed.join(" "), "runner entry changed: restarting its pollers (running jobs keep their settings)");
            // The old pollers stop: otherwise they keep taking jobs with the old settings beside the new ones (a
            // tightened clean_git_config or allowed_images ignored for every other job). gitlab-runner reads the
            // runner's settings from the reloaded config for each new job (commands/multi.go `feedRunners`).
            entry.stop.cancel();
        } else if !keep {
            tracing::info!(runner = %entry.config.name, "runner entry removed or changed: stopping its pollers");
            entry.stop.cancel();
        }
        keep
    });
    for (key, r) in wanted {
        if entries.contains_key(&key) {
            continue;
        }
        match start_entry(shared, r) {
            Ok(stop) => {
                tracing::info!(runner = %r.name, url = %r.url, executor = %r.executor, "runner entry started");
                entries.insert(
                    key,
                    Entry {
                        config: r.clone(),
                        stop,
                    },
                );
            }
            Err(e) => {
                let msg = e.to_string();
                shared.state.not_started(&r.url, &r.token, &msg);
                tracing::error!(runner = %r.name, "{msg}")
            }
        }
    }
}

/// Starts the pollers of one `[[runners]]` entry (its executor, `request_concurrency` poll tasks); the
/// returned token stops them. Jobs they take run in `shared.jobs`.
pub fn start_entry(
    shared: &Arc<Shared>,
    r: &RunnerConfig,
) -> Result<CancellationToken, ServiceError> {
    let executor = make_executor(r, shared)?;
    let stop = shared.stop_requests.child_token();
    poll::start(shared.clone(), Arc::new(r.clone()), executor, stop.clone())
        .map_err(|e| ServiceError::Entry(format!("cannot start runner entry: {e}")))?;
    Ok(stop)
}

/// Stops taking jobs and waits for the running ones to send their final updates.
pub async fn drain(shared: &Shared) {
    shared.stop_requests.cancel();
    shared.jobs.close();
    shared.jobs.wait().await;
}
