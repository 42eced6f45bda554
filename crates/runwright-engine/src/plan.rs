//! Resolving a job before it runs: builds and project dirs (with `GIT_CLONE_PATH`), the runner's variable list
//! in GitLab's order (reference `protocol.md` §7.3, §7.4), the build settings and git settings, and the stage
//! timeouts. Values GitLab's runner only warns about become warnings for the trace
//! (runner common/build_settings.go); what it refuses fails the job here, before any stage starts.

use crate::error::Error;
use crate::feature_flags::{self, JobSettings};
use crate::job::{JobEnv, DEFAULT_AFTER_SCRIPT_TIMEOUT, DEFAULT_JOB_TIMEOUT};
use crate::layout::{project_slug, JobDirs};
use crate::settings::BuildSettings;
use crate::sources::{GitAuth, GitAuthInput, GitStrategy, SourcesSettings, SshServer};
use crate::variables::Variables;
use runwright_api::types::JobResponse;
use runwright_config::{format_go_duration, parse_go_duration};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The runner's stage retry back-off: 1 s to 5 s, or 5 s to 5 min with `FF_USE_EXPONENTIAL_BACKOFF_STAGE_RETRY`
/// (runner helpers/retry/retry.go `New`, common/consts.go `DefaultStageRetryBackoffMin/Max`).
const STAGE_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(5));
const STAGE_BACKOFF_EXPONENTIAL: (Duration, Duration) =
    (Duration::from_secs(5), Duration::from_secs(300));

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
    pub(crate) after_script_ignore_errors: bool,
    /// The local cache directory (`cache_dir`, or the executor's default below the working directory).
    pub(crate) cache_dir: std::path::PathBuf,
    pub(crate) empty_strategy: bool,
    /// When the job timeout fires (presigned cache URLs live until then).
    pub(crate) deadline: tokio::time::Instant,
    /// The settings the runner warns about, in its words (one warning before the executor is prepared).
    pub(crate) warnings: Vec<String>,
    /// `prepare_timeout` as the runner applies it (runner common/build.go `GetPrepareTimeout`).
    pub(crate) prepare_timeout: Duration,
    /// `get_sources_timeout` as the runner applies it (`GetGetSourcesTimeout`).
    pub(crate) get_sources_timeout: Duration,
    /// Minimum and maximum wait between attempts of a retried stage.
    pub(crate) stage_backoff: (Duration, Duration),
}

impl Plan {
    /// A stage script as the runner writes it for this job: its shell, `CI_DEBUG_TRACE`, and the eval form
    /// `FF_USE_LEGACY_BASH_EVAL` picks.
    pub(crate) fn script(&self, w: &crate::script::ScriptWriter) -> String {
        w.finish_with_eval(
            &self.shell,
            self.debug_trace,
            self.settings.feature_flags.is_on("FF_USE_LEGACY_BASH_EVAL"),
        )
    }
}

