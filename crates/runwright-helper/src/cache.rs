//! `cache-extractor` and `cache-archiver` (runner commands/helpers/cache_extractor.go, cache_archiver.go).
//!
//! `--file` is the local archive (the runner's `<cache dir>/<project>/<key>/cache.zip`, which the script names);
//! `--url` a presigned `GET` (extractor) or `PUT` (archiver) of the distributed cache, `--head-url` /
//! `--check-url` presigned `HEAD`s. The archive is made from, and extracted into, the working directory.
//! GoCloud URLs (`--gocloud-url`, credentials in `--env-file`) are accepted and warned about: runwright's
//! runner presigns, it never hands credentials to a job.

use crate::flags::{FileArchiver, Limits, Meter, Retry};
use crate::log::{Level, Log, Outcome, Stop};
use clap::Args;
use runwright_archive::{ArchiveSpec, ExtractOptions, Format, Level as CompressionLevel};
use runwright_cache::DownloadResult;
use runwright_static::env_vars as ev;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// gitlab-runner's `common.DefaultCacheRequestTimeout`, minutes.
const DEFAULT_TIMEOUT_MINUTES: u64 = 10;

/// Transfer tuning gitlab-runner has for parallel and GoCloud transfers; accepted, not implemented.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuning {
    /// Buffer size in bytes for streaming cache transfers (accepted, not implemented).
    #[arg(long = "transfer-buffer-size", env = ev::CACHE_TRANSFER_BUFFER_SIZE)]
    pub transfer_buffer_size: Option<i64>,
    /// Chunk size in bytes for parallel cache transfers (accepted, not implemented).
    #[arg(long = "chunk-size", env = ev::CACHE_CHUNK_SIZE)]
    pub chunk_size: Option<i64>,
    /// Concurrent chunks for parallel cache transfers (accepted, not implemented).
    #[arg(long = "concurrency", env = ev::CACHE_CONCURRENCY)]
    pub concurrency: Option<i64>,
}

impl Tuning {
    fn warn_ignored(&self, log: &Log) {
        crate::ignored(
            log,
            "--transfer-buffer-size",
            self.transfer_buffer_size.is_some(),
        );
        crate::ignored(log, "--chunk-size", self.chunk_size.is_some());
        crate::ignored(log, "--concurrency", self.concurrency.is_some());
    }
}

/// `cache-extractor`'s flags (runner commands/helpers/cache_extractor.go `CacheExtractorCommand`).
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractorArgs {
    /// The file containing your cache artifacts.
    #[arg(long = "file", default_value = "")]
    pub file: String,
    /// URL of remote cache resource.
    #[arg(long = "url")]
    pub url: Option<String>,
    /// Go Cloud URL of remote cache resource (accepted, not supported: runwright presigns).
    #[arg(long = "gocloud-url")]
    pub gocloud_url: Option<String>,
    /// (temporary) Alternate pre-signed URL of remote cache resource.
    #[arg(long = "alternate-url")]
    pub alternate_url: Option<String>,
    /// (temporary) Alternate Go Cloud URL of remote cache resource (accepted, not supported).
    #[arg(long = "alternate-gocloud-url")]
    pub alternate_gocloud_url: Option<String>,
    /// (temporary) HEAD pre-signed URL for primary cache existence check.
    #[arg(long = "head-url")]
    pub head_url: Option<String>,
    /// (temporary) HEAD pre-signed URL for alternate cache existence check.
    #[arg(long = "alternate-head-url")]
    pub alternate_head_url: Option<String>,
    /// Overall timeout for cache downloading request (in minutes).
    #[arg(long = "timeout", default_value_t = 0)]
    pub timeout: i64,
    /// Filename containing environment variables to read (GoCloud credentials; accepted).
    #[arg(long = "env-file")]
    pub env_file: Option<PathBuf>,
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub retry: Retry,
    #[command(flatten)]
    pub meter: Meter,
    #[command(flatten)]
    pub limits: Limits,
}

