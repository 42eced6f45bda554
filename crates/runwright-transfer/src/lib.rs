//! GitLab's cache and artifact transfer stages around the user script (reference `protocol.md` §5, §6, §7.1
//! rows 4, 5, 8, 9): `restore_cache` and `download_artifacts` before it, `archive_cache` and
//! `upload_artifacts_on_success`/`_on_failure` after it. Each is a [`JobStep`](runwright_engine::steps::JobStep)
//! that *writes* its stage's script as gitlab-runner's `shells/abstract.go` does: what needs the runner is
//! decided here (cache keys, presigned S3 URLs from `runwright-cache`, the job's dependencies), everything that
//! touches the job's files is a call of the helper command (`gitlab-runner-helper cache-extractor …`, or the
//! runner's own binary for the shell executor) in the stage, where and as whom the job's stages run. The engine
//! runs the stages in GitLab's order and decides how their failures count.

pub mod artifacts;
pub mod cache;
pub mod error;

pub use error::Error;
use runwright_engine::script::ScriptWriter;
use runwright_engine::steps::{StepContext, StepStage};

/// `artifacts:when` / `cache:when` against the script's result: empty and `on_success` after success only.
pub(crate) fn when_matches(when: &str, succeeded: bool) -> bool {
    match when {
        "always" => true,
        "on_failure" => !succeeded,
        _ => succeeded,
    }
}

/// The section of an after-script step, named and titled after the script's result as GitLab's runner does
/// (`archive_cache` / `archive_cache_on_failure`, "Saving cache for successful job").
pub(crate) fn result_section(
    ctx: &StepContext<'_>,
    on_success: &str,
    on_failure: &str,
    title: &str,
) -> StepStage {
    if ctx.succeeded {
        StepStage {
            name: on_success.into(),
            title: format!("{title} for successful job"),
        }
    } else {
        StepStage {
            name: on_failure.into(),
            title: format!("{title} for failed job"),
        }
    }
}

/// runner shells/abstract.go `guardRunnerCommand`: the helper's calls run only when the helper answers
/// `--version`; otherwise the stage says what is disabled.
pub(crate) fn guard_helper(
    w: &mut ScriptWriter,
    ctx: &StepContext<'_>,
    action: &str,
    f: impl FnOnce(&mut ScriptWriter),
) {
    w.if_cmd(&[], &[ctx.helper, "--version"]);
    f(w);
    w.else_();
    w.warning(&format!("Missing {}. {action} is disabled.", ctx.helper));
    w.end_if();
}

/// runwright's own bound on one archive (`max_archive_files`, issue 17), for runwright's helper: in the helper
/// call's environment (`RUNWRIGHT_MAX_ARCHIVE_FILES`), which GitLab's helper ignores, where an unknown flag
/// would stop it.
pub(crate) fn limit_env(ctx: &StepContext<'_>) -> (&'static str, String) {
    (
        runwright_static::env_vars::RUNWRIGHT_MAX_ARCHIVE_FILES,
        ctx.runner.max_archive_files().to_string(),
    )
}

/// `--path`/`--exclude`/`--untracked` of the archivers (runner `getArchiverArgs`, `writeUploadArtifact`), with
/// each path expanded against the job's variables as the runner did when it archived in-process.
pub(crate) fn archiver_args(
    ctx: &StepContext<'_>,
    paths: &[String],
    exclude: &[String],
    untracked: bool,
) -> Vec<String> {
    let mut args = Vec::new();
    for p in paths {
        args.push("--path".to_string());
        args.push(ctx.expand(p));
    }
    for p in exclude {
        args.push("--exclude".to_string());
        args.push(ctx.expand(p));
    }
    if untracked {
        args.push("--untracked".to_string());
    }
    args
}

#[cfg(test)]
pub(crate) mod testing {
    //! A context to write stages with, and a bash to check that what was written parses.

    use runwright_api::types::JobResponse;
    use runwright_config::RunnerConfig;
    use runwright_engine::feature_flags::FeatureFlags;
    use runwright_engine::script::ScriptWriter;
    use runwright_engine::steps::StepContext;
    use runwright_engine::variables::Variables;
    use std::path::Path;
    use std::time::Duration;

    pub(crate) struct Fixture {
        pub job: JobResponse,
        pub runner: RunnerConfig,
        pub vars: Variables,
        pub flags: FeatureFlags,
        pub succeeded: bool,
    }

    impl Fixture {
        pub(crate) fn new(job: JobResponse) -> Self {
            let mut vars = Variables::new();
            for v in &job.variables {
                vars.set(&v.key, v.value.clone());
            }
            Self {
                job,
                runner: RunnerConfig {
                    url: "https://gitlab.example/".into(),
                    ..Default::default()
                },
                vars,
                flags: FeatureFlags::default(),
                succeeded: true,
            }
        }

        pub(crate) fn ctx(&self) -> StepContext<'_> {
            StepContext {
                job: &self.job,
                runner: &self.runner,
                project_dir: Path::new("/builds/grp/app"),
                tmp_dir: Path::new("/builds/grp/app.tmp"),
                cache_dir: Path::new("/cache"),
                empty_strategy: false,
                variables: &self.vars,
                feature_flags: &self.flags,
                succeeded: self.succeeded,
                artifact_download_attempts: 1,
                restore_cache_attempts: 1,
                time_left: Duration::from_secs(3600),
                helper: "/usr/bin/gitlab-runner-helper",
            }
        }
    }

    /// The stage's commands; panics unless `bash -n` and `sh -n` accept them.
    pub(crate) fn parsed(w: &ScriptWriter) -> String {
        let script = w.body().to_string();
        for shell in ["bash", "sh"] {
            let out = std::process::Command::new(shell)
                .args(["-n", "-c"])
                .arg(&script)
                .output()
                .expect("shell runs");
            assert!(
                out.status.success(),
                "{shell}: {script}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = std::process::Command::new("bash")
            .args(["-n", "-c"])
            .arg(&script)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        script
    }
}
