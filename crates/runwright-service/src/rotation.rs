//! Token rotation (reference `protocol.md` §1.6): a runner token reset at GitLab and the new one saved into
//! `config.toml`, for `runwright reset-token` and for the service at 75% of a token's lifetime (runner
//! commands/multi.go `nextRunnerToReset`, common/consts.go `TokenResetIntervalFactor`; the loop is
//! `sd::rotate_tokens`).

use crate::gitlab::{client, failed, now, parse_expiry};
use anyhow::{anyhow, bail};
use runwright_config::edit::ConfigDoc;
use runwright_config::{short_token, RunnerConfig};
use std::path::Path;
use time::OffsetDateTime;

/// Resets `runner`'s token at GitLab (with the runner token, or `pat`) and saves the new one into the entry
/// that still holds the old token; returns the new expiry. Used by `reset-token` and the service's rotation.
pub async fn rotate(
    path: &Path,
    runner: &RunnerConfig,
    pat: Option<&str>,
) -> anyhow::Result<Option<OffsetDateTime>> {
    let client = client(&runner.url, Some(runner))?;
    let what = format!(
        "resetting the token of runner {:?} ({})",
        runner.name,
        short_token(&runner.token)
    );
    let answer = match pat.filter(|p| !p.is_empty()) {
        Some(pat) => {
            if runner.id == 0 {
                bail!("{what} failed: the entry has no id in {}; --pat needs it (register again or add `id = …`)", path.display());
            }
            client.reset_runner_token_with_pat(runner.id, pat).await
        }
        None => client.reset_runner_token(&runner.token).await,
    }
    .map_err(|e| failed(&what, &e, &runner.url))?;
    if answer.token.is_empty() {
        bail!("{what} failed: GitLab's answer holds no token");
    }
    let expires = parse_expiry(answer.token_expires_at.as_deref());
    // The new token only exists in GitLab's answer: write it even if the rest of the file changed meanwhile.
    let mut doc = ConfigDoc::open(path, false)?;
    let index = doc.runner_index_by_token(&runner.token).ok_or_else(|| {
        anyhow!(
            "{what}: GitLab issued a new token ({}) but the entry is gone from {}; put it back with `token = …` by hand",
            short_token(&answer.token),
            path.display()
        )
    })?;
    doc.set_token(index, &answer.token, now(), expires)?;
    doc.save().map_err(|e| {
        anyhow!(
            "{what}: GitLab issued a new token ({}) but saving it failed: {e:#}",
            short_token(&answer.token)
        )
    })?;
    Ok(expires)
}

/// When the service should rotate `runner`'s token: at 75% of its lifetime (`None` when it never expires).
pub fn rotation_due(runner: &RunnerConfig) -> Option<OffsetDateTime> {
    let expires = runner.token_expires_at?;
    let obtained = runner.token_obtained_at.unwrap_or(expires);
    Some(obtained + (expires - obtained) * 0.75)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_at_three_quarters() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("t0");
        let r = RunnerConfig {
            token_obtained_at: Some(t0),
            token_expires_at: Some(t0 + time::Duration::days(100)),
            ..Default::default()
        };
        assert_eq!(rotation_due(&r), Some(t0 + time::Duration::days(75)));
        let never = RunnerConfig::default();
        assert_eq!(rotation_due(&never), None);
    }
}
