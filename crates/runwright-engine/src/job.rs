//! One job from start to final state: the stage sequence of GitLab's runner (reference `protocol.md` §7.1),
//! each stage in its own trace section, with job/script/after_script timeouts and cancellation (§7.6, §7.8).
//!
//! The engine owns no network: it writes to a `TraceBuffer` and returns a `JobOutcome`; the service sends both
//! to GitLab.

use crate::control::{AbortReason, JobControl};
use crate::error::Error;
use crate::executor::{Executor, ExecutorError, ExecutorSession, PreparedJob};
use crate::plan::{plan, script_timeouts, Plan};
use crate::script::ScriptWriter;
use crate::sources::{self, GitStrategy, SubmoduleStrategy};
use crate::steps::{JobStep, StepContext, StepPosition};
use crate::variables::Variables;
use runwright_api::failure_reason::FailureReason;
use runwright_api::types::JobResponse;
use runwright_config::{format_go_duration, RunnerConfig};
use runwright_trace::{ansi, section_end, section_start, TraceBuffer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// GitLab's default when `runner_info.timeout` is 0 (runner common/build.go).
pub(crate) const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(7200);
/// `RUNNER_AFTER_SCRIPT_TIMEOUT` default (runner common/build.go).
pub(crate) const DEFAULT_AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// Who is running the job: the runner's identity as it appears in the trace and in `CI_RUNNER_*`.
#[derive(Debug, Clone)]
pub struct RunnerIdentity {
    pub name: String,
    pub version: String,
    pub revision: String,
    pub platform: String,
    pub architecture: String,
    pub system_id: String,
}

/// Everything the engine needs besides the job itself.
pub struct JobEnv<'a> {
    pub runner: &'a RunnerConfig,
    pub identity: &'a RunnerIdentity,
    pub executor: &'a dyn Executor,
    /// Directory relative builds dirs are resolved against (the service's working directory).
    pub working_dir: PathBuf,
    pub concurrent_id: usize,
    pub concurrent_project_id: usize,
    /// Cache and artifact stages; empty until those features exist.
    pub steps: Vec<Arc<dyn JobStep>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    pub success: bool,
    pub failure_reason: Option<FailureReason>,
    pub exit_code: Option<i32>,
    /// The one-line reason shown after `ERROR: Job failed`.
    pub message: String,
}

impl JobOutcome {
    fn succeeded() -> Self {
        Self {
            success: true,
            failure_reason: None,
            exit_code: None,
            message: String::new(),
        }
    }

    /// A job that ends with `error`: its reason, its text as the message.
    fn from_error(error: &Error) -> Self {
        Self::failed(error.failure_reason(), None, error.to_string())
    }

    fn failed(reason: FailureReason, exit_code: Option<i32>, message: impl Into<String>) -> Self {
        Self {
            success: false,
            failure_reason: Some(reason),
            exit_code,
            message: message.into(),
        }
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Writes a section around `f` when GitLab understands sections, plus the stage's cyan title.
struct Sections<'a> {
    trace: &'a TraceBuffer,
    enabled: bool,
}

impl Sections<'_> {
    fn start(&self, name: &str, title: &str) {
        if self.enabled {
            self.trace
                .write(section_start(name, "", now_unix()).as_bytes());
        }
        self.trace.write(
            format!("{}{}{title}{}\n", ansi::CLEAR, ansi::BOLD_CYAN, ansi::RESET).as_bytes(),
        );
    }

    fn end(&self, name: &str) {
        if self.enabled {
            self.trace.write(section_end(name, now_unix()).as_bytes());
        }
    }
}

pub fn warn(trace: &TraceBuffer, text: &str) {
    trace.write(format!("{}WARNING: {text}{}\n", ansi::YELLOW, ansi::RESET).as_bytes());
}

/// The state of the job after its user script, as `CI_JOB_STATUS` names it for after_script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScriptState {
    Success,
    Failed,
    Canceled,
    TimedOut,
}

impl ScriptState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::TimedOut => "timedout",
        }
    }
}

