//! `download_artifacts` and `upload_artifacts_on_success` / `_on_failure` (reference `protocol.md` §5, §7.1).
//!
//! GitLab's runner runs these in its helper binary inside the job's environment; runwright runs them in the
//! runner process on the job's project directory, with the archive engine of `runwright-archive`. The trace
//! lines are GitLab's, so people reading a log find what they know.

use crate::{blocking, Error};
use async_trait::async_trait;
use runwright_api::failure_reason::FailureReason;
use runwright_api::types::{Artifact, Dependency};
use runwright_archive::{ArchiveSpec, Format, Level, WriteOptions};
use runwright_client::Client;
use runwright_client::UploadRequest;
use runwright_config::short_token;
use runwright_engine::steps::{JobStep, StepContext, StepError, StepPosition};
use std::path::{Path, PathBuf};

/// Downloads the artifacts of the job's dependencies into its project directory.
pub struct DownloadArtifacts {
    client: Client,
}

impl DownloadArtifacts {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn with_artifacts(deps: &[Dependency]) -> impl Iterator<Item = &Dependency> {
    deps.iter().filter(|d| {
        d.artifacts_file
            .as_ref()
            .is_some_and(|f| !f.filename.is_empty())
    })
}

/// A failed artifact transfer: `script_failure` with exit code 1, as gitlab-runner reports its
/// `artifacts-downloader`/`artifacts-uploader` helper exiting 1 (`commands/helpers/artifacts_uploader.go`:
/// `logrus.Fatalln`).
fn failed(error: Error) -> StepError {
    StepError {
        reason: FailureReason::ScriptFailure,
        message: error.to_string(),
        exit_code: Some(1),
    }
}

#[async_trait]
impl JobStep for DownloadArtifacts {
    fn position(&self) -> StepPosition {
        StepPosition::BeforeScript
    }

    fn section(&self, ctx: &StepContext<'_>) -> Option<(String, String)> {
        with_artifacts(&ctx.job.dependencies).next()?;
        Some(("download_artifacts".into(), "Downloading artifacts".into()))
    }

    async fn run(&self, ctx: &StepContext<'_>) -> Result<(), StepError> {
        let tries = ctx.artifact_download_attempts;
        // FF_USE_DIRECT_DOWNLOAD defaults to true: ask for a redirect to object storage on the first try only.
        // gitlab-runner's helper reads it from the job's environment (`env:"FF_USE_DIRECT_DOWNLOAD"`), where the
        // resolved value leads the list.
        let direct = runwright_engine::variables::parse_go_bool(
            ctx.var(runwright_engine::feature_flags::USE_DIRECT_DOWNLOAD),
        )
        .unwrap_or(true);
        for dep in with_artifacts(&ctx.job.dependencies) {
            ctx.line(&format!(
                "{}Downloading artifacts for {} ({})...{}",
                runwright_trace::ansi::BOLD_GREEN,
                dep.name,
                dep.id,
                runwright_trace::ansi::RESET
            ));
            let token = if dep.token.is_empty() {
                ctx.job.token.as_str()
            } else {
                dep.token.as_str()
            };
            let dest = ctx.tmp_dir.join(format!("artifacts-{}.download", dep.id));
            let mut last_err = None;
            let mut done = false;
            for attempt in 1..=tries {
                if ctx.cancel.is_cancelled() {
                    return Err(failed(Error::Canceled));
                }
                if attempt > 1 {
                    ctx.warn(&format!(
                        "Retrying download of artifacts for {} ({}), attempt {attempt} of {tries}",
                        dep.name, dep.id
                    ));
                }
                match self
                    .client
                    .download_artifact(dep.id, token, &dest, direct && attempt == 1)
                    .await
                {
                    Ok(out) => {
                        ctx.line(&format!(
                            "Downloading artifacts from coordinator... ok        host={} id={} responseStatus=200 OK token={}",
                            host_of(&self.client.base_url_redacted()),
                            dep.id,
                            short_token(token)
                        ));
                        if out.redirected {
                            ctx.line(
                                "Downloaded the artifacts from object storage (direct download)",
                            );
                        }
                        done = true;
                        break;
                    }
                    Err(e) => {
                        ctx.warn(&format!("Downloading artifacts from coordinator... {e}"));
                        last_err = Some(e);
                    }
                }
            }
            if let (false, Some(source)) = (done, last_err) {
                let _ = std::fs::remove_file(&dest);
                return Err(failed(Error::Download {
                    name: dep.name.clone(),
                    id: dep.id,
                    tries,
                    source,
                }));
            }
            let project = ctx.project_dir.to_path_buf();
            let archive = dest.clone();
            let opts = crate::extract_options(ctx);
            let r = blocking(move || {
                runwright_archive::extract(&archive, &project, &opts)
                    .map_err(|e| Error::archive(e, "artifacts"))
            })
            .await;
            let _ = std::fs::remove_file(&dest);
            match r {
                Ok(stats) => ctx.line(&format!(
                    "Extracted {} files, {} directories and {} symlinks ({} bytes)",
                    stats.files, stats.dirs, stats.symlinks, stats.bytes
                )),
                Err(e) => {
                    return Err(failed(Error::Extract {
                        name: dep.name.clone(),
                        id: dep.id,
                        source: Box::new(e),
                    }))
                }
            }
        }
        Ok(())
    }
}

/// `host=` in GitLab's download line is the coordinator's host name, not its URL.
fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| url.to_string())
}

