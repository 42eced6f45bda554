//! Evaluation of a resolved configuration for one pipeline: `workflow:rules`, each job's `rules:` or
//! `only`/`except`, `parallel:` expansion, variable precedence, and `needs` as a validated DAG. The result,
//! [`PipelinePlan`], is what the local coordinator serves and what `runwright exec --list/--json` shows.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::config::ResolvedConfig;
use crate::error::{Error, Result};
use crate::files::ProjectFiles;
use crate::job::{
    AllowFailure, Artifacts, Cache, Environment, Image, JobConfig, Need, Retry, Service, Trigger,
    When,
};
use crate::matrix::{self, row_combinations, Instance};
use crate::rules::{first_match, policy_satisfied, RefEnv, RuleEnv};
use crate::variables::{expand_all, expand_variables, VariableSource, VariableValue};

/// What a pipeline is evaluated for.
#[derive(Clone, Default)]
pub struct PipelineContext {
    /// Predefined variables (`CI_COMMIT_BRANCH`, `CI_COMMIT_REF_NAME`, `CI_COMMIT_TAG`, `CI_PIPELINE_SOURCE`,
    /// `CI_DEFAULT_BRANCH`, …), lowest precedence.
    pub variables: BTreeMap<String, String>,
    /// Pipeline variables (`--variable`, schedule/trigger/project variables): highest precedence.
    pub pipeline_variables: BTreeMap<String, String>,
    /// The project's files and changed files; `None`: the project directory, changes unknown.
    pub files: Option<Arc<dyn ProjectFiles>>,
}

impl std::fmt::Debug for PipelineContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineContext")
            .field("variables", &self.variables)
            .field("pipeline_variables", &self.pipeline_variables)
            .field("files", &self.files.as_ref().map(|_| "…"))
            .finish()
    }
}

impl PipelineContext {
    /// A context with predefined variables only.
    pub fn new(variables: BTreeMap<String, String>) -> Self {
        PipelineContext {
            variables,
            ..Self::default()
        }
    }

    /// Sets the file lister.
    pub fn with_files(mut self, files: Arc<dyn ProjectFiles>) -> Self {
        self.files = Some(files);
        self
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.pipeline_variables
            .get(name)
            .or_else(|| self.variables.get(name))
            .map(String::as_str)
    }

    /// `CI_PIPELINE_SOURCE` (default `push`).
    pub fn source(&self) -> &str {
        self.var("CI_PIPELINE_SOURCE").unwrap_or("push")
    }

    /// `changes:` applies to branch pushes and merge request pipelines; elsewhere (tags, schedules, web, …) it
    /// is true (GitLab docs, "rules:changes").
    pub(crate) fn changes_apply(&self) -> bool {
        let is_tag = self.var("CI_COMMIT_TAG").is_some_and(|t| !t.is_empty());
        !is_tag
            && matches!(
                self.source(),
                "push" | "merge_request_event" | "external_pull_request_event"
            )
    }

    /// Predefined and pipeline variables, as written and expanded: what include rules see.
    pub(crate) fn base_variables(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let mut layer = BTreeMap::new();
        push_layer(&mut layer, &self.variables, VariableSource::Predefined);
        push_layer(
            &mut layer,
            &self.pipeline_variables,
            VariableSource::Pipeline,
        );
        (raw_values(&layer), expand_all(&layer))
    }

    fn ref_env(&self) -> RefEnv<'_> {
        let is_tag = self.var("CI_COMMIT_TAG").is_some_and(|t| !t.is_empty());
        let is_mr = self.source() == "merge_request_event";
        RefEnv {
            ref_name: self
                .var("CI_COMMIT_REF_NAME")
                .or(self.var("CI_COMMIT_TAG"))
                .or(self.var("CI_COMMIT_BRANCH"))
                .unwrap_or(""),
            is_tag,
            is_branch: !is_tag && !is_mr,
            source: self.source(),
        }
    }
}

