//! YAML helpers shared by every stage: parsing with `yaml_serde`, YAML paths (`build.script[2]`), a line
//! locator for error messages, and YAML 1.1 boolean words.
//!
//! `yaml_serde` resolves scalars with the YAML 1.2 core schema, GitLab (Ruby's Psych) with YAML 1.1: `yes`,
//! `no`, `on`, `off` are booleans there and `010` is octal 8. Untyped values cannot tell `yes` from `"yes"`, so
//! we keep 1.2 for values (a variable `FOO: yes` is the string `yes`; `V: 010` is `10`) and accept the YAML 1.1
//! boolean words wherever GitLab expects a boolean (`allow_failure: yes`, `interruptible: on`), which is where
//! Psych's reading changes the outcome. The corpus (`tests/corpus/yaml11.yml`) pins this choice.
use std::fmt;
use std::path::Path;

use yaml_serde::{Mapping, Value};

use crate::error::{Error, Location};

/// One step of a YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A YAML path such as `build.script[2]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct YPath(pub(crate) Vec<Seg>);

impl YPath {
    pub(crate) fn root() -> Self {
        YPath(Vec::new())
    }
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_string()));
        p
    }
    pub(crate) fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for YPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if n == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// Parses one YAML file into a mapping and expands `<<` merge keys.
pub(crate) fn parse_file(text: &str, file: &Path) -> Result<Mapping, Error> {
    let mut value: Value = yaml_serde::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        Error::Syntax {
            file: file.to_path_buf(),
            line,
            column,
            message: e.to_string(),
        }
    })?;
    value.apply_merge().map_err(|e| Error::Syntax {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("invalid `<<` merge: {e}"),
    })?;
    match value {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        _ => Err(Error::config(
            Location {
                file: Some(file.to_path_buf()),
                path: String::new(),
                line: Some(1),
            },
            "Invalid configuration format",
        )),
    }
}

/// The text of one source file, to find lines of YAML paths for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) file: std::path::PathBuf,
    pub(crate) text: String,
}

impl Source {
    pub(crate) fn locate(&self, path: &YPath) -> Location {
        Location {
            file: Some(self.file.clone()),
            path: path.to_string(),
            line: find_line(&self.text, &path.0),
        }
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#') || t == "---"
}

fn key_matches(rest: &str, key: &str) -> bool {
    for candidate in [key.to_string(), format!("\"{key}\""), format!("'{key}'")] {
        if let Some(after) = rest.strip_prefix(&candidate) {
            let after = after.trim_start_matches(' ');
            if after.starts_with(':') {
                return true;
            }
        }
    }
    false
}

/// Best-effort line of a YAML path in block-style YAML: follows indentation. Returns the deepest line found
/// (the job's line when a flow sequence hides the index).
pub(crate) fn find_line(text: &str, segs: &[Seg]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize;
    let mut end = lines.len();
    // Column where the children of the current node start; None at the root: top-level keys at indent 0.
    let mut child_col: Option<usize> = Some(0);
    // A key that may sit on a `- ` line itself (first key of a mapping in a sequence).
    let mut inline: Option<(usize, usize)> = None;
    let mut best = None;
    for seg in segs {
        let mut found = None;
        match seg {
            Seg::Key(k) => {
                if let Some((line, col)) = inline.take() {
                    let rest = lines
                        .get(line)
                        .map(|l| &l[col.min(l.len())..])
                        .unwrap_or("");
                    if key_matches(rest, k) {
                        found = Some((line, col));
                    } else {
                        child_col = Some(col);
                    }
                }
                if found.is_none() {
                    for (i, line) in lines.iter().enumerate().take(end).skip(start) {
                        if is_blank(line) {
                            continue;
                        }
                        let ind = indent_of(line);
                        let col = *child_col.get_or_insert(ind);
                        if ind < col {
                            break;
                        }
                        if ind == col && key_matches(&line[ind..], k) {
                            found = Some((i, ind));
                            break;
                        }
                    }
                }
            }
            Seg::Index(n) => {
                inline = None;
                let mut count = 0;
                for (i, line) in lines.iter().enumerate().take(end).skip(start) {
                    if is_blank(line) {
                        continue;
                    }
                    let ind = indent_of(line);
                    let col = *child_col.get_or_insert(ind);
                    if ind < col {
                        break;
                    }
                    if ind == col && line[ind..].starts_with('-') {
                        if count == *n {
                            found = Some((i, ind));
                            break;
                        }
                        count += 1;
                    }
                }
                if let Some((line, col)) = found {
                    let after = &lines[line][col + 1..];
                    let pad = after.len() - after.trim_start_matches(' ').len();
                    inline = Some((line, col + 1 + pad));
                }
            }
        }
        let Some((line, col)) = found else {
            return best;
        };
        best = Some(line + 1);
        start = line + 1;
        end = lines
            .iter()
            .enumerate()
            .skip(start)
            .find(|(_, l)| {
                !is_blank(l)
                    && indent_of(l) <= col
                    && !(indent_of(l) == col
                        && l.trim_start().starts_with('-')
                        && matches!(seg, Seg::Key(_)))
            })
            .map(|(i, _)| i)
            .unwrap_or(lines.len());
        child_col = None;
    }
    best
}

/// The YAML 1.1 booleans (Psych's reading), for keywords that take a boolean.
pub(crate) fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.as_str() {
            "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => Some(true),
            "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A scalar as the string GitLab would see (Ruby's `to_s` of the parsed value).
pub(crate) fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A short description of a value's type for messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Sequence(_) => "array",
        Value::Mapping(_) => "hash",
        Value::Tagged(_) => "tagged value",
    }
}

/// Converts a YAML value to JSON (for `reports:` and other kept-as-is data).
pub(crate) fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else if let Some(u) = n.as_u64() {
                u.into()
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null)
            }
        }
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Sequence(s) => serde_json::Value::Array(s.iter().map(to_json).collect()),
        Value::Mapping(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| (scalar_string(k).unwrap_or_default(), to_json(v)))
                .collect(),
        ),
        Value::Tagged(t) => to_json(&t.value),
    }
}

/// Map key as a string (`null` keys and complex keys have none).
pub(crate) fn key_str(key: &Value) -> Option<&str> {
    key.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[Seg]) -> Vec<Seg> {
        s.to_vec()
    }

    #[test]
    fn finds_lines() {
        let text = "stages: [a]\n\n# c\nbuild:\n  stage: a\n  script:\n    - one\n    - two\n    - three\ntest:\n  rules:\n    - if: $X\n      when: manual\n";
        assert_eq!(find_line(text, &p(&[Seg::Key("build".into())])), Some(4));
        assert_eq!(
            find_line(
                text,
                &p(&[
                    Seg::Key("build".into()),
                    Seg::Key("script".into()),
                    Seg::Index(2)
                ])
            ),
            Some(9)
        );
        assert_eq!(
            find_line(
                text,
                &p(&[
                    Seg::Key("test".into()),
                    Seg::Key("rules".into()),
                    Seg::Index(0),
                    Seg::Key("when".into())
                ])
            ),
            Some(13)
        );
        assert_eq!(
            find_line(
                text,
                &p(&[
                    Seg::Key("test".into()),
                    Seg::Key("rules".into()),
                    Seg::Index(0),
                    Seg::Key("if".into())
                ])
            ),
            Some(12)
        );
        assert_eq!(
            find_line(text, &p(&[Seg::Key("stages".into()), Seg::Index(0)])),
            Some(1)
        );
    }

    #[test]
    fn paths_display() {
        let p = YPath::root().key("build").key("script").index(2);
        assert_eq!(p.to_string(), "build.script[2]");
    }
}
