//! The job's variable list as GitLab's runner builds it (reference `protocol.md` §7.3), and `$VAR` expansion.
//!
//! Order matters: the list is searched from the end, so a later definition of a key wins (runner
//! common/spec/variables.go `Get` scans backwards). Raw variables are never expanded; file variables expand to
//! the path of the file that holds their value, and their own contents are expanded like any other value
//! (`ExpandWith`: `if !variable.Raw`).

use runwright_api::types::JobVariable;
use std::collections::HashMap;

/// An ordered list of job variables; the last definition of a key wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Variables(Vec<JobVariable>);

impl Variables {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn push(&mut self, v: JobVariable) {
        self.0.push(v);
    }

    /// A public, non-masked runner variable.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.0.push(JobVariable {
            key: key.to_string(),
            value: value.into(),
            public: true,
            ..Default::default()
        });
    }

    pub fn extend(&mut self, vars: impl IntoIterator<Item = JobVariable>) {
        self.0.extend(vars);
    }

    pub fn get(&self, key: &str) -> Option<&JobVariable> {
        self.0.iter().rev().find(|v| v.key == key)
    }

    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(key).map(|v| v.value.as_str())
    }

    /// GitLab's boolean parsing of a variable (`strconv.ParseBool`): 1, t, T, TRUE, true, True.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.value(key).and_then(parse_go_bool)
    }

    pub fn iter(&self) -> impl Iterator<Item = &JobVariable> {
        self.0.iter()
    }

    /// The effective variables: one entry per key (its last definition), in the order of first appearance.
    pub fn deduplicated(&self) -> Vec<JobVariable> {
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, v) in self.0.iter().enumerate() {
            last.insert(v.key.as_str(), i);
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for v in &self.0 {
            if seen.insert(v.key.as_str()) {
                out.push(self.0[last[v.key.as_str()]].clone());
            }
        }
        out
    }

    /// Values that must never reach the trace.
    pub fn masked_values(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|v| v.masked && !v.value.is_empty())
            .map(|v| v.value.clone())
            .collect()
    }

    /// Expands every non-raw value (a file variable's contents too) against the list itself, as the runner
    /// does once after building it (common/spec/variables.go `ExpandWith`). `file_path` maps a file
    /// variable's key to the path its value will be written to.
    pub fn expanded(&self, file_path: &dyn Fn(&str) -> String) -> Variables {
        let lookup = |key: &str| -> Option<String> {
            let v = self.get(key)?;
            if v.file {
                Some(file_path(&v.key))
            } else {
                Some(v.value.clone())
            }
        };
        let out = self
            .0
            .iter()
            .map(|v| {
                let mut v = v.clone();
                if !v.raw {
                    v.value = expand(&v.value, &lookup);
                }
                v
            })
            .collect();
        Variables(out)
    }

    /// Expands `text` against this list (file variables expand to their path).
    pub fn expand_str(&self, text: &str, file_path: &dyn Fn(&str) -> String) -> String {
        expand(text, &|key| {
            let v = self.get(key)?;
            Some(if v.file {
                file_path(&v.key)
            } else {
                v.value.clone()
            })
        })
    }
}

pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Go's `os.Expand` as the runner uses it: `$NAME`, `${NAME}`, `$$` → `$`; unknown names expand to nothing;
/// a `$` followed by anything else is dropped as Go does, except at the end of the text where it stays.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut chars = after.chars();
        match chars.next() {
            None => {
                out.push('$');
                rest = "";
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('{') => match after.find('}') {
                Some(end) => {
                    let name = &after[1..end];
                    if let Some(v) = lookup(name) {
                        out.push_str(&v);
                    }
                    rest = &after[end + 1..];
                }
                None => {
                    // Go: bad syntax, the `${` is eaten and the rest kept.
                    rest = &after[1..];
                }
            },
            Some(c) if is_name_char(c) => {
                let end = after
                    .find(|c: char| !is_name_char(c))
                    .unwrap_or(after.len());
                let name = &after[..end];
                if let Some(v) = lookup(name) {
                    out.push_str(&v);
                }
                rest = &after[end..];
            }
            Some(c) if "*#@!?-".contains(c) || c.is_ascii_digit() => {
                // Special shell parameters are single-character names in Go's os.Expand.
                if let Some(v) = lookup(&after[..c.len_utf8()]) {
                    out.push_str(&v);
                }
                rest = &after[c.len_utf8()..];
            }
            Some(_) => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Variables {
        let mut v = Variables::new();
        for (k, val) in list {
            v.set(k, *val);
        }
        v
    }

    #[test]
    fn last_duplicate_wins() {
        let v = vars(&[("A", "1"), ("B", "2"), ("A", "3")]);
        assert_eq!(v.value("A"), Some("3"));
        let d = v.deduplicated();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].key.as_str(), d[0].value.as_str()), ("A", "3"));
    }

    #[test]
    fn expands_dollar_forms() {
        let v = vars(&[("A", "x"), ("LONG_NAME", "y")]);
        let e = |s: &str| v.expand_str(s, &|k| format!("/tmp/{k}"));
        assert_eq!(e("$A-${LONG_NAME}"), "x-y");
        assert_eq!(e("$$A"), "$A");
        assert_eq!(e("$MISSING."), ".");
        assert_eq!(e("cost: 5$"), "cost: 5$");
        assert_eq!(e("a $ b"), "a $ b");
    }

    #[test]
    fn raw_values_stay_file_vars_expand_to_their_path_and_their_contents_expand() {
        let mut v = vars(&[("BASE", "/b")]);
        v.push(JobVariable {
            key: "RAW".into(),
            value: "$BASE/raw".into(),
            raw: true,
            ..Default::default()
        });
        v.push(JobVariable {
            key: "CERT".into(),
            value: "secret $BASE in $CERT".into(),
            file: true,
            ..Default::default()
        });
        v.push(JobVariable {
            key: "RAW_FILE".into(),
            value: "keep $BASE".into(),
            file: true,
            raw: true,
            ..Default::default()
        });
        v.set("USE", "$BASE/x:$CERT");
        let e = v.expanded(&|k| format!("/tmp/job.tmp/{k}"));
        assert_eq!(e.value("RAW"), Some("$BASE/raw"));
        assert_eq!(
            e.value("CERT"),
            Some("secret /b in /tmp/job.tmp/CERT"),
            "a file variable's contents expand unless raw"
        );
        assert_eq!(e.value("RAW_FILE"), Some("keep $BASE"));
        assert_eq!(e.value("USE"), Some("/b/x:/tmp/job.tmp/CERT"));
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("no"), None);
    }
}

#[cfg(test)]
mod props {
    //! Go's `os.Expand` semantics on random texts: references, escapes and literal text in any order.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

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
            let (text, want) = render(&pieces, &vals, false);
            prop_assert_eq!(expand(&text, &|k| vals.get(k).cloned()), want);
        }

        #[test]
        fn doubled_dollars_give_the_text_back(text in "\\PC{0,24}", vals in values()) {
            let escaped = text.replace('$', "$$");
            prop_assert_eq!(expand(&escaped, &|k| vals.get(k).cloned()), text);
        }
    }
}
