//! The `.gitlab-ci.yml` pipeline model, with GitLab's semantics (docs.gitlab.com/ci/yaml is the truth).
//!
//! This crate turns a project's CI file into the jobs of one pipeline, without running anything:
//!
//! 1. [`Pipeline::load`] reads the root file (YAML anchors, aliases and `<<` merges);
//! 2. [`PipelineConfig::resolve`] expands `include:` (local files, with `rules:`), `extends:` and `!reference`,
//!    applies `default:` and parses every job ([`ResolvedConfig`], also what `runwright lint` prints);
//! 3. [`PipelineConfig::evaluate`] applies `workflow:rules`, job `rules:`/`only`/`except`, `parallel:`,
//!    variable precedence and `needs:` validation for one [`PipelineContext`] (predefined variables, changed
//!    files, a file lister) and returns the [`PipelinePlan`].
//!
//! The order of the stages follows GitLab's `Gitlab::Ci::Config#build_config`: includes, then `extends`, then
//! `!reference` tags, then the `.pre`/`.post` stages.
#![deny(clippy::unwrap_used)]

mod child;
mod config;
mod duration;
mod error;
mod export;
mod extends;
mod files;
mod glob;
mod include;
mod job;
mod load;
mod matrix;
mod merge;
mod plan;
mod reference;
pub mod rules;
mod variables;
mod yaml;

pub use child::{ChildPipeline, MAX_CHILD_DEPTH};
pub use config::{Defaults, PipelineConfig, ResolvedConfig, Workflow};
pub use duration::parse_duration;
pub use error::{Error, Location, Result};
pub use export::parse_variables_file;
pub use files::{FsProjectFiles, InvalidRef, ProjectFiles, StaticProjectFiles};
pub use job::{
    AllowFailure, Artifacts, Cache, CacheKey, Environment, Forward, Image, JobConfig, Need, Needs,
    Parallel, Retry, Service, Trigger, When,
};
pub use load::Pipeline;
pub use plan::slug;
pub use plan::{
    ExcludedJob, PipelineContext, PipelineNeed, PipelinePlan, PlannedJob, PlannedNeed, RuleOutcome,
    WorkflowOutcome,
};
pub use variables::{expand_variables, VariableSource, VariableValue};
