//! The runner "short token": the few characters of a runner token that are safe to show.
//!
//! GitLab's runner uses it wherever a runner must be named without leaking its secret: log
//! fields, `CI_RUNNER_SHORT_TOKEN`, builds directories (`builds/<short token>/<n>/…`), Docker
//! volume and container names, cache object paths. Changing the rule moves every one of those,
//! so it follows GitLab's current rule exactly (runner helpers/shorten_token.go, since 18.2):
//! strip one known prefix — `glrt-` optionally followed by a partition prefix `t1_`/`t2_`/`t3_`,
//! a bare `t1_`/`t2_`/`t3_`, `glrtr-`, `glcbt-`, or `GR` followed by 7 hex digits (the legacy
//! registration-token rotation prefix) — then keep the first 9 characters.
//!
//! Older runners kept 8 characters of unprefixed tokens (and 17 for `GR…` tokens), so their
//! builds directories differ (see protocol.md §0).

/// Number of characters kept after the prefix (runner helpers/shorten_token.go).
const SHORT_TOKEN_LEN: usize = 9;

/// Shortens a runner (or job) token for display, per GitLab's rule described in the module doc.
///
/// ```
/// use runwright_config::short_token;
/// assert_eq!(short_token("glrt-t1_AbCdEfGhIjKlMnOp"), "AbCdEfGhI");
/// assert_eq!(short_token("glrt-AbCdEfGhIjKlMnOp"), "AbCdEfGhI");
/// assert_eq!(short_token("GR1348941AbCdEfGhIjKl"), "AbCdEfGhI");
/// assert_eq!(short_token("xyz123xxxxxxxxxxxxxxxxxxxxxx"), "xyz123xxx");
/// ```
pub fn short_token(token: &str) -> String {
    strip_prefix(token).chars().take(SHORT_TOKEN_LEN).collect()
}

/// Removes one known prefix, if something is left after it.
fn strip_prefix(token: &str) -> &str {
    let rest = if let Some(rest) = token.strip_prefix("glrt-") {
        strip_partition(rest).unwrap_or(rest)
    } else if let Some(rest) = strip_partition(token) {
        rest
    } else if let Some(rest) = token
        .strip_prefix("glrtr-")
        .or_else(|| token.strip_prefix("glcbt-"))
    {
        rest
    } else if let Some(rest) = strip_registration_prefix(token) {
        rest
    } else {
        token
    };
    if rest.is_empty() {
        token
    } else {
        rest
    }
}

/// `t1_`, `t2_` or `t3_`: the partition prefix of runner tokens created on GitLab.com's cells.
fn strip_partition(token: &str) -> Option<&str> {
    ["t1_", "t2_", "t3_"]
        .iter()
        .find_map(|prefix| token.strip_prefix(prefix))
}

/// `GR` + 7 hex digits: legacy registration tokens carry their rotation date in hex
/// (e.g. `GR1348941`).
fn strip_registration_prefix(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("GR")?;
    let hex = rest.get(..7)?;
    if hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        rest.get(7..)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::short_token;

    #[test]
    fn created_runner_tokens() {
        assert_eq!(short_token("glrt-Gxxxxxxxxxxxxxxxxxxxxxx"), "Gxxxxxxxx");
        assert_eq!(short_token("glrt-t1_abcdefghijklmnop"), "abcdefghi");
        assert_eq!(short_token("glrt-t2_abcdefghijklmnop"), "abcdefghi");
        assert_eq!(short_token("glrt-t3_abcdefghijklmnop"), "abcdefghi");
        // t4_ is not a partition prefix: only glrt- is stripped.
        assert_eq!(short_token("glrt-t4_abcdefghijklmnop"), "t4_abcdef");
    }

    #[test]
    fn bare_partition_prefix() {
        assert_eq!(short_token("t1_abcdefghijklmnop"), "abcdefghi");
    }

    #[test]
    fn registered_runner_and_job_tokens() {
        assert_eq!(short_token("glrtr-abcdefghijklmnop"), "abcdefghi");
        assert_eq!(short_token("glcbt-abcdefghijklmnop"), "abcdefghi");
    }

    #[test]
    fn legacy_registration_tokens() {
        assert_eq!(short_token("GR1348941abcdefghijkl"), "abcdefghi");
        assert_eq!(short_token("GR1348941_iAgdMy7a3NhZaa5oNoH"), "_iAgdMy7a");
        // Not 7 hex digits after GR: no prefix.
        assert_eq!(short_token("GRxyz4567abcdefghijkl"), "GRxyz4567");
    }

    #[test]
    fn unprefixed_tokens() {
        assert_eq!(short_token("rVavKoxxxxxxxxxxxxxxxxxxxxxx"), "rVavKoxxx");
        assert_eq!(short_token("AsX-3Txxxxxxxxxxxxxxxxxxxxxx"), "AsX-3Txxx");
    }

    #[test]
    fn short_inputs() {
        assert_eq!(short_token(""), "");
        assert_eq!(short_token("abc"), "abc");
        assert_eq!(short_token("glrt-ab"), "ab");
        // Nothing after the prefix: keep the prefix rather than return nothing.
        assert_eq!(short_token("glrt-"), "glrt-");
    }

    #[test]
    fn non_ascii_is_cut_on_characters() {
        assert_eq!(short_token("ääääääääääää"), "äääääääää");
    }
}
