//! Which jobs of the plan a run takes (JOB names, `--needs`, `--manual`) and when each may start: as soon as
//! its `needs` (or, without `needs`, every job of the earlier stages) are done, with GitLab's `when` rules.
//!
//! Child pipelines (`trigger:include`) are scheduled with their parent: their jobs wait until the trigger job
//! runs, which creates the child pipeline. Without `strategy: depend` the trigger job succeeds at once; with
//! it, it waits and takes the child pipeline's status (docs: ci/yaml "trigger:strategy"). A trigger job never
//! takes a slot of `-j`.

use runwright_pipeline::{PipelinePlan, PlannedJob, Trigger, When};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Status {
    Pending,
    Running,
    Success,
    Failed { allowed: bool },
    Skipped,
    Manual,
    Canceled,
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Success => "success",
            Status::Failed { allowed: false } => "failed",
            Status::Failed { allowed: true } => "failed (allowed)",
            Status::Skipped => "skipped",
            Status::Manual => "manual",
            Status::Canceled => "canceled",
        }
    }
    /// A failure that fails the pipeline (and skips `on_success` jobs after it).
    pub fn blocking_failure(&self) -> bool {
        matches!(self, Status::Failed { allowed: false } | Status::Canceled)
    }
    fn done(&self) -> bool {
        !matches!(self, Status::Pending | Status::Running)
    }
}

/// A job the run takes.
pub(super) struct Selected<'a> {
    pub job: &'a PlannedJob,
    /// A manual job that runs: named on the command line, given to `--manual`, or needed (`needs:`) by a job
    /// `--needs` pulled in (GitLab would block that job until it is played).
    pub play: bool,
    /// The pipeline it belongs to: 0 is the pipeline run, then its child pipelines ([`Scheduler::pipelines`]).
    pub pipeline: usize,
    /// The name shown: the job's, under its trigger job's for a child pipeline's (`deploy > test`).
    pub display: String,
}

/// A pipeline of the run.
#[derive(Debug, Clone)]
pub(super) struct PipelineRun {
    /// `CI_PIPELINE_ID`.
    pub id: i64,
    /// The trigger job (index in [`Scheduler::jobs`]) that creates it; `None` for the pipeline run.
    pub trigger: Option<usize>,
    /// `strategy: depend`.
    pub depend: bool,
    /// Why the child cannot be created (workflow:rules, no jobs): its trigger job fails with it, as GitLab's
    /// does (`downstream_pipeline_creation_failed`).
    pub not_created: Option<String>,
    /// Its files.
    pub include: Vec<String>,
    /// Created: its jobs may start.
    pub created: bool,
}

/// GitLab's text for the `reached_max_descendant_pipelines_depth` failure of a trigger job.
pub(super) const MAX_DEPTH_REACHED: &str = "reached maximum depth of child pipelines";

/// The jobs of the run, in plan order. Without JOB names: the whole pipeline. With names: those jobs, the
/// `--manual` ones and, with `--needs`, what they need transitively (`needs:`, or every job of the earlier
/// stages for a job without `needs:`).
pub(super) fn select<'a>(
    plan: &'a PipelinePlan,
    named: &[String],
    with_needs: bool,
    manual: &[String],
) -> anyhow::Result<Vec<Selected<'a>>> {
    for name in named.iter().chain(manual) {
        if plan.job(name).is_none() {
            let known: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(crate::ExecError::Usage(format!(
                "no job named {name:?} in this pipeline (its jobs: {}); rules or `when: never` may have left it out",
                known.join(", ")
            ))
            .into());
        }
    }
    let mut play: HashSet<&str> = named.iter().chain(manual).map(String::as_str).collect();
    if named.is_empty() {
        return Ok(plan
            .jobs
            .iter()
            .map(|job| Selected {
                play: play.contains(job.name.as_str()),
                pipeline: 0,
                display: job.name.clone(),
                job,
            })
            .collect());
    }
    let mut taken: HashSet<&str> = play.clone();
    if with_needs {
        let mut work: Vec<&str> = taken.iter().copied().collect();
        while let Some(name) = work.pop() {
            let Some(job) = plan.job(name) else { continue };
            let wanted: Vec<(&str, bool)> = match &job.needs {
                // `optional: true` needs of jobs the rules left out are not in the plan: nothing to add.
                Some(needs) => needs
                    .iter()
                    .filter(|n| plan.job(&n.job).is_some())
                    .map(|n| (n.job.as_str(), true))
                    .collect(),
                // Stage order does not wait for manual jobs (they are allowed to fail): those stay manual.
                None => plan
                    .jobs
                    .iter()
                    .filter(|j| j.stage_index < job.stage_index)
                    .map(|j| (j.name.as_str(), false))
                    .collect(),
            };
            for (dep, needed) in wanted {
                if needed {
                    play.insert(dep);
                }
                if taken.insert(dep) {
                    work.push(dep);
                }
            }
        }
    }
    Ok(plan
        .jobs
        .iter()
        .filter(|j| taken.contains(j.name.as_str()))
        .map(|job| Selected {
            play: play.contains(job.name.as_str()),
            pipeline: 0,
            display: job.name.clone(),
            job,
        })
        .collect())
}

