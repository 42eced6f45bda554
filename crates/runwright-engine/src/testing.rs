//! A recording fake executor and fake transfer steps, to test the stage loop without processes (as youki tests
//! with its recording `Syscall` fake). Every stage the engine asks the executor to run is recorded with its
//! script and how it ended, in one log with the steps and the executor's prepare and cleanup, and answers as
//! the test scripted it. Durations are measured on tokio's clock: under paused time (`start_paused = true`) a
//! stage that hangs until its timeout takes no real time, and the recorded duration is the timeout itself.
//!
//! Built for this crate's tests, and for other crates' with the `testing` feature.

use crate::executor::{Executor, ExecutorError, ExecutorSession, PreparedJob};
use crate::script::ScriptWriter;
use crate::steps::{JobStep, StepContext, StepError, StepPosition, StepStage};
use async_trait::async_trait;
use runwright_api::failure_reason::FailureReason;
use runwright_api::types::FeaturesInfo;
use runwright_trace::TraceBuffer;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a fake stage does when the engine runs it (and what the fake executor's `prepare` does).
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// Exits at once with this code (`prepare`: succeeds).
    Exit(i32),
    /// Runs this long, then exits with the code, unless its cancellation comes first.
    Run(Duration, i32),
    /// Never ends by itself: only its cancellation (a timeout, a cancel, an abort) stops it.
    Hang,
    /// The executor fails: `ExecutorError::System`.
    System(String),
    /// The executor fails with a reason of its own: `ExecutorError::Failed`.
    Failed(FailureReason, String),
}

/// How a recorded stage ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    Exited(i32),
    /// Its cancellation fired after it had run this long.
    Canceled(Duration),
    /// The executor failed (`System` or `Failed`) with this message.
    Error(String),
}

/// One stage the engine ran.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRecord {
    pub name: String,
    pub script: String,
    /// When it started, from the fake's creation.
    pub started: Duration,
    pub ended: Ended,
}

/// One transfer step whose stage the engine had written (the stage itself is a [`StageRecord`] of the same
/// name when it ran).
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The section (and stage) it wrote.
    pub name: String,
    /// `StepContext::succeeded`: the script's result as the step saw it.
    pub succeeded: bool,
    /// `StepContext::time_left`.
    pub time_left: Duration,
    /// When the script was written.
    pub written: Duration,
    /// The helper command the step was given (`Executor::helper_command`).
    pub helper: String,
    /// What writing it gave the engine.
    pub result: Result<(), StepError>,
}

/// Everything the engine did through the fakes, in order.
#[derive(Debug, Clone)]
pub enum Event {
    /// `Executor::prepare`, with whether it gave a session.
    Prepare {
        ok: bool,
    },
    Stage(StageRecord),
    /// A step wrote its stage's script.
    Step(StepRecord),
    /// `ExecutorSession::cleanup`.
    Cleanup,
}

impl Event {
    /// `prepare`, the stage's or the step's name, `cleanup`.
    pub fn name(&self) -> &str {
        match self {
            Event::Prepare { .. } => "prepare",
            Event::Stage(s) => &s.name,
            Event::Step(s) => &s.name,
            Event::Cleanup => "cleanup",
        }
    }
}