/// Runs `job` to its final state. Never panics on job input; every problem becomes a failed outcome with its
/// reason written to the trace.
pub async fn run_job(
    env: &JobEnv<'_>,
    job: &JobResponse,
    trace: &TraceBuffer,
    control: &JobControl,
) -> JobOutcome {
    let id = env.identity;
    trace.write(
        format!(
            "{}Running with runwright {} ({}){}\n",
            ansi::BOLD_CYAN,
            id.version,
            id.revision,
            ansi::RESET
        )
        .as_bytes(),
    );
    trace.write(
        format!(
            "{}  on {} {}, system ID: {}{}\n",
            ansi::BOLD_CYAN,
            env.runner.name,
            env.runner.short_token(),
            id.system_id,
            ansi::RESET
        )
        .as_bytes(),
    );
    // runner common/build.go `printRunningWithHeader`: the flags that differ from their defaults.
    let flags = crate::feature_flags::JobSettings::of(env.runner, job)
        .feature_flags
        .differing_from_defaults();
    if !flags.is_empty() {
        trace.write(format!("{}  feature flags: {flags}{}\n", ansi::CLEAR, ansi::RESET).as_bytes());
    }

    let job_timeout = if job.runner_info.timeout > 0 {
        Duration::from_secs(job.runner_info.timeout as u64)
    } else {
        DEFAULT_JOB_TIMEOUT
    };
    // The job context: cancelled by an abort or when the job timeout fires.
    let job_ctx = control.abort_token().child_token();
    let timed_out = Arc::new(AtomicBool::new(false));
    let timer = {
        let job_ctx = job_ctx.clone();
        let timed_out = timed_out.clone();
        tokio::spawn(async move {
            tokio::time::sleep(job_timeout).await;
            timed_out.store(true, Ordering::SeqCst);
            job_ctx.cancel();
        })
    };

    let outcome = match plan(env, job) {
        Ok(plan) => {
            // The settings the runner replaced, in one warning (runner common/build.go `printSettingErrors`):
            // the feature flags' first, as `initSettings` resolves them before the other settings.
            let warnings: Vec<&String> = plan
                .settings
                .warnings
                .iter()
                .chain(&plan.warnings)
                .collect();
            if !warnings.is_empty() {
                let joined: Vec<&str> = warnings.iter().map(|w| w.as_str()).collect();
                warn(trace, &joined.join("\n"));
            }
            StageRun {
                env,
                job,
                trace,
                control,
                plan: &plan,
                sections: Sections {
                    trace,
                    enabled: job.features.trace_sections,
                },
                job_ctx: &job_ctx,
                job_timed_out: &timed_out,
                job_timeout,
            }
            .run()
            .await
        }
        Err(e) => {
            // A configuration the runner refuses while it prepares the executor (its `StartBuild`), inside
            // that section.
            if e.failure_reason() == FailureReason::RunnerConfigurationError {
                let sections = Sections {
                    trace,
                    enabled: job.features.trace_sections,
                };
                sections.start(
                    "prepare_executor",
                    &format!("Preparing the \"{}\" executor", env.executor.name()),
                );
                sections.end("prepare_executor");
            }
            JobOutcome::from_error(&e)
        }
    };
    timer.abort();

    // gitlab-runner writes the outcome with a logger of its own (common/build.go `setTraceStatus`): a fresh
    // stream, so with FF_TIMESTAMPS its line starts anew rather than continuing the last section marker.
    let status = trace.stream(
        runwright_trace::timestamp::STREAM_EXECUTOR,
        runwright_trace::StreamType::Stdout,
    );
    let line = if outcome.success {
        format!("{}Job succeeded{}\n", ansi::BOLD_GREEN, ansi::RESET)
    } else if outcome.failure_reason == Some(FailureReason::RunnerSystemFailure) {
        format!(
            "{}ERROR: Job failed (system failure): {}{}\n",
            ansi::BOLD_RED,
            outcome.message,
            ansi::RESET
        )
    } else {
        format!(
            "{}ERROR: Job failed: {}{}\n",
            ansi::BOLD_RED,
            outcome.message,
            ansi::RESET
        )
    };
    status.write(line.as_bytes());
    status.close();
    outcome
}

/// One planned job on its way through the stages: what every stage reads (the job, its plan, the trace and its
/// sections, the job context and how it ends). The stage functions are its methods, so each takes only what
/// is its own.
struct StageRun<'a> {
    env: &'a JobEnv<'a>,
    job: &'a JobResponse,
    trace: &'a TraceBuffer,
    control: &'a JobControl,
    plan: &'a Plan,
    sections: Sections<'a>,
    /// The job context: cancelled by an abort or when the job timeout fires.
    job_ctx: &'a CancellationToken,
    /// Set when the job timeout fired (rather than an abort).
    job_timed_out: &'a AtomicBool,
    job_timeout: Duration,
}

