//! The corpus (issue 3): one directory per case under `tests/corpus/`, each a small project with its
//! `.gitlab-ci.yml` (and any included files), the pipeline context in `context.json`, and the expected outcome
//! derived from GitLab's documentation (docs.gitlab.com/ci/yaml is the truth): `expected.json`, a compact
//! projection of the plan, or `expected-error.txt`, the exact error message. Each `.gitlab-ci.yml` starts
//! with a comment citing the documentation sections it pins.
//!
//! A case may hold variants of the context for the same configuration: `context.NAME.json` with
//! `expected.NAME.json` (or `expected-error.NAME.txt`).
//!
//! `UPDATE_CORPUS=1 cargo test -p runwright-pipeline --test corpus` writes the actual outcome to the expected
//! files, to review a new case; every committed expected file is checked against the documentation, not
//! just blessed (tests/corpus/README.md).
//!
//! Cases that the model does not get right yet live in `tests/corpus-pending/NAME/` with a `WHY.md`; they run
//! as expected failures (`pending_cases_still_fail`): one that starts passing fails that test, so that it is
//! promoted to `tests/corpus/` rather than left pending.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runwright_pipeline::{
    ChildPipeline, FsProjectFiles, Pipeline, PipelineContext, PipelinePlan, ProjectFiles,
    StaticProjectFiles,
};
use serde_json::{json, Map, Value};

/// The pipeline context of `context.json`: the ref, the source and the files, from which the runner derives
/// the predefined variables GitLab would set (docs: ci/variables/predefined_variables).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Context {
    /// Branch (default `main`); in a merge request pipeline, the source branch.
    branch: Option<String>,
    /// A tag pipeline (no `CI_COMMIT_BRANCH`).
    tag: Option<String>,
    /// `CI_PIPELINE_SOURCE` (default `push`).
    source: Option<String>,
    /// `CI_DEFAULT_BRANCH` (default `main`).
    default_branch: Option<String>,
    /// Target branch of a merge request pipeline (default: the default branch).
    target_branch: Option<String>,
    /// More predefined variables (`CI_COMMIT_TITLE`, …); they win over the derived ones.
    #[serde(default)]
    variables: BTreeMap<String, String>,
    /// Pipeline variables (run pipeline form, schedule, trigger): highest precedence.
    #[serde(default)]
    pipeline_variables: BTreeMap<String, String>,
    /// Changed files; absent: unknown (`changes:` is then true, as for a new branch).
    changed: Option<Vec<String>>,
    /// `rules:changes:compare_to`: the files changed since the merge base of each ref and the commit; a ref
    /// not listed is invalid. Absent: `compare_to` sees `changed`.
    changed_since: Option<BTreeMap<String, Vec<String>>>,
    /// The project's files for `exists:`; absent: the files of the case directory.
    files: Option<Vec<String>>,
}

