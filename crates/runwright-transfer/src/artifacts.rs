//! `download_artifacts` and `upload_artifacts_on_success` / `_on_failure` (reference `protocol.md` §5, §7.1),
//! written as gitlab-runner's `shells/abstract.go` writes them (`downloadAllArtifacts`, `writeUploadArtifacts`,
//! `writeUploadArtifact`): one `artifacts-downloader` call per dependency with artifacts, one
//! `artifacts-uploader` call per `artifacts:` entry whose `when` matches, each talking to the runner's `url`
//! (`--url`, `--id`). The token reaches the helper as `CI_JOB_TOKEN` in its environment (the helper's flag reads
//! it there, `env:"CI_JOB_TOKEN"`), never on its command line, which anyone on the host can read in `ps`. A
//! failing helper exits 1, which fails the stage and the job with exit code 1, as in GitLab.

use crate::guard_helper;
use async_trait::async_trait;
use runwright_api::types::{Artifact, Dependency};
use runwright_config::format_go_duration;
use runwright_engine::script::ScriptWriter;
use runwright_engine::steps::{JobStep, StepContext, StepError, StepPosition, StepStage};

/// The runner's `url` (gitlab-runner `info.Build.Runner.URL`), the helper's `--url`.
fn runner_url<'a>(ctx: &StepContext<'a>) -> &'a str {
    ctx.runner.url.as_str()
}

/// Downloads the artifacts of the job's dependencies into its project directory.
#[derive(Debug, Default)]
pub struct DownloadArtifacts;

impl DownloadArtifacts {
    pub fn new() -> Self {
        Self
    }
}

fn with_artifacts(deps: &[Dependency]) -> impl Iterator<Item = &Dependency> {
    deps.iter().filter(|d| d.has_artifacts())
}

#[async_trait]
impl JobStep for DownloadArtifacts {
    fn position(&self) -> StepPosition {
        StepPosition::BeforeScript
    }

    async fn write(
        &self,
        ctx: &StepContext<'_>,
        w: &mut ScriptWriter,
    ) -> Result<Option<StepStage>, StepError> {
        if with_artifacts(&ctx.job.dependencies).next().is_none() {
            return Ok(None);
        }
        let (limit, max) = crate::limit_env(ctx);
        guard_helper(w, ctx, "Artifacts downloading", |w| {
            for dep in with_artifacts(&ctx.job.dependencies) {
                let token = if dep.token.is_empty() {
                    ctx.job.token.as_str()
                } else {
                    dep.token.as_str()
                };
                let id = dep.id.to_string();
                w.notice(&format!(
                    "Downloading artifacts for {} ({})...",
                    dep.name, dep.id
                ));
                w.command_with_env(
                    &[("CI_JOB_TOKEN", token), (limit, &max)],
                    &[
                        ctx.helper,
                        "artifacts-downloader",
                        "--url",
                        runner_url(ctx),
                        "--id",
                        &id,
                    ],
                );
            }
        });
        Ok(Some(StepStage {
            name: "download_artifacts".into(),
            title: "Downloading artifacts".into(),
        }))
    }

    fn attempts(&self, ctx: &StepContext<'_>) -> u32 {
        ctx.artifact_download_attempts
    }
}

/// Uploads the job's `artifacts:` entries whose `when` matches the script's result.
#[derive(Debug, Default)]
pub struct UploadArtifacts;

impl UploadArtifacts {
    pub fn new() -> Self {
        Self
    }
}

fn applies(a: &Artifact, succeeded: bool) -> bool {
    crate::when_matches(&a.when, succeeded)
}

#[async_trait]
impl JobStep for UploadArtifacts {
    fn position(&self) -> StepPosition {
        StepPosition::AfterScript
    }

    async fn write(
        &self,
        ctx: &StepContext<'_>,
        w: &mut ScriptWriter,
    ) -> Result<Option<StepStage>, StepError> {
        if runner_url(ctx).is_empty() {
            return Ok(None);
        }
        let mut any = false;
        for a in ctx
            .job
            .artifacts
            .iter()
            .filter(|a| applies(a, ctx.succeeded))
        {
            any |= write_upload(ctx, w, a);
        }
        if !any {
            return Ok(None);
        }
        Ok(Some(crate::result_section(
            ctx,
            "upload_artifacts_on_success",
            "upload_artifacts_on_failure",
            "Uploading artifacts",
        )))
    }
}