impl StageRun<'_> {
    fn timeout_outcome(&self) -> JobOutcome {
        JobOutcome::failed(
            FailureReason::JobExecutionTimeout,
            None,
            format!(
                "execution took longer than {} seconds",
                format_go_duration(self.job_timeout)
            ),
        )
    }

    fn aborted_outcome(&self) -> JobOutcome {
        match self.control.abort_reason() {
            Some(AbortReason::RunnerInterrupted) => JobOutcome::failed(
                FailureReason::RunnerInterrupted,
                None,
                "aborted: interrupted by the runner shutting down",
            ),
            _ => JobOutcome::failed(FailureReason::JobCanceled, None, "canceled"),
        }
    }

    /// The outcome of a job whose context ended: the job timeout or an abort.
    fn ctx_outcome(&self) -> JobOutcome {
        if self.job_timed_out.load(Ordering::SeqCst) {
            self.timeout_outcome()
        } else {
            self.aborted_outcome()
        }
    }

    fn prepare_timeout_outcome(&self) -> JobOutcome {
        JobOutcome::failed(
            FailureReason::JobExecutionTimeout,
            None,
            format!(
                "prepare timeout: exceeded timeout of {}",
                format_go_duration(self.plan.prepare_timeout)
            ),
        )
    }

    /// Prepares the executor, runs the stages, and cleans up whatever happened.
    async fn run(&self) -> JobOutcome {
        let (env, job, trace, plan, sections) =
            (self.env, self.job, self.trace, self.plan, &self.sections);
        for secret in plan.vars.masked_values() {
            trace.add_masked(&secret);
        }

        // prepare_timeout bounds preparing the executor and the prepare stage together (runner common/build.go
        // `Run`: the prepare context is made before the executor and ends after `prepare_script`).
        let prepare = StageDeadline::start(self.job_ctx, plan.prepare_timeout);

        // prepare_executor
        sections.start(
            "prepare_executor",
            &format!("Preparing the \"{}\" executor", env.executor.name()),
        );
        let description = env.executor.description();
        if !description.is_empty() {
            trace.write(format!("{description}\n").as_bytes());
        }
        let prepared = PreparedJob {
            job_id: job.id,
            project_dir: plan.dirs.project_dir.clone(),
            builds_dir: plan.dirs.builds_dir.clone(),
            tmp_dir: plan.dirs.tmp_dir.clone(),
            cache_dir: plan.cache_dir.clone(),
            process_mark: self
                .control
                .process_mark()
                .map(str::to_string)
                .unwrap_or_else(|| new_process_mark(job.id)),
            job: Arc::new(job.clone()),
            trace: trace.clone(),
            cancel: prepare.token.clone(),
            variables: plan.vars.clone(),
            concurrent_id: env.concurrent_id,
            concurrent_project_id: env.concurrent_project_id,
            system_id: env.identity.system_id.clone(),
            feature_flags: plan.settings.feature_flags.clone(),
        };
        // The executor watches `cancel` itself, so that what it made so far is released, never leaked.
        let session = env.executor.prepare(&prepared).await;
        sections.end("prepare_executor");
        if prepare.token.is_cancelled() {
            if let Ok(mut s) = session {
                s.cleanup().await;
            }
            if self.job_ctx.is_cancelled() {
                return self.ctx_outcome();
            }
            return self.prepare_timeout_outcome();
        }
        let mut session = match session {
            Ok(s) => s,
            Err(ExecutorError::Failed(reason, msg)) => {
                return JobOutcome::failed(reason, None, msg)
            }
            Err(source) => {
                return JobOutcome::from_error(&Error::Prepare {
                    executor: env.executor.name().to_string(),
                    source,
                })
            }
        };

        let outcome = self.run_stages(session.as_mut(), &prepare).await;

        prepare.stop();

        // cleanup_file_variables: a stage like the others (gitlab-runner `writeCleanupScript`), run even after an
        // abort so secrets never stay on disk; the runner itself opens none of the job's files.
        sections.start(
            "cleanup_file_variables",
            "Cleaning up project directory and file based variables",
        );
        let cleanup = CancellationToken::new();
        let timer = {
            let cleanup = cleanup.clone();
            tokio::spawn(async move {
                tokio::time::sleep(CLEANUP_TIMEOUT).await;
                cleanup.cancel();
            })
        };
        match run_script(
            session.as_mut(),
            "cleanup_file_variables",
            &self.cleanup_script(),
            trace,
            cleanup,
        )
        .await
        {
            StageResult::Ok => {}
            StageResult::ExitCode(c) => warn(
                trace,
                &format!(
                    "cleaning up {}: exit status {c}",
                    plan.dirs.tmp_dir.display()
                ),
            ),
            StageResult::Canceled => warn(
                trace,
                &format!(
                    "cleaning up {}: stopped after {}",
                    plan.dirs.tmp_dir.display(),
                    format_go_duration(CLEANUP_TIMEOUT)
                ),
            ),
            StageResult::System(e) => warn(
                trace,
                &format!("cleaning up {}: {e}", plan.dirs.tmp_dir.display()),
            ),
        }
        timer.abort();
        session.cleanup().await;
        sections.end("cleanup_file_variables");
        outcome
    }

    /// The `cleanup_file_variables` script (gitlab-runner `writeCleanupScript`): the job's environment without
    /// rewriting its file variables (`writeEnvExports`), git's cached credentials forgotten
    /// (`writeClearGitCredentials`), the git lock files and — with `clean_git_config` — the configs and hooks
    /// (`writeGitCleanup`), then the whole temporary dir with the file variables, `GITLAB_ENV` and the git
    /// template and external config in it.
    fn cleanup_script(&self) -> String {
        let plan = self.plan;
        let tmp = plan.dirs.tmp_dir.to_string_lossy();
        let mut w = ScriptWriter::new();
        w.env_exports(&plan.vars, &tmp);
        let submodules = matches!(
            plan.sources.submodules,
            Some(SubmoduleStrategy::Normal | SubmoduleStrategy::Recursive)
        );
        sources::write_cleanup(&mut w, &plan.sources, submodules);
        sources::write_rm_dir(&mut w, &tmp);
        plan.script(&w)
    }
}

/// How long the cleanup stage may take; it runs after the job's own time may be over.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(300);

/// A fresh value for `RUNWRIGHT_JOB_MARK`: the job id and a random part, unique across runners and restarts.
pub fn new_process_mark(job_id: i64) -> String {
    format!("{job_id}-{}", uuid_like())
}

fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// The result of one script stage.
enum StageResult {
    Ok,
    ExitCode(i32),
    Canceled,
    /// The executor failed (a system failure, whatever reason it gave).
    System(Error),
}