/// Uploads the job's `artifacts:` entries whose `when` matches the script's result.
pub struct UploadArtifacts {
    client: Client,
}

impl UploadArtifacts {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn applies(a: &Artifact, succeeded: bool) -> bool {
    crate::when_matches(&a.when, succeeded)
}

/// The uploaded file's name (`protocol.md` §5.1): the base name of `artifacts:name` (default `default`) plus
/// the format's suffix; `raw` keeps the name as it is.
fn upload_file_name(name: &str, format: Option<Format>) -> String {
    let base = Path::new(name)
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    match format {
        Some(f) => format!("{base}{}", f.extension()),
        None => base,
    }
}

/// GitLab's names (`raw`, `zip`, `gzip`; empty = zip); `None` inside `Ok` means raw.
fn artifact_format(name: &str) -> Result<Option<Format>, Error> {
    match name.trim() {
        "" | "zip" => Ok(Some(Format::Zip)),
        "gzip" => Ok(Some(Format::Gzip)),
        "raw" => Ok(None),
        other => Err(Error::UnsupportedArtifactFormat(other.to_string())),
    }
}

#[async_trait]
impl JobStep for UploadArtifacts {
    fn position(&self) -> StepPosition {
        StepPosition::AfterScript
    }

    fn section(&self, ctx: &StepContext<'_>) -> Option<(String, String)> {
        ctx.job
            .artifacts
            .iter()
            .find(|a| applies(a, ctx.succeeded))?;
        Some(crate::result_section(
            ctx,
            "upload_artifacts_on_success",
            "upload_artifacts_on_failure",
            "Uploading artifacts",
        ))
    }

