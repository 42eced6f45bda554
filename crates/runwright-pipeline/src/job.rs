//! One job's configuration after `include`, `extends`, `!reference` and `default:` are applied: every
//! keyword of docs.gitlab.com/ci/yaml parsed into types, validated with GitLab's messages, but not yet
//! evaluated for a pipeline (rules, `parallel` and `needs` resolution happen in `plan`).
use std::collections::BTreeMap;

use serde::Serialize;
use yaml_serde::{Mapping, Value};

use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::rules::{parse_policy, parse_rules, string_list, Policy, Rule};
use crate::variables::{gitlab_path, parse_variables, VariableSource, VariableValue};
use crate::yaml::{as_bool, key_str, scalar_string, to_json, type_name, Source, YPath};

/// Top-level keywords that are not jobs.
pub(crate) const GLOBAL_KEYWORDS: &[&str] = &[
    "default",
    "include",
    "stages",
    "variables",
    "workflow",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
    "types",
    "spec",
];

pub(crate) fn is_global_keyword(key: &str) -> bool {
    GLOBAL_KEYWORDS.contains(&key)
}

/// Keywords allowed in a job (docs.gitlab.com/ci/yaml, "Job keywords").
const JOB_KEYWORDS: &[&str] = &[
    "after_script",
    "allow_failure",
    "artifacts",
    "before_script",
    "cache",
    "coverage",
    "dast_configuration",
    "dependencies",
    "environment",
    "except",
    "extends",
    "hooks",
    "identity",
    "id_tokens",
    "image",
    "inherit",
    "interruptible",
    "manual_confirmation",
    "needs",
    "only",
    "pages",
    "parallel",
    "release",
    "resource_group",
    "retry",
    "rules",
    "run",
    "script",
    "secrets",
    "services",
    "stage",
    "start_in",
    "tags",
    "timeout",
    "trigger",
    "variables",
    "when",
    "type",
];

/// Keywords a trigger job accepts (docs: "trigger": "Trigger jobs can use only a limited set of GitLab CI/CD
/// configuration keywords"; `inherit` and `interruptible` are accepted too, docs: "inherit", "interruptible").
const TRIGGER_JOB_KEYWORDS: &[&str] = &[
    "allow_failure",
    "environment",
    "except",
    "extends",
    "inherit",
    "interruptible",
    "needs",
    "only",
    "parallel",
    "resource_group",
    "rules",
    "stage",
    "trigger",
    "type",
    "variables",
    "when",
];

/// Keys of `default:` (docs: "default").
pub(crate) const DEFAULT_KEYWORDS: &[&str] = &[
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "hooks",
    "id_tokens",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
    "timeout",
];

/// `when:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Run when all earlier stages (or needs) succeeded.
    #[default]
    OnSuccess,
    /// Run when something earlier failed.
    OnFailure,
    /// Always run.
    Always,
    /// Run when started by hand.
    Manual,
    /// Run after `start_in`.
    Delayed,
    /// Do not run (the job is not created).
    Never,
}

impl When {
    /// The keyword as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Manual => "manual",
            When::Delayed => "delayed",
            When::Never => "never",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<When> {
        Some(match s {
            "on_success" => When::OnSuccess,
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            "manual" => When::Manual,
            "delayed" => When::Delayed,
            "never" => When::Never,
            _ => return None,
        })
    }
}

/// `allow_failure:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AllowFailure {
    /// `true`/`false`.
    Bool(bool),
    /// `exit_codes:` — only these exit codes are allowed to fail.
    ExitCodes {
        /// The codes.
        exit_codes: Vec<i64>,
    },
}

/// `retry:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Retry {
    /// 0 to 2.
    pub max: u32,
    /// Failure types that are retried (empty: all, GitLab's `always`).
    pub when: Vec<String>,
    /// Exit codes that are retried.
    pub exit_codes: Vec<i64>,
}

/// `image:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Image {
    /// Image name.
    pub name: String,
    /// `entrypoint:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `pull_policy:`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pull_policy: Vec<String>,
    /// `docker:` options (platform, user), as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<serde_json::Value>,
}

/// One of `services:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Service {
    /// Image name.
    pub name: String,
    /// `alias:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// `entrypoint:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `command:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `variables:`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// `pull_policy:`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pull_policy: Vec<String>,
}

/// `artifacts:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Artifacts {
    /// `paths:`.
    pub paths: Vec<String>,
    /// `exclude:`.
    pub exclude: Vec<String>,
    /// `untracked:`.
    pub untracked: bool,
    /// `when:` on_success (default), on_failure, always.
    pub when: String,
    /// `name:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `expire_in:` as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_in: Option<String>,
    /// `expose_as:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_as: Option<String>,
    /// `reports:` kept as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reports: Option<serde_json::Value>,
}

/// `cache:key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CacheKey {
    /// A string (may hold variables); `default` when absent.
    Key(String),
    /// `key: {files:, prefix:}`.
    Files {
        /// Up to two files whose content makes the key.
        files: Vec<String>,
        /// Prefix.
        #[serde(skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
}

/// One cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cache {
    /// `key:`.
    pub key: CacheKey,
    /// `paths:`.
    pub paths: Vec<String>,
    /// `untracked:`.
    pub untracked: bool,
    /// `unprotect:`.
    pub unprotect: bool,
    /// `policy:` pull-push (default), pull, push.
    pub policy: String,
    /// `when:` on_success (default), on_failure, always.
    pub when: String,
    /// `fallback_keys:`.
    pub fallback_keys: Vec<String>,
}

/// One row of `parallel:matrix`: (variable, values) in the order written.
pub type MatrixRow = Vec<(String, Vec<String>)>;

/// One entry of `needs:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Need {
    /// The job (name before `parallel` expansion).
    pub job: String,
    /// `artifacts:` (default true).
    pub artifacts: bool,
    /// `optional:`.
    pub optional: bool,
    /// `parallel:matrix` filter: the matrix rows whose jobs are needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Vec<MatrixRow>>,
    /// `needs:pipeline:job`: the job is in another pipeline of the parent-child hierarchy, this id (as
    /// written, usually `$PARENT_PIPELINE_ID`); only its artifacts are fetched (docs: "needs:pipeline:job"),
    /// it orders nothing in this pipeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
}

/// `needs:`: `None` means stage ordering, `Some(vec![])` (`needs: []`) starts at once.
pub type Needs = Option<Vec<Need>>;

