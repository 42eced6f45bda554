//! gitlab-runner's feature flags, resolved for one job, and the job settings read with them.
//!
//! [`FLAGS`] is gitlab-runner 19.4's table (`helpers/featureflags/flags.go`, `flags`), copied by
//! hand in its order, with each flag's default. A job's value of a flag is resolved as
//! `common/build_settings.go` `populateFeatureFlags` does: `[runners.feature_flags]` when the
//! entry sets it, else the job's variable of that name when it parses as a Go bool, else the
//! default; a variable that does not parse is a warning and leaves the default. Every flag of the
//! table is then exported with its resolved value, first in the job's variables, and the job's own
//! `FF_*` variables of the table are left out of the list (`common/build.go` `GetAllVariables`,
//! `getResolvedFeatureFlags`, `getNonFeatureFlagJobVariables`), so the TOML wins in the job's
//! environment too. Names outside the table are ordinary variables and not flags.
//!
//! The variables a flag is resolved against are gitlab-runner's list for that purpose
//! (`getVariablesForFeatureFlagResolution`: the defaults, `CI_JOB_IMAGE`, the runner's
//! `environment`, the job's variables, expanded) without the path and slot variables the runner
//! computes later (`CI_PROJECT_DIR`, …): [`JobSettings::of`] needs only the config and the
//! payload, so the service can build the job's trace with `FF_TIMESTAMPS` and
//! `FF_MASK_ALL_DEFAULT_TOKENS` before anything runs. A flag whose value references one of those
//! variables (`FF_X: $CI_PROJECT_DIR`) therefore sees it empty, where gitlab-runner would not
//! parse it either.

use crate::variables::{parse_go_bool, Variables};
use runwright_api::types::{JobResponse, JobVariable};
use runwright_config::RunnerConfig;

/// One flag of gitlab-runner's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagDef {
    pub name: &'static str,
    pub default: bool,
    /// Marked deprecated in `flags.go`.
    pub deprecated: bool,
}

const fn flag(name: &'static str, default: bool) -> FlagDef {
    FlagDef {
        name,
        default,
        deprecated: false,
    }
}

const fn deprecated(name: &'static str, default: bool) -> FlagDef {
    FlagDef {
        name,
        default,
        deprecated: true,
    }
}

/// The version of gitlab-runner [`FLAGS`] was copied from.
pub const FLAGS_VERSION: &str = "gitlab-runner 19.4.0 (d79f3e7b) helpers/featureflags/flags.go";

