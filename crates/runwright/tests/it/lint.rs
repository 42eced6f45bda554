//! `runwright lint` and `runwright exec --list` (with `--pipeline-source` and the project variables file):
//! the plan and the resolved configuration, without running a job.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::Output;

const PIPELINE: &str = r#"
stages: [build, test, deploy]
build:
  stage: build
  script: [echo build]
unit:
  stage: test
  needs:
    - job: build
      optional: true
  script: [echo unit]
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
    - if: $CI_COMMIT_BRANCH
      allow_failure: true
lint:
  stage: test
  needs: []
  script: [echo lint]
mr-only:
  stage: test
  script: [echo mr]
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
push-only:
  stage: test
  script: [echo push]
  rules:
    - if: $CI_PIPELINE_SOURCE == "push"
release:
  stage: deploy
  when: manual
  script: [echo release]
never:
  stage: deploy
  script: [echo never]
  rules:
    - when: never
"#;

fn project(h: &Harness, files: &[(&str, &str)]) -> PathBuf {
    h.make_repo("grp/app", files);
    h.path().join("src/grp/app")
}

fn runwright(h: &Harness, dir: &Path, args: &[&str]) -> (Output, String, String) {
    let out = h
        .command()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runwright runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// `exec --list --json` as a value; exit 0 required.
fn list_json(h: &Harness, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["exec", "--list", "--json"];
    args.extend_from_slice(extra);
    let (out, stdout, stderr) = runwright(h, dir, &args);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

fn job<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["name"] == name))
        .unwrap_or_else(|| panic!("no job {name} in {doc:#}"))
}