/// `cache-archiver`'s flags (runner commands/helpers/cache_archiver.go `CacheArchiverCommand`).
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiverArgs {
    /// The path to file.
    #[arg(long = "file", default_value = "")]
    pub file: String,
    /// (temporary) Alternate local cache file path to rename to --file if --file does not exist.
    #[arg(long = "alternate-file")]
    pub alternate_file: Option<String>,
    /// URL of remote cache resource (pre-signed URL).
    #[arg(long = "url")]
    pub url: Option<String>,
    /// (temporary) Pre-signed HEAD URL to check whether the primary cache object already exists.
    #[arg(long = "check-url")]
    pub check_url: Option<String>,
    /// Go Cloud URL of remote cache resource (accepted, not supported: runwright presigns).
    #[arg(long = "gocloud-url")]
    pub gocloud_url: Option<String>,
    /// Overall timeout for cache uploading request (in minutes).
    #[arg(long = "timeout", default_value_t = 0)]
    pub timeout: i64,
    /// HTTP headers to send with PUT request (in form of 'key:value').
    #[arg(long = "header", value_name = "KEY:VALUE")]
    pub headers: Vec<String>,
    /// Metadata for the cache artifact (JSON encoded key-value-pairs, e.g. '{"foo":"bar"}').
    #[arg(long = "metadata", env = ev::CACHE_METADATA)]
    pub metadata: Option<String>,
    /// Compression level (fastest, fast, default, slow, slowest).
    #[arg(long = "compression-level", env = ev::CACHE_COMPRESSION_LEVEL, default_value = "")]
    pub compression_level: String,
    /// Compression format (zip, tarzstd, zipzstd).
    #[arg(long = "compression-format", env = ev::CACHE_COMPRESSION_FORMAT, default_value = "")]
    pub compression_format: String,
    /// Limit the size of the cache archive being uploaded to cloud storage, in bytes.
    #[arg(long = "max-uploaded-archive-size", env = ev::CACHE_MAX_UPLOADED_ARCHIVE_SIZE, default_value_t = 0)]
    pub max_uploaded_archive_size: i64,
    /// Filename containing environment variables to read (CACHE_METADATA, GoCloud credentials).
    #[arg(long = "env-file")]
    pub env_file: Option<PathBuf>,
    #[command(flatten)]
    pub archiver: FileArchiver,
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub retry: Retry,
    #[command(flatten)]
    pub meter: Meter,
    #[command(flatten)]
    pub limits: Limits,
}

/// A failed transfer attempt: whether gitlab-runner's `doRetry` would try again (network errors and 5xx
/// answers, runner commands/helpers/retry_helper.go `retryOnServerError`).
pub(crate) struct Failure {
    pub retryable: bool,
    pub message: String,
}

impl From<runwright_cache::Error> for Failure {
    fn from(e: runwright_cache::Error) -> Self {
        let retryable = match &e {
            runwright_cache::Error::Http { .. } => true,
            runwright_cache::Error::Status { status, .. } => *status >= 500,
            _ => false,
        };
        Failure {
            retryable,
            message: e.to_string(),
        }
    }
}

/// `doRetry`: the first try, then up to `retry.retry` more while the failure is retryable, each after
/// `retry_time` and a `Retrying...` warning.
pub(crate) async fn with_retry<T, F, Fut>(
    retry: &Retry,
    log: &Log,
    mut attempt: F,
) -> Result<T, String>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut result = attempt(0).await;
    for n in 1..=retry.retry {
        match &result {
            Err(f) if f.retryable => {
                tokio::time::sleep(retry.retry_time).await;
                log.entry(Level::Warn, "Retrying...", &[("error", f.message.clone())]);
                result = attempt(n).await;
            }
            _ => break,
        }
    }
    result.map_err(|f| f.message)
}

fn http_client(timeout_minutes: i64) -> Result<reqwest::Client, String> {
    let minutes = u64::try_from(timeout_minutes)
        .ok()
        .filter(|m| *m > 0)
        .unwrap_or(DEFAULT_TIMEOUT_MINUTES);
    runwright_cache::s3::http_client(Duration::from_secs(minutes * 60)).map_err(|e| e.to_string())
}

/// `--env-file`, read as godotenv reads it: `KEY=VALUE` lines, `export ` allowed, `#` comments, values in
/// single or double quotes. Only what the helper itself uses is taken from it (`CACHE_METADATA`).
pub(crate) fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("failed to read env file: {}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = if let Some(inner) = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_owned()
        } else if let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            inner
                .replace("\\n", "\n")
                .replace("\\\"", "\"")
                .replace("\\\\", "\\")
        } else {
            v.split(" #").next().unwrap_or(v).trim().to_owned()
        };
        out.insert(k.trim().to_owned(), v);
    }
    Ok(out)
}