/// What to do next with a job whose predecessors are done.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    Start(usize),
    /// Not run; the status to record and why.
    Skip(usize, Status, Cow<'static, str>),
    /// A trigger job created its child pipeline (index in [`Scheduler::pipelines`]); its status is
    /// `Running` until the child is done (`strategy: depend`) or `Success` at once.
    Trigger(usize, usize),
    /// A trigger job with `strategy: depend` took its child pipeline's status.
    Finished(usize, Status),
}

pub(super) struct Scheduler<'a> {
    pub jobs: Vec<Selected<'a>>,
    pub status: Vec<Status>,
    pub pipelines: Vec<PipelineRun>,
    preds: Vec<Vec<usize>>,
    /// Trigger job → the child pipeline it creates (none: beyond the depth limit, or not selected).
    child_of: HashMap<usize, usize>,
}

impl<'a> Scheduler<'a> {
    /// A run of one pipeline.
    #[cfg(test)]
    pub fn new(jobs: Vec<Selected<'a>>) -> Self {
        let root = PipelineRun {
            id: 1,
            trigger: None,
            depend: false,
            not_created: None,
            include: Vec::new(),
            created: true,
        };
        Self::with_pipelines(jobs, vec![root])
    }

    /// A run of `pipelines[0]` and its child pipelines; each job names its pipeline.
    pub fn with_pipelines(jobs: Vec<Selected<'a>>, pipelines: Vec<PipelineRun>) -> Self {
        let preds = (0..jobs.len())
            .map(|i| {
                let j = jobs[i].job;
                let same = |k: &usize| jobs[*k].pipeline == jobs[i].pipeline;
                match &j.needs {
                    Some(needs) => needs
                        .iter()
                        .filter_map(|n| {
                            (0..jobs.len()).find(|k| same(k) && jobs[*k].job.name == n.job)
                        })
                        .collect(),
                    None => (0..jobs.len())
                        .filter(|k| same(k) && jobs[*k].job.stage_index < j.stage_index)
                        .collect(),
                }
            })
            .collect();
        let child_of = pipelines
            .iter()
            .enumerate()
            .filter_map(|(p, run)| run.trigger.map(|t| (t, p)))
            .collect();
        Scheduler {
            status: vec![Status::Pending; jobs.len()],
            jobs,
            pipelines,
            preds,
            child_of,
        }
    }

    /// The status of child pipeline `p` once all its jobs are done: failed (allowed as the trigger job's
    /// failures are) or canceled when a job failed or was canceled, else success; `None` while a job is left.
    fn child_status(&self, p: usize, trigger: usize) -> Option<Status> {
        let of_p: Vec<&Status> = (0..self.jobs.len())
            .filter(|&k| self.jobs[k].pipeline == p)
            .map(|k| &self.status[k])
            .collect();
        if !of_p.iter().all(|s| s.done()) {
            return None;
        }
        Some(if of_p.iter().any(|s| **s == Status::Canceled) {
            Status::Canceled
        } else if of_p.iter().any(|s| s.blocking_failure()) {
            Status::Failed {
                allowed: self.jobs[trigger].job.allow_failure,
            }
        } else {
            Status::Success
        })
    }

    fn is_trigger(&self, i: usize) -> bool {
        self.jobs[i].job.trigger.is_some()
    }

    /// A waiting trigger job whose child pipeline is done takes its status.
    fn finish_trigger(&mut self) -> Option<Step> {
        for i in 0..self.jobs.len() {
            if self.status[i] != Status::Running || !self.is_trigger(i) {
                continue;
            }
            let Some(&p) = self.child_of.get(&i) else {
                continue;
            };
            if let Some(status) = self.child_status(p, i) {
                self.status[i] = status.clone();
                return Some(Step::Finished(i, status));
            }
        }
        None
    }