fn included(doc: &serde_json::Value) -> Vec<&str> {
    doc["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .filter(|j| j["included"] == true)
                .filter_map(|j| j["name"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn list_prints_the_plan_and_runs_nothing() {
    let h = Harness::new().await;
    let dir = project(&h, &[(".gitlab-ci.yml", PIPELINE)]);
    let (out, stdout, stderr) = runwright(&h, &dir, &["exec", "--list"]);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("push pipeline for main: 5 jobs (2 left out by rules)"),
        "{stdout}"
    );
    // Nothing ran: no job header, no pipeline directory.
    assert!(!stdout.contains("=== "), "{stdout}");
    assert!(!h.path().join("state").exists());
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("build"),
        "build build on_success stage order no no rules: GitLab's default only: [branches, tags]"
    );
    assert_eq!(
        line("unit"),
        "test unit on_success build yes rules[1] matched: if: $CI_COMMIT_BRANCH"
    );
    assert_eq!(
        line("lint"),
        "test lint on_success none no no rules: GitLab's default only: [branches, tags]"
    );
    assert_eq!(
        line("mr-only"),
        "test mr-only (excluded) - - no rule matched"
    );
    assert!(line("push-only").contains("rules[0] matched: if: $CI_PIPELINE_SOURCE == \"push\""));
    assert!(line("release").starts_with("deploy release manual stage order yes "));
    assert_eq!(
        line("never"),
        "deploy never (excluded) - - rules[0]: when: never"
    );
    // Plan order: by stage, then file order.
    let names: Vec<&str> = stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        names,
        [
            "build",
            "unit",
            "lint",
            "mr-only",
            "push-only",
            "release",
            "never"
        ]
    );

    let doc = list_json(&h, &dir, &[]);
    assert_eq!(doc["pipeline_source"], "push");
    assert_eq!(doc["ref"], "main");
    assert_eq!(doc["created"], true);
    assert_eq!(doc["reason"], serde_json::Value::Null);
    assert_eq!(
        doc["stages"],
        serde_json::json!([".pre", "build", "test", "deploy", ".post"])
    );
    assert_eq!(
        *job(&doc, "unit"),
        serde_json::json!({
            "name": "unit", "trigger_job": null, "depth": 0, "note": null, "stage": "test", "included": true,
            "when": "on_success", "needs": ["build"], "allow_failure": true,
            "rule": {"kind": "rule", "index": 1, "description": "rules[1] matched: if: $CI_COMMIT_BRANCH"},
        })
    );
    assert_eq!(job(&doc, "build")["needs"], serde_json::Value::Null);
    assert_eq!(job(&doc, "build")["rule"]["kind"], "default");
    assert_eq!(job(&doc, "lint")["needs"], serde_json::json!([]));
    assert_eq!(job(&doc, "release")["when"], "manual");
    assert_eq!(job(&doc, "release")["allow_failure"], true);
    assert_eq!(
        *job(&doc, "mr-only"),
        serde_json::json!({
            "name": "mr-only", "trigger_job": null, "depth": 0, "note": null, "stage": "test", "included": false,
            "when": null, "needs": null, "allow_failure": null,
            "rule": {"kind": "excluded", "index": null, "description": "no rule matched"},
        })
    );
}

#[tokio::test]
async fn merge_request_source_sets_gitlab_mr_variables() {
    let h = Harness::new().await;
    let mr_vars = r#"
mr-vars:
  stage: test
  script: [echo]
  rules:
    - if: $CI_MERGE_REQUEST_SOURCE_BRANCH_NAME == "feature" && $CI_MERGE_REQUEST_TARGET_BRANCH_NAME == "main" && $CI_MERGE_REQUEST_IID == "1" && $CI_MERGE_REQUEST_ID && $CI_MERGE_REQUEST_TITLE == "feature work" && $CI_MERGE_REQUEST_EVENT_TYPE == "detached" && $CI_MERGE_REQUEST_DIFF_BASE_SHA == $EXPECTED_BASE && $CI_COMMIT_REF_NAME == "feature"
branch-var:
  stage: test
  script: [echo]
  rules:
    - if: $CI_COMMIT_BRANCH
only-mr:
  stage: test
  script: [echo]
  only: [merge_requests]
"#;
    let dir = project(&h, &[(".gitlab-ci.yml", &format!("{PIPELINE}{mr_vars}"))]);
    let base = h.git(&dir, &["rev-parse", "HEAD"]);
    h.git(&dir, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(dir.join("f.txt"), "f\n").expect("write");
    h.git(&dir, &["add", "f.txt"]);
    h.git(&dir, &["commit", "-q", "-m", "feature work\n\nthe details"]);

    let push = list_json(&h, &dir, &["--variable", &format!("EXPECTED_BASE={base}")]);
    assert_eq!(push["ref"], "feature");
    assert_eq!(
        included(&push),
        [
            "build",
            "unit",
            "lint",
            "push-only",
            "branch-var",
            "release"
        ]
    );

    let mr = list_json(
        &h,
        &dir,
        &[
            "--pipeline-source",
            "merge_request_event",
            "--variable",
            &format!("EXPECTED_BASE={base}"),
        ],
    );
    assert_eq!(mr["pipeline_source"], "merge_request_event");
    // Jobs without rules get GitLab's default `only: [branches, tags]`: not in a merge request pipeline.
    assert_eq!(included(&mr), ["unit", "mr-only", "mr-vars", "only-mr"]);
    assert_eq!(job(&mr, "unit")["rule"]["index"], 0);
    assert_eq!(
        job(&mr, "push-only")["rule"]["description"],
        "no rule matched"
    );
    assert_eq!(job(&mr, "branch-var")["included"], false);
}

#[tokio::test]
async fn tag_source_runs_for_the_tag_at_head() {
    let h = Harness::new().await;
    let ci = r#"
on-tag:
  script: [echo]
  rules:
    - if: $CI_COMMIT_TAG == "v1.2.0" && $CI_COMMIT_REF_NAME == "v1.2.0" && $CI_PIPELINE_SOURCE == "push"
on-branch:
  script: [echo]
  rules:
    - if: $CI_COMMIT_BRANCH
"#;
    let dir = project(&h, &[(".gitlab-ci.yml", ci)]);
    let (out, stdout, stderr) =
        runwright(&h, &dir, &["exec", "--list", "--pipeline-source", "tag"]);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("no tag points at HEAD") && stderr.contains("git tag"),
        "{stderr}"
    );

    h.git(&dir, &["tag", "v1.2.0"]);
    let doc = list_json(&h, &dir, &["--pipeline-source", "tag"]);
    assert_eq!(doc["pipeline_source"], "tag");
    assert_eq!(doc["ref"], "v1.2.0");
    assert_eq!(included(&doc), ["on-tag"]);
    assert_eq!(job(&doc, "on-branch")["rule"]["kind"], "excluded");
}

#[tokio::test]
async fn unknown_source_and_workflow_rules_without_a_pipeline() {
    let h = Harness::new().await;
    let ci = r#"
workflow:
  rules:
    - if: $CI_PIPELINE_SOURCE == "schedule"
nightly:
  script: [echo]
"#;
    let dir = project(&h, &[(".gitlab-ci.yml", ci)]);
    let (out, stdout, stderr) = runwright(
        &h,
        &dir,
        &["exec", "--list", "--pipeline-source", "nightly"],
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("\"nightly\"")
            && stderr.contains("push, merge_request_event, schedule, web, api, trigger, tag"),
        "{stderr}"
    );

    let (out, stdout, stderr) = runwright(&h, &dir, &["exec", "--list"]);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        stdout,
        "no pipeline is created for this push pipeline: Pipeline filtered out by workflow rules.\n"
    );
    let doc = list_json(&h, &dir, &[]);
    assert_eq!(doc["created"], false);
    assert_eq!(doc["reason"], "Pipeline filtered out by workflow rules.");
    assert_eq!(doc["jobs"], serde_json::json!([]));

    let doc = list_json(&h, &dir, &["--pipeline-source", "schedule"]);
    assert_eq!(doc["created"], true);
    assert_eq!(included(&doc), ["nightly"]);
    assert_eq!(
        job(&doc, "nightly")["rule"]["description"],
        "no rules: in every pipeline workflow:rules create"
    );
}

