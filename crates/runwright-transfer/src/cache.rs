//! `restore_cache` and `archive_cache` / `archive_cache_on_failure` (reference `protocol.md` §6, §7.1), written
//! as gitlab-runner's `shells/abstract.go` writes them (`cacheExtractor`, `extractCacheOrFallbackCachesWrapper`,
//! `addExtractCacheCommand`, `archiveCache`, `addCacheUploadCommand`).
//!
//! Keys arrive from GitLab already suffixed (`-protected`, the cache index); here they are expanded, given the
//! runner's fallback (`<job>/<ref>`), sanitised and, with `FF_HASH_CACHE_KEYS`, hashed. The archive lives in
//! GitLab's local layout below the job's cache dir (`<cache_dir>/<project>/<key>/cache.zip`, the helper's
//! `--file`); with `[runners.cache] Type = "s3"` the stage also gets presigned URLs (`--url`, `--head-url`, and
//! for the PUT its signed `--header`). Nothing here ever fails the job: every helper call is guarded, a cache
//! problem is a warning, as in GitLab's runner.

use crate::{guard_helper, Error};
use async_trait::async_trait;
use runwright_api::failure_reason::FailureReason;
use runwright_api::types::Cache;
use runwright_cache::key::{self, CacheKey};
use runwright_cache::local::{project_slug, LocalCache};
use runwright_cache::s3::{S3Cache, CACHE_KEY_HEADER};
use runwright_engine::script::ScriptWriter;
use runwright_engine::steps::{JobStep, StepContext, StepError, StepPosition, StepStage};
use std::sync::{Arc, Mutex};
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

/// `CACHE_REQUEST_TIMEOUT` in minutes, 10 when unset or not a positive number (runner common/build.go
/// `GetCacheRequestTimeout`): the helper's `--timeout`.
fn request_timeout(ctx: &StepContext<'_>) -> String {
    ctx.var("CACHE_REQUEST_TIMEOUT")
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|m| *m > 0)
        .unwrap_or(10)
        .to_string()
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

/// What both cache steps share: the distributed cache, if any, and who is told how restores ended.
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

    /// The helper's `--file` for `k`: GitLab's local layout below the job's cache dir. A path only; the runner
    /// never opens it.
    fn archive_file(ctx: &StepContext<'_>, k: &CacheKey) -> String {
        let slug = project_slug(
            &ctx.job.git_info.repo_url,
            ctx.job.job_info.project_id,
            ctx.empty_strategy,
        );
        LocalCache::new(ctx.cache_dir.to_path_buf())
            .archive_path(&slug, &k.storage)
            .to_string_lossy()
            .to_string()
    }

    /// Presigned URLs live as long as the job may still run, and at least a minute.
    fn url_lifetime(ctx: &StepContext<'_>) -> Duration {
        ctx.time_left.max(Duration::from_secs(60))
    }

    /// `--url <GET> --head-url <HEAD>` for `k` (runner `getCacheDownloadURLAndEnv`); nothing without S3.
    async fn download_args(
        &self,
        ctx: &StepContext<'_>,
        k: &CacheKey,
    ) -> Result<Vec<String>, Error> {
        let Some(s3) = &self.s3 else {
            return Ok(Vec::new());
        };
        let object = s3.object_name(ctx.job.job_info.project_id, &k.storage, hash_keys(ctx))?;
        let life = Self::url_lifetime(ctx);
        let get = s3.presign_get(&object, life).await?;
        let head = s3.presign_head(&object, life).await?;
        Ok(vec![
            "--url".into(),
            get.to_string(),
            "--head-url".into(),
            head.to_string(),
        ])
    }

    /// `--url <PUT> --header 'x-amz-meta-cachekey: <key>'` for `k` (runner `getCacheUploadURLAndEnv`: the
    /// headers the signature covers); nothing without S3.
    async fn upload_args(&self, ctx: &StepContext<'_>, k: &CacheKey) -> Result<Vec<String>, Error> {
        let Some(s3) = &self.s3 else {
            return Ok(Vec::new());
        };
        let object = s3.object_name(ctx.job.job_info.project_id, &k.storage, hash_keys(ctx))?;
        let put = s3
            .presign_put(&object, Self::url_lifetime(ctx), &k.human)
            .await?;
        let mut args = vec!["--url".to_string(), put.to_string()];
        // Signed only when S3 can store the key as a header value (see `presign_put`).
        if !k.human.is_empty() && k.human.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            args.push("--header".into());
            args.push(format!("{CACHE_KEY_HEADER}: {}", k.human));
        }
        Ok(args)
    }
}