impl StageResult {
    /// The job's outcome when this stage ends it: a non-zero exit fails with `exit_reason`, a cancel with the
    /// job context's reason, an executor error as a system failure; `None` when the job goes on.
    fn failure(self, exit_reason: FailureReason, run: &StageRun<'_>) -> Option<JobOutcome> {
        match self {
            StageResult::Ok => None,
            StageResult::Canceled => Some(run.ctx_outcome()),
            StageResult::ExitCode(c) => {
                let exit_code = (exit_reason == FailureReason::ScriptFailure).then_some(c);
                Some(JobOutcome::failed(
                    exit_reason,
                    exit_code,
                    format!("exit status {c}"),
                ))
            }
            StageResult::System(e) => Some(JobOutcome::failed(
                FailureReason::RunnerSystemFailure,
                None,
                e.to_string(),
            )),
        }
    }
}

async fn run_script(
    session: &mut dyn ExecutorSession,
    stage: &str,
    script: &str,
    trace: &TraceBuffer,
    cancel: CancellationToken,
) -> StageResult {
    match session.run_stage(stage, script, trace, cancel).await {
        Ok(0) => StageResult::Ok,
        Ok(code) => StageResult::ExitCode(code),
        Err(ExecutorError::Canceled) => StageResult::Canceled,
        Err(e) => StageResult::System(e.into()),
    }
}