fn push_layer(
    into: &mut BTreeMap<String, VariableValue>,
    from: &BTreeMap<String, String>,
    source: VariableSource,
) {
    for (k, v) in from {
        into.insert(
            k.clone(),
            VariableValue {
                value: v.clone(),
                expand: true,
                description: None,
                source,
            },
        );
    }
}

/// The outcome of `workflow:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkflowOutcome {
    /// Whether a pipeline is created.
    pub created: bool,
    /// `workflow:name`, expanded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why no pipeline is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Which clause decided that a job is in the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RuleOutcome {
    /// No `rules`/`only`/`except`: GitLab's default `only: [branches, tags]`.
    Default,
    /// `rules[index]` matched.
    Rule {
        /// 0-based index in the flattened `rules:`.
        index: usize,
    },
    /// `only`/`except` matched.
    OnlyExcept,
}

/// One `needs:` edge of a planned job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedNeed {
    /// The concrete job (a `parallel` job's instance name).
    pub job: String,
    /// Whether its artifacts are downloaded.
    pub artifacts: bool,
    /// `optional:`.
    pub optional: bool,
}

/// `needs:pipeline:job`: artifacts of a job of another pipeline of the parent-child hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipelineNeed {
    /// The pipeline's id, expanded (`$PARENT_PIPELINE_ID` → `1`).
    pub pipeline: String,
    /// The job there.
    pub job: String,
    /// Whether its artifacts are downloaded.
    pub artifacts: bool,
}

/// A job of the pipeline, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedJob {
    /// Name (GitLab's `test 1/3`, `build: [linux, amd64]` for parallel jobs).
    pub name: String,
    /// The job's name in the file.
    pub base_name: String,
    /// Stage.
    pub stage: String,
    /// Stage position in [`PipelinePlan::stages`].
    pub stage_index: usize,
    /// `hooks:pre_get_sources_script`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pre_get_sources_script: Vec<String>,
    /// `before_script`.
    pub before_script: Vec<String>,
    /// `script`.
    pub script: Vec<String>,
    /// `after_script`.
    pub after_script: Vec<String>,
    /// `run:` (CI Steps), as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<Vec<serde_json::Value>>,
    /// Every variable of the job, each with its winning source (GitLab's precedence).
    pub variables: BTreeMap<String, VariableValue>,
    /// `when`.
    pub when: When,
    /// `start_in` of a delayed job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_in: Option<String>,
    /// Whether a failure is allowed (for any exit code unless `allow_failure_exit_codes` is set).
    pub allow_failure: bool,
    /// `allow_failure:exit_codes`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_failure_exit_codes: Vec<i64>,
    /// `needs`: `None` means "all jobs of earlier stages".
    pub needs: Option<Vec<PlannedNeed>>,
    /// Jobs whose artifacts are downloaded (`dependencies`, or derived from `needs`, or all earlier stages
    /// when `None`).
    pub dependencies: Option<Vec<String>>,
    /// `needs:pipeline:job`: jobs of other pipelines whose artifacts are downloaded too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pipeline_needs: Vec<PipelineNeed>,
    /// `artifacts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Artifacts>,
    /// `cache`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache: Vec<Cache>,
    /// `image`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// `services`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// `timeout` in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// `retry`.
    pub retry: Retry,
    /// `CI_NODE_INDEX`/`CI_NODE_TOTAL` (1-based) of a parallel job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel: Option<(usize, usize)>,
    /// `parallel:matrix` variables of this instance, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matrix: Vec<(String, String)>,
    /// `tags`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `resource_group` (expanded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    /// `interruptible`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interruptible: Option<bool>,
    /// `coverage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<String>,
    /// `environment`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// `trigger`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// What put it in the pipeline.
    pub rule: RuleOutcome,
    /// Notes (keywords not acted on offline).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A job left out of the pipeline, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExcludedJob {
    /// Name.
    pub name: String,
    /// Why (`no rule matched`, `rules[0]: when: never`, `except`, …).
    pub reason: String,
}

