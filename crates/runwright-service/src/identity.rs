//! What runwright says about itself to GitLab (`info`, reference `protocol.md` §1.1) and in job traces.
//! Features are advertised only when they work: GitLab assigns jobs by them.

use runwright_api::types::{FeaturesInfo, VersionInfo};
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