/// `parallel:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Parallel {
    /// `parallel: N`.
    Count(u32),
    /// `parallel: matrix:` rows, each a list of (variable, values) in the order written.
    Matrix(Vec<MatrixRow>),
}

/// `environment:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Environment {
    /// Name.
    pub name: String,
    /// `url:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `action:` (start, prepare, stop, verify, access).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `on_stop:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_stop: Option<String>,
    /// `deployment_tier:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_tier: Option<String>,
    /// `auto_stop_in:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_in: Option<String>,
}

/// `trigger:forward:` (docs: "trigger:forward"): what a downstream pipeline receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Forward {
    /// The trigger job's YAML variables (its own and the global ones it inherits); default `true`.
    pub yaml_variables: bool,
    /// The pipeline's own variables (run pipeline form, schedule, API, `--variable`); default `false`.
    pub pipeline_variables: bool,
}

impl Default for Forward {
    fn default() -> Self {
        Forward {
            yaml_variables: true,
            pipeline_variables: false,
        }
    }
}

/// `trigger:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A child pipeline from local files of this project: runnable locally.
    Child {
        /// The local files (`include:` of the trigger).
        include: Vec<String>,
        /// `strategy: depend` or `strategy: mirror`: the trigger job waits and takes the child's status.
        depend: bool,
        /// `forward:`: which variables the child pipeline receives.
        forward: Forward,
    },
    /// Anything else (another project, a remote or template child): noted, not runnable offline.
    Other {
        /// What it points at.
        description: String,
    },
}

/// `inherit:` for one of `default` / `variables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inherit {
    All,
    None,
    Only(Vec<String>),
}

impl Inherit {
    pub(crate) fn allows(&self, key: &str) -> bool {
        match self {
            Inherit::All => true,
            Inherit::None => false,
            Inherit::Only(l) => l.iter().any(|k| k == key),
        }
    }
}

/// A job as configured: every keyword parsed; not yet evaluated for a pipeline.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Name as written.
    pub name: String,
    /// `stage:` (default `test`).
    pub stage: String,
    /// `before_script:` (from `default:` unless the job has its own), flattened.
    pub before_script: Vec<String>,
    /// `script:`, flattened.
    pub script: Vec<String>,
    /// `after_script:`, flattened.
    pub after_script: Vec<String>,
    /// `hooks:pre_get_sources_script:`.
    pub pre_get_sources_script: Vec<String>,
    /// `run:` (CI Steps), the list of steps as written; GitLab hands it to the runner unchanged, which runs it
    /// through GitLab's step-runner (runwright: `service/job_request.rs`).
    pub run: Option<Vec<serde_json::Value>>,
    /// The job's `variables:`.
    pub variables: BTreeMap<String, VariableValue>,
    /// Whether (and which) global variables are inherited (`inherit:variables`).
    pub(crate) inherit_variables: Inherit,
    /// `when:` as written (None: on_success).
    pub when: Option<When>,
    /// `start_in:` for delayed jobs.
    pub start_in: Option<String>,
    /// `allow_failure:` as written.
    pub allow_failure: Option<AllowFailure>,
    /// `needs:`.
    pub needs: Needs,
    /// `dependencies:`.
    pub dependencies: Option<Vec<String>>,
    /// `artifacts:`.
    pub artifacts: Option<Artifacts>,
    /// `cache:` (zero to four).
    pub cache: Vec<Cache>,
    /// `image:`.
    pub image: Option<Image>,
    /// `services:`.
    pub services: Vec<Service>,
    /// `timeout:` in seconds.
    pub timeout: Option<u64>,
    /// `retry:`.
    pub retry: Retry,
    /// `parallel:`.
    pub parallel: Option<Parallel>,
    /// `tags:`.
    pub tags: Vec<String>,
    /// `resource_group:`.
    pub resource_group: Option<String>,
    /// `interruptible:`.
    pub interruptible: Option<bool>,
    /// `coverage:` regex.
    pub coverage: Option<String>,
    /// `environment:`.
    pub environment: Option<Environment>,
    /// `trigger:`.
    pub trigger: Option<Trigger>,
    /// `rules:`.
    pub rules: Option<Vec<Rule>>,
    /// `only:`.
    pub only: Option<Policy>,
    /// `except:`.
    pub except: Option<Policy>,
    /// Notes for keywords that are kept but not acted on offline (`release`, `pages`, `secrets`, …).
    pub notes: Vec<String>,
    /// Where the job is.
    pub(crate) path: YPath,
}

/// GitLab's validation wording: `<job path> config <what>` (e.g. `jobs:build config contains unknown keys: x`).
pub(crate) fn config_err(src: &Source, path: &YPath, what: impl std::fmt::Display) -> Error {
    err(src, path, format!("{} config {what}", gitlab_path(path)))
}

fn err(src: &Source, path: &YPath, msg: impl Into<String>) -> Error {
    Error::config(src.locate(path), msg)
}

/// Flattens a script (`string` or nested arrays of strings, up to GitLab's 10 levels).
pub(crate) fn script(value: &Value, path: &YPath, src: &Source) -> Result<Vec<String>> {
    fn walk(
        v: &Value,
        path: &YPath,
        src: &Source,
        depth: usize,
        out: &mut Vec<String>,
    ) -> Result<()> {
        if depth > 10 {
            return Err(config_err(
                src,
                path,
                "should be an array containing strings and arrays of strings",
            ));
        }
        match v {
            Value::Sequence(s) => {
                for (i, x) in s.iter().enumerate() {
                    walk(x, &path.index(i), src, depth + 1, out)?;
                }
                Ok(())
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                out.push(scalar_string(v).unwrap_or_default());
                Ok(())
            }
            Value::Null if depth > 0 => Ok(()),
            _ => Err(config_err(
                src,
                path,
                "should be a string or a nested array of strings up to 10 levels deep",
            )),
        }
    }
    let mut out = Vec::new();
    walk(value, path, src, 0, &mut out)?;
    Ok(out)
}

fn bool_of(v: &Value, path: &YPath, src: &Source) -> Result<bool> {
    as_bool(v).ok_or_else(|| config_err(src, path, "should be a boolean value"))
}

fn str_of(v: &Value, path: &YPath, src: &Source) -> Result<String> {
    scalar_string(v).ok_or_else(|| config_err(src, path, "should be a string"))
}

