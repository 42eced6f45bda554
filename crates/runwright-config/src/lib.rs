//! runwright-config: GitLab runner's `config.toml`, read the way GitLab's runner reads it.
//!
//! The rest of runwright codes against this crate's types instead of raw TOML, so the keys,
//! types and defaults of GitLab's runner (runner common/config.go) live in exactly one place.
//! Loading never stops at the first oddity it can tolerate: keys GitLab does not know are
//! reported as [`ConfigWarning`]s with their line; values GitLab would reject (or would fail
//! every job on) are a [`ConfigError`] naming file, line, column and key.
//!
//! ```no_run
//! let loaded = runwright_config::load(&runwright_config::default_config_path())?;
//! for warning in &loaded.warnings {
//!     eprintln!("warning: {warning}");
//! }
//! for runner in &loaded.config.runners {
//!     println!("{} ({}): {}", runner.name, runner.short_token(), runner.executor);
//! }
//! # Ok::<(), runwright_config::ConfigError>(())
//! ```
//!
//! Writes go through [`edit`]: comments and order kept, atomic, through symlinks, owner and mode kept.
#![warn(missing_docs)]

mod casefold;
mod de;
mod duration;
pub mod edit;
mod error;
mod gpus;
mod labels;
mod load;
mod model;
mod system_id;
mod token;

pub use duration::{format_go_duration, parse_go_duration, DurationError};
pub use error::{ConfigError, ConfigWarning};
pub use gpus::{parse_gpus, GpuRequest};
pub use labels::MAX_LABELS;
pub use load::{default_certs_dir, default_config_path, load, parse, InvalidRunner, LoadedConfig};
pub use model::{
    parse_cpus, parse_ram_in_bytes, ArtifactConfig, CacheAzureConfig, CacheConfig, CacheGcsConfig,
    CacheS3Config, CacheType, Config, CustomBuildDir, CustomConfig, DashboardConfig, DockerConfig,
    DockerService, JournalConfig, OpaqueTable, PullPolicy, RunnerConfig, S3AuthType, SessionServer,
    DEFAULT_ARTIFACT_RESPONSE_HEADER_TIMEOUT, DEFAULT_ARTIFACT_UPLOAD_TIMEOUT,
    DEFAULT_CHECK_INTERVAL, DEFAULT_CONNECTION_MAX_AGE, DEFAULT_FINAL_UPDATE_RETRY_LIMIT,
    DEFAULT_MAX_ARCHIVE_FILES, DEFAULT_OUTPUT_LIMIT_KIB, DEFAULT_SESSION_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_UNHEALTHY_INTERVAL, DEFAULT_UNHEALTHY_REQUESTS_LIMIT,
    DEFAULT_WAIT_FOR_SERVICES_TIMEOUT,
};
pub use system_id::{
    is_valid_system_id, load_or_create_system_id, system_id_from_machine_id, system_id_path,
    SYSTEM_ID_FILE_NAME,
};
pub use token::short_token;
