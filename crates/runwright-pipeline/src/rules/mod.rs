//! `rules:` and `only`/`except`: GitLab's expression language (lexer, parser, evaluator) and the clauses
//! (`if`, `changes`, `exists`) that decide whether a job (or an include, or the pipeline) is created, and with
//! which `when`, `allow_failure`, `variables` and `needs`.
pub mod eval;
pub mod lexer;
pub mod parser;

use std::collections::BTreeMap;

use yaml_serde::Value;

use crate::error::{Error, Location, Result};
use crate::files::ProjectFiles;
use crate::variables::{
    expand_variables, gitlab_path, parse_variables, VariableSource, VariableValue,
};
use crate::yaml::{as_bool, key_str, scalar_string, type_name, Source, YPath};

/// A parsed expression with its source text, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Expression {
    /// The text, as written.
    pub text: String,
    ast: parser::Expr,
}

impl Expression {
    /// Parses `text`; the error carries the 1-based column.
    pub fn parse(text: &str) -> std::result::Result<Self, parser::ParseError> {
        Ok(Expression {
            text: text.to_string(),
            ast: parser::parse(text)?,
        })
    }

    /// Evaluates with the given variables (already expanded).
    pub fn evaluate(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> std::result::Result<bool, eval::EvalError> {
        eval::evaluate(&self.ast, lookup)
    }
}

/// `rules:changes`: paths or `{paths, compare_to}`.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Globs.
    pub paths: Vec<String>,
    /// Ref to compare against.
    pub compare_to: Option<String>,
}

/// One entry of `rules:`.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// `if:`.
    pub r#if: Option<Expression>,
    /// `changes:`.
    pub changes: Option<Changes>,
    /// `exists:` globs.
    pub exists: Option<Vec<String>>,
    /// `when:`.
    pub when: Option<String>,
    /// `start_in:`.
    pub start_in: Option<String>,
    /// `allow_failure:` (bool only, as GitLab's rules allow).
    pub allow_failure: Option<bool>,
    /// `variables:`.
    pub variables: BTreeMap<String, VariableValue>,
    /// `needs:` (raw, parsed by the job parser).
    pub needs: Option<Value>,
    /// `interruptible:`.
    pub interruptible: Option<bool>,
    /// Where the rule is, for evaluation errors.
    pub location: Location,
}

/// What `rules` need at evaluation time.
pub(crate) struct RuleEnv<'a> {
    /// Variables visible to `if:`, as written: GitLab does not expand variables inside variables there
    /// (docs: "rules:if": "You cannot use nested variables with `if`"; jobs/job_rules: "Variables in a
    /// regular expression are not resolved").
    pub vars: &'a BTreeMap<String, String>,
    /// The same variables expanded, for `changes:`/`exists:` paths (GitLab's `variables_hash_expanded`).
    pub expanded: &'a BTreeMap<String, String>,
    /// The project's files.
    pub files: &'a dyn ProjectFiles,
    /// Whether `changes:` applies (branch and merge request pipelines); otherwise it is true.
    pub changes_apply: bool,
}

impl RuleEnv<'_> {
    fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |n| self.vars.get(n).cloned()
    }
    fn lookup_expanded(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |n| self.expanded.get(n).cloned()
    }
}

const RULE_KEYS: &[&str] = &[
    "if",
    "changes",
    "exists",
    "when",
    "start_in",
    "allow_failure",
    "variables",
    "needs",
    "interruptible",
];

