//! `runwright exec --list`: the plan of the pipeline, and nothing run.
//!
//! Every job of the file is listed in plan order (stage, then file order), the ones that `rules`,
//! `only`/`except` or `when: never` leave out too, so that "why is my job not there" has an answer. The
//! text form is a table; `--json` prints the document described at [`document`]. A child pipeline's jobs
//! (`trigger:include`) follow their trigger job, named `trigger job > job`.

use super::children::{display, Planned as PlannedRun};
use super::schedule::MAX_DEPTH_REACHED;
use runwright_pipeline::{
    ChildPipeline, JobConfig, PipelineContext, PipelinePlan, PlannedJob, ResolvedConfig,
    RuleOutcome, Trigger, WorkflowOutcome,
};
use std::path::Path;
use std::process::ExitCode;

/// The JOB arguments of `exec --list` (and `--needs`, `--manual`): the rows a run of them would start.
pub(super) struct Chosen {
    pub jobs: Vec<String>,
    pub needs: bool,
    pub manual: Vec<String>,
}

/// One row of the list.
struct Row {
    name: String,
    /// A child pipeline's job: the trigger job's row name, and the child's depth (1, 2).
    parent: Option<(String, usize)>,
    /// What a trigger job does not do here, and why.
    note: Option<String>,
    /// A trigger job of a local child pipeline.
    child_trigger: bool,
    stage: String,
    stage_index: usize,
    /// `None`: left out of the pipeline.
    planned: Option<Planned>,
    rule: Rule,
}

/// What only a job in the pipeline has.
struct Planned {
    when: &'static str,
    /// `None`: stage order.
    needs: Option<Vec<String>>,
    allow_failure: bool,
}

struct Rule {
    kind: &'static str,
    index: Option<usize>,
    description: String,
}

/// The line that says no pipeline is created, for `--list` and for a run alike.
pub(super) fn no_pipeline(source: &str, workflow: &WorkflowOutcome) -> String {
    format!(
        "no pipeline is created for this {source} pipeline{}",
        workflow
            .reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    )
}

/// Prints the plan of `file` (planned with its child pipelines).
pub(super) fn run(
    file: &Path,
    planned: &PlannedRun,
    source: &str,
    json: bool,
    chosen: &Chosen,
    branch: &str,
    ctx: &PipelineContext,
) -> anyhow::Result<ExitCode> {
    // The resolved configuration is kept (not only the plan) for what the plan does not say: the stage of a
    // job left out, and the text of the rule that matched.
    let (resolved, plan) = (&planned.resolved, &planned.plan);
    let mut rows = rows(resolved, plan, &planned.children, None);
    if !chosen.jobs.is_empty() {
        // What a run with these JOB arguments would run (with `--needs`, what they need), and the named jobs
        // the rules left out, so that "why is my job not there" still has an answer.
        let in_plan: Vec<String> = chosen
            .jobs
            .iter()
            .filter(|n| plan.job(n).is_some())
            .cloned()
            .collect();
        let manual: Vec<String> = chosen
            .manual
            .iter()
            .filter(|n| plan.job(n).is_some())
            .cloned()
            .collect();
        let mut keep: std::collections::HashSet<String> = chosen.jobs.iter().cloned().collect();
        if !in_plan.is_empty() {
            for s in super::schedule::select(plan, &in_plan, chosen.needs, &manual)? {
                keep.insert(s.job.name.clone());
            }
        }
        let unknown: Vec<&String> = chosen
            .jobs
            .iter()
            .filter(|n| !rows.iter().any(|r| r.parent.is_none() && &r.name == *n))
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
            return Err(crate::ExecError::Usage(format!(
                "no job named {} in {} (its jobs: {})",
                unknown
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                file.display(),
                known.join(", ")
            ))
            .into());
        }
        // A child pipeline's jobs go with their trigger job.
        let mut kept: std::collections::HashSet<String> = std::collections::HashSet::new();
        rows.retain(|r| {
            let keep_it = match &r.parent {
                None => keep.contains(&r.name),
                Some((parent, _)) => kept.contains(parent),
            };
            if keep_it {
                kept.insert(r.name.clone());
            }
            keep_it
        });
    }
    let reference = ctx
        .variables
        .get("CI_COMMIT_REF_NAME")
        .cloned()
        .unwrap_or_else(|| branch.to_string());
    if json {
        let doc = document(source, &reference, plan, &rows);
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        write_stdout(&text(source, &reference, plan, &rows))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the listing. A closed pipe (`--list | head`) goes up with the rest: the binary ends quietly with 0.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the plan to stdout")
}

