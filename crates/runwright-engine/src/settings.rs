//! The job's build settings read from its variables, validated as GitLab's runner validates them (runner
//! common/build_settings.go `validateVariables`, `validate`, `validateAttemptSettings`): a value the runner
//! cannot use never fails the job; it is replaced by the default (or clamped) and the reason is kept for one
//! warning at the top of the trace (runner common/build.go `printSettingErrors`).

use crate::sources::{GitStrategy, SubmoduleStrategy};
use crate::variables::{parse_go_bool, Variables};

/// What the runner reads from `GIT_*`, `*_ATTEMPTS` and `AFTER_SCRIPT_IGNORE_ERRORS` (runner `BuildSettings`).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSettings {
    pub git_clone_path: String,
    pub git_strategy: GitStrategy,
    pub git_checkout: bool,
    /// `None`: an unknown `GIT_SUBMODULE_STRATEGY` (runner `SubmoduleInvalid`), which fails `get_sources`.
    pub submodule_strategy: Option<SubmoduleStrategy>,
    pub submodule_paths: Vec<String>,
    pub submodule_depth: i64,
    pub clean_flags: Vec<String>,
    pub fetch_flags: Vec<String>,
    pub submodule_update_flags: Vec<String>,
    pub lfs_skip_smudge: bool,
    pub submodule_force_https: bool,
    pub get_sources_attempts: u32,
    pub artifact_download_attempts: u32,
    pub restore_cache_attempts: u32,
    pub after_script_ignore_errors: bool,
    /// Why a value was replaced, in the runner's words, in its order.
    pub errors: Vec<String>,
}

/// Splits like Go's `strings.Fields`: on runs of Unicode white space.
fn fields(raw: &str) -> Vec<String> {
    raw.split_whitespace().map(str::to_string).collect()
}

/// A command-line flags variable (runner `cmdFlags`): empty → the default, `none` → no flags, else the words.
fn flags(vars: &Variables, name: &str, default: &[&str]) -> Vec<String> {
    match vars.value(name).unwrap_or("") {
        "" => default.iter().map(|s| s.to_string()).collect(),
        "none" => Vec::new(),
        raw => fields(raw),
    }
}

struct Reader<'a> {
    vars: &'a Variables,
    errors: Vec<String>,
}

impl<'a> Reader<'a> {
    fn raw(&self, name: &str) -> &'a str {
        self.vars.value(name).unwrap_or("")
    }

    fn bool(&mut self, name: &str, default: bool) -> bool {
        let raw = self.raw(name);
        if raw.is_empty() {
            return default;
        }
        match parse_go_bool(raw) {
            Some(b) => b,
            None => {
                self.errors.push(format!(
                    "{name}: expected bool got {raw:?}, using default value: {default}"
                ));
                default
            }
        }
    }

    fn int(&mut self, name: &str, default: i64) -> i64 {
        let raw = self.raw(name);
        if raw.is_empty() {
            return default;
        }
        match raw.parse::<i64>() {
            Ok(i) => i,
            Err(_) => {
                self.errors.push(format!(
                    "{name}: expected int got {raw:?}, using default value: {default}"
                ));
                default
            }
        }
    }
}

