//! The whole configuration of one pipeline before evaluation: includes merged, `extends` and `!reference`
//! applied, global keywords (`stages`, `variables`, `workflow`, `default`) and every job parsed and checked
//! (stages exist, `needs`/`dependencies` name defined jobs in current or prior stages).
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use yaml_serde::{Mapping, Value};

use crate::error::{Error, Result};
use crate::files::{FsProjectFiles, ProjectFiles};
use crate::include::{Includer, Sources};
use crate::job::{is_global_keyword, JobConfig, DEFAULT_KEYWORDS};
use crate::plan::PipelineContext;
use crate::rules::{parse_rules, Rule, RuleEnv};
use crate::variables::{parse_variables, VariableSource, VariableValue};
use crate::yaml::{key_str, scalar_string, Source, YPath};

/// A loaded CI file; see [`crate::Pipeline::load`].
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    project_dir: PathBuf,
    source: Source,
    root: Mapping,
}

/// `workflow:`.
#[derive(Debug, Clone, Default)]
pub struct Workflow {
    /// `workflow:rules`.
    pub rules: Option<Vec<Rule>>,
    /// `workflow:name` (may hold variables).
    pub name: Option<String>,
}

/// `default:` (with the deprecated top-level `image`, `services`, `cache`, `before_script`, `after_script`
/// folded in), kept as YAML and applied to each job that lacks the key.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// The keys, as YAML.
    pub raw: Mapping,
}

/// The configuration with includes, `extends` and `!reference` applied and every job parsed.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    /// The merged YAML (what GitLab's "full configuration" view shows), hidden jobs included.
    pub merged: Mapping,
    /// Stages in order, with `.pre` first and `.post` last.
    pub stages: Vec<String>,
    /// Global `variables:`.
    pub variables: BTreeMap<String, VariableValue>,
    /// `workflow:`.
    pub workflow: Workflow,
    /// `default:`.
    pub defaults: Defaults,
    /// Visible jobs, in file order.
    pub jobs: Vec<JobConfig>,
    /// Files read (the root file first), relative to the project directory.
    pub files: Vec<PathBuf>,
    pub(crate) sources: Sources,
}

impl PipelineConfig {
    pub(crate) fn new(project_dir: PathBuf, source: Source, root: Mapping) -> Self {
        PipelineConfig {
            project_dir,
            source,
            root,
        }
    }

    /// The project directory.
    pub fn project_dir(&self) -> &Path {
        &self.project_dir
    }

    /// The root file, relative to the project directory.
    pub fn file(&self) -> &Path {
        &self.source.file
    }

    /// The file lister the context gives, or the project directory's files.
    pub(crate) fn files_for(&self, ctx: &PipelineContext) -> Arc<dyn ProjectFiles> {
        ctx.files
            .clone()
            .unwrap_or_else(|| Arc::new(FsProjectFiles::new(&self.project_dir, None)))
    }

    /// Applies includes (whose `rules:` see the context's variables and files), `extends`, `!reference`
    /// and `default:`, and parses every job.
    pub fn resolve(&self, ctx: &PipelineContext) -> Result<ResolvedConfig> {
        let files = self.files_for(ctx);
        let (raw, expanded) = ctx.base_variables();
        let env = RuleEnv {
            vars: &raw,
            expanded: &expanded,
            files: files.as_ref(),
            changes_apply: ctx.changes_apply(),
        };
        let mut inc = Includer::new(&self.project_dir, &env, self.source.clone());
        let mut merged = inc.expand(self.root.clone(), 0)?;
        let sources = inc.sources;
        let locate = |p: &YPath| sources.locate(p);
        crate::extends::apply(&mut merged, &locate)?;
        let merged = crate::reference::resolve(&merged, &locate)?;
        ResolvedConfig::from_merged(merged, sources)
    }

    /// Resolves and evaluates for one pipeline: see [`ResolvedConfig::evaluate`].
    pub fn evaluate(&self, ctx: &PipelineContext) -> Result<crate::PipelinePlan> {
        let files = self.files_for(ctx);
        self.resolve(ctx)?.evaluate_with(ctx, files.as_ref())
    }
}

