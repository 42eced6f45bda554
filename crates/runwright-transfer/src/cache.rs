//! `restore_cache` and `archive_cache` / `archive_cache_on_failure` (reference `protocol.md` §6, §7.1).
//!
//! Keys arrive from GitLab already suffixed (`-protected`, the cache index); here they are expanded, given the
//! runner's fallback (`<job>/<ref>`), sanitised and, with `FF_HASH_CACHE_KEYS`, hashed. The archive lives in
//! GitLab's local layout (`<cache_dir>/<project>/<key>/cache.zip`, so a host switching runners keeps its
//! caches); with `[runners.cache] Type = "s3"` it also goes to the bucket through presigned URLs. Nothing here
//! ever fails the job: a cache problem is a warning, as in GitLab's runner.

use crate::{blocking, Error};
use async_trait::async_trait;
use runwright_api::failure_reason::FailureReason;
use runwright_api::types::Cache;
use runwright_archive::{ArchiveSpec, Format, Level, WriteOptions};
use runwright_cache::key::{self, CacheKey};
use runwright_cache::local::{project_slug, LocalCache};
use runwright_cache::s3::{DownloadResult, S3Cache, UploadResult};
use runwright_engine::steps::{JobStep, StepContext, StepError, StepPosition};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `policy`: `pull-push` (default), `pull`, `push`; variables expanded; anything else is an error
/// (runner common/spec/spec.go `CheckPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    PullPush,
    Pull,
    Push,
}

fn policy(ctx: &StepContext<'_>, c: &Cache) -> Result<Policy, Error> {
    match ctx.expand(&c.policy).trim() {
        "" | "pull-push" => Ok(Policy::PullPush),
        "pull" => Ok(Policy::Pull),
        "push" => Ok(Policy::Push),
        other => Err(Error::UnknownCachePolicy(other.to_string())),
    }
}

fn saves(c: &Cache, succeeded: bool) -> bool {
    crate::when_matches(&c.when, succeeded)
}

fn has_content(c: &Cache) -> bool {
    !c.paths.is_empty() || c.untracked
}

/// The resolved flag (runner shells/abstract.go: `build.IsFeatureFlagOn(featureflags.HashCacheKeys)`), so
/// `[runners.feature_flags]` wins over the job's variable.
fn hash_keys(ctx: &StepContext<'_>) -> bool {
    ctx.feature_flags
        .is_on(runwright_engine::feature_flags::HASH_CACHE_KEYS)
}

/// The entry's key as written, expanded; `<job>/<ref>` when that leaves nothing (§6.1).
fn raw_key(ctx: &StepContext<'_>, c: &Cache) -> String {
    let raw = ctx.expand(&c.key);
    if raw.is_empty() {
        key::default_key(&ctx.job.job_info.name, &ctx.job.git_info.ref_name)
    } else {
        raw
    }
}

/// `CACHE_REQUEST_TIMEOUT` in minutes (default 10) bounds each transfer to and from the bucket.
fn http(ctx: &StepContext<'_>) -> Result<reqwest::Client, Error> {
    let minutes = ctx
        .var("CACHE_REQUEST_TIMEOUT")
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|m| *m > 0)
        .unwrap_or(10);
    runwright_cache::s3::http_client(Duration::from_secs(minutes * 60)).map_err(Error::Cache)
}

fn archive_format(ctx: &StepContext<'_>) -> Format {
    match Format::parse(ctx.var("CACHE_COMPRESSION_FORMAT")) {
        Some(Format::Gzip) | None => Format::Zip,
        Some(f) => f,
    }
}

/// How one cache entry's restore ended (the service counts them: `runwright_cache_restores_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// The primary key's archive was extracted.
    Hit,
    /// A `fallback_keys` / `CACHE_FALLBACK_KEY` archive was extracted.
    FallbackHit,
    /// No key had an archive that could be extracted.
    Miss,
}

impl RestoreOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreOutcome::Hit => "hit",
            RestoreOutcome::FallbackHit => "fallback_hit",
            RestoreOutcome::Miss => "miss",
        }
    }
}

/// Told of every cache entry's restore outcome.
pub type RestoreObserver = Arc<dyn Fn(RestoreOutcome) + Send + Sync>;

/// What both cache steps share: where the local archives are and the distributed cache, if any.
pub struct CacheStore {
    s3: Option<Arc<S3Cache>>,
    observer: Option<RestoreObserver>,
}

impl CacheStore {
    /// `s3` is the runner's distributed cache (`None` keeps caches local only).
    pub fn new(s3: Option<Arc<S3Cache>>) -> Arc<Self> {
        Self::observed(s3, None)
    }

    /// As [`CacheStore::new`], with `observer` told how each restore ended.
    pub fn observed(s3: Option<Arc<S3Cache>>, observer: Option<RestoreObserver>) -> Arc<Self> {
        Arc::new(Self { s3, observer })
    }

