//! `.gitlab-ci.yml` through resolution (runwright-pipeline): YAML anchors, local includes, `extends`,
//! `!reference`, `default:`, rules, `parallel:matrix`, `needs:`; and the rules expression language alone.
use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::sync::Arc;

use runwright_pipeline::rules::Expression;
use runwright_pipeline::{Pipeline, PipelineContext, StaticProjectFiles};

/// A line starting a further project file in the input: `#=== ci/build.yml`.
const FILE_MARK: &[u8] = b"#=== ";
const MAX_FILES: usize = 8;

/// Input: the root `.gitlab-ci.yml`, then any further project files, each after a line `#=== <path>` (so the
/// root file can `include:` them). The files are written to a fresh project directory, then the pipeline is
/// loaded, resolved and evaluated for a push to `main`. Properties: no panic, no hang (libFuzzer's timeout);
/// errors render; evaluating twice gives the same plan.
pub fn pipeline(data: &[u8]) {
    let Ok(project) = tempfile::tempdir() else {
        return;
    };
    let (root, files) = split_files(data);
    let Ok(root) = std::str::from_utf8(root) else {
        return;
    };
    let mut listed = vec![".gitlab-ci.yml".to_string()];
    for (path, text) in files {
        let full = project.path().join(&path);
        if let Some(dir) = full.parent() {
            if std::fs::create_dir_all(dir).is_err() {
                continue;
            }
        }
        if std::fs::write(&full, text).is_ok() {
            listed.push(path);
        }
    }
    let config = match Pipeline::from_str(project.path(), ".gitlab-ci.yml", root) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let ctx = context(listed);
    let first = config.evaluate(&ctx).map_err(|e| e.to_string());
    let second = config.evaluate(&ctx).map_err(|e| e.to_string());
    assert!(first == second, "evaluation is not deterministic");
}

/// Input: one rules expression (`$CI_COMMIT_BRANCH == "main" && $VAR =~ /^v/`). Properties: no panic;
/// evaluation of a parsed expression ends in a boolean or a rendered error.
pub fn rules_expression(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: BTreeMap<&str, &str> = [
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_PIPELINE_SOURCE", "push"),
        ("VAR", "v1.2.3"),
        ("EMPTY", ""),
        ("PATTERN", "/^v[0-9]+/"),
    ]
    .into_iter()
    .collect();
    match Expression::parse(text) {
        Ok(expr) => {
            let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
            if let Err(e) = expr.evaluate(&lookup) {
                let _ = e.message.len();
            }
        }
        Err(e) => {
            let _ = format!("{e:?}");
        }
    }
}

fn context(files: Vec<String>) -> PipelineContext {
    let vars: BTreeMap<String, String> = [
        ("CI_PIPELINE_SOURCE", "push"),
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_REF_NAME", "main"),
        ("CI_DEFAULT_BRANCH", "main"),
        ("CI_PROJECT_PATH", "group/project"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    PipelineContext::new(vars).with_files(Arc::new(StaticProjectFiles {
        changed: Some(files.clone()),
        // `compare_to` refs fall back to `changed`: the fuzzer exercises the rules, not git.
        compare: None,
        files,
    }))
}

/// The root file and the further files (with a safe relative path) of the input.
fn split_files(data: &[u8]) -> (&[u8], Vec<(String, &[u8])>) {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < data.len() {
        if data[at..].starts_with(FILE_MARK) {
            starts.push(at);
        }
        match data[at..].iter().position(|b| *b == b'\n') {
            Some(nl) => at += nl + 1,
            None => break,
        }
    }
    let root_end = starts.first().copied().unwrap_or(data.len());
    let mut files = Vec::new();
    for (i, start) in starts.iter().enumerate().take(MAX_FILES) {
        let end = starts.get(i + 1).copied().unwrap_or(data.len());
        let section = &data[start + FILE_MARK.len()..end];
        let nl = section
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(section.len());
        let name = String::from_utf8_lossy(&section[..nl]).trim().to_string();
        let text = section.get(nl + 1..).unwrap_or_default();
        if safe_path(&name) {
            files.push((name, text));
        }
    }
    (&data[..root_end], files)
}

/// A relative path below the project directory made of plain names.
fn safe_path(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}
