//! What leaves the crate as data rather than as a plan: the merged configuration `runwright lint` prints
//! (GitLab's "Full configuration" view), and the project variables file `runwright exec` reads.
use std::collections::BTreeMap;
use std::path::Path;

use yaml_serde::{Mapping, Value};

use crate::config::ResolvedConfig;
use crate::error::{Error, Result};
use crate::yaml::{parse_file, scalar_string, to_json, Source, YPath};

impl ResolvedConfig {
    /// The merged configuration without hidden jobs (`.name` keys): includes inlined, `extends`, anchors and
    /// `!reference` resolved. Hidden jobs are only templates, so what remains is what the pipeline is made of.
    fn visible(&self) -> Mapping {
        self.merged
            .iter()
            .filter(|(k, _)| !k.as_str().is_some_and(|s| s.starts_with('.')))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// [`Self::visible`] as YAML, keys in the merged order. Strings that a YAML 1.1 reader (GitLab's, Ruby's
    /// Psych) would take for something else (`yes`, `on`, `1.10`, `~`) are quoted, so the output means to
    /// GitLab what the input did.
    pub fn merged_yaml(&self) -> String {
        let mut out = String::new();
        emit_mapping(&self.visible(), 0, &mut out);
        out
    }

    /// [`Self::visible`] as JSON: keys become strings (as GitLab's JSON API shows them), remaining custom
    /// tags are dropped, their values kept.
    pub fn merged_json(&self) -> serde_json::Value {
        to_json(&Value::Mapping(self.visible()))
    }
}

/// Block-style YAML of a mapping at `indent` spaces (sequences at their key's indentation, as GitLab prints).
fn emit_mapping(m: &Mapping, indent: usize, out: &mut String) {
    if m.is_empty() {
        out.push_str(&" ".repeat(indent));
        out.push_str("{}\n");
        return;
    }
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&inline_scalar(k));
        out.push(':');
        emit_value(v, indent, indent + 2, out);
    }
}

fn emit_sequence(s: &[Value], indent: usize, out: &mut String) {
    for item in s {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            // A collection starts on the dash's line: emit it one level in, then put the dash in front.
            Value::Mapping(m) if !m.is_empty() => {
                nest(indent, out, |o| emit_mapping(m, indent + 2, o))
            }
            Value::Sequence(s) if !s.is_empty() => {
                nest(indent, out, |o| emit_sequence(s, indent + 2, o))
            }
            other => emit_value(other, indent, indent + 2, out),
        }
    }
}

/// Emits a nested collection whose first line goes on the current `-` line.
fn nest(indent: usize, out: &mut String, f: impl FnOnce(&mut String)) {
    let mut inner = String::new();
    f(&mut inner);
    out.push(' ');
    out.push_str(inner.get(indent + 2..).unwrap_or_default());
}

/// A value after `key:` or `-`: on the same line when a scalar, below otherwise. `indent` is the parent's
/// (sequences under a key stay there), `child` where a nested mapping or a block scalar goes.
fn emit_value(v: &Value, indent: usize, child: usize, out: &mut String) {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            emit_mapping(m, child, out);
        }
        Value::Mapping(_) => out.push_str(" {}\n"),
        Value::Sequence(s) if !s.is_empty() => {
            out.push('\n');
            emit_sequence(s, indent, out);
        }
        Value::Sequence(_) => out.push_str(" []\n"),
        Value::Tagged(t) => {
            out.push(' ');
            out.push_str(&t.tag.to_string());
            match &t.value {
                Value::Mapping(m) if !m.is_empty() => {
                    out.push('\n');
                    emit_mapping(m, child, out);
                }
                Value::Sequence(s) if !s.is_empty() => {
                    out.push('\n');
                    emit_sequence(s, child, out);
                }
                inner => emit_value(inner, indent, child, out),
            }
        }
        Value::String(s) if literal_block_fits(s) => {
            // Multi-line scripts stay readable: a literal block, `|-` without a final newline, `|` with one.
            out.push_str(if s.ends_with('\n') { " |\n" } else { " |-\n" });
            for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
                if !line.is_empty() {
                    out.push_str(&" ".repeat(child));
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline_scalar(scalar));
            out.push('\n');
        }
    }
}

/// A literal block keeps `s` exactly: several lines, the first not indented (the block's indentation is
/// taken from it), at most one final newline, and no character a block cannot hold.
fn literal_block_fits(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && !s.ends_with("\n\n")
        && !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

/// A scalar on one line: plain when no YAML 1.1 reader can mistake it, else double-quoted (JSON's escapes
/// are YAML's).
fn inline_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if plain_is_safe(s) => s.clone(),
        Value::String(s) => serde_json::Value::String(s.clone()).to_string(),
        // Collections and tags as keys: flow style is not worth it for GitLab's files; JSON is YAML.
        other => to_json(other).to_string(),
    }
}

/// Whether `s` reads back as the same string when written plain. Conservative: anything that might be a
/// YAML 1.1 boolean, null or number (`yes`, `off`, `~`, `1_000`, `1:20`, `.5`, `0x1F`), start with an
/// indicator, or hold `: ` / ` #` is quoted.
fn plain_is_safe(s: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "y", "n", "yes", "no", "true", "false", "on", "off", "null", "~", ".inf", "-.inf", "+.inf",
        ".nan", "=", "<<",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    let numberish = |rest: &str| {
        rest.chars()
            .all(|c| c.is_ascii_hexdigit() || "_.:+-xXoO".contains(c))
    };
    (first.is_ascii_alphanumeric() || "/._$(".contains(first))
        && !SPECIAL.contains(&s.to_ascii_lowercase().as_str())
        && !(first.is_ascii_digit() && numberish(s))
        && !(first == '.' && numberish(&s[1..]))
        && s.trim() == s
        && !s.ends_with(':')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.chars().any(char::is_control)
}