/// The stage loop (runner common/build.go `executeScript`): prepare_script, get_sources, the steps before the
/// script, the user script, after_script, the steps after it.
impl StageRun<'_> {
    async fn run_stages(
        &self,
        session: &mut dyn ExecutorSession,
        prepare: &StageDeadline,
    ) -> JobOutcome {
        if let Some(outcome) = self.prepare_script(session, prepare).await {
            return outcome;
        }

        let sources = SourcesRun { run: self };
        let failed_before = match sources.run(session).await {
            Err(Stop::Now(outcome)) => return outcome,
            Err(Stop::Failed(outcome)) => Some(outcome),
            // restore_cache, download_artifacts: pluggable.
            Ok(()) => {
                self.run_steps(session, StepPosition::BeforeScript, true)
                    .await
            }
        };
        if self.job_ctx.is_cancelled() {
            return self.ctx_outcome();
        }

        // runner `executeScript`: a failure before the user script skips it and after_script, but the caches
        // and artifacts of a failed job are still saved.
        let (state, mut outcome) = match failed_before {
            Some(outcome) => (ScriptState::Failed, outcome),
            None => match self.user_scripts(session).await {
                Ok(ended) => ended,
                Err(outcome) => return outcome,
            },
        };

        // archive_cache / upload_artifacts: pluggable; their errors only count when the script succeeded.
        let succeeded = state == ScriptState::Success;
        if let Some(step_outcome) = self
            .run_steps(session, StepPosition::AfterScript, succeeded)
            .await
        {
            if outcome.success {
                outcome = step_outcome;
            }
        }
        if self.job_ctx.is_cancelled() {
            return self.ctx_outcome();
        }
        outcome
    }

    /// The user script and after_script (runner common/build.go `executeUserScripts`): the state and outcome
    /// the uploads see; `Err` when the job context ended the job.
    async fn user_scripts(
        &self,
        session: &mut dyn ExecutorSession,
    ) -> Result<(ScriptState, JobOutcome), JobOutcome> {
        let (job, trace, plan) = (self.job, self.trace, self.plan);
        // RUNNER_SCRIPT_TIMEOUT / RUNNER_AFTER_SCRIPT_TIMEOUT, read as the user scripts start: a value the runner
        // cannot use is ignored with its warning.
        let (script_timeout, after_script_timeout, timeout_warnings) = script_timeouts(
            &plan.vars,
            plan.deadline
                .saturating_duration_since(tokio::time::Instant::now()),
        );
        for w in &timeout_warnings {
            warn(trace, w);
        }

        let (mut state, mut outcome) = self.user_script(session, script_timeout).await?;

        // after_script: only when defined; its own timeout; never after an abort or the job timeout.
        if self.job_ctx.is_cancelled() {
            return Err(self.ctx_outcome());
        }
        if let Some(after) = job.steps.iter().find(|s| s.name == "after_script") {
            if !after.script.is_empty() {
                self.after_script(
                    session,
                    &after.script,
                    after_script_timeout,
                    &mut state,
                    &mut outcome,
                )
                .await?;
            }
        }
        Ok((state, outcome))
    }

    /// prepare_script: GitLab's prints where the job runs. An executor that knows the answer saves a shell
    /// start. `Some` when the job ends here.
    async fn prepare_script(
        &self,
        session: &mut dyn ExecutorSession,
        prepare: &StageDeadline,
    ) -> Option<JobOutcome> {
        let (trace, plan, sections) = (self.trace, self.plan, &self.sections);
        sections.start("prepare_script", "Preparing environment");
        let r = match session
            .host_name()
            .or_else(|| self.env.executor.host_name())
        {
            Some(host) => {
                trace.write(format!("Running on {host}...\n").as_bytes());
                StageResult::Ok
            }
            None => {
                let mut w = ScriptWriter::new();
                w.line("echo \"Running on $(hostname)...\"");
                run_script(
                    session,
                    "prepare_script",
                    &w.finish_with_eval(
                        &plan.shell,
                        false,
                        plan.settings.feature_flags.is_on("FF_USE_LEGACY_BASH_EVAL"),
                    ),
                    trace,
                    prepare.token.clone(),
                )
                .await
            }
        };
        sections.end("prepare_script");
        prepare.stop();
        if matches!(r, StageResult::Canceled) && !self.job_ctx.is_cancelled() && prepare.timed_out()
        {
            warn_timeout_exceeded(trace, "prepare_script");
            return Some(self.prepare_timeout_outcome());
        }
        if matches!(r, StageResult::Canceled)
            && self.job_ctx.is_cancelled()
            && self.job_timed_out.load(Ordering::SeqCst)
        {
            warn_timeout_exceeded(trace, "prepare_script");
        }
        // A failing prepare stage is the runner's problem, not the script's.
        r.failure(FailureReason::RunnerSystemFailure, self)
    }

    /// A user stage's script: the job's variables, into the project dir.
    fn user_writer(&self, vars: &Variables) -> ScriptWriter {
        let mut w = ScriptWriter::new();
        w.exports(vars, &self.plan.dirs.tmp_dir.to_string_lossy());
        w.cd(&self.plan.dirs.project_dir.to_string_lossy());
        w
    }

    /// step_script and other steps (release, …), stopping at the first failing one, under
    /// `RUNNER_SCRIPT_TIMEOUT` and GitLab's graceful cancel (runner common/build.go `executeUserScripts`). The
    /// state and outcome after_script sees; `Err` when the job context ended it (abort, job timeout).
    async fn user_script(
        &self,
        session: &mut dyn ExecutorSession,
        script_timeout: Option<Duration>,
    ) -> Result<(ScriptState, JobOutcome), JobOutcome> {
        let (env, job, trace, plan, sections) =
            (self.env, self.job, self.trace, self.plan, &self.sections);
        let script_ctx = self.job_ctx.child_token();
        let graceful = self.control.graceful_token().clone();
        let script_timed_out = Arc::new(AtomicBool::new(false));
        let watcher = {
            let script_ctx = script_ctx.clone();
            let flag = script_timed_out.clone();
            let timeout = script_timeout;
            tokio::spawn(async move {
                let timer = async {
                    match timeout {
                        Some(t) => tokio::time::sleep(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = graceful.cancelled() => script_ctx.cancel(),
                    _ = timer => { flag.store(true, Ordering::SeqCst); script_ctx.cancel() }
                    _ = script_ctx.cancelled() => {}
                }
            })
        };
        let mut state = ScriptState::Success;
        let mut outcome = JobOutcome::succeeded();
        for step in job.steps.iter().filter(|s| s.name != "after_script") {
            let stage = format!("step_{}", step.name.to_lowercase());
            if !crate::script::is_valid_env_name(&step.name) {
                outcome = JobOutcome::from_error(&Error::InvalidStepName(step.name.clone()));
                state = ScriptState::Failed;
                break;
            }
            if self.control.is_canceling() {
                state = ScriptState::Canceled;
                outcome = JobOutcome::failed(FailureReason::JobCanceled, None, "canceled");
                break;
            }
            let title = format!("Executing \"{stage}\" stage of the job script");
            sections.start(&stage, &title);
            let mut w = self.user_writer(&plan.vars);
            if step.name == "script" {
                w.config_snippet(env.runner.pre_build_script.as_deref());
            }
            w.user_commands(&step.script);
            if step.name == "script" {
                w.config_snippet(env.runner.post_build_script.as_deref());
            }
            let r = run_script(session, &stage, &plan.script(&w), trace, script_ctx.clone()).await;
            sections.end(&stage);
            match r {
                StageResult::Ok => continue,
                StageResult::ExitCode(c) => {
                    state = ScriptState::Failed;
                    outcome = JobOutcome::failed(
                        FailureReason::ScriptFailure,
                        Some(c),
                        format!("exit status {c}"),
                    );
                }
                StageResult::Canceled => {
                    if self.job_ctx.is_cancelled() {
                        watcher.abort();
                        return Err(self.ctx_outcome());
                    }
                    if script_timed_out.load(Ordering::SeqCst) {
                        state = ScriptState::TimedOut;
                        outcome = JobOutcome::failed(
                            FailureReason::JobExecutionTimeout,
                            None,
                            format!(
                                "execution took longer than {} seconds",
                                format_go_duration(script_timeout.unwrap_or_default())
                            ),
                        );
                    } else {
                        state = ScriptState::Canceled;
                        outcome = JobOutcome::failed(FailureReason::JobCanceled, None, "canceled");
                    }
                }
                StageResult::System(e) => {
                    state = ScriptState::Failed;
                    outcome =
                        JobOutcome::failed(FailureReason::RunnerSystemFailure, None, e.to_string());
                }
            }
            break;
        }
        watcher.abort();
        Ok((state, outcome))
    }

    /// after_script under its own timeout, with `CI_JOB_STATUS` from `state`; its failure fails a job that
    /// succeeded unless errors are ignored. `Err` when the job context ended it.
    async fn after_script(
        &self,
        session: &mut dyn ExecutorSession,
        script: &[String],
        timeout: Duration,
        state: &mut ScriptState,
        outcome: &mut JobOutcome,
    ) -> Result<(), JobOutcome> {
        let (trace, plan, sections) = (self.trace, self.plan, &self.sections);
        sections.start("after_script", "Running after_script");
        let mut vars = plan.vars.clone();
        vars.set("CI_JOB_STATUS", state.as_str());
        let mut w = self.user_writer(&vars);
        w.notice("Running after script...");
        w.user_commands(script);
        let after_ctx = self.job_ctx.child_token();
        let t = {
            let c = after_ctx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                c.cancel();
            })
        };
        let r = run_script(session, "after_script", &plan.script(&w), trace, after_ctx).await;
        t.abort();
        sections.end("after_script");
        let ignore_errors = plan.after_script_ignore_errors;
        match r {
            StageResult::Ok => {}
            StageResult::Canceled if self.job_ctx.is_cancelled() => return Err(self.ctx_outcome()),
            StageResult::Canceled => warn(
                trace,
                &format!(
                    "after_script timed out after {}",
                    format_go_duration(timeout)
                ),
            ),
            StageResult::ExitCode(c) => {
                if ignore_errors || !outcome.success {
                    warn(
                        trace,
                        &format!(
                            "after_script failed, but job will continue unaffected: exit status {c}"
                        ),
                    );
                } else {
                    *state = ScriptState::Failed;
                    *outcome = JobOutcome::failed(
                        FailureReason::ScriptFailure,
                        Some(c),
                        format!("exit status {c}"),
                    );
                }
            }
            StageResult::System(e) => warn(trace, &format!("after_script: {e}")),
        }
        Ok(())
    }

    /// The steps at `position` (caches, artifacts), in order, each a stage whose script the step writes;
    /// `Some` with the first one's failure (runner common/build.go `executeScript`: `restore_cache` and
    /// `download_artifacts` with their attempts, `archive_cache*` and `upload_artifacts_on_*`).
    async fn run_steps(
        &self,
        session: &mut dyn ExecutorSession,
        position: StepPosition,
        succeeded: bool,
    ) -> Option<JobOutcome> {
        let (env, plan, trace) = (self.env, self.plan, self.trace);
        let helper = env.executor.helper_command();
        for step in env.steps.iter().filter(|s| s.position() == position) {
            let ctx = StepContext {
                job: self.job,
                runner: env.runner,
                project_dir: &plan.dirs.project_dir,
                tmp_dir: &plan.dirs.tmp_dir,
                cache_dir: &plan.cache_dir,
                empty_strategy: plan.empty_strategy,
                variables: &plan.vars,
                feature_flags: &plan.settings.feature_flags,
                succeeded,
                artifact_download_attempts: plan.artifact_download_attempts,
                restore_cache_attempts: plan.restore_cache_attempts,
                time_left: plan
                    .deadline
                    .saturating_duration_since(tokio::time::Instant::now()),
                helper: &helper,
            };
            // runner shells/abstract.go: every one of these scripts starts with `writeExports` and
            // `writeCdBuildDir`.
            let mut w = self.user_writer(&plan.vars);
            let stage = match step.write(&ctx, &mut w).await {
                Ok(Some(stage)) => stage,
                Ok(None) => continue,
                Err(e) => return Some(JobOutcome::failed(e.reason, e.exit_code, e.message)),
            };
            let script = plan.script(&w);
            let mut backoff = Backoff::new(plan.stage_backoff);
            let mut result = StageResult::Ok;
            for attempt in 0..step.attempts(&ctx).max(1) {
                if attempt > 0 {
                    warn(trace, "Retrying...");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                        _ = self.job_ctx.cancelled() => {}
                    }
                    if self.job_ctx.is_cancelled() {
                        result = StageResult::Canceled;
                        break;
                    }
                }
                self.sections.start(&stage.name, &stage.title);
                let from = trace.len();
                result =
                    run_script(session, &stage.name, &script, trace, self.job_ctx.clone()).await;
                self.sections.end(&stage.name);
                if step.observes_output() {
                    let output = trace.read(from, usize::MAX);
                    step.observe(&ctx, &String::from_utf8_lossy(&output));
                }
                if matches!(result, StageResult::Ok | StageResult::Canceled) {
                    break;
                }
            }
            if matches!(result, StageResult::Canceled) {
                return Some(self.ctx_outcome());
            }
            if !step.fails_job() {
                match result {
                    StageResult::Ok | StageResult::Canceled => {}
                    StageResult::ExitCode(c) => {
                        warn(trace, &format!("{}: exit status {c}", stage.name))
                    }
                    StageResult::System(e) => warn(trace, &format!("{}: {e}", stage.name)),
                }
                continue;
            }
            if let Some(outcome) = result.failure(FailureReason::ScriptFailure, self) {
                return Some(outcome);
            }
        }
        None
    }
}

