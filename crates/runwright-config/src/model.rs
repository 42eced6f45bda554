//! The typed contents of `config.toml`, key for key as GitLab's runner reads it.
//!
//! Structs mirror runner common/config.go (`Config`, `RunnerConfig` = `RunnerCredentials` +
//! `RunnerSettings`, `DockerConfig`, `CustomConfig`, …) and cache/cacheconfig: field names are
//! the TOML keys (renamed where GitLab's key has hyphens or CamelCase), and a field holds the raw
//! value as written, with GitLab's "unset" represented as `None`, an empty collection, or `0`
//! where GitLab itself treats zero as unset. Defaults are applied by the accessor methods
//! (`Config::check_interval()`, `RunnerConfig::output_limit_bytes()`, …), each citing the GitLab
//! code it follows. Sections of executors runwright does not implement yet (kubernetes, ssh,
//! parallels, virtualbox, machine, autoscaler, …) are kept as opaque TOML tables.
//!
//! `Debug` of structs holding secrets (runner token, cache credentials) prints them masked.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::Deserializer;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::de as vde;
use crate::gpus::{parse_gpus, GpuRequest};
use crate::token::short_token;

/// An opaque TOML table: accepted and kept, not interpreted.
pub type OpaqueTable = toml::Table;

// Defaults, from runner common/consts.go unless said otherwise.
/// `check_interval` when ≤ 0 (runner common/consts.go `CheckInterval`).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(3);
/// `shutdown_timeout` when ≤ 0 (`DefaultShutdownTimeout`).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// `connection_max_age` when unset (runner common/config.go `DefaultConnectionMaxAge`).
pub const DEFAULT_CONNECTION_MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// `[session_server] session_timeout` when ≤ 0 (`DefaultSessionTimeout`).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// `output_limit` in KiB when ≤ 0 (`DefaultTraceOutputLimit` = 4 MiB).
pub const DEFAULT_OUTPUT_LIMIT_KIB: usize = 4096;
/// `max_archive_files` when ≤ 0 (runwright's own, issue 17): see [`RunnerConfig::max_archive_files`].
pub const DEFAULT_MAX_ARCHIVE_FILES: usize = 1_000_000;
/// `unhealthy_requests_limit` when < 1 (`DefaultUnhealthyRequestsLimit`).
pub const DEFAULT_UNHEALTHY_REQUESTS_LIMIT: u32 = 3;
/// `unhealthy_interval` when unset (`DefaultUnhealthyInterval`).
pub const DEFAULT_UNHEALTHY_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// `job_status_final_update_retry_limit` when < 1 (`DefaultFinalUpdateRetryLimit`).
pub const DEFAULT_FINAL_UPDATE_RETRY_LIMIT: u32 = 10;
/// `[runners.docker] wait_for_services_timeout` when 0 (`DefaultWaitForServicesTimeout`).
pub const DEFAULT_WAIT_FOR_SERVICES_TIMEOUT: Duration = Duration::from_secs(30);

// =============================================================================================
// Global

/// The whole file (runner common/config.go `Config`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `concurrent`: worker slots of the whole process, i.e. jobs running at once across every
    /// `[[runners]]` entry.
    ///
    /// When the key is missing this is **1**: GitLab's runner decodes the file into
    /// `common.NewConfig()`, which starts with `Concurrent: 1` (runner common/config.go
    /// `NewConfig`), and the team's own config.toml has no `concurrent` line.
    #[serde(deserialize_with = "vde::count")]
    pub concurrent: usize,
    /// `check_interval` in seconds, raw; see [`Config::check_interval`].
    #[serde(deserialize_with = "vde::int")]
    pub check_interval: i64,
    /// `log_level`: a logrus level (`debug`, `info`, `warn`, `error`, `fatal`, `panic`, …).
    #[serde(deserialize_with = "vde::opt_log_level")]
    pub log_level: Option<String>,
    /// `log_format`: `runner`, `text` or `json`.
    #[serde(deserialize_with = "vde::opt_log_format")]
    pub log_format: Option<String>,
    /// `user`: set by `run --user`; the shell executor runs scripts as this user via `su`.
    pub user: Option<String>,
    /// `listen_address`: Prometheus/debug HTTP server address (read only at start).
    pub listen_address: Option<String>,
    /// `shutdown_timeout` in seconds, raw; see [`Config::shutdown_timeout`].
    #[serde(deserialize_with = "vde::int")]
    pub shutdown_timeout: i64,
    /// `sentry_dsn`.
    pub sentry_dsn: Option<String>,
    /// `connection_max_age` (Go duration); see [`Config::connection_max_age`].
    #[serde(deserialize_with = "vde::opt_go_duration")]
    pub connection_max_age: Option<Duration>,
    /// `labels`: default labels of every runner (validated at load as GitLab's runner does, runner
    /// common/labels.go).
    pub labels: BTreeMap<String, String>,
    /// `[session_server]`: interactive web terminal server (read only at start).
    pub session_server: Option<SessionServer>,
    /// `[experimental]`: kept as is.
    pub experimental: Option<OpaqueTable>,
    /// `[journal]`: runwright's extension, the job journal on the build host (issue 6). GitLab's runner ignores
    /// tables it does not know, so a file with this section still works with `gitlab-runner`.
    pub journal: Option<JournalConfig>,
    /// `[dashboard]`: runwright's extension, the web dashboard and JSON API on `listen_address` (issue 6).
    pub dashboard: Option<DashboardConfig>,
    /// `[[runners]]`.
    pub runners: Vec<RunnerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // runner common/config.go `NewConfig`: Concurrent: 1.
            concurrent: 1,
            check_interval: 0,
            log_level: None,
            log_format: None,
            user: None,
            listen_address: None,
            shutdown_timeout: 0,
            sentry_dsn: None,
            connection_max_age: None,
            labels: BTreeMap::new(),
            session_server: None,
            experimental: None,
            journal: None,
            dashboard: None,
            runners: Vec::new(),
        }
    }
}

impl Config {
    /// Time for one pass over all `[[runners]]`: `check_interval` seconds, or 3 s when ≤ 0
    /// (runner common/config.go `GetCheckInterval`).
    pub fn check_interval(&self) -> Duration {
        positive_secs(self.check_interval).unwrap_or(DEFAULT_CHECK_INTERVAL)
    }

    /// Forceful-shutdown timeout: `shutdown_timeout` seconds, or 30 s when ≤ 0
    /// (runner common/config.go `GetShutdownTimeout`).
    pub fn shutdown_timeout(&self) -> Duration {
        positive_secs(self.shutdown_timeout).unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT)
    }

    /// Maximum age of a pooled HTTP connection: `connection_max_age`, or 15 min when unset
    /// (runner common/config.go `LoadConfig`).
    pub fn connection_max_age(&self) -> Duration {
        self.connection_max_age
            .unwrap_or(DEFAULT_CONNECTION_MAX_AGE)
    }
}

