//! What runwright says about itself to GitLab (`info`, reference `protocol.md` §1.1; per `[[runners]]` entry its
//! labels and GPUs) and in job traces.
//! Features are advertised only when they work: GitLab assigns jobs by them.

use runwright_client::types::{FeaturesInfo, VersionInfo};
use runwright_config::RunnerConfig;
use runwright_engine::{Executor, RunnerIdentity};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("RUNWRIGHT_REVISION");

/// Go's GOARCH names, which GitLab expects.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

pub fn identity(system_id: &str) -> RunnerIdentity {
    RunnerIdentity {
        name: "runwright".into(),
        version: VERSION.into(),
        revision: REVISION.into(),
        platform: std::env::consts::OS.into(),
        architecture: architecture().into(),
        system_id: system_id.into(),
    }
}

pub fn user_agent() -> String {
    format!(
        "runwright {VERSION} ({REVISION}; rust; {}/{})",
        std::env::consts::OS,
        architecture()
    )
}

pub fn version_info(executor: &dyn Executor) -> VersionInfo {
    let mut features = FeaturesInfo {
        // The network client (runner network/gitlab.go).
        trace_reset: true,
        trace_checksum: true,
        trace_size: true,
        cancelable: true,
        cancel_gracefully: true,
        two_phase_job_commit: true,
        // What the engine implements; vault secrets and shared (session) terminals are not, so GitLab must
        // not send jobs that need them here.
        refspecs: true,
        artifacts: true,
        artifacts_exclude: true,
        upload_multiple_artifacts: true,
        upload_raw_artifacts: true,
        cache: true,
        fallback_cache_keys: true,
        masking: true,
        raw_variables: true,
        multi_build_steps: true,
        return_exit_code: true,
        ..Default::default()
    };
    executor.features(&mut features);
    VersionInfo {
        name: "runwright".into(),
        version: VERSION.into(),
        revision: REVISION.into(),
        platform: std::env::consts::OS.into(),
        architecture: architecture().into(),
        executor: executor.name().into(),
        shell: executor.shell().into(),
        features,
        config: Some(Default::default()),
        labels: Default::default(),
    }
}

/// The `info` object of register and verify (for `POST /runners` GitLab's runner sends it with an empty
/// executor, `protocol.md` §1.1).
pub fn info(executor: &str, shell: Option<&str>) -> VersionInfo {
    let mut features = FeaturesInfo::default();
    runwright_client::network_features(&mut features);
    VersionInfo {
        name: "runwright".into(),
        version: VERSION.into(),
        revision: REVISION.into(),
        platform: std::env::consts::OS.into(),
        architecture: architecture().into(),
        executor: executor.into(),
        shell: shell.map(str::to_string).unwrap_or_else(|| {
            if executor.is_empty() {
                String::new()
            } else {
                "bash".into()
            }
        }),
        features,
        config: Some(Default::default()),
        labels: Default::default(),
    }
}

/// What an `info` object says of one `[[runners]]` entry (runner network/gitlab.go `getRunnerInfo`): its labels,
/// the global ones under its own (`ComputedLabels`), and for docker its `gpus` in `config.gpus` (runner
/// executors/docker/config_updater.go). Sent with every job request, job update and verify.
pub fn entry_info(info: &mut VersionInfo, runner: &RunnerConfig) {
    info.labels = runner.computed_labels.clone();
    if runner.executor == "docker" {
        let gpus = runner
            .docker
            .as_ref()
            .map(|d| d.info_gpus())
            .unwrap_or_default();
        info.config.get_or_insert_with(Default::default).gpus = gpus;
    }
}

/// [`info`] for one entry, as verify sends it (runner network/gitlab.go `VerifyRunner`).
pub fn info_for(runner: &RunnerConfig) -> VersionInfo {
    let mut i = info(&runner.executor, runner.shell.as_deref());
    entry_info(&mut i, runner);
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entrys_info_carries_its_labels_and_gpus() {
        let text = "[labels]\n  team = \"infra\"\n[[runners]]\n  url = \"https://g/\"\n  token = \"t\"\n  executor = \"docker\"\n  [runners.labels]\n    env = \"prod\"\n  [runners.docker]\n    gpus = \"all\"\n";
        let config = runwright_config::parse(text, std::path::Path::new("c.toml"))
            .expect("parses")
            .config;
        let info = info_for(&config.runners[0]);
        assert_eq!(info.labels.get("team").map(String::as_str), Some("infra"));
        assert_eq!(info.labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(info.config.map(|c| c.gpus).as_deref(), Some("all"));
    }
}