fn int_list(v: &Value, path: &YPath, src: &Source) -> Result<Vec<i64>> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(|i| vec![i])
            .ok_or_else(|| err(src, path, "exit code should be an integer")),
        Value::Sequence(s) => s
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_i64().ok_or_else(|| {
                    err(
                        src,
                        &path.index(i),
                        format!("{} should be an integer", gitlab_path(&path.index(i))),
                    )
                })
            })
            .collect(),
        _ => Err(err(
            src,
            path,
            format!(
                "{} should be an integer or an array of integers",
                gitlab_path(path)
            ),
        )),
    }
}

pub(crate) fn parse_image(v: &Value, path: &YPath, src: &Source) -> Result<Image> {
    match v {
        Value::String(s) => Ok(Image {
            name: s.clone(),
            ..Image::default()
        }),
        Value::Mapping(m) => {
            let mut img = Image::default();
            for (k, x) in m {
                let key = key_str(k).unwrap_or_default();
                let kp = path.key(key);
                match key {
                    "name" => img.name = str_of(x, &kp, src)?,
                    "entrypoint" => img.entrypoint = Some(string_list(x, &kp, src)?),
                    "pull_policy" => img.pull_policy = string_list(x, &kp, src)?,
                    "docker" | "kubernetes" => img.docker = Some(to_json(x)),
                    other => {
                        return Err(config_err(
                            src,
                            path,
                            format!("contains unknown keys: {other}"),
                        ))
                    }
                }
            }
            if img.name.is_empty() {
                return Err(config_err(src, path, "missing required keys: name"));
            }
            Ok(img)
        }
        _ => Err(config_err(src, path, "should be a hash or a string")),
    }
}

pub(crate) fn parse_services(v: &Value, path: &YPath, src: &Source) -> Result<Vec<Service>> {
    let Value::Sequence(list) = v else {
        return Err(config_err(src, path, "should be a array"));
    };
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let sp = path.index(i);
        match s {
            Value::String(n) => out.push(Service {
                name: n.clone(),
                ..Service::default()
            }),
            Value::Mapping(m) => {
                let mut svc = Service::default();
                for (k, x) in m {
                    let key = key_str(k).unwrap_or_default();
                    let kp = sp.key(key);
                    match key {
                        "name" => svc.name = str_of(x, &kp, src)?,
                        "alias" => svc.alias = Some(str_of(x, &kp, src)?),
                        "entrypoint" => svc.entrypoint = Some(string_list(x, &kp, src)?),
                        "command" => svc.command = Some(string_list(x, &kp, src)?),
                        "pull_policy" => svc.pull_policy = string_list(x, &kp, src)?,
                        "variables" => {
                            svc.variables =
                                parse_variables(x, &kp, src, VariableSource::JobYaml, false)?
                                    .into_iter()
                                    .map(|(k, v)| (k, v.value))
                                    .collect()
                        }
                        "docker" | "kubernetes" => {}
                        other => {
                            return Err(config_err(
                                src,
                                &sp,
                                format!("contains unknown keys: {other}"),
                            ))
                        }
                    }
                }
                out.push(svc);
            }
            _ => return Err(config_err(src, &sp, "should be a hash or a string")),
        }
    }
    Ok(out)
}

pub(crate) fn parse_artifacts(v: &Value, path: &YPath, src: &Source) -> Result<Artifacts> {
    let Value::Mapping(m) = v else {
        return Err(config_err(src, path, "should be a hash"));
    };
    let mut a = Artifacts {
        when: "on_success".into(),
        ..Artifacts::default()
    };
    for (k, x) in m {
        let key = key_str(k).unwrap_or_default();
        let kp = path.key(key);
        match key {
            "paths" => a.paths = string_list(x, &kp, src)?,
            "exclude" => a.exclude = string_list(x, &kp, src)?,
            "untracked" => a.untracked = bool_of(x, &kp, src)?,
            "when" => {
                let w = str_of(x, &kp, src)?;
                if !matches!(w.as_str(), "on_success" | "on_failure" | "always") {
                    return Err(err(
                        src,
                        &kp,
                        format!(
                            "{} config when should be on_success, on_failure or always",
                            gitlab_path(path)
                        ),
                    ));
                }
                a.when = w;
            }
            "name" => a.name = Some(str_of(x, &kp, src)?),
            "expire_in" => {
                let e = str_of(x, &kp, src)?;
                if e != "never" && parse_duration(&e).is_none() {
                    return Err(err(
                        src,
                        &kp,
                        format!(
                            "{} config expire in should be a duration",
                            gitlab_path(path)
                        ),
                    ));
                }
                a.expire_in = Some(e);
            }
            "expose_as" => a.expose_as = Some(str_of(x, &kp, src)?),
            "reports" => a.reports = Some(to_json(x)),
            "public" | "access" => {}
            other => {
                return Err(config_err(
                    src,
                    path,
                    format!("contains unknown keys: {other}"),
                ))
            }
        }
    }
    Ok(a)
}