/// Every job of the file, in plan order, each trigger job followed by its child pipeline's rows; `parent`:
/// the trigger job (row name) and depth of a child pipeline's rows.
fn rows(
    resolved: &ResolvedConfig,
    plan: &PipelinePlan,
    children: &[ChildPipeline],
    parent: Option<(&str, usize)>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let prefix = parent.map(|(p, _)| p);
    let parent_of = || parent.map(|(p, d)| (p.to_string(), d));
    for cfg in &resolved.jobs {
        for job in plan.jobs.iter().filter(|j| j.base_name == cfg.name) {
            rows.push(Row {
                name: display(prefix, &job.name),
                parent: parent_of(),
                stage: job.stage.clone(),
                stage_index: job.stage_index,
                planned: Some(planned(job)),
                note: match &job.trigger {
                    Some(Trigger::Other { description }) => Some(format!(
                        "trigger: {description} is not available offline; the job is skipped"
                    )),
                    _ => None,
                },
                child_trigger: matches!(job.trigger, Some(Trigger::Child { .. })),
                rule: included_rule(job, cfg, resolved),
            });
        }
        for ex in plan.excluded.iter().filter(|e| instance_of(&e.name, cfg)) {
            rows.push(Row {
                name: display(prefix, &ex.name),
                parent: parent_of(),
                stage: cfg.stage.clone(),
                stage_index: resolved
                    .stages
                    .iter()
                    .position(|s| *s == cfg.stage)
                    .unwrap_or(0),
                planned: None,
                note: None,
                child_trigger: false,
                rule: Rule {
                    kind: "excluded",
                    index: None,
                    description: ex.reason.clone(),
                },
            });
        }
    }
    // The plan's order: by stage, file order within one (a stable sort keeps the latter).
    rows.sort_by_key(|r| r.stage_index);
    let depth = parent.map_or(0, |(_, d)| d);
    let mut out = Vec::new();
    for mut row in rows {
        let child = children
            .iter()
            .find(|c| row.planned.is_some() && display(prefix, &c.trigger_job) == row.name);
        if row.child_trigger {
            row.note = match child {
                None => Some(format!("{MAX_DEPTH_REACHED}: the trigger job fails when it runs")),
                Some(c) if !c.plan.workflow.created => Some(format!(
                    "the downstream pipeline could not be created: {}; the trigger job fails when it runs",
                    c.plan.workflow.reason.as_deref().unwrap_or("no jobs")
                )),
                Some(_) => None,
            };
        }
        let name = row.name.clone();
        out.push(row);
        if let Some(c) = child {
            out.extend(child_rows(c, &name, depth + 1));
        }
    }
    out
}

/// The rows of a child pipeline under its trigger job's row `name`.
fn child_rows(c: &ChildPipeline, name: &str, depth: usize) -> Vec<Row> {
    rows(&c.resolved, &c.plan, &c.children, Some((name, depth)))
}

/// Whether `name` (an excluded job's concrete name) is `cfg` or one of its `parallel` instances
/// (`test 1/3`, `build: [linux, amd64]`): the plan names left-out instances, not their job.
fn instance_of(name: &str, cfg: &JobConfig) -> bool {
    name == cfg.name
        || (cfg.parallel.is_some()
            && name
                .strip_prefix(cfg.name.as_str())
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with(": [")))
}

fn planned(job: &PlannedJob) -> Planned {
    Planned {
        when: job.when.as_str(),
        needs: job
            .needs
            .as_ref()
            .map(|n| n.iter().map(|n| n.job.clone()).collect()),
        allow_failure: job.allow_failure,
    }
}

fn included_rule(job: &PlannedJob, cfg: &JobConfig, resolved: &ResolvedConfig) -> Rule {
    match &job.rule {
        RuleOutcome::Default => Rule {
            kind: "default",
            index: None,
            description: if resolved.workflow.rules.is_some() {
                // workflow:rules replace GitLab's default `only` (the plan follows `Processable#compose!`).
                "no rules: in every pipeline workflow:rules create".into()
            } else {
                "no rules: GitLab's default only: [branches, tags]".into()
            },
        },
        RuleOutcome::OnlyExcept => Rule {
            kind: "only_except",
            index: None,
            description: "only/except satisfied".into(),
        },
        RuleOutcome::Rule { index } => {
            let mut parts = Vec::new();
            if let Some(r) = cfg.rules.as_ref().and_then(|r| r.get(*index)) {
                if let Some(e) = &r.r#if {
                    parts.push(format!("if: {}", e.text));
                }
                if let Some(c) = &r.changes {
                    parts.push(format!("changes: [{}]", c.paths.join(", ")));
                }
                if let Some(e) = &r.exists {
                    parts.push(format!("exists: [{}]", e.join(", ")));
                }
            }
            let description = if parts.is_empty() {
                format!("rules[{index}] matched (no condition)")
            } else {
                format!("rules[{index}] matched: {}", parts.join(", "))
            };
            Rule {
                kind: "rule",
                index: Some(*index),
                description,
            }
        }
    }
}

