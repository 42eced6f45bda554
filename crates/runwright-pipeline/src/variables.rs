//! CI/CD variables: the YAML forms (`KEY: value`, `KEY: {value:, description:, expand:, options:}`), where a
//! value comes from (GitLab's precedence, highest first: pipeline variables, job `rules:variables`,
//! `parallel:matrix`, job `variables:`, global `variables:`, predefined), and `$VAR` / `${VAR}` expansion.
use std::collections::BTreeMap;

use serde::Serialize;
use yaml_serde::Value;

use crate::error::{Error, Result};
use crate::yaml::{key_str, scalar_string, Source, YPath};

/// Where a variable's value comes from, lowest precedence first (GitLab's order, reversed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VariableSource {
    /// Predefined (`CI_*`), from the context.
    Predefined,
    /// Job-scoped predefined variables (`CI_JOB_NAME`, `CI_NODE_INDEX`, …).
    Job,
    /// Top-level `variables:` (and `workflow:rules:variables`).
    Global,
    /// The job's `variables:`.
    JobYaml,
    /// `parallel:matrix` values.
    Matrix,
    /// The matching rule's `variables:`.
    Rules,
    /// Pipeline variables (`--variable`, trigger, schedule, project settings).
    Pipeline,
}

/// One variable with its attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VariableValue {
    /// The value, unexpanded.
    pub value: String,
    /// Whether `$VAR` references in the value are expanded (`expand: false` keeps them raw).
    pub expand: bool,
    /// `description:` of a global variable (prefilled in "Run pipeline").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where it comes from.
    pub source: VariableSource,
}

/// Parses a `variables:` mapping. `global` allows `description:`/`options:`.
pub(crate) fn parse_variables(
    value: &Value,
    path: &YPath,
    src: &Source,
    source: VariableSource,
    global: bool,
) -> Result<BTreeMap<String, VariableValue>> {
    let bad = || {
        Error::config(
            src.locate(path),
            format!(
                "{} config should be a hash of key value pairs, value can be a hash",
                gitlab_path(path)
            ),
        )
    };
    let mut out = BTreeMap::new();
    let map = match value {
        Value::Null => return Ok(out),
        Value::Mapping(m) => m,
        _ => return Err(bad()),
    };
    for (k, v) in map {
        let key = match k {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(bad()),
        };
        let vpath = path.key(&key);
        let entry = match v {
            Value::String(_) | Value::Number(_) => VariableValue {
                value: scalar_string(v).unwrap_or_default(),
                expand: true,
                description: None,
                source,
            },
            Value::Null => VariableValue {
                value: String::new(),
                expand: true,
                description: None,
                source,
            },
            Value::Mapping(m) => {
                let mut value = String::new();
                let mut expand = true;
                let mut description = None;
                for (mk, mv) in m {
                    match key_str(mk) {
                        Some("value") => value = scalar_string(mv).ok_or_else(bad)?,
                        Some("expand") => {
                            expand = crate::yaml::as_bool(mv).ok_or_else(|| {
                                Error::config(
                                    src.locate(&vpath.key("expand")),
                                    "expand should be a boolean value",
                                )
                            })?
                        }
                        Some("description") if global => description = scalar_string(mv),
                        Some("options") if global => {}
                        Some(other) => {
                            return Err(Error::config(
                                src.locate(&vpath),
                                format!(
                                    "{} config uses invalid data keys: {other}",
                                    gitlab_path(&vpath)
                                ),
                            ))
                        }
                        None => return Err(bad()),
                    }
                }
                VariableValue {
                    value,
                    expand,
                    description,
                    source,
                }
            }
            _ => return Err(bad()),
        };
        out.insert(key, entry);
    }
    Ok(out)
}

/// `build.variables` → `jobs:build:variables`, as GitLab names config entries in messages.
pub(crate) fn gitlab_path(path: &YPath) -> String {
    let s = path.to_string().replace('.', ":");
    if path.0.len() > 1
        || path.0.first().is_some_and(
            |s| matches!(s, crate::yaml::Seg::Key(k) if !crate::job::is_global_keyword(k)),
        )
    {
        format!("jobs:{s}")
    } else {
        s
    }
}

/// Expands `$VAR`, `${VAR}` (and `$$` → `$`) in `text` from `lookup`; unknown variables become empty, as in
/// the runner.
pub fn expand_variables(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    expand(text, lookup, false)
}

/// Like [`expand_variables`], but an undefined variable stays as written (`$NAME`, `${NAME}`), as GitLab's
/// `ExpandVariables.expand_existing` does for `rules:changes`/`rules:exists` paths.
pub fn expand_existing_variables(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    expand(text, lookup, true)
}

fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>, keep_unknown: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            if bytes.get(i + 1) == Some(&b'$') {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'{') {
                if let Some(end) = text[i + 2..].find('}') {
                    let name = &text[i + 2..i + 2 + end];
                    if !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None if keep_unknown => out.push_str(&text[i..i + 3 + end]),
                            None => {}
                        }
                        i += 3 + end;
                        continue;
                    }
                }
            }
            let len = text[i + 1..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            if len > 0 {
                match lookup(&text[i + 1..i + 1 + len]) {
                    Some(v) => out.push_str(&v),
                    None if keep_unknown => out.push_str(&text[i..i + 1 + len]),
                    None => {}
                }
                i += 1 + len;
                continue;
            }
        }
        let ch = text[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Expands every variable of `vars` against the others (one level at a time, as GitLab's
/// `sort_and_expand_all` does for references between variables; cycles end after a bounded number of rounds).
pub(crate) fn expand_all(vars: &BTreeMap<String, VariableValue>) -> BTreeMap<String, String> {
    let mut cur: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    for _ in 0..8 {
        let mut changed = false;
        let next: BTreeMap<String, String> = cur
            .iter()
            .map(|(k, v)| {
                let expand = vars.get(k).is_none_or(|x| x.expand);
                let nv = if expand && v.contains('$') {
                    expand_variables(v, &|n| if n == k { None } else { cur.get(n).cloned() })
                } else {
                    v.clone()
                };
                if &nv != v {
                    changed = true;
                }
                (k.clone(), nv)
            })
            .collect();
        cur = next;
        if !changed {
            break;
        }
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands() {
        let look = |n: &str| match n {
            "A" => Some("1".to_string()),
            "B_C" => Some("x".to_string()),
            _ => None,
        };
        assert_eq!(
            expand_variables("$A-${B_C}-$NOPE-$$A-$", &look),
            "1-x--$A-$"
        );
        assert_eq!(expand_variables("é$A", &look), "é1");
        assert_eq!(
            expand_existing_variables("$A/$NOPE/${NOPE}/${B_C}", &look),
            "1/$NOPE/${NOPE}/x"
        );
    }
}

#[cfg(test)]
mod props {
    //! GitLab's `ExpandVariables` semantics on random texts: references, escapes and literal text in any order,
    //! for both the expanding (unknown → empty) and the `expand_existing` (unknown stays) forms.
    use super::*;
    use proptest::prelude::*;

    /// A piece of text whose expansion is known in advance.
    #[derive(Debug, Clone)]
    enum Piece {
        /// Text without `$`.
        Lit(String),
        /// `$$`, an escaped dollar.
        Dollar,
        /// A reference, written `$NAME` or `${NAME}`.
        Var { name: String, braced: bool },
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            "[^$]{1,6}".prop_map(Piece::Lit),
            Just(Piece::Dollar),
            ("[A-Za-z_][A-Za-z0-9_]{0,6}", any::<bool>())
                .prop_map(|(name, braced)| Piece::Var { name, braced }),
        ]
    }

    /// Known names with values that may hold `$` themselves (a value is inserted as is, never expanded again).
    fn values() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,6}", "[a-z$ {}]{0,6}", 0..6)
    }

    fn is_name_byte(c: Option<char>) -> bool {
        c.is_some_and(|c| c == '_' || c.is_ascii_alphanumeric())
    }

    /// The text and its expected expansion (`keep_unknown`: unknown references stay as written).
    fn render(
        pieces: &[Piece],
        vals: &BTreeMap<String, String>,
        keep_unknown: bool,
    ) -> (String, String) {
        let (mut text, mut want) = (String::new(), String::new());
        for (i, p) in pieces.iter().enumerate() {
            match p {
                Piece::Lit(s) => {
                    text.push_str(s);
                    want.push_str(s);
                }
                Piece::Dollar => {
                    text.push_str("$$");
                    want.push('$');
                }
                Piece::Var { name, braced } => {
                    // `$A` followed by a name character would read a longer name: braces then.
                    let next = match pieces.get(i + 1) {
                        Some(Piece::Lit(s)) => s.chars().next(),
                        _ => None,
                    };
                    let written = if *braced || is_name_byte(next) {
                        format!("${{{name}}}")
                    } else {
                        format!("${name}")
                    };
                    text.push_str(&written);
                    match vals.get(name) {
                        Some(v) => want.push_str(v),
                        None if keep_unknown => want.push_str(&written),
                        None => {}
                    }
                }
            }
        }
        (text, want)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn expands_references_escapes_and_text(pieces in prop::collection::vec(piece(), 0..16), vals in values()) {
            let look = |k: &str| vals.get(k).cloned();
            let (text, want) = render(&pieces, &vals, false);
            prop_assert_eq!(expand_variables(&text, &look), want);
            let (text, want) = render(&pieces, &vals, true);
            prop_assert_eq!(expand_existing_variables(&text, &look), want);
        }

        #[test]
        fn doubled_dollars_give_the_text_back(text in "\\PC{0,24}", vals in values()) {
            let escaped = text.replace('$', "$$");
            let look = |k: &str| vals.get(k).cloned();
            prop_assert_eq!(expand_variables(&escaped, &look), text.clone());
            prop_assert_eq!(expand_existing_variables(&escaped, &look), text);
        }
    }
}