    async fn run(&self, ctx: &StepContext<'_>) -> Result<(), StepError> {
        let level = Level::parse(ctx.var("ARTIFACT_COMPRESSION_LEVEL"));
        let mut first_error = None;
        for (i, a) in ctx
            .job
            .artifacts
            .iter()
            .enumerate()
            .filter(|(_, a)| applies(a, ctx.succeeded))
        {
            if let Err(e) = self.upload_one(ctx, i, a, level).await {
                ctx.error(&e.to_string());
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(failed(e)),
            None => Ok(()),
        }
    }
}

impl UploadArtifacts {
    async fn upload_one(
        &self,
        ctx: &StepContext<'_>,
        index: usize,
        a: &Artifact,
        level: Level,
    ) -> Result<(), Error> {
        let artifact_type = if a.artifact_type.is_empty() {
            "archive"
        } else {
            a.artifact_type.as_str()
        };
        ctx.line(&format!(
            "{}Uploading artifacts...{}",
            runwright_trace::ansi::BOLD_GREEN,
            runwright_trace::ansi::RESET
        ));
        let format = artifact_format(&a.artifact_format)?;
        let spec = ArchiveSpec {
            paths: a.paths.iter().map(|p| ctx.expand(p)).collect(),
            exclude: a.exclude.iter().map(|p| ctx.expand(p)).collect(),
            untracked: a.untracked,
            max_files: None,
        };
        let selection = crate::select(ctx, spec, "artifacts").await?;
        // Files and symlinks: what `No files to upload` and the raw format count.
        let mut files = (0..selection.len()).filter(|i| !selection.is_dir(*i));
        let first_file = files.next();
        let file_count = first_file.map_or(0, |_| 1 + files.count());
        if first_file.is_none() {
            // GitLab's uploader prints this and succeeds.
            ctx.error("No files to upload");
            return Ok(());
        }
        let name = ctx.expand(&a.name);
        let filename = upload_file_name(&name, format);
        std::fs::create_dir_all(ctx.tmp_dir).map_err(|source| Error::CreateDir {
            path: ctx.tmp_dir.to_path_buf(),
            source,
        })?;
        let (file, temporary): (PathBuf, bool) = match format {
            None => {
                // raw: exactly one file, uploaded as it is.
                match first_file {
                    Some(i) if file_count == 1 => (selection.get(i).path, false),
                    _ => return Err(Error::RawNeedsOneFile(file_count)),
                }
            }
            Some(format) => {
                let out = ctx.tmp_dir.join(format!(
                    "artifacts-{index}-{artifact_type}{}",
                    format.extension()
                ));
                let target = out.clone();
                let opts = WriteOptions {
                    format,
                    level,
                    ..WriteOptions::default()
                };
                blocking(move || {
                    runwright_archive::write_archive(&selection, &target, &opts)
                        .map_err(Error::Archive)
                })
                .await?;
                (out, true)
            }
        };
        let req = UploadRequest {
            job_id: ctx.job.id,
            job_token: ctx.job.token.clone(),
            file: file.clone(),
            filename,
            artifact_type: artifact_type.to_string(),
            artifact_format: match format {
                None => "raw".into(),
                Some(Format::Gzip) => "gzip".into(),
                Some(_) => "zip".into(),
            },
            expire_in: ctx.expand(&a.expire_in),
            // [runners.artifact] (runner shells/abstract.go `writeUploadArtifact`: --timeout,
            // --response-header-timeout).
            timeout: ctx.runner.artifact.as_ref().and_then(|c| c.upload_timeout),
            response_header_timeout: ctx
                .runner
                .artifact
                .as_ref()
                .and_then(|c| c.response_header_timeout),
        };
        let result = self.client.upload_artifact(&req).await;
        if temporary {
            let _ = std::fs::remove_file(&file);
        }
        match result {
            Ok(out) => {
                ctx.line(&format!(
                    "Uploading artifacts as \"{artifact_type}\" to coordinator... {}  id={} responseStatus={} token={}",
                    out.status, ctx.job.id, out.status, short_token(&ctx.job.token)
                ));
                Ok(())
            }
            Err(source) => Err(Error::Upload {
                artifact_type: artifact_type.to_string(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_the_format() {
        assert_eq!(upload_file_name("", Some(Format::Zip)), "default.zip");
        assert_eq!(
            upload_file_name("dir/build-1", Some(Format::Zip)),
            "build-1.zip"
        );
        assert_eq!(upload_file_name("junit", Some(Format::Gzip)), "junit.gz");
        assert_eq!(upload_file_name("report.xml", None), "report.xml");
    }

    #[test]
    fn formats_gitlab_accepts() {
        assert_eq!(artifact_format("").ok(), Some(Some(Format::Zip)));
        assert_eq!(artifact_format("gzip").ok(), Some(Some(Format::Gzip)));
        assert_eq!(artifact_format("raw").ok(), Some(None));
        assert!(artifact_format("rar").is_err());
    }

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
}
