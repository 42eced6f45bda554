//! `include:` of local files, as GitLab's `Config::External::Processor` does it offline: the string, list,
//! and `local:` forms (with `*`/`**` wildcards), `rules:` (`if`, `exists`, `changes`, `when: never`),
//! nested includes (150 files at most, duplicates counted: docs "include"); then a deep merge — included
//! files in order (later wins, so a file included again overrides what came between: docs
//! ci/yaml/includes, "Use nested includes with duplicate include entries"), the including file on top.
//! `remote`, `project`, `template` and `component` includes need GitLab and get a clear "not available
//! offline" error.
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use yaml_serde::{Mapping, Value};

use crate::error::{Error, Location, Result};
use crate::merge::deep_merge;
use crate::rules::{first_match, parse_rules, RuleEnv};
use crate::yaml::{parse_file, scalar_string, Source, YPath};

const MAX_INCLUDES: usize = 150;

/// The files read so far and which file each top-level key came from (for error locations).
#[derive(Debug, Default, Clone)]
pub(crate) struct Sources {
    pub list: Vec<Source>,
    pub origins: HashMap<String, usize>,
}

impl Sources {
    pub(crate) fn source_for(&self, key: &str) -> &Source {
        let i = self.origins.get(key).copied().unwrap_or(0);
        &self.list[i.min(self.list.len().saturating_sub(1))]
    }
    pub(crate) fn locate(&self, path: &YPath) -> Location {
        let key = match path.0.first() {
            Some(crate::yaml::Seg::Key(k)) => k.as_str(),
            _ => "",
        };
        self.source_for(key).locate(path)
    }
}

pub(crate) struct Includer<'a> {
    pub project_dir: &'a Path,
    pub env: &'a RuleEnv<'a>,
    pub sources: Sources,
    /// Files included so far, duplicates counted (a loop of includes ends at the limit).
    count: usize,
}

impl<'a> Includer<'a> {
    pub(crate) fn new(project_dir: &'a Path, env: &'a RuleEnv<'a>, root: Source) -> Self {
        Includer {
            project_dir,
            env,
            sources: Sources {
                list: vec![root],
                origins: HashMap::new(),
            },
            count: 0,
        }
    }