fn positive_secs(secs: i64) -> Option<Duration> {
    u64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// `[journal]` (runwright only): where the job journal lives and what it keeps. Every key is optional; the
/// binary applies the defaults (`runwright-journal`'s `DEFAULT_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct JournalConfig {
    /// `enabled`: `false` turns the journal off (and with it the recovery of jobs after a crash).
    pub enabled: Option<bool>,
    /// `dir`: the journal directory; relative paths are taken from the config file's directory. Default:
    /// `journal/` beside `config.toml`, where `.runner_system_id` lives too.
    pub dir: Option<PathBuf>,
    /// `max_jobs`: the newest jobs to keep.
    pub max_jobs: Option<u64>,
    /// `max_age`: a Go duration (`720h`); older finished jobs go.
    #[serde(deserialize_with = "vde::opt_go_duration")]
    pub max_age: Option<Duration>,
    /// `max_size_mb`: MiB of metadata and traces to keep in all.
    pub max_size_mb: Option<u64>,
    /// `max_trace_mb`: MiB of one job's trace the journal keeps: the head GitLab got (`output_limit`) and the
    /// end of the output, with a note of what was dropped between them (issue 17). Default: four times the
    /// runner entry's `output_limit`, at least 16 MiB (`runwright-journal`'s `default_trace_cap`).
    pub max_trace_mb: Option<u64>,
    /// `min_free_mb`: below this many MiB free on the journal's file system, the journal stops writing traces
    /// (jobs go on) and runs its retention. Default: 1024, or 5 % of the file system when that is less.
    pub min_free_mb: Option<u64>,
}

/// `[dashboard]` (runwright only): the dashboard and JSON API that `listen_address` serves beside `/metrics`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DashboardConfig {
    /// `enabled`: `false` serves only `/metrics` and `/health` on `listen_address`.
    pub enabled: Option<bool>,
    /// `token`: required from clients (`Authorization: Bearer`, or `?token=` once in a browser) and required
    /// to listen on anything but loopback. Without it the service generates one on its first start and keeps it
    /// in `.runwright_dashboard_token` beside `config.toml` (mode 0600), unless `require_token = false`.
    pub token: Option<String>,
    /// `require_token`: `false` serves the dashboard on a loopback `listen_address` without any token — then
    /// every local user, and every job running on this host, can read every job's trace and the runners'
    /// state. Default `true` (issue 17 item 4).
    pub require_token: Option<bool>,
    /// `allowed_hosts`: the names (or addresses) clients may reach the dashboard by, in their `Host` header,
    /// besides `localhost`, the address they connected to and the host of `listen_address` — a reverse proxy's
    /// public name, say. Any other `Host` is refused: a web page cannot reach the dashboard through a DNS name
    /// it points at this host (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

/// The token never reaches a log: only whether one is set.
impl fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DashboardConfig")
            .field("enabled", &self.enabled)
            .field("token", &self.token.as_ref().map(|_| "[MASKED]"))
            .field("require_token", &self.require_token)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

/// `[session_server]` (runner common/config.go `SessionServer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SessionServer {
    /// `listen_address`.
    pub listen_address: Option<String>,
    /// `advertise_address`.
    pub advertise_address: Option<String>,
    /// `session_timeout` in seconds, raw; see [`SessionServer::session_timeout`].
    #[serde(deserialize_with = "vde::int")]
    pub session_timeout: i64,
}

impl SessionServer {
    /// How long a terminal session may stay after its job: `session_timeout` seconds, or
    /// 30 min when ≤ 0 (runner common/config.go `GetSessionTimeout`).
    pub fn session_timeout(&self) -> Duration {
        positive_secs(self.session_timeout).unwrap_or(DEFAULT_SESSION_TIMEOUT)
    }
}

// =============================================================================================
// [[runners]]

/// One `[[runners]]` entry (runner common/config.go `RunnerConfig`, `RunnerCredentials`,
/// `RunnerSettings`).
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RunnerConfig {
    /// `name`: description shown in GitLab and in logs.
    pub name: String,
    /// `url` (required): GitLab instance URL.
    #[serde(deserialize_with = "vde::non_empty")]
    pub url: String,
    /// `id`: runner id returned at registration (0 when unknown).
    #[serde(deserialize_with = "vde::int")]
    pub id: i64,
    /// `token` (required): runner authentication token. Secret: never print it, use
    /// [`RunnerConfig::short_token`].
    #[serde(deserialize_with = "vde::non_empty")]
    pub token: String,
    /// `token_obtained_at`; `None` when absent or Go's zero time.
    #[serde(deserialize_with = "vde::opt_datetime")]
    pub token_obtained_at: Option<OffsetDateTime>,
    /// `token_expires_at`; `None` when absent or `0001-01-01T00:00:00Z` (never expires).
    #[serde(deserialize_with = "vde::opt_datetime")]
    pub token_expires_at: Option<OffsetDateTime>,
    /// `tls-ca-file`.
    #[serde(rename = "tls-ca-file")]
    pub tls_ca_file: Option<PathBuf>,
    /// `tls-cert-file`.
    #[serde(rename = "tls-cert-file")]
    pub tls_cert_file: Option<PathBuf>,
    /// `tls-key-file`.
    #[serde(rename = "tls-key-file")]
    pub tls_key_file: Option<PathBuf>,

    /// `limit`: jobs this entry may run at once; 0 = no limit other than `concurrent`.
    #[serde(deserialize_with = "vde::count")]
    pub limit: usize,
    /// `output_limit` in KiB, raw; see [`RunnerConfig::output_limit_bytes`].
    #[serde(deserialize_with = "vde::int")]
    pub output_limit: i64,
    /// `max_archive_files`, raw (a runwright extension; GitLab's runner ignores the key); see
    /// [`RunnerConfig::max_archive_files`].
    #[serde(deserialize_with = "vde::int")]
    pub max_archive_files: i64,
    /// `request_concurrency`, raw; see [`RunnerConfig::request_concurrency`].
    #[serde(deserialize_with = "vde::int")]
    pub request_concurrency: i64,
    /// `strict_check_interval`: don't poll again right after receiving a job.
    pub strict_check_interval: bool,
    /// `unhealthy_requests_limit`, raw; see [`RunnerConfig::unhealthy_requests_limit`].
    #[serde(deserialize_with = "vde::int")]
    pub unhealthy_requests_limit: i64,
    /// `unhealthy_interval` (Go duration); see [`RunnerConfig::unhealthy_interval`].
    #[serde(deserialize_with = "vde::opt_go_duration")]
    pub unhealthy_interval: Option<Duration>,
    /// `job_status_final_update_retry_limit`, raw; see
    /// [`RunnerConfig::final_update_retry_limit`].
    #[serde(deserialize_with = "vde::int")]
    pub job_status_final_update_retry_limit: i64,

    /// `executor` (required): one of GitLab's executor names.
    #[serde(deserialize_with = "vde::executor")]
    pub executor: String,
    /// `shell`: `bash`, `sh`, `pwsh`, `powershell` or `cmd`; `None` = executor default.
    #[serde(deserialize_with = "vde::opt_shell")]
    pub shell: Option<String>,
    /// `builds_dir`.
    pub builds_dir: Option<String>,
    /// `cache_dir`.
    pub cache_dir: Option<String>,
    /// `clone_url`: overrides the URL used to fetch the repository.
    pub clone_url: Option<String>,
    /// `environment`: `"KEY=VALUE"` entries added to every job; GitLab skips entries without
    /// `=` (a warning is reported for them).
    pub environment: Vec<String>,
    /// `pre_get_sources_script`.
    pub pre_get_sources_script: Option<String>,
    /// `post_get_sources_script`.
    pub post_get_sources_script: Option<String>,
    /// `pre_build_script`.
    pub pre_build_script: Option<String>,
    /// `post_build_script`.
    pub post_build_script: Option<String>,
    /// `prepare_timeout` (Go duration): bound on the prepare stage; `None` = job timeout.
    #[serde(deserialize_with = "vde::opt_go_duration")]
    pub prepare_timeout: Option<Duration>,
    /// `get_sources_timeout` (Go duration): bound on get_sources; `None` = job timeout.
    #[serde(deserialize_with = "vde::opt_go_duration")]
    pub get_sources_timeout: Option<Duration>,
    /// `debug_trace_disabled`: refuse `CI_DEBUG_TRACE`.
    pub debug_trace_disabled: bool,
    /// `safe_directory_checkout`.
    pub safe_directory_checkout: Option<bool>,
    /// `clean_git_config`: GitLab's default is true except for the shell executor.
    pub clean_git_config: Option<bool>,
    /// `proxy_exec` (experimental in GitLab).
    pub proxy_exec: Option<bool>,
    /// `labels`: this entry's own labels, over the global ones (see
    /// [`RunnerConfig::computed_labels`]).
    pub labels: BTreeMap<String, String>,
    /// The global `labels` overlaid with this entry's `labels`, computed at load (runner
    /// common/config.go `ComputeLabels`): what GitLab receives as `info.labels` on every request.
    #[serde(skip)]
    pub computed_labels: BTreeMap<String, String>,
    /// Never read from config.toml: set by `runwright exec` when the repository it serves has no Git LFS store.
    /// `git lfs pull` could then fetch nothing, and get_sources skips it (and git-lfs's ~0.1 s start-up on every
    /// job); the service always runs it as gitlab-runner does.
    #[serde(skip)]
    pub without_lfs_objects: bool,
    /// `[runners.feature_flags]`: `FF_NAME = true|false`.
    pub feature_flags: BTreeMap<String, bool>,
    /// `[runners.custom_build_dir]`.
    pub custom_build_dir: Option<CustomBuildDir>,
    /// `[runners.cache]`.
    pub cache: Option<CacheConfig>,
    /// `[runners.artifact]`.
    pub artifact: Option<ArtifactConfig>,
    /// `[runners.docker]`.
    pub docker: Option<DockerConfig>,
    /// `[runners.custom]`.
    pub custom: Option<CustomConfig>,
    /// `use_slot_cgroups`.
    pub use_slot_cgroups: bool,
    /// `slot_cgroup_template`.
    pub slot_cgroup_template: Option<String>,
    /// `step_runner_image`.
    pub step_runner_image: Option<String>,

    /// `[runners.kubernetes]`, kept opaque.
    pub kubernetes: Option<OpaqueTable>,
    /// `[runners.ssh]`, kept opaque.
    pub ssh: Option<OpaqueTable>,
    /// `[runners.parallels]`, kept opaque.
    pub parallels: Option<OpaqueTable>,
    /// `[runners.virtualbox]`, kept opaque.
    pub virtualbox: Option<OpaqueTable>,
    /// `[runners.machine]`, kept opaque.
    pub machine: Option<OpaqueTable>,
    /// `[runners.autoscaler]`, kept opaque.
    pub autoscaler: Option<OpaqueTable>,
    /// `[runners.instance]`, kept opaque.
    pub instance: Option<OpaqueTable>,
    /// `[runners.monitoring]`, kept opaque.
    pub monitoring: Option<OpaqueTable>,
    /// `[runners.referees]`, kept opaque.
    pub referees: Option<OpaqueTable>,
}