/// Parses `rules:` (nested arrays from `!reference` are flattened). `kind` limits the allowed keys:
/// `"workflow"`, `"include"` or `"job"`.
pub(crate) fn parse_rules(
    value: &Value,
    path: &YPath,
    src: &Source,
    kind: &str,
) -> Result<Vec<Rule>> {
    let mut flat = Vec::new();
    flatten(value, path, &mut flat);
    if !matches!(value, Value::Sequence(_)) {
        return Err(Error::config(
            src.locate(path),
            format!("{} config should be an array of hashes", gitlab_path(path)),
        ));
    }
    let mut out = Vec::new();
    for (v, p) in flat {
        let Value::Mapping(m) = v else {
            return Err(Error::config(
                src.locate(&p),
                format!("{} config should be a hash", gitlab_path(&p)),
            ));
        };
        let mut rule = Rule {
            location: src.locate(&p),
            ..Rule::default()
        };
        let mut unknown = Vec::new();
        for (k, v) in &m {
            let Some(key) = key_str(k) else { continue };
            let kp = p.key(key);
            let allowed = match kind {
                // GitLab accepts (and ignores) `start_in`, `allow_failure` and `needs` in workflow rules
                // (docs: "workflow:rules", issue 436473).
                "workflow" => matches!(
                    key,
                    "if" | "changes"
                        | "exists"
                        | "when"
                        | "start_in"
                        | "allow_failure"
                        | "variables"
                        | "needs"
                        | "auto_cancel"
                ),
                "include" => matches!(key, "if" | "changes" | "exists" | "when"),
                _ => RULE_KEYS.contains(&key),
            };
            if !allowed {
                unknown.push(key.to_string());
                continue;
            }
            match key {
                "if" => {
                    let text = v.as_str().ok_or_else(|| {
                        Error::config(
                            src.locate(&kp),
                            format!("{} should be a string", gitlab_path(&kp)),
                        )
                    })?;
                    let e = Expression::parse(text).map_err(|e| Error::Expression {
                        location: src.locate(&kp),
                        expression: text.to_string(),
                        column: e.column,
                        message: e.message,
                    })?;
                    rule.r#if = Some(e);
                }
                "changes" => {
                    rule.changes = Some(match v {
                        Value::Mapping(cm) => Changes {
                            paths: string_list(
                                cm.get("paths").unwrap_or(&Value::Null),
                                &kp.key("paths"),
                                src,
                            )?,
                            compare_to: cm.get("compare_to").and_then(scalar_string),
                        },
                        _ => Changes {
                            paths: string_list(v, &kp, src)?,
                            compare_to: None,
                        },
                    })
                }
                "exists" => {
                    rule.exists = Some(match v {
                        Value::Mapping(em) => {
                            if em.get("project").is_some() {
                                return Err(Error::config(
                                    src.locate(&kp.key("project")),
                                    "`rules:exists:project` is not available offline: it needs GitLab",
                                ));
                            }
                            string_list(
                                em.get("paths").unwrap_or(&Value::Null),
                                &kp.key("paths"),
                                src,
                            )?
                        }
                        _ => string_list(v, &kp, src)?,
                    })
                }
                "when" => {
                    let w = v.as_str().unwrap_or_default();
                    let ok = match kind {
                        "workflow" | "include" => matches!(w, "always" | "never"),
                        _ => matches!(
                            w,
                            "on_success" | "on_failure" | "always" | "manual" | "delayed" | "never"
                        ),
                    };
                    if !ok {
                        return Err(Error::config(
                            src.locate(&kp),
                            format!(
                                "{} config has an invalid `when`: {}",
                                gitlab_path(&p),
                                crate::yaml::scalar_string(v)
                                    .unwrap_or_else(|| type_name(v).into())
                            ),
                        ));
                    }
                    rule.when = Some(w.to_string());
                }
                "start_in" => rule.start_in = scalar_string(v),
                "allow_failure" => {
                    rule.allow_failure = Some(as_bool(v).ok_or_else(|| {
                        Error::config(
                            src.locate(&kp),
                            format!("{} should be a boolean value", gitlab_path(&kp)),
                        )
                    })?)
                }
                "interruptible" => rule.interruptible = as_bool(v),
                "variables" => {
                    rule.variables = parse_variables(v, &kp, src, VariableSource::Rules, false)?
                }
                "needs" => rule.needs = Some(v.clone()),
                _ => {}
            }
        }
        if !unknown.is_empty() {
            return Err(Error::config(
                src.locate(&p),
                format!(
                    "{} config contains unknown keys: {}",
                    gitlab_path(&p),
                    unknown.join(", ")
                ),
            ));
        }
        if kind == "job" {
            check_rule_delay(&rule, &p, src)?;
        }
        out.push(rule);
    }
    Ok(out)
}

/// A job rule's `start_in` goes with `when: delayed` and only with it, at most one week (GitLab's
/// `Entry::Rules::Rule` validations; docs: "start_in").
fn check_rule_delay(rule: &Rule, p: &YPath, src: &Source) -> Result<()> {
    let delayed = rule.when.as_deref() == Some("delayed");
    let msg = match (&rule.start_in, delayed) {
        (Some(_), false) => "config contains disallowed keys: start_in",
        (None, true) => "start in can't be blank",
        (Some(s), true) => match crate::duration::parse_duration(s) {
            None => "start in should be a duration",
            Some(d) if d > 7 * 86400 => "start in should not exceed the limit",
            Some(_) => return Ok(()),
        },
        (None, false) => return Ok(()),
    };
    Err(Error::config(
        src.locate(p),
        format!("{} {msg}", gitlab_path(p)),
    ))
}

