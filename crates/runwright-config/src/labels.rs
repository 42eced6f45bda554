//! Runner labels (`labels` globally and per `[[runners]]` entry): the rules GitLab's runner checks at load
//! (runner common/labels.go, kept in sync with GitLab's `ci_runner_labels.json` schema) and the merge it sends
//! as `info.labels` (runner common/config.go `ComputeLabels`).

use std::collections::BTreeMap;

/// At most this many labels after the merge (runner common/labels.go `maxAllowedNumberOfLabels`).
pub const MAX_LABELS: usize = 32;

/// The first label refused and why, worded for the person editing `config.toml`.
pub(crate) fn check_patterns(labels: &BTreeMap<String, String>) -> Result<(), (String, String)> {
    for (key, value) in labels {
        let why = |msg: String| (key.clone(), msg);
        if !valid_key(key) {
            return Err(why(format!(
                "invalid label key {key:?}: a key is 3 to 65 characters of letters, digits, '.', '_' and '-', \
                 not starting with '.' or '-' (GitLab's runner refuses the file otherwise)"
            )));
        }
        if !valid_value(value) {
            return Err(why(format!(
                "invalid value {value:?} of label {key:?}: a value is 1 to 256 characters of letters, digits, \
                 '.', '_' and '-' (GitLab's runner refuses the file otherwise)"
            )));
        }
    }
    Ok(())
}

/// The global labels overlaid with an entry's own (runner common/config.go `ComputeLabels`).
pub(crate) fn compute(
    global: &BTreeMap<String, String>,
    own: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = global.clone();
    out.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// The merged labels' count (runner common/labels.go `validateCount`).
pub(crate) fn check_count(computed: &BTreeMap<String, String>) -> Result<(), String> {
    if computed.len() > MAX_LABELS {
        return Err(format!(
            "{} labels with the global ones: at most {MAX_LABELS} are allowed (GitLab's runner refuses the \
             entry otherwise)",
            computed.len()
        ));
    }
    Ok(())
}

/// `^[a-zA-Z0-9_][a-zA-Z0-9._-]{2,64}$` (runner common/labels.go `labelKeyAllowedPattern`).
fn valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    let Some((first, rest)) = bytes.split_first() else {
        return false;
    };
    (first.is_ascii_alphanumeric() || *first == b'_')
        && (2..=64).contains(&rest.len())
        && rest.iter().all(|b| label_char(*b))
}

/// `^[a-zA-Z0-9._-]{1,256}$` (runner common/labels.go `labelValueAllowedPattern`).
fn valid_value(value: &str) -> bool {
    (1..=256).contains(&value.len()) && value.bytes().all(label_char)
}

fn label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn keys_and_values_follow_gitlabs_patterns() {
        for key in ["env", "_ab", "team.name", "a-b_c.d", &"k".repeat(65)] {
            assert!(valid_key(key), "{key:?} should be valid");
        }
        for key in ["", "ab", ".ab", "-ab", "a b", "kéy", "a/b", &"k".repeat(66)] {
            assert!(!valid_key(key), "{key:?} should be invalid");
        }
        for value in ["x", "1.2.3", "prod_eu-1", &"v".repeat(256)] {
            assert!(valid_value(value), "{value:?} should be valid");
        }
        for value in ["", "a b", "a:b", &"v".repeat(257)] {
            assert!(!valid_value(value), "{value:?} should be invalid");
        }
    }

    #[test]
    fn the_entry_wins_over_the_global_labels() {
        let computed = compute(
            &map(&[("env", "prod"), ("team", "infra")]),
            &map(&[("env", "staging"), ("gpu", "a100")]),
        );
        assert_eq!(
            computed,
            map(&[("env", "staging"), ("gpu", "a100"), ("team", "infra")])
        );
    }

    #[test]
    fn at_most_32_labels_after_the_merge() {
        let many: BTreeMap<String, String> = (0..33)
            .map(|i| (format!("key{i}"), "v".to_owned()))
            .collect();
        assert!(check_count(&many).is_err());
        let ok: BTreeMap<String, String> = many.into_iter().take(32).collect();
        assert!(check_count(&ok).is_ok());
    }

    #[test]
    fn a_bad_label_is_named() {
        let (key, err) = check_patterns(&map(&[("ok-key", "fine"), ("no", "x")])).unwrap_err();
        assert_eq!(key, "no");
        assert!(err.contains("\"no\""), "{err}");
        let (key, err) = check_patterns(&map(&[("good", "bad value")])).unwrap_err();
        assert_eq!(key, "good");
        assert!(err.contains("\"bad value\""), "{err}");
    }
}