impl Context {
    fn pipeline_context(&self, dir: &Path) -> PipelineContext {
        let source = self.source.clone().unwrap_or_else(|| "push".into());
        let default_branch = self.default_branch.clone().unwrap_or_else(|| "main".into());
        let branch = self.branch.clone().unwrap_or_else(|| "main".into());
        let mut vars = BTreeMap::new();
        vars.insert("CI_PIPELINE_SOURCE".to_string(), source.clone());
        vars.insert("CI_DEFAULT_BRANCH".to_string(), default_branch.clone());
        if let Some(tag) = &self.tag {
            vars.insert("CI_COMMIT_TAG".to_string(), tag.clone());
            vars.insert("CI_COMMIT_REF_NAME".to_string(), tag.clone());
        } else if source == "merge_request_event" {
            // Merge request pipelines have no CI_COMMIT_BRANCH (docs: jobs/job_rules, "Run jobs only in
            // specific pipeline types").
            vars.insert("CI_COMMIT_REF_NAME".to_string(), branch.clone());
            vars.insert("CI_MERGE_REQUEST_IID".to_string(), "1".into());
            vars.insert(
                "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME".to_string(),
                branch.clone(),
            );
            vars.insert(
                "CI_MERGE_REQUEST_TARGET_BRANCH_NAME".to_string(),
                self.target_branch.clone().unwrap_or(default_branch),
            );
        } else {
            vars.insert("CI_COMMIT_BRANCH".to_string(), branch.clone());
            vars.insert("CI_COMMIT_REF_NAME".to_string(), branch.clone());
        }
        vars.extend(self.variables.clone());
        let mut ctx = PipelineContext::new(vars);
        ctx.pipeline_variables = self.pipeline_variables.clone();
        match &self.files {
            Some(files) => ctx.with_files(Arc::new(StaticProjectFiles {
                files: files.clone(),
                changed: self.changed.clone(),
                compare: self.changed_since.clone(),
            })),
            None if self.changed_since.is_some() => ctx.with_files(Arc::new(StaticProjectFiles {
                files: FsProjectFiles::new(dir, None).list_files(),
                changed: self.changed.clone(),
                compare: self.changed_since.clone(),
            })),
            // The case directory is the project: `exists:` and include wildcards see its files.
            None => ctx.with_files(Arc::new(FsProjectFiles::new(dir, self.changed.clone()))),
        }
    }
}

/// A variable as shown in the projection: its value, or an object when it is not expanded or described.
fn variable(v: &Value) -> Value {
    let expand = v["expand"].as_bool().unwrap_or(true);
    if expand && v.get("description").is_none() {
        return v["value"].clone();
    }
    let mut o = Map::new();
    o.insert("value".into(), v["value"].clone());
    if !expand {
        o.insert("expand".into(), false.into());
    }
    if let Some(d) = v.get("description") {
        o.insert("description".into(), d.clone());
    }
    Value::Object(o)
}