/// The name GitLab prints for the local file: its base name without extension (`cache`), since a cache
/// written as `cache.zip` may hold another format.
fn display_name(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cache".into())
}

/// `cache-extractor`: brings the local archive up to date from `--url` (if given), then extracts it into the
/// working directory. Exit 1 with a warning when there is no cache (runner `CacheExtractorCommand.Execute`).
pub async fn extractor(a: ExtractorArgs, wd: &Path, log: &Log) -> Outcome {
    a.tuning.warn_ignored(log);
    crate::ignored(
        log,
        "--transfer-meter-frequency",
        a.meter.transfer_meter_frequency.is_some(),
    );
    if a.file.is_empty() {
        return Err(log.warn_exit("Missing cache file"));
    }
    let file = wd.join(&a.file);
    let wd = wd.to_path_buf();
    if a.gocloud_url.is_some() || a.alternate_gocloud_url.is_some() {
        log.warn(
            "--gocloud-url is not supported by runwright's helper (its runner presigns URLs): the cache is not \
             downloaded from it",
        );
    }
    match a.url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => {
            let client = http_client(a.timeout).map_err(|e| log.fatal(&e))?;
            let r = with_retry(&a.retry, log, |_| download(&client, &a, url, &file, log))
            .await;
            if let Err(e) = r {
                return Err(log.warn_exit(&e));
            }
        }
        None => log.info(
            "No URL provided, cache will not be downloaded from shared cache server. Instead a local version \
             of cache will be extracted.",
        ),
    }
    match std::fs::metadata(&file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(log.warn_exit("Cache file does not exist"))
        }
        Err(e) => return Err(log.fatal(&format!("open {}: {e}", file.display()))),
        Ok(_) => {}
    }
    let opts = ExtractOptions {
        max_entries: a.limits.max_files(),
        ..ExtractOptions::default()
    };
    let archive = file.clone();
    let r = crate::blocking(move || runwright_archive::extract(&archive, &wd, &opts)).await;
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(log.fatal(&crate::limits::explain(&e, "cache"))),
        Err(e) => Err(log.fatal(&e)),
    }
}

/// One download attempt (runner `CacheExtractorCommand.download`, presigned branch).
async fn download(
    client: &reqwest::Client,
    a: &ExtractorArgs,
    url: &str,
    file: &Path,
    log: &Log,
) -> Result<(), Failure> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir_private(dir).map_err(|e| Failure {
            retryable: false,
            message: format!("mkdir {}: {e}", dir.display()),
        })?;
    }
    let selected = select_url(client, a, url, log).await;
    match runwright_cache::download_from(client, &selected, None, file).await? {
        DownloadResult::NotFound => Err(Failure {
            retryable: false,
            message: "file does not exist".into(),
        }),
        DownloadResult::UpToDate { .. } => {
            let base = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            log.info(&format!("{base} is up to date"));
            Ok(())
        }
        DownloadResult::Downloaded { metadata, .. } => {
            log.info(&format!(
                "Downloading {} from {}",
                display_name(file),
                runwright_cache::strip_query(&selected)
            ));
            runwright_cache::local::write_metadata_file(file, &metadata).map_err(|e| Failure {
                retryable: false,
                message: e.to_string(),
            })?;
            Ok(())
        }
    }
}

/// With `--alternate-url`: whichever of the two objects is newer, the primary when in doubt (runner
/// `selectPresignedURL`).
async fn select_url(client: &reqwest::Client, a: &ExtractorArgs, url: &str, log: &Log) -> String {
    let Some(alternate) = a.alternate_url.as_deref().filter(|u| !u.is_empty()) else {
        return url.to_owned();
    };
    let primary_head = a
        .head_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .unwrap_or(url);
    let alternate_head = a
        .alternate_head_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .unwrap_or(alternate);
    let primary = remote_time(client, primary_head).await;
    let alt = remote_time(client, alternate_head).await;
    let fields = [
        ("primary_url", runwright_cache::strip_query(url)),
        ("alternate_url", runwright_cache::strip_query(alternate)),
    ];
    match (primary, alt) {
        (None, Some(_)) => {
            log.entry(
                Level::Info,
                "Selecting alternate cache URL: primary not available",
                &fields,
            );
            alternate.to_owned()
        }
        (Some(p), Some(q)) if q > p => {
            log.entry(
                Level::Info,
                "Selecting alternate cache URL: newer timestamp",
                &fields,
            );
            alternate.to_owned()
        }
        _ => {
            log.entry(Level::Info, "Selecting primary cache URL", &fields);
            url.to_owned()
        }
    }
}