/// Expands the variables of a `changes:`/`exists:` path that exist; an undefined `$VAR` stays part of the
/// path (docs: "rules:changes": "If the `$VAR` variable exists, its value is used. If it does not exist, the
/// `$` is interpreted as being part of a path").
fn expand_path(text: &str, env: &RuleEnv<'_>) -> String {
    crate::variables::expand_existing_variables(text, &env.lookup_expanded())
}

fn flatten(value: &Value, path: &YPath, out: &mut Vec<(Value, YPath)>) {
    match value {
        Value::Sequence(s) => {
            for (i, v) in s.iter().enumerate() {
                if matches!(v, Value::Sequence(_)) {
                    flatten(v, &path.index(i), out);
                } else {
                    out.push((v.clone(), path.index(i)));
                }
            }
        }
        other => out.push((other.clone(), path.clone())),
    }
}

/// A string or a list of strings.
pub(crate) fn string_list(value: &Value, path: &YPath, src: &Source) -> Result<Vec<String>> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(s) => s
            .iter()
            .enumerate()
            .map(|(i, v)| {
                scalar_string(v).ok_or_else(|| {
                    Error::config(
                        src.locate(&path.index(i)),
                        format!("{} should be a string", gitlab_path(&path.index(i))),
                    )
                })
            })
            .collect(),
        v => scalar_string(v).map(|s| vec![s]).ok_or_else(|| {
            Error::config(
                src.locate(path),
                format!("{} should be an array of strings", gitlab_path(path)),
            )
        }),
    }
}

