//! The schedule loop of a run: starts (or skips) each job as the scheduler allows, hands it to the coordinator
//! and follows its trace, records how it ended, and ends the run on SIGINT/SIGTERM; then the summary (table,
//! `summary.json`, exit code). What a person sees goes through a [`Reporter`].

use crate::checkout::Checkout;
use crate::files::{self, Outcome};
use crate::report::{Ended, JobLine, Reporter};
use crate::schedule::{self, Scheduler, Status};
use crate::setup::SetUp;
use crate::{
    cancel_at_coordinator, follow, jobspec, live, notes, output, state, wants_docker, Docker,
    ExecOptions, Interrupt, FINAL_REPORTS, INTERRUPT_GRACE,
};
use anyhow::Context;
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What a job's output task hands back: its index, when it started, its final record.
type Joined = (
    usize,
    Instant,
    anyhow::Result<runwright_coordinator::JobRecord>,
);

/// The loop's state.
pub(crate) struct Schedule<'s, 'a> {
    args: &'s ExecOptions,
    co: &'s Checkout,
    job_ref: &'s jobspec::JobRef,
    concurrency: usize,
    run: &'s SetUp,
    reporter: &'s dyn Reporter,
    pub sched: Scheduler<'a>,
    pub outcomes: Vec<Outcome>,
    /// Job ids by pipeline and name: artifacts come from the job's own pipeline.
    ids: HashMap<(usize, String), i64>,
    /// When each trigger job created its child pipeline (a `strategy: depend` one lasts until the child ends).
    triggered: HashMap<usize, Instant>,
    running: tokio::task::JoinSet<Joined>,
}

impl<'s, 'a> Schedule<'s, 'a> {
    pub fn new(
        args: &'s ExecOptions,
        co: &'s Checkout,
        job_ref: &'s jobspec::JobRef,
        concurrency: usize,
        run: &'s SetUp,
        reporter: &'s dyn Reporter,
        sched: Scheduler<'a>,
    ) -> Self {
        Schedule {
            args,
            co,
            job_ref,
            concurrency,
            run,
            reporter,
            outcomes: vec![Outcome::default(); sched.jobs.len()],
            sched,
            ids: HashMap::new(),
            triggered: HashMap::new(),
            running: tokio::task::JoinSet::new(),
        }
    }