/// A stage timeout under the job context (`prepare_timeout`, `get_sources_timeout`): `token` fires when the
/// job's context does or when the timeout passes first.
struct StageDeadline {
    token: CancellationToken,
    fired: Arc<AtomicBool>,
    timer: tokio::task::JoinHandle<()>,
}

impl StageDeadline {
    fn start(parent: &CancellationToken, timeout: Duration) -> Self {
        let token = parent.child_token();
        let fired = Arc::new(AtomicBool::new(false));
        let timer = {
            let token = token.clone();
            let fired = fired.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => {
                        fired.store(true, Ordering::SeqCst);
                        token.cancel();
                    }
                    _ = token.cancelled() => {}
                }
            })
        };
        Self {
            token,
            fired,
            timer,
        }
    }

    /// The timeout passed (rather than the job being stopped).
    fn timed_out(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.timer.abort();
    }
}

impl Drop for StageDeadline {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// runner common/build.go `warnTimeoutExceeded`, after a stage its deadline stopped.
fn warn_timeout_exceeded(trace: &TraceBuffer, stage: &str) {
    warn(
        trace,
        &format!(
            "{stage} could not run to completion because the timeout was exceeded. For more control over job and \
             script timeouts see: https://docs.gitlab.com/ci/runners/configure_runners/#set-script-and-after_script-timeouts"
        ),
    );
}

/// The waits between attempts of a retried stage: `min`, doubled each time, at most `max` (runner
/// helpers/retry/retry.go with jpillora/backoff, factor 2, no jitter); capped at 50 ms under
/// `RUNWRIGHT_FAST_RETRIES=1`.
struct Backoff {
    next: Duration,
    max: Duration,
    fast: bool,
}

impl Backoff {
    fn new((min, max): (Duration, Duration)) -> Self {
        Self {
            next: min,
            max,
            fast: runwright_static::env_vars::fast_retries(),
        }
    }