/// Does one rule's clauses all hold?
pub(crate) fn rule_matches(rule: &Rule, env: &RuleEnv<'_>) -> Result<bool> {
    if let Some(e) = &rule.r#if {
        let ok = e.evaluate(&env.lookup()).map_err(|err| Error::Expression {
            location: rule.location.clone(),
            expression: e.text.clone(),
            column: 1,
            message: err.message,
        })?;
        if !ok {
            return Ok(false);
        }
    }
    if let Some(c) = &rule.changes {
        if !changes_match(&c.paths, c.compare_to.as_deref(), env, &rule.location)? {
            return Ok(false);
        }
    }
    if let Some(globs) = &rule.exists {
        if !exists_match(globs, env, &rule.location)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The first matching rule, if any.
pub(crate) fn first_match<'r>(rules: &'r [Rule], env: &RuleEnv<'_>) -> Result<Option<&'r Rule>> {
    for r in rules {
        if rule_matches(r, env)? {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// `changes:`: true when a changed file matches a glob; true when changes are unknown or do not apply.
pub(crate) fn changes_match(
    globs: &[String],
    compare_to: Option<&str>,
    env: &RuleEnv<'_>,
    loc: &Location,
) -> Result<bool> {
    if !env.changes_apply {
        return Ok(true);
    }
    // `compare_to` takes variables (docs: "rules:changes:compare_to", GitLab 17.2).
    let compare_to = compare_to.map(|c| expand_variables(c, &env.lookup_expanded()));
    let changed = env
        .files
        .changed_files(compare_to.as_deref())
        .map_err(|_| Error::config(loc.clone(), "rules:changes:compare_to is not a valid ref"))?;
    let Some(changed) = changed else {
        return Ok(true);
    };
    for g in globs {
        let g = expand_path(g, env);
        if crate::glob::any_match(&g, &changed)
            .map_err(|e| Error::config(loc.clone(), format!("invalid glob `{g}`: {e}")))?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `exists:`: true when a project file matches a glob, or, for a path ending with `/`, a directory does
/// (docs: "rules:exists": "To test the existence of a directory, the path must end with a forward slash").
pub(crate) fn exists_match(globs: &[String], env: &RuleEnv<'_>, loc: &Location) -> Result<bool> {
    let files = env.files.list_files();
    let mut dirs: Option<Vec<String>> = None;
    for g in globs {
        let g = expand_path(g, env);
        let (pattern, candidates) = match g.strip_suffix('/') {
            Some(dir) => {
                let dirs = dirs.get_or_insert_with(|| directories(&files));
                (dir.to_string(), &*dirs)
            }
            None => (g.clone(), &files),
        };
        if crate::glob::any_match(&pattern, candidates)
            .map_err(|e| Error::config(loc.clone(), format!("invalid glob `{g}`: {e}")))?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Every directory that holds a file, as `a`, `a/b` (no trailing `/`).
fn directories(files: &[String]) -> Vec<String> {
    let mut out: Vec<String> = files
        .iter()
        .flat_map(|f| {
            f.match_indices('/')
                .map(|(i, _)| f[..i].to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `only:` / `except:` (refs, variables, changes, kubernetes ignored).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `refs:` (or the plain list form).
    pub refs: Option<Vec<String>>,
    /// `variables:` expressions.
    pub variables: Option<Vec<Expression>>,
    /// `changes:` globs.
    pub changes: Option<Vec<String>>,
    /// Where it is.
    pub location: Location,
}

pub(crate) fn parse_policy(value: &Value, path: &YPath, src: &Source) -> Result<Policy> {
    let mut p = Policy {
        location: src.locate(path),
        ..Policy::default()
    };
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = key_str(k).unwrap_or_default();
                let kp = path.key(key);
                match key {
                    "refs" => p.refs = Some(string_list(v, &kp, src)?),
                    "changes" => {
                        p.changes = Some(match v {
                            Value::Mapping(cm) => {
                                string_list(cm.get("paths").unwrap_or(&Value::Null), &kp, src)?
                            }
                            _ => string_list(v, &kp, src)?,
                        })
                    }
                    "variables" => {
                        let list = string_list(v, &kp, src)?;
                        let mut exprs = Vec::new();
                        for (i, text) in list.iter().enumerate() {
                            exprs.push(Expression::parse(text).map_err(|e| Error::Expression {
                                location: src.locate(&kp.index(i)),
                                expression: text.clone(),
                                column: e.column,
                                message: e.message,
                            })?);
                        }
                        p.variables = Some(exprs);
                    }
                    "kubernetes" => {}
                    other => {
                        return Err(Error::config(
                            src.locate(&kp),
                            format!(
                                "{} config contains unknown keys: {other}",
                                gitlab_path(path)
                            ),
                        ))
                    }
                }
            }
        }
        other => p.refs = Some(string_list(other, path, src)?),
    }
    Ok(p)
}

/// What `only`/`except` need: the ref and the source.
pub(crate) struct RefEnv<'a> {
    pub ref_name: &'a str,
    pub is_tag: bool,
    pub is_branch: bool,
    pub source: &'a str,
}

/// GitLab's `Build::Policy::Refs#matches_pattern?`.
fn ref_matches(pattern: &str, r: &RefEnv<'_>) -> bool {
    if r.is_tag && pattern == "tags" {
        return true;
    }
    if r.is_branch && pattern == "branches" {
        return true;
    }
    // The pipeline-type keywords and the `CI_PIPELINE_SOURCE` values they stand for (docs:
    // ci/yaml/deprecated_keywords, "only:refs / except:refs"; ci/jobs/job_rules, "CI_PIPELINE_SOURCE").
    let source_keyword = match r.source {
        "push" => "pushes",
        "merge_request_event" => "merge_requests",
        "external_pull_request_event" => "external_pull_requests",
        "schedule" => "schedules",
        "trigger" => "triggers",
        "pipeline" => "pipelines",
        other => other, // `api`, `chat`, `external`, `web`
    };
    if source_keyword == pattern {
        return true;
    }
    if !(r.is_branch || r.is_tag) {
        return false;
    }
    // `/regex/flags` (Ruby syntax; GitLab falls back to Ruby's regexp engine here), or an exact ref name.
    if let Some(rest) = pattern.strip_prefix('/') {
        if let Some(end) = rest.rfind('/') {
            if let Ok(re) = eval::compile(&rest[..end], &rest[end + 1..]) {
                return re.is_match(r.ref_name);
            }
        }
    }
    pattern == r.ref_name
}

/// Is a policy satisfied? (all its parts must hold)
pub(crate) fn policy_satisfied(p: &Policy, r: &RefEnv<'_>, env: &RuleEnv<'_>) -> Result<bool> {
    if let Some(refs) = &p.refs {
        if !refs.iter().any(|pat| ref_matches(pat, r)) {
            return Ok(false);
        }
    }
    if let Some(vars) = &p.variables {
        let mut any = false;
        for e in vars {
            let ok = e.evaluate(&env.lookup()).map_err(|err| Error::Expression {
                location: p.location.clone(),
                expression: e.text.clone(),
                column: 1,
                message: err.message,
            })?;
            if ok {
                any = true;
                break;
            }
        }
        if !any {
            return Ok(false);
        }
    }
    if let Some(changes) = &p.changes {
        if !changes_match(changes, None, env, &p.location)? {
            return Ok(false);
        }
    }
    Ok(true)
}