pub(crate) fn parse_cache(v: &Value, path: &YPath, src: &Source) -> Result<Vec<Cache>> {
    let one = |v: &Value, path: &YPath| -> Result<Cache> {
        let Value::Mapping(m) = v else {
            return Err(config_err(src, path, "should be a hash"));
        };
        let mut c = Cache {
            key: CacheKey::Key("default".into()),
            paths: Vec::new(),
            untracked: false,
            unprotect: false,
            policy: "pull-push".into(),
            when: "on_success".into(),
            fallback_keys: Vec::new(),
        };
        for (k, x) in m {
            let key = key_str(k).unwrap_or_default();
            let kp = path.key(key);
            match key {
                "key" => {
                    c.key = match x {
                        Value::Mapping(km) => {
                            let files = string_list(
                                km.get("files").unwrap_or(&Value::Null),
                                &kp.key("files"),
                                src,
                            )?;
                            if files.is_empty() || files.len() > 2 {
                                return Err(err(
                                    src,
                                    &kp,
                                    format!(
                                        "{}:files config has to be an array of one or two files",
                                        gitlab_path(&kp)
                                    ),
                                ));
                            }
                            CacheKey::Files {
                                files,
                                prefix: km.get("prefix").and_then(scalar_string),
                            }
                        }
                        _ => {
                            let s = str_of(x, &kp, src)?;
                            // GitLab URI-decodes the key first; docs ("cache:key"): no `/` (`%2F`), and not
                            // only `.` characters, any number of them (`%2E`).
                            let decoded = s
                                .replace("%2F", "/")
                                .replace("%2f", "/")
                                .replace("%2E", ".")
                                .replace("%2e", ".");
                            if decoded.contains('/') {
                                return Err(err(
                                    src,
                                    &kp,
                                    format!(
                                        "{} config cannot contain the \"/\" character",
                                        gitlab_path(&kp)
                                    ),
                                ));
                            }
                            if !decoded.is_empty() && decoded.chars().all(|c| c == '.') {
                                return Err(err(
                                    src,
                                    &kp,
                                    format!(
                                        "{} config cannot be \".\" or \"..\"",
                                        gitlab_path(&kp)
                                    ),
                                ));
                            }
                            CacheKey::Key(s)
                        }
                    }
                }
                "paths" => c.paths = string_list(x, &kp, src)?,
                "untracked" => c.untracked = bool_of(x, &kp, src)?,
                "unprotect" => c.unprotect = bool_of(x, &kp, src)?,
                "policy" => {
                    let p = str_of(x, &kp, src)?;
                    if !matches!(p.as_str(), "pull-push" | "pull" | "push") && !p.contains('$') {
                        return Err(config_err(
                            src,
                            &kp,
                            "should be one of: pull-push, pull, push",
                        ));
                    }
                    c.policy = p;
                }
                "when" => c.when = str_of(x, &kp, src)?,
                "fallback_keys" => c.fallback_keys = string_list(x, &kp, src)?,
                other => {
                    return Err(config_err(
                        src,
                        path,
                        format!("contains unknown keys: {other}"),
                    ))
                }
            }
        }
        Ok(c)
    };
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(s) => {
            if s.len() > 4 {
                return Err(config_err(
                    src,
                    path,
                    "no more than 4 caches can be created",
                ));
            }
            s.iter()
                .enumerate()
                .map(|(i, x)| one(x, &path.index(i)))
                .collect()
        }
        Value::Mapping(m) if m.is_empty() => Ok(Vec::new()),
        other => Ok(vec![one(other, path)?]),
    }
}

fn parse_matrix_rows(v: &Value, path: &YPath, src: &Source) -> Result<Vec<MatrixRow>> {
    let Value::Sequence(rows) = v else {
        return Err(config_err(src, path, "should be an array of hashes"));
    };
    let mut out = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let rp = path.index(i);
        let Value::Mapping(m) = row else {
            return Err(config_err(src, &rp, "should be a hash"));
        };
        let mut r = Vec::new();
        for (k, x) in m {
            let key = scalar_string(k).unwrap_or_default();
            r.push((key.clone(), string_list(x, &rp.key(&key), src)?));
        }
        out.push(r);
    }
    Ok(out)
}

pub(crate) fn parse_needs(
    v: &Value,
    path: &YPath,
    src: &Source,
    notes: &mut Vec<String>,
) -> Result<Vec<Need>> {
    let list: Vec<Value> = match v {
        Value::Sequence(s) => s.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    };
    let mut out = Vec::new();
    for (i, n) in list.iter().enumerate() {
        let np = path.index(i);
        match n {
            Value::String(s) => out.push(Need {
                job: s.clone(),
                artifacts: true,
                optional: false,
                matrix: None,
                pipeline: None,
            }),
            Value::Mapping(m) => {
                if m.get("project").is_some() {
                    notes.push(format!(
                        "{np}: cross-project `needs:project` is not available offline; ignored"
                    ));
                    continue;
                }
                // `needs:pipeline` without `job` mirrors an upstream pipeline's status (multi-project).
                if m.get("pipeline").is_some() && m.get("job").is_none() {
                    notes.push(format!(
                        "{np}: `needs:pipeline` (an upstream pipeline's status) is not available offline; ignored"
                    ));
                    continue;
                }
                let pipeline = m.get("pipeline").and_then(scalar_string);
                let job = m
                    .get("job")
                    .and_then(scalar_string)
                    .ok_or_else(|| config_err(src, &np, "missing required keys: job"))?;
                let artifacts = match m.get("artifacts") {
                    Some(x) => bool_of(x, &np.key("artifacts"), src)?,
                    None => true,
                };
                let optional = match m.get("optional") {
                    Some(x) => bool_of(x, &np.key("optional"), src)?,
                    None => false,
                };
                let matrix = match m.get("parallel") {
                    Some(Value::Mapping(pm)) => match pm.get("matrix") {
                        Some(x) => Some(parse_matrix_rows(
                            x,
                            &np.key("parallel").key("matrix"),
                            src,
                        )?),
                        None => None,
                    },
                    _ => None,
                };
                out.push(Need {
                    job,
                    artifacts,
                    optional,
                    matrix,
                    pipeline,
                });
            }
            other => {
                return Err(err(
                    src,
                    &np,
                    format!(
                        "{} config has unsupported type: {}",
                        gitlab_path(&np),
                        type_name(other)
                    ),
                ))
            }
        }
    }
    if out.len() > 50 {
        return Err(config_err(src, path, "has too many entries (maximum 50)"));
    }
    Ok(out)
}

fn parse_inherit(v: Option<&Value>) -> Inherit {
    match v {
        None => Inherit::All,
        Some(Value::Sequence(s)) => Inherit::Only(s.iter().filter_map(scalar_string).collect()),
        Some(x) => match as_bool(x) {
            Some(false) => Inherit::None,
            _ => Inherit::All,
        },
    }
}