    fn next_wait(&mut self) -> Duration {
        let wait = self.next.min(self.max);
        self.next = self.next.saturating_mul(2);
        if self.fast {
            wait.min(runwright_static::env_vars::FAST_RETRY_CAP)
        } else {
            wait
        }
    }
}

/// How the stages before the user script stop the job (runner common/build.go `executePrepareScripts`).
enum Stop {
    /// Nothing more runs: the job context ended, or a stage timeout passed.
    Now(JobOutcome),
    /// The job has failed: the user script is skipped, the failed job's caches and artifacts still saved.
    Failed(JobOutcome),
}

/// The `get_sources` stage with its attempts, the `clear_worktree` stage before the second one, the back-off
/// between them and `get_sources_timeout` over all of it (runner common/build.go `executePrepareScripts`,
/// `attemptExecuteStage`).
struct SourcesRun<'a> {
    run: &'a StageRun<'a>,
}

impl SourcesRun<'_> {
    /// The get_sources script, or the error the runner fails the stage with before running anything.
    fn script(&self) -> Result<String, Error> {
        let (env, job, plan) = (self.run.env, self.run.job, self.run.plan);
        let mut w = ScriptWriter::new();
        w.exports(&plan.vars, &plan.dirs.tmp_dir.to_string_lossy());
        sources::write_git_env(&mut w);
        let git = plan.sources.strategy != GitStrategy::None
            && plan.sources.strategy != GitStrategy::Empty;
        if git {
            w.config_snippet(env.runner.pre_get_sources_script.as_deref());
            w.user_commands(&job_hook(job, "pre_get_sources_script"));
        }
        w.cd(&plan.dirs.builds_dir.to_string_lossy());
        let settings = &plan.sources;
        sources::write_sources(&mut w, job, settings)?;
        if git {
            w.user_commands(&job_hook(job, "post_get_sources_script"));
            w.config_snippet(env.runner.post_get_sources_script.as_deref());
        }
        sources::write_clear_credentials(&mut w, settings);
        Ok(plan.script(&w))
    }

    async fn stage(
        &self,
        session: &mut dyn ExecutorSession,
        name: &str,
        title: &str,
        script: &str,
        ctx: &CancellationToken,
    ) -> StageResult {
        self.run.sections.start(name, title);
        let r = run_script(session, name, script, self.run.trace, ctx.clone()).await;
        self.run.sections.end(name);
        r
    }

    async fn run(&self, session: &mut dyn ExecutorSession) -> Result<(), Stop> {
        let (plan, trace) = (self.run.plan, self.run.trace);
        let deadline = StageDeadline::start(self.run.job_ctx, plan.get_sources_timeout);
        let script = self.script();
        let clear = {
            let mut w = ScriptWriter::new();
            sources::write_clear_worktree(&mut w, &plan.dirs.project_dir.to_string_lossy());
            plan.script(&w)
        };
        let mut backoff = Backoff::new(plan.stage_backoff);
        let mut result = StageResult::Ok;
        let mut stopped_in = "get_sources";
        for attempt in 0..plan.get_sources_attempts {
            if attempt > 0 {
                warn(trace, "Retrying...");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                    _ = deadline.token.cancelled() => {}
                }
                if deadline.token.is_cancelled() {
                    result = StageResult::Canceled;
                    break;
                }
            }
            // Before the second attempt only: a repository `git clean` cannot repair loses its files.
            if attempt == 1 {
                result = self
                    .stage(
                        session,
                        "clear_worktree",
                        "Deleting all tracked and untracked files due to source fetch failure",
                        &clear,
                        &deadline.token,
                    )
                    .await;
                match result {
                    StageResult::Ok => {}
                    StageResult::Canceled => {
                        stopped_in = "clear_worktree";
                        break;
                    }
                    _ => continue,
                }
            }
            result = match &script {
                Ok(script) => {
                    self.stage(
                        session,
                        "get_sources",
                        "Getting source from Git repository",
                        script,
                        &deadline.token,
                    )
                    .await
                }
                Err(e) => StageResult::System(e.clone()),
            };
            if matches!(result, StageResult::Ok | StageResult::Canceled) {
                break;
            }
        }
        deadline.stop();
        if matches!(result, StageResult::Canceled) {
            let job_timed_out = self.run.job_timed_out.load(Ordering::SeqCst);
            if self.run.job_ctx.is_cancelled() {
                if job_timed_out {
                    warn_timeout_exceeded(trace, stopped_in);
                }
                return Err(Stop::Now(self.run.ctx_outcome()));
            }
            if deadline.timed_out() {
                warn_timeout_exceeded(trace, stopped_in);
                return Err(Stop::Now(JobOutcome::failed(
                    FailureReason::JobExecutionTimeout,
                    None,
                    format!(
                        "get sources timeout: exceeded timeout of {}",
                        format_go_duration(plan.get_sources_timeout)
                    ),
                )));
            }
        }
        match result.failure(FailureReason::ScriptFailure, self.run) {
            Some(outcome) => Err(Stop::Failed(outcome)),
            None => Ok(()),
        }
    }
}

