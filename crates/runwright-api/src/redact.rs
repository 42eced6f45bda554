//! Removing secrets from what we print.
//!
//! Tokens travel in headers and JSON bodies, never in URLs we build, but a configured URL may carry userinfo
//! (`https://user:pass@host`) and error texts from serde quote the offending value — which in a job payload may
//! be a masked variable. Everything that reaches an error, a `Debug` or a log line goes through here first
//! (same idea as runner helpers/url `CleanURL`).

use url::Url;

/// `url` without userinfo, query and fragment.
pub fn url(url: &Url) -> String {
    let mut clean = url.clone();
    // Both only fail for URLs that cannot have userinfo (`cannot-be-a-base`); nothing to remove then.
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.set_query(None);
    clean.set_fragment(None);
    clean.to_string()
}

/// Like [`url()`] for a string that may not even parse.
pub fn url_str(raw: &str) -> String {
    if let Ok(parsed) = Url::parse(raw) {
        return url(&parsed);
    }
    let mut s = raw.split(['?', '#']).next().unwrap_or_default().to_owned();
    if let Some(scheme_end) = s.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = s[rest_start..]
            .find('/')
            .map_or(s.len(), |i| rest_start + i);
        if let Some(at) = s[rest_start..authority_end].rfind('@') {
            s.replace_range(rest_start..rest_start + at + 1, "");
        }
    }
    s
}

/// A serde/serde_json error text with quoted values removed: `invalid type: string "hunter2", expected i64`
/// becomes `invalid type: string "…", expected i64`. Field names (`missing field `id``) are kept.
pub fn serde_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut chars = msg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push_str("\"…\"");
                // Skip to the closing quote, honouring backslash escapes (serde quotes with `{:?}`).
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '`' => {
                // serde puts both field names and values in backticks; keep field names only.
                let mut quoted = String::new();
                for c in chars.by_ref() {
                    if c == '`' {
                        break;
                    }
                    quoted.push(c);
                }
                let keeps_name = ["missing field ", "unknown field ", "duplicate field "]
                    .iter()
                    .any(|p| out.ends_with(p));
                if keeps_name {
                    out.push('`');
                    out.push_str(&quoted);
                    out.push('`');
                } else {
                    out.push_str("`…`");
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_loses_userinfo_query_and_fragment() {
        let u = Url::parse(
            "https://user:secret@gitlab.example.com/api/v4/jobs/1/trace?private_token=x#f",
        )
        .expect("valid");
        assert_eq!(url(&u), "https://gitlab.example.com/api/v4/jobs/1/trace");
        assert_eq!(url_str("https://a:b@host/x?token=1"), "https://host/x");
        assert_eq!(url_str("bogus://a:b@ho st/x?token=1"), "bogus://ho st/x");
        assert_eq!(url_str("no scheme?x"), "no scheme");
    }

    #[test]
    fn serde_values_are_hidden_but_field_names_kept() {
        let m =
            serde_message(r#"invalid type: string "hunter\"2", expected i64 at line 1 column 9"#);
        assert_eq!(
            m,
            r#"invalid type: string "…", expected i64 at line 1 column 9"#
        );
        assert_eq!(serde_message("missing field `id`"), "missing field `id`");
        assert_eq!(
            serde_message("unknown variant `s3cr3t`, expected `a`"),
            "unknown variant `…`, expected `…`"
        );
    }
}