    /// Settles the trigger jobs still waiting (at the end of a run, when their child pipelines' jobs were
    /// settled too); returns them with their status.
    pub fn finish_triggers(&mut self) -> Vec<(usize, Status)> {
        let mut out = Vec::new();
        while let Some(step) = self.finish_trigger() {
            if let Step::Finished(i, s) = step {
                out.push((i, s));
            }
        }
        // A trigger job whose child could not finish (e.g. a job left pending) is canceled.
        for i in 0..self.jobs.len() {
            if self.status[i] == Status::Running && self.is_trigger(i) {
                self.status[i] = Status::Canceled;
                out.push((i, Status::Canceled));
            }
        }
        out
    }

    /// The next decision, in plan order: a pending job whose predecessors are all done is skipped (its `when`
    /// says so) or started (only if `can_start`: a free slot). `None`: nothing to decide until a running job
    /// finishes (or nothing is left).
    pub fn next(&mut self, can_start: bool) -> Option<Step> {
        if let Some(step) = self.finish_trigger() {
            return Some(step);
        }
        for i in 0..self.jobs.len() {
            if self.status[i] != Status::Pending
                || !self.pipelines[self.jobs[i].pipeline].created
                || !self.preds[i].iter().all(|&p| self.status[p].done())
            {
                continue;
            }
            let sel = &self.jobs[i];
            let failed_before = self.preds[i]
                .iter()
                .any(|&p| self.status[p].blocking_failure());
            let run = match sel.job.when {
                When::OnSuccess | When::Delayed => !failed_before,
                When::OnFailure => failed_before,
                When::Always => true,
                // A played manual job runs once the jobs before it are done, whatever their outcome.
                When::Manual => sel.play,
                When::Never => false,
            };
            if !run {
                let (status, why) = match sel.job.when {
                    When::Manual if !sel.play => (
                        Status::Manual,
                        "manual job (name it, or give it to --manual, to run it)",
                    ),
                    When::OnFailure => (Status::Skipped, "when: on_failure, nothing failed"),
                    When::Never => (Status::Skipped, "when: never"),
                    _ => (Status::Skipped, "an earlier job failed"),
                };
                self.status[i] = status.clone();
                return Some(Step::Skip(i, status, why.into()));
            }
            match &sel.job.trigger {
                None => {}
                Some(Trigger::Other { description }) => {
                    self.status[i] = Status::Skipped;
                    return Some(Step::Skip(
                        i,
                        Status::Skipped,
                        format!("trigger: {description} is not available offline: only child pipelines of local files run").into(),
                    ));
                }
                Some(Trigger::Child { .. }) => {
                    let failed = Status::Failed {
                        allowed: sel.job.allow_failure,
                    };
                    let Some(&p) = self.child_of.get(&i) else {
                        self.status[i] = failed.clone();
                        return Some(Step::Skip(i, failed, MAX_DEPTH_REACHED.into()));
                    };
                    if let Some(why) = &self.pipelines[p].not_created {
                        let why = format!("the downstream pipeline could not be created: {why}");
                        self.status[i] = failed.clone();
                        return Some(Step::Skip(i, failed, why.into()));
                    }
                    self.pipelines[p].created = true;
                    self.status[i] = if self.pipelines[p].depend {
                        Status::Running
                    } else {
                        Status::Success
                    };
                    return Some(Step::Trigger(i, p));
                }
            }
            if can_start {
                self.status[i] = Status::Running;
                return Some(Step::Start(i));
            }
        }
        None
    }

    /// Every job still pending becomes `status` (interrupted: canceled; stuck: skipped).
    pub fn settle_pending(&mut self, status: Status) {
        for s in self.status.iter_mut().filter(|s| **s == Status::Pending) {
            *s = status.clone();
        }
    }

    /// Jobs that hold a slot: running, and not trigger jobs (they wait for their child's jobs).
    pub fn running(&self) -> usize {
        (0..self.jobs.len())
            .filter(|&i| self.status[i] == Status::Running && !self.is_trigger(i))
            .count()
    }

