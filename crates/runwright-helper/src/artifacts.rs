//! `artifacts-downloader` and `artifacts-uploader` (runner commands/helpers/artifacts_downloader.go,
//! artifacts_uploader.go): the job's dependencies' artifacts into the working directory, and the job's own
//! artifacts from it to GitLab, with runwright-client's transfers (GitLab's API, the uploader's retries, the
//! downloader's object-storage redirects that never carry the job token elsewhere).

use crate::flags::{go_duration, FileArchiver, JobCredentials, Limits, Meter, Retry};
use crate::log::{Level, Log, Outcome, Stop};
use clap::Args;
use runwright_archive::{ArchiveSpec, ExtractOptions, Format, Level as CompressionLevel};
use runwright_client::{ArtifactError, Client, ClientOptions, UploadRequest};
use runwright_static::env_vars as ev;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Go's `strconv.ParseBool`, for the boolean flags with an `env:` fallback.
fn go_bool(text: &str) -> Result<bool, String> {
    runwright_engine::variables::parse_go_bool(text.trim())
        .ok_or_else(|| format!("invalid boolean {text:?} (1, t, true, 0, f, false)"))
}

/// `artifacts-downloader`'s flags.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct DownloaderArgs {
    #[command(flatten)]
    pub credentials: JobCredentials,
    /// Support direct download for data stored externally to GitLab.
    #[arg(long = "direct-download", env = ev::FF_USE_DIRECT_DOWNLOAD, num_args = 0..=1,
          default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub direct_download: bool,
    /// Directory to stage artifact archives.
    #[arg(long = "archiver-staging-dir", env = ev::ARCHIVER_STAGING_DIR)]
    pub staging_dir: Option<PathBuf>,
    #[command(flatten)]
    pub retry: Retry,
    #[command(flatten)]
    pub meter: Meter,
    #[command(flatten)]
    pub limits: Limits,
}

/// gitlab-runner's `artifactStatementGenerator` flags (SLSA provenance): accepted, not implemented.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementArgs {
    /// Generate an artifacts metadata statement (accepted, not implemented).
    #[arg(long = "generate-artifacts-metadata")]
    pub generate_artifacts_metadata: bool,
    #[arg(long = "runner-id", hide = true)]
    pub runner_id: Option<String>,
    #[arg(long = "repo-url", hide = true)]
    pub repo_url: Option<String>,
    #[arg(long = "repo-digest", hide = true)]
    pub repo_digest: Option<String>,
    #[arg(long = "job-name", hide = true)]
    pub job_name: Option<String>,
    #[arg(long = "executor-name", hide = true)]
    pub executor_name: Option<String>,
    #[arg(long = "runner-name", hide = true)]
    pub runner_name: Option<String>,
    #[arg(long = "metadata-parameter", hide = true)]
    pub parameters: Vec<String>,
    #[arg(long = "started-at", hide = true)]
    pub started_at: Option<String>,
    #[arg(long = "ended-at", hide = true)]
    pub ended_at: Option<String>,
    #[arg(long = "schema-version", hide = true)]
    pub schema_version: Option<String>,
}

/// `artifacts-uploader`'s flags.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct UploaderArgs {
    #[command(flatten)]
    pub credentials: JobCredentials,
    #[command(flatten)]
    pub archiver: FileArchiver,
    /// The name of the archive.
    #[arg(long = "name", default_value = "artifacts")]
    pub name: String,
    /// When to expire artifacts.
    #[arg(long = "expire-in", default_value = "")]
    pub expire_in: String,
    /// Format of generated artifacts (zip, gzip, raw, zipzstd, tarzstd).
    #[arg(long = "artifact-format", default_value = "")]
    pub format: String,
    /// Type of generated artifacts.
    #[arg(long = "artifact-type", default_value = "")]
    pub artifact_type: String,
    /// Compression level (fastest, fast, default, slow, slowest).
    #[arg(long = "compression-level", env = ev::ARTIFACT_COMPRESSION_LEVEL, default_value = "")]
    pub compression_level: String,
    /// Timeout for the upload operation (Go duration).
    #[arg(long = "timeout", default_value = "1h0m0s", value_parser = go_duration)]
    pub timeout: Duration,
    /// Timeout for response headers (Go duration).
    #[arg(long = "response-header-timeout", default_value = "10m0s", value_parser = go_duration)]
    pub response_header_timeout: Duration,
    /// enable debug trace logging (accepted; no response details are logged).
    #[arg(long = "ci-debug-trace", env = ev::CI_DEBUG_TRACE, num_args = 0..=1,
          default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub ci_debug_trace: bool,
    #[command(flatten)]
    pub statement: StatementArgs,
    #[command(flatten)]
    pub meter: Meter,
    #[command(flatten)]
    pub limits: Limits,
}

