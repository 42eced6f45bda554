//! Calls to GitLab's runner API outside a job — the operating verbs' and the service's token rotation: a client
//! for an entry, what to do about a failed call (by GitLab's status, `protocol.md` §1), and GitLab's token times.

use anyhow::anyhow;
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
