//! Child pipelines (`trigger:include` of local files) in a local run: planned with the parent pipeline, so
//! that a missing or invalid child file stops the run before anything starts, and flattened into the
//! scheduler's jobs right after their trigger job. A child pipeline's jobs are shown (and logged) under their
//! trigger job's name, `trigger job > job`, in the run's output, the summary, the pipeline directory and
//! `--list`.

use super::schedule::{PipelineRun, Selected};
use super::PIPELINE_ID;
use runwright_pipeline::{ChildPipeline, Pipeline, PipelineContext, PipelinePlan, ResolvedConfig};
use std::collections::BTreeMap;
use std::path::Path;

/// A pipeline with its child pipelines, planned.
pub(super) struct Planned {
    pub resolved: ResolvedConfig,
    pub plan: PipelinePlan,
    pub children: Vec<ChildPipeline>,
}

/// Plans `file` in the checkout at `root` for `ctx`, and the child pipelines of its trigger jobs (ids after
/// the pipeline's own). `project_variables` are the project's settings among `ctx`'s pipeline variables.
pub(super) fn plan(
    root: &Path,
    file: &Path,
    ctx: &PipelineContext,
    project_variables: &BTreeMap<String, String>,
) -> runwright_pipeline::Result<Planned> {
    let resolved = Pipeline::load(root, file)?.resolve(ctx)?;
    let plan = resolved.evaluate(ctx)?;
    let mut next_id = PIPELINE_ID as u64 + 1;
    let children = resolved.child_pipelines(root, &plan, ctx, project_variables, &mut next_id)?;
    Ok(Planned {
        resolved,
        plan,
        children,
    })
}

/// The name a job of a child pipeline is shown with.
pub(super) fn display(prefix: Option<&str>, name: &str) -> String {
    match prefix {
        Some(p) => format!("{p} > {name}"),
        None => name.to_string(),
    }
}

/// The selected jobs of the pipeline run, each trigger job followed by its child pipeline's jobs (and theirs),
/// with the pipelines of the run (0: the pipeline itself).
pub(super) fn flatten<'a>(
    selected: Vec<Selected<'a>>,
    children: &'a [ChildPipeline],
) -> (Vec<Selected<'a>>, Vec<PipelineRun>) {
    let mut out = Vec::new();
    let mut runs = vec![PipelineRun {
        id: PIPELINE_ID,
        trigger: None,
        depend: false,
        not_created: None,
        include: Vec::new(),
        created: true,
    }];
    push(selected, children, &mut out, &mut runs);
    (out, runs)
}

fn push<'a>(
    jobs: Vec<Selected<'a>>,
    children: &'a [ChildPipeline],
    out: &mut Vec<Selected<'a>>,
    runs: &mut Vec<PipelineRun>,
) {
    for sel in jobs {
        let trigger = out.len();
        let prefix = sel.display.clone();
        let name = sel.job.name.clone();
        out.push(sel);
        let Some(child) = children.iter().find(|c| c.trigger_job == name) else {
            continue;
        };
        let p = runs.len();
        runs.push(PipelineRun {
            id: child.pipeline_id as i64,
            trigger: Some(trigger),
            depend: child.depend,
            not_created: (!child.plan.workflow.created).then(|| {
                child
                    .plan
                    .workflow
                    .reason
                    .clone()
                    .unwrap_or_else(|| "no jobs".into())
            }),
            include: child.include.clone(),
            created: false,
        });
        let jobs = child
            .plan
            .jobs
            .iter()
            .map(|job| Selected {
                job,
                play: false,
                pipeline: p,
                display: display(Some(&prefix), &job.name),
            })
            .collect();
        push(jobs, &child.children, out, runs);
    }
}