/// Every feature flag of gitlab-runner ([`FLAGS_VERSION`]), in its order, with its default.
pub const FLAGS: &[FlagDef] = &[
    deprecated("FF_TEST_FEATURE", false),
    flag(NETWORK_PER_BUILD, false),
    flag("FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY", false),
    flag(USE_DIRECT_DOWNLOAD, true),
    deprecated("FF_USE_FASTZIP", true),
    flag("FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR", false),
    flag("FF_ENABLE_BASH_EXIT_CODE_CHECK", false),
    flag("FF_USE_WINDOWS_LEGACY_PROCESS_STRATEGY", false),
    flag("FF_USE_LEGACY_BASH_EVAL", false),
    flag("FF_USE_POWERSHELL_PATH_RESOLVER", false),
    flag("FF_USE_DYNAMIC_TRACE_FORCE_SEND_INTERVAL", false),
    flag("FF_SCRIPT_SECTIONS", false),
    flag("FF_ENABLE_JOB_CLEANUP", false),
    flag("FF_KUBERNETES_HONOR_ENTRYPOINT", false),
    flag("FF_POSIXLY_CORRECT_ESCAPES", false),
    flag("FF_RESOLVE_FULL_TLS_CHAIN", false),
    flag("FF_DISABLE_POWERSHELL_STDIN", false),
    flag("FF_USE_POD_ACTIVE_DEADLINE_SECONDS", true),
    flag("FF_USE_ADVANCED_POD_SPEC_CONFIGURATION", false),
    flag("FF_SECRET_RESOLVING_FAILS_IF_MISSING", true),
    flag("FF_PRINT_POD_EVENTS", false),
    flag("FF_USE_GIT_BUNDLE_URIS", true),
    flag("FF_USE_GIT_NATIVE_CLONE", false),
    flag("FF_USE_DUMB_INIT_WITH_KUBERNETES_EXECUTOR", false),
    flag("FF_USE_INIT_WITH_DOCKER_EXECUTOR", false),
    flag("FF_LOG_IMAGES_CONFIGURED_FOR_JOB", false),
    flag("FF_USE_DOCKER_AUTOSCALER_DIAL_STDIO", true),
    flag("FF_CLEAN_UP_FAILED_CACHE_EXTRACT", false),
    flag("FF_USE_WINDOWS_JOB_OBJECT", false),
    flag(TIMESTAMPS, true),
    flag("FF_DISABLE_AUTOMATIC_TOKEN_ROTATION", false),
    flag("FF_USE_LEGACY_GCS_CACHE_ADAPTER", false),
    flag("FF_DISABLE_UMASK_FOR_KUBERNETES_EXECUTOR", false),
    flag("FF_USE_LEGACY_S3_CACHE_ADAPTER", false),
    flag("FF_GIT_URLS_WITHOUT_TOKENS", false),
    flag("FF_WAIT_FOR_POD_TO_BE_REACHABLE", false),
    flag(MASK_ALL_DEFAULT_TOKENS, true),
    flag("FF_EXPORT_HIGH_CARDINALITY_METRICS", false),
    flag("FF_USE_FLEETING_ACQUIRE_HEARTBEATS", false),
    flag("FF_USE_EXPONENTIAL_BACKOFF_STAGE_RETRY", true),
    flag("FF_USE_ADAPTIVE_REQUEST_CONCURRENCY", true),
    flag("FF_USE_GITALY_CORRELATION_ID", true),
    flag("FF_USE_GIT_PROACTIVE_AUTH", false),
    flag(HASH_CACHE_KEYS, false),
    flag("FF_ENABLE_JOB_INPUTS_INTERPOLATION", true),
    flag("FF_USE_JOB_ROUTER", false),
    flag("FF_SCRIPT_TO_STEP_MIGRATION", false),
    flag("FF_USE_PARALLEL_CACHE_TRANSFER", false),
    flag("FF_USE_PARALLEL_ARTIFACT_TRANSFER", false),
    flag("FF_CONCRETE", false),
    flag("FF_SUSPENDABLE_ENVIRONMENTS", false),
    flag("FF_USE_NATIVE_CONTAINER_STOP", false),
];

/// Per-line timestamps in the trace (default on).
pub const TIMESTAMPS: &str = "FF_TIMESTAMPS";
/// Mask all of GitLab's default token prefixes, not only `glpat-` (default on).
pub const MASK_ALL_DEFAULT_TOKENS: &str = "FF_MASK_ALL_DEFAULT_TOKENS";
/// Cache keys stored as their SHA-256 (default off).
pub const HASH_CACHE_KEYS: &str = "FF_HASH_CACHE_KEYS";
/// Ask GitLab for a redirect to object storage when downloading artifacts (default on).
pub const USE_DIRECT_DOWNLOAD: &str = "FF_USE_DIRECT_DOWNLOAD";
/// Remove a cache's paths when its extraction failed, before the next key is tried (default off).
pub const CLEAN_UP_FAILED_CACHE_EXTRACT: &str = "FF_CLEAN_UP_FAILED_CACHE_EXTRACT";
/// A docker network per job (default off).
pub const NETWORK_PER_BUILD: &str = "FF_NETWORK_PER_BUILD";

/// The resolved value of every flag of [`FLAGS`] for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureFlags {
    /// Aligned with [`FLAGS`].
    values: Vec<bool>,
}

impl Default for FeatureFlags {
    fn default() -> Self {
        Self {
            values: FLAGS.iter().map(|f| f.default).collect(),
        }
    }
}

