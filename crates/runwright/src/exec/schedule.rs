//! Which jobs of the plan a run takes (JOB names, `--needs`, `--manual`) and when each may start: as soon as
//! its `needs` (or, without `needs`, every job of the earlier stages) are done, with GitLab's `when` rules.

use anyhow::bail;
use runwright_pipeline::{PipelinePlan, PlannedJob, When};
use std::collections::HashSet;

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
}

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
            bail!(
                "no job named {name:?} in this pipeline (its jobs: {}); rules or `when: never` may have left it out",
                known.join(", ")
            );
        }
    }
    let mut play: HashSet<&str> = named.iter().chain(manual).map(String::as_str).collect();
    if named.is_empty() {
        return Ok(plan
            .jobs
            .iter()
            .map(|job| Selected {
                play: play.contains(job.name.as_str()),
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
            job,
        })
        .collect())
}

/// What to do next with a job whose predecessors are done.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    Start(usize),
    /// Not run; the status to record and why.
    Skip(usize, Status, &'static str),
}

pub(super) struct Scheduler<'a> {
    pub jobs: Vec<Selected<'a>>,
    pub status: Vec<Status>,
    preds: Vec<Vec<usize>>,
}

impl<'a> Scheduler<'a> {
    pub fn new(jobs: Vec<Selected<'a>>) -> Self {
        let preds = (0..jobs.len())
            .map(|i| {
                let j = jobs[i].job;
                match &j.needs {
                    Some(needs) => needs
                        .iter()
                        .filter_map(|n| jobs.iter().position(|s| s.job.name == n.job))
                        .collect(),
                    None => (0..jobs.len())
                        .filter(|&k| jobs[k].job.stage_index < j.stage_index)
                        .collect(),
                }
            })
            .collect();
        Scheduler {
            status: vec![Status::Pending; jobs.len()],
            jobs,
            preds,
        }
    }

    /// The next decision, in plan order: a pending job whose predecessors are all done is skipped (its `when`
    /// says so) or started (only if `can_start`: a free slot). `None`: nothing to decide until a running job
    /// finishes (or nothing is left).
    pub fn next(&mut self, can_start: bool) -> Option<Step> {
        for i in 0..self.jobs.len() {
            if self.status[i] != Status::Pending
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
                return Some(Step::Skip(i, status, why));
            }
            if sel.job.trigger.is_some() {
                self.status[i] = Status::Skipped;
                return Some(Step::Skip(
                    i,
                    Status::Skipped,
                    "trigger: jobs are not supported by runwright exec yet",
                ));
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

    pub fn running(&self) -> usize {
        self.status
            .iter()
            .filter(|s| **s == Status::Running)
            .count()
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
}
