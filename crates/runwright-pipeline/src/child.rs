//! Child pipelines: a trigger job with `trigger:include` of local files (docs: ci/pipelines/downstream_pipelines,
//! ci/yaml "trigger:include") creates a separate pipeline of the same project and commit, whose configuration
//! is those files, evaluated with `CI_PIPELINE_SOURCE=parent_pipeline` and the variables the trigger job passes
//! down. [`ResolvedConfig::child_pipelines`] plans them (recursively, to GitLab's depth) for a planned parent,
//! so that an invalid or missing child file is an error before anything runs.
use std::collections::BTreeMap;
use std::path::Path;

use crate::config::ResolvedConfig;
use crate::error::{Error, Result};
use crate::job::{Forward, Trigger};
use crate::load::Pipeline;
use crate::plan::{PipelineContext, PipelinePlan, PlannedJob};
use crate::variables::{expand_all, VariableSource};

/// GitLab's limit: "you can nest child pipelines up to two levels deep" (docs: downstream_pipelines, "Nested
/// child pipelines"); a trigger job of a pipeline at this depth fails with `reached_max_descendant_pipelines_depth`.
pub const MAX_CHILD_DEPTH: usize = 2;

/// A child pipeline, planned.
#[derive(Debug, Clone)]
pub struct ChildPipeline {
    /// The trigger job that creates it (a job of the parent pipeline).
    pub trigger_job: String,
    /// Its files (`trigger:include`).
    pub include: Vec<String>,
    /// `strategy: depend`/`mirror`: the trigger job waits for it and takes its status.
    pub depend: bool,
    /// 1 for a child of the root pipeline, 2 for a grandchild.
    pub depth: usize,
    /// `CI_PIPELINE_ID` given to it.
    pub pipeline_id: u64,
    /// What it is evaluated with.
    pub context: PipelineContext,
    /// Its configuration (for the rows of `--list`: jobs left out, rule texts).
    pub resolved: ResolvedConfig,
    /// Its jobs.
    pub plan: PipelinePlan,
    /// The child pipelines its own trigger jobs create; none at [`MAX_CHILD_DEPTH`].
    pub children: Vec<ChildPipeline>,
}

/// An error in a child pipeline, naming the trigger job: nothing runs.
fn child_error(trigger_job: &str, include: &[String], e: Error) -> Error {
    Error::Plan {
        errors: vec![format!(
            "trigger job `{trigger_job}`: child pipeline ({}): {e}",
            include.join(", ")
        )],
    }
}

impl ResolvedConfig {
    /// The child pipelines of `plan` (this configuration evaluated for `ctx`), each with its own children.
    ///
    /// `project_variables` are the part of `ctx.pipeline_variables` that are project settings: a child
    /// pipeline has them too, whereas the pipeline's own variables reach it only with
    /// `forward:pipeline_variables`. `next_id` gives each child its `CI_PIPELINE_ID` (and is advanced).
    pub fn child_pipelines(
        &self,
        project_dir: &Path,
        plan: &PipelinePlan,
        ctx: &PipelineContext,
        project_variables: &BTreeMap<String, String>,
        next_id: &mut u64,
    ) -> Result<Vec<ChildPipeline>> {
        self.children_at(project_dir, plan, ctx, project_variables, next_id, 1)
    }