#[tokio::test]
async fn project_variables_file_sits_below_variable_flags() {
    let h = Harness::new().await;
    let ci = r#"
variables:
  DEPLOY_ENV: from-yaml
staging:
  script: [echo]
  rules:
    - if: $DEPLOY_ENV == "staging" && $REGION == "eu"
qa:
  script: [echo]
  rules:
    - if: $DEPLOY_ENV == "qa" && $REGION == "eu"
"#;
    let dir = project(
        &h,
        &[
            (".gitlab-ci.yml", ci),
            (
                ".gitlab-ci-local-variables.yml",
                "DEPLOY_ENV: prod\nREGION: eu\n",
            ),
            (
                ".runwright/variables.yml",
                "DEPLOY_ENV:\n  value: staging\n  description: where\n",
            ),
        ],
    );
    // `.runwright/variables.yml` over `.gitlab-ci-local-variables.yml`, both over the file's `variables:`.
    assert_eq!(included(&list_json(&h, &dir, &[])), ["staging"]);
    // `--variable` over both.
    assert_eq!(
        included(&list_json(&h, &dir, &["--variable", "DEPLOY_ENV=qa"])),
        ["qa"]
    );

    std::fs::write(
        dir.join(".runwright/variables.yml"),
        "DEPLOY_ENV: staging\nREGION: [eu, us]\n",
    )
    .expect("write");
    let (out, stdout, stderr) = runwright(&h, &dir, &["exec", "--list"]);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains(".runwright/variables.yml:2: "), "{stderr}");
    assert!(stderr.contains("REGION"), "{stderr}");
}

const LINT_CI: &str = r#"
include:
  - local: ci/templates.yml