/// `Last-Modified` of a `HEAD`, `None` for anything but a `200` with a valid date (`fetchPresignedTimestamp`).
async fn remote_time(client: &reqwest::Client, head_url: &str) -> Option<SystemTime> {
    let resp = client.head(head_url).send().await.ok()?;
    if resp.status() != reqwest::StatusCode::OK {
        return None;
    }
    let value = resp
        .headers()
        .get(reqwest::header::LAST_MODIFIED)?
        .to_str()
        .ok()?;
    httpdate::parse_http_date(value).ok()
}

fn create_dir_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// `GetCompressionLevel`: GitLab's names; anything else warns and is `default`.
fn compression_level(name: &str, log: &Log) -> CompressionLevel {
    match name {
        "" | "default" | "fastest" | "fast" | "slow" | "slowest" => CompressionLevel::parse(name),
        other => {
            log.warn(&format!(
                "compression level {other:?} is invalid, falling back to default"
            ));
            CompressionLevel::Default
        }
    }
}

/// `createZipFile`'s format choice: tarzstd and zipzstd by name (any case), everything else zip.
fn cache_format(name: &str) -> Format {
    match name.to_ascii_lowercase().as_str() {
        "tarzstd" => Format::TarZstd,
        "zipzstd" => Format::ZipZstd,
        _ => Format::Zip,
    }
}

/// `cache-archiver`: archives the selected paths of the working directory into `--file` (unless it is
/// already newer than all of them), writes `metadata.json` beside it, and uploads it to `--url`
/// (runner `CacheArchiverCommand.Execute`).
pub async fn archiver(mut a: ArchiverArgs, wd: &Path, log: &Log) -> Outcome {
    if a.file.is_empty() {
        return Err(log.fatal("Missing --file"));
    }
    a.tuning.warn_ignored(log);
    crate::ignored(
        log,
        "--transfer-meter-frequency",
        a.meter.transfer_meter_frequency.is_some(),
    );
    let env_file = match &a.env_file {
        Some(p) => read_env_file(p).map_err(|e| log.fatal(&e))?,
        None => BTreeMap::new(),
    };
    let metadata = a
        .metadata
        .clone()
        .or_else(|| env_file.get(ev::CACHE_METADATA).cloned());
    let metadata: BTreeMap<String, String> = match metadata.as_deref().map(str::trim) {
        None | Some("") => BTreeMap::new(),
        Some(json) => serde_json::from_str(json)
            .map_err(|e| log.fatal(&format!("invalid --metadata {json:?}: {e}")))?,
    };
    for p in a
        .archiver
        .paths
        .iter_mut()
        .chain(a.archiver.exclude.iter_mut())
    {
        *p = crate::expand_env(p);
    }
    let file = wd.join(&a.file);
    try_rename_alternate_file(&a, wd, &file, log);
    let spec = ArchiveSpec {
        paths: a.archiver.paths.clone(),
        exclude: a.archiver.exclude.clone(),
        untracked: a.archiver.untracked,
        max_files: a.limits.max_files(),
    };
    // Over the bound: a warning, and no cache (the stage says "Failed to create cache"; the job goes on).
    let selection = select(wd, spec, "cache", log)
        .await
        .map_err(|e| e.map_or_else(|stop| stop, |why| log.warn_exit(&why)))?;
    if selection.is_empty() {
        log.warn("No files to cache.");
        return Ok(());
    }
    if !is_file_changed(&file, &selection, log) {
        if a.alternate_file.as_deref() != Some(a.file.as_str()) {
            // As gitlab-runner: the archive may have come from the alternate URL, so make sure the primary
            // object exists (`uploadExistingArchiveIfNeeded`).
            return upload_existing_if_needed(&a, &file, log).await;
        }
        log.info("Archive is up to date!");
        return Ok(());
    }
    let opts = runwright_archive::WriteOptions {
        format: cache_format(&a.compression_format),
        level: compression_level(&a.compression_level, log),
        ..Default::default()
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir_private(dir).map_err(|e| log.fatal(&format!("mkdir {}: {e}", dir.display())))?;
    }
    let target = file.clone();
    let stats =
        crate::blocking(move || runwright_archive::write_archive(&selection, &target, &opts))
            .await
            .map_err(|e| log.fatal(&e))?
            .map_err(|e| log.fatal(&e.to_string()))?;
    runwright_cache::local::write_metadata_file(&file, &metadata)
        .map_err(|e| log.fatal(&format!("writing metadata file: {e}")))?;
    upload_if_needed(&a, &file, stats.archive_bytes, log).await
}