    fn line(&self, i: usize) -> JobLine<'_> {
        let s = &self.sched.jobs[i];
        JobLine {
            index: i,
            name: &s.display,
            stage: &s.job.stage,
        }
    }

    /// Runs every job that may run, until none is left or the run is interrupted.
    pub async fn run(&mut self, interrupt: &Interrupt) -> anyhow::Result<()> {
        let interrupted = interrupt.first.clone();
        // What the coordinator was told so far: pending jobs canceled (after the first signal), everything
        // (after the grace).
        let (mut swept, mut force_swept) = (false, false);
        loop {
            if interrupted.is_cancelled() {
                self.sched.settle_pending(Status::Canceled);
                let force = interrupt.forced.is_cancelled();
                if !swept || (force && !force_swept) {
                    cancel_at_coordinator(&self.run.coordinator, self.run.shared.is_none(), force);
                    (swept, force_swept) = (true, force);
                }
            }
            // Start (or skip) everything that may go now.
            while let Some(step) = self.sched.next(self.sched.running() < self.concurrency) {
                self.step(step)?;
            }
            if self.running.is_empty() {
                // Nothing runs and nothing can start: what is left waits on nothing that will ever finish.
                self.sched.settle_pending(Status::Skipped);
                break;
            }
            let joined = tokio::select! {
                j = self.running.join_next() => j,
                // Wake up to cancel the pending jobs (the running ones end through `abort_jobs`), then once more
                // when the grace is over.
                _ = interrupted.cancelled(), if !swept => continue,
                _ = interrupt.forced.cancelled(), if !force_swept => continue,
            };
            let Some(joined) = joined else { continue };
            let (i, t0, result) = joined.context("a job's output task failed")?;
            self.job_ended(i, t0, result, interrupted.is_cancelled());
        }
        // Trigger jobs whose child pipelines were settled above (interrupted, stuck).
        for (i, status) in self.sched.finish_triggers() {
            self.trigger_ended(i, &status);
        }
        Ok(())
    }

    /// One step of the scheduler.
    fn step(&mut self, step: schedule::Step) -> anyhow::Result<()> {
        match step {
            schedule::Step::Skip(i, status, why) => {
                self.reporter.skipped(self.line(i), &status, &why);
            }
            schedule::Step::Trigger(i, p) => {
                let child = &self.sched.pipelines[p];
                let created = format!(
                    "created child pipeline {} ({}){}",
                    child.id,
                    child.include.join(", "),
                    if child.depend {
                        "; strategy: depend, the trigger job takes its status"
                    } else {
                        ""
                    }
                );
                let depend = child.depend;
                self.reporter.child_created(self.line(i), &created, depend);
                self.triggered.insert(i, Instant::now());
                if !depend {
                    self.outcomes[i].duration = Some(Duration::ZERO);
                }
            }
            schedule::Step::Finished(i, status) => self.trigger_ended(i, &status),
            schedule::Step::Start(i) => self.start(i)?,
        }
        Ok(())
    }

    /// The end of a `strategy: depend` trigger job: its child pipeline's status.
    fn trigger_ended(&mut self, i: usize, status: &Status) {
        let elapsed = self
            .triggered
            .get(&i)
            .map(Instant::elapsed)
            .unwrap_or_default();
        self.outcomes[i].duration = Some(elapsed);
        let child = self
            .sched
            .pipelines
            .iter()
            .find(|p| p.trigger == Some(i))
            .map(|p| p.id)
            .unwrap_or_default();
        self.reporter
            .trigger_ended(self.line(i), status, elapsed, child);
    }

    /// Hands job `i` to the coordinator and follows its trace.
    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let job = self.sched.jobs[i].job;
        let pipeline = self.sched.jobs[i].pipeline;
        let display = self.sched.jobs[i].display.clone();
        self.reporter.started(self.line(i));
        for n in notes(job, &self.run.docker) {
            self.reporter.say(&format!("note: {display}: {n}"));
        }
        let deps = self.dependencies(i, &display);
        let pipeline_id = self.sched.pipelines[pipeline].id;
        let mut spec = jobspec::spec_for(
            job,
            self.co,
            &self.run.project,
            pipeline_id,
            deps,
            self.job_ref,
        );
        if matches!(self.run.docker, Docker::On)
            && (self.args.executor == "docker" || wants_docker(job))
        {
            spec.runner_token = Some(self.run.tokens.docker.clone());
        } else {
            spec.runner_token = Some(self.run.tokens.shell.clone());
        }
        let coordinator = &self.run.coordinator;
        let id = coordinator.enqueue(spec);
        self.ids.insert((pipeline, job.name.clone()), id);
        let run_dir = &self.run.run_dir.path;
        let log_name = format!("{}.log", self.run.stems[i]);
        let log = match state::private_file(&run_dir.join(&log_name)) {
            Ok(f) => {
                self.outcomes[i].log = Some(log_name);
                Some(f)
            }
            Err(err) => {
                eprintln!(
                    "WARNING: cannot create the log of {display} in {} ({err}); its output is on stdout only",
                    run_dir.display()
                );
                None
            }
        };
        let view = self.run.view;
        let style = output::Style {
            keep_ansi: view.colour,
            prefix: view
                .prefixed
                .then(|| output::prefix(&display, i, view.colour)),
        };
        let deadline = Instant::now()
            + Duration::from_secs(job.timeout.unwrap_or(3600))
            + Duration::from_secs(120);
        let trace_view = self.reporter.trace_view(self.line(i));
        let follow = follow(
            coordinator.clone(),
            id,
            display,
            output::TraceOut::new(style, log, trace_view),
            deadline,
        );
        let t0 = Instant::now();
        self.running.spawn(async move { (i, t0, follow.await) });
        Ok(())
    }

    /// The jobs whose artifacts job `i` downloads: those named by `dependencies` (or derived from needs /
    /// earlier stages) that ran in its pipeline, and its `needs:pipeline:job` of another pipeline of the run.
    fn dependencies(&self, i: usize, display: &str) -> Vec<i64> {
        let job = self.sched.jobs[i].job;
        let pipeline = self.sched.jobs[i].pipeline;
        let mut deps: Vec<i64> = match &job.dependencies {
            Some(names) => names
                .iter()
                .filter_map(|n| self.ids.get(&(pipeline, n.clone())).copied())
                .collect(),
            None => self
                .sched
                .jobs
                .iter()
                .filter(|s| s.pipeline == pipeline && s.job.stage_index < job.stage_index)
                .filter_map(|s| self.ids.get(&(pipeline, s.job.name.clone())).copied())
                .collect(),
        };
        // `needs:pipeline:job`: artifacts of a job of another pipeline of the run (the parent's).
        for n in job.pipeline_needs.iter().filter(|n| n.artifacts) {
            let found = self
                .sched
                .pipelines
                .iter()
                .position(|r| r.id.to_string() == n.pipeline)
                .and_then(|p| self.ids.get(&(p, n.job.clone())));
            match found {
                Some(id) => deps.push(*id),
                // On stdout as it always was, not through the view.
                None => say!(
                    "note: {display}: needs:pipeline:job: no job {:?} ran in pipeline {}; its artifacts are not downloaded",
                    n.job, n.pipeline
                ),
            }
        }
        deps
    }

    /// Job `i`'s output task ended: its outcome, artifacts and status.
    fn job_ended(
        &mut self,
        i: usize,
        t0: Instant,
        result: anyhow::Result<runwright_coordinator::JobRecord>,
        interrupted: bool,
    ) {
        let job = self.sched.jobs[i].job;
        let elapsed = t0.elapsed();
        self.outcomes[i].duration = Some(elapsed);
        let status = match result {
            Ok(record) => {
                // GitLab's runner reports an exit code for failures only; a job succeeds when every script
                // line exited 0.
                self.outcomes[i].exit_code = record
                    .exit_code
                    .or_else(|| (record.state == "success").then_some(0));
                match state::copy_artifacts(
                    &self.run.run_dir.path,
                    &self.run.stems[i],
                    &record.artifacts,
                ) {
                    Ok(files) => self.outcomes[i].artifacts = files,
                    Err(err) => {
                        eprintln!("WARNING: {} artifacts: {err:#}", self.sched.jobs[i].display)
                    }
                }
                record_status(&record, job, interrupted)
            }
            Err(err) => {
                self.reporter.say(&format!("runwright exec: {err:#}"));
                Status::Failed {
                    allowed: job.allow_failure,
                }
            }
        };
        let log = self.outcomes[i]
            .log
            .as_ref()
            .map(|f| self.run.run_dir.path.join(f));
        self.reporter.ended(
            self.line(i),
            Ended {
                status: &status,
                elapsed,
                exit_code: self.outcomes[i].exit_code,
                log: log.as_deref(),
            },
        );
        self.sched.status[i] = status;
    }

    /// The run is over: the aborted jobs' last reports, then the summary (table, `summary.json`, last lines)
    /// and the exit code.
    pub async fn finish(self, interrupt: &Interrupt, started: Instant) -> anyhow::Result<ExitCode> {
        if let Some(shared) = &self.run.shared {
            // The aborted jobs' final updates. Once the grace is over (or at a second signal) what is left of
            // their processes is killed, and their reports get a moment more.
            let drained = runwright_service::drain(shared);
            tokio::pin!(drained);
            tokio::select! {
                _ = &mut drained => {}
                _ = interrupt.forced.cancelled(), if interrupt.first.is_cancelled() => {
                    shared.kill_running_jobs().await;
                    if tokio::time::timeout(FINAL_REPORTS, drained).await.is_err() {
                        eprintln!("runwright exec: not waiting any longer for the aborted jobs to report");
                    }
                }
            }
        }
        self.reporter.close();
        let signal = interrupt.signal.get().copied();
        let interrupted = interrupt.first.is_cancelled();
        self.run.coordinator.clone().shutdown().await;

        let passed = !self.sched.failed();
        let verdict = if interrupted {
            files::Verdict::Canceled
        } else if passed {
            files::Verdict::Passed
        } else {
            files::Verdict::Failed
        };
        let elapsed = started.elapsed();
        print_summary(&self.sched, &self.outcomes);
        let run_dir = &self.run.run_dir;
        let summary = files::Summary {
            pipeline: run_dir.number,
            status: verdict,
            interrupted_by: signal.map(|s| s.as_str().to_string()),
            duration_seconds: elapsed.as_secs_f64(),
            sha: self.co.sha.clone(),
            git_ref: self.co.branch.clone(),
            jobs: self
                .sched
                .jobs
                .iter()
                .zip(&self.sched.status)
                .zip(&self.outcomes)
                .map(|((s, status), o)| {
                    files::JobSummary::new(s, self.sched.pipelines[s.pipeline].id, status, o)
                })
                .collect(),
        };
        if let Err(err) = state::write_json(&run_dir.path, "summary.json", &summary) {
            eprintln!("WARNING: {err:#}");
        }
        match signal {
            Some(s) => say!(
                "pipeline {} by {s} in {:.1}s",
                verdict.as_str(),
                elapsed.as_secs_f64()
            ),
            None => say!(
                "pipeline {} in {:.1}s",
                verdict.as_str(),
                elapsed.as_secs_f64()
            ),
        }
        say!("pipeline directory: {}", run_dir.path.display());
        Ok(if interrupted {
            // The shell's convention for a command ended by a signal: 128 + its number (130 SIGINT, 141 SIGPIPE: stdout
            // closed, 143 SIGTERM).
            ExitCode::from(128 + signal.map_or(2, |s| s as u8))
        } else if passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }
}