fn client(c: &JobCredentials) -> Result<Client, String> {
    Client::new(ClientOptions {
        url: c.url.clone(),
        tls_ca_file: c.tls_ca_file.clone().filter(|p| !p.as_os_str().is_empty()),
        tls_cert_file: c
            .tls_cert_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty()),
        tls_key_file: c.tls_key_file.clone().filter(|p| !p.as_os_str().is_empty()),
        // gitlab-runner's helper looks in the default certificate directory too
        // (commands.GetDefaultCertificateDirectory).
        certs_dir: Some(runwright_config::default_certs_dir()),
        user_agent: format!(
            "gitlab-runner-helper {} (runwright; rust; {}/{})",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
        idle_timeout: None,
    })
    .map_err(|e| e.to_string())
}

/// `host=` of gitlab-runner's download line: the host of `--url`.
fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

/// gitlab-runner's final word on a failed transfer (`logrus.Fatalln` of the `os.Err…` its network layer
/// maps the answer to), after runwright-client's line saying what happened and what to do.
fn fatal_transfer(e: &ArtifactError, log: &Log) -> Stop {
    log.error(&e.trace_line());
    let word = match e {
        ArtifactError::NotFound { .. } => "file does not exist",
        ArtifactError::Forbidden { .. } | ArtifactError::Unauthorized { .. } => "permission denied",
        ArtifactError::TooLarge { .. } => "too large",
        _ => "invalid argument",
    };
    log.fatal(word)
}

/// `artifacts-downloader`: the artifacts of job `--id` into the working directory.
pub async fn downloader(a: DownloaderArgs, wd: &Path, log: &Log) -> Outcome {
    crate::ignored(
        log,
        "--transfer-meter-frequency",
        a.meter.transfer_meter_frequency.is_some(),
    );
    let wd = wd.to_path_buf();
    let c = &a.credentials;
    if c.url.is_empty() {
        log.warn("Missing URL (--url)");
    }
    if c.token.is_empty() {
        log.warn("Missing runner credentials (--token)");
    }
    if c.id <= 0 {
        log.warn("Missing build ID (--id)");
    }
    if c.id <= 0 || c.token.is_empty() || c.url.is_empty() {
        return Err(log.fatal("Incomplete arguments"));
    }
    let client = client(c).map_err(|e| log.fatal(&e))?;
    let staging = a
        .staging_dir
        .clone()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(std::env::temp_dir);
    let temp = tempfile::Builder::new()
        .prefix("artifacts")
        .tempfile_in(wd.join(&staging))
        .map_err(|e| log.fatal(&format!("{}: {e}", staging.display())))?;
    // runwright-client tries three times (the helper's default `--retry 2` after the first), asking for a
    // direct download on the first try only, as gitlab-runner's `directDownloadFlag`.
    match client
        .download_artifact(c.id, &c.token, temp.path(), a.direct_download)
        .await
    {
        Ok(_) => log.entry(
            Level::Info,
            "Downloading artifacts from coordinator... ok",
            &[
                ("host", host_of(&c.url)),
                ("id", c.id.to_string()),
                ("responseStatus", "200 OK".into()),
                ("token", runwright_config::short_token(&c.token)),
            ],
        ),
        Err(e) => return Err(fatal_transfer(&e, log)),
    }
    let opts = ExtractOptions {
        max_entries: a.limits.max_files(),
        ..ExtractOptions::default()
    };
    let archive = temp.path().to_path_buf();
    let r = crate::blocking(move || runwright_archive::extract(&archive, &wd, &opts)).await;
    drop(temp);
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if crate::limits::is_limit(&e) => Err(log.fatal(&format!(
            "extracting the artifacts of job ({}): {}",
            c.id,
            crate::limits::explain(&e, "artifacts")
        ))),
        Ok(Err(e)) => Err(log.fatal(&e.to_string())),
        Err(e) => Err(log.fatal(&e)),
    }
}

/// The archive format of `--artifact-format` (empty is zip); `None` is raw.
fn upload_format(name: &str) -> Result<Option<Format>, String> {
    match name {
        "" | "zip" => Ok(Some(Format::Zip)),
        "gzip" => Ok(Some(Format::Gzip)),
        "zipzstd" => Ok(Some(Format::ZipZstd)),
        "tarzstd" => Ok(Some(Format::TarZstd)),
        "raw" => Ok(None),
        other => Err(format!("unsupported archive format: {other}")),
    }
}