/// The selection, with gitlab-runner's lines about it; an error is fatal.
/// The files of `spec` below `wd`, with the selection's lines; `what` names the archive (`cache`, `artifacts`)
/// in the error for a selection over `max_archive_files`. That error is the caller's to report (`Err(Ok(…))`);
/// any other ends the verb (`Err(Err(stop))`).
pub(crate) async fn select(
    wd: &Path,
    spec: ArchiveSpec,
    what: &str,
    log: &Log,
) -> Result<runwright_archive::Selection, Result<String, Stop>> {
    let dir = wd.to_path_buf();
    let selection = crate::blocking(move || runwright_archive::select_files(&dir, &spec))
        .await
        .map_err(|e| Err(log.fatal(&e)))?
        .map_err(|e| {
            if crate::limits::is_limit(&e) {
                Ok(crate::limits::explain(&e, what))
            } else {
                Err(log.fatal(&e.to_string()))
            }
        })?;
    for w in &selection.warnings {
        log.warn(w);
    }
    for i in &selection.infos {
        log.info(i);
    }
    Ok(selection)
}

/// `isFileChanged`: no archive yet, or an entry at least as new as it (whole seconds: an entry changed in the
/// archive's own second counts as changed, never as up to date).
fn is_file_changed(file: &Path, selection: &runwright_archive::Selection, log: &Log) -> bool {
    match std::fs::metadata(file).and_then(|m| m.modified()) {
        Ok(modified) => {
            let secs = modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            selection.iter().any(|e| e.mtime >= secs)
        }
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                log.warn(&e.to_string());
            }
            true
        }
    }
}

/// `tryRenameAlternateFile`: a cache restored under the other key form becomes the primary file.
fn try_rename_alternate_file(a: &ArchiverArgs, wd: &Path, file: &Path, log: &Log) {
    let Some(alt) = a
        .alternate_file
        .as_deref()
        .filter(|f| !f.is_empty() && *f != a.file)
    else {
        return;
    };
    let alt = wd.join(alt);
    match std::fs::metadata(file) {
        Ok(_) => return,
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            log.entry(
                Level::Warn,
                "Failed to stat primary cache file",
                &[("error", e.to_string())],
            );
            return;
        }
        Err(_) => {}
    }
    if std::fs::metadata(&alt).is_err() {
        return;
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = create_dir_private(dir) {
            log.entry(
                Level::Warn,
                "Failed to create directory for cache file rename",
                &[("error", e.to_string())],
            );
            return;
        }
    }
    match std::fs::rename(&alt, file) {
        Ok(()) => log.info("Renamed alternate cache file to primary"),
        Err(e) => log.entry(
            Level::Warn,
            "Failed to rename alternate cache file to primary",
            &[("error", e.to_string())],
        ),
    }
}

async fn upload_existing_if_needed(a: &ArchiverArgs, file: &Path, log: &Log) -> Outcome {
    let Ok(meta) = std::fs::metadata(file) else {
        return Ok(());
    };
    if primary_remote_exists(a, log).await {
        log.info("Primary cache already exists remotely, skipping upload");
        Ok(())
    } else {
        log.info("Primary cache does not exist remotely, uploading existing archive");
        upload_if_needed(a, file, meta.len(), log).await
    }
}