/// The jobs of one pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelinePlan {
    /// `workflow:` outcome.
    pub workflow: WorkflowOutcome,
    /// Stages in order (`.pre` … `.post`).
    pub stages: Vec<String>,
    /// Jobs, by stage then file order.
    pub jobs: Vec<PlannedJob>,
    /// Jobs that rules, `only`/`except` or `when: never` left out.
    pub excluded: Vec<ExcludedJob>,
}

impl PipelinePlan {
    /// A job by name.
    pub fn job(&self, name: &str) -> Option<&PlannedJob> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// Concrete job names (and matrix values) of each job of the file.
type Instances<'a> = HashMap<&'a str, Vec<(String, Vec<(String, String)>)>>;

/// A planned job with its `rules:needs`, or why it is left out.
type Planned = std::result::Result<(PlannedJob, Option<Vec<Need>>), String>;

const NOT_CREATED_NO_JOBS: &str = "Pipeline will not run for the selected trigger. The rules configuration prevented any jobs from being added to the pipeline.";

impl ResolvedConfig {
    /// Evaluates for one pipeline with the context's file lister (or none: `exists:` sees no files).
    pub fn evaluate(&self, ctx: &PipelineContext) -> Result<PipelinePlan> {
        let empty = crate::files::StaticProjectFiles::default();
        match &ctx.files {
            Some(f) => self.evaluate_with(ctx, f.as_ref()),
            None => self.evaluate_with(ctx, &empty),
        }
    }

    pub(crate) fn evaluate_with(
        &self,
        ctx: &PipelineContext,
        files: &dyn ProjectFiles,
    ) -> Result<PipelinePlan> {
        let changes_apply = ctx.changes_apply();
        // Global layer: predefined < global YAML (< workflow rule variables) < pipeline variables.
        let mut global = BTreeMap::new();
        push_layer(&mut global, &ctx.variables, VariableSource::Predefined);
        for (k, v) in &self.variables {
            global.insert(k.clone(), v.clone());
        }
        let mut with_pipeline = global.clone();
        push_layer(
            &mut with_pipeline,
            &ctx.pipeline_variables,
            VariableSource::Pipeline,
        );
        let mut workflow = WorkflowOutcome {
            created: true,
            name: None,
            reason: None,
        };
        let mut global_yaml = self.variables.clone();
        if let Some(rules) = &self.workflow.rules {
            let raw = raw_values(&with_pipeline);
            let expanded = expand_all(&with_pipeline);
            let env = RuleEnv {
                vars: &raw,
                expanded: &expanded,
                files,
                changes_apply,
            };
            match first_match(rules, &env)? {
                Some(r) if r.when.as_deref() != Some("never") => {
                    for (k, v) in &r.variables {
                        let mut v = v.clone();
                        v.source = VariableSource::Global;
                        global_yaml.insert(k.clone(), v.clone());
                        with_pipeline
                            .entry(k.clone())
                            .and_modify(|e| {
                                if e.source != VariableSource::Pipeline {
                                    *e = v.clone()
                                }
                            })
                            .or_insert(v);
                    }
                }
                _ => {
                    workflow.created = false;
                    workflow.reason = Some("Pipeline filtered out by workflow rules.".into());
                }
            }
        }
        if let Some(name) = &self.workflow.name {
            let vars = expand_all(&with_pipeline);
            // Leading and trailing spaces are removed; an empty name is no name (docs: "workflow:name").
            let name = expand_variables(name, &|n| vars.get(n).cloned())
                .trim()
                .to_string();
            workflow.name = (!name.is_empty()).then_some(name);
        }
        if !workflow.created {
            return Ok(PipelinePlan {
                workflow,
                stages: self.stages.clone(),
                jobs: Vec::new(),
                excluded: Vec::new(),
            });
        }

        let refs = ctx.ref_env();
        let mut jobs = Vec::new();
        let mut excluded = Vec::new();
        let mut instances_of: Instances<'_> = HashMap::new();
        for job in &self.jobs {
            let src = self.job_source(&job.name);
            let instances = matrix::expand(&job.name, job.parallel.as_ref()).map_err(|n| {
                Error::config(
                    src.locate(&job.path.key("parallel").key("matrix")),
                    format!(
                        "jobs:{}:parallel:matrix config generates too many jobs (maximum is {}): {n}",
                        job.name,
                        matrix::MAX_PARALLEL
                    ),
                )
            })?;
            for inst in instances {
                match self.plan_instance(
                    job,
                    &inst,
                    ctx,
                    &global_yaml,
                    files,
                    &refs,
                    changes_apply,
                )? {
                    Ok((p, rule_needs)) => {
                        instances_of
                            .entry(job.name.as_str())
                            .or_default()
                            .push((p.name.clone(), p.matrix.clone()));
                        jobs.push((p, rule_needs));
                    }
                    Err(reason) => excluded.push(ExcludedJob {
                        name: inst.name.clone(),
                        reason,
                    }),
                }
            }
        }
        jobs.sort_by_key(|(j, _)| j.stage_index);

        // needs and dependencies, by concrete names.
        let mut errors = Vec::new();
        let stage_of: HashMap<String, usize> = jobs
            .iter()
            .map(|(j, _)| (j.name.clone(), j.stage_index))
            .collect();
        let jobs: Vec<PlannedJob> = jobs
            .into_iter()
            .map(|(mut job, rule_needs)| {
                let cfg = self.jobs.iter().find(|c| c.name == job.base_name);
                let needs = rule_needs.or_else(|| cfg.and_then(|c| c.needs.clone()));
                self.resolve_needs(&mut job, cfg, needs, &instances_of, &stage_of, &mut errors);
                job
            })
            .collect();
        if let Some(cycle) = find_cycle(&jobs) {
            errors.push(format!(
                "The pipeline has circular dependencies: {}",
                cycle.join(" -> ")
            ));
        }
        if !errors.is_empty() {
            return Err(Error::Plan { errors });
        }
        if jobs.is_empty() {
            workflow.created = false;
            workflow.reason = Some(NOT_CREATED_NO_JOBS.into());
        } else if jobs.iter().all(|j| j.stage == ".pre" || j.stage == ".post") {
            workflow.created = false;
            workflow.reason = Some(
                "The pipeline has only jobs in the .pre and .post stages, so it does not run."
                    .into(),
            );
        }
        Ok(PipelinePlan {
            workflow,
            stages: self.stages.clone(),
            jobs,
            excluded,
        })
    }