impl ResolvedConfig {
    fn from_merged(merged: Mapping, sources: Sources) -> Result<Self> {
        let root_src = sources.list[0].clone();
        let src_of = |k: &str| sources.source_for(k).clone();
        // stages
        let stages_v = merged.get("stages").or(merged.get("types"));
        let mut stages: Vec<String> = match stages_v {
            None | Some(Value::Null) => vec!["build".into(), "test".into(), "deploy".into()],
            Some(Value::Sequence(s)) => {
                // Nested arrays (from anchors or `!reference`) are flattened (docs: "stages", GitLab 16.9).
                fn walk(
                    s: &[Value],
                    path: &YPath,
                    src: &crate::yaml::Source,
                    depth: usize,
                    out: &mut Vec<String>,
                ) -> Result<()> {
                    for (i, v) in s.iter().enumerate() {
                        match v {
                            Value::Sequence(inner) if depth < 10 => {
                                walk(inner, &path.index(i), src, depth + 1, out)?
                            }
                            v => out.push(scalar_string(v).ok_or_else(|| {
                                Error::config(
                                    src.locate(&path.index(i)),
                                    "stages config should be an array of strings",
                                )
                            })?),
                        }
                    }
                    Ok(())
                }
                let mut out = Vec::new();
                walk(
                    s,
                    &YPath::root().key("stages"),
                    &src_of("stages"),
                    0,
                    &mut out,
                )?;
                out
            }
            Some(_) => {
                return Err(Error::config(
                    src_of("stages").locate(&YPath::root().key("stages")),
                    "stages config should be an array of strings",
                ))
            }
        };
        if !stages.iter().any(|s| s == ".pre") {
            stages.insert(0, ".pre".into());
        }
        if !stages.iter().any(|s| s == ".post") {
            stages.push(".post".into());
        }
        // variables
        let variables = match merged.get("variables") {
            Some(v) => parse_variables(
                v,
                &YPath::root().key("variables"),
                &src_of("variables"),
                VariableSource::Global,
                true,
            )?,
            None => BTreeMap::new(),
        };
        // workflow
        let mut workflow = Workflow::default();
        if let Some(w) = merged.get("workflow") {
            let wsrc = src_of("workflow");
            let wp = YPath::root().key("workflow");
            let Value::Mapping(wm) = w else {
                return Err(Error::config(
                    wsrc.locate(&wp),
                    "workflow config should be a hash",
                ));
            };
            for (k, v) in wm {
                match key_str(k) {
                    Some("rules") => {
                        workflow.rules = Some(parse_rules(v, &wp.key("rules"), &wsrc, "workflow")?)
                    }
                    Some("name") => workflow.name = scalar_string(v),
                    Some("auto_cancel") => {}
                    other => {
                        return Err(Error::config(
                            wsrc.locate(&wp),
                            format!(
                                "workflow config contains unknown keys: {}",
                                other.unwrap_or("?")
                            ),
                        ))
                    }
                }
            }
        }
        // default (and the deprecated global keywords)
        let mut defaults = Mapping::new();
        if let Some(d) = merged.get("default") {
            let dsrc = src_of("default");
            let Value::Mapping(dm) = d else {
                return Err(Error::config(
                    dsrc.locate(&YPath::root().key("default")),
                    "default config should be a hash",
                ));
            };
            let unknown: Vec<&str> = dm
                .keys()
                .filter_map(key_str)
                .filter(|k| !DEFAULT_KEYWORDS.contains(k))
                .collect();
            if !unknown.is_empty() {
                return Err(Error::config(
                    dsrc.locate(&YPath::root().key("default")),
                    format!(
                        "default config contains unknown keys: {}",
                        unknown.join(", ")
                    ),
                ));
            }
            defaults = dm.clone();
        }
        for k in [
            "image",
            "services",
            "cache",
            "before_script",
            "after_script",
        ] {
            if let Some(v) = merged.get(k) {
                if !defaults.contains_key(k) {
                    defaults.insert(Value::String(k.into()), v.clone());
                }
            }
        }
        // jobs
        let mut jobs = Vec::new();
        for (k, v) in &merged {
            let Some(name) = key_str(k) else {
                return Err(Error::config(
                    root_src.locate(&YPath::root()),
                    "jobs config should contain only string keys",
                ));
            };
            if is_global_keyword(name) || name.starts_with('.') {
                continue;
            }
            jobs.push(JobConfig::parse(name, v, &defaults, &src_of(name))?);
        }
        if jobs.is_empty() {
            return Err(Error::config(
                root_src.locate(&YPath::root()),
                "jobs config should contain at least one visible job",
            ));
        }
        let cfg = ResolvedConfig {
            files: sources.list.iter().map(|s| s.file.clone()).collect(),
            merged,
            stages,
            variables,
            workflow,
            defaults: Defaults { raw: defaults },
            jobs,
            sources,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub(crate) fn stage_index(&self, stage: &str) -> Option<usize> {
        self.stages.iter().position(|s| s == stage)
    }

    /// GitLab's static checks (`Gitlab::Ci::YamlProcessor#validate_job!`): stages exist, `needs` and
    /// `dependencies` name defined jobs of current or prior stages, dependencies are part of needs.
    fn validate(&self) -> Result<()> {
        let by_name: HashMap<&str, &JobConfig> =
            self.jobs.iter().map(|j| (j.name.as_str(), j)).collect();
        for job in &self.jobs {
            let src = self.sources.source_for(&job.name);
            let Some(own) = self.stage_index(&job.stage) else {
                let stages: Vec<&str> = self.stages.iter().map(String::as_str).collect();
                return Err(Error::config(
                    src.locate(&job.path.key("stage")),
                    format!(
                        "{} job: chosen stage {} does not exist; available stages are {}",
                        job.name,
                        job.stage,
                        stages.join(", ")
                    ),
                ));
            };
            if let Some(deps) = &job.dependencies {
                for (i, d) in deps.iter().enumerate() {
                    let loc = src.locate(&job.path.key("dependencies").index(i));
                    match by_name.get(d.as_str()) {
                        None => return Err(Error::config(loc, format!("{} job: undefined dependency: {d}", job.name))),
                        Some(t) if self.stage_index(&t.stage).is_some_and(|s| s > own) => {
                            return Err(Error::config(
                                loc,
                                format!("{} job: dependency {d} is not defined in current or prior stages", job.name),
                            ))
                        }
                        _ => {}
                    }
                    if let Some(needs) = &job.needs {
                        if !needs.iter().any(|n| &n.job == d) {
                            return Err(Error::config(
                                loc,
                                format!(
                                    "jobs:{} dependencies the {d} should be part of needs",
                                    job.name
                                ),
                            ));
                        }
                    }
                }
            }
            if let Some(needs) = &job.needs {
                for (i, n) in needs.iter().enumerate() {
                    // A job of another pipeline (`needs:pipeline:job`) is checked when that one runs.
                    if n.pipeline.is_some() {
                        continue;
                    }
                    let loc = src.locate(&job.path.key("needs").index(i));
                    match by_name.get(n.job.as_str()) {
                        // An optional need on a job that an include's rules left out is ignored (GitLab's
                        // `validate_job_dependency!`; docs: "needs:optional").
                        None if n.optional => {}
                        None => {
                            return Err(Error::config(
                                loc,
                                format!("{} job: undefined need: {}", job.name, n.job),
                            ))
                        }
                        Some(t) if self.stage_index(&t.stage).is_some_and(|s| s > own) => {
                            return Err(Error::config(
                                loc,
                                format!(
                                    "{} job: need {} is not defined in current or prior stages",
                                    job.name, n.job
                                ),
                            ))
                        }
                        _ => {}
                    }
                }
                // The same job listed twice (with the same `parallel:matrix` filter) is an error.
                let mut dups: Vec<&str> = Vec::new();
                for (i, n) in needs.iter().enumerate() {
                    if needs[..i]
                        .iter()
                        .any(|m| m.job == n.job && m.matrix == n.matrix && m.pipeline == n.pipeline)
                        && !dups.contains(&n.job.as_str())
                    {
                        dups.push(&n.job);
                    }
                }
                if !dups.is_empty() {
                    return Err(Error::config(
                        src.locate(&job.path.key("needs")),
                        format!(
                            "{} has the following needs duplicated: {}.",
                            job.name,
                            dups.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn job_source(&self, name: &str) -> &Source {
        self.sources.source_for(name)
    }
}
