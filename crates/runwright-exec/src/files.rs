//! The run's JSON files in its pipeline directory: `plan.json` (what the run was going to do) and `summary.json`
//! (how it went). Users and tests read them: the field names and shapes are a format, kept as they are.

use crate::schedule::{PipelineRun, Selected, Status};
use runwright_pipeline::PlannedJob;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `plan.json`: the pipeline's jobs as planned, its child pipelines with theirs.
#[derive(Serialize)]
pub(crate) struct PlanFile<'a> {
    /// The project's path (`group/project`).
    pub project: &'a str,
    /// The branch the pipeline runs for.
    #[serde(rename = "ref")]
    pub git_ref: &'a str,
    /// The commit the jobs check out.
    pub sha: &'a str,
    /// `committed` or `working tree`.
    pub sources: &'static str,
    pub stages: &'a [String],
    /// The pipeline's own jobs that run.
    pub jobs: Vec<&'a PlannedJob>,
    pub child_pipelines: Vec<ChildPlan<'a>>,
}

/// A child pipeline in `plan.json`.
#[derive(Serialize)]
pub(crate) struct ChildPlan<'a> {
    /// Its `CI_PIPELINE_ID`.
    pub id: i64,
    /// The trigger job's name as shown.
    pub trigger_job: Option<&'a str>,
    /// Its files.
    pub include: &'a [String],
    /// `strategy: depend`.
    pub depend: bool,
    pub jobs: Vec<&'a PlannedJob>,
}

impl<'a> PlanFile<'a> {
    /// The plan of the selected jobs; `runs[0]` is the pipeline itself, the others its child pipelines.
    pub fn new(
        head: Head<'a>,
        sources: &'static str,
        stages: &'a [String],
        selected: &'a [Selected<'a>],
        runs: &'a [PipelineRun],
    ) -> PlanFile<'a> {
        let jobs_of = |pipeline: usize| {
            selected
                .iter()
                .filter(|s| s.pipeline == pipeline)
                .map(|s| s.job)
                .collect()
        };
        PlanFile {
            project: head.project,
            git_ref: head.git_ref,
            sha: head.sha,
            sources,
            stages,
            jobs: jobs_of(0),
            child_pipelines: runs
                .iter()
                .enumerate()
                .skip(1)
                .map(|(p, r)| ChildPlan {
                    id: r.id,
                    trigger_job: r.trigger.map(|t| selected[t].display.as_str()),
                    include: &r.include,
                    depend: r.depend,
                    jobs: jobs_of(p),
                })
                .collect(),
        }
    }
}

/// What both files say of the commit.
#[derive(Clone, Copy)]
pub(crate) struct Head<'a> {
    pub project: &'a str,
    pub git_ref: &'a str,
    pub sha: &'a str,
}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    Passed,
    Failed,
    Canceled,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Canceled => "canceled",
        }
    }
}

/// `summary.json`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// The run's number (its directory's name).
    pub pipeline: u64,
    pub status: Verdict,
    /// The signal that ended the run early, if one did.
    pub interrupted_by: Option<String>,
    pub duration_seconds: f64,
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub jobs: Vec<JobSummary>,
}

/// A job in `summary.json`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct JobSummary {
    /// Its name as shown (`trigger > job` in a child pipeline).
    pub name: String,
    pub pipeline_id: i64,
    pub stage: String,
    /// `success`, `failed`, `skipped`, `canceled`, `manual`, … (an allowed failure is `failed`).
    pub status: String,
    pub allowed_failure: bool,
    pub duration_seconds: Option<f64>,
    pub exit_code: Option<i32>,
    /// The job's log file, in the pipeline directory.
    pub log: Option<String>,
    /// Its artifacts' files, in the pipeline directory.
    pub artifacts: Vec<String>,
}