async fn primary_remote_exists(a: &ArchiverArgs, log: &Log) -> bool {
    let Some(check) = a.check_url.as_deref().filter(|u| !u.is_empty()) else {
        return false;
    };
    let client = match http_client(a.timeout) {
        Ok(c) => c,
        Err(_) => return false,
    };
    match client.head(check).send().await {
        Ok(resp) => resp.status() == reqwest::StatusCode::OK,
        Err(e) => {
            log.entry(
                Level::Warn,
                "Failed to check primary cache existence via HEAD request, assuming absent",
                &[("error", e.without_url().to_string())],
            );
            false
        }
    }
}

/// `uploadArchiveIfNeeded`.
async fn upload_if_needed(a: &ArchiverArgs, file: &Path, size: u64, log: &Log) -> Outcome {
    if a.gocloud_url.as_deref().is_some_and(|u| !u.is_empty()) {
        log.warn(
            "--gocloud-url is not supported by runwright's helper (its runner presigns URLs): the cache is not \
             uploaded to it",
        );
    }
    let Some(url) = a.url.as_deref().filter(|u| !u.is_empty()) else {
        log.info(
            "No URL provided, cache will not be uploaded to shared cache server. Cache will be stored only \
             locally.",
        );
        return Ok(());
    };
    let max = a.max_uploaded_archive_size;
    if max != 0 && i64::try_from(size).unwrap_or(i64::MAX) > max {
        log.info(&format!(
            "Cache archive size ({size}) is too big (Limit is set to {max}). Cache will be stored only locally."
        ));
        return Ok(());
    }
    let headers = split_headers(&a.headers);
    let client = http_client(a.timeout).map_err(|e| log.fatal(&e))?;
    let base = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let r = with_retry(&a.retry, log, |_| {
        log.info(&format!(
            "Uploading {base} to {}",
            runwright_cache::strip_query(url)
        ));
        let client = client.clone();
        let headers = headers.clone();
        async move {
            runwright_cache::upload_with_headers(&client, url, file, &headers)
                .await
                .map(|_| ())
                .map_err(Failure::from)
        }
    })
    .await;
    r.map_err(|e| log.fatal(&e))
}