/// `artifactFilename`: the base name of `--name` (`default` when that is empty) and the format's suffix.
fn artifact_filename(name: &str, format: Option<Format>) -> String {
    let base = Path::new(name)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty() && s != ".")
        .unwrap_or_else(|| "default".into());
    match format {
        Some(f) => format!("{base}{}", f.extension()),
        None => base,
    }
}

/// `artifacts-uploader`: the selected paths of the working directory as one artifact of job `--id`.
pub async fn uploader(mut a: UploaderArgs, wd: &Path, log: &Log) -> Outcome {
    let c = a.credentials.clone();
    if c.url.is_empty() || c.token.is_empty() {
        return Err(log.fatal("Missing runner credentials"));
    }
    if c.id <= 0 {
        return Err(log.fatal("Missing build ID"));
    }
    crate::ignored(
        log,
        "--transfer-meter-frequency",
        a.meter.transfer_meter_frequency.is_some(),
    );
    crate::ignored(
        log,
        "--generate-artifacts-metadata",
        a.statement.generate_artifacts_metadata,
    );
    a.name = crate::expand_env(&a.name);
    for p in a
        .archiver
        .paths
        .iter_mut()
        .chain(a.archiver.exclude.iter_mut())
    {
        *p = crate::expand_env(p);
    }
    let format = upload_format(&a.format).map_err(|e| log.fatal(&e))?;
    let level = match a.compression_level.as_str() {
        "" | "default" | "fastest" | "fast" | "slow" | "slowest" => {
            CompressionLevel::parse(&a.compression_level)
        }
        other => {
            log.warn(&format!(
                "compression level {other:?} is invalid, falling back to default"
            ));
            CompressionLevel::Default
        }
    };
    let spec = ArchiveSpec {
        paths: a.archiver.paths.clone(),
        exclude: a.archiver.exclude.clone(),
        untracked: a.archiver.untracked,
        max_files: a.limits.max_files(),
    };
    // Over the bound: the error, and exit code 1, which fails the job (as any failing upload).
    let selection = crate::cache::select(wd, spec, "artifacts", log)
        .await
        .map_err(|e| {
            e.map_or_else(
                |stop| stop,
                |why| {
                    log.error(&why);
                    Stop(1)
                },
            )
        })?;
    if selection.is_empty() {
        log.error("No files to upload");
        return Ok(());
    }
    let filename = artifact_filename(&a.name, format);
    let staging = tempfile::Builder::new()
        .prefix("runwright-artifacts-")
        .tempdir()
        .map_err(|e| log.fatal(&format!("creating a temporary directory: {e}")))?;
    let file = staging.path().join("archive");
    match format {
        None => {
            // Raw: the one file as it is (runner archive/raw: "only one file can be sent as raw"); copied
            // first, never following a symlink in its place.
            if selection.len() > 1 || !selection.is_file(0) {
                return Err(log.fatal("only one file can be sent as raw"));
            }
            let src = selection.get(0).path;
            let dst = file.clone();
            crate::blocking(move || copy_nofollow(&src, &dst))
                .await
                .map_err(|e| log.fatal(&e))?
                .map_err(|e| log.fatal(&e))?;
        }
        Some(format) => {
            let opts = runwright_archive::WriteOptions {
                format,
                level,
                ..Default::default()
            };
            let target = file.clone();
            crate::blocking(move || runwright_archive::write_archive(&selection, &target, &opts))
                .await
                .map_err(|e| log.fatal(&e))?
                .map_err(|e| log.fatal(&e.to_string()))?;
        }
    }
    let client = client(&c).map_err(|e| log.fatal(&e))?;
    let req = UploadRequest {
        job_id: c.id,
        job_token: c.token.clone(),
        file,
        filename,
        artifact_type: a.artifact_type.clone(),
        artifact_format: a.format.clone(),
        expire_in: a.expire_in.clone(),
        timeout: Some(a.timeout),
        response_header_timeout: Some(a.response_header_timeout),
    };
    match client.upload_artifact(&req).await {
        Ok(out) => {
            let op = if a.artifact_type.is_empty() {
                "Uploading artifacts to coordinator...".to_owned()
            } else {
                format!(
                    "Uploading artifacts as {:?} to coordinator...",
                    a.artifact_type
                )
            };
            log.entry(
                Level::Info,
                &format!("{op} {}", out.status),
                &[
                    ("id", c.id.to_string()),
                    ("responseStatus", out.status.clone()),
                    ("token", runwright_config::short_token(&c.token)),
                ],
            );
            Ok(())
        }
        Err(e) => Err(fatal_transfer(&e, log)),
    }
}

