//! A planned job as the embedded coordinator hands it out: what GitLab's server would put in the payload for
//! `artifacts:`, `cache:` and the dependencies (gitlab app/presenters/ci/build_runner_presenter.rb,
//! lib/gitlab/ci/build/cache.rb).

use super::Checkout;
use runwright_api::types::{Artifact, Cache as WireCache, Image as WireImage, JobVariable};
use runwright_coordinator::{JobSpec, ProjectSpec};
use runwright_pipeline::{Artifacts, Cache, CacheKey, PlannedJob, VariableSource};
use std::collections::BTreeSet;

/// The ref a pipeline's jobs get, as GitLab hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JobRef {
    /// The checkout's branch.
    Branch,
    /// A tag pipeline: the tag (CI_COMMIT_TAG, ref_type tag).
    Tag(String),
    /// A merge request pipeline of the branch: `refs/merge-requests/<iid>/head`, no CI_COMMIT_BRANCH.
    MergeRequest(i64),
}

impl JobRef {
    /// From the pipeline's predefined variables (`context.rs` sets them for `--pipeline-source`).
    pub(super) fn of(vars: &std::collections::BTreeMap<String, String>) -> JobRef {
        if let Some(tag) = vars.get("CI_COMMIT_TAG").filter(|t| !t.is_empty()) {
            return JobRef::Tag(tag.clone());
        }
        if vars.get("CI_PIPELINE_SOURCE").map(String::as_str) == Some("merge_request_event") {
            let iid = vars
                .get("CI_MERGE_REQUEST_IID")
                .and_then(|i| i.parse().ok())
                .unwrap_or(1);
            return JobRef::MergeRequest(iid);
        }
        JobRef::Branch
    }
}