/// Reads a project variables file: a `KEY: value` mapping (value a string, number or boolean, or a hash with
/// `value:` and an optional `description:`, as GitLab's `variables:` allows). `file` names it in errors, which
/// carry its line.
pub fn parse_variables_file(text: &str, file: &Path) -> Result<BTreeMap<String, String>> {
    let root = parse_file(text, file)?;
    let src = Source {
        file: file.to_path_buf(),
        text: text.to_string(),
    };
    let mut out = BTreeMap::new();
    for (k, v) in &root {
        let Some(key) = scalar_string(k) else {
            return Err(Error::config(
                src.locate(&YPath::root()),
                "variables file: every key should be a variable name",
            ));
        };
        let path = YPath::root().key(&key);
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::config(
                src.locate(&path),
                format!(
                    "variables file: {key:?} is not a variable name (letters, digits and `_` only)"
                ),
            ));
        }
        let bad = || {
            Error::config(
                src.locate(&path),
                format!(
                    "variables file: {key} should be a string, a number, a boolean or a hash with `value:`"
                ),
            )
        };
        let value = match v {
            Value::Null => String::new(),
            Value::Mapping(m) => {
                let mut value = None;
                for (mk, mv) in m {
                    match mk.as_str() {
                        Some("value") => value = Some(scalar_string(mv).ok_or_else(bad)?),
                        Some("description") => {}
                        _ => return Err(bad()),
                    }
                }
                value.ok_or_else(bad)?
            }
            other => scalar_string(other).ok_or_else(bad)?,
        };
        out.insert(key, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Pipeline, PipelineContext};

    #[test]
    fn merged_yaml_drops_hidden_jobs_and_keeps_resolved_ones() {
        let cfg = Pipeline::from_str(
            "/nonexistent",
            ".gitlab-ci.yml",
            ".base: {image: alpine, script: [base]}\njob:\n  extends: .base\n  script: [own]\n",
        )
        .expect("parses")
        .resolve(&PipelineContext::default())
        .expect("resolves");
        let yaml = cfg.merged_yaml();
        assert!(!yaml.contains(".base"), "{yaml}");
        assert!(!yaml.contains("extends"), "{yaml}");
        assert!(yaml.contains("image: alpine"), "{yaml}");
        let json = cfg.merged_json();
        assert_eq!(json["job"]["script"][0], "own");
        assert!(json.get(".base").is_none());
    }

    #[test]
    fn yaml_keeps_meaning_for_a_yaml_1_1_reader() {
        let text = "job:\n  variables:\n    A: \"yes\"\n    B: \"1.10\"\n    C: \"~\"\n    D: \"\"\n    E: \"a: b\"\n    F: 3.11-slim\n    G: 2\n    H: \"0x1F\"\n  script:\n    - |\n      if true; then\n        echo \"hi\"\n      fi\n    - echo one\n    - - nested\n  cache:\n    - key: k\n      paths: [a, \"on\"]\n  tags: []\n  rules: !reference [.r, rules]\n.r:\n  rules:\n    - if: $X == \"y\"\n      when: manual\n";
        let cfg = Pipeline::from_str("/nonexistent", ".gitlab-ci.yml", text)
            .expect("parses")
            .resolve(&PipelineContext::default())
            .expect("resolves");
        let yaml = cfg.merged_yaml();
        let want = "job:\n  variables:\n    A: \"yes\"\n    B: \"1.10\"\n    C: \"~\"\n    D: \"\"\n    E: \"a: b\"\n    F: 3.11-slim\n    G: 2\n    H: \"0x1F\"\n  script:\n  - |\n    if true; then\n      echo \"hi\"\n    fi\n  - echo one\n  - - nested\n  cache:\n  - key: k\n    paths:\n    - a\n    - \"on\"\n  tags: []\n  rules:\n  - if: $X == \"y\"\n    when: manual\n";
        assert_eq!(yaml, want);
        // What was written is what reads back.
        let again: Mapping = yaml_serde::from_str(&yaml).expect("valid YAML");
        assert_eq!(again, cfg.visible());
    }

    #[test]
    fn variables_file_forms_and_errors() {
        let vars = parse_variables_file(
            "A: one\nB: 2\nC: true\nD:\n  value: four\n  description: d\nE:\n",
            Path::new("v.yml"),
        )
        .expect("parses");
        assert_eq!(vars["A"], "one");
        assert_eq!(vars["B"], "2");
        assert_eq!(vars["C"], "true");
        assert_eq!(vars["D"], "four");
        assert_eq!(vars["E"], "");
        let e = parse_variables_file("A: one\nB: [x]\n", Path::new("v.yml")).expect_err("list");
        assert!(e.to_string().starts_with("v.yml:2: "), "{e}");
        let e = parse_variables_file("A: one\nB-C: x\n", Path::new("v.yml")).expect_err("name");
        assert!(e.to_string().contains("v.yml:2"), "{e}");
    }
}