impl BuildSettings {
    /// Reads the settings from the job's (expanded) variable list. `allow_git_fetch` picks the default
    /// strategy; `depth` is `git_info.depth`, the default of `GIT_SUBMODULE_DEPTH`.
    pub fn from_variables(vars: &Variables, allow_git_fetch: bool, depth: i64) -> Self {
        let mut r = Reader {
            vars,
            errors: Vec::new(),
        };
        let default_strategy = if allow_git_fetch {
            GitStrategy::Fetch
        } else {
            GitStrategy::Clone
        };
        let git_clone_path = r.raw("GIT_CLONE_PATH").to_string();
        let git_strategy = match r.raw("GIT_STRATEGY") {
            "" => default_strategy,
            raw => GitStrategy::parse(raw).unwrap_or_else(|| {
                r.errors.push(format!(
                    "GIT_STRATEGY: expected either 'clone', 'fetch', 'none' or 'empty' got {raw:?}, using default \
                     value '{}'",
                    default_strategy.as_str()
                ));
                default_strategy
            }),
        };
        let git_checkout = r.bool("GIT_CHECKOUT", true);
        let submodule_strategy = match r.raw("GIT_SUBMODULE_STRATEGY") {
            "" => Some(SubmoduleStrategy::None),
            raw => {
                let parsed = SubmoduleStrategy::parse(raw);
                if parsed.is_none() {
                    r.errors.push(format!(
                        "GIT_SUBMODULE_STRATEGY: expected either 'normal', 'recursive' or 'none' got {raw:?}"
                    ));
                }
                parsed
            }
        };
        let submodule_paths = fields(r.raw("GIT_SUBMODULE_PATHS"));
        let submodule_depth = r.int("GIT_SUBMODULE_DEPTH", depth);
        let clean_flags = flags(vars, "GIT_CLEAN_FLAGS", &["-ffdx"]);
        let fetch_flags = flags(vars, "GIT_FETCH_EXTRA_FLAGS", &["--prune", "--quiet"]);
        let submodule_update_flags = flags(vars, "GIT_SUBMODULE_UPDATE_FLAGS", &[]);
        let lfs_skip_smudge = r.bool("GIT_LFS_SKIP_SMUDGE", false);
        let submodule_force_https = r.bool("GIT_SUBMODULE_FORCE_HTTPS", false);
        let mut attempts = [
            ("GET_SOURCES_ATTEMPTS", r.int("GET_SOURCES_ATTEMPTS", 1)),
            (
                "ARTIFACT_DOWNLOAD_ATTEMPTS",
                r.int("ARTIFACT_DOWNLOAD_ATTEMPTS", 1),
            ),
            ("RESTORE_CACHE_ATTEMPTS", r.int("RESTORE_CACHE_ATTEMPTS", 1)),
            (
                "EXECUTOR_JOB_SECTION_ATTEMPTS",
                r.int("EXECUTOR_JOB_SECTION_ATTEMPTS", 1),
            ),
            (
                "SECRETS_RETRIEVAL_ATTEMPTS",
                r.int("SECRETS_RETRIEVAL_ATTEMPTS", 1),
            ),
        ];
        let after_script_ignore_errors = r.bool("AFTER_SCRIPT_IGNORE_ERRORS", true);
        let _cache_request_timeout = r.int("CACHE_REQUEST_TIMEOUT", 10);

        // runner validateAttemptSettings: clamped to [1, 10], in this order (its executor section attempts
        // first), after the variables' own errors.
        let order = [3usize, 0, 1, 2, 4];
        for i in order {
            let (name, value) = attempts[i];
            let clamped = value.clamp(1, 10);
            if clamped != value {
                r.errors.push(format!(
                    "{name}: number of attempts out of the range [1, 10], clamping to: {clamped}"
                ));
                attempts[i].1 = clamped;
            }
        }
        let count = |i: usize| attempts[i].1 as u32;
        BuildSettings {
            git_clone_path,
            git_strategy,
            git_checkout,
            submodule_strategy,
            submodule_paths,
            submodule_depth,
            clean_flags,
            fetch_flags,
            submodule_update_flags,
            lfs_skip_smudge,
            submodule_force_https,
            get_sources_attempts: count(0),
            artifact_download_attempts: count(1),
            restore_cache_attempts: count(2),
            after_script_ignore_errors,
            errors: r.errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Variables {
        let mut v = Variables::new();
        for (k, val) in pairs {
            v.set(k, *val);
        }
        v
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let s = BuildSettings::from_variables(&Variables::new(), true, 20);
        assert_eq!(s.git_strategy, GitStrategy::Fetch);
        assert!(s.git_checkout);
        assert_eq!(s.submodule_strategy, Some(SubmoduleStrategy::None));
        assert_eq!(s.submodule_depth, 20);
        assert_eq!(s.clean_flags, ["-ffdx"]);
        assert_eq!(s.fetch_flags, ["--prune", "--quiet"]);
        assert!(s.submodule_update_flags.is_empty());
        assert_eq!(s.get_sources_attempts, 1);
        assert!(s.after_script_ignore_errors);
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let s = BuildSettings::from_variables(&Variables::new(), false, 0);
        assert_eq!(s.git_strategy, GitStrategy::Clone);
    }

    #[test]
    fn bad_values_warn_in_the_runners_words_and_fall_back() {
        let s = BuildSettings::from_variables(
            &vars(&[
                ("GIT_STRATEGY", "rsync"),
                ("GIT_CHECKOUT", "yes"),
                ("GIT_SUBMODULE_STRATEGY", "deep"),
                ("GIT_SUBMODULE_DEPTH", "x"),
                ("GET_SOURCES_ATTEMPTS", "15"),
                ("RESTORE_CACHE_ATTEMPTS", "0"),
                ("ARTIFACT_DOWNLOAD_ATTEMPTS", "three"),
            ]),
            true,
            5,
        );
        assert_eq!(s.git_strategy, GitStrategy::Fetch);
        assert!(s.git_checkout);
        assert_eq!(s.submodule_strategy, None);
        assert_eq!(s.submodule_depth, 5);
        assert_eq!(s.get_sources_attempts, 10);
        assert_eq!(s.restore_cache_attempts, 1);
        assert_eq!(s.artifact_download_attempts, 1);
        assert_eq!(
            s.errors,
            [
                "GIT_STRATEGY: expected either 'clone', 'fetch', 'none' or 'empty' got \"rsync\", using default value 'fetch'",
                "GIT_CHECKOUT: expected bool got \"yes\", using default value: true",
                "GIT_SUBMODULE_STRATEGY: expected either 'normal', 'recursive' or 'none' got \"deep\"",
                "GIT_SUBMODULE_DEPTH: expected int got \"x\", using default value: 5",
                "ARTIFACT_DOWNLOAD_ATTEMPTS: expected int got \"three\", using default value: 1",
                "GET_SOURCES_ATTEMPTS: number of attempts out of the range [1, 10], clamping to: 10",
                "RESTORE_CACHE_ATTEMPTS: number of attempts out of the range [1, 10], clamping to: 1",
            ]
        );
    }

    #[test]
    fn flags_split_into_words_and_none_means_no_flags() {
        let s = BuildSettings::from_variables(
            &vars(&[
                ("GIT_CLEAN_FLAGS", "-ffdx -e *.log\t$(touch x)"),
                ("GIT_FETCH_EXTRA_FLAGS", "none"),
                ("GIT_SUBMODULE_PATHS", " a  b "),
            ]),
            true,
            0,
        );
        assert_eq!(s.clean_flags, ["-ffdx", "-e", "*.log", "$(touch", "x)"]);
        assert!(s.fetch_flags.is_empty());
        assert_eq!(s.submodule_paths, ["a", "b"]);
    }
}