pub(super) fn spec_for(
    job: &PlannedJob,
    co: &Checkout,
    project: &ProjectSpec,
    pipeline_id: i64,
    artifact_dependencies: Vec<i64>,
    job_ref: &JobRef,
) -> JobSpec {
    let variables = job
        .variables
        .iter()
        .filter(|(_, v)| v.source != VariableSource::Job)
        .map(|(k, v)| JobVariable {
            key: k.clone(),
            value: v.value.clone(),
            public: true,
            masked: false,
            raw: !v.expand,
            ..Default::default()
        })
        .collect();
    // GitLab protects the default branch unless told otherwise (tags only when a rule says so; a merge
    // request's ref never); caches are then kept apart (`-protected`).
    let protected = *job_ref == JobRef::Branch && co.branch == co.default_branch;
    let tag = match job_ref {
        JobRef::Tag(t) => Some(t.as_str()),
        _ => None,
    };
    JobSpec {
        name: job.name.clone(),
        stage: job.stage.clone(),
        before_script: job.before_script.clone(),
        script: job.script.clone(),
        after_script: job.after_script.clone(),
        run: job.run.clone(),
        variables,
        timeout: job.timeout.map_or(3600, |t| t as i64),
        project: project.clone(),
        git_ref: tag.map_or_else(|| co.branch.clone(), str::to_string),
        tag: tag.is_some(),
        protected,
        merge_request_iid: match job_ref {
            JobRef::MergeRequest(iid) => Some(*iid),
            _ => None,
        },
        sha: co.sha.clone(),
        pipeline_id: Some(pipeline_id),
        artifacts: job
            .artifacts
            .as_ref()
            .map(wire_artifacts)
            .unwrap_or_default(),
        cache: job
            .cache
            .iter()
            .enumerate()
            .map(|(i, c)| wire_cache(i, c, co, protected))
            .collect(),
        artifact_dependencies,
        image: job.image.as_ref().map(|i| WireImage {
            name: i.name.clone(),
            entrypoint: i.entrypoint.clone(),
            pull_policy: (!i.pull_policy.is_empty()).then(|| i.pull_policy.clone()),
            executor_opts: i.docker.clone().map(|d| serde_json::json!({ "docker": d })),
            ..Default::default()
        }),
        services: job
            .services
            .iter()
            .map(|s| WireImage {
                name: s.name.clone(),
                alias: s.alias.clone().unwrap_or_default(),
                entrypoint: s.entrypoint.clone(),
                command: s.command.clone(),
                pull_policy: (!s.pull_policy.is_empty()).then(|| s.pull_policy.clone()),
                variables: s
                    .variables
                    .iter()
                    .map(|(k, v)| JobVariable {
                        key: k.clone(),
                        value: v.clone(),
                        public: true,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The archive entry, then one entry per report (`build_runner_presenter.rb` `create_archive`,
/// `create_reports`).
fn wire_artifacts(a: &Artifacts) -> Vec<Artifact> {
    let mut out = Vec::new();
    if !a.paths.is_empty() || a.untracked {
        out.push(Artifact {
            name: a.name.clone().unwrap_or_default(),
            untracked: a.untracked,
            paths: a.paths.clone(),
            exclude: a.exclude.clone(),
            when: a.when.clone(),
            expire_in: a.expire_in.clone().unwrap_or_default(),
            artifact_type: "archive".into(),
            artifact_format: "zip".into(),
        });
    }
    if let Some(serde_json::Value::Object(reports)) = &a.reports {
        for (kind, value) in reports {
            let (kind, paths) = match (kind.as_str(), value) {
                // `coverage_report: {coverage_format: cobertura, path: …}`.
                ("coverage_report", serde_json::Value::Object(m)) => (
                    m.get("coverage_format")
                        .and_then(|v| v.as_str())
                        .unwrap_or("cobertura")
                        .to_string(),
                    m.get("path")
                        .and_then(|v| v.as_str())
                        .map(|s| vec![s.to_string()])
                        .unwrap_or_default(),
                ),
                (_, serde_json::Value::String(s)) => (kind.clone(), vec![s.clone()]),
                (_, serde_json::Value::Array(v)) => (
                    kind.clone(),
                    v.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                ),
                _ => continue,
            };
            out.push(Artifact {
                name: kind.clone(),
                paths,
                when: "always".into(),
                expire_in: a.expire_in.clone().unwrap_or_default(),
                artifact_format: report_format(&kind).into(),
                artifact_type: kind,
                ..Artifact::default()
            });
        }
    }
    out
}

/// GitLab's `Ci::JobArtifact::TYPE_AND_FORMAT_PAIRS` for the report types (raw when not listed).
fn report_format(kind: &str) -> &'static str {
    match kind {
        "junit" | "metrics" | "metrics_referee" | "network_referee" | "dotenv" | "cobertura"
        | "jacoco" | "cyclonedx" | "annotations" | "repository_xray" => "gzip",
        "lsif" => "zip",
        _ => "raw",
    }
}

/// A cache entry with the key GitLab's server computes (§6.1): `default` when absent, `key:files` hashed,
/// then `-protected`/`-non_protected` (separate caches for protected branches, on by default).
fn wire_cache(index: usize, c: &Cache, co: &Checkout, protected: bool) -> WireCache {
    let suffix = if protected && !c.unprotect {
        "-protected"
    } else {
        "-non_protected"
    };
    let key = match &c.key {
        CacheKey::Key(k) if k.is_empty() => "default".to_string(),
        CacheKey::Key(k) => k.clone(),
        CacheKey::Files { files, prefix } => {
            let prefix = prefix.clone().unwrap_or_else(|| {
                let names: Vec<String> = files
                    .iter()
                    .map(|f| {
                        let base = f.rsplit('/').next().unwrap_or(f);
                        base.split('.').next().unwrap_or(base).to_string()
                    })
                    .collect();
                format!("{index}_{}", names.join("_"))
            });
            format!("{prefix}-{}", files_digest(co, files))
        }
    };
    WireCache {
        key: format!("{key}{suffix}"),
        untracked: c.untracked,
        paths: c.paths.clone(),
        policy: c.policy.clone(),
        when: c.when.clone(),
        fallback_keys: c
            .fallback_keys
            .iter()
            .map(|k| format!("{k}{suffix}"))
            .collect(),
    }
}

/// `key:files`: SHA-1 over the sorted, unique blob ids of the files at the pipeline's commit, joined by `-`;
/// `default` when none of them exists (gitlab lib/gitlab/ci/pipeline/seed/build/cache.rb).
fn files_digest(co: &Checkout, files: &[String]) -> String {
    use sha1::{Digest, Sha1};
    let blobs: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            super::git_opt(
                &co.root,
                &["rev-parse", "--verify", "-q", &format!("{}:{f}", co.sha)],
            )
        })
        .collect();
    if blobs.is_empty() {
        return "default".into();
    }
    let joined = blobs.into_iter().collect::<Vec<_>>().join("-");
    hex::encode(Sha1::digest(joined.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_formats_are_gitlabs() {
        assert_eq!(report_format("junit"), "gzip");
        assert_eq!(report_format("dotenv"), "gzip");
        assert_eq!(report_format("sast"), "raw");
    }

    #[test]
    fn reports_become_their_own_uploads() {
        let a = Artifacts {
            paths: vec!["out/".into()],
            exclude: vec![],
            untracked: false,
            when: String::new(),
            name: None,
            expire_in: Some("1 week".into()),
            expose_as: None,
            reports: Some(
                serde_json::json!({"junit": "report.xml", "coverage_report": {"coverage_format": "cobertura", "path": "cov.xml"}}),
            ),
        };
        let w = wire_artifacts(&a);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].artifact_type, "archive");
        assert!(w.iter().any(|x| x.artifact_type == "junit"
            && x.artifact_format == "gzip"
            && x.when == "always"
            && x.paths == ["report.xml"]));
        assert!(w
            .iter()
            .any(|x| x.artifact_type == "cobertura" && x.paths == ["cov.xml"]));
    }
}
