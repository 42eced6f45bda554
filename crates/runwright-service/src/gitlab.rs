//! Calls to GitLab's runner API outside a job — the operating verbs' and the service's token rotation: a client
//! for an entry, the `info` object (per `[[runners]]` entry: its labels and GPUs; also sent with every job
//! request), what to do about a failed call (by GitLab's status, `protocol.md` §1), and GitLab's token times.

use crate::identity::{architecture, REVISION, VERSION};
use anyhow::anyhow;
use runwright_api::types::{FeaturesInfo, VersionInfo};
use runwright_client::{ApiError, Client, ClientOptions};
use runwright_config::RunnerConfig;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A client for `url`, with the entry's TLS files when there is one.
pub fn client(url: &str, runner: Option<&RunnerConfig>) -> anyhow::Result<Client> {
    Client::new(ClientOptions {
        url: url.to_string(),
        tls_ca_file: runner.and_then(|r| r.tls_ca_file.clone()),
        tls_cert_file: runner.and_then(|r| r.tls_cert_file.clone()),
        tls_key_file: runner.and_then(|r| r.tls_key_file.clone()),
        certs_dir: Some(runwright_config::default_certs_dir()),
        user_agent: crate::identity::user_agent(),
        idle_timeout: None,
    })
    .map_err(|e| anyhow!("{e}; check --url (or the entry's url in config.toml)"))
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

/// GitLab's `token_expires_at` (ISO 8601 or null) as a time.
pub fn parse_expiry(s: Option<&str>) -> Option<OffsetDateTime> {
    let s = s?.trim();
    if s.is_empty() || s.starts_with("0001-01-01") {
        return None;
    }
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

pub fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// What to do about a failed call, by GitLab's status (`protocol.md` §1).
pub fn hint(err: &ApiError, url: &str) -> String {
    match err.status {
        None => format!("check that {url} is reachable from this host (proxy, DNS, TLS: tls-ca-file)"),
        Some(401) => "the access token is missing or invalid: set GITLAB_TOKEN (or --pat) to a token with the manage_runner scope".into(),
        Some(403) => "the token is wrong, expired or the runner was deleted in GitLab: check it (Settings > CI/CD > Runners), or register again".into(),
        Some(404) => "GitLab does not know this runner (manager) any more".into(),
        Some(410) => "this GitLab instance does not accept registration tokens: create the runner in GitLab (Settings > CI/CD > Runners > New runner) and register with its glrt- token (--token)".into(),
        Some(422) => "GitLab says the runner is orphaned: create a new runner in GitLab and register with its token".into(),
        Some(_) => "retry later; if it persists check GitLab's logs".into(),
    }
}

/// `<what> failed: <error>; <hint>` on one line.
pub fn failed(what: &str, err: &ApiError, url: &str) -> anyhow::Error {
    anyhow!("{what} failed: {err}; {}", hint(err, url))
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