/// Drops the listed keys when they hold the given default.
fn drop_defaults(o: &mut Map<String, Value>, defaults: &[(&str, Value)]) {
    for (k, d) in defaults {
        if o.get(*k) == Some(d) {
            o.remove(*k);
        }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// An image or service: its name alone when nothing else is set.
fn image(v: &Value) -> Value {
    let Value::Object(o) = v else {
        return v.clone();
    };
    let o: Map<String, Value> = o
        .iter()
        .filter(|(_, x)| !is_empty(x))
        .map(|(k, x)| (k.clone(), x.clone()))
        .collect();
    if o.len() == 1 && o.contains_key("name") {
        return o["name"].clone();
    }
    Value::Object(o)
}

/// The compact, human-readable view of one planned job: what GitLab decides (stage, when, allow_failure,
/// needs, dependencies, variables with their winning source) and the keywords as resolved; defaults left out.
fn project_job(j: &Value) -> Value {
    let mut o = Map::new();
    for k in ["stage", "when", "allow_failure"] {
        o.insert(k.into(), j[k].clone());
    }
    for k in [
        "allow_failure_exit_codes",
        "start_in",
        "pre_get_sources_script",
        "before_script",
        "script",
        "after_script",
        "timeout",
        "parallel",
        "tags",
        "resource_group",
        "interruptible",
        "coverage",
        "environment",
        "trigger",
        "pipeline_needs",
    ] {
        if let Some(v) = j.get(k).filter(|v| !is_empty(v)) {
            o.insert(k.into(), v.clone());
        }
    }
    // runwright's notes, without the one every job with an image has.
    if let Some(Value::Array(notes)) = j.get("notes") {
        let notes: Vec<Value> = notes
            .iter()
            .filter(|n| !n.as_str().is_some_and(|n| n.contains("docker executor")))
            .cloned()
            .collect();
        if !notes.is_empty() {
            o.insert("notes".into(), Value::Array(notes));
        }
    }
    if let Value::Array(needs) = &j["needs"] {
        let needs = needs
            .iter()
            .map(|n| {
                if n["artifacts"] == true && n["optional"] == false {
                    n["job"].clone()
                } else {
                    n.clone()
                }
            })
            .collect();
        o.insert("needs".into(), Value::Array(needs));
    }
    if !j["dependencies"].is_null() {
        o.insert("dependencies".into(), j["dependencies"].clone());
    }
    let mut vars: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    if let Value::Object(vs) = &j["variables"] {
        for (k, v) in vs {
            let group = match v["source"].as_str() {
                // Predefined variables come from the context; CI_JOB_*/CI_NODE_* are shown by name/parallel.
                Some("predefined") | Some("job") | None => continue,
                Some("job_yaml") => "job",
                Some(s) => s,
            };
            vars.entry(group.to_string())
                .or_default()
                .insert(k.clone(), variable(v));
        }
    }
    if !vars.is_empty() {
        o.insert("variables".into(), json!(vars));
    }
    if let Some(Value::Object(a)) = j.get("artifacts") {
        let mut a = a.clone();
        drop_defaults(
            &mut a,
            &[
                ("paths", json!([])),
                ("exclude", json!([])),
                ("untracked", json!(false)),
                ("when", json!("on_success")),
            ],
        );
        o.insert("artifacts".into(), Value::Object(a));
    }
    if let Some(Value::Array(caches)) = j.get("cache") {
        let caches = caches
            .iter()
            .map(|c| {
                let mut c = c.as_object().cloned().unwrap_or_default();
                drop_defaults(
                    &mut c,
                    &[
                        ("untracked", json!(false)),
                        ("unprotect", json!(false)),
                        ("policy", json!("pull-push")),
                        ("when", json!("on_success")),
                        ("fallback_keys", json!([])),
                    ],
                );
                Value::Object(c)
            })
            .collect();
        o.insert("cache".into(), Value::Array(caches));
    }
    if let Some(i) = j.get("image") {
        o.insert("image".into(), image(i));
    }
    if let Some(Value::Array(s)) = j.get("services") {
        o.insert(
            "services".into(),
            Value::Array(s.iter().map(image).collect()),
        );
    }
    let r = &j["retry"];
    if r["when"] == json!([]) && r["exit_codes"] == json!([]) {
        if r["max"] != 0 {
            o.insert("retry".into(), r["max"].clone());
        }
    } else {
        let mut r = r.as_object().cloned().unwrap_or_default();
        drop_defaults(&mut r, &[("when", json!([])), ("exit_codes", json!([]))]);
        o.insert("retry".into(), Value::Object(r));
    }
    let rule = match j["rule"]["kind"].as_str() {
        Some("rule") => format!("rules[{}]", j["rule"]["index"]),
        Some("only_except") => "only/except".into(),
        _ => "default".into(),
    };
    o.insert("rule".into(), rule.into());
    Value::Object(o)
}

/// The compact view of a plan and its child pipelines (`children`, by trigger job, each with the variables
/// it received and its own children).
fn project_with_children(plan: &PipelinePlan, children: &[ChildPipeline]) -> Value {
    let mut out = project(plan);
    if !children.is_empty() {
        let mut by_job = Map::new();
        for c in children {
            let mut v = project_with_children(&c.plan, &c.children);
            if let Value::Object(o) = &mut v {
                o.insert("depth".into(), c.depth.into());
                o.insert("depend".into(), c.depend.into());
                o.insert("include".into(), json!(c.include));
                o.insert(
                    "trigger_variables".into(),
                    json!(c.context.pipeline_variables),
                );
                o.insert(
                    "source".into(),
                    json!(c.context.variables.get("CI_PIPELINE_SOURCE")),
                );
            }
            by_job.insert(c.trigger_job.clone(), v);
        }
        if let Value::Object(o) = &mut out {
            o.insert("children".into(), Value::Object(by_job));
        }
    }
    out
}

/// The compact view of a plan; `order` is the plan's job order (stage, then file order).
fn project(plan: &PipelinePlan) -> Value {
    let full = serde_json::to_value(plan).expect("the plan serializes");
    let mut out = Map::new();
    out.insert("workflow".into(), full["workflow"].clone());
    out.insert("stages".into(), full["stages"].clone());
    out.insert(
        "order".into(),
        json!(plan.jobs.iter().map(|j| &j.name).collect::<Vec<_>>()),
    );
    let mut jobs = Map::new();
    for j in full["jobs"].as_array().into_iter().flatten() {
        let name = j["name"].as_str().unwrap_or_default().to_string();
        jobs.insert(name, project_job(j));
    }
    out.insert("jobs".into(), Value::Object(jobs));
    if !plan.excluded.is_empty() {
        let excluded: Map<String, Value> = plan
            .excluded
            .iter()
            .map(|e| (e.name.clone(), e.reason.clone().into()))
            .collect();
        out.insert("excluded".into(), Value::Object(excluded));
    }
    Value::Object(out)
}

/// JSON on one line, with spaces after `,` and `:`.
fn inline(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        scalar => scalar.to_string(),
    }
}

/// Pretty JSON that keeps short arrays and objects on one line, so that a job reads as a short block.
/// Objects at the top two levels (the plan, the jobs) are always spread out.
fn render(v: &Value, indent: usize, prefix_len: usize) -> String {
    let one = inline(v);
    let short = indent + prefix_len + one.len() <= 110;
    let spread = |items: Vec<(Option<&String>, &Value)>, open: &str, close: &str| {
        let pad = " ".repeat(indent + 2);
        let lines: Vec<String> = items
            .iter()
            .map(|(k, x)| match k {
                Some(k) => {
                    let key = format!("{}: ", Value::from(k.as_str()));
                    format!("{pad}{key}{}", render(x, indent + 2, key.len()))
                }
                None => format!("{pad}{}", render(x, indent + 2, 0)),
            })
            .collect();
        format!(
            "{open}
{}
{}{close}",
            lines.join(
                ",
"
            ),
            " ".repeat(indent)
        )
    };
    match v {
        Value::Object(o) if !o.is_empty() && (indent < 4 || !short) => {
            spread(o.iter().map(|(k, x)| (Some(k), x)).collect(), "{", "}")
        }
        Value::Array(a) if !a.is_empty() && !short => {
            spread(a.iter().map(|x| (None, x)).collect(), "[", "]")
        }
        _ => one,
    }
}

/// One context of a case and where its expected outcome lives.
struct Variant {
    label: String,
    context: Option<PathBuf>,
    expected_json: PathBuf,
    expected_error: PathBuf,
}

fn variants(dir: &Path) -> Vec<Variant> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut names: Vec<Option<String>> = std::fs::read_dir(dir)
        .expect("case dir")
        .flatten()
        .filter_map(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            if f == "context.json" {
                Some(None)
            } else {
                f.strip_prefix("context.")
                    .and_then(|r| r.strip_suffix(".json"))
                    .map(|v| Some(v.to_string()))
            }
        })
        .collect();
    if names.is_empty() {
        names.push(None);
    }
    names.sort();
    names
        .into_iter()
        .map(|v| {
            let (suffix, label) = match &v {
                None => (String::new(), name.clone()),
                Some(v) => (format!(".{v}"), format!("{name} [{v}]")),
            };
            let context = dir.join(format!("context{suffix}.json"));
            Variant {
                label,
                context: context.exists().then_some(context),
                expected_json: dir.join(format!("expected{suffix}.json")),
                expected_error: dir.join(format!("expected-error{suffix}.txt")),
            }
        })
        .collect()
}