/// Copies a regular file, refusing a symlink in its place (`O_NOFOLLOW`).
fn copy_nofollow(src: &Path, dst: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut from = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(src)
        .map_err(|e| format!("{}: {e}", src.display()))?;
    let mut to = std::fs::File::create(dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    std::io::copy(&mut from, &mut to).map_err(|e| format!("{}: {e}", src.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testing::Captured;

    #[test]
    fn file_names_follow_the_format() {
        assert_eq!(artifact_filename("", Some(Format::Zip)), "default.zip");
        assert_eq!(
            artifact_filename("artifacts", Some(Format::Zip)),
            "artifacts.zip"
        );
        assert_eq!(
            artifact_filename("dir/build-1", Some(Format::Zip)),
            "build-1.zip"
        );
        assert_eq!(artifact_filename("junit", Some(Format::Gzip)), "junit.gz");
        assert_eq!(artifact_filename("c", Some(Format::TarZstd)), "c.tar.zst");
        assert_eq!(artifact_filename("report.xml", None), "report.xml");
    }

    fn credentials() -> JobCredentials {
        JobCredentials {
            id: 7,
            token: "glcbt-secret-token".into(),
            // Nothing listens: these tests end before any request.
            url: "http://127.0.0.1:9".into(),
            ..Default::default()
        }
    }

    fn uploader_args(paths: &[&str]) -> UploaderArgs {
        UploaderArgs {
            credentials: credentials(),
            archiver: FileArchiver {
                paths: paths.iter().map(|p| p.to_string()).collect(),
                ..Default::default()
            },
            name: "artifacts".into(),
            expire_in: String::new(),
            format: String::new(),
            artifact_type: String::new(),
            compression_level: String::new(),
            timeout: Duration::from_secs(3600),
            response_header_timeout: Duration::from_secs(600),
            ci_debug_trace: false,
            statement: StatementArgs::default(),
            meter: Meter::default(),
            limits: Limits::default(),
        }
    }

    #[tokio::test]
    async fn the_downloader_needs_url_token_and_id() {
        let d = tempfile::tempdir().unwrap();
        let cap = Captured::default();
        let a = DownloaderArgs {
            credentials: JobCredentials::default(),
            direct_download: false,
            staging_dir: None,
            retry: Retry::default(),
            meter: Meter::default(),
            limits: Limits::default(),
        };
        assert_eq!(downloader(a, d.path(), &cap.log()).await, Err(Stop(1)));
        assert_eq!(
            cap.text(),
            "WARNING: Missing URL (--url)\nWARNING: Missing runner credentials (--token)\n\
             WARNING: Missing build ID (--id)\nFATAL: Incomplete arguments\n"
        );
    }

    #[tokio::test]
    async fn the_uploader_refuses_what_gitlab_refuses() {
        let d = tempfile::tempdir().unwrap();
        let cap = Captured::default();
        let mut a = uploader_args(&["x"]);
        a.credentials.token.clear();
        assert_eq!(uploader(a, d.path(), &cap.log()).await, Err(Stop(1)));
        assert_eq!(cap.text(), "FATAL: Missing runner credentials\n");

        let cap = Captured::default();
        let mut a = uploader_args(&["x"]);
        a.credentials.id = 0;
        assert_eq!(uploader(a, d.path(), &cap.log()).await, Err(Stop(1)));
        assert_eq!(cap.text(), "FATAL: Missing build ID\n");

        // No files: an error line, and success (the job does not fail on it).
        let cap = Captured::default();
        uploader(uploader_args(&["none"]), d.path(), &cap.log())
            .await
            .unwrap();
        assert!(
            cap.text().ends_with("ERROR: No files to upload\n"),
            "{}",
            cap.text()
        );

        // raw takes one file.
        std::fs::write(d.path().join("a"), "a").unwrap();
        std::fs::write(d.path().join("b"), "b").unwrap();
        let cap = Captured::default();
        let mut a = uploader_args(&["a", "b"]);
        a.format = "raw".into();
        assert_eq!(uploader(a, d.path(), &cap.log()).await, Err(Stop(1)));
        assert!(
            cap.text()
                .ends_with("FATAL: only one file can be sent as raw\n"),
            "{}",
            cap.text()
        );
        assert!(!cap.text().contains("secret"));
    }

    #[test]
    fn formats_gitlab_names() {
        assert_eq!(upload_format(""), Ok(Some(Format::Zip)));
        assert_eq!(upload_format("gzip"), Ok(Some(Format::Gzip)));
        assert_eq!(upload_format("raw"), Ok(None));
        assert!(upload_format("rar").is_err());
    }
}