    /// Resolves `needs` (and `dependencies`) of one job to concrete job names, collecting GitLab's errors.
    fn resolve_needs(
        &self,
        job: &mut PlannedJob,
        cfg: Option<&JobConfig>,
        needs: Option<Vec<Need>>,
        instances_of: &Instances<'_>,
        stage_of: &HashMap<String, usize>,
        errors: &mut Vec<String>,
    ) {
        {
            if let Some(needs) = needs {
                let (other, needs): (Vec<Need>, Vec<Need>) =
                    needs.into_iter().partition(|n| n.pipeline.is_some());
                if !other.is_empty() {
                    let vars = expand_all(&job.variables);
                    job.pipeline_needs = other
                        .into_iter()
                        .map(|n| PipelineNeed {
                            pipeline: expand_variables(
                                n.pipeline.as_deref().unwrap_or_default(),
                                &|v| vars.get(v).cloned(),
                            ),
                            job: n.job,
                            artifacts: n.artifacts,
                        })
                        .collect();
                }
                let mut out = Vec::new();
                for n in &needs {
                    let Some(insts) = instances_of.get(n.job.as_str()) else {
                        // An optional need may be absent: left out by rules, or by an include's rules.
                        if n.optional {
                            continue;
                        }
                        if !self.jobs.iter().any(|c| c.name == n.job) {
                            errors.push(format!("{} job: undefined need: {}", job.name, n.job));
                        } else {
                            errors.push(format!(
                                "'{}' job needs '{}' job, but '{}' does not exist in the pipeline. This might be because of the only, except, or rules keywords. To need a job that sometimes does not exist in the pipeline, use needs:optional.",
                                job.name, n.job, n.job
                            ));
                        }
                        continue;
                    };
                    let wanted: Vec<&String> = match &n.matrix {
                        None => insts.iter().map(|(name, _)| name).collect(),
                        Some(rows) => {
                            let combos: Vec<Vec<(String, String)>> =
                                rows.iter().flat_map(|r| row_combinations(r)).collect();
                            let names: Vec<&String> = insts
                                .iter()
                                .filter(|(_, vars)| combos.iter().any(|c| c == vars))
                                .map(|(name, _)| name)
                                .collect();
                            if names.is_empty() && !n.optional {
                                errors.push(format!(
                                    "'{}' job needs '{}' job, but '{}' does not exist in the pipeline. This might be because of the only, except, or rules keywords. To need a job that sometimes does not exist in the pipeline, use needs:optional.",
                                    job.name,
                                    crate::matrix::matrix_name(&n.job, combos.first().map(Vec::as_slice).unwrap_or(&[])),
                                    n.job
                                ));
                            }
                            names
                        }
                    };
                    for w in wanted {
                        if stage_of.get(w).is_some_and(|s| *s > job.stage_index) {
                            errors.push(format!(
                                "{} job: need {} is not defined in current or prior stages",
                                job.name, n.job
                            ));
                        }
                        out.push(PlannedNeed {
                            job: w.clone(),
                            artifacts: n.artifacts,
                            optional: n.optional,
                        });
                    }
                }
                if job.dependencies.is_none() {
                    job.dependencies = Some(
                        out.iter()
                            .filter(|n| n.artifacts)
                            .map(|n| n.job.clone())
                            .collect(),
                    );
                }
                job.needs = Some(out);
            }
            if let Some(deps) = cfg.and_then(|c| c.dependencies.clone()) {
                let mut out = Vec::new();
                for d in deps {
                    if let Some(insts) = instances_of.get(d.as_str()) {
                        out.extend(insts.iter().map(|(n, _)| n.clone()));
                    } else {
                        job.notes
                            .push(format!("dependency `{d}` is not in this pipeline"));
                    }
                }
                job.dependencies = Some(out);
            }
        }
    }

