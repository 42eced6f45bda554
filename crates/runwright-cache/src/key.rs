//! The runner's side of cache keys (protocol.md §6.1): GitLab sends keys already suffixed
//! (`-<index>`, `-protected`/`-non_protected`), the runner expands variables, falls back to
//! `<job>/<ref>` for an empty key, sanitizes (or, with `FF_HASH_CACHE_KEYS`, hashes) them and
//! tries the primary key, then `fallback_keys`, then `CACHE_FALLBACK_KEY`
//! (runner `cache/cachekey/cachekey.go`, `shells/abstract.go` `newCacheConfig`).
//!
//! Variable expansion is the caller's job: everything here takes keys already expanded.

use sha2::{Digest, Sha256};

use crate::gopath;

/// A key that leaves nothing usable once sanitized: GitLab skips that cache with a warning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cache key {raw:?} is empty once sanitized, so this cache is skipped: give `cache:key` a value \
     with characters other than slashes, dots and spaces"
)]
pub struct KeyError {
    /// The key as it was given (after variable expansion).
    pub raw: String,
}

/// Sanitizes a cache key the way GitLab's runner does (`cachekey.Sanitize`): `%2f`/`%2F` become
/// `/`, `%2e`/`%2E` become `.`, `\` becomes `/`, the path is cleaned against a virtual root (so
/// `..` never escapes), and trailing whitespace is trimmed from the last segments, dropping the
/// ones left empty.
///
/// One deliberate difference: when trimming leaves a last segment of `.` or `..` (`"a/.. "`),
/// GitLab returns it as is (a key that points at its parent directory); we clean again, so such a
/// key resolves inside the root or is refused.
pub fn sanitize(raw: &str) -> Result<String, KeyError> {
    let decoded = raw
        .replace("%2f", "/")
        .replace("%2F", "/")
        .replace("%2e", ".")
        .replace("%2E", ".")
        .replace('\\', "/");
    let mut current = decoded;
    loop {
        let cleaned = gopath::clean(&format!("/{current}"));
        let mut parts: Vec<&str> = cleaned[1..].split('/').collect();
        while let Some(last) = parts.last_mut() {
            *last = last.trim_end_matches(char::is_whitespace);
            if !last.is_empty() {
                break;
            }
            parts.pop();
        }
        let key = parts.join("/");
        // Only a trimmed `.`/`..` last segment can still need cleaning; everything else is final.
        if parts
            .last()
            .is_some_and(|last| *last == "." || *last == "..")
        {
            current = key;
            continue;
        }
        if key.is_empty() {
            return Err(KeyError {
                raw: raw.to_owned(),
            });
        }
        return Ok(key);
    }
}

/// The storage key under `FF_HASH_CACHE_KEYS`: the lowercase hex SHA-256 of the human key.
pub fn hashed(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The key the runner uses when the job's `cache:key` expands to nothing: `<job name>/<git ref>`,
/// joined and cleaned as Go's `path.Join` does. May be empty (then the cache is skipped).
pub fn default_key(job_name: &str, git_ref: &str) -> String {
    let joined = gopath::join(&["/", job_name, git_ref]);
    joined.strip_prefix('/').unwrap_or(&joined).to_owned()
}

/// One usable cache key in its two forms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// What users see and what goes into `metadata.json` and `x-amz-meta-cachekey`: the sanitized
    /// key, or the raw key when keys are hashed (GitLab does not sanitize those).
    pub human: String,
    /// What names the local directory and the S3 object: the human key, or its SHA-256 hex when
    /// `FF_HASH_CACHE_KEYS` is on.
    pub storage: String,
}

impl CacheKey {
    /// Resolves one expanded key. The warning, if any, says the key was changed by sanitizing
    /// (GitLab prints it in the job log).
    pub fn resolve(raw: &str, hash_keys: bool) -> Result<(CacheKey, Option<String>), KeyError> {
        if hash_keys {
            if raw.is_empty() {
                return Err(KeyError { raw: String::new() });
            }
            let key = CacheKey {
                human: raw.to_owned(),
                storage: hashed(raw),
            };
            return Ok((key, None));
        }
        let human = sanitize(raw)?;
        let warning = (human != raw).then(|| format!("cache key {raw:?} sanitized to {human:?}"));
        let key = CacheKey {
            storage: human.clone(),
            human,
        };
        Ok((key, warning))
    }
}

/// The keys to try, in order, for restoring one cache entry, and the warnings to print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidates {
    /// Keys in GitLab's order; empty when the primary key is unusable (the entry is skipped).
    pub keys: Vec<CacheKey>,
    /// Job-log warnings: sanitized keys, skipped keys, a refused `CACHE_FALLBACK_KEY`.
    pub warnings: Vec<String>,
}

/// The reserved suffix of protected-branch caches; `CACHE_FALLBACK_KEY` may not point at them
/// (GitLab security release 14.10.1, "Disallow reserved CACHE_FALLBACK_KEY values").
const PROTECTED_SUFFIX: &str = "-protected";

