//! What a local pipeline is evaluated for: the pipeline source `--pipeline-source` simulates, with the
//! predefined variables GitLab sets for it, and the project variables file.
//!
//! GitLab's `rules`, `only`/`except` and `workflow:rules` read these variables to decide which jobs a
//! pipeline has, so simulating a merge request or a tag pipeline is mostly a matter of setting them as GitLab
//! does (docs: ci/variables/predefined_variables, "Predefined variables for merge request pipelines").
//!
//! Project variables (GitLab's Settings > CI/CD > Variables) have no counterpart in a checkout, so `exec`
//! reads them from a `KEY: value` file at the top of the checkout: `.gitlab-ci-local-variables.yml`
//! (gitlab-ci-local's name, so an existing one keeps working), then `.runwright/variables.yml`, whose values
//! win. A value is a string, number or boolean, or a hash with `value:` (and an ignored `description:`).
//! As in GitLab they override the file's `variables:`, and `--variable` (a pipeline variable) overrides
//! them.

use super::changes::{Base, GitProjectFiles};
use super::{git_opt, Checkout};
use crate::ExecOptions;
use anyhow::Context;
use runwright_pipeline::slug;
use runwright_pipeline::PipelineContext;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A `--pipeline-source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PipelineSource {
    Push,
    MergeRequestEvent,
    Schedule,
    Web,
    Api,
    Trigger,
    /// A push of a tag: `CI_PIPELINE_SOURCE` is `push`, the ref is the tag at HEAD.
    Tag,
}

const SOURCES: [(&str, PipelineSource); 7] = [
    ("push", PipelineSource::Push),
    ("merge_request_event", PipelineSource::MergeRequestEvent),
    ("schedule", PipelineSource::Schedule),
    ("web", PipelineSource::Web),
    ("api", PipelineSource::Api),
    ("trigger", PipelineSource::Trigger),
    ("tag", PipelineSource::Tag),
];

impl PipelineSource {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Self> {
        match SOURCES.iter().find(|(name, _)| *name == s) {
            Some((_, source)) => Ok(*source),
            None => Err(crate::ExecError::Usage(format!(
                "--pipeline-source {s:?} is not a pipeline source runwright can simulate; valid ones are {}",
                SOURCES.map(|(name, _)| name).join(", ")
            ))
            .into()),
        }
    }

    /// `CI_PIPELINE_SOURCE`: GitLab has no `tag` source, a tag pipeline is a push.
    fn ci_value(self) -> &'static str {
        match self {
            PipelineSource::Push | PipelineSource::Tag => "push",
            PipelineSource::MergeRequestEvent => "merge_request_event",
            PipelineSource::Schedule => "schedule",
            PipelineSource::Web => "web",
            PipelineSource::Api => "api",
            PipelineSource::Trigger => "trigger",
        }
    }
}

/// Turns the push pipeline's predefined variables `v` into those of a `source` pipeline.
pub(super) fn apply(
    source: PipelineSource,
    co: &Checkout,
    v: &mut BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let mut set = |k: &str, val: &str| {
        v.insert(k.to_string(), val.to_string());
    };
    set("CI_PIPELINE_SOURCE", source.ci_value());
    match source {
        PipelineSource::Tag => {
            let tag = tag_at_head(&co.root)?;
            set("CI_COMMIT_TAG", &tag);
            set("CI_COMMIT_REF_NAME", &tag);
            set("CI_COMMIT_REF_SLUG", &slug(&tag));
            // An annotated tag's message; GitLab leaves the variable out for a lightweight tag.
            if let Some(message) =
                git_opt(&co.root, &["tag", "-l", "--format=%(contents)", "--", &tag])
            {
                set("CI_COMMIT_TAG_MESSAGE", &message);
            }
            // A tag pipeline has no branch: `$CI_COMMIT_BRANCH` rules must not match. Tags are protected
            // only by a protected-tags rule, which a checkout does not have.
            set("CI_COMMIT_REF_PROTECTED", "false");
            v.remove("CI_COMMIT_BRANCH");
        }
        PipelineSource::MergeRequestEvent => merge_request(co, v),
        PipelineSource::Trigger => set("CI_PIPELINE_TRIGGERED", "true"),
        PipelineSource::Push
        | PipelineSource::Schedule
        | PipelineSource::Web
        | PipelineSource::Api => {}
    }
    Ok(())
}

/// The newest tag that points at HEAD.
fn tag_at_head(root: &Path) -> anyhow::Result<String> {
    let tags =
        git_opt(root, &["tag", "--points-at", "HEAD", "--sort=-creatordate"]).unwrap_or_default();
    match tags.lines().map(str::trim).find(|t| !t.is_empty()) {
        Some(tag) => Ok(tag.to_string()),
        None => Err(crate::ExecError::Usage(format!(
            "--pipeline-source tag runs the pipeline of a tag, and no tag points at HEAD in {}: tag it first (e.g. `git tag v1.0.0`)",
            root.display()
        ))
        .into()),
    }
}

/// A detached merge request pipeline (not merged results: the source branch as it is) of the current branch
/// into the default branch, merge request !1.
fn merge_request(co: &Checkout, v: &mut BTreeMap<String, String>) {
    let title = v.get("CI_COMMIT_TITLE").cloned().unwrap_or_default();
    let description = v.get("CI_COMMIT_DESCRIPTION").cloned().unwrap_or_default();
    // The merge base with the default branch, local or as `origin` has it; none on an unrelated history.
    let base = [
        format!("refs/heads/{}", co.default_branch),
        format!("refs/remotes/origin/{}", co.default_branch),
    ]
    .iter()
    .find_map(|target| git_opt(&co.root, &["merge-base", "HEAD", target]));
    let mut set = |k: &str, val: &str| {
        v.insert(k.to_string(), val.to_string());
    };
    // The one project the embedded coordinator serves has id 1; source and target project are the same.
    let project_id = "1";
    set("CI_MERGE_REQUEST_ID", "1");
    set("CI_MERGE_REQUEST_IID", "1");
    set("CI_MERGE_REQUEST_REF_PATH", "refs/merge-requests/1/head");
    set("CI_MERGE_REQUEST_PROJECT_ID", project_id);
    set("CI_MERGE_REQUEST_PROJECT_PATH", &co.project_path);
    set("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", project_id);
    set("CI_MERGE_REQUEST_SOURCE_PROJECT_PATH", &co.project_path);
    set("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", &co.branch);
    set("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", &co.default_branch);
    // GitLab protects the default branch unless told otherwise.
    set(
        "CI_MERGE_REQUEST_SOURCE_BRANCH_PROTECTED",
        &(co.branch == co.default_branch).to_string(),
    );
    set("CI_MERGE_REQUEST_TARGET_BRANCH_PROTECTED", "true");
    set("CI_MERGE_REQUEST_TITLE", &title);
    set("CI_MERGE_REQUEST_DESCRIPTION", &description);
    set("CI_MERGE_REQUEST_DRAFT", "false");
    set("CI_MERGE_REQUEST_EVENT_TYPE", "detached");
    set("CI_MERGE_REQUEST_DIFF_ID", "1");
    if let Some(base) = base {
        set("CI_MERGE_REQUEST_DIFF_BASE_SHA", &base);
    }
    // "The variable is empty in merge request pipelines. The SHA is present only in merged results
    // pipelines" (docs: predefined variables for merge request pipelines).
    set("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA", "");
    set("CI_MERGE_REQUEST_TARGET_BRANCH_SHA", "");
    // GitLab's docs list `CI_COMMIT_BRANCH` for branch pipelines only, not merge request or tag pipelines:
    // `$CI_COMMIT_BRANCH` rules must not match here. The merge request's ref is not protected.
    v.remove("CI_COMMIT_BRANCH");
    v.insert("CI_COMMIT_REF_PROTECTED".into(), "false".into());
}

/// The variables files, lowest precedence first, relative to the top of the checkout.
const VARIABLES_FILES: [&str; 2] = [".gitlab-ci-local-variables.yml", ".runwright/variables.yml"];

/// The project variables of the checkout at `root` (see the module's documentation); none without a file.
pub(crate) fn project_variables(root: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for name in VARIABLES_FILES {
        let path = root.join(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        out.extend(
            runwright_pipeline::parse_variables_file(&text, Path::new(name))
                .map_err(crate::ExecError::Config)?,
        );
    }
    Ok(out)
}

/// The context `exec` evaluates the pipeline in: the source's predefined variables, then the project
/// variables file, then `--variable` (highest precedence; both are pipeline variables for the crate).
pub(super) fn pipeline_context(
    args: &ExecOptions,
    co: &Checkout,
) -> anyhow::Result<PipelineContext> {
    let source = PipelineSource::parse(&args.pipeline_source)?;
    let base = match source {
        PipelineSource::MergeRequestEvent => Base::MergeRequest {
            target: co.default_branch.clone(),
        },
        PipelineSource::Push => Base::Push {
            branch: co.branch.clone(),
        },
        _ => Base::None,
    };
    let mut ctx = PipelineContext::new(super::predefined(co, &args.file, source)?)
        .with_files(Arc::new(GitProjectFiles::new(&co.root, &co.sha, base)));
    ctx.pipeline_variables = project_variables(&co.root)?;
    ctx.pipeline_variables
        .extend(super::parse_variables(&args.variable)?);
    Ok(ctx)
}

/// What `runwright lint` resolves the file with (include `rules:` need variables): a push pipeline of the
/// checkout at `dir` with its project variables, and the top of the checkout, which `--file` is relative to.
/// Outside a git checkout (or before its first commit) there is no branch to tell: `dir` itself, with only
/// `CI`, `GITLAB_CI`, `CI_PIPELINE_SOURCE` and `CI_CONFIG_PATH`.
pub(crate) fn lint_context(dir: &Path, file: &Path) -> anyhow::Result<(PathBuf, PipelineContext)> {
    match super::checkout::checkout(dir) {
        Ok(co) => {
            let mut ctx = PipelineContext::new(super::predefined(&co, file, PipelineSource::Push)?);
            ctx.pipeline_variables = project_variables(&co.root)?;
            Ok((co.root, ctx))
        }
        Err(_) => {
            let vars = [
                ("CI", "true"),
                ("GITLAB_CI", "true"),
                ("CI_PIPELINE_SOURCE", "push"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([(
                "CI_CONFIG_PATH".to_string(),
                file.to_string_lossy().into_owned(),
            )])
            .collect();
            let mut ctx = PipelineContext::new(vars);
            ctx.pipeline_variables = project_variables(dir)?;
            Ok((dir.to_path_buf(), ctx))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_unknown_ones_list_the_valid() {
        assert_eq!(
            PipelineSource::parse("merge_request_event").ok(),
            Some(PipelineSource::MergeRequestEvent)
        );
        assert_eq!(PipelineSource::Tag.ci_value(), "push");
        let e = PipelineSource::parse("pull_request")
            .expect_err("unknown")
            .to_string();
        assert!(
            e.contains("push, merge_request_event, schedule, web, api, trigger, tag"),
            "{e}"
        );
    }
}