    /// Whether the pipeline run (not its child pipelines) failed: a failure not allowed, or a cancel
    /// (GitLab: a child pipeline's result reaches its parent only through a `strategy: depend` trigger job).
    pub fn failed(&self) -> bool {
        (0..self.jobs.len())
            .any(|i| self.jobs[i].pipeline == 0 && self.status[i].blocking_failure())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runwright_pipeline::{Pipeline, PipelineContext};

    const YAML: &str = r#"
stages: [build, test, deploy]
lint:
  stage: build
  script: [x]
compile:
  stage: build
  script: [x]
approve:
  stage: build
  when: manual
  script: [x]
unit:
  stage: test
  needs: [compile]
  script: [x]
e2e:
  stage: test
  needs: [approve, unit]
  script: [x]
deploy:
  stage: deploy
  script: [x]
"#;

    fn plan() -> PipelinePlan {
        let ctx = PipelineContext::new(Default::default());
        match Pipeline::from_str("/nonexistent", ".gitlab-ci.yml", YAML)
            .and_then(|c| c.evaluate(&ctx))
        {
            Ok(p) => p,
            Err(e) => panic!("plan: {e}"),
        }
    }

    fn names(sel: &[Selected<'_>]) -> Vec<String> {
        sel.iter()
            .map(|s| format!("{}{}", s.job.name, if s.play { "*" } else { "" }))
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn needs_pull_in_what_jobs_need() {
        let p = plan();
        let all = select(&p, &[], false, &strings(&["approve"])).expect("all");
        assert_eq!(
            names(&all),
            ["lint", "compile", "approve*", "unit", "e2e", "deploy"]
        );
        let later = select(&p, &strings(&["unit"]), true, &[]).expect("unit");
        assert_eq!(names(&later), ["compile*", "unit*"]);
        let stage = select(&p, &strings(&["lint", "deploy"]), false, &[]).expect("named");
        assert_eq!(names(&stage), ["lint*", "deploy*"]);
        let only = select(&p, &strings(&["unit"]), false, &[]).expect("unit");
        assert_eq!(names(&only), ["unit*"]);
        // `needs:` pulls in a manual job and plays it (`*`; it only matters for manual jobs); stage order
        // pulls in the earlier stages without playing their manual jobs.
        let e2e = select(&p, &strings(&["e2e"]), true, &[]).expect("e2e");
        assert_eq!(names(&e2e), ["compile*", "approve*", "unit*", "e2e*"]);
        // `approve` is played here because `e2e`, pulled in by stage order, needs it.
        let deploy = select(&p, &strings(&["deploy"]), true, &[]).expect("deploy");
        assert_eq!(names(&deploy)[2], "approve*");
        assert_eq!(
            names(&deploy),
            ["lint", "compile*", "approve*", "unit*", "e2e", "deploy*"]
        );
        let err = select(&p, &[], false, &strings(&["nope"]))
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("no job named \"nope\"")));
    }

    #[test]
    fn jobs_start_when_their_predecessors_are_done() {
        let p = plan();
        let mut s = Scheduler::new(select(&p, &[], false, &[]).expect("all"));
        // lint and compile at once; approve stays manual.
        assert_eq!(s.next(true), Some(Step::Start(0)));
        assert_eq!(s.next(true), Some(Step::Start(1)));
        assert!(matches!(
            s.next(true),
            Some(Step::Skip(2, Status::Manual, _))
        ));
        assert_eq!(s.next(true), None);
        // unit needs only compile: it starts while lint still runs.
        s.status[1] = Status::Success;
        assert_eq!(s.next(false), None, "no free slot");
        assert_eq!(s.next(true), Some(Step::Start(3)));
        s.status[3] = Status::Failed { allowed: false };
        assert!(matches!(
            s.next(true),
            Some(Step::Skip(4, Status::Skipped, _))
        ));
        // deploy waits for lint (stage order), then is skipped: unit failed.
        assert_eq!(s.next(true), None);
        assert_eq!(s.running(), 1);
        s.status[0] = Status::Success;
        assert!(matches!(
            s.next(true),
            Some(Step::Skip(5, Status::Skipped, _))
        ));
        assert_eq!(s.next(true), None);
    }

    fn plan_of(yaml: &str) -> PipelinePlan {
        let ctx = PipelineContext::new(Default::default());
        match Pipeline::from_str("/nonexistent", ".gitlab-ci.yml", yaml)
            .and_then(|c| c.evaluate(&ctx))
        {
            Ok(p) => p,
            Err(e) => panic!("plan: {e}"),
        }
    }

    /// A run of `parent` whose job 1 is a trigger job of `child` (strategy: depend as given).
    fn with_child<'a>(
        parent: &'a PipelinePlan,
        child: &'a PipelinePlan,
        depend: bool,
    ) -> Scheduler<'a> {
        let mut jobs: Vec<Selected<'a>> = select(parent, &[], false, &[]).expect("all");
        jobs.extend(child.jobs.iter().map(|job| Selected {
            job,
            play: false,
            pipeline: 1,
            display: format!("trigger > {}", job.name),
        }));
        let root = PipelineRun {
            id: 1,
            trigger: None,
            depend: false,
            not_created: None,
            include: vec![],
            created: true,
        };
        let run = PipelineRun {
            id: 2,
            trigger: Some(1),
            depend,
            not_created: None,
            include: vec!["child.yml".into()],
            created: false,
        };
        Scheduler::with_pipelines(jobs, vec![root, run])
    }

    const PARENT: &str = "stages: [a, b, c]\nfirst:\n  stage: a\n  script: [x]\ntrigger:\n  stage: b\n  trigger:\n    include: child.yml\n    strategy: depend\nlast:\n  stage: c\n  script: [x]\n";
    const CHILD: &str = "one:\n  stage: build\n  script: [x]\ntwo:\n  stage: test\n  script: [x]\n";

    #[test]
    fn a_depend_trigger_job_waits_for_its_child_and_takes_its_status() {
        let (parent, child) = (plan_of(PARENT), plan_of(CHILD));
        let mut s = with_child(&parent, &child, true);
        // The child's jobs wait for the trigger job, which waits for `first`.
        assert_eq!(s.next(true), Some(Step::Start(0)));
        assert_eq!(s.next(true), None);
        s.status[0] = Status::Success;
        assert_eq!(s.next(true), Some(Step::Trigger(1, 1)));
        assert_eq!(s.status[1], Status::Running);
        // A trigger job holds no slot: the child's first job starts with one slot.
        assert_eq!(s.running(), 0);
        assert_eq!(s.next(true), Some(Step::Start(3)));
        assert_eq!(s.next(true), None);
        s.status[3] = Status::Success;
        assert_eq!(s.next(true), Some(Step::Start(4)));
        s.status[4] = Status::Failed { allowed: false };
        // The child failed: so does the trigger job, and `last` is skipped; the parent fails.
        assert_eq!(
            s.next(true),
            Some(Step::Finished(1, Status::Failed { allowed: false }))
        );
        assert!(matches!(
            s.next(true),
            Some(Step::Skip(2, Status::Skipped, _))
        ));
        assert!(s.failed());
    }

    #[test]
    fn without_depend_the_trigger_job_succeeds_when_the_child_is_created() {
        let (parent, child) = (plan_of(PARENT), plan_of(CHILD));
        let mut s = with_child(&parent, &child, false);
        assert_eq!(s.next(true), Some(Step::Start(0)));
        s.status[0] = Status::Success;
        assert_eq!(s.next(true), Some(Step::Trigger(1, 1)));
        assert_eq!(s.status[1], Status::Success);
        // `last` and the child's first job run side by side.
        assert_eq!(s.next(true), Some(Step::Start(2)));
        assert_eq!(s.next(true), Some(Step::Start(3)));
        s.status[2] = Status::Success;
        s.status[3] = Status::Failed { allowed: false };
        assert!(matches!(
            s.next(true),
            Some(Step::Skip(4, Status::Skipped, _))
        ));
        // A child's failure does not fail its parent without `strategy: depend`.
        assert!(!s.failed());
    }

    #[test]
    fn a_child_that_workflow_rules_filter_out_fails_its_trigger_job() {
        let (parent, child) = (plan_of(PARENT), plan_of(CHILD));
        let mut s = with_child(&parent, &child, false);
        s.pipelines[1].not_created = Some("Pipeline filtered out by workflow rules.".into());
        assert_eq!(s.next(true), Some(Step::Start(0)));
        s.status[0] = Status::Success;
        assert_eq!(
            s.next(true),
            Some(Step::Skip(
                1,
                Status::Failed { allowed: false },
                "the downstream pipeline could not be created: Pipeline filtered out by workflow rules."
                    .into()
            ))
        );
        // Its jobs never start; the run settles them as skipped.
        assert!(matches!(
            s.next(true),
            Some(Step::Skip(2, Status::Skipped, _))
        ));
        assert_eq!(s.next(true), None);
        assert!(s.failed());
    }

    #[test]
    fn a_trigger_job_without_its_child_fails_and_other_triggers_are_noted() {
        let parent =
            plan_of("deep:\n  trigger:\n    include: c.yml\nother:\n  trigger: grp/project\n");
        let mut s = Scheduler::new(select(&parent, &[], false, &[]).expect("all"));
        assert_eq!(
            s.next(true),
            Some(Step::Skip(
                0,
                Status::Failed { allowed: false },
                MAX_DEPTH_REACHED.into()
            ))
        );
        match s.next(true) {
            Some(Step::Skip(1, Status::Skipped, why)) => {
                assert!(why.contains("not available offline"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }
}