/// The keys to try when restoring a cache, in GitLab's order: `primary` (pass [`default_key`]
/// when the job's key expands to nothing), each non-empty `fallback_keys` entry (already
/// expanded), then the `CACHE_FALLBACK_KEY` variable's value — unless it ends with `-protected`
/// (ignoring trailing dots and spaces), which is refused with a warning.
///
/// An unusable fallback is skipped with a warning; an unusable primary key skips the whole entry,
/// as GitLab's runner does (runner `shells/abstract.go` `extractCacheOrFallbackCachesWrapper`).
pub fn candidates(
    primary: &str,
    fallback_keys: &[String],
    cache_fallback_key_var: Option<&str>,
    hash_keys: bool,
) -> Candidates {
    let mut out = Candidates::default();
    match CacheKey::resolve(primary, hash_keys) {
        Ok((key, warning)) => {
            out.warnings.extend(warning);
            out.keys.push(key);
        }
        Err(e) => {
            out.warnings.push(format!(
                "Skipping cache extraction due to empty cache key: {e}"
            ));
            return out;
        }
    }
    let add = |raw: &str, out: &mut Candidates, refuse_protected: bool| {
        if raw.is_empty() {
            return;
        }
        match CacheKey::resolve(raw, hash_keys) {
            Ok((key, warning)) => {
                out.warnings.extend(warning);
                // Checked on the sanitized key so `main-protected/` or `main-protected ` cannot
                // slip through; trailing dots too, as GitLab's newest runner does.
                let trimmed = key.human.trim_end_matches(['.', ' ']);
                if refuse_protected && trimmed.ends_with(PROTECTED_SUFFIX) {
                    out.warnings.push(format!(
                        "CACHE_FALLBACK_KEY {raw:?} not allowed to end in {PROTECTED_SUFFIX:?}: \
                         it is ignored; protected caches can only be restored by protected refs"
                    ));
                    return;
                }
                out.keys.push(key);
            }
            Err(e) => out.warnings.push(format!(
                "Skipping cache extraction due to empty cache key: {e}"
            )),
        }
    };
    for raw in fallback_keys {
        add(raw, &mut out, false);
    }
    if let Some(raw) = cache_fallback_key_var {
        add(raw, &mut out, true);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitLab's own table (runner `cache/cachekey/cachekey_test.go`, `TestSanitize`); `None`
    /// means an error.
    const GITLAB_CASES: &[(&str, Option<&str>)] = &[
        ("fallback_key", Some("fallback_key")),
        ("some-job/some-ref", Some("some-job/some-ref")),
        (".../....", Some(".../....")),
        ("...", Some("...")),
        ("fallback_key/", Some("fallback_key")),
        ("fallback_key ", Some("fallback_key")),
        ("fallback_key\\", Some("fallback_key")),
        ("fallback_key/ \\", Some("fallback_key")),
        ("fallback_key/ / \\  \\", Some("fallback_key")),
        ("fallback_key/o", Some("fallback_key/o")),
        ("fallback_key / \\o", Some("fallback_key / /o")),
        ("\t foo bar \t\r", Some("\t foo bar")),
        (" foo / bar ", Some(" foo / bar")),
        ("foo\r", Some("foo")),
        ("foo\t", Some("foo")),
        ("foo \t \r ", Some("foo")),
        ("\\", None),
        ("\\.", None),
        ("/", None),
        (" ", None),
        (".", None),
        ("..", None),
        (" / ", None),
        ("//", None),
        ("//\\", None),
        ("../.", None),
        ("foo\\bar\\..\\..", None),
        ("foo/bar/../..", None),
        (" \t\r\n", None),
        ("something %2F something", Some("something / something")),
        ("something %2f something", Some("something / something")),
        ("some%2f../job/some/ref/.", Some("job/some/ref")),
        ("%2E", None),
        ("%2E%2E", None),
        ("%2E%2E%2E", Some("...")),
        ("%2e", None),
        ("%2e%2E", None),
        (".%2E", None),
        ("%2e.", None),
        ("%2E%2e%2E", Some("...")),
        ("%5C", Some("%5C")),
        ("%5c", Some("%5c")),
        ("foo/./bar", Some("foo/bar")),
        ("foo/blipp/../bar", Some("foo/bar")),
        ("/foo/bar", Some("foo/bar")),
        ("//foo/bar", Some("foo/bar")),
        ("./foo/bar", Some("foo/bar")),
        ("../foo/bar", Some("foo/bar")),
        (".../foo/bar", Some(".../foo/bar")),
        ("foo/bar/..", Some("foo")),
        ("foo/bar/../../../.././blerp", Some("blerp")),
        ("a/b/c/../../d", Some("a/d")),
        ("job\\name/git\\ref", Some("job/name/git/ref")),
        ("foo\\.\\bar", Some("foo/bar")),
        ("foo\\blipp\\..\\bar", Some("foo/bar")),
        ("\\foo\\bar", Some("foo/bar")),
        ("\\\\foo\\bar", Some("foo/bar")),
        (".\\foo\\bar", Some("foo/bar")),
        ("..\\foo\\bar", Some("foo/bar")),
        ("...\\foo\\bar", Some(".../foo/bar")),
        ("foo\\bar\\..", Some("foo")),
        ("foo\\bar\\..\\..\\..\\..\\.\\blerp", Some("blerp")),
        ("foo/ /bar", Some("foo/ /bar")),
        ("foo/ /", Some("foo")),
        ("foo/ / /", Some("foo")),
        ("", None),
    ];

    #[test]
    fn sanitize_matches_gitlab_table() {
        for (raw, want) in GITLAB_CASES {
            let got = sanitize(raw).ok();
            assert_eq!(got.as_deref(), *want, "sanitize({raw:?})");
        }
    }

    #[test]
    fn sanitize_invariants_and_idempotence() {
        // GitLab's `TestSanitizeInvariants` inputs plus the whole table.
        let extra = [
            "a",
            "a/b",
            "../a",
            "a/../b",
            "a/./b",
            "a\\b",
            "a\\..\\\\b",
            "/a/b/",
            " a ",
            "...",
            "%2e%2e/%2f",
            "a/b/c/../../d/e",
            // Trimming that would leave a `..` segment behind (GitLab keeps it; we do not).
            "a/.. ",
            "%2e%2e ",
            "a/b/. \t",
        ];
        for raw in extra
            .iter()
            .copied()
            .chain(GITLAB_CASES.iter().map(|c| c.0))
        {
            let Ok(key) = sanitize(raw) else { continue };
            assert!(!key.starts_with('/'), "{raw:?} -> {key:?}");
            assert!(!key.ends_with('/'), "{raw:?} -> {key:?}");
            assert!(!key.ends_with(' '), "{raw:?} -> {key:?}");
            assert!(!key.contains('\\'), "{raw:?} -> {key:?}");
            assert!(
                key.split('/')
                    .all(|s| s != "." && s != ".." && !s.is_empty()),
                "{raw:?} -> {key:?}"
            );
            assert_eq!(sanitize(&key).as_deref(), Ok(key.as_str()), "idempotent");
        }
        assert!(sanitize("a/.. ").is_err());
        assert!(sanitize("%2e%2e ").is_err());
        assert_eq!(sanitize("a/b/. \t").as_deref(), Ok("a/b"));
    }

    #[test]
    fn the_error_says_the_cache_is_skipped() {
        let err = sanitize(" / ").unwrap_err();
        assert!(err.to_string().contains("cache is skipped"), "{err}");
        assert_eq!(err.raw, " / ");
    }

    #[test]
    fn hashed_is_sha256_hex() {
        assert_eq!(
            hashed("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn default_key_is_job_slash_ref() {
        assert_eq!(default_key("build", "main"), "build/main");
        assert_eq!(default_key("build", "feature/x"), "build/feature/x");
        assert_eq!(default_key("", ""), "");
        assert_eq!(default_key("a/../b", "c"), "b/c");
    }

    #[test]
    fn candidates_in_gitlab_order() {
        let c = candidates(
            "key-1-non_protected",
            &["fb-1".to_owned(), String::new(), "fb%2f2".to_owned()],
            Some("global"),
            false,
        );
        let humans: Vec<&str> = c.keys.iter().map(|k| k.human.as_str()).collect();
        assert_eq!(humans, ["key-1-non_protected", "fb-1", "fb/2", "global"]);
        assert_eq!(c.warnings, [r#"cache key "fb%2f2" sanitized to "fb/2""#]);
    }

    #[test]
    fn protected_cache_fallback_key_is_refused() {
        for bad in [
            "main-protected",
            "main-protected/",
            "main-protected .",
            "x/y-protected",
        ] {
            let c = candidates("k", &[], Some(bad), false);
            assert_eq!(c.keys.len(), 1, "{bad:?} must be refused");
            let last = c.warnings.last().map(String::as_str).unwrap_or_default();
            assert!(
                last.contains("not allowed to end in \"-protected\""),
                "{last}"
            );
        }
        // Only CACHE_FALLBACK_KEY is checked, as in GitLab; `fallback_keys` come from the
        // project's own CI file, which GitLab suffixes itself.
        let c = candidates("k", &["main-protected".to_owned()], None, false);
        assert_eq!(c.keys.len(), 2);
        let c = candidates("k", &[], Some("main-non_protected"), false);
        assert_eq!(c.keys.len(), 2);
    }

    #[test]
    fn unusable_primary_skips_the_entry() {
        let c = candidates(" / ", &["fb".to_owned()], Some("global"), false);
        assert!(c.keys.is_empty());
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].starts_with("Skipping cache extraction"));
        // An unusable fallback is only skipped.
        let c = candidates("k", &["..".to_owned(), "fb".to_owned()], None, false);
        assert_eq!(c.keys.len(), 2);
        assert!(c.warnings[0].starts_with("Skipping cache extraction"));
    }

    #[test]
    fn hashed_keys_are_not_sanitized() {
        let c = candidates("a/../b ", &[], None, true);
        assert_eq!(c.keys[0].human, "a/../b ");
        assert_eq!(c.keys[0].storage, hashed("a/../b "));
        assert!(c.warnings.is_empty());
    }
}