    /// Expands the includes of `doc` (read from source `idx`) and merges.
    pub(crate) fn expand(&mut self, mut doc: Mapping, idx: usize) -> Result<Mapping> {
        let mut acc = Mapping::new();
        // `shift_remove`: `remove` swaps the last key into the hole, which would reorder the jobs (the plan
        // lists the jobs of a stage in file order).
        if let Some(inc) = doc.shift_remove("include") {
            let src = self.sources.list[idx].clone();
            let ipath = YPath::root().key("include");
            let entries: Vec<(Value, YPath)> = match inc {
                Value::Sequence(s) => s
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (v, ipath.index(i)))
                    .collect(),
                Value::Null => Vec::new(),
                other => vec![(other, ipath.clone())],
            };
            for (entry, path) in entries {
                for file in self.local_targets(&entry, &path, &src)? {
                    self.count += 1;
                    if self.count > MAX_INCLUDES {
                        return Err(Error::config(
                            src.locate(&path),
                            format!("Maximum of {MAX_INCLUDES} nested includes are allowed!"),
                        ));
                    }
                    let full = self.project_dir.join(&file);
                    let text = std::fs::read_to_string(&full).map_err(|_| {
                        Error::config(
                            src.locate(&path),
                            format!("Local file `{file}` does not exist!"),
                        )
                    })?;
                    if text.trim().is_empty() {
                        return Err(Error::config(
                            src.locate(&path),
                            format!("Local file `{file}` is empty!"),
                        ));
                    }
                    let text = strip_spec_header(&text);
                    let child_src = Source {
                        file: PathBuf::from(&file),
                        text: text.clone(),
                    };
                    let child = parse_file(&text, Path::new(&file))?;
                    self.sources.list.push(child_src);
                    let child_idx = self.sources.list.len() - 1;
                    let merged = self.expand(child, child_idx)?;
                    deep_merge(&mut acc, merged);
                }
            }
        }
        for k in doc.keys().filter_map(|k| k.as_str()) {
            self.sources.origins.insert(k.to_string(), idx);
        }
        deep_merge(&mut acc, doc);
        Ok(acc)
    }

    /// The project-relative files one include entry stands for (empty when its rules exclude it).
    fn local_targets(&self, entry: &Value, path: &YPath, src: &Source) -> Result<Vec<String>> {
        let local = match entry {
            Value::String(s) if s.starts_with("http://") || s.starts_with("https://") => {
                return Err(Error::IncludeOffline {
                    location: src.locate(path),
                    kind: "remote".into(),
                    target: s.clone(),
                })
            }
            Value::String(s) => s.clone(),
            Value::Mapping(m) => {
                if let Some(rules) = m.get("rules") {
                    let rules = parse_rules(rules, &path.key("rules"), src, "include")?;
                    match first_match(&rules, self.env)? {
                        None => return Ok(Vec::new()),
                        Some(r) if r.when.as_deref() == Some("never") => return Ok(Vec::new()),
                        Some(_) => {}
                    }
                }
                for kind in ["remote", "project", "template", "component"] {
                    if let Some(v) = m.get(kind) {
                        let mut target = scalar_string(v).unwrap_or_default();
                        if let Some(f) = m.get("file") {
                            target = format!(
                                "{target}: {}",
                                serde_json::to_string(&crate::yaml::to_json(f)).unwrap_or_default()
                            );
                        }
                        return Err(Error::IncludeOffline {
                            location: src.locate(path),
                            kind: kind.into(),
                            target,
                        });
                    }
                }
                if m.get("inputs").is_some() {
                    return Err(Error::config(
                        src.locate(&path.key("inputs")),
                        "`include:inputs` (spec:inputs) is not supported yet",
                    ));
                }
                match m.get("local").and_then(scalar_string) {
                    Some(l) => l,
                    None => {
                        return Err(Error::config(
                            src.locate(path),
                            "include config should be a string, or a hash with one of: local, remote, project, template, component",
                        ))
                    }
                }
            }
            _ => {
                return Err(Error::config(
                    src.locate(path),
                    "include config should be a hash or a string",
                ))
            }
        };
        let rel = local.trim_start_matches('/').to_string();
        if Path::new(&rel)
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(Error::config(
                src.locate(path),
                format!("Local file `{local}` is outside the project"),
            ));
        }
        if rel.contains('*') {
            let files = self.env.files.list_files();
            let m = wildcard(&rel).map_err(|e| {
                Error::config(src.locate(path), format!("invalid wildcard `{rel}`: {e}"))
            })?;
            let mut hits: Vec<String> = files
                .into_iter()
                .filter(|f| m.is_match(f) && (f.ends_with(".yml") || f.ends_with(".yaml")))
                .collect();
            hits.sort();
            if hits.is_empty() {
                return Err(Error::config(
                    src.locate(path),
                    format!("Included file `{local}` does not exist!"),
                ));
            }
            return Ok(hits);
        }
        if !(rel.ends_with(".yml") || rel.ends_with(".yaml")) {
            return Err(Error::config(
                src.locate(path),
                format!("Included file `{local}` does not have YAML extension!"),
            ));
        }
        Ok(vec![rel])
    }
}

/// An `include:local` wildcard as GitLab matches it (`Repository#search_files_by_wildcard_path`): `**` is
/// anything, `/` included, `*` anything but `/`, every other character literal. So `configs/*.yml` is the
/// files of `configs`, `configs/**.yml` those of `configs` and below, `configs/**/*.yml` those below only
/// (docs: ci/yaml/includes, "Use `include:local` with wildcard file paths").
fn wildcard(pattern: &str) -> std::result::Result<regex::Regex, regex::Error> {
    let mut re = String::from("^");
    for (i, part) in pattern.split("**").enumerate() {
        if i > 0 {
            re.push_str(".*");
        }
        let pieces: Vec<String> = part.split('*').map(regex::escape).collect();
        re.push_str(&pieces.join("[^/]*"));
    }
    re.push('$');
    regex::Regex::new(&re)
}

/// Files with `spec:` have a header document before `---`; the header is dropped (inputs are not supported).
fn strip_spec_header(text: &str) -> String {
    if text.trim_start().starts_with("spec:") {
        if let Some(pos) = text.find("\n---") {
            let rest = &text[pos + 4..];
            return rest
                .split_once('\n')
                .map(|(_, r)| r.to_string())
                .unwrap_or_default();
        }
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards_as_gitlab() {
        let m = |p: &str, f: &str| wildcard(p).expect("wildcard").is_match(f);
        assert!(m("configs/*.yml", "configs/a.yml"));
        assert!(!m("configs/*.yml", "configs/sub/a.yml"));
        assert!(m("configs/**.yml", "configs/a.yml"));
        assert!(m("configs/**.yml", "configs/sub/deep/a.yml"));
        assert!(!m("configs/**/*.yml", "configs/a.yml"));
        assert!(m("configs/**/*.yml", "configs/sub/a.yml"));
        assert!(
            !m("configs/*.yml", "configsXa.yml"),
            "`.` and `/` are literal"
        );
        assert!(!m("c?nfigs/*.yml", "configs/a.yml"), "`?` is literal");
    }
}