fn job_hook(job: &JobResponse, name: &str) -> Vec<String> {
    job.hooks
        .iter()
        .filter(|h| h.name == name)
        .flat_map(|h| h.script.iter().cloned())
        .collect()
}

#[cfg(test)]
mod stage_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{Executor, ExecutorSession, PreparedJob};
    use async_trait::async_trait;
    use runwright_api::types::FeaturesInfo;
    use runwright_trace::TraceOptions;

    /// An executor whose preparation takes `prepare_for` (or until canceled), and whose stages print their
    /// name and succeed.
    struct SlowExecutor {
        prepare_for: Duration,
    }

    struct Session;

    #[async_trait]
    impl Executor for SlowExecutor {
        fn name(&self) -> &str {
            "slow"
        }
        fn shell(&self) -> &str {
            "sh"
        }
        fn features(&self, _: &mut FeaturesInfo) {}
        fn default_builds_dir(&self) -> PathBuf {
            PathBuf::from("/nonexistent/builds")
        }
        fn builds_dir_shared(&self) -> bool {
            false
        }
        fn description(&self) -> String {
            String::new()
        }
        fn host_name(&self) -> Option<String> {
            Some("slow-host".into())
        }
        async fn prepare(
            &self,
            job: &PreparedJob,
        ) -> Result<Box<dyn ExecutorSession>, ExecutorError> {
            tokio::select! {
                _ = tokio::time::sleep(self.prepare_for) => Ok(Box::new(Session)),
                _ = job.cancel.cancelled() => Err(ExecutorError::Canceled),
            }
        }
    }

    #[async_trait]
    impl ExecutorSession for Session {
        async fn run_stage(
            &mut self,
            stage: &str,
            _script: &str,
            trace: &TraceBuffer,
            _cancel: CancellationToken,
        ) -> Result<i32, ExecutorError> {
            trace.write(format!("ran {stage}\n").as_bytes());
            Ok(0)
        }
        async fn cleanup(&mut self) {}
    }

    async fn run(runner: &RunnerConfig, prepare_for: Duration) -> (JobOutcome, String) {
        let identity = crate::testing::identity();
        let exec = SlowExecutor { prepare_for };
        let env = JobEnv {
            runner,
            identity: &identity,
            executor: &exec,
            working_dir: PathBuf::from("/nonexistent"),
            concurrent_id: 0,
            concurrent_project_id: 0,
            steps: Vec::new(),
        };
        let mut job = JobResponse {
            id: 1,
            ..Default::default()
        };
        job.runner_info.timeout = 3600;
        job.variables.push(runwright_api::types::JobVariable {
            key: "GIT_STRATEGY".into(),
            value: "none".into(),
            ..Default::default()
        });
        let trace = TraceBuffer::new(TraceOptions::default());
        let outcome = run_job(&env, &job, &trace, &JobControl::new()).await;
        let text = String::from_utf8_lossy(&trace.read(0, usize::MAX)).into_owned();
        (outcome, text)
    }

    #[test]
    fn stage_retries_back_off_exponentially_up_to_the_maximum() {
        let mut b = Backoff {
            next: Duration::from_secs(5),
            max: Duration::from_secs(300),
            fast: false,
        };
        let waits: Vec<u64> = (0..8).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        let mut fast = Backoff {
            fast: true,
            ..Backoff::new((Duration::from_secs(5), Duration::from_secs(300)))
        };
        assert_eq!(fast.next_wait(), runwright_static::env_vars::FAST_RETRY_CAP);
    }

    #[tokio::test(start_paused = true)]
    async fn prepare_timeout_ends_a_slow_executor_preparation_as_a_timeout() {
        let runner = RunnerConfig {
            prepare_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        let (outcome, text) = run(&runner, Duration::from_secs(600)).await;
        assert!(!outcome.success, "{text}");
        assert_eq!(
            outcome.failure_reason,
            Some(FailureReason::JobExecutionTimeout)
        );
        assert_eq!(outcome.message, "prepare timeout: exceeded timeout of 30s");
        assert!(
            text.contains("ERROR: Job failed: prepare timeout: exceeded timeout of 30s"),
            "{text}"
        );

        // Longer than the job, or zero: the job timeout (1 h here) bounds preparing instead.
        for t in [Duration::from_secs(7200), Duration::ZERO] {
            let runner = RunnerConfig {
                prepare_timeout: Some(t),
                ..Default::default()
            };
            let (outcome, text) = run(&runner, Duration::from_secs(600)).await;
            assert!(outcome.success, "{t:?}: {text}");
        }
        // Preparation within the timeout: the job runs.
        let (outcome, text) = run(&runner, Duration::from_secs(10)).await;
        assert!(outcome.success, "{text}");
    }
}