impl FeatureFlags {
    /// Resolves every flag (`populateFeatureFlags`): `runner_flags` (`[runners.feature_flags]`)
    /// first, then the last definition in `vars` if it parses, else the default. Returns the
    /// warnings for values that do not parse, in gitlab-runner's words.
    pub fn resolve(
        runner_flags: &std::collections::BTreeMap<String, bool>,
        vars: &Variables,
    ) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let values = FLAGS
            .iter()
            .map(|f| {
                if let Some(on) = runner_flags.get(f.name) {
                    return *on;
                }
                // The list starts with the defaults, so gitlab-runner always finds a value here.
                let raw = vars.value(f.name).unwrap_or("");
                match parse_go_bool(raw) {
                    Some(on) => on,
                    None => {
                        warnings.push(format!(
                            "{}: could not parse feature flag, expected bool, got {raw}",
                            f.name
                        ));
                        f.default
                    }
                }
            })
            .collect();
        (Self { values }, warnings)
    }

    /// Whether `name` is on; a name outside [`FLAGS`] is off (`Build.IsFeatureFlagOn`).
    pub fn is_on(&self, name: &str) -> bool {
        FLAGS
            .iter()
            .position(|f| f.name == name)
            .and_then(|i| self.values.get(i).copied())
            .unwrap_or(false)
    }

    /// Every flag with its resolved value, in [`FLAGS`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        FLAGS.iter().zip(&self.values).map(|(f, v)| (f.name, *v))
    }

    /// `FF_X:true, FF_Y:false` for the flags that differ from their default
    /// (`Build.getFeatureFlagInfo`); empty when none does.
    pub fn differing_from_defaults(&self) -> String {
        FLAGS
            .iter()
            .zip(&self.values)
            .filter(|(f, v)| f.default != **v)
            .map(|(f, v)| format!("{}:{v}", f.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether `name` is one of gitlab-runner's flags.
pub fn is_flag(name: &str) -> bool {
    FLAGS.iter().any(|f| f.name == name)
}

/// What gitlab-runner's build settings make of a job before anything runs
/// (`common/build_settings.go` `initSettings`), as far as the trace and the trace patches need it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobSettings {
    pub feature_flags: FeatureFlags,
    /// `CI_DEBUG_TRACE` on (and not refused by `debug_trace_disabled`).
    pub debug_trace: bool,
    /// `CI_DEBUG_SERVICES` on (and not refused by `debug_trace_disabled`).
    pub debug_services: bool,
    /// gitlab-runner's setting errors, printed as one warning (`printSettingErrors`).
    pub warnings: Vec<String>,
}

impl JobSettings {
    /// Resolves the job's flags and debug switches from the runner's entry and the payload alone
    /// (see the module docs for the variables used).
    pub fn of(runner: &RunnerConfig, job: &JobResponse) -> Self {
        let mut vars = Variables::new();
        for f in FLAGS {
            vars.set(f.name, f.default.to_string());
        }
        if let Some(name) = job_image(job) {
            vars.set("CI_JOB_IMAGE", name);
        }
        vars.set("CI_RUNNER_SHORT_TOKEN", runner.short_token());
        push_environment(&mut vars, &runner.environment);
        vars.extend(job.variables.iter().cloned());
        // File variables expand to a path; no path a flag could use is known yet (module docs).
        let vars = vars.expanded(&|_| String::new());

        let (feature_flags, flag_warnings) = FeatureFlags::resolve(&runner.feature_flags, &vars);
        let mut warnings = Vec::new();
        let mut switch = |name: &str| -> bool {
            // `validate` in build_settings.go: empty → default (off); unparsable → warning.
            match vars.value(name).unwrap_or("") {
                "" => false,
                raw => parse_go_bool(raw).unwrap_or_else(|| {
                    warnings.push(format!(
                        "{name}: expected bool got {raw:?}, using default value: false"
                    ));
                    false
                }),
            }
        };
        // `validateVariables` reads CI_DEBUG_SERVICES first.
        let debug_services = switch("CI_DEBUG_SERVICES");
        let debug_trace = switch("CI_DEBUG_TRACE");
        let mut settings = Self {
            feature_flags,
            debug_trace,
            debug_services,
            warnings,
        };
        // `validateDebugTraceSettings`, after the variables and before the flags.
        if runner.debug_trace_disabled {
            if settings.debug_trace {
                settings
                    .warnings
                    .push("CI_DEBUG_TRACE: usage is disabled on this Runner".into());
            }
            if settings.debug_services {
                settings
                    .warnings
                    .push("CI_DEBUG_SERVICES: usage is disabled on this Runner".into());
            }
            settings.debug_trace = false;
            settings.debug_services = false;
        }
        // gitlab-runner's `initSettings` resolves the flags twice and so repeats their errors;
        // once is enough.
        settings.warnings.extend(flag_warnings);
        settings
    }

    /// `Build.IsDebugModeEnabled`: trace patches carry `debug_trace=true`.
    pub fn debug_mode(&self) -> bool {
        self.debug_trace || self.debug_services
    }
}

/// The job's image name when it has one (`CI_JOB_IMAGE` is set only then).
pub(crate) fn job_image(job: &JobResponse) -> Option<&str> {
    job.image
        .as_ref()
        .map(|i| i.name.as_str())
        .filter(|n| !n.is_empty())
}

/// `[[runners]] environment` entries as variables (`RunnerSettings.GetVariables`).
pub(crate) fn push_environment(vars: &mut Variables, environment: &[String]) {
    for entry in environment {
        match entry.split_once('=') {
            Some((k, v)) => vars.set(k, v),
            None => vars.set(entry, ""),
        }
    }
}

/// The job's variables without gitlab-runner's flags (`getNonFeatureFlagJobVariables`): their
/// resolved values lead the list instead.
pub(crate) fn non_flag_variables(vars: &[JobVariable]) -> impl Iterator<Item = &JobVariable> {
    vars.iter().filter(|v| !is_flag(&v.key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn var(key: &str, value: &str) -> JobVariable {
        JobVariable {
            key: key.into(),
            value: value.into(),
            public: true,
            ..Default::default()
        }
    }

    fn job(vars: &[(&str, &str)]) -> JobResponse {
        JobResponse {
            variables: vars.iter().map(|(k, v)| var(k, v)).collect(),
            ..Default::default()
        }
    }

    fn runner(toml_flags: &[(&str, bool)], environment: &[&str]) -> RunnerConfig {
        RunnerConfig {
            feature_flags: toml_flags
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
            environment: environment.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_table_is_gitlab_runner_19_4s() {
        assert_eq!(FLAGS.len(), 52, "{FLAGS_VERSION}");
        let mut names: Vec<&str> = FLAGS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FLAGS.len(), "no flag twice");
        let on: Vec<&str> = FLAGS.iter().filter(|f| f.default).map(|f| f.name).collect();
        assert_eq!(
            on,
            [
                "FF_USE_DIRECT_DOWNLOAD",
                "FF_USE_FASTZIP",
                "FF_USE_POD_ACTIVE_DEADLINE_SECONDS",
                "FF_SECRET_RESOLVING_FAILS_IF_MISSING",
                "FF_USE_GIT_BUNDLE_URIS",
                "FF_USE_DOCKER_AUTOSCALER_DIAL_STDIO",
                "FF_TIMESTAMPS",
                "FF_MASK_ALL_DEFAULT_TOKENS",
                "FF_USE_EXPONENTIAL_BACKOFF_STAGE_RETRY",
                "FF_USE_ADAPTIVE_REQUEST_CONCURRENCY",
                "FF_USE_GITALY_CORRELATION_ID",
                "FF_ENABLE_JOB_INPUTS_INTERPOLATION",
            ]
        );
        assert_eq!(FLAGS.first().map(|f| f.name), Some("FF_TEST_FEATURE"));
        assert_eq!(
            FLAGS.last().map(|f| f.name),
            Some("FF_USE_NATIVE_CONTAINER_STOP")
        );
    }

    #[test]
    fn toml_wins_over_the_job_which_wins_over_the_default() {
        let s = JobSettings::of(
            &runner(&[("FF_TIMESTAMPS", true), ("FF_UNKNOWN", true)], &[]),
            &job(&[
                ("FF_TIMESTAMPS", "false"),
                ("FF_HASH_CACHE_KEYS", "1"),
                ("FF_MASK_ALL_DEFAULT_TOKENS", "False"),
            ]),
        );
        let ff = &s.feature_flags;
        assert!(ff.is_on(TIMESTAMPS), "TOML wins");
        assert!(
            ff.is_on(HASH_CACHE_KEYS),
            "the job's variable wins over the default"
        );
        assert!(!ff.is_on(MASK_ALL_DEFAULT_TOKENS));
        assert!(ff.is_on(USE_DIRECT_DOWNLOAD), "default");
        assert!(!ff.is_on("FF_UNKNOWN"), "not a flag of the table");
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(
            ff.differing_from_defaults(),
            "FF_MASK_ALL_DEFAULT_TOKENS:false, FF_HASH_CACHE_KEYS:true"
        );
    }

    #[test]
    fn values_expand_and_environment_counts() {
        let s = JobSettings::of(
            &runner(&[], &["FF_HASH_CACHE_KEYS=true", "OFF=false"]),
            &job(&[("FF_TIMESTAMPS", "$OFF")]),
        );
        assert!(s.feature_flags.is_on(HASH_CACHE_KEYS));
        assert!(!s.feature_flags.is_on(TIMESTAMPS));
    }

    #[test]
    fn unparsable_values_warn_and_keep_the_default() {
        let s = JobSettings::of(
            &runner(&[], &[]),
            &job(&[("FF_TIMESTAMPS", "yes"), ("FF_HASH_CACHE_KEYS", "")]),
        );
        assert!(s.feature_flags.is_on(TIMESTAMPS));
        assert!(!s.feature_flags.is_on(HASH_CACHE_KEYS));
        assert_eq!(
            s.warnings,
            [
                "FF_TIMESTAMPS: could not parse feature flag, expected bool, got yes",
                "FF_HASH_CACHE_KEYS: could not parse feature flag, expected bool, got ",
            ]
        );
    }

    #[test]
    fn debug_switches_and_debug_trace_disabled() {
        let on = JobSettings::of(&runner(&[], &[]), &job(&[("CI_DEBUG_TRACE", "true")]));
        assert!(on.debug_trace && on.debug_mode());
        let services = JobSettings::of(&runner(&[], &[]), &job(&[("CI_DEBUG_SERVICES", "1")]));
        assert!(!services.debug_trace && services.debug_services && services.debug_mode());
        // Set only in the runner's `environment`: GitLab cannot know, the trace patches tell it.
        let env = JobSettings::of(&runner(&[], &["CI_DEBUG_TRACE=true"]), &job(&[]));
        assert!(env.debug_mode());
        let off = JobSettings::of(&runner(&[], &[]), &job(&[("CI_DEBUG_TRACE", "false")]));
        assert!(!off.debug_mode());
        let mut r = runner(&[], &[]);
        r.debug_trace_disabled = true;
        let refused = JobSettings::of(
            &r,
            &job(&[
                ("CI_DEBUG_TRACE", "true"),
                ("CI_DEBUG_SERVICES", "true"),
                ("FF_TIMESTAMPS", "maybe"),
            ]),
        );
        assert!(!refused.debug_mode());
        assert_eq!(
            refused.warnings,
            [
                "CI_DEBUG_TRACE: usage is disabled on this Runner",
                "CI_DEBUG_SERVICES: usage is disabled on this Runner",
                "FF_TIMESTAMPS: could not parse feature flag, expected bool, got maybe",
            ]
        );
        let bad = JobSettings::of(&runner(&[], &[]), &job(&[("CI_DEBUG_TRACE", "please")]));
        assert!(!bad.debug_mode());
        assert_eq!(
            bad.warnings,
            ["CI_DEBUG_TRACE: expected bool got \"please\", using default value: false"]
        );
    }
}
