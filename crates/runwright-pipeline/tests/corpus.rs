//! The corpus: `tests/corpus/NAME.yml` with `tests/corpus/NAME.json` holding one or more cases, each a
//! pipeline context and the expected outcome (job names in order, a subset of each job's JSON, the workflow
//! outcome, or an error substring). Expected values come from GitLab's documentation (docs.gitlab.com/ci/yaml).
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use runwright_pipeline::{Pipeline, PipelineContext, StaticProjectFiles};
use serde_json::Value;

/// `expected` ⊆ `actual` (objects by key, everything else equal).
fn subset(expected: &Value, actual: &Value, path: &str, errors: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                match a.get(k) {
                    Some(av) => subset(v, av, &format!("{path}.{k}"), errors),
                    None if v.is_null() || v.as_array().is_some_and(|a| a.is_empty()) => {}
                    None => errors.push(format!("{path}.{k}: missing (want {v})")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                subset(ev, av, &format!("{path}[{i}]"), errors);
            }
        }
        (e, a) if e == a => {}
        (e, a) => errors.push(format!("{path}: want {e}, got {a}")),
    }
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(|v| v.as_array()).map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    })
}

fn map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(|v| v.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn run_case(dir: &Path, file: &str, case: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let mut vars = map(case.get("variables"));
    vars.entry("CI_PIPELINE_SOURCE".into())
        .or_insert_with(|| "push".into());
    if !vars.contains_key("CI_COMMIT_TAG") {
        vars.entry("CI_COMMIT_BRANCH".into())
            .or_insert_with(|| "main".into());
    }
    let r = vars
        .get("CI_COMMIT_TAG")
        .or(vars.get("CI_COMMIT_BRANCH"))
        .cloned()
        .unwrap_or_default();
    vars.entry("CI_COMMIT_REF_NAME".into()).or_insert(r);
    vars.entry("CI_DEFAULT_BRANCH".into())
        .or_insert_with(|| "main".into());
    let mut ctx = PipelineContext::new(vars);
    ctx.pipeline_variables = map(case.get("pipeline_variables"));
    if case.get("files").is_some() || case.get("changed").is_some() {
        ctx = ctx.with_files(Arc::new(StaticProjectFiles {
            files: strings(case.get("files")).unwrap_or_default(),
            changed: strings(case.get("changed")),
        }));
    }
    let result = Pipeline::load(dir, file).and_then(|c| c.evaluate(&ctx));
    let want_error = case.get("error").and_then(|e| e.as_str());
    let plan = match (result, want_error) {
        (Err(e), Some(want)) => {
            if !e.to_string().contains(want) {
                errors.push(format!("error `{e}` does not contain `{want}`"));
            }
            return errors;
        }
        (Err(e), None) => {
            errors.push(format!("unexpected error: {e}"));
            return errors;
        }
        (Ok(p), Some(want)) => {
            errors.push(format!(
                "expected error `{want}`, got a plan of {} jobs",
                p.jobs.len()
            ));
            return errors;
        }
        (Ok(p), None) => p,
    };
    let json = serde_json::to_value(&plan).expect("plan serializes");
    let names: Vec<String> = plan.jobs.iter().map(|j| j.name.clone()).collect();
    if let Some(want) = strings(case.get("jobs")) {
        if want != names {
            errors.push(format!("jobs: want {want:?}, got {names:?}"));
        }
    }
    if let Some(w) = case.get("workflow") {
        subset(w, &json["workflow"], "workflow", &mut errors);
    }
    if let Some(w) = case.get("stages") {
        subset(w, &json["stages"], "stages", &mut errors);
    }
    if let Some(Value::Object(jobs)) = case.get("job") {
        for (name, want) in jobs {
            match json["jobs"]
                .as_array()
                .and_then(|a| a.iter().find(|j| j["name"] == name.as_str()))
            {
                Some(actual) => subset(want, actual, name, &mut errors),
                None => errors.push(format!("job `{name}` not in plan {names:?}")),
            }
        }
    }
    if let Some(Value::Object(ex)) = case.get("excluded") {
        for (name, reason) in ex {
            match plan.excluded.iter().find(|e| &e.name == name) {
                Some(e) if reason.as_str().is_none_or(|r| e.reason.contains(r)) => {}
                Some(e) => errors.push(format!(
                    "excluded `{name}`: reason `{}` does not contain {reason}",
                    e.reason
                )),
                None => errors.push(format!("`{name}` is not excluded")),
            }
        }
    }
    errors
}

#[test]
fn corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut failures = Vec::new();
    let mut count = 0;
    for yml in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
    {
        let expected = yml.with_extension("json");
        let text = std::fs::read_to_string(&expected)
            .unwrap_or_else(|_| panic!("{} has no {}", yml.display(), expected.display()));
        let spec: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
        let file = yml.file_name().and_then(|f| f.to_str()).expect("name");
        for (i, case) in spec["cases"].as_array().expect("cases").iter().enumerate() {
            count += 1;
            let label = case
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| i.to_string());
            for e in run_case(&dir, file, case) {
                failures.push(format!("{file} [{label}]: {e}"));
            }
        }
    }
    assert!(count >= 20, "corpus too small: {count} cases");
    assert!(
        failures.is_empty(),
        "{} corpus failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