/// Restores each cache entry: the first of its keys (primary, `fallback_keys`, `CACHE_FALLBACK_KEY`) whose
/// archive the helper extracts into the project directory.
pub struct RestoreCache {
    store: Arc<CacheStore>,
    /// The number of keys of each entry the last script tries, in order: how its output is read back.
    written: Mutex<Vec<usize>>,
}

impl RestoreCache {
    pub fn new(store: Arc<CacheStore>) -> Self {
        Self {
            store,
            written: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl JobStep for RestoreCache {
    fn position(&self) -> StepPosition {
        StepPosition::BeforeScript
    }

    async fn write(
        &self,
        ctx: &StepContext<'_>,
        w: &mut ScriptWriter,
    ) -> Result<Option<StepStage>, StepError> {
        let mut entries = Vec::new();
        let mut pulls = false;
        for c in ctx.job.cache.iter().filter(|c| has_content(c)) {
            let keys = key::candidates(
                &raw_key(ctx, c),
                &c.fallback_keys
                    .iter()
                    .map(|k| ctx.expand(k))
                    .collect::<Vec<_>>(),
                ctx.variables.value("CACHE_FALLBACK_KEY"),
                hash_keys(ctx),
            );
            match policy(ctx, c) {
                Ok(Policy::Push) => {
                    let human = keys.keys.first().map(|k| k.human.as_str()).unwrap_or("");
                    w.notice(&format!("Not downloading cache {human} due to policy"));
                    continue;
                }
                Ok(_) => pulls = true,
                Err(e) => {
                    return Err(StepError {
                        reason: FailureReason::ScriptFailure,
                        message: e.to_string(),
                        exit_code: None,
                    })
                }
            }
            for warning in &keys.warnings {
                w.warning(warning);
            }
            if keys.keys.is_empty() {
                continue;
            }
            self.write_entry(ctx, w, c, &keys.keys).await;
            entries.push(keys.keys.len());
        }
        // Nothing to pull: no stage (today's runner shows no section for push-only caches either).
        if !pulls {
            return Ok(None);
        }
        if let Ok(mut written) = self.written.lock() {
            *written = entries;
        }
        Ok(Some(StepStage {
            name: "restore_cache".into(),
            title: "Restoring cache".into(),
        }))
    }

    fn attempts(&self, ctx: &StepContext<'_>) -> u32 {
        ctx.restore_cache_attempts
    }

    fn fails_job(&self) -> bool {
        false
    }

    fn observes_output(&self) -> bool {
        self.store.observer.is_some()
    }

    /// The stage's own lines say how each entry ended (see [`restore_outcomes`]).
    fn observe(&self, _ctx: &StepContext<'_>, output: &str) {
        let Some(observe) = &self.store.observer else {
            return;
        };
        let entries = self.written.lock().map(|w| w.clone()).unwrap_or_default();
        for outcome in restore_outcomes(&entries, output) {
            observe(outcome);
        }
    }
}

impl RestoreCache {
    /// One entry: the helper's check, then each fallback key in the `else` of the one before (runner
    /// `extractCacheOrFallbackCachesWrapper` → `guardRunnerCommand` → `addExtractCacheCommand`).
    async fn write_entry(
        &self,
        ctx: &StepContext<'_>,
        w: &mut ScriptWriter,
        c: &Cache,
        keys: &[CacheKey],
    ) {
        let mut calls = Vec::with_capacity(keys.len());
        for k in keys {
            let mut args = vec![
                ctx.helper.to_string(),
                "cache-extractor".into(),
                "--file".into(),
                CacheStore::archive_file(ctx, k),
                "--timeout".into(),
                request_timeout(ctx),
            ];
            let warning = match self.store.download_args(ctx, k).await {
                Ok(extra) => {
                    args.extend(extra);
                    None
                }
                Err(e) => Some(format!(
                    "Failed to obtain environment for cache {}: {e}",
                    k.human
                )),
            };
            calls.push((k.human.clone(), args, warning));
        }
        let clean_up = ctx
            .feature_flags
            .is_on(runwright_engine::feature_flags::CLEAN_UP_FAILED_CACHE_EXTRACT);
        let paths: Vec<String> = c.paths.iter().map(|p| ctx.expand(p)).collect();
        let (limit, max) = crate::limit_env(ctx);
        guard_helper(w, ctx, "Extracting cache", |w| {
            for (human, args, warning) in &calls {
                w.notice(&format!("Checking cache for {human}..."));
                if let Some(warning) = warning {
                    w.warning(warning);
                }
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                w.if_cmd_with_output(&[(limit, &max)], &argv);
                w.notice("Successfully extracted cache");
                w.else_();
                w.warning("Failed to extract cache");
                if clean_up {
                    for p in &paths {
                        w.printf(&format!("Removing {p}"));
                        w.rm_dir(p);
                    }
                }
            }
            for _ in &calls {
                w.end_if();
            }
        });
    }
}

/// How each entry's restore ended, read from the stage's output: per entry, a `Checking cache for …` line per
/// key tried, then `Successfully extracted cache` (the first key: a hit, a later one: a fallback hit) or, after
/// its last key, `Failed to extract cache` (a miss). `entries` holds the number of keys of each entry, as the
/// script was written. The lines are the script's own, so the service never reads a file of the job for them;
/// an entry whose lines are missing (the helper was missing, the output limit cut the log) is not counted.
pub fn restore_outcomes(entries: &[usize], output: &str) -> Vec<RestoreOutcome> {
    let mut outcomes = Vec::new();
    let mut entry = 0;
    let mut tried = 0;
    for line in output.lines() {
        let Some(&keys) = entries.get(entry) else {
            break;
        };
        if line.contains("Checking cache for ") {
            tried += 1;
        } else if line.contains("Successfully extracted cache") && tried > 0 {
            outcomes.push(if tried == 1 {
                RestoreOutcome::Hit
            } else {
                RestoreOutcome::FallbackHit
            });
            entry += 1;
            tried = 0;
        } else if line.contains("Failed to extract cache") && tried >= keys {
            outcomes.push(RestoreOutcome::Miss);
            entry += 1;
            tried = 0;
        }
    }
    outcomes
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

    async fn write(
        &self,
        ctx: &StepContext<'_>,
        w: &mut ScriptWriter,
    ) -> Result<Option<StepStage>, StepError> {
        let mut pushes = false;
        for c in ctx
            .job
            .cache
            .iter()
            .filter(|c| has_content(c) && saves(c, ctx.succeeded))
        {
            let k = match CacheKey::resolve(&raw_key(ctx, c), hash_keys(ctx)) {
                Ok((k, warning)) => {
                    if let Some(warning) = warning {
                        w.warning(&warning);
                    }
                    k
                }
                Err(e) => {
                    w.notice(&format!(
                        "Skipping cache archiving due to empty cache key: {e}"
                    ));
                    continue;
                }
            };
            match policy(ctx, c) {
                Ok(Policy::Pull) => {
                    w.notice(&format!("Not uploading cache {} due to policy", k.human));
                    continue;
                }
                Ok(_) => pushes = true,
                // A cache problem never fails the job (gitlab-runner fails it here; runwright warned always).
                Err(e) => {
                    w.warning(&format!("{e} for {}", k.human));
                    continue;
                }
            }
            self.write_entry(ctx, w, c, &k).await;
        }
        if !pushes {
            return Ok(None);
        }
        Ok(Some(crate::result_section(
            ctx,
            "archive_cache",
            "archive_cache_on_failure",
            "Saving cache",
        )))
    }

    fn fails_job(&self) -> bool {
        false
    }
}

impl ArchiveCache {
    /// runner `addCacheUploadCommand`: `cache-archiver` with the local file, the paths and the upload URL, its
    /// metadata (`CACHE_METADATA`) in its environment.
    async fn write_entry(
        &self,
        ctx: &StepContext<'_>,
        w: &mut ScriptWriter,
        c: &Cache,
        k: &CacheKey,
    ) {
        let mut args = vec![
            ctx.helper.to_string(),
            "cache-archiver".into(),
            "--file".into(),
            CacheStore::archive_file(ctx, k),
            "--timeout".into(),
            request_timeout(ctx),
        ];
        if let Some(max) = self
            .store
            .s3
            .as_ref()
            .map(|s3| s3.max_uploaded_archive_size())
            .filter(|m| *m > 0)
        {
            args.push("--max-uploaded-archive-size".into());
            args.push(max.to_string());
        }
        args.extend(crate::archiver_args(ctx, &c.paths, &[], c.untracked));
        match self.store.upload_args(ctx, k).await {
            Ok(extra) => args.extend(extra),
            Err(e) => w.warning(&format!("Unable to generate cache upload environment: {e}")),
        }
        let metadata = serde_json::json!({ "cachekey": k.human }).to_string();
        let (limit, max) = crate::limit_env(ctx);
        guard_helper(w, ctx, "Creating cache", |w| {
            w.notice(&format!("Creating cache {}...", k.human));
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            w.if_cmd_with_output(&[("CACHE_METADATA", &metadata), (limit, &max)], &argv);
            w.notice("Created cache");
            w.else_();
            w.warning("Failed to create cache");
            w.end_if();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{parsed, Fixture};
    use runwright_api::types::{JobResponse, JobVariable};

    fn job(caches: Vec<Cache>) -> JobResponse {
        let mut job = JobResponse {
            id: 42,
            cache: caches,
            ..Default::default()
        };
        job.job_info.project_id = 7;
        job.job_info.name = "build".into();
        job.git_info.ref_name = "main".into();
        job.git_info.repo_url = "https://gitlab.example/grp/app.git".into();
        job
    }

    fn cache(key: &str, policy: &str) -> Cache {
        Cache {
            key: key.into(),
            paths: vec!["vendor/".into(), "$OUT/".into()],
            policy: policy.into(),
            fallback_keys: vec!["fallback-$CI_COMMIT_REF_SLUG".into()],
            ..Cache::default()
        }
    }

    async fn restore(f: &Fixture) -> (Result<Option<StepStage>, StepError>, String) {
        let step = RestoreCache::new(CacheStore::new(None));
        let mut w = ScriptWriter::new();
        let r = step.write(&f.ctx(), &mut w).await;
        (r, parsed(&w))
    }

    #[tokio::test]
    async fn restore_tries_each_key_with_the_helper_in_the_else_of_the_one_before() {
        let mut j = job(vec![cache("deps", "")]);
        j.variables.push(JobVariable {
            key: "CACHE_FALLBACK_KEY".into(),
            value: "global".into(),
            ..Default::default()
        });
        j.variables.push(JobVariable {
            key: "CI_COMMIT_REF_SLUG".into(),
            value: "main".into(),
            ..Default::default()
        });
        let f = Fixture::new(j);
        let (r, script) = restore(&f).await;
        let stage = r.expect("written").expect("a stage");
        assert_eq!(
            (stage.name.as_str(), stage.title.as_str()),
            ("restore_cache", "Restoring cache")
        );
        assert!(
            script.contains("if /usr/bin/gitlab-runner-helper --version >/dev/null 2>&1 ; then"),
            "{script}"
        );
        let checks: Vec<&str> = script
            .lines()
            .filter(|l| l.contains("Checking cache for"))
            .collect();
        assert_eq!(checks.len(), 3, "{script}");
        for (check, key) in checks.iter().zip(["deps", "fallback-main", "global"]) {
            assert!(
                check.contains(&format!("Checking cache for {key}...")),
                "{check}"
            );
        }
        for key in ["deps", "fallback-main", "global"] {
            let call = format!(
                "if RUNWRIGHT_MAX_ARCHIVE_FILES=1000000 /usr/bin/gitlab-runner-helper cache-extractor --file /cache/grp/app/{key}/cache.zip --timeout 10 ; then"
            );
            assert!(script.contains(&call), "{call} in:\n{script}");
        }
        assert_eq!(script.matches("Failed to extract cache").count(), 3);
        assert!(
            script.contains("Missing /usr/bin/gitlab-runner-helper. Extracting cache is disabled.")
        );
        // Without S3 no URL; the runner keeps nothing but the paths.
        assert!(!script.contains("--url"), "{script}");
    }

    #[tokio::test]
    async fn push_only_caches_write_no_stage_and_a_bad_policy_fails_the_job() {
        let f = Fixture::new(job(vec![cache("deps", "push")]));
        let (r, _) = restore(&f).await;
        assert!(r.expect("written").is_none());

        let f = Fixture::new(job(vec![cache("deps", "pul")]));
        let (r, _) = restore(&f).await;
        let e = r.expect_err("refused");
        assert_eq!(e.reason, FailureReason::ScriptFailure);
        assert_eq!(
            e.message,
            "unknown cache policy \"pul\" (use pull, push or pull-push)"
        );
    }

    #[tokio::test]
    async fn archive_calls_the_archiver_with_paths_and_metadata_in_its_environment() {
        let mut j = job(vec![cache("deps", "pull"), cache("build/$CI_JOB_NAME", "")]);
        j.variables.push(JobVariable {
            key: "OUT".into(),
            value: "out dir".into(),
            ..Default::default()
        });
        j.variables.push(JobVariable {
            key: "CI_JOB_NAME".into(),
            value: "build".into(),
            ..Default::default()
        });
        let f = Fixture::new(j);
        let step = ArchiveCache::new(CacheStore::new(None));
        let mut w = ScriptWriter::new();
        let stage = step
            .write(&f.ctx(), &mut w)
            .await
            .expect("written")
            .expect("a stage");
        let script = parsed(&w);
        assert_eq!(stage.name, "archive_cache");
        assert_eq!(stage.title, "Saving cache for successful job");
        assert!(
            script.contains("Not uploading cache deps due to policy"),
            "{script}"
        );
        assert!(
            script.contains(
                "if CACHE_METADATA='{\"cachekey\":\"build/build\"}' RUNWRIGHT_MAX_ARCHIVE_FILES=1000000 /usr/bin/gitlab-runner-helper cache-archiver \
                 --file /cache/grp/app/build/build/cache.zip --timeout 10 --path vendor/ --path 'out dir/' ; then"
            ),
            "{script}"
        );
        assert!(script.contains("Creating cache build/build..."), "{script}");

        // A failed job saves only `when: on_failure` / `always` caches.
        let mut f = Fixture::new(job(vec![cache("deps", "")]));
        f.succeeded = false;
        let mut w = ScriptWriter::new();
        assert!(step
            .write(&f.ctx(), &mut w)
            .await
            .expect("written")
            .is_none());
    }

    #[test]
    fn restore_outcomes_follow_the_stages_own_lines() {
        let out = "\x1b[32;1mChecking cache for a...\x1b[0;m\nWARNING: file does not exist\n\
                   \x1b[0;33mFailed to extract cache\x1b[0;m\n\
                   \x1b[32;1mChecking cache for b...\x1b[0;m\n\x1b[32;1mSuccessfully extracted cache\x1b[0;m\n\
                   \x1b[32;1mChecking cache for c...\x1b[0;m\nSuccessfully extracted cache\n\
                   Checking cache for d...\nFailed to extract cache\nChecking cache for e...\nFailed to extract cache\n";
        assert_eq!(
            restore_outcomes(&[2, 1, 2], out),
            [
                RestoreOutcome::FallbackHit,
                RestoreOutcome::Hit,
                RestoreOutcome::Miss
            ]
        );
        // Lines cut off (or a missing helper): what is not there is not counted.
        assert_eq!(restore_outcomes(&[2], "Checking cache for a...\n"), []);
        assert_eq!(
            restore_outcomes(&[1], "Missing helper. Extracting cache is disabled.\n"),
            []
        );
    }
}