    fn children_at(
        &self,
        project_dir: &Path,
        plan: &PipelinePlan,
        ctx: &PipelineContext,
        project_variables: &BTreeMap<String, String>,
        next_id: &mut u64,
        depth: usize,
    ) -> Result<Vec<ChildPipeline>> {
        if depth > MAX_CHILD_DEPTH || !plan.workflow.created {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for job in &plan.jobs {
            let Some(Trigger::Child {
                include,
                depend,
                forward,
            }) = &job.trigger
            else {
                continue;
            };
            let fail = |e| child_error(&job.name, include, e);
            // A missing file is located at the trigger job's `trigger:include`, which names it already.
            let config = self.child_config(project_dir, job, include)?;
            let pipeline_id = *next_id;
            *next_id += 1;
            let context = ctx.child(job, forward, project_variables, pipeline_id);
            let resolved = config.resolve(&context).map_err(fail)?;
            let plan = resolved.evaluate(&context).map_err(fail)?;
            let children = resolved.children_at(
                project_dir,
                &plan,
                &context,
                project_variables,
                next_id,
                depth + 1,
            )?;
            out.push(ChildPipeline {
                trigger_job: job.name.clone(),
                include: include.clone(),
                depend: *depend,
                depth,
                pipeline_id,
                context,
                resolved,
                plan,
                children,
            });
        }
        Ok(out)
    }

    /// The child's configuration: its one file as the root, or the files as `include:` entries of an
    /// otherwise empty file (what GitLab builds from `trigger:include`). A file that does not exist is
    /// GitLab's include error, located at the trigger job's `trigger:include`.
    fn child_config(
        &self,
        project_dir: &Path,
        job: &PlannedJob,
        include: &[String],
    ) -> Result<crate::PipelineConfig> {
        let cfg = self.jobs.iter().find(|c| c.name == job.base_name);
        for file in include {
            let rel = file.trim_start_matches('/');
            if rel.is_empty() || !project_dir.join(rel).is_file() {
                let location = match cfg {
                    Some(c) => self
                        .job_source(&c.name)
                        .locate(&c.path.key("trigger").key("include")),
                    None => crate::error::Location::default(),
                };
                return Err(Error::config(
                    location,
                    format!("Local file `{rel}` does not exist!"),
                ));
            }
        }
        match include {
            [one] => Pipeline::load(project_dir, one.trim_start_matches('/')),
            many => {
                let text: String = std::iter::once("include:\n".to_string())
                    .chain(many.iter().map(|f| {
                        format!(
                            "  - local: {}\n",
                            serde_json::to_string(f).unwrap_or_default()
                        )
                    }))
                    .collect();
                Pipeline::from_str(project_dir, "trigger:include", &text)
            }
        }
    }
}

impl PipelineContext {
    /// The context of the child pipeline that `trigger_job` (planned in this context) creates: the same
    /// predefined variables with `CI_PIPELINE_SOURCE=parent_pipeline` and the child's id; as pipeline
    /// variables ("trigger variables" in GitLab's precedence), the project variables, then the trigger job's
    /// YAML variables expanded in its context (`forward:yaml_variables`, default on: its own, the global
    /// ones it inherits, matrix and rules ones), then this pipeline's own variables
    /// (`forward:pipeline_variables`, default off), later ones winning (GitLab's
    /// `Ci::Bridge#calculate_downstream_variables`). The files (and changes) are the parent's.
    pub fn child(
        &self,
        trigger_job: &PlannedJob,
        forward: &Forward,
        project_variables: &BTreeMap<String, String>,
        pipeline_id: u64,
    ) -> PipelineContext {
        let mut variables = self.variables.clone();
        variables.insert("CI_PIPELINE_SOURCE".into(), "parent_pipeline".into());
        variables.insert("CI_PIPELINE_ID".into(), pipeline_id.to_string());
        variables.insert("CI_PIPELINE_IID".into(), pipeline_id.to_string());
        let mut pipeline_variables = project_variables.clone();
        if forward.yaml_variables {
            let expanded = expand_all(&trigger_job.variables);
            for (k, v) in &trigger_job.variables {
                if matches!(
                    v.source,
                    VariableSource::Global
                        | VariableSource::JobYaml
                        | VariableSource::Matrix
                        | VariableSource::Rules
                ) {
                    let value = expanded.get(k).cloned().unwrap_or_else(|| v.value.clone());
                    pipeline_variables.insert(k.clone(), value);
                }
            }
        }
        if forward.pipeline_variables {
            for (k, v) in &self.pipeline_variables {
                if project_variables.get(k) != Some(v) {
                    pipeline_variables.insert(k.clone(), v.clone());
                }
            }
        }
        PipelineContext {
            variables,
            pipeline_variables,
            files: self.files.clone(),
        }
    }
}