/// The log the fake executor and its fake steps share.
#[derive(Debug, Clone)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    start: Instant,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            events: Arc::default(),
            start: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        // A test that panicked while holding the lock has failed already; its events are still worth showing.
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, event: Event) {
        self.lock().push(event);
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    /// The names of everything that ran — prepare, each stage, cleanup — in order (see [`Event::name`]); a
    /// step counts as the stage it wrote.
    pub fn names(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|e| !matches!(e, Event::Step(_)))
            .map(|e| e.name().to_string())
            .collect()
    }

    /// Every run of the stage `name`.
    pub fn stages(&self, name: &str) -> Vec<StageRecord> {
        self.lock()
            .iter()
            .filter_map(|e| match e {
                Event::Stage(s) if s.name == name => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// The one run of the stage `name`; panics (failing the test) when it ran not exactly once.
    pub fn stage(&self, name: &str) -> StageRecord {
        let mut runs = self.stages(name);
        assert_eq!(
            runs.len(),
            1,
            "{name} ran {} times: {:?}",
            runs.len(),
            self.names()
        );
        runs.remove(0)
    }

    /// Every step that wrote its stage, in order.
    pub fn steps(&self) -> Vec<StepRecord> {
        self.lock()
            .iter()
            .filter_map(|e| match e {
                Event::Step(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Waits for `act` as a stage would, or for `cancel`.
async fn perform(act: &Act, cancel: &CancellationToken, started: Instant) -> Ended {
    let outcome = async {
        match act {
            Act::Exit(code) => Ended::Exited(*code),
            Act::Run(d, code) => {
                tokio::time::sleep(*d).await;
                Ended::Exited(*code)
            }
            Act::Hang => std::future::pending().await,
            Act::System(e) | Act::Failed(_, e) => Ended::Error(e.clone()),
        }
    };
    tokio::select! {
        // A stage whose token fired before it started is stopped at once, as a real one would be.
        biased;
        _ = cancel.cancelled() => Ended::Canceled(started.elapsed()),
        ended = outcome => ended,
    }
}

/// An executor whose stages run nothing: each answers as scripted (by default: exit 0) and is recorded.
pub struct FakeExecutor {
    recorder: Recorder,
    prepare: Act,
    acts: Arc<Mutex<HashMap<String, VecDeque<Act>>>>,
    host_name: Option<String>,
    builds_dir: PathBuf,
}

impl Default for FakeExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeExecutor {
    pub fn new() -> Self {
        Self {
            recorder: Recorder::new(),
            prepare: Act::Exit(0),
            acts: Arc::default(),
            host_name: None,
            builds_dir: PathBuf::from("/nonexistent/runwright-fake/builds"),
        }
    }

    /// The log this executor (and the steps made from [`FakeExecutor::step`]) records into.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// What `prepare` does: `Exit` succeeds, `Run` succeeds after a while, `Hang` waits for its cancellation,
    /// `System`/`Failed` fail.
    pub fn prepare(mut self, act: Act) -> Self {
        self.prepare = act;
        self
    }

    /// What the stage `name` does on its successive runs (attempts); once these are used up it exits 0.
    pub fn on(self, name: &str, acts: impl IntoIterator<Item = Act>) -> Self {
        if let Ok(mut map) = self.acts.lock() {
            map.entry(name.to_string()).or_default().extend(acts);
        }
        self
    }

    /// Knows the host name, so the engine prints it instead of running a `prepare_script` stage.
    pub fn with_host_name(mut self, name: &str) -> Self {
        self.host_name = Some(name.to_string());
        self
    }

    /// A transfer step at `position` named `name` that records into this executor's log; its stage (of the same
    /// name) does what `act` says.
    pub fn step(&self, position: StepPosition, name: &str, act: StepAct) -> Arc<dyn JobStep> {
        let stage = match &act {
            StepAct::Exit(code) => Some(Act::Exit(*code)),
            StepAct::Hang => Some(Act::Hang),
            StepAct::Succeed | StepAct::Refuse(_) => None,
        };
        if let (Some(stage), Ok(mut map)) = (stage, self.acts.lock()) {
            map.entry(name.to_string()).or_default().push_back(stage);
        }
        Arc::new(FakeStep {
            recorder: self.recorder.clone(),
            position,
            name: name.to_string(),
            act,
        })
    }
}

#[async_trait]
impl Executor for FakeExecutor {
    fn name(&self) -> &str {
        "fake"
    }
    fn shell(&self) -> &str {
        "bash"
    }
    fn features(&self, _: &mut FeaturesInfo) {}
    fn default_builds_dir(&self) -> PathBuf {
        self.builds_dir.clone()
    }
    fn builds_dir_shared(&self) -> bool {
        false
    }
    fn description(&self) -> String {
        "Using the fake executor...".into()
    }
    fn helper_command(&self) -> String {
        FAKE_HELPER.into()
    }
    fn host_name(&self) -> Option<String> {
        self.host_name.clone()
    }
    async fn prepare(&self, job: &PreparedJob) -> Result<Box<dyn ExecutorSession>, ExecutorError> {
        let result = match perform(&self.prepare, &job.cancel, Instant::now()).await {
            Ended::Exited(_) => Ok(Box::new(FakeSession {
                recorder: self.recorder.clone(),
                acts: self.acts.clone(),
            }) as Box<dyn ExecutorSession>),
            Ended::Canceled(_) => Err(ExecutorError::Canceled),
            Ended::Error(e) => Err(match &self.prepare {
                Act::Failed(reason, _) => ExecutorError::Failed(*reason, e),
                _ => ExecutorError::System(e),
            }),
        };
        self.recorder.push(Event::Prepare { ok: result.is_ok() });
        result
    }
}

struct FakeSession {
    recorder: Recorder,
    acts: Arc<Mutex<HashMap<String, VecDeque<Act>>>>,
}

#[async_trait]
impl ExecutorSession for FakeSession {
    async fn run_stage(
        &mut self,
        stage: &str,
        script: &str,
        _trace: &TraceBuffer,
        cancel: CancellationToken,
    ) -> Result<i32, ExecutorError> {
        let act = self
            .acts
            .lock()
            .ok()
            .and_then(|mut map| map.get_mut(stage).and_then(VecDeque::pop_front))
            .unwrap_or(Act::Exit(0));
        let started = self.recorder.elapsed();
        let ended = perform(&act, &cancel, Instant::now()).await;
        self.recorder.push(Event::Stage(StageRecord {
            name: stage.to_string(),
            script: script.to_string(),
            started,
            ended: ended.clone(),
        }));
        match ended {
            Ended::Exited(code) => Ok(code),
            Ended::Canceled(_) => Err(ExecutorError::Canceled),
            Ended::Error(e) => Err(match act {
                Act::Failed(reason, _) => ExecutorError::Failed(reason, e),
                _ => ExecutorError::System(e),
            }),
        }
    }

    async fn cleanup(&mut self) {
        self.recorder.push(Event::Cleanup);
    }
}

/// The helper command of the fake executor.
pub const FAKE_HELPER: &str = "/fake/bin/runwright-helper";

/// What a fake transfer step does.
#[derive(Debug, Clone)]
pub enum StepAct {
    /// Its stage exits 0.
    Succeed,
    /// Its stage exits with this code (a helper that failed exits 1).
    Exit(i32),
    /// Its stage waits for its cancellation (a transfer stopped half-way).
    Hang,
    /// Its script cannot be written: the job fails with the error, no stage runs.
    Refuse(StepError),
}

struct FakeStep {
    recorder: Recorder,
    position: StepPosition,
    name: String,
    act: StepAct,
}

#[async_trait]
impl JobStep for FakeStep {
    fn position(&self) -> StepPosition {
        self.position
    }

    async fn write(
        &self,
        ctx: &StepContext<'_>,
        w: &mut ScriptWriter,
    ) -> Result<Option<StepStage>, StepError> {
        let result = match &self.act {
            StepAct::Refuse(e) => Err(e.clone()),
            _ => Ok(()),
        };
        self.recorder.push(Event::Step(StepRecord {
            name: self.name.clone(),
            succeeded: ctx.succeeded,
            time_left: ctx.time_left,
            written: self.recorder.elapsed(),
            helper: ctx.helper.to_string(),
            result: result.clone(),
        }));
        result?;
        w.command(&[ctx.helper, "fake-step", &self.name]);
        Ok(Some(StepStage {
            name: self.name.clone(),
            title: format!("Fake {}", self.name),
        }))
    }

    /// As GitLab's: `restore_cache` and `download_artifacts` are tried per their variables.
    fn attempts(&self, ctx: &StepContext<'_>) -> u32 {
        match self.name.as_str() {
            "restore_cache" => ctx.restore_cache_attempts,
            "download_artifacts" => ctx.artifact_download_attempts,
            _ => 1,
        }
    }

    /// As GitLab's: cache stages only warn.
    fn fails_job(&self) -> bool {
        !self.name.contains("cache")
    }
}

/// The runner a test's job runs on.
pub fn identity() -> crate::job::RunnerIdentity {
    crate::job::RunnerIdentity {
        name: "runwright".into(),
        version: "0".into(),
        revision: "0".into(),
        platform: "linux".into(),
        architecture: "amd64".into(),
        system_id: "s_0".into(),
    }
}