stages: [build, test]
.defaults: &defaults
  tags: [linux]
build:
  <<: *defaults
  extends: .base
  stage: build
  script: [make]
test:
  extends: .base
  variables:
    MODE: test
  script: !reference [.scripts, run]
"#;

const LINT_TEMPLATES: &str = r#"
.base:
  image: alpine:3
  variables:
    MODE: base
    SHARED: "yes"
.scripts:
  run:
    - echo run
"#;

#[tokio::test]
async fn lint_prints_the_resolved_configuration() {
    let h = Harness::new().await;
    let dir = project(
        &h,
        &[
            (".gitlab-ci.yml", LINT_CI),
            ("ci/templates.yml", LINT_TEMPLATES),
        ],
    );
    // From elsewhere, with -C.
    let (out, yaml, stderr) = runwright(&h, h.path(), &["lint", "-C", &dir.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{yaml}\n{stderr}");
    for gone in [
        "include",
        "extends",
        ".base",
        ".scripts",
        ".defaults",
        "!reference",
        "*defaults",
    ] {
        assert!(!yaml.contains(gone), "{gone} in:\n{yaml}");
    }
    for kept in [
        "build:",
        "test:",
        "image: alpine:3",
        "- echo run",
        "- linux",
        "MODE: test",
        "SHARED: \"yes\"",
    ] {
        assert!(yaml.contains(kept), "{kept} not in:\n{yaml}");
    }

    let (out, stdout, stderr) = runwright(&h, &dir, &["lint", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        doc,
        serde_json::json!({
            "stages": ["build", "test"],
            "build": {
                "image": "alpine:3",
                "variables": {"MODE": "base", "SHARED": "yes"},
                "tags": ["linux"],
                "stage": "build",
                "script": ["make"],
            },
            "test": {
                "image": "alpine:3",
                "variables": {"MODE": "test", "SHARED": "yes"},
                "script": ["echo run"],
            },
        })
    );
}

#[tokio::test]
async fn lint_reports_errors_with_file_and_line() {
    let h = Harness::new().await;
    let dir = project(
        &h,
        &[
            (".gitlab-ci.yml", "include:\n  - local: ci/jobs.yml\n"),
            (
                "ci/jobs.yml",
                "build:\n  script: [make]\ntest:\n  stage: test\n  scirpt: [x]\n",
            ),
        ],
    );
    let (out, stdout, stderr) = runwright(&h, &dir, &["lint"]);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("ci/jobs.yml:3"), "{stderr}");
    assert!(stderr.contains("scirpt"), "{stderr}");

    // A YAML syntax error, in the root file.
    std::fs::write(dir.join(".gitlab-ci.yml"), "build:\n  script: [make\n").expect("write");
    let (out, stdout, stderr) = runwright(&h, &dir, &["lint", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains(".gitlab-ci.yml:"), "{stderr}");
}

/// JOB arguments narrow `--list` to what a run of them would start (`--needs` adds what they need); a job the
/// rules left out can still be asked about; an unknown name is an error.
#[tokio::test]
async fn list_with_job_arguments_shows_what_they_would_run() {
    let h = Harness::new().await;
    let dir = project(&h, &[(".gitlab-ci.yml", PIPELINE)]);
    let doc = list_json(&h, &dir, &["unit"]);
    assert_eq!(included(&doc), ["unit"], "{doc:#}");
    let doc = list_json(&h, &dir, &["unit", "--needs"]);
    assert_eq!(included(&doc), ["build", "unit"], "{doc:#}");
    let doc = list_json(&h, &dir, &["mr-only", "lint"]);
    assert_eq!(included(&doc), ["lint"], "{doc:#}");
    assert_eq!(job(&doc, "mr-only")["included"], false, "{doc:#}");
    let (out, stdout, stderr) = runwright(&h, &dir, &["exec", "--list", "nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("no job named \"nosuch\""), "{stderr}");
}