    fn local(&self, ctx: &StepContext<'_>) -> (LocalCache, String) {
        let slug = project_slug(
            &ctx.job.git_info.repo_url,
            ctx.job.job_info.project_id,
            ctx.empty_strategy,
        );
        (LocalCache::new(ctx.cache_dir.to_path_buf()), slug)
    }

    /// Presigned URLs live as long as the job may still run, and at least a minute.
    fn url_lifetime(ctx: &StepContext<'_>) -> Duration {
        ctx.time_left.max(Duration::from_secs(60))
    }
}

/// Restores each cache entry: the first of its keys (primary, `fallback_keys`, `CACHE_FALLBACK_KEY`) that
/// has an archive is extracted into the project directory.
pub struct RestoreCache {
    store: Arc<CacheStore>,
}

impl RestoreCache {
    pub fn new(store: Arc<CacheStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl JobStep for RestoreCache {
    fn position(&self) -> StepPosition {
        StepPosition::BeforeScript
    }

    fn section(&self, ctx: &StepContext<'_>) -> Option<(String, String)> {
        ctx.job
            .cache
            .iter()
            .find(|c| has_content(c) && !matches!(policy(ctx, c), Ok(Policy::Push)))?;
        Some(("restore_cache".into(), "Restoring cache".into()))
    }

    async fn run(&self, ctx: &StepContext<'_>) -> Result<(), StepError> {
        for c in ctx.job.cache.iter().filter(|c| has_content(c)) {
            match policy(ctx, c) {
                Ok(Policy::Push) => continue,
                Ok(_) => {}
                Err(e) => {
                    return Err(StepError {
                        reason: FailureReason::ScriptFailure,
                        message: e.to_string(),
                        exit_code: None,
                    })
                }
            }
            let fallbacks: Vec<String> = c.fallback_keys.iter().map(|k| ctx.expand(k)).collect();
            let found = key::candidates(
                &raw_key(ctx, c),
                &fallbacks,
                ctx.variables.value("CACHE_FALLBACK_KEY"),
                hash_keys(ctx),
            );
            for w in &found.warnings {
                ctx.warn(w);
            }
            let mut restored = None;
            for (i, k) in found.keys.iter().enumerate() {
                ctx.line(&format!("Checking cache for {}...", k.human));
                if self.restore_key(ctx, k).await {
                    restored = Some(i);
                    break;
                }
            }
            if found.keys.is_empty() {
                continue;
            }
            let outcome = match restored {
                Some(0) => RestoreOutcome::Hit,
                Some(_) => RestoreOutcome::FallbackHit,
                None => {
                    ctx.warn("Failed to extract cache");
                    RestoreOutcome::Miss
                }
            };
            if let Some(observe) = &self.store.observer {
                observe(outcome);
            }
        }
        Ok(())
    }
}

impl RestoreCache {
    /// One key, with `RESTORE_CACHE_ATTEMPTS` tries; `true` once extracted.
    async fn restore_key(&self, ctx: &StepContext<'_>, k: &CacheKey) -> bool {
        let human = k.human.as_str();
        let (local, slug) = self.store.local(ctx);
        let archive = local.archive_path(&slug, &k.storage);
        for attempt in 1..=ctx.restore_cache_attempts {
            if ctx.cancel.is_cancelled() {
                return false;
            }
            if attempt > 1 {
                ctx.warn(&format!(
                    "Retrying restore of cache {human}, attempt {attempt} of {}",
                    ctx.restore_cache_attempts
                ));
            }
            if let Some(s3) = &self.store.s3 {
                match self.download(ctx, s3, &k.storage, &archive).await {
                    Ok(true) => {}
                    Ok(false) => {
                        if !archive.exists() {
                            ctx.warn(&format!("{human}: not found in the shared cache"));
                            return false;
                        }
                    }
                    Err(e) => {
                        ctx.warn(&e.to_string());
                        continue;
                    }
                }
            } else {
                ctx.line("No URL provided, cache will not be downloaded from shared cache server. Instead a local version of cache will be extracted.");
            }
            if !archive.exists() {
                ctx.warn(&format!("{}: file does not exist", archive.display()));
                return false;
            }
            let project = ctx.project_dir.to_path_buf();
            let file = archive.clone();
            let opts = crate::extract_options(ctx);
            match blocking(move || {
                runwright_archive::extract(&file, &project, &opts)
                    .map_err(|e| Error::archive(e, "cache"))
            })
            .await
            {
                Ok(_) => {
                    local.mark_used(&slug, &k.storage);
                    ctx.green("Successfully extracted cache");
                    return true;
                }
                Err(e) => ctx.warn(&format!("Extracting cache {human}: {e}")),
            }
        }
        false
    }

    /// `Ok(true)` when the local copy is now current, `Ok(false)` when the bucket has no such object.
    async fn download(
        &self,
        ctx: &StepContext<'_>,
        s3: &S3Cache,
        stored: &str,
        archive: &std::path::Path,
    ) -> Result<bool, Error> {
        let object = s3.object_name(ctx.job.job_info.project_id, stored, hash_keys(ctx))?;
        let life = CacheStore::url_lifetime(ctx);
        let get = s3.presign_get(&object, life).await?;
        let head = s3.presign_head(&object, life).await?;
        ctx.line(&format!(
            "Downloading cache from {}",
            runwright_cache::strip_query(get.as_str())
        ));
        match runwright_cache::s3::download(&http(ctx)?, get.as_str(), head.as_str(), archive)
            .await?
        {
            DownloadResult::NotFound => Ok(false),
            DownloadResult::UpToDate { .. } => {
                ctx.line("Local cache is up to date, skipping the download");
                Ok(true)
            }
            DownloadResult::Downloaded { .. } => Ok(true),
        }
    }
}

/// Saves each cache entry whose `when` matches the script's result and whose policy pushes.
pub struct ArchiveCache {
    store: Arc<CacheStore>,
}

impl ArchiveCache {
    pub fn new(store: Arc<CacheStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl JobStep for ArchiveCache {
    fn position(&self) -> StepPosition {
        StepPosition::AfterScript
    }

    fn section(&self, ctx: &StepContext<'_>) -> Option<(String, String)> {
        ctx.job.cache.iter().find(|c| {
            has_content(c) && saves(c, ctx.succeeded) && !matches!(policy(ctx, c), Ok(Policy::Pull))
        })?;
        Some(crate::result_section(
            ctx,
            "archive_cache",
            "archive_cache_on_failure",
            "Saving cache",
        ))
    }

    async fn run(&self, ctx: &StepContext<'_>) -> Result<(), StepError> {
        for c in ctx
            .job
            .cache
            .iter()
            .filter(|c| has_content(c) && saves(c, ctx.succeeded))
        {
            match policy(ctx, c) {
                Ok(Policy::Pull) => continue,
                Ok(_) => {}
                Err(e) => {
                    ctx.warn(&e.to_string());
                    continue;
                }
            }
            let k = match CacheKey::resolve(&raw_key(ctx, c), hash_keys(ctx)) {
                Ok((k, warning)) => {
                    if let Some(w) = warning {
                        ctx.warn(&w);
                    }
                    k
                }
                Err(e) => {
                    ctx.warn(&format!(
                        "Skipping cache archiving due to empty cache key: {e}"
                    ));
                    continue;
                }
            };
            if let Err(e) = self.save(ctx, c, &k).await {
                ctx.warn(&e.to_string());
            }
        }
        Ok(())
    }
}

impl ArchiveCache {
    async fn save(&self, ctx: &StepContext<'_>, c: &Cache, k: &CacheKey) -> Result<(), Error> {
        let (human, stored) = (k.human.as_str(), k.storage.as_str());
        ctx.line(&format!("Creating cache {human}..."));
        let (local, slug) = self.store.local(ctx);
        let archive: PathBuf = local.archive_path(&slug, stored);
        let spec = ArchiveSpec {
            paths: c.paths.iter().map(|p| ctx.expand(p)).collect(),
            exclude: Vec::new(),
            untracked: c.untracked,
            max_files: None,
        };
        let selection = crate::select(ctx, spec, "cache").await?;
        if selection.is_empty() {
            ctx.warn("No files to archive, cache will not be created");
            return Ok(());
        }
        let opts = WriteOptions {
            format: archive_format(ctx),
            level: Level::parse(ctx.var("CACHE_COMPRESSION_LEVEL")),
            ..WriteOptions::default()
        };
        if let Some(dir) = archive.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let target = archive.clone();
        blocking(move || {
            runwright_archive::write_archive(&selection, &target, &opts).map_err(Error::Archive)
        })
        .await?;
        local.write_metadata(&slug, stored, human)?;
        match &self.store.s3 {
            None => ctx.line("No URL provided, cache will not be uploaded to shared cache server. Cache will be stored only locally."),
            Some(s3) => {
                let object = s3
                    .object_name(ctx.job.job_info.project_id, stored, hash_keys(ctx))?;
                let put = s3
                    .presign_put(&object, CacheStore::url_lifetime(ctx), human)
                    .await?;
                ctx.line(&format!(
                    "Uploading cache.zip to {}",
                    runwright_cache::strip_query(put.as_str())
                ));
                match runwright_cache::s3::upload(&http(ctx)?, put.as_str(), &archive, human, s3.max_uploaded_archive_size())
                    .await?
                {
                    UploadResult::Uploaded { .. } => {}
                    UploadResult::TooLarge { size, max: limit } => ctx.warn(&format!(
                        "Cache archive size ({size} bytes) exceeds MaxUploadedArchiveSize ({limit} bytes); it is kept locally only"
                    )),
                }
            }
        }
        ctx.green("Created cache");
        Ok(())
    }
}