    /// One concrete job: `Ok(Err(reason))` when rules leave it out.
    #[allow(clippy::too_many_arguments)]
    fn plan_instance(
        &self,
        job: &JobConfig,
        inst: &Instance,
        ctx: &PipelineContext,
        global_yaml: &BTreeMap<String, VariableValue>,
        files: &dyn ProjectFiles,
        refs: &RefEnv<'_>,
        changes_apply: bool,
    ) -> Result<Planned> {
        let src = self.job_source(&job.name);
        let mut vars: BTreeMap<String, VariableValue> = BTreeMap::new();
        push_layer(&mut vars, &ctx.variables, VariableSource::Predefined);
        let mut job_pre = BTreeMap::new();
        job_pre.insert("CI_JOB_NAME".to_string(), inst.name.clone());
        job_pre.insert("CI_JOB_NAME_SLUG".to_string(), slug(&inst.name));
        job_pre.insert("CI_JOB_STAGE".to_string(), job.stage.clone());
        if let Some((i, n)) = inst.node {
            job_pre.insert("CI_NODE_INDEX".to_string(), i.to_string());
            job_pre.insert("CI_NODE_TOTAL".to_string(), n.to_string());
        }
        push_layer(&mut vars, &job_pre, VariableSource::Job);
        for (k, v) in global_yaml {
            if job.inherit_variables.allows(k) {
                vars.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in &job.variables {
            vars.insert(k.clone(), v.clone());
        }
        let matrix: BTreeMap<String, String> = inst.vars.iter().cloned().collect();
        push_layer(&mut vars, &matrix, VariableSource::Matrix);
        push_layer(&mut vars, &ctx.pipeline_variables, VariableSource::Pipeline);

        let raw = raw_values(&vars);
        let expanded = expand_all(&vars);
        let env = RuleEnv {
            vars: &raw,
            expanded: &expanded,
            files,
            changes_apply,
        };
        let mut when = job.when.unwrap_or_default();
        let mut allow_failure = job.allow_failure.clone();
        let mut start_in = job.start_in.clone();
        let mut interruptible = job.interruptible;
        let mut rule_needs = None;
        // Whether the matching rule set `when:` itself (its `manual` defaults to `allow_failure: false`).
        let mut when_from_rule = false;
        let outcome;
        if let Some(rules) = &job.rules {
            let Some((index, r)) = rules
                .iter()
                .enumerate()
                .map(|(i, r)| crate::rules::rule_matches(r, &env).map(|m| (i, r, m)))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .find(|(_, _, m)| *m)
                .map(|(i, r, _)| (i, r))
            else {
                return Ok(Err("no rule matched".into()));
            };
            if let Some(w) = &r.when {
                when = When::parse(w).unwrap_or_default();
                when_from_rule = true;
            }
            if when == When::Never {
                return Ok(Err(format!("rules[{index}]: when: never")));
            }
            if let Some(a) = r.allow_failure {
                allow_failure = Some(AllowFailure::Bool(a));
            }
            if r.start_in.is_some() {
                start_in = r.start_in.clone();
            }
            if r.interruptible.is_some() {
                interruptible = r.interruptible;
            }
            for (k, v) in &r.variables {
                if vars
                    .get(k)
                    .is_none_or(|e| e.source != VariableSource::Pipeline)
                {
                    vars.insert(k.clone(), v.clone());
                }
            }
            if let Some(n) = &r.needs {
                let mut notes = Vec::new();
                rule_needs = Some(crate::job::parse_needs(
                    n,
                    &job.path.key("rules").index(index).key("needs"),
                    src,
                    &mut notes,
                )?);
            }
            outcome = RuleOutcome::Rule { index };
        } else {
            // Without `only`, GitLab applies `only: [branches, tags]` (also when `except` is set), unless
            // `workflow:rules` exist: they replace that default (GitLab's `Processable#compose!`; docs:
            // ci/yaml/workflow, "Switch between branch pipelines and merge request pipelines").
            let default_only;
            let only = match &job.only {
                None if self.workflow.rules.is_some() => None,
                None => {
                    default_only = crate::rules::Policy {
                        refs: Some(vec!["branches".into(), "tags".into()]),
                        ..Default::default()
                    };
                    Some(&default_only)
                }
                o => o.as_ref(),
            };
            if let Some(o) = only {
                if !policy_satisfied(o, refs, &env)? {
                    return Ok(Err("only: not satisfied".into()));
                }
            }
            if let Some(e) = &job.except {
                if except_matches(e, refs, &env)? {
                    return Ok(Err("except: satisfied".into()));
                }
            }
            outcome = if job.only.is_none() && job.except.is_none() {
                RuleOutcome::Default
            } else {
                RuleOutcome::OnlyExcept
            };
            if when == When::Never {
                return Ok(Err("when: never".into()));
            }
        }
        if when == When::Delayed && start_in.is_none() {
            return Err(Error::config(
                src.locate(&job.path),
                format!("jobs:{} start in should be a duration", job.name),
            ));
        }
        let (allow, codes) = match &allow_failure {
            Some(AllowFailure::Bool(b)) => (*b, Vec::new()),
            Some(AllowFailure::ExitCodes { exit_codes }) => (false, exit_codes.clone()),
            // docs ("allow_failure"): `true` for manual jobs, `false` for jobs that use `when: manual` inside
            // `rules` (a job-level `when: manual` with rules that set no `when` stays a manual job).
            None => (when == When::Manual && !when_from_rule, Vec::new()),
        };
        let expanded = expand_all(&vars);
        let mut notes = job.notes.clone();
        if job.image.is_some() || !job.services.is_empty() {
            notes.push("`image`/`services` need the docker executor".into());
        }
        Ok(Ok((
            PlannedJob {
                name: inst.name.clone(),
                base_name: job.name.clone(),
                stage: job.stage.clone(),
                stage_index: self.stage_index(&job.stage).unwrap_or(0),
                pre_get_sources_script: job.pre_get_sources_script.clone(),
                run: job.run.clone(),
                before_script: job.before_script.clone(),
                script: job.script.clone(),
                after_script: job.after_script.clone(),
                variables: vars,
                when,
                start_in,
                allow_failure: allow,
                allow_failure_exit_codes: codes,
                needs: None,
                dependencies: None,
                pipeline_needs: Vec::new(),
                artifacts: job.artifacts.clone(),
                cache: job.cache.clone(),
                image: job.image.clone(),
                services: job.services.clone(),
                timeout: job.timeout,
                retry: job.retry.clone(),
                parallel: inst.node,
                matrix: inst.vars.clone(),
                tags: job
                    .tags
                    .iter()
                    .map(|t| expand_variables(t, &|n| expanded.get(n).cloned()))
                    .collect(),
                resource_group: job
                    .resource_group
                    .as_ref()
                    .map(|r| expand_variables(r, &|n| expanded.get(n).cloned())),
                interruptible,
                coverage: job.coverage.clone(),
                environment: job.environment.clone().map(|mut e| {
                    e.name = expand_variables(&e.name, &|n| expanded.get(n).cloned());
                    e
                }),
                trigger: job.trigger.clone(),
                rule: outcome,
                notes,
            },
            rule_needs,
        )))
    }
}

/// The values as written (what `rules:if` compares).
fn raw_values(vars: &BTreeMap<String, VariableValue>) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect()
}

/// `except`: the job is left out when any of its parts holds (GitLab's `none_of_except?`).
fn except_matches(p: &crate::rules::Policy, refs: &RefEnv<'_>, env: &RuleEnv<'_>) -> Result<bool> {
    let parts = [
        p.refs.as_ref().map(|r| crate::rules::Policy {
            refs: Some(r.clone()),
            location: p.location.clone(),
            ..Default::default()
        }),
        p.variables.as_ref().map(|v| crate::rules::Policy {
            variables: Some(v.clone()),
            location: p.location.clone(),
            ..Default::default()
        }),
        p.changes.as_ref().map(|c| crate::rules::Policy {
            changes: Some(c.clone()),
            location: p.location.clone(),
            ..Default::default()
        }),
    ];
    for part in parts.into_iter().flatten() {
        if policy_satisfied(&part, refs, env)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// GitLab's slugs (`CI_JOB_NAME_SLUG`, `CI_COMMIT_REF_SLUG`, `CI_PROJECT_PATH_SLUG`): lowercased,
/// non-alphanumerics to `-`, at most 63 bytes, no leading/trailing `-`.
pub fn slug(name: &str) -> String {
    let s: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let s: String = s.chars().take(63).collect();
    s.trim_matches('-').to_string()
}

/// A cycle in `needs`, if any, as job names.
fn find_cycle(jobs: &[PlannedJob]) -> Option<Vec<String>> {
    let edges: HashMap<&str, Vec<&str>> = jobs
        .iter()
        .map(|j| {
            (
                j.name.as_str(),
                j.needs.iter().flatten().map(|n| n.job.as_str()).collect(),
            )
        })
        .collect();
    let mut done: HashSet<&str> = HashSet::new();
    for j in jobs {
        let mut stack: Vec<&str> = Vec::new();
        if let Some(c) = dfs(j.name.as_str(), &edges, &mut stack, &mut done) {
            return Some(c);
        }
    }
    None
}

fn dfs<'a>(
    node: &'a str,
    edges: &HashMap<&'a str, Vec<&'a str>>,
    stack: &mut Vec<&'a str>,
    done: &mut HashSet<&'a str>,
) -> Option<Vec<String>> {
    if let Some(pos) = stack.iter().position(|n| *n == node) {
        let mut c: Vec<String> = stack[pos..].iter().map(|s| s.to_string()).collect();
        c.push(node.to_string());
        return Some(c);
    }
    if done.contains(node) {
        return None;
    }
    stack.push(node);
    for next in edges.get(node).into_iter().flatten() {
        if let Some(c) = dfs(next, edges, stack, done) {
            return Some(c);
        }
    }
    stack.pop();
    done.insert(node);
    None
}