impl RunnerConfig {
    /// Job log size limit in bytes: `output_limit` KiB × 1024, 4096 KiB when ≤ 0
    /// (runner common/build.go, common/consts.go `DefaultTraceOutputLimit`).
    pub fn output_limit_bytes(&self) -> usize {
        let kib = usize::try_from(self.output_limit)
            .ok()
            .filter(|k| *k > 0)
            .unwrap_or(DEFAULT_OUTPUT_LIMIT_KIB);
        kib.saturating_mul(1024)
    }

    /// The most files, directories and symlinks one cache or artifact archive of a job may hold:
    /// `max_archive_files`, [`DEFAULT_MAX_ARCHIVE_FILES`] when ≤ 0. GitLab's runner has no such bound: it
    /// selects the files in its helper process, whose memory is the job's; runwright selects them in the
    /// service, whose memory every job shares (issue 17). An entry costs the service ~100 bytes while its
    /// archive is written, so the default bounds one archive at ~100 MiB and fits the largest `node_modules`.
    pub fn max_archive_files(&self) -> usize {
        usize::try_from(self.max_archive_files)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_MAX_ARCHIVE_FILES)
    }

    /// Parallel `jobs/request` calls for this entry: at least 1
    /// (runner common/config.go `GetRequestConcurrency`).
    pub fn request_concurrency(&self) -> usize {
        usize::try_from(self.request_concurrency)
            .unwrap_or(0)
            .max(1)
    }

    /// Failed job requests (403) before the entry is paused: 3 when < 1
    /// (runner common/config.go `GetUnhealthyRequestsLimit`).
    pub fn unhealthy_requests_limit(&self) -> u32 {
        positive_u32(self.unhealthy_requests_limit).unwrap_or(DEFAULT_UNHEALTHY_REQUESTS_LIMIT)
    }

    /// How long an unhealthy entry stays paused: `unhealthy_interval`, 60 min when unset (an
    /// explicit `"0s"` is kept, as in runner common/config.go `GetUnhealthyInterval`).
    pub fn unhealthy_interval(&self) -> Duration {
        self.unhealthy_interval
            .unwrap_or(DEFAULT_UNHEALTHY_INTERVAL)
    }

    /// Attempts at the final job update: 10 when < 1
    /// (runner common/config.go `GetJobStatusFinalUpdateRetryLimit`).
    pub fn final_update_retry_limit(&self) -> u32 {
        positive_u32(self.job_status_final_update_retry_limit)
            .unwrap_or(DEFAULT_FINAL_UPDATE_RETRY_LIMIT)
    }

    /// The value of a feature flag set in `[runners.feature_flags]`, `None` when not set there
    /// (the flag's built-in default then applies; runner common/config.go `IsFeatureFlagOn`).
    pub fn feature_flag(&self, name: &str) -> Option<bool> {
        self.feature_flags.get(name).copied()
    }

    /// The token's short form (see [`crate::short_token`]), safe to log.
    pub fn short_token(&self) -> String {
        short_token(&self.token)
    }

    /// Whether the token was created in GitLab's UI/API (`glrt-…`), which changes how
    /// registration and unregistration work (runner network/gitlab.go
    /// `TokenIsCreatedRunnerToken`).
    pub fn is_created_runner_token(&self) -> bool {
        self.token.starts_with("glrt-")
    }

    /// `environment` as `(key, value)` pairs, split at the first `=`; entries without `=` are
    /// skipped as GitLab does (runner common/config.go `parseVariable`).
    pub fn environment_variables(&self) -> Vec<(String, String)> {
        self.environment
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

fn positive_u32(v: i64) -> Option<u32> {
    if v < 1 {
        None
    } else {
        Some(u32::try_from(v).unwrap_or(u32::MAX))
    }
}

/// Prints a secret as GitLab's `Config.Masked()` does.
struct Masked<'a>(&'a str);

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("[MASKED]")
        }
    }
}

/// Shows only the keys of an opaque section: they may hold secrets (e.g. a Kubernetes
/// `bearer_token`).
struct Keys<'a>(&'a Option<OpaqueTable>);