/// A job's status from its final record: an interrupted run's failures are cancellations; a failure is allowed
/// by `allow_failure` or one of its `allow_failure:exit_codes`.
fn record_status(
    record: &runwright_coordinator::JobRecord,
    job: &runwright_pipeline::PlannedJob,
    interrupted: bool,
) -> Status {
    match record.state.as_str() {
        "success" => Status::Success,
        "canceled" => Status::Canceled,
        _ if interrupted => Status::Canceled,
        _ => {
            let by_code = record
                .exit_code
                .is_some_and(|c| job.allow_failure_exit_codes.contains(&i64::from(c)));
            Status::Failed {
                allowed: job.allow_failure || by_code,
            }
        }
    }
}

/// The live view, or the lines, for this run.
pub(crate) fn reporter(run: &SetUp, sched: &Scheduler<'_>) -> Box<dyn Reporter> {
    if !run.view.live {
        return Box::new(crate::report::Lines);
    }
    let rows: Vec<(&str, &str)> = sched
        .jobs
        .iter()
        .map(|s| (s.display.as_str(), s.job.stage.as_str()))
        .collect();
    let live = live::Live::new(&rows, run.view.colour, false);
    Box::new(crate::report::LiveRows::new(live, sched.jobs.len()))
}

/// Ctrl-C / SIGTERM end the run, whatever its jobs do: nothing more starts, jobs no runner took are canceled,
/// the in-process runner's jobs are aborted as the service aborts them on its own SIGTERM (their processes are
/// in their own process groups, out of the terminal's reach), served ones canceled as GitLab cancels a job.
/// What has not ended after INTERRUPT_GRACE — or at a second signal — is canceled at the coordinator and no
/// longer waited for (gitlab-runner commands/single.go `waitForInterrupts`: abort, then exit at a second signal
/// or the shutdown timeout).
pub(crate) fn watch_signals(
    abort: Option<tokio_util::sync::CancellationToken>,
) -> anyhow::Result<Interrupt> {
    let interrupt = Interrupt::default();
    let watched = interrupt.clone();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::spawn(async move {
        let signal = tokio::select! {
            _ = sigterm.recv() => nix::sys::signal::Signal::SIGTERM,
            _ = sigint.recv() => nix::sys::signal::Signal::SIGINT,
            // Nobody reads the output any more (`| head`): what SIGPIPE would have done, without the leftovers.
            _ = crate::stdout::closed().cancelled() => nix::sys::signal::Signal::SIGPIPE,
        };
        let _ = watched.signal.set(signal);
        let (what, again) = match signal {
            nix::sys::signal::Signal::SIGPIPE => {
                ("standard output closed".to_string(), String::new())
            }
            s => (
                s.to_string(),
                format!("; {s} again to stop waiting for them"),
            ),
        };
        eprintln!(
            "runwright exec: {what}: canceling the pending jobs and aborting the running ones (at most {} s{again})",
            INTERRUPT_GRACE.as_secs()
        );
        watched.first.cancel();
        if let Some(abort) = abort {
            abort.cancel();
        }
        tokio::select! {
            _ = sigterm.recv() => eprintln!("runwright exec: second signal: canceling what is left"),
            _ = sigint.recv() => eprintln!("runwright exec: second signal: canceling what is left"),
            _ = tokio::time::sleep(INTERRUPT_GRACE) => eprintln!(
                "runwright exec: jobs still not ended {} s after {signal}: canceling what is left",
                INTERRUPT_GRACE.as_secs()
            ),
        }
        watched.forced.cancel();
    });
    Ok(interrupt)
}