/// Runs one variant: the actual outcome as the text of its expected file, and which file that is.
fn actual(dir: &Path, v: &Variant) -> (PathBuf, String) {
    let ctx: Context = match &v.context {
        Some(p) => {
            let text = std::fs::read_to_string(p).expect("context file");
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        }
        None => Context::default(),
    };
    let pctx = ctx.pipeline_context(dir);
    // Child pipelines are planned with the parent: a missing or invalid child file is the case's error.
    let result = Pipeline::load(dir, ".gitlab-ci.yml")
        .and_then(|c| c.resolve(&pctx))
        .and_then(|r| {
            let plan = r.evaluate(&pctx)?;
            let children = r.child_pipelines(dir, &plan, &pctx, &BTreeMap::new(), &mut 2)?;
            Ok((plan, children))
        });
    match result {
        Ok((plan, children)) => {
            let text = render(&project_with_children(&plan, &children), 0, 0);
            (v.expected_json.clone(), format!("{text}\n"))
        }
        // Error paths are relative to the case directory already (the project directory).
        Err(e) => (v.expected_error.clone(), format!("{e}\n")),
    }
}

fn case_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(root) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => Vec::new(),
    };
    dirs.sort();
    dirs
}

#[test]
fn corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let update =
        std::env::var_os(runwright_static::env_vars::UPDATE_CORPUS).is_some_and(|v| v == "1");
    let dirs = case_dirs(&root);
    let mut failures = Vec::new();
    let mut checked = 0;
    for dir in &dirs {
        let ci = dir.join(".gitlab-ci.yml");
        let head = std::fs::read_to_string(&ci).unwrap_or_default();
        if !head.contains("docs.gitlab.com") {
            failures.push(format!(
                "{}: .gitlab-ci.yml must cite the docs.gitlab.com section it pins",
                dir.display()
            ));
        }
        for v in variants(dir) {
            checked += 1;
            let (file, text) = actual(dir, &v);
            let other = if file == v.expected_json {
                &v.expected_error
            } else {
                &v.expected_json
            };
            if update {
                std::fs::write(&file, &text).expect("write expected");
                let _ = std::fs::remove_file(other);
                continue;
            }
            match std::fs::read_to_string(&file) {
                Ok(want) if want == text => {}
                Ok(want) => failures.push(format!(
                    "{}: {} differs\n--- expected\n{want}--- actual\n{text}",
                    v.label,
                    file.display()
                )),
                Err(_) if other.exists() => failures.push(format!(
                    "{}: expected {}, got {}:\n{text}",
                    v.label,
                    other.display(),
                    file.display()
                )),
                Err(_) => failures.push(format!(
                    "{}: no {} (run with UPDATE_CORPUS=1 to write it, then check it against the docs)\n{text}",
                    v.label,
                    file.display()
                )),
            }
        }
    }
    assert!(dirs.len() >= 35, "corpus too small: {} cases", dirs.len());
    assert!(
        failures.is_empty(),
        "{} of {checked} corpus checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Pending cases are documented, so that they are fixed rather than forgotten.
#[test]
fn pending_cases_say_why() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus-pending");
    for dir in case_dirs(&root) {
        assert!(
            dir.join("WHY.md").exists(),
            "{} has no WHY.md",
            dir.display()
        );
    }
}

/// Pending cases run as expected failures: each variant must still differ from its expected outcome (GitLab's,
/// per the docs). One that matches is fixed and belongs in `tests/corpus/`.
#[test]
fn pending_cases_still_fail() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus-pending");
    let mut fixed = Vec::new();
    for dir in case_dirs(&root) {
        for v in variants(&dir) {
            // Without an expected outcome a case would "fail" for ever without saying what is right.
            assert!(
                v.expected_json.exists() || v.expected_error.exists(),
                "{}: no {} or {}",
                v.label,
                v.expected_json.display(),
                v.expected_error.display()
            );
            let (file, text) = actual(&dir, &v);
            if std::fs::read_to_string(&file).is_ok_and(|want| want == text) {
                fixed.push(v.label);
            }
        }
    }
    assert!(
        fixed.is_empty(),
        "pending corpus cases pass now: {}; promote each (`git mv tests/corpus-pending/NAME tests/corpus/`, \
         remove its WHY.md, list it in tests/corpus/README.md)",
        fixed.join(", ")
    );
}