impl fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("None"),
            Some(t) => f.debug_set().entries(t.keys()).finish(),
        }
    }
}

impl fmt::Debug for RunnerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("id", &self.id)
            .field("token", &format_args!("{}[MASKED]", self.short_token()))
            .field("token_obtained_at", &self.token_obtained_at)
            .field("token_expires_at", &self.token_expires_at)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("limit", &self.limit)
            .field("output_limit", &self.output_limit)
            .field("max_archive_files", &self.max_archive_files)
            .field("request_concurrency", &self.request_concurrency)
            .field("strict_check_interval", &self.strict_check_interval)
            .field("unhealthy_requests_limit", &self.unhealthy_requests_limit)
            .field("unhealthy_interval", &self.unhealthy_interval)
            .field(
                "job_status_final_update_retry_limit",
                &self.job_status_final_update_retry_limit,
            )
            .field("executor", &self.executor)
            .field("shell", &self.shell)
            .field("builds_dir", &self.builds_dir)
            .field("cache_dir", &self.cache_dir)
            .field("clone_url", &self.clone_url)
            .field("environment", &self.environment)
            .field("pre_get_sources_script", &self.pre_get_sources_script)
            .field("post_get_sources_script", &self.post_get_sources_script)
            .field("pre_build_script", &self.pre_build_script)
            .field("post_build_script", &self.post_build_script)
            .field("prepare_timeout", &self.prepare_timeout)
            .field("get_sources_timeout", &self.get_sources_timeout)
            .field("debug_trace_disabled", &self.debug_trace_disabled)
            .field("safe_directory_checkout", &self.safe_directory_checkout)
            .field("clean_git_config", &self.clean_git_config)
            .field("proxy_exec", &self.proxy_exec)
            .field("labels", &self.labels)
            .field("computed_labels", &self.computed_labels)
            .field("feature_flags", &self.feature_flags)
            .field("custom_build_dir", &self.custom_build_dir)
            .field("cache", &self.cache)
            .field("artifact", &self.artifact)
            .field("docker", &self.docker)
            .field("custom", &self.custom)
            .field("use_slot_cgroups", &self.use_slot_cgroups)
            .field("slot_cgroup_template", &self.slot_cgroup_template)
            .field("step_runner_image", &self.step_runner_image)
            .field("kubernetes", &Keys(&self.kubernetes))
            .field("ssh", &Keys(&self.ssh))
            .field("parallels", &Keys(&self.parallels))
            .field("virtualbox", &Keys(&self.virtualbox))
            .field("machine", &Keys(&self.machine))
            .field("autoscaler", &Keys(&self.autoscaler))
            .field("instance", &Keys(&self.instance))
            .field("monitoring", &Keys(&self.monitoring))
            .field("referees", &Keys(&self.referees))
            .finish()
    }
}

/// `[runners.custom_build_dir]` (runner common/config.go `CustomBuildDir`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CustomBuildDir {
    /// `enabled`; `None` = the executor's default.
    pub enabled: Option<bool>,
}

/// `[runners.artifact]`: artifact upload timeouts (GitLab Runner 18.6+).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ArtifactConfig {
    /// `upload_timeout` (Go duration); see [`ArtifactConfig::upload_timeout`].
    #[serde(deserialize_with = "vde::opt_go_duration")]
    pub upload_timeout: Option<Duration>,
    /// `response_header_timeout` (Go duration); see [`ArtifactConfig::response_header_timeout`].
    #[serde(deserialize_with = "vde::opt_go_duration")]
    pub response_header_timeout: Option<Duration>,
}

/// `upload_timeout` when unset (runner common/consts.go `DefaultArtifactUploadTimeout`).
pub const DEFAULT_ARTIFACT_UPLOAD_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// `response_header_timeout` when unset (runner common/consts.go `DefaultArtifactResponseHeaderTimeout`).
pub const DEFAULT_ARTIFACT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(10 * 60);

impl ArtifactConfig {
    /// How long one upload attempt may take in all, 1 h when unset; zero means no limit, as for Go's
    /// `http.Client.Timeout` (runner common/config.go `GetUploadTimeout`, passed to the uploader's
    /// `--timeout`).
    pub fn upload_timeout(&self) -> Duration {
        self.upload_timeout
            .unwrap_or(DEFAULT_ARTIFACT_UPLOAD_TIMEOUT)
    }

    /// How long to wait for GitLab's answer once the archive is sent, 10 min when unset; zero means no
    /// limit, as for Go's `Transport.ResponseHeaderTimeout` (runner common/config.go
    /// `GetResponseHeaderTimeout`, the uploader's `--response-header-timeout`).
    pub fn response_header_timeout(&self) -> Duration {
        self.response_header_timeout
            .unwrap_or(DEFAULT_ARTIFACT_RESPONSE_HEADER_TIMEOUT)
    }
}

// =============================================================================================
// [runners.cache] (CamelCase keys, as GitLab writes them)

/// `[runners.cache] Type` (runner cache/*: the registered cache adapters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheType {
    /// `s3`
    S3,
    /// `gcs`
    Gcs,
    /// `azure`
    Azure,
}

impl CacheType {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheType::S3 => "s3",
            CacheType::Gcs => "gcs",
            CacheType::Azure => "azure",
        }
    }
}

/// `Type = ""` means no distributed cache; `None` is used for it.
fn opt_cache_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CacheType>, D::Error> {
    vde::checked_str(d, "a string", |s| match s {
        "" => Ok(None),
        "s3" => Ok(Some(CacheType::S3)),
        "gcs" => Ok(Some(CacheType::Gcs)),
        "azure" => Ok(Some(CacheType::Azure)),
        _ => Err("one of s3, gcs, azure, or \"\" for no distributed cache".to_owned()),
    })
}

/// `[runners.cache]` (runner common/config.go `CacheConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// `Type`: `s3`, `gcs` or `azure`; `None` = local cache only.
    #[serde(rename = "Type", deserialize_with = "opt_cache_type")]
    pub cache_type: Option<CacheType>,
    /// `Path`: prefix of cache object names.
    #[serde(rename = "Path")]
    pub path: Option<String>,
    /// `Shared`: share the cache between runners (no `runner/<short token>/` prefix).
    #[serde(rename = "Shared")]
    pub shared: bool,
    /// `MaxUploadedArchiveSize` in bytes; 0 = no limit.
    #[serde(rename = "MaxUploadedArchiveSize", deserialize_with = "vde::int")]
    pub max_uploaded_archive_size: i64,
    /// `[runners.cache.s3]`.
    pub s3: Option<CacheS3Config>,
    /// `[runners.cache.gcs]`.
    pub gcs: Option<CacheGcsConfig>,
    /// `[runners.cache.azure]`.
    pub azure: Option<CacheAzureConfig>,
}

/// `[runners.cache.s3] AuthenticationType` (case-insensitive in GitLab).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum S3AuthType {
    /// `access-key`
    AccessKey,
    /// `iam`
    Iam,
}

fn opt_s3_auth_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<S3AuthType>, D::Error> {
    // runner common/config.go `CacheS3Config.AuthType` lowercases the value.
    vde::checked_str(d, "a string", |s| match s.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "access-key" => Ok(Some(S3AuthType::AccessKey)),
        "iam" => Ok(Some(S3AuthType::Iam)),
        _ => Err("one of access-key, iam".to_owned()),
    })
}