/// Go's `path.Clean`: lexical, `.` and `..` resolved, no trailing or doubled slashes.
fn clean_path(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|s| *s != "..") {
                    out.pop();
                } else if !abs {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (abs, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// The project dir `GIT_CLONE_PATH` asks for (runner common/build.go `getCustomBuildDir`): only with
/// `[runners.custom_build_dir] enabled`, and only inside the builds dir; both refusals are configuration errors.
fn custom_build_dir(root: &Path, dir: &str, enabled: bool) -> Result<PathBuf, Error> {
    if !enabled {
        return Err(Error::CustomBuildDirDisabled);
    }
    let root_s = root.to_string_lossy();
    let base = clean_path(&root_s);
    let target = clean_path(dir);
    if base.starts_with('/') != target.starts_with('/') {
        return Err(Error::ClonePathNotRelative { target, base });
    }
    let comps = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .map(str::to_string)
            .collect()
    };
    let (b, t) = (comps(&base), comps(&target));
    let common = b.iter().zip(&t).take_while(|(x, y)| x == y).count();
    let mut rel: Vec<String> = vec!["..".to_string(); b.len() - common];
    rel.extend(t[common..].iter().cloned());
    let rel = if rel.is_empty() {
        ".".to_string()
    } else {
        rel.join("/")
    };
    if rel.starts_with("..") {
        return Err(Error::ClonePathOutsideBuildsDir {
            dir: dir.to_string(),
            builds_dir: root_s.into_owned(),
        });
    }
    Ok(PathBuf::from(target))
}

/// A runner timeout setting bounded by the job timeout (runner `GetPrepareTimeout`, `GetGetSourcesTimeout`):
/// unset, zero or longer than the job: the job timeout, with a line in runwright's log as in the runner's.
fn stage_timeout(
    configured: Option<Duration>,
    job_timeout: Duration,
    key: &str,
    job_id: i64,
) -> Duration {
    match configured {
        None => job_timeout,
        Some(d) if d.is_zero() => {
            tracing::warn!(
                job = job_id,
                "{key} ({}) must be greater than 0; using job timeout ({})",
                format_go_duration(d),
                format_go_duration(job_timeout)
            );
            job_timeout
        }
        Some(d) if d > job_timeout => {
            tracing::warn!(
                job = job_id,
                "{key} ({}) exceeds job timeout ({}); using job timeout",
                format_go_duration(d),
                format_go_duration(job_timeout)
            );
            job_timeout
        }
        Some(d) => d,
    }
}

/// `RUNNER_SCRIPT_TIMEOUT` and `RUNNER_AFTER_SCRIPT_TIMEOUT` when the user scripts start, `time_left` before the
/// job timeout (runner common/build.go `getStageTimeoutContexts`): unparsable, negative or longer than what is
/// left of the job, a value is ignored with a warning. Returns (script timeout, after_script timeout, warnings).
pub(crate) fn script_timeouts(
    vars: &Variables,
    time_left: Duration,
) -> (Option<Duration>, Duration, Vec<String>) {
    let mut warnings = Vec::new();
    let mut read = |key: &str| -> Option<Duration> {
        let raw = vars.value(key).unwrap_or("");
        if raw.trim().is_empty() {
            return None;
        }
        match parse_go_duration(raw) {
            Ok(d) if d > time_left => {
                warnings.push(format!(
                    "{key} timeout: {raw} is longer than job timeout. Setting to job timeout"
                ));
                None
            }
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            // std's Duration has no sign: a negative duration is a valid one with a minus in front.
            Err(_)
                if raw
                    .strip_prefix('-')
                    .is_some_and(|r| parse_go_duration(r).is_ok_and(|d| !d.is_zero())) =>
            {
                warnings.push(format!("Ignoring relative {key} timeout: {raw}"));
                None
            }
            Err(_) => {
                warnings.push(format!("Ignoring malformed {key} timeout: {raw}"));
                None
            }
        }
    };
    let script = read("RUNNER_SCRIPT_TIMEOUT");
    let after = read("RUNNER_AFTER_SCRIPT_TIMEOUT").unwrap_or(DEFAULT_AFTER_SCRIPT_TIMEOUT);
    (script, after, warnings)
}

/// Resolves everything the stages need.
pub(crate) fn plan(env: &JobEnv<'_>, job: &JobResponse) -> Result<Plan, Error> {
    let runner = env.runner;
    let exec = env.executor;
    let builds_dir = match runner.builds_dir.as_deref().filter(|s| !s.is_empty()) {
        Some(d) => env.working_dir.join(d),
        None => env.working_dir.join(exec.default_builds_dir()),
    };
    let slug = project_slug(job);
    let job_timeout_secs = if job.runner_info.timeout > 0 {
        job.runner_info.timeout
    } else {
        DEFAULT_JOB_TIMEOUT.as_secs() as i64
    };
    let job_timeout = Duration::from_secs(job_timeout_secs.max(0) as u64);

    // The runner's list, in GitLab's order (§7.3, runner common/build.go `GetAllVariables`): every feature
    // flag with its resolved value, `CI_JOB_IMAGE`, the runner's variables, the job's own (without the flags,
    // so `[runners.feature_flags]` keeps winning), then the runner's after them.
    let job_settings = JobSettings::of(runner, job);
    let list = |project_dir: &str, tmp_dir: &str, job_image: Option<&str>| -> Variables {
        let mut vars = Variables::new();
        for (name, on) in job_settings.feature_flags.iter() {
            vars.set(name, on.to_string());
        }
        if let Some(image) = job_image {
            vars.set("CI_JOB_IMAGE", image);
        }
        vars.set("CI_RUNNER_SHORT_TOKEN", runner.short_token());
        feature_flags::push_environment(&mut vars, &runner.environment);
        vars.set("CI_BUILDS_DIR", builds_dir.to_string_lossy());
        vars.set("CI_PROJECT_DIR", project_dir);
        vars.set("CI_CONCURRENT_ID", env.concurrent_id.to_string());
        vars.set(
            "CI_CONCURRENT_PROJECT_ID",
            env.concurrent_project_id.to_string(),
        );
        vars.set("CI_SERVER", "yes");
        vars.set("CI_JOB_STATUS", "running");
        vars.set("CI_JOB_TIMEOUT", job_timeout_secs.to_string());
        vars.extend(crate::tls::variables(job));
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
        vars.set("RUNNER_TEMP_PROJECT_DIR", tmp_dir);
        for (k, v) in exec.job_variables(job, env.concurrent_project_id) {
            vars.set(&k, v);
        }
        vars
    };
    // Expanded as the job sees them; `CI_JOB_IMAGE` is the image name expanded against the job's variables
    // (`expandContainerOptions`), and like every value expanded once more with the list.
    let variables = |project_dir: &str, tmp_dir: &str| -> Variables {
        let tmp_for_files = tmp_dir.to_string();
        let file_path = move |key: &str| format!("{tmp_for_files}/{key}");
        let job_image = feature_flags::job_image(job).map(|name| {
            list(project_dir, tmp_dir, Some(name))
                .expanded(&file_path)
                .expand_str(name, &file_path)
        });
        list(project_dir, tmp_dir, job_image.as_deref()).expanded(&file_path)
    };

    // The settings are read before the project dir is known, as the runner reads them (its `StartBuild`):
    // `GIT_CLONE_PATH` may name `$CI_BUILDS_DIR`, the project dir depends on `GIT_STRATEGY`.
    let settings = BuildSettings::from_variables(
        &variables("", ".tmp"),
        job.allow_git_fetch,
        job.git_info.depth,
    );
    let strategy = settings.git_strategy;
    let dirs = if settings.git_clone_path.is_empty() {
        JobDirs::new(
            &builds_dir,
            exec.builds_dir_shared(),
            &runner.short_token(),
            env.concurrent_project_id,
            &slug,
            strategy == GitStrategy::Empty,
        )
    } else {
        let enabled = runner
            .custom_build_dir
            .as_ref()
            .and_then(|c| c.enabled)
            .unwrap_or_else(|| exec.default_custom_build_dir_enabled());
        let project_dir = custom_build_dir(&builds_dir, &settings.git_clone_path, enabled)?;
        let mut tmp = project_dir.clone().into_os_string();
        tmp.push(".tmp");
        JobDirs {
            builds_dir: builds_dir.clone(),
            project_dir,
            tmp_dir: PathBuf::from(tmp),
        }
    };
    let project_dir = dirs.project_dir.to_string_lossy().to_string();
    let tmp_dir = dirs.tmp_dir.to_string_lossy().to_string();
    let vars = variables(&project_dir, &tmp_dir);

    let shell = runner
        .shell
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| exec.shell().to_string());
    let debug_trace = job_settings.debug_trace;

    let project_path = vars
        .value("CI_PROJECT_PATH")
        .map(str::to_string)
        .unwrap_or_else(|| slug.clone());
    let auth = GitAuth::new(&GitAuthInput {
        job,
        clone_url: runner.clone_url.as_deref(),
        credentials_url: &runner.url,
        project_path: &project_path,
        force_https: settings.submodule_force_https,
        server: SshServer {
            host: vars.value("CI_SERVER_HOST").unwrap_or("").to_string(),
            ssh_host: vars
                .value("CI_SERVER_SHELL_SSH_HOST")
                .unwrap_or("")
                .to_string(),
            ssh_port: vars
                .value("CI_SERVER_SHELL_SSH_PORT")
                .unwrap_or("")
                .to_string(),
        },
    });
    let id = env.identity;
    // runner shells/abstract.go `writeGitCleanupAllConfigs`: on by default except for the shell executor and
    // GIT_STRATEGY=none; an explicit setting wins.
    let clean_git_config = runner
        .clean_git_config
        .unwrap_or(exec.name() != "shell" && strategy != GitStrategy::None);
    let sources = SourcesSettings {
        strategy,
        submodules: settings.submodule_strategy,
        checkout: settings.git_checkout,
        clean_flags: settings.clean_flags.clone(),
        fetch_flags: settings.fetch_flags.clone(),
        depth: job.git_info.depth,
        submodule_depth: settings.submodule_depth,
        submodule_paths: settings.submodule_paths.clone(),
        submodule_update_flags: settings.submodule_update_flags.clone(),
        lfs_skip_smudge: settings.lfs_skip_smudge,
        without_lfs_objects: runner.without_lfs_objects,
        object_format: job.git_info.repo_object_format.clone(),
        auth,
        clean_git_config,
        safe_directory: runner
            .safe_directory_checkout
            .unwrap_or_else(|| exec.default_safe_directory_checkout()),
        bundle_uris: job_settings.feature_flags.is_on("FF_USE_GIT_BUNDLE_URIS"),
        proactive_auth: job_settings
            .feature_flags
            .is_on("FF_USE_GIT_PROACTIVE_AUTH"),
        user_agent: format!(
            "http.userAgent={} {} {}/{}",
            id.name, id.version, id.platform, id.architecture
        ),
        project_dir: project_dir.clone(),
        job_tmp_dir: tmp_dir.clone(),
        tmp_dir,
    };
    let stage_backoff = if job_settings
        .feature_flags
        .is_on("FF_USE_EXPONENTIAL_BACKOFF_STAGE_RETRY")
    {
        STAGE_BACKOFF_EXPONENTIAL
    } else {
        STAGE_BACKOFF
    };
    Ok(Plan {
        get_sources_attempts: settings.get_sources_attempts,
        artifact_download_attempts: settings.artifact_download_attempts,
        restore_cache_attempts: settings.restore_cache_attempts,
        after_script_ignore_errors: settings.after_script_ignore_errors,
        cache_dir: match runner.cache_dir.as_deref().filter(|s| !s.is_empty()) {
            Some(d) => env.working_dir.join(d),
            None => env.working_dir.join(exec.default_cache_dir()),
        },
        empty_strategy: strategy == GitStrategy::Empty,
        deadline: tokio::time::Instant::now() + job_timeout,
        warnings: settings.errors,
        prepare_timeout: stage_timeout(
            runner.prepare_timeout,
            job_timeout,
            "prepare_timeout",
            job.id,
        ),
        get_sources_timeout: stage_timeout(
            runner.get_sources_timeout,
            job_timeout,
            "get_sources_timeout",
            job.id,
        ),
        stage_backoff,
        dirs,
        vars,
        shell,
        settings: job_settings,
        debug_trace,
        sources,
    })
}
