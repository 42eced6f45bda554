//! `extends:`: a job inherits from one or more jobs (often hidden `.templates`), GitLab's
//! `Config::Extendable`: parents are extended first, merged in order (later parents win), then the job on
//! top — a reverse deep merge where hashes merge and everything else (arrays too) is replaced. At most 11
//! levels of inheritance (a job and 10 ancestors); circular chains and unknown parents are errors.
use std::collections::HashMap;

use yaml_serde::{Mapping, Value};

use crate::error::{Error, Location, Result};
use crate::merge::deep_merge;
use crate::yaml::{scalar_string, YPath};

const MAX_NESTING: usize = 10;

/// Applies every `extends:` of the top-level mapping.
pub(crate) fn apply(root: &mut Mapping, locate: &dyn Fn(&YPath) -> Location) -> Result<()> {
    let keys: Vec<String> = root
        .iter()
        .filter(|(_, v)| v.as_mapping().is_some_and(|m| m.contains_key("extends")))
        .filter_map(|(k, _)| k.as_str().map(str::to_string))
        .collect();
    let mut done = HashMap::new();
    for k in keys {
        extend(root, &k, &mut Vec::new(), &mut done, locate)?;
    }
    Ok(())
}

fn parents_of(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Sequence(s) => s.iter().map(scalar_string).collect(),
        other => scalar_string(other).map(|s| vec![s]),
    }
}

fn extend(
    root: &mut Mapping,
    key: &str,
    chain: &mut Vec<String>,
    done: &mut HashMap<String, usize>,
    locate: &dyn Fn(&YPath) -> Location,
) -> Result<()> {
    if done.contains_key(key) {
        return Ok(());
    }
    let path = YPath::root().key(key).key("extends");
    if chain.iter().any(|c| c == key) {
        let mut cycle = chain.clone();
        cycle.push(key.to_string());
        return Err(Error::config(
            locate(&YPath::root().key(&chain[0]).key("extends")),
            format!(
                "{}: circular dependency detected in `extends` ({})",
                chain[0],
                cycle.join(" -> ")
            ),
        ));
    }
    let Some(Value::Mapping(job)) = root.get(key).cloned() else {
        return Ok(());
    };
    let Some(ext) = job.get("extends") else {
        done.insert(key.to_string(), 1);
        return Ok(());
    };
    let parents = parents_of(ext).ok_or_else(|| {
        Error::config(
            locate(&path),
            format!("{key}: `extends` should be a string or an array of strings"),
        )
    })?;
    chain.push(key.to_string());
    for p in &parents {
        match root.get(p.as_str()) {
            None => {
                return Err(Error::config(
                    locate(&path),
                    format!("{key}: unknown keys in `extends` ({p})"),
                ));
            }
            Some(Value::Mapping(_)) => extend(root, p, chain, done, locate)?,
            Some(_) => {
                return Err(Error::config(
                    locate(&path),
                    format!("{key}: invalid base hash in `extends` ({p})"),
                ))
            }
        }
    }
    chain.pop();
    // Levels of inheritance: the job itself plus its longest chain of ancestors.
    let depth = 1 + parents
        .iter()
        .map(|p| done.get(p.as_str()).copied().unwrap_or(1))
        .max()
        .unwrap_or(0);
    if depth > MAX_NESTING + 1 {
        return Err(Error::config(
            locate(&path),
            format!(
                "{key}: nesting too deep in `extends` (more than {} levels)",
                MAX_NESTING + 1
            ),
        ));
    }
    let mut base = Mapping::new();
    for p in &parents {
        if let Some(Value::Mapping(pm)) = root.get(p.as_str()) {
            let mut pm = pm.clone();
            // Keys keep their order in the merged configuration (`remove` would swap).
            pm.shift_remove("extends");
            deep_merge(&mut base, pm);
        }
    }
    let mut own = job;
    own.shift_remove("extends");
    deep_merge(&mut base, own);
    root.insert(Value::String(key.to_string()), Value::Mapping(base));
    done.insert(key.to_string(), depth);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Result<Mapping> {
        let mut m: Mapping = yaml_serde::from_str(yaml).expect("yaml");
        apply(&mut m, &|p| Location {
            file: None,
            path: p.to_string(),
            line: None,
        })?;
        Ok(m)
    }

    #[test]
    fn gitlab_docs_example() {
        // docs.gitlab.com/ci/yaml/yaml_optimization: "Merge details"
        let m = run(
            ".only-important:\n  variables:\n    URL: \"http://my-url.internal\"\n    IMPORTANT_VAR: \"the details\"\n  rules:\n    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH\n    - if: $CI_COMMIT_BRANCH == \"stable\"\n  tags:\n    - production\n  script:\n    - echo \"Hello world!\"\n.in-docker:\n  variables:\n    URL: \"http://docker-url.internal\"\n  tags:\n    - docker\n  image: alpine\nrspec:\n  variables:\n    GITLAB: \"is-awesome\"\n  extends:\n    - .only-important\n    - .in-docker\n  script:\n    - rake rspec\n",
        )
        .expect("extends");
        let want: Mapping = yaml_serde::from_str(
            "variables:\n  URL: \"http://docker-url.internal\"\n  IMPORTANT_VAR: \"the details\"\n  GITLAB: \"is-awesome\"\nrules:\n  - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH\n  - if: $CI_COMMIT_BRANCH == \"stable\"\ntags:\n  - docker\nscript:\n  - rake rspec\nimage: alpine\n",
        )
        .expect("yaml");
        let got = m.get("rspec").and_then(|v| v.as_mapping()).expect("rspec");
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "key {k:?}");
        }
        assert_eq!(got.len(), want.len());
    }

    #[test]
    fn cycles_and_depth() {
        let e = run("a: {extends: b, script: x}\nb: {extends: a}\n").expect_err("cycle");
        assert!(
            e.to_string()
                .contains("circular dependency detected in `extends`"),
            "{e}"
        );
        let mut y = String::from("j0: {script: x}\n");
        for i in 1..=10 {
            y.push_str(&format!("j{i}: {{extends: j{}}}\n", i - 1));
        }
        run(&y).expect("11 levels (a job and 10 ancestors) are fine");
        y.push_str("j11: {extends: j10}\n");
        let e = run(&y).expect_err("12 levels");
        assert!(e.to_string().contains("nesting too deep"), "{e}");
        let e = run("a: {extends: .nope, script: x}\n").expect_err("unknown");
        assert!(
            e.to_string().contains("unknown keys in `extends` (.nope)"),
            "{e}"
        );
    }
}