/// `[runners.cache.s3]` (runner common/config.go `CacheS3Config`).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CacheS3Config {
    /// `ServerAddress`: `host[:port]` of an S3-compatible server; AWS when unset.
    #[serde(rename = "ServerAddress")]
    pub server_address: Option<String>,
    /// `AccessKey` (secret).
    #[serde(rename = "AccessKey")]
    pub access_key: Option<String>,
    /// `SecretKey` (secret).
    #[serde(rename = "SecretKey")]
    pub secret_key: Option<String>,
    /// `SessionToken` (secret).
    #[serde(rename = "SessionToken")]
    pub session_token: Option<String>,
    /// `BucketName`.
    #[serde(rename = "BucketName")]
    pub bucket_name: Option<String>,
    /// `BucketLocation`: region.
    #[serde(rename = "BucketLocation")]
    pub bucket_location: Option<String>,
    /// `Insecure`: plain HTTP.
    #[serde(rename = "Insecure")]
    pub insecure: bool,
    /// `AuthenticationType`; `None` = `iam` unless address and keys are all set.
    #[serde(rename = "AuthenticationType", deserialize_with = "opt_s3_auth_type")]
    pub authentication_type: Option<S3AuthType>,
    /// `ServerSideEncryption`: `S3`/`AES256`, `KMS`/`aws:kms`, `DSSE-KMS`/`aws:kms:dsse`.
    #[serde(rename = "ServerSideEncryption")]
    pub server_side_encryption: Option<String>,
    /// `ServerSideEncryptionKeyID`.
    #[serde(rename = "ServerSideEncryptionKeyID")]
    pub server_side_encryption_key_id: Option<String>,
    /// `DualStack`: GitLab's default is true.
    #[serde(rename = "DualStack")]
    pub dual_stack: Option<bool>,
    /// `PathStyle`: auto-detected when unset.
    #[serde(rename = "PathStyle")]
    pub path_style: Option<bool>,
    /// `Accelerate`.
    #[serde(rename = "Accelerate")]
    pub accelerate: bool,
    /// `RoleARN`.
    #[serde(rename = "RoleARN")]
    pub role_arn: Option<String>,
    /// `UploadRoleARN`.
    #[serde(rename = "UploadRoleARN")]
    pub upload_role_arn: Option<String>,
    /// `AssumeRoleMaxConcurrency`.
    #[serde(rename = "AssumeRoleMaxConcurrency", deserialize_with = "vde::opt_int")]
    pub assume_role_max_concurrency: Option<i64>,
}

impl CacheS3Config {
    /// `DualStack`, true when unset (runner common/config.go `DualStackEnabled`).
    pub fn dual_stack_enabled(&self) -> bool {
        self.dual_stack.unwrap_or(true)
    }
}

impl fmt::Debug for CacheS3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn masked(v: &Option<String>) -> Option<Masked<'_>> {
            v.as_deref().map(Masked)
        }
        f.debug_struct("CacheS3Config")
            .field("server_address", &self.server_address)
            .field("access_key", &masked(&self.access_key))
            .field("secret_key", &masked(&self.secret_key))
            .field("session_token", &masked(&self.session_token))
            .field("bucket_name", &self.bucket_name)
            .field("bucket_location", &self.bucket_location)
            .field("insecure", &self.insecure)
            .field("authentication_type", &self.authentication_type)
            .field("server_side_encryption", &self.server_side_encryption)
            .field(
                "server_side_encryption_key_id",
                &self.server_side_encryption_key_id,
            )
            .field("dual_stack", &self.dual_stack)
            .field("path_style", &self.path_style)
            .field("accelerate", &self.accelerate)
            .field("role_arn", &self.role_arn)
            .field("upload_role_arn", &self.upload_role_arn)
            .field(
                "assume_role_max_concurrency",
                &self.assume_role_max_concurrency,
            )
            .finish()
    }
}

/// `[runners.cache.gcs]` (runner common/config.go `CacheGCSConfig`).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CacheGcsConfig {
    /// `AccessID`: service account e-mail.
    #[serde(rename = "AccessID")]
    pub access_id: Option<String>,
    /// `PrivateKey` (secret).
    #[serde(rename = "PrivateKey")]
    pub private_key: Option<String>,
    /// `CredentialsFile`.
    #[serde(rename = "CredentialsFile")]
    pub credentials_file: Option<PathBuf>,
    /// `BucketName`.
    #[serde(rename = "BucketName")]
    pub bucket_name: Option<String>,
    /// `UniverseDomain`.
    #[serde(rename = "UniverseDomain")]
    pub universe_domain: Option<String>,
}

impl fmt::Debug for CacheGcsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheGcsConfig")
            .field("access_id", &self.access_id)
            .field("private_key", &self.private_key.as_deref().map(Masked))
            .field("credentials_file", &self.credentials_file)
            .field("bucket_name", &self.bucket_name)
            .field("universe_domain", &self.universe_domain)
            .finish()
    }
}

/// `[runners.cache.azure]` (runner common/config.go `CacheAzureConfig`).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CacheAzureConfig {
    /// `AccountName`.
    #[serde(rename = "AccountName")]
    pub account_name: Option<String>,
    /// `AccountKey` (secret).
    #[serde(rename = "AccountKey")]
    pub account_key: Option<String>,
    /// `ContainerName`.
    #[serde(rename = "ContainerName")]
    pub container_name: Option<String>,
    /// `StorageDomain`, e.g. `blob.core.windows.net`.
    #[serde(rename = "StorageDomain")]
    pub storage_domain: Option<String>,
}

impl fmt::Debug for CacheAzureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheAzureConfig")
            .field("account_name", &self.account_name)
            .field("account_key", &self.account_key.as_deref().map(Masked))
            .field("container_name", &self.container_name)
            .field("storage_domain", &self.storage_domain)
            .finish()
    }
}

// =============================================================================================
// [runners.docker]

/// One Docker pull policy (runner common/config.go `PullPolicyAlways`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PullPolicy {
    /// `always` (GitLab's default).
    Always,
    /// `if-not-present`.
    IfNotPresent,
    /// `never`.
    Never,
}

impl PullPolicy {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::Never => "never",
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PullPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Exact spelling, as runner common/config.go `GetPullPolicies` compares.
        vde::checked_str(d, "a string", |s| match s {
            "always" => Ok(PullPolicy::Always),
            "if-not-present" => Ok(PullPolicy::IfNotPresent),
            "never" => Ok(PullPolicy::Never),
            _ => Err("one of always, if-not-present, never".to_owned()),
        })
    }
}

/// `[[runners.docker.services]]` (runner common/config.go `Service`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DockerService {
    /// `name`: the image.
    pub name: String,
    /// `alias`: space- or comma-separated aliases.
    pub alias: Option<String>,
    /// `command`.
    pub command: Vec<String>,
    /// `entrypoint`.
    pub entrypoint: Vec<String>,
    /// `environment`: `"KEY=VALUE"` entries.
    pub environment: Vec<String>,
}

impl DockerService {
    /// The aliases, split on spaces and commas (runner common/config.go `Service.Aliases`).
    pub fn aliases(&self) -> Vec<&str> {
        self.alias
            .as_deref()
            .unwrap_or("")
            .split([' ', ','])
            .filter(|a| !a.is_empty())
            .collect()
    }
}