impl JobConfig {
    /// Parses one job. `defaults` is the `default:` mapping (applied to keys the job lacks, per `inherit:`).
    /// The keyword families are read in a fixed order, so that of several errors the same one is reported.
    pub(crate) fn parse(
        name: &str,
        value: &Value,
        defaults: &Mapping,
        src: &Source,
    ) -> Result<JobConfig> {
        let keys = JobKeys::new(name, value, defaults, src)?;
        let inherit_variables =
            parse_inherit(keys.own.get("inherit").and_then(|i| i.get("variables")));
        let mut notes = Vec::new();
        let commands = keys.commands()?;
        let stage = keys.stage()?;
        let when = keys.when(commands.trigger.is_some())?;
        let start_in = keys.start_in(when)?;
        let allow_failure = keys.allow_failure()?;
        let retry = keys.retry()?;
        let timeout = keys.timeout()?;
        let parallel = keys.parallel()?;
        let (needs, dependencies) = keys.needs_and_dependencies(&mut notes)?;
        let environment = keys.environment()?;
        keys.offline_notes(&mut notes);
        let conditions = keys.rules_only_except()?;
        let hooks = keys.hook_scripts()?;
        let variables = keys.variables()?;
        let (artifacts, cache) = keys.artifacts_and_cache()?;
        let (image, services) = keys.image_and_services()?;
        let tags = match keys.get("tags") {
            Some(v) => script(v, &keys.at("tags"), src)?,
            None => Vec::new(),
        };
        let resource_group = keys.get("resource_group").and_then(scalar_string);
        let interruptible = match keys.get("interruptible") {
            Some(v) => Some(bool_of(v, &keys.at("interruptible"), src)?),
            None => None,
        };
        let coverage = keys.get("coverage").and_then(scalar_string);
        Ok(JobConfig {
            name: name.to_string(),
            stage,
            before_script: hooks.before_script,
            script: commands.script,
            run: commands.run,
            after_script: hooks.after_script,
            pre_get_sources_script: hooks.pre_get_sources_script,
            variables,
            inherit_variables,
            when,
            start_in,
            allow_failure,
            needs,
            dependencies,
            artifacts,
            cache,
            image,
            services,
            timeout,
            retry,
            parallel,
            tags,
            resource_group,
            interruptible,
            coverage,
            environment,
            trigger: commands.trigger,
            rules: conditions.rules,
            only: conditions.only,
            except: conditions.except,
            notes,
            path: keys.path,
        })
    }
}

/// One job's keywords as [`JobConfig::parse`] reads them: what the job wrote, the same with the `default:` keys
/// it inherits, and where it is, for the errors.
struct JobKeys<'a> {
    name: &'a str,
    /// The job's own keys (some checks look at what the job itself wrote, not at its defaults).
    own: &'a Mapping,
    /// The job's keys with the `default:` keys it takes.
    merged: Mapping,
    path: YPath,
    src: &'a Source,
}

/// What a job runs: `trigger:`, `run:` (CI Steps) or `script:`.
struct Commands {
    trigger: Option<Trigger>,
    run: Option<Vec<serde_json::Value>>,
    script: Vec<String>,
}

/// When the job is in a pipeline: `rules:`, or the older `only:` / `except:`.
struct Conditions {
    rules: Option<Vec<Rule>>,
    only: Option<Policy>,
    except: Option<Policy>,
}

/// The scripts around the job's own: `hooks:pre_get_sources_script`, `before_script`, `after_script`.
struct HookScripts {
    pre_get_sources_script: Vec<String>,
    before_script: Vec<String>,
    after_script: Vec<String>,
}