/// The `--list --json` document. Field names are stable:
///
/// ```text
/// {
///   "pipeline_source": "push",      // --pipeline-source as given (`tag` included)
///   "ref": "main",                  // CI_COMMIT_REF_NAME: the branch, or the tag
///   "created": true,                // false: no pipeline (workflow:rules, or no job left)
///   "reason": null,                 // why no pipeline, in GitLab's words; null when created
///   "name": null,                   // workflow:name, expanded; null when none
///   "stages": [".pre", "build", "test", ".post"],
///   "jobs": [{                      // every job of the file, in plan order (stage, then file order)
///     "name": "test 1/2",           // the concrete name (each parallel instance is one entry); a child
///                                   // pipeline's job: `trigger job > job` (`a > b > job` two levels down)
///     "trigger_job": null,          // a child pipeline's job: the name of the trigger job that creates it
///     "depth": 0,                   // 0: the pipeline; 1: a child pipeline; 2: a grandchild
///     "note": null,                 // a trigger job that runs no child here, and why (not available
///                                   // offline, maximum depth, child not created)
///     "stage": "test",
///     "included": true,             // false: rules, only/except or when: never left it out
///     "when": "manual",             // on_success, on_failure, always, manual, delayed; null if excluded
///     "needs": ["build"],           // job names; null: stage order (or excluded); []: starts at once
///     "allow_failure": false,       // null if excluded
///     "rule": {
///       "kind": "rule",             // rule, default (no rules/only/except), only_except, excluded
///       "index": 0,                 // the matching entry of rules: (0-based); null for other kinds
///       "description": "rules[0] matched: if: $CI_PIPELINE_SOURCE == \"push\""
///                                   // for excluded: why (`no rule matched`, `rules[1]: when: never`, …)
///     }
///   }]
/// }
/// ```
fn document(source: &str, reference: &str, plan: &PipelinePlan, rows: &[Row]) -> serde_json::Value {
    let jobs: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "trigger_job": r.parent.as_ref().map(|(p, _)| p),
                "depth": r.parent.as_ref().map_or(0, |(_, d)| *d),
                "note": r.note,
                "stage": r.stage,
                "included": r.planned.is_some(),
                "when": r.planned.as_ref().map(|p| p.when),
                "needs": r.planned.as_ref().and_then(|p| p.needs.clone()),
                "allow_failure": r.planned.as_ref().map(|p| p.allow_failure),
                "rule": {
                    "kind": r.rule.kind,
                    "index": r.rule.index,
                    "description": r.rule.description,
                },
            })
        })
        .collect();
    serde_json::json!({
        "pipeline_source": source,
        "ref": reference,
        "created": plan.workflow.created,
        "reason": plan.workflow.reason,
        "name": plan.workflow.name,
        "stages": plan.stages,
        "jobs": jobs,
    })
}

/// The plan as text, for stdout.
fn text(source: &str, reference: &str, plan: &PipelinePlan, rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let top = || rows.iter().filter(|r| r.parent.is_none());
    let included = top().filter(|r| r.planned.is_some()).count();
    let excluded = top().count() - included;
    let in_children = rows
        .iter()
        .filter(|r| r.parent.is_some() && r.planned.is_some())
        .count();
    if plan.workflow.created {
        let _ = writeln!(
            out,
            "{source} pipeline for {reference}{}: {included} job{} ({excluded} left out by rules){}; nothing is run (--list)",
            plan.workflow
                .name
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            if included == 1 { "" } else { "s" },
            if in_children > 0 {
                format!(", and {in_children} in child pipelines")
            } else {
                String::new()
            }
        );
    } else {
        let _ = writeln!(out, "{}", no_pipeline(source, &plan.workflow));
        if rows.is_empty() {
            return out;
        }
    }
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|r| match &r.planned {
            Some(p) => [
                r.stage.clone(),
                r.name.clone(),
                p.when.to_string(),
                match &p.needs {
                    None => "stage order".to_string(),
                    Some(n) if n.is_empty() => "none".to_string(),
                    Some(n) => n.join(", "),
                },
                if p.allow_failure { "yes" } else { "no" }.to_string(),
                r.rule.description.clone(),
            ],
            None => [
                r.stage.clone(),
                r.name.clone(),
                "(excluded)".to_string(),
                "-".to_string(),
                "-".to_string(),
                r.rule.description.clone(),
            ],
        })
        .collect();
    let header = ["stage", "job", "when", "needs", "allow_failure", "rule"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&table) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for r in rows {
        if let Some(n) = &r.note {
            let _ = writeln!(out, "note: {}: {n}", r.name);
        }
    }
    out
}