/// `[runners.docker]` (runner common/config.go `DockerConfig`, helpers/docker/credentials.go).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DockerConfig {
    /// `host`: Docker daemon address (`DOCKER_HOST` when unset).
    pub host: Option<String>,
    /// `tls_cert_path`.
    pub tls_cert_path: Option<PathBuf>,
    /// `tls_verify`.
    pub tls_verify: bool,
    /// `hostname`: container hostname.
    pub hostname: Option<String>,
    /// `image`: default image when the job has none.
    pub image: Option<String>,
    /// `runtime`.
    pub runtime: Option<String>,
    /// `memory` (e.g. `"512m"`).
    #[serde(deserialize_with = "vde::opt_ram_size")]
    pub memory: Option<String>,
    /// `memory_swap`.
    #[serde(deserialize_with = "vde::opt_ram_size")]
    pub memory_swap: Option<String>,
    /// `memory_reservation`.
    #[serde(deserialize_with = "vde::opt_ram_size")]
    pub memory_reservation: Option<String>,
    /// `cgroup_parent`.
    pub cgroup_parent: Option<String>,
    /// `cpuset_cpus`.
    pub cpuset_cpus: Option<String>,
    /// `cpuset_mems`.
    pub cpuset_mems: Option<String>,
    /// `cpus` (e.g. `"1.5"`).
    #[serde(deserialize_with = "vde::opt_cpus")]
    pub cpus: Option<String>,
    /// `cpu_shares`.
    #[serde(deserialize_with = "vde::int")]
    pub cpu_shares: i64,
    /// `dns`.
    pub dns: Vec<String>,
    /// `dns_search`.
    pub dns_search: Vec<String>,
    /// `privileged`.
    pub privileged: bool,
    /// `services_privileged`; `None` = same as `privileged`.
    pub services_privileged: Option<bool>,
    /// `disable_entrypoint_overwrite`.
    pub disable_entrypoint_overwrite: bool,
    /// `user`.
    pub user: Option<String>,
    /// `allowed_users`.
    pub allowed_users: Vec<String>,
    /// `group_add`.
    pub group_add: Vec<String>,
    /// `userns_mode`.
    pub userns_mode: Option<String>,
    /// `cap_add`.
    pub cap_add: Vec<String>,
    /// `cap_drop`.
    pub cap_drop: Vec<String>,
    /// `oom_kill_disable`.
    pub oom_kill_disable: bool,
    /// `oom_score_adjust`.
    #[serde(deserialize_with = "vde::int")]
    pub oom_score_adjust: i64,
    /// `security_opt`.
    pub security_opt: Vec<String>,
    /// `services_security_opt`.
    pub services_security_opt: Vec<String>,
    /// `services_cap_add`: capabilities for service containers. A runwright extension: GitLab's runner gives
    /// services full privilege or nothing; this runs Docker-in-Docker with only what it needs.
    pub services_cap_add: Vec<String>,
    /// `services_cap_drop`: capabilities service containers lose (runwright extension, see `services_cap_add`).
    pub services_cap_drop: Vec<String>,
    /// `devices`.
    pub devices: Vec<String>,
    /// `device_cgroup_rules`.
    pub device_cgroup_rules: Vec<String>,
    /// `gpus`: Docker's `--gpus` value for the build container (checked at load; see
    /// [`DockerConfig::gpu_requests`]).
    pub gpus: Option<String>,
    /// `services_devices`: image glob → devices.
    pub services_devices: BTreeMap<String, Vec<String>>,
    /// `disable_cache`.
    pub disable_cache: bool,
    /// `volumes`: `"/path"` (runner-managed cache volume) or `"host:container[:mode]"`.
    pub volumes: Vec<String>,
    /// `volume_driver`.
    pub volume_driver: Option<String>,
    /// `volume_driver_ops`.
    pub volume_driver_ops: BTreeMap<String, String>,
    /// `cache_dir`: host directory for cache volumes.
    pub cache_dir: Option<String>,
    /// `extra_hosts`.
    pub extra_hosts: Vec<String>,
    /// `volumes_from`.
    pub volumes_from: Vec<String>,
    /// `network_mode`.
    pub network_mode: Option<String>,
    /// `ipcmode`.
    pub ipcmode: Option<String>,
    /// `mac_address`.
    pub mac_address: Option<String>,
    /// `links`.
    pub links: Vec<String>,
    /// `[[runners.docker.services]]`.
    pub services: Vec<DockerService>,
    /// `services_limit`; see [`DockerConfig::services_limit`].
    #[serde(deserialize_with = "vde::opt_int")]
    pub services_limit: Option<i64>,
    /// `service_memory`.
    #[serde(deserialize_with = "vde::opt_ram_size")]
    pub service_memory: Option<String>,
    /// `service_memory_swap`.
    #[serde(deserialize_with = "vde::opt_ram_size")]
    pub service_memory_swap: Option<String>,
    /// `service_memory_reservation`.
    #[serde(deserialize_with = "vde::opt_ram_size")]
    pub service_memory_reservation: Option<String>,
    /// `service_cgroup_parent`.
    pub service_cgroup_parent: Option<String>,
    /// `service_slot_cgroup_template`.
    pub service_slot_cgroup_template: Option<String>,
    /// `service_cpuset_cpus`.
    pub service_cpuset_cpus: Option<String>,
    /// `service_cpus`.
    #[serde(deserialize_with = "vde::opt_cpus")]
    pub service_cpus: Option<String>,
    /// `service_cpu_shares`.
    #[serde(deserialize_with = "vde::int")]
    pub service_cpu_shares: i64,
    /// `service_gpus`: Docker's `--gpus` value for service containers (checked at load).
    pub service_gpus: Option<String>,
    /// `wait_for_services_timeout` in seconds; see [`DockerConfig::wait_for_services_timeout`].
    #[serde(deserialize_with = "vde::int")]
    pub wait_for_services_timeout: i64,
    /// `allowed_images`.
    pub allowed_images: Vec<String>,
    /// `allowed_privileged_images`.
    pub allowed_privileged_images: Vec<String>,
    /// `allowed_privileged_services`.
    pub allowed_privileged_services: Vec<String>,
    /// `allowed_pull_policies`.
    pub allowed_pull_policies: Vec<PullPolicy>,
    /// `allowed_services`.
    pub allowed_services: Vec<String>,
    /// `pull_policy`: a string or an array (GitLab `StringOrArray`); see
    /// [`DockerConfig::pull_policies`].
    #[serde(deserialize_with = "vde::one_or_many")]
    pub pull_policy: Vec<PullPolicy>,
    /// `isolation`: Docker's isolation technology, `default`, `process` or `hyperv` (checked at load; passed to
    /// the daemon as GitLab's runner does, where a Linux daemon accepts only `default`).
    pub isolation: Option<String>,
    /// `shm_size` in bytes.
    #[serde(deserialize_with = "vde::int")]
    pub shm_size: i64,
    /// `tmpfs`: path → mount options.
    pub tmpfs: BTreeMap<String, String>,
    /// `services_tmpfs`.
    pub services_tmpfs: BTreeMap<String, String>,
    /// `sysctls`.
    pub sysctls: BTreeMap<String, String>,
    /// `helper_image`.
    pub helper_image: Option<String>,
    /// `helper_image_flavor` (`alpine` by default, `ubuntu`, …).
    pub helper_image_flavor: Option<String>,
    /// `container_labels`.
    pub container_labels: BTreeMap<String, String>,
    /// `enable_ipv6`.
    pub enable_ipv6: bool,
    /// `ulimit`: name → `"soft[:hard]"`.
    pub ulimit: BTreeMap<String, String>,
    /// `network_mtu`.
    #[serde(deserialize_with = "vde::int")]
    pub network_mtu: i64,
    /// `log_options`.
    pub log_options: BTreeMap<String, String>,
}