/// The table at the end: job, stage, status (with allowed failures), duration, exit code.
fn print_summary(sched: &Scheduler<'_>, outcomes: &[Outcome]) {
    let width = |f: &dyn Fn(&schedule::Selected<'_>) -> usize, min: usize| {
        sched.jobs.iter().map(f).max().unwrap_or(min).max(min)
    };
    let w_job = width(&|s| s.display.chars().count(), 3);
    let w_stage = width(&|s| s.job.stage.len(), 5);
    say!();
    say!(
        "{:<w_job$}  {:<w_stage$}  {:<16}  {:>8}  exit code",
        "job",
        "stage",
        "status",
        "duration"
    );
    for ((s, status), o) in sched.jobs.iter().zip(&sched.status).zip(outcomes) {
        let d = o
            .duration
            .map_or("-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
        let code = o.exit_code.map_or("-".to_string(), |c| c.to_string());
        say!(
            "{:<w_job$}  {:<w_stage$}  {:<16}  {d:>8}  {code}",
            s.display,
            s.job.stage,
            status.label()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::Recording;
    use crate::setup::View;
    use runwright_coordinator::{Coordinator, CoordinatorOptions, ProjectSpec};
    use runwright_pipeline::{Pipeline, PipelineContext};

    const YAML: &str = r#"
approve:
  when: manual
  script: [x]
cleanup:
  when: on_failure
  script: [x]
"#;

    /// A run whose jobs never reach a runner: no process, no runner, only the loop, the view and the files.
    #[tokio::test]
    async fn the_loop_reports_jobs_that_do_not_run_and_writes_the_summary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = PipelineContext::new(Default::default());
        let plan = match Pipeline::from_str("/nonexistent", ".gitlab-ci.yml", YAML)
            .and_then(|c| c.evaluate(&ctx))
        {
            Ok(p) => p,
            Err(e) => panic!("plan: {e}"),
        };
        let selected = schedule::select(&plan, &[], false, &[]).expect("select");
        let (selected, runs) = crate::children::flatten(selected, &[]);
        let run = SetUp {
            view: View {
                colour: false,
                prefixed: false,
                live: false,
            },
            run_dir: state::create_run(&dir.path().join("runs")).expect("run dir"),
            stems: state::file_stems(selected.iter().map(|s| s.display.as_str())),
            project: ProjectSpec::new(1, "group/project"),
            coordinator: Coordinator::start(CoordinatorOptions::default())
                .await
                .expect("coordinator"),
            tokens: crate::Tokens::new(),
            docker: Docker::Off("no job needs it".into()),
            shared: None,
            _tmp: tempfile::tempdir().expect("tempdir"),
        };
        let co = Checkout {
            root: dir.path().into(),
            sha: "0123456789abcdef".into(),
            branch: "main".into(),
            project_path: "group/project".into(),
            default_branch: "main".into(),
            head_tree: String::new(),
            index: dir.path().join("index"),
            objects: dir.path().join("objects"),
            head: Default::default(),
        };
        let args = ExecOptions::default();
        let recording = Recording::default();
        let sched = Scheduler::with_pipelines(selected, runs);
        let mut schedule = Schedule::new(
            &args,
            &co,
            &jobspec::JobRef::Branch,
            2,
            &run,
            &recording,
            sched,
        );
        let interrupt = Interrupt::default();
        schedule.run(&interrupt).await.expect("run");
        let code = schedule
            .finish(&interrupt, Instant::now())
            .await
            .expect("finish");
        assert_eq!(code, ExitCode::SUCCESS);
        let events = recording.events();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(
            events[0].starts_with("skipped approve manual"),
            "{events:?}"
        );
        assert_eq!(
            events[1],
            "skipped cleanup skipped when: on_failure, nothing failed"
        );
        assert_eq!(events[2], "close");

        let text = std::fs::read_to_string(run.run_dir.path.join("summary.json")).expect("summary");
        let summary: files::Summary = serde_json::from_str(&text).expect("a summary");
        assert_eq!(summary.status, files::Verdict::Passed);
        assert_eq!(
            (summary.sha.as_str(), summary.git_ref.as_str()),
            ("0123456789abcdef", "main")
        );
        let jobs: Vec<(&str, &str)> = summary
            .jobs
            .iter()
            .map(|j| (j.name.as_str(), j.status.as_str()))
            .collect();
        assert_eq!(jobs, [("approve", "manual"), ("cleanup", "skipped")]);
    }
}
