//! Resolving a job before it runs: builds and project dirs, the runner's variable list in GitLab's order
//! (reference `protocol.md` §7.3, §7.4), git settings and the timeouts read from job variables. Bad values
//! fail the job here, before any stage starts.

use crate::feature_flags::{self, JobSettings};
use crate::job::{JobEnv, DEFAULT_AFTER_SCRIPT_TIMEOUT, DEFAULT_JOB_TIMEOUT};
use crate::layout::{project_slug, JobDirs};
use crate::sources::{self, GitStrategy, SourcesSettings, SubmoduleStrategy};
use crate::variables::Variables;
use runwright_client::types::{JobResponse, JobVariable};
use runwright_config::parse_go_duration;
use std::time::Duration;

/// Resolved per-job settings.
pub(crate) struct Plan {
    pub(crate) dirs: JobDirs,
    pub(crate) vars: Variables,
    pub(crate) shell: String,
    /// Feature flags, `CI_DEBUG_*` and their warnings (the service resolved the same for the trace).
    pub(crate) settings: JobSettings,
    pub(crate) debug_trace: bool,
    pub(crate) sources: SourcesSettings,
    pub(crate) get_sources_attempts: u32,
    pub(crate) artifact_download_attempts: u32,
    pub(crate) restore_cache_attempts: u32,
    /// The local cache directory (`cache_dir`, or the executor's default below the working directory).
    pub(crate) cache_dir: std::path::PathBuf,
    pub(crate) empty_strategy: bool,
    /// When the job timeout fires (presigned cache URLs live until then).
    pub(crate) deadline: tokio::time::Instant,
    pub(crate) script_timeout: Option<Duration>,
    pub(crate) after_script_timeout: Duration,
}