/// runner `writeUploadArtifact`: `false` when the entry selects nothing (no paths, no untracked).
fn write_upload(ctx: &StepContext<'_>, w: &mut ScriptWriter, a: &Artifact) -> bool {
    let files = crate::archiver_args(ctx, &a.paths, &a.exclude, a.untracked);
    if files.is_empty() {
        return false;
    }
    let timeouts = ctx.runner.artifact.clone().unwrap_or_default();
    let mut args: Vec<String> = vec![
        ctx.helper.to_string(),
        "artifacts-uploader".into(),
        "--url".into(),
        runner_url(ctx).to_string(),
        "--id".into(),
        ctx.job.id.to_string(),
        "--timeout".into(),
        format_go_duration(timeouts.upload_timeout()),
        "--response-header-timeout".into(),
        format_go_duration(timeouts.response_header_timeout()),
    ];
    args.extend(files);
    for (flag, value) in [
        ("--name", ctx.expand(&a.name)),
        ("--expire-in", ctx.expand(&a.expire_in)),
        ("--artifact-format", a.artifact_format.clone()),
        ("--artifact-type", a.artifact_type.clone()),
    ] {
        if !value.is_empty() {
            args.push(flag.into());
            args.push(value);
        }
    }
    let (limit, max) = crate::limit_env(ctx);
    guard_helper(w, ctx, "Uploading artifacts", |w| {
        w.notice("Uploading artifacts...");
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        w.command_with_env(&[("CI_JOB_TOKEN", &ctx.job.token), (limit, &max)], &argv);
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{parsed, Fixture};
    use runwright_api::types::{DependencyArtifactsFile, JobResponse};

    #[test]
    fn when_matches_the_result() {
        let a = |w: &str| Artifact {
            when: w.into(),
            ..Artifact::default()
        };
        assert!(applies(&a(""), true) && !applies(&a(""), false));
        assert!(applies(&a("on_failure"), false) && !applies(&a("on_failure"), true));
        assert!(applies(&a("always"), true) && applies(&a("always"), false));
    }

    fn job() -> JobResponse {
        JobResponse {
            id: 42,
            token: "glcbt-job-secret".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn downloads_call_the_helper_per_dependency_with_the_token_in_its_environment() {
        let mut j = job();
        let dep = |id: i64, name: &str, token: &str, file: &str| Dependency {
            id,
            name: name.into(),
            token: token.into(),
            artifacts_file: Some(DependencyArtifactsFile {
                filename: file.into(),
                size: 1,
            }),
        };
        j.dependencies = vec![
            dep(7, "build", "", "artifacts.zip"),
            dep(8, "no-files", "", ""),
            dep(9, "other", "glcbt-dep-secret", "artifacts.zip"),
        ];
        let f = Fixture::new(j);
        let mut w = ScriptWriter::new();
        let stage = DownloadArtifacts::new()
            .write(&f.ctx(), &mut w)
            .await
            .expect("written")
            .expect("a stage");
        let script = parsed(&w);
        assert_eq!(stage.name, "download_artifacts");
        assert!(
            script.contains("Downloading artifacts for build (7)..."),
            "{script}"
        );
        assert!(!script.contains("no-files"), "{script}");
        for (token, id) in [("glcbt-job-secret", 7), ("glcbt-dep-secret", 9)] {
            let call = format!(
                "CI_JOB_TOKEN={token} RUNWRIGHT_MAX_ARCHIVE_FILES=1000000 /usr/bin/gitlab-runner-helper artifacts-downloader --url https://gitlab.example/ --id {id}\n"
            );
            assert!(script.contains(&call), "{call} in:\n{script}");
        }
        assert!(!script.contains("--token"), "{script}");
        assert_eq!(DownloadArtifacts::new().attempts(&f.ctx()), 1);

        let f = Fixture::new(job());
        let mut w = ScriptWriter::new();
        assert!(DownloadArtifacts::new()
            .write(&f.ctx(), &mut w)
            .await
            .expect("written")
            .is_none());
    }

    #[tokio::test]
    async fn uploads_pass_gitlabs_flags_for_each_matching_entry() {
        let mut j = job();
        j.variables.push(runwright_api::types::JobVariable {
            key: "NAME".into(),
            value: "build 1".into(),
            ..Default::default()
        });
        j.artifacts = vec![
            Artifact {
                paths: vec!["out/".into()],
                exclude: vec!["out/*.log".into()],
                name: "$NAME".into(),
                expire_in: "1 week".into(),
                artifact_format: "zip".into(),
                artifact_type: "archive".into(),
                ..Artifact::default()
            },
            Artifact {
                paths: vec!["junit.xml".into()],
                artifact_format: "gzip".into(),
                artifact_type: "junit".into(),
                when: "always".into(),
                ..Artifact::default()
            },
            Artifact {
                when: "always".into(),
                ..Artifact::default()
            },
        ];
        let f = Fixture::new(j);
        let mut w = ScriptWriter::new();
        let stage = UploadArtifacts::new()
            .write(&f.ctx(), &mut w)
            .await
            .expect("written")
            .expect("a stage");
        let script = parsed(&w);
        assert_eq!(
            (stage.name.as_str(), stage.title.as_str()),
            (
                "upload_artifacts_on_success",
                "Uploading artifacts for successful job"
            )
        );
        assert!(script.contains(
            "CI_JOB_TOKEN=glcbt-job-secret RUNWRIGHT_MAX_ARCHIVE_FILES=1000000 /usr/bin/gitlab-runner-helper artifacts-uploader --url https://gitlab.example/ \
             --id 42 --timeout 1h0m0s --response-header-timeout 10m0s --path out/ --exclude 'out/*.log' \
             --name 'build 1' --expire-in '1 week' --artifact-format zip --artifact-type archive\n"
        ), "{script}");
        assert_eq!(script.matches("artifacts-uploader").count(), 2, "{script}");
        assert_eq!(
            script.matches("Uploading artifacts...").count(),
            2,
            "{script}"
        );

        // After a failure: only `when: on_failure`/`always`, in the failure's stage.
        let mut f = f;
        f.succeeded = false;
        let mut w = ScriptWriter::new();
        let stage = UploadArtifacts::new()
            .write(&f.ctx(), &mut w)
            .await
            .expect("written")
            .expect("a stage");
        assert_eq!(stage.name, "upload_artifacts_on_failure");
        assert_eq!(parsed(&w).matches("artifacts-uploader").count(), 1);

        // No runner URL: nothing to upload to (runner `writeUploadArtifacts`).
        f.runner.url.clear();
        let mut w = ScriptWriter::new();
        assert!(UploadArtifacts::new()
            .write(&f.ctx(), &mut w)
            .await
            .expect("written")
            .is_none());
    }
}