impl<'a> JobKeys<'a> {
    /// Checks that the job is a hash of known keywords (fewer for a trigger job) and applies `default:` to the
    /// keys it lacks, as `inherit:default` allows (no deep merge: the job's value replaces).
    fn new(name: &'a str, value: &'a Value, defaults: &Mapping, src: &'a Source) -> Result<Self> {
        let path = YPath::root().key(name);
        let Value::Mapping(own) = value else {
            return Err(err(
                src,
                &path,
                format!("jobs:{name} config should be a hash"),
            ));
        };
        // A job with `trigger:` and no `script:` is a trigger job (GitLab's `Entry::Bridge`), which accepts
        // fewer keywords (docs: "trigger"); a job with `script:` is checked against all job keywords.
        // A job with `script:` is a script job, where `trigger` is unknown (GitLab picks `Entry::Job`).
        let has_script = own.contains_key("script");
        let is_trigger = own.contains_key("trigger") && !has_script;
        let unknown: Vec<&str> = own
            .keys()
            .filter_map(key_str)
            .filter(|k| {
                if is_trigger {
                    !TRIGGER_JOB_KEYWORDS.contains(k)
                } else {
                    !JOB_KEYWORDS.contains(k) || (has_script && *k == "trigger")
                }
            })
            .collect();
        if !unknown.is_empty() {
            return Err(err(
                src,
                &path,
                format!(
                    "jobs:{name} config contains unknown keys: {}",
                    unknown.join(", ")
                ),
            ));
        }
        let inherit_default = parse_inherit(own.get("inherit").and_then(|i| i.get("default")));
        let mut merged = own.clone();
        for (k, v) in defaults {
            if let Some(key) = key_str(k) {
                // Trigger jobs take only the default keywords they accept (`interruptible`).
                if is_trigger && !TRIGGER_JOB_KEYWORDS.contains(&key) {
                    continue;
                }
                if inherit_default.allows(key) && !merged.contains_key(key) {
                    merged.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(JobKeys {
            name,
            own,
            merged,
            path,
            src,
        })
    }

    /// The value of keyword `k`, the job's own or its default.
    fn get(&self, k: &str) -> Option<&Value> {
        self.merged.get(k)
    }

    /// Where keyword `k` is.
    fn at(&self, k: &str) -> YPath {
        self.path.key(k)
    }

    /// An error at `path` with GitLab's message.
    fn err(&self, path: &YPath, msg: impl Into<String>) -> Error {
        err(self.src, path, msg)
    }

    /// `trigger:`, `run:` and `script:`: a job needs one of them; `run:` is a list of step hashes, `script:` a
    /// non-empty script.
    fn commands(&self) -> Result<Commands> {
        let (name, src) = (self.name, self.src);
        let script_v = self.get("script").or(self.get("run"));
        let trigger = match self.get("trigger") {
            Some(t) => Some(parse_trigger(t, &self.at("trigger"), src)?),
            None => None,
        };
        if script_v.is_none() && trigger.is_none() {
            return Err(self.err(
                &self.path,
                format!(
                    "jobs:{name} config should implement the script:, run:, or trigger: keyword"
                ),
            ));
        }
        let run = match self.get("run") {
            None => None,
            Some(Value::Sequence(steps))
                if steps.iter().all(|s| matches!(s, Value::Mapping(_))) =>
            {
                Some(steps.iter().map(to_json).collect())
            }
            Some(_) => {
                return Err(self.err(
                    &self.at("run"),
                    format!("jobs:{name}:run config should be an array of steps (hashes)"),
                ))
            }
        };
        let script_lines = match self.get("script") {
            Some(v) => script(v, &self.at("script"), src)?,
            None => Vec::new(),
        };
        if self.get("script").is_some() && script_lines.is_empty() && trigger.is_none() {
            return Err(self.err(&self.at("script"), format!("jobs:{name}:script config should be a string or a nested array of strings up to 10 levels deep")));
        }
        Ok(Commands {
            trigger,
            run,
            script: script_lines,
        })
    }

    /// `stage:` (or its old name `type:`), `test` by default.
    fn stage(&self) -> Result<String> {
        match self.get("stage").or(self.get("type")) {
            Some(v) => str_of(v, &self.at("stage"), self.src),
            None => Ok("test".into()),
        }
    }

    /// `when:`, one of the values a job (or a trigger job) allows.
    fn when(&self, is_trigger: bool) -> Result<Option<When>> {
        let name = self.name;
        // `never` is for `rules` and `workflow:rules` only (docs: "when"); trigger jobs cannot be delayed
        // (GitLab's `Entry::Bridge::ALLOWED_WHEN`).
        let allowed_when: &[When] = if is_trigger {
            &[When::OnSuccess, When::OnFailure, When::Always, When::Manual]
        } else {
            &[
                When::OnSuccess,
                When::OnFailure,
                When::Always,
                When::Manual,
                When::Delayed,
            ]
        };
        let when = match self.get("when") {
            Some(v) => {
                let s = str_of(v, &self.at("when"), self.src)?;
                Some(
                    When::parse(&s)
                        .filter(|w| allowed_when.contains(w))
                        .ok_or_else(|| {
                            let names: Vec<&str> =
                                allowed_when.iter().map(|w| w.as_str()).collect();
                            self.err(
                                &self.at("when"),
                                format!("jobs:{name} when should be one of: {}", names.join(", ")),
                            )
                        })?,
                )
            }
            None => None,
        };
        Ok(when)
    }

    /// `start_in:`, a delay of at most a week for `when: delayed` and only there (unless the job has `rules`).
    fn start_in(&self, when: Option<When>) -> Result<Option<String>> {
        let name = self.name;
        let start_in = self.get("start_in").and_then(scalar_string);
        // With `rules`, `start_in` belongs in the rule (docs: "start_in"); checked with `only`/`except` below.
        if when == Some(When::Delayed) && !self.own.contains_key("rules") {
            match &start_in {
                None => {
                    return Err(self.err(
                        &self.path,
                        format!("jobs:{name} start in should be a duration"),
                    ))
                }
                Some(s) => match parse_duration(s) {
                    None => {
                        return Err(self.err(
                            &self.at("start_in"),
                            format!("jobs:{name} start in should be a duration"),
                        ))
                    }
                    Some(d) if d > 7 * 86400 => {
                        return Err(self.err(
                            &self.at("start_in"),
                            format!("jobs:{name} start in should not exceed the limit"),
                        ))
                    }
                    Some(_) => {}
                },
            }
        } else if start_in.is_some() && !self.own.contains_key("rules") {
            // "`start_in` only works when `when` is set to `delayed` [...] the configuration is invalid"
            // (docs: "start_in"); GitLab's wording is the absence validator's.
            return Err(self.err(
                &self.at("start_in"),
                format!("jobs:{name} start in must be blank"),
            ));
        }
        Ok(start_in)
    }

    /// `allow_failure:`: a boolean or `exit_codes:`.
    fn allow_failure(&self) -> Result<Option<AllowFailure>> {
        let src = self.src;
        Ok(match self.get("allow_failure") {
            None => None,
            Some(Value::Mapping(am)) => Some(AllowFailure::ExitCodes {
                exit_codes: int_list(
                    am.get("exit_codes").unwrap_or(&Value::Null),
                    &self.at("allow_failure").key("exit_codes"),
                    src,
                )?,
            }),
            Some(v) => Some(AllowFailure::Bool(bool_of(
                v,
                &self.at("allow_failure"),
                src,
            )?)),
        })
    }

    /// `retry:`: a count up to 2, or a hash of `max`, `when` and `exit_codes`.
    fn retry(&self) -> Result<Retry> {
        let (name, src) = (self.name, self.src);
        Ok(match self.get("retry") {
            None => Retry::default(),
            Some(Value::Mapping(rm)) => {
                let rp = self.at("retry");
                let max = match rm.get("max") {
                    Some(v) => v.as_u64().ok_or_else(|| {
                        self.err(&rp.key("max"), "retry max should be an integer")
                    })?,
                    None => 0,
                };
                if max > 2 {
                    return Err(self.err(
                        &rp.key("max"),
                        format!("jobs:{name}:retry max must be less than or equal to 2"),
                    ));
                }
                let when = match rm.get("when") {
                    Some(v) => string_list(v, &rp.key("when"), src)?,
                    None => Vec::new(),
                };
                let exit_codes = match rm.get("exit_codes") {
                    Some(v) => int_list(v, &rp.key("exit_codes"), src)?,
                    None => Vec::new(),
                };
                Retry {
                    max: max as u32,
                    when,
                    exit_codes,
                }
            }
            Some(v) => {
                let max = v.as_u64().ok_or_else(|| {
                    self.err(
                        &self.at("retry"),
                        format!("jobs:{name}:retry config has to be either an integer or a hash"),
                    )
                })?;
                if max > 2 {
                    return Err(self.err(
                        &self.at("retry"),
                        format!("jobs:{name}:retry config must be less than or equal to 2"),
                    ));
                }
                Retry {
                    max: max as u32,
                    ..Retry::default()
                }
            }
        })
    }

    /// `timeout:` in seconds.
    fn timeout(&self) -> Result<Option<u64>> {
        let name = self.name;
        match self.get("timeout") {
            Some(v) => {
                let s = str_of(v, &self.at("timeout"), self.src)?;
                Ok(Some(parse_duration(&s).ok_or_else(|| {
                    self.err(
                        &self.at("timeout"),
                        format!("jobs:{name}:timeout config should be a duration"),
                    )
                })?))
            }
            None => Ok(None),
        }
    }

    /// `parallel:`: a count (GitLab's `Product::Parallel`, a numericality validator, 1 to 200) or `matrix:`.
    fn parallel(&self) -> Result<Option<Parallel>> {
        let name = self.name;
        let v = match self.get("parallel") {
            None => return Ok(None),
            Some(Value::Mapping(pm)) => {
                let mp = self.at("parallel").key("matrix");
                let rows =
                    parse_matrix_rows(pm.get("matrix").unwrap_or(&Value::Null), &mp, self.src)?;
                return Ok(Some(Parallel::Matrix(rows)));
            }
            Some(v) => v,
        };
        let pp = self.at("parallel");
        let n = match v {
            Value::Number(n) => match n.as_i64() {
                Some(n) => n,
                None => {
                    return Err(self.err(
                        &pp,
                        format!("jobs:{name}:parallel config must be an integer"),
                    ))
                }
            },
            _ => {
                return Err(self.err(
                    &pp,
                    format!("jobs:{name}:parallel should be an integer or a hash"),
                ))
            }
        };
        if n < 1 {
            return Err(self.err(
                &pp,
                format!("jobs:{name}:parallel config must be greater than or equal to 1"),
            ));
        }
        if n > crate::matrix::MAX_PARALLEL as i64 {
            return Err(self.err(
                &pp,
                format!(
                    "jobs:{name}:parallel config must be less than or equal to {}",
                    crate::matrix::MAX_PARALLEL
                ),
            ));
        }
        Ok(Some(Parallel::Count(n as u32)))
    }

    /// `needs:` (notes for what offline runs cannot honour) and `dependencies:`.
    fn needs_and_dependencies(
        &self,
        notes: &mut Vec<String>,
    ) -> Result<(Needs, Option<Vec<String>>)> {
        let needs = match self.get("needs") {
            Some(v) => Some(parse_needs(v, &self.at("needs"), self.src, notes)?),
            None => None,
        };
        let dependencies = match self.get("dependencies") {
            Some(v) => Some(string_list(v, &self.at("dependencies"), self.src)?),
            None => None,
        };
        Ok((needs, dependencies))
    }

    /// `environment:`: a name or a hash.
    fn environment(&self) -> Result<Option<Environment>> {
        Ok(match self.get("environment") {
            None => None,
            Some(Value::Mapping(em)) => Some(Environment {
                name: em.get("name").and_then(scalar_string).unwrap_or_default(),
                url: em.get("url").and_then(scalar_string),
                action: em.get("action").and_then(scalar_string),
                on_stop: em.get("on_stop").and_then(scalar_string),
                deployment_tier: em.get("deployment_tier").and_then(scalar_string),
                auto_stop_in: em.get("auto_stop_in").and_then(scalar_string),
            }),
            Some(v) => Some(Environment {
                name: str_of(v, &self.at("environment"), self.src)?,
                ..Environment::default()
            }),
        })
    }

    /// Notes for keywords that are kept but need GitLab: `release`, Pages, `secrets`, `id_tokens`.
    fn offline_notes(&self, notes: &mut Vec<String>) {
        if self.get("release").is_some() {
            notes.push(
                "`release:` is noted but not created offline (it needs GitLab's releases API)"
                    .into(),
            );
        }
        if self.get("pages").is_some() || self.name == "pages" {
            notes.push(
                "GitLab Pages are not deployed offline; the job runs and keeps its artifacts"
                    .into(),
            );
        }
        if self.get("secrets").is_some() {
            notes.push("`secrets:` are not fetched offline".into());
        }
        if self.get("id_tokens").is_some() {
            notes.push("`id_tokens:` are not issued offline".into());
        }
    }

    /// `rules:`, `only:` and `except:`; `rules` excludes the other two and `start_in`.
    fn rules_only_except(&self) -> Result<Conditions> {
        let (name, src) = (self.name, self.src);
        let rules = match self.get("rules") {
            Some(v) => Some(parse_rules(v, &self.at("rules"), src, "job")?),
            None => None,
        };
        let only = match self.get("only") {
            Some(v) => Some(parse_policy(v, &self.at("only"), src)?),
            None => None,
        };
        let except = match self.get("except") {
            Some(v) => Some(parse_policy(v, &self.at("except"), src)?),
            None => None,
        };
        if rules.is_some() {
            // GitLab's `disallowed_keys` validator lists every offending key that is not null.
            let disallowed: Vec<&str> = ["only", "except", "start_in"]
                .into_iter()
                .filter(|k| self.get(k).is_some_and(|v| !v.is_null()))
                .collect();
            if !disallowed.is_empty() {
                return Err(self.err(
                    &self.path,
                    format!(
                        "jobs:{name} config key may not be used with `rules`: {}",
                        disallowed.join(", ")
                    ),
                ));
            }
        }
        Ok(Conditions {
            rules,
            only,
            except,
        })
    }

    /// `hooks:pre_get_sources_script`, `before_script` and `after_script`.
    fn hook_scripts(&self) -> Result<HookScripts> {
        let src = self.src;
        let pre_get_sources_script = match self.get("hooks") {
            Some(Value::Mapping(h)) => match h.get("pre_get_sources_script") {
                Some(v) => script(v, &self.at("hooks").key("pre_get_sources_script"), src)?,
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        let before_script = match self.get("before_script") {
            Some(v) => script(v, &self.at("before_script"), src)?,
            None => Vec::new(),
        };
        let after_script = match self.get("after_script") {
            Some(v) => script(v, &self.at("after_script"), src)?,
            None => Vec::new(),
        };
        Ok(HookScripts {
            pre_get_sources_script,
            before_script,
            after_script,
        })
    }

    /// The job's `variables:`.
    fn variables(&self) -> Result<BTreeMap<String, VariableValue>> {
        match self.get("variables") {
            Some(v) => parse_variables(
                v,
                &self.at("variables"),
                self.src,
                VariableSource::JobYaml,
                false,
            ),
            None => Ok(BTreeMap::new()),
        }
    }

    /// `artifacts:` and `cache:`.
    fn artifacts_and_cache(&self) -> Result<(Option<Artifacts>, Vec<Cache>)> {
        let artifacts = match self.get("artifacts") {
            Some(v) => Some(parse_artifacts(v, &self.at("artifacts"), self.src)?),
            None => None,
        };
        let cache = match self.get("cache") {
            Some(v) => parse_cache(v, &self.at("cache"), self.src)?,
            None => Vec::new(),
        };
        Ok((artifacts, cache))
    }

    /// `image:` and `services:`.
    fn image_and_services(&self) -> Result<(Option<Image>, Vec<Service>)> {
        let image = match self.get("image") {
            Some(v) => Some(parse_image(v, &self.at("image"), self.src)?),
            None => None,
        };
        let services = match self.get("services") {
            Some(v) => parse_services(v, &self.at("services"), self.src)?,
            None => Vec::new(),
        };
        Ok((image, services))
    }
}

/// `trigger:forward:` with GitLab's validation (`Entry::Trigger::Forward`: a hash of two booleans).
fn parse_forward(v: Option<&Value>, path: &YPath, src: &Source) -> Result<Forward> {
    let mut f = Forward::default();
    let m = match v {
        None | Some(Value::Null) => return Ok(f),
        Some(Value::Mapping(m)) => m,
        Some(_) => {
            return Err(config_err(src, path, "should be a hash"));
        }
    };
    for (k, val) in m {
        let key = k.as_str().unwrap_or_default();
        let slot = match key {
            "yaml_variables" => &mut f.yaml_variables,
            "pipeline_variables" => &mut f.pipeline_variables,
            _ => {
                return Err(config_err(
                    src,
                    path,
                    format!("contains unknown keys: {key}"),
                ))
            }
        };
        // GitLab's wording humanizes the attribute: `…:forward yaml variables should be a boolean value`.
        *slot = val.as_bool().ok_or_else(|| {
            err(
                src,
                &path.key(key),
                format!(
                    "{} {} should be a boolean value",
                    gitlab_path(path),
                    key.replace('_', " ")
                ),
            )
        })?;
    }
    Ok(f)
}

/// What a child pipeline from a non-local `trigger:include` entry comes from, in words.
fn non_local_child(entry: &Value) -> String {
    let get = |k: &str| entry.get(k).and_then(scalar_string);
    if let Some(url) = entry.as_str().map(str::to_string).or_else(|| get("remote")) {
        return format!("child pipeline from the remote file `{url}`");
    }
    if let Some(a) = get("artifact") {
        let job = get("job").unwrap_or_default();
        return format!("dynamic child pipeline from the artifact `{a}` of job `{job}`");
    }
    if let Some(p) = get("project") {
        let file = get("file").unwrap_or_default();
        return format!("child pipeline from `{file}` of project `{p}`");
    }
    if let Some(t) = get("template") {
        return format!("child pipeline from the template `{t}`");
    }
    format!(
        "child pipeline from a non-local include ({})",
        serde_json::to_string(&to_json(entry)).unwrap_or_default()
    )
}

fn parse_trigger(v: &Value, path: &YPath, src: &Source) -> Result<Trigger> {
    match v {
        Value::String(p) => Ok(Trigger::Other {
            description: format!("multi-project pipeline in `{p}`"),
        }),
        Value::Mapping(m) => {
            // `mirror` (GitLab 18.2) and `depend` both make the trigger job wait for the downstream
            // pipeline and take its status (docs: "trigger:strategy").
            let depend = matches!(
                m.get("strategy").and_then(|s| s.as_str()),
                Some("depend") | Some("mirror")
            );
            if let Some(p) = m.get("project").and_then(scalar_string) {
                let branch = m
                    .get("branch")
                    .and_then(scalar_string)
                    .map(|b| format!(", branch `{b}`"))
                    .unwrap_or_default();
                return Ok(Trigger::Other {
                    description: format!("multi-project pipeline in `{p}`{branch}"),
                });
            }
            let Some(inc) = m.get("include") else {
                return Err(config_err(
                    src,
                    path,
                    "must specify either project or include",
                ));
            };
            let entries: Vec<Value> = match inc {
                Value::Sequence(s) => s.clone(),
                other => vec![other.clone()],
            };
            let mut include = Vec::new();
            for e in &entries {
                match e {
                    Value::String(s) if !s.starts_with("http://") && !s.starts_with("https://") => {
                        include.push(s.clone())
                    }
                    Value::Mapping(im) if im.get("local").is_some() => {
                        include.push(im.get("local").and_then(scalar_string).unwrap_or_default())
                    }
                    other => {
                        return Ok(Trigger::Other {
                            description: non_local_child(other),
                        })
                    }
                }
            }
            let forward = parse_forward(m.get("forward"), &path.key("forward"), src)?;
            Ok(Trigger::Child {
                include,
                depend,
                forward,
            })
        }
        other => Err(err(
            src,
            path,
            format!(
                "{} config has unsupported type: {}",
                gitlab_path(path),
                type_name(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the job `job` of `yaml` with its `default:` keys, as the configuration does.
    fn parse(yaml: &str) -> Result<JobConfig> {
        let src = Source {
            file: ".gitlab-ci.yml".into(),
            text: yaml.to_string(),
        };
        let root: Mapping = yaml_serde::from_str(yaml).expect("yaml");
        let defaults = root
            .get("default")
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default();
        JobConfig::parse("job", root.get("job").expect("job"), &defaults, &src)
    }

    #[test]
    fn of_several_bad_keywords_the_first_in_reading_order_is_reported() {
        let cases = [
            (
                "job: {script: x, before_script: {a: 1}, when: bogus}",
                "jobs:job when should be one of",
            ),
            (
                "job: {script: x, needs: 5, stage: [1]}",
                "jobs:job:stage config should be a string",
            ),
            (
                "job: {script: x, image: 5, rules: 5}",
                "jobs:job:rules config should be an array of hashes",
            ),
            (
                "job: {script: x, tags: {a: 1}, cache: 5}",
                "jobs:job:cache config should be a hash",
            ),
            (
                "job: {script: x, retry: 9, timeout: forever}",
                "jobs:job:retry config must be less than or equal to 2",
            ),
            (
                "job: {script: [], parallel: 0}",
                "jobs:job:script config should be a string",
            ),
            (
                "job: {script: x, bogus: 1, when: bogus}",
                "jobs:job config contains unknown keys: bogus",
            ),
        ];
        for (yaml, want) in cases {
            let e = parse(yaml).expect_err(yaml).to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn default_keys_fill_what_the_job_lacks_as_inherit_allows() {
        let j = parse("default: {image: alpine, tags: [d]}\njob: {script: x}").expect("job");
        assert_eq!(j.tags, vec!["d".to_string()]);
        assert_eq!(j.image.map(|i| i.name).as_deref(), Some("alpine"));
        let j = parse(
            "default: {image: alpine, tags: [d]}\njob: {script: x, tags: [own], inherit: {default: [tags]}}",
        )
        .expect("job");
        assert_eq!(j.tags, vec!["own".to_string()]);
        assert!(j.image.is_none());
        // A bad default is reported at the job that takes it.
        let e = parse("default: {timeout: never ever}\njob: {script: x}").expect_err("timeout");
        assert!(
            e.to_string()
                .contains("jobs:job:timeout config should be a duration"),
            "{e}"
        );
    }
}