/// `split`: `key:value` pairs, the first `:` separating them; entries without one are dropped; a later
/// duplicate wins (Go's map).
fn split_headers(raw: &[String]) -> Vec<(String, String)> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for h in raw {
        if let Some((k, v)) = h.split_once(':') {
            map.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    map.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testing::Captured;

    fn archiver_args(file: &str, paths: &[&str]) -> ArchiverArgs {
        ArchiverArgs {
            file: file.into(),
            archiver: FileArchiver {
                paths: paths.iter().map(|p| p.to_string()).collect(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_local_cache_round_trips_with_metadata() {
        let d = tempfile::tempdir().unwrap();
        let wd = d.path().join("project");
        std::fs::create_dir_all(wd.join("vendor/lib")).unwrap();
        std::fs::write(wd.join("vendor/lib/a.txt"), "a").unwrap();
        // Older than the archive will be (mtimes compare in whole seconds).
        let past = SystemTime::now() - Duration::from_secs(3600);
        for p in ["vendor", "vendor/lib", "vendor/lib/a.txt"] {
            std::fs::File::open(wd.join(p))
                .unwrap()
                .set_modified(past)
                .unwrap();
        }
        let cap = Captured::default();
        let mut a = archiver_args("../cache/key/cache.zip", &["vendor/"]);
        a.metadata = Some(r#"{"CacheKey":"human key"}"#.into());
        archiver(a.clone(), &wd, &cap.log()).await.unwrap();
        let text = cap.text();
        assert!(
            text.contains("vendor/: found 3 matching artifact files and directories"),
            "{text}"
        );
        assert!(text.contains("No URL provided, cache will not be uploaded to shared cache server. Cache will be stored only locally."), "{text}");
        let meta = std::fs::read_to_string(d.path().join("cache/key/metadata.json")).unwrap();
        assert_eq!(meta, r#"{"cachekey":"human key"}"#);

        // Nothing changed since: gitlab-runner checks the primary remote (none here) and keeps the archive.
        archiver(a, &wd, &cap.log()).await.unwrap();
        assert!(cap
            .text()
            .contains("Primary cache does not exist remotely, uploading existing archive"));

        std::fs::remove_dir_all(wd.join("vendor")).unwrap();
        let cap = Captured::default();
        let e = ExtractorArgs {
            file: "../cache/key/cache.zip".into(),
            ..Default::default()
        };
        extractor(e, &wd, &cap.log()).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(wd.join("vendor/lib/a.txt")).unwrap(),
            "a"
        );
        assert!(cap
            .text()
            .contains("Instead a local version of cache will be extracted."));
    }

    #[tokio::test]
    async fn a_missing_cache_exits_1_with_gitlabs_warning() {
        let d = tempfile::tempdir().unwrap();
        let cap = Captured::default();
        let e = ExtractorArgs {
            file: "cache/none/cache.zip".into(),
            ..Default::default()
        };
        assert_eq!(extractor(e, d.path(), &cap.log()).await, Err(Stop(1)));
        assert!(
            cap.text().ends_with("WARNING: Cache file does not exist\n"),
            "{}",
            cap.text()
        );
        let cap = Captured::default();
        assert_eq!(
            extractor(ExtractorArgs::default(), d.path(), &cap.log()).await,
            Err(Stop(1))
        );
        assert_eq!(cap.text(), "WARNING: Missing cache file\n");
    }

    #[tokio::test]
    async fn nothing_to_cache_is_a_warning_and_success() {
        let d = tempfile::tempdir().unwrap();
        let cap = Captured::default();
        archiver(
            archiver_args("c/cache.zip", &["none"]),
            d.path(),
            &cap.log(),
        )
        .await
        .unwrap();
        assert!(
            cap.text().contains("WARNING: No files to cache."),
            "{}",
            cap.text()
        );
        assert!(!d.path().join("c/cache.zip").exists());
        let cap = Captured::default();
        assert_eq!(
            archiver(archiver_args("", &["x"]), d.path(), &cap.log()).await,
            Err(Stop(1))
        );
        assert_eq!(cap.text(), "FATAL: Missing --file\n");
    }

    #[tokio::test]
    async fn the_alternate_file_becomes_the_primary() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "x").unwrap();
        let cap = Captured::default();
        let mut a = archiver_args("c/alt/cache.zip", &["f"]);
        archiver(a.clone(), d.path(), &cap.log()).await.unwrap();
        a.file = "c/primary/cache.zip".into();
        a.alternate_file = Some("c/alt/cache.zip".into());
        try_rename_alternate_file(&a, d.path(), &d.path().join(&a.file), &cap.log());
        assert!(d.path().join("c/primary/cache.zip").exists());
        assert!(!d.path().join("c/alt/cache.zip").exists());
        assert!(cap
            .text()
            .contains("Renamed alternate cache file to primary"));
    }

    #[tokio::test]
    async fn a_tarzstd_cache_is_written_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "zstd").unwrap();
        let mut a = archiver_args("c/cache.zip", &["f"]);
        a.compression_format = "TarZstd".into();
        a.compression_level = "nope".into();
        let cap = Captured::default();
        archiver(a, d.path(), &cap.log()).await.unwrap();
        assert!(cap
            .text()
            .contains("WARNING: compression level \"nope\" is invalid, falling back to default"));
        let head = std::fs::read(d.path().join("c/cache.zip")).unwrap();
        assert_eq!(&head[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        std::fs::remove_file(d.path().join("f")).unwrap();
        let e = ExtractorArgs {
            file: "c/cache.zip".into(),
            ..Default::default()
        };
        extractor(e, d.path(), &cap.log()).await.unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("f")).unwrap(), "zstd");
    }

    #[test]
    fn headers_and_env_files_read_as_gitlab_reads_them() {
        assert_eq!(
            split_headers(&[
                "Header-1: a value".into(),
                "no separator".into(),
                "X-Amz-Meta-Cachekey:k:with:colons".into(),
            ]),
            vec![
                ("Header-1".to_owned(), "a value".to_owned()),
                ("X-Amz-Meta-Cachekey".to_owned(), "k:with:colons".to_owned()),
            ]
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("env");
        std::fs::write(
            &p,
            "# comment\nexport CACHE_METADATA='{\"cachekey\":\"k\"}'\nA=\"x\\ny\"\nB=plain # note\n",
        )
        .unwrap();
        let env = read_env_file(&p).unwrap();
        assert_eq!(env["CACHE_METADATA"], r#"{"cachekey":"k"}"#);
        assert_eq!(env["A"], "x\ny");
        assert_eq!(env["B"], "plain");
    }
}