impl JobSummary {
    pub fn new(job: &Selected<'_>, pipeline_id: i64, status: &Status, outcome: &Outcome) -> Self {
        JobSummary {
            name: job.display.clone(),
            pipeline_id,
            stage: job.job.stage.clone(),
            status: match status {
                Status::Failed { .. } => "failed",
                other => other.label(),
            }
            .to_string(),
            allowed_failure: matches!(status, Status::Failed { allowed: true }),
            duration_seconds: outcome.duration.map(|d| d.as_secs_f64()),
            exit_code: outcome.exit_code,
            log: outcome.log.clone(),
            artifacts: outcome.artifacts.clone(),
        }
    }
}

/// How a job ended, for the summary table and `summary.json`.
#[derive(Default, Clone, Debug)]
pub(crate) struct Outcome {
    pub duration: Option<Duration>,
    pub exit_code: Option<i32>,
    /// Its log file's name in the pipeline directory.
    pub log: Option<String>,
    pub artifacts: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            pipeline: 3,
            status: Verdict::Failed,
            interrupted_by: None,
            duration_seconds: 1.5,
            sha: "abc".into(),
            git_ref: "main".into(),
            jobs: vec![JobSummary {
                name: "build".into(),
                pipeline_id: 1,
                stage: "build".into(),
                status: "failed".into(),
                allowed_failure: true,
                duration_seconds: None,
                exit_code: Some(3),
                log: Some("build.log".into()),
                artifacts: vec!["artifacts/build/a.txt".into()],
            }],
        }
    }

    #[test]
    fn the_summary_keeps_its_field_names_and_round_trips() {
        let value = serde_json::to_value(summary()).expect("json");
        assert_eq!(
            value,
            serde_json::json!({
                "pipeline": 3,
                "status": "failed",
                "interrupted_by": null,
                "duration_seconds": 1.5,
                "sha": "abc",
                "ref": "main",
                "jobs": [{
                    "name": "build",
                    "pipeline_id": 1,
                    "stage": "build",
                    "status": "failed",
                    "allowed_failure": true,
                    "duration_seconds": null,
                    "exit_code": 3,
                    "log": "build.log",
                    "artifacts": ["artifacts/build/a.txt"],
                }],
            })
        );
        let back: Summary = serde_json::from_value(value).expect("summary");
        assert_eq!(back, summary());
    }

    #[test]
    fn the_plan_lists_the_pipelines_jobs_under_the_usual_names() {
        use runwright_pipeline::{Pipeline, PipelineContext};
        let yaml = "stages: [build, test]\nbuild:\n  stage: build\n  script: [x]\ntest:\n  stage: test\n  script: [x]\n";
        let ctx = PipelineContext::new(Default::default());
        let plan = match Pipeline::from_str("/nonexistent", ".gitlab-ci.yml", yaml)
            .and_then(|c| c.evaluate(&ctx))
        {
            Ok(p) => p,
            Err(e) => panic!("plan: {e}"),
        };
        let selected = crate::schedule::select(&plan, &[], false, &[]).expect("select");
        let (selected, runs) = crate::children::flatten(selected, &[]);
        let head = Head {
            project: "group/project",
            git_ref: "main",
            sha: "abc",
        };
        let file = PlanFile::new(head, "working tree", &plan.stages, &selected, &runs);
        let value = serde_json::to_value(&file).expect("json");
        let keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "child_pipelines",
                "jobs",
                "project",
                "ref",
                "sha",
                "sources",
                "stages"
            ]
        );
        assert_eq!(value["ref"], "main");
        assert_eq!(value["sources"], "working tree");
        assert_eq!(value["stages"], serde_json::json!(plan.stages));
        assert_eq!(value["child_pipelines"], serde_json::json!([]));
        // Each job as the pipeline model serializes it.
        assert_eq!(
            value["jobs"],
            serde_json::to_value(plan.jobs.iter().collect::<Vec<_>>()).expect("jobs")
        );
    }

    #[test]
    fn verdicts_are_spelled_as_printed() {
        for v in [Verdict::Passed, Verdict::Failed, Verdict::Canceled] {
            assert_eq!(
                serde_json::to_value(v).expect("json"),
                serde_json::Value::from(v.as_str())
            );
        }
    }
}