impl DockerConfig {
    /// The pull policies in order, `[always]` when none is set
    /// (runner common/config.go `GetPullPolicies`).
    pub fn pull_policies(&self) -> Vec<PullPolicy> {
        if self.pull_policy.is_empty() {
            vec![PullPolicy::Always]
        } else {
            self.pull_policy.clone()
        }
    }

    /// The policies a job may ask for, the pull policies when unset
    /// (runner common/config.go `GetAllowedPullPolicies`).
    pub fn allowed_pull_policies(&self) -> Vec<PullPolicy> {
        if self.allowed_pull_policies.is_empty() {
            self.pull_policies()
        } else {
            self.allowed_pull_policies.clone()
        }
    }

    /// How long to wait for services to come up: `None` when negative (disabled), 30 s when 0
    /// (runner executors/docker `waitForServices`, common/consts.go
    /// `DefaultWaitForServicesTimeout`).
    pub fn wait_for_services_timeout(&self) -> Option<Duration> {
        match self.wait_for_services_timeout {
            t if t < 0 => None,
            0 => Some(DEFAULT_WAIT_FOR_SERVICES_TIMEOUT),
            t => Some(Duration::from_secs(t.unsigned_abs())),
        }
    }

    /// Maximum number of services a job may start, `None` = unlimited (unset or negative;
    /// runner common/config.go `GetServicesLimit`).
    pub fn services_limit(&self) -> Option<usize> {
        self.services_limit.and_then(|l| usize::try_from(l).ok())
    }

    /// `memory` in bytes (0 when unset).
    pub fn memory_bytes(&self) -> i64 {
        ram_bytes(&self.memory)
    }

    /// `memory_swap` in bytes (0 when unset).
    pub fn memory_swap_bytes(&self) -> i64 {
        ram_bytes(&self.memory_swap)
    }

    /// `memory_reservation` in bytes (0 when unset).
    pub fn memory_reservation_bytes(&self) -> i64 {
        ram_bytes(&self.memory_reservation)
    }

    /// `cpus` in nano-CPUs (0 when unset; runner common/config.go `GetNanoCPUs`).
    pub fn nano_cpus(&self) -> i64 {
        nano_cpus(&self.cpus)
    }

    /// `service_memory` in bytes (0 when unset).
    pub fn service_memory_bytes(&self) -> i64 {
        ram_bytes(&self.service_memory)
    }

    /// `service_memory_swap` in bytes (0 when unset).
    pub fn service_memory_swap_bytes(&self) -> i64 {
        ram_bytes(&self.service_memory_swap)
    }

    /// `service_memory_reservation` in bytes (0 when unset).
    pub fn service_memory_reservation_bytes(&self) -> i64 {
        ram_bytes(&self.service_memory_reservation)
    }

    /// `service_cpus` in nano-CPUs (0 when unset).
    pub fn service_nano_cpus(&self) -> i64 {
        nano_cpus(&self.service_cpus)
    }

    /// The build container's GPU device requests from `gpus` (runner executors/docker/docker.go
    /// `bindDeviceRequests`); an unparsable value was refused at load, so it gives none here.
    pub fn gpu_requests(&self) -> Vec<GpuRequest> {
        parse_gpus(self.gpus.as_deref().unwrap_or("")).unwrap_or_default()
    }

    /// The service containers' GPU device requests from `service_gpus` (runner executors/docker/docker.go
    /// `getServicesDeviceRequests`).
    pub fn service_gpu_requests(&self) -> Vec<GpuRequest> {
        parse_gpus(self.service_gpus.as_deref().unwrap_or("")).unwrap_or_default()
    }

    /// `gpus` as GitLab is told of it in `info.config.gpus`: spaces trimmed (runner executors/docker/
    /// config_updater.go).
    pub fn info_gpus(&self) -> String {
        self.gpus
            .as_deref()
            .unwrap_or("")
            .trim_matches(' ')
            .to_owned()
    }
}

fn ram_bytes(v: &Option<String>) -> i64 {
    v.as_deref().and_then(parse_ram_in_bytes).unwrap_or(0)
}

fn nano_cpus(v: &Option<String>) -> i64 {
    v.as_deref()
        .and_then(parse_cpus)
        .map(|c| (c * 1e9) as i64)
        .unwrap_or(0)
}

/// Docker's RAM size syntax (go-units `RAMInBytes`): a non-negative number, then optionally a
/// space and a binary unit `b`, `k`, `m`, `g`, `t`, `p`, the latter five optionally followed by
/// `b` or `ib` (case-insensitive): `"512m"`, `"2g"`, `"1.5GiB"`, `"1024"`.
pub fn parse_ram_in_bytes(s: &str) -> Option<i64> {
    let sep = s.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')?;
    let (num, suffix) = if s.as_bytes()[sep] == b' ' {
        (&s[..sep], &s[sep + 1..])
    } else {
        (&s[..=sep], &s[sep + 1..])
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let size: f64 = num.parse().ok()?;
    if size < 0.0 {
        return None;
    }
    let suffix = suffix.to_ascii_lowercase();
    let mul: f64 = match suffix.as_bytes() {
        [] => 1.0,
        [b'b'] => 1.0,
        [u, rest @ ..] => {
            let mul = match u {
                b'k' => 1024f64,
                b'm' => 1024f64.powi(2),
                b'g' => 1024f64.powi(3),
                b't' => 1024f64.powi(4),
                b'p' => 1024f64.powi(5),
                _ => return None,
            };
            match rest {
                [] | [b'b'] | [b'i', b'b'] => mul,
                _ => return None,
            }
        }
    };
    Some((size * mul) as i64)
}

/// A CPU count as Go's `big.Rat.SetString` reads it: `"1.5"`, `"2"`, `"3/2"`.
pub fn parse_cpus(s: &str) -> Option<f64> {
    let value = match s.split_once('/') {
        Some((n, d)) => {
            let n: i64 = n.parse().ok()?;
            let d: i64 = d.parse().ok()?;
            if d == 0 {
                return None;
            }
            n as f64 / d as f64
        }
        None => {
            if !s
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
            {
                return None;
            }
            s.parse().ok()?
        }
    };
    value.is_finite().then_some(value)
}

// =============================================================================================
// [runners.custom]

/// `[runners.custom]` (runner common/config.go `CustomConfig`, executors/custom/config.go).
/// Timeouts are whole seconds; unset or ≤ 0 means the default of the accessor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CustomConfig {
    /// `config_exec`.
    pub config_exec: Option<String>,
    /// `config_args`.
    pub config_args: Vec<String>,
    /// `config_exec_timeout` in seconds.
    #[serde(deserialize_with = "vde::opt_int")]
    pub config_exec_timeout: Option<i64>,
    /// `prepare_exec`.
    pub prepare_exec: Option<String>,
    /// `prepare_args`.
    pub prepare_args: Vec<String>,
    /// `prepare_exec_timeout` in seconds.
    #[serde(deserialize_with = "vde::opt_int")]
    pub prepare_exec_timeout: Option<i64>,
    /// `run_exec` (required by the custom executor).
    pub run_exec: String,
    /// `run_args`.
    pub run_args: Vec<String>,
    /// `cleanup_exec`.
    pub cleanup_exec: Option<String>,
    /// `cleanup_args`.
    pub cleanup_args: Vec<String>,
    /// `cleanup_exec_timeout` in seconds.
    #[serde(deserialize_with = "vde::opt_int")]
    pub cleanup_exec_timeout: Option<i64>,
    /// `graceful_kill_timeout` in seconds.
    #[serde(deserialize_with = "vde::opt_int")]
    pub graceful_kill_timeout: Option<i64>,
    /// `force_kill_timeout` in seconds.
    #[serde(deserialize_with = "vde::opt_int")]
    pub force_kill_timeout: Option<i64>,
}