/// Resolves everything the stages need; an error is a message for the trace (`runner_system_failure`).
pub(crate) fn plan(env: &JobEnv<'_>, job: &JobResponse) -> Result<Plan, String> {
    let runner = env.runner;
    let exec = env.executor;
    let builds_dir = match runner.builds_dir.as_deref().filter(|s| !s.is_empty()) {
        Some(d) => env.working_dir.join(d),
        None => env.working_dir.join(exec.default_builds_dir()),
    };
    let job_vars = Variables::from_job(&job.variables);
    let strategy = GitStrategy::parse(job_vars.value("GIT_STRATEGY"), job.allow_git_fetch)?;
    let slug = project_slug(job);
    let dirs = JobDirs::new(
        &builds_dir,
        exec.builds_dir_shared(),
        &runner.short_token(),
        env.concurrent_project_id,
        &slug,
        strategy == GitStrategy::Empty,
    );
    let project_dir = dirs.project_dir.to_string_lossy().to_string();
    let tmp_dir = dirs.tmp_dir.to_string_lossy().to_string();
    let job_timeout = if job.runner_info.timeout > 0 {
        job.runner_info.timeout
    } else {
        DEFAULT_JOB_TIMEOUT.as_secs() as i64
    };

    // The runner's list, in GitLab's order (§7.3, runner common/build.go `GetAllVariables`): every feature
    // flag with its resolved value, `CI_JOB_IMAGE`, the runner's variables, the job's own (without the flags,
    // so `[runners.feature_flags]` keeps winning), then the runner's after them.
    let settings = JobSettings::of(runner, job);
    let list = |job_image: Option<&str>| {
        let mut vars = Variables::new();
        for (name, on) in settings.feature_flags.iter() {
            vars.set(name, on.to_string());
        }
        if let Some(image) = job_image {
            vars.set("CI_JOB_IMAGE", image);
        }
        vars.set("CI_RUNNER_SHORT_TOKEN", runner.short_token());
        feature_flags::push_environment(&mut vars, &runner.environment);
        vars.set("CI_BUILDS_DIR", dirs.builds_dir.to_string_lossy());
        vars.set("CI_PROJECT_DIR", project_dir.clone());
        vars.set("CI_CONCURRENT_ID", env.concurrent_id.to_string());
        vars.set(
            "CI_CONCURRENT_PROJECT_ID",
            env.concurrent_project_id.to_string(),
        );
        vars.set("CI_SERVER", "yes");
        vars.set("CI_JOB_STATUS", "running");
        vars.set("CI_JOB_TIMEOUT", job_timeout.to_string());
        vars.extend(feature_flags::non_flag_variables(&job.variables).cloned());
        if exec.shared_environment() {
            vars.set("CI_SHARED_ENVIRONMENT", "true");
        } else {
            vars.set("CI_DISPOSABLE_ENVIRONMENT", "true");
        }
        vars.set("CI_RUNNER_VERSION", env.identity.version.clone());
        vars.set("CI_RUNNER_REVISION", env.identity.revision.clone());
        vars.set(
            "CI_RUNNER_EXECUTABLE_ARCH",
            format!("{}/{}", env.identity.platform, env.identity.architecture),
        );
        vars.set("RUNNER_TEMP_PROJECT_DIR", tmp_dir.clone());
        for (k, v) in exec.job_variables(job, env.concurrent_project_id) {
            vars.set(&k, v);
        }
        vars
    };
    let tmp_for_files = tmp_dir.clone();
    let file_path = move |key: &str| format!("{tmp_for_files}/{key}");
    // `CI_JOB_IMAGE` is the image name expanded against the job's variables (`expandContainerOptions`), and
    // like every value expanded once more with the list.
    let job_image = feature_flags::job_image(job).map(|name| {
        list(Some(name))
            .expanded(&file_path)
            .expand_str(name, &file_path)
    });
    let vars = list(job_image.as_deref()).expanded(&file_path);
    let shell = runner
        .shell
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| exec.shell().to_string());
    let debug_trace = settings.debug_trace;

    let clean_flags = match vars.value("GIT_CLEAN_FLAGS").map(str::trim) {
        Some("none") => None,
        Some(f) if !f.is_empty() => Some(f.to_string()),
        _ => Some("-ffdx".to_string()),
    };
    let fetch_flags = match vars.value("GIT_FETCH_EXTRA_FLAGS").map(str::trim) {
        Some("none") => String::new(),
        Some(f) if !f.is_empty() => f.to_string(),
        _ => "--prune --quiet".to_string(),
    };
    let depth = match vars
        .value("GIT_DEPTH")
        .and_then(|d| d.trim().parse::<i64>().ok())
    {
        Some(d) => d,
        None => job.git_info.depth,
    };
    let project_path = vars
        .value("CI_PROJECT_PATH")
        .map(str::to_string)
        .unwrap_or_else(|| slug.clone());
    let sources = SourcesSettings {
        strategy,
        submodules: SubmoduleStrategy::parse(vars.value("GIT_SUBMODULE_STRATEGY"))?,
        checkout: vars.bool("GIT_CHECKOUT").unwrap_or(true),
        clean_flags,
        fetch_flags,
        depth,
        submodule_depth: vars
            .value("GIT_SUBMODULE_DEPTH")
            .and_then(|d| d.trim().parse().ok())
            .or(Some(depth)),
        submodule_paths: vars.value("GIT_SUBMODULE_PATHS").unwrap_or("").to_string(),
        submodule_update_flags: vars
            .value("GIT_SUBMODULE_UPDATE_FLAGS")
            .unwrap_or("")
            .to_string(),
        remote_url: sources::remote_url(job, runner.clone_url.as_deref(), &project_path),
        project_dir,
        tmp_dir,
    };
    let attempts = |key: &str| -> Result<u32, String> {
        match vars.value(key).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(1),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=10).contains(&n) => Ok(n),
                _ => Err(format!(
                    "{key}: number of attempts out of the range [1, 10]: {v}"
                )),
            },
        }
    };
    let duration_var = |key: &str| -> Result<Option<Duration>, String> {
        match vars.value(key).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => parse_go_duration(v).map(Some).map_err(|_| {
                format!("{key}: invalid duration {v:?} (use Go syntax, e.g. 10m or 1h30m)")
            }),
        }
    };
    Ok(Plan {
        get_sources_attempts: attempts("GET_SOURCES_ATTEMPTS")?,
        artifact_download_attempts: attempts("ARTIFACT_DOWNLOAD_ATTEMPTS")?,
        restore_cache_attempts: attempts("RESTORE_CACHE_ATTEMPTS")?,
        cache_dir: match runner.cache_dir.as_deref().filter(|s| !s.is_empty()) {
            Some(d) => env.working_dir.join(d),
            None => env.working_dir.join(exec.default_cache_dir()),
        },
        empty_strategy: strategy == GitStrategy::Empty,
        deadline: tokio::time::Instant::now() + Duration::from_secs(job_timeout.max(0) as u64),
        script_timeout: duration_var("RUNNER_SCRIPT_TIMEOUT")?.filter(|d| !d.is_zero()),
        after_script_timeout: duration_var("RUNNER_AFTER_SCRIPT_TIMEOUT")?
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_AFTER_SCRIPT_TIMEOUT),
        dirs,
        vars,
        shell,
        settings,
        debug_trace,
        sources,
    })
}

impl Variables {
    /// The job's own list (for settings like `GIT_STRATEGY` that are read before the full list exists).
    pub fn from_job(vars: &[JobVariable]) -> Self {
        let mut v = Variables::new();
        v.extend(vars.iter().cloned());
        v
    }
}
