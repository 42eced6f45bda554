//! `!reference [job, key, …]` tags, resolved after includes and `extends` (GitLab's
//! `Config::Yaml::Tags::Resolver`): the tag is replaced by the value at that path of the merged
//! configuration; references inside the referenced value are resolved too, up to 10 nested levels, and
//! circular chains are errors. A reference inside a `script:` or `rules:` array yields a nested array, which
//! those keywords flatten.
use yaml_serde::{Mapping, Value};

use crate::error::{Error, Location, Result};
use crate::yaml::{scalar_string, YPath};

/// GitLab's `MAX_NESTING_LEVELS` for references.
const MAX_NESTING: usize = 10;

/// Replaces every `!reference` in `root`.
pub(crate) fn resolve(root: &Mapping, locate: &dyn Fn(&YPath) -> Location) -> Result<Mapping> {
    let mut out = Mapping::new();
    for (k, v) in root {
        let path = YPath::root().key(k.as_str().unwrap_or_default());
        let mut chain = Vec::new();
        out.insert(
            k.clone(),
            resolve_value(v, root, &path, &mut chain, locate)?,
        );
    }
    Ok(out)
}

fn show(seq: &[String]) -> String {
    let parts: Vec<String> = seq.iter().map(|s| format!("\"{s}\"")).collect();
    format!("!reference [{}]", parts.join(", "))
}

fn resolve_value(
    v: &Value,
    root: &Mapping,
    path: &YPath,
    chain: &mut Vec<Vec<String>>,
    locate: &dyn Fn(&YPath) -> Location,
) -> Result<Value> {
    match v {
        Value::Tagged(t) if t.tag == "reference" => {
            let seq: Option<Vec<String>> = match &t.value {
                Value::Sequence(s) if !s.is_empty() => s.iter().map(scalar_string).collect(),
                _ => None,
            };
            let Some(seq) = seq else {
                return Err(Error::config(
                    locate(path),
                    "!reference should be an array of strings: [job, key, …]",
                ));
            };
            if chain.contains(&seq) {
                return Err(Error::config(
                    locate(path),
                    format!("{} is part of a circular chain", show(&seq)),
                ));
            }
            if chain.len() >= MAX_NESTING {
                return Err(Error::config(
                    locate(path),
                    format!(
                        "{}: too many nested references (maximum {MAX_NESTING})",
                        show(&seq)
                    ),
                ));
            }
            let mut cur: Option<&Value> = root.get(seq[0].as_str());
            for k in &seq[1..] {
                cur = cur.and_then(|c| match c {
                    Value::Mapping(m) => m.get(k.as_str()),
                    Value::Tagged(_) => None,
                    _ => None,
                });
            }
            let Some(found) = cur else {
                return Err(Error::config(
                    locate(path),
                    format!("{} could not be found", show(&seq)),
                ));
            };
            chain.push(seq);
            let r = resolve_value(found, root, path, chain, locate);
            chain.pop();
            r
        }
        Value::Tagged(t) => resolve_value(&t.value, root, path, chain, locate),
        Value::Mapping(m) => {
            let mut out = Mapping::new();
            for (k, x) in m {
                let p = path.key(k.as_str().unwrap_or_default());
                out.insert(k.clone(), resolve_value(x, root, &p, chain, locate)?);
            }
            Ok(Value::Mapping(out))
        }
        Value::Sequence(s) => {
            let mut out = Vec::with_capacity(s.len());
            for (i, x) in s.iter().enumerate() {
                out.push(resolve_value(x, root, &path.index(i), chain, locate)?);
            }
            Ok(Value::Sequence(out))
        }
        other => Ok(other.clone()),
    }
}