/// runner executors/custom/consts.go.
const CUSTOM_EXEC_DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
const CUSTOM_GRACEFUL_KILL_DEFAULT: Duration = Duration::from_secs(10 * 60);
const CUSTOM_FORCE_KILL_DEFAULT: Duration = Duration::from_secs(10);

fn custom_timeout(v: Option<i64>, default: Duration) -> Duration {
    v.and_then(positive_secs).unwrap_or(default)
}

impl CustomConfig {
    /// `config_exec_timeout`, 1 h by default (runner executors/custom/config.go).
    pub fn config_exec_timeout(&self) -> Duration {
        custom_timeout(self.config_exec_timeout, CUSTOM_EXEC_DEFAULT_TIMEOUT)
    }

    /// `prepare_exec_timeout`, 1 h by default.
    pub fn prepare_exec_timeout(&self) -> Duration {
        custom_timeout(self.prepare_exec_timeout, CUSTOM_EXEC_DEFAULT_TIMEOUT)
    }

    /// `cleanup_exec_timeout`, 1 h by default.
    pub fn cleanup_exec_timeout(&self) -> Duration {
        custom_timeout(self.cleanup_exec_timeout, CUSTOM_EXEC_DEFAULT_TIMEOUT)
    }

    /// `graceful_kill_timeout`: time between SIGTERM and SIGKILL, 10 min by default.
    pub fn graceful_kill_timeout(&self) -> Duration {
        custom_timeout(self.graceful_kill_timeout, CUSTOM_GRACEFUL_KILL_DEFAULT)
    }

    /// `force_kill_timeout`: time to wait after SIGKILL, 10 s by default.
    pub fn force_kill_timeout(&self) -> Duration {
        custom_timeout(self.force_kill_timeout, CUSTOM_FORCE_KILL_DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_sizes_like_go_units() {
        assert_eq!(parse_ram_in_bytes("1024"), Some(1024));
        assert_eq!(parse_ram_in_bytes("512m"), Some(512 * 1024 * 1024));
        assert_eq!(parse_ram_in_bytes("2g"), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_ram_in_bytes("2GB"), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_ram_in_bytes("1.5GiB"), Some(1536 * 1024 * 1024));
        assert_eq!(parse_ram_in_bytes("4 k"), Some(4096));
        assert_eq!(parse_ram_in_bytes("10b"), Some(10));
        for bad in ["", "m", "12x", "1mi", "1kbb", "-1m", "1bb"] {
            assert_eq!(parse_ram_in_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cpus_like_big_rat() {
        assert_eq!(parse_cpus("1.5"), Some(1.5));
        assert_eq!(parse_cpus("2"), Some(2.0));
        assert_eq!(parse_cpus("3/2"), Some(1.5));
        assert_eq!(parse_cpus("1/0"), None);
        assert_eq!(parse_cpus("two"), None);
        assert_eq!(parse_cpus("inf"), None);
    }

    #[test]
    fn defaults_follow_gitlab() {
        let c = Config::default();
        assert_eq!(c.concurrent, 1);
        assert_eq!(c.check_interval(), Duration::from_secs(3));
        assert_eq!(c.shutdown_timeout(), Duration::from_secs(30));
        assert_eq!(c.connection_max_age(), Duration::from_secs(900));

        let r = RunnerConfig::default();
        assert_eq!(r.output_limit_bytes(), 4096 * 1024);
        assert_eq!(r.request_concurrency(), 1);
        assert_eq!(r.unhealthy_requests_limit(), 3);
        assert_eq!(r.unhealthy_interval(), Duration::from_secs(3600));
        assert_eq!(r.final_update_retry_limit(), 10);

        let d = DockerConfig::default();
        assert_eq!(d.pull_policies(), vec![PullPolicy::Always]);
        assert_eq!(d.wait_for_services_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(d.services_limit(), None);

        let custom = CustomConfig::default();
        assert_eq!(custom.config_exec_timeout(), Duration::from_secs(3600));
        assert_eq!(custom.graceful_kill_timeout(), Duration::from_secs(600));
        assert_eq!(custom.force_kill_timeout(), Duration::from_secs(10));

        assert_eq!(
            SessionServer::default().session_timeout(),
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn accessors_apply_configured_values() {
        let r = RunnerConfig {
            output_limit: 8192,
            request_concurrency: 4,
            unhealthy_requests_limit: 5,
            unhealthy_interval: Some(Duration::ZERO),
            job_status_final_update_retry_limit: 2,
            environment: vec!["A=1".into(), "NOEQ".into(), "B=x=y".into()],
            ..RunnerConfig::default()
        };
        assert_eq!(r.output_limit_bytes(), 8192 * 1024);
        assert_eq!(r.request_concurrency(), 4);
        assert_eq!(r.unhealthy_requests_limit(), 5);
        assert_eq!(r.unhealthy_interval(), Duration::ZERO);
        assert_eq!(r.final_update_retry_limit(), 2);
        assert_eq!(
            r.environment_variables(),
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );

        let d = DockerConfig {
            wait_for_services_timeout: -1,
            services_limit: Some(2),
            pull_policy: vec![PullPolicy::IfNotPresent],
            memory: Some("1g".into()),
            cpus: Some("1.5".into()),
            ..DockerConfig::default()
        };
        assert_eq!(d.wait_for_services_timeout(), None);
        assert_eq!(d.services_limit(), Some(2));
        assert_eq!(d.allowed_pull_policies(), vec![PullPolicy::IfNotPresent]);
        assert_eq!(d.memory_bytes(), 1024 * 1024 * 1024);
        assert_eq!(d.nano_cpus(), 1_500_000_000);
    }

    #[test]
    fn debug_masks_secrets() {
        let r = RunnerConfig {
            token: "glrt-t1_SECRETSECRETSECRET".into(),
            cache: Some(CacheConfig {
                s3: Some(CacheS3Config {
                    secret_key: Some("s3cr3t-key".into()),
                    ..CacheS3Config::default()
                }),
                ..CacheConfig::default()
            }),
            ..RunnerConfig::default()
        };
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("SECRETSECRETSECRET"), "{dbg}");
        assert!(!dbg.contains("s3cr3t-key"), "{dbg}");
        assert!(dbg.contains("SECRETSEC[MASKED]"), "{dbg}");
    }

    #[test]
    fn service_aliases() {
        let s = DockerService {
            alias: Some("db, postgres  pg".into()),
            ..DockerService::default()
        };
        assert_eq!(s.aliases(), vec!["db", "postgres", "pg"]);
    }
}
