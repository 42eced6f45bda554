//! `runwright exec`: a `.gitlab-ci.yml` in a git checkout, run through the embedded coordinator and the
//! service's own job handling (shell executor).

use crate::harness::*;
use std::path::PathBuf;
use std::process::Output;

const PIPELINE: &str = r#"
stages: [build, test, deploy]
variables:
  GREETING: hello
build:
  stage: build
  script:
    - echo "build says $GREETING to $WHO on $CI_COMMIT_REF_NAME"
    - cat committed.txt
flaky:
  stage: build
  allow_failure: true
  script:
    - echo flaky-output; exit 3
unit:
  stage: test
  needs: [build]
  script:
    - echo unit-output
broken:
  stage: test
  script:
    - echo broken-output; exit 1
cleanup:
  stage: deploy
  when: on_failure
  script:
    - echo cleanup-output
deploy:
  stage: deploy
  script:
    - echo deploy-output
report:
  stage: deploy
  needs: [unit]
  image: alpine:3
  script:
    - echo report-output
release:
  stage: deploy
  when: manual
  script:
    - echo release-output
"#;

fn project(h: &Harness) -> PathBuf {
    h.make_repo(
        "grp/app",
        &[
            (".gitlab-ci.yml", PIPELINE),
            ("committed.txt", "committed-content\n"),
        ],
    );
    h.path().join("src/grp/app")
}

/// `runwright exec` on the shell executor (the pipeline's `image:` job would otherwise go to a docker daemon
/// that has no such image; the docker side is in `docker.rs`).
fn exec(h: &Harness, dir: &std::path::Path, args: &[&str]) -> (Output, String) {
    let out = h
        .command()
        .args(["exec", "--executor", "shell"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runwright exec runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

fn pos(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in output:\n{haystack}"))
}

#[tokio::test]
async fn pipeline_runs_stage_by_stage_and_fails_on_a_failed_job() {
    let h = Harness::new().await;
    let dir = project(&h);
    // One job at a time: the output is in plan order.
    let (out, stdout) = exec(&h, &dir, &["--variable", "WHO=world", "-j", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    // Variables: global, --variable, predefined.
    let build = pos(&stdout, "build says hello to world on main\n");
    assert!(stdout.contains("committed-content\n"), "{stdout}");
    let flaky = pos(&stdout, "flaky-output\n");
    let unit = pos(&stdout, "unit-output\n");
    let broken = pos(&stdout, "broken-output\n");
    let cleanup = pos(&stdout, "cleanup-output\n");
    // `needs: [unit]` only: runs although `broken` in an earlier stage failed.
    let report = pos(&stdout, "report-output\n");
    assert!(
        build < flaky && flaky < unit && unit < broken && broken < cleanup && cleanup < report,
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "note: report: image:/services: the job runs on the shell executor: --executor shell"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("deploy-output"), "{stdout}");
    assert!(!stdout.contains("release-output"), "{stdout}");
    // Not a terminal: no ANSI, no section markers.
    assert!(
        !stdout.contains('\x1b') && !stdout.contains("section_start"),
        "{stdout}"
    );
    let summary = &stdout[pos(&stdout, "\njob ")..];
    for row in [
        ["build", "build", "success"],
        ["flaky", "build", "failed (allowed)"],
        ["unit", "test", "success"],
        ["broken", "test", "failed"],
        ["cleanup", "deploy", "success"],
        ["deploy", "deploy", "skipped"],
        ["report", "deploy", "success"],
        ["release", "deploy", "manual"],
    ] {
        let line = summary
            .lines()
            .find(|l| l.split_whitespace().next() == Some(row[0]))
            .unwrap_or_else(|| panic!("no summary row for {}:\n{summary}", row[0]));
        let rest: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(rest[1], row[1], "{line}");
        assert!(rest[2..].join(" ").starts_with(row[2]), "{line}");
    }
    assert!(summary.contains("pipeline failed"), "{summary}");
}

#[tokio::test]
async fn named_jobs_run_manual_ones_and_committed_leaves_uncommitted_changes_out() {
    let h = Harness::new().await;
    let dir = project(&h);
    std::fs::write(dir.join("committed.txt"), "uncommitted-edit\n").expect("edit");
    let (out, stdout) = exec(&h, &dir, &["--committed", "build", "release"]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("are NOT included"), "{stdout}");
    assert!(stdout.contains("committed-content\n"), "{stdout}");
    assert!(!stdout.contains("uncommitted-edit"), "{stdout}");
    assert!(
        pos(&stdout, "build says hello") < pos(&stdout, "release-output\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("broken-output"), "{stdout}");
    assert!(stdout.contains("pipeline passed"), "{stdout}");
}

#[tokio::test]
async fn invalid_yaml_is_reported_with_the_file_and_exits_2() {
    let h = Harness::new().await;
    h.make_repo(
        "grp/bad",
        &[(".gitlab-ci.yml", "build:\n  script: [echo hi\n  stage: x\n")],
    );
    let (out, stdout) = exec(&h, &h.path().join("src/grp/bad"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains(".gitlab-ci.yml"), "{stderr}");
    assert!(!stdout.contains("==="), "nothing runs: {stdout}");
}

/// The README's main command (`scripts/demo`): the example pipeline passes.
#[tokio::test]
async fn example_pipeline_passes() {
    let h = Harness::new().await;
    let dir = h.example_checkout("example");
    let (out, stdout) = exec(&h, &dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("Hello from the example project"),
        "{stdout}"
    );
    assert!(stdout.contains("ok 1 - greeting"), "{stdout}");
    assert!(stdout.contains("pipeline passed"), "{stdout}");
}

const TRANSFER_PIPELINE: &str = r#"
stages: [build, test]
build:
  stage: build
  cache:
    key: deps
    paths: [vendor/]
  script:
    - if [ -f vendor/dep.txt ]; then echo "cache-hit $(cat vendor/dep.txt)"; else echo cache-miss; mkdir -p vendor; echo "from-run-$RUN" > vendor/dep.txt; fi
    - mkdir -p dist && echo "artifact-of-run-$RUN" > dist/app.txt
  artifacts:
    paths: [dist/]
test:
  stage: test
  script:
    - cat dist/app.txt
    - test ! -e vendor/dep.txt && echo no-cache-here
"#;

/// Artifacts flow from `build` to `test` (the fetch cleans the shared project directory, so only the
/// artifacts bring `dist/` back), and the cache persists from one `runwright exec` run to the next.
#[tokio::test]
async fn artifacts_flow_between_jobs_and_caches_persist_across_runs() {
    let h = Harness::new().await;
    h.make_repo("grp/cached", &[(".gitlab-ci.yml", TRANSFER_PIPELINE)]);
    let dir = h.path().join("src/grp/cached");
    let cache_dir = h.path().join("exec-cache");
    let cache_arg = cache_dir.to_string_lossy().to_string();

    let (out, stdout) = exec(&h, &dir, &["-e", "RUN=1", "--cache-dir", &cache_arg]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("cache-miss"), "{stdout}");
    assert!(stdout.contains("artifact-of-run-1\n"), "{stdout}");
    assert!(stdout.contains("no-cache-here"), "{stdout}");
    // GitLab's key on a protected default branch, in GitLab's local layout.
    assert!(
        cache_dir
            .join("local/cached/deps-protected/cache.zip")
            .is_file(),
        "{stdout}"
    );

    let (out, stdout) = exec(&h, &dir, &["-e", "RUN=2", "--cache-dir", &cache_arg]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("cache-hit from-run-1"), "{stdout}");
    assert!(stdout.contains("artifact-of-run-2\n"), "{stdout}");
}

/// The summary table's row of `job`, split on whitespace.
fn summary_row<'a>(stdout: &'a str, job: &str) -> Option<Vec<&'a str>> {
    let summary = &stdout[stdout.find("\njob ")?..];
    summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(job))
        .map(|l| l.split_whitespace().collect())
}

fn git_state(h: &Harness, dir: &std::path::Path) -> (String, String, String) {
    (
        h.git(dir, &["status", "--porcelain", "--untracked-files=all"]),
        h.git(dir, &["rev-parse", "HEAD"]),
        h.git(dir, &["diff", "--cached"]),
    )
}

const WORKTREE_PIPELINE: &str = r#"
show:
  script:
    - cat committed.txt
    - cat untracked.txt
    - test ! -e gone.txt && echo gone-is-gone-$((1+1))
    - test ! -e ignored.txt && echo ignored-stays-out-$((1+1))
    - echo "head=$(git rev-parse HEAD) sha=$CI_COMMIT_SHA"
"#;

/// By default the jobs run the working tree: an uncommitted edit, a deletion and an untracked file are there,
/// an ignored file is not, `git rev-parse HEAD` is `CI_COMMIT_SHA`, and the user's index and HEAD stay put.
#[tokio::test]
async fn the_working_tree_is_run_by_default_and_the_checkout_stays_untouched() {
    let h = Harness::new().await;
    let head = h.make_repo(
        "grp/wt",
        &[
            (".gitlab-ci.yml", WORKTREE_PIPELINE),
            (".gitignore", "ignored.txt\n"),
            ("committed.txt", "committed-content\n"),
            ("gone.txt", "to be deleted\n"),
            ("staged.txt", "v1\n"),
        ],
    );
    let dir = h.path().join("src/grp/wt");
    std::fs::write(dir.join("committed.txt"), "uncommitted-edit\n").expect("edit");
    std::fs::write(dir.join("untracked.txt"), "untracked-content\n").expect("new file");
    std::fs::write(dir.join("ignored.txt"), "secret\n").expect("ignored file");
    std::fs::remove_file(dir.join("gone.txt")).expect("delete");
    // A staged change with a different unstaged one on top: the index must keep the staged one.
    std::fs::write(dir.join("staged.txt"), "v2\n").expect("stage");
    h.git(&dir, &["add", "staged.txt"]);
    std::fs::write(dir.join("staged.txt"), "v3\n").expect("edit again");
    let before = git_state(&h, &dir);

    let (out, stdout) = exec(&h, &dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("\nuncommitted-edit\n"), "{stdout}");
    assert!(stdout.contains("\nuntracked-content\n"), "{stdout}");
    assert!(stdout.contains("\ngone-is-gone-2\n"), "{stdout}");
    assert!(stdout.contains("\nignored-stays-out-2\n"), "{stdout}");
    assert!(stdout.contains("untracked files included"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("head="))
        .unwrap_or_else(|| panic!("no head= line:\n{stdout}"));
    let (job_head, sha) = line
        .strip_prefix("head=")
        .and_then(|l| l.split_once(" sha="))
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(job_head, sha, "{stdout}");
    assert_ne!(sha, head, "the working tree's own commit: {stdout}");
    // On top of HEAD.
    assert_eq!(h.git(&dir, &["rev-parse", &format!("{sha}^")]), head);

    assert_eq!(git_state(&h, &dir), before, "the checkout changed");
    assert_eq!(h.git(&dir, &["show", ":staged.txt"]), "v2");
}

const RENDEZVOUS_PIPELINE: &str = r#"
stages: [test]
a:
  stage: test
  script:
    - touch "$MARKS/a"
    - for i in $(seq $((WAIT * 10))); do [ -e "$MARKS/b" ] && break; sleep 0.1; done
    - echo "a-result $(test -e "$MARKS/b" && echo overlap || echo alone)"
b:
  stage: test
  script:
    - touch "$MARKS/b"
    - for i in $(seq $((WAIT * 10))); do [ -e "$MARKS/a" ] && break; sleep 0.1; done
    - echo "b-result $(test -e "$MARKS/a" && echo overlap || echo alone)"
"#;

/// With `-j 2` the two jobs of a stage run at once: each waits for the other's marker file, so both see it
/// only if they overlap; their lines carry `[job] ` prefixes. `-j 1` runs them one after the other.
#[tokio::test]
async fn jobs_run_in_parallel_up_to_the_concurrency() {
    let h = Harness::new().await;
    h.make_repo("grp/par", &[(".gitlab-ci.yml", RENDEZVOUS_PIPELINE)]);
    let dir = h.path().join("src/grp/par");

    let marks = h.path().join("marks-parallel");
    std::fs::create_dir_all(&marks).expect("marks");
    let marks_var = format!("MARKS={}", marks.display());
    let (out, stdout) = exec(&h, &dir, &["-j", "2", "-e", &marks_var, "-e", "WAIT=60"]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("\n[a] a-result overlap\n"), "{stdout}");
    assert!(stdout.contains("\n[b] b-result overlap\n"), "{stdout}");
    // Every trace line is prefixed; only runwright's own lines are not.
    for l in stdout.lines() {
        assert!(
            l.starts_with("[a] ")
                || l.starts_with("[b] ")
                || l.starts_with("===")
                || l.starts_with("note:")
                || l.starts_with("runwright exec:")
                || l.starts_with("pipeline ")
                || l.is_empty()
                || summary_row(&stdout, l.split_whitespace().next().unwrap_or("-")).is_some(),
            "unprefixed line {l:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains('\x1b'), "{stdout}");
    assert!(
        stdout.contains("exit code"),
        "summary has an exit code column: {stdout}"
    );

    let marks = h.path().join("marks-sequential");
    std::fs::create_dir_all(&marks).expect("marks");
    let marks_var = format!("MARKS={}", marks.display());
    let (out, stdout) = exec(&h, &dir, &["-j", "1", "-e", &marks_var, "-e", "WAIT=2"]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("\na-result alone\n"), "{stdout}");
    assert!(
        stdout.contains("\nb-result overlap\n"),
        "b sees a's marker: {stdout}"
    );
    assert!(!stdout.contains("[a] "), "{stdout}");
}

const STATE_PIPELINE: &str = r#"
stages: [build, test]
build:
  stage: build
  script:
    - mkdir -p dist && echo built > dist/app.txt
    - printf '\033[32mgreen-output\033[0m\n'
  artifacts:
    paths: [dist/]
check:
  stage: test
  allow_failure: true
  script:
    - cat dist/app.txt
    - exit 3
"#;

/// Every run leaves `<state dir>/<n>/` with the plan, each job's full log (ANSI kept), its artifacts and a
/// summary with exit codes.
#[tokio::test]
async fn each_run_keeps_a_pipeline_directory() {
    let h = Harness::new().await;
    h.make_repo("grp/state", &[(".gitlab-ci.yml", STATE_PIPELINE)]);
    let dir = h.path().join("src/grp/state");
    let state = h.path().join("state");

    let (out, stdout) = exec(&h, &dir, &[]);
    assert_eq!(out.status.code(), Some(0), "allowed failure: {stdout}");
    let run = state.join("1");
    assert!(
        stdout.contains(&format!("pipeline directory: {}\n", run.display())),
        "{stdout}"
    );
    let row = summary_row(&stdout, "check").unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(row.last(), Some(&"3"), "exit code column: {row:?}");

    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("plan.json")).expect("plan.json"))
            .expect("plan is JSON");
    let names: Vec<&str> = plan["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(names, ["build", "check"]);

    let build_log = std::fs::read_to_string(run.join("build.log")).expect("build.log");
    assert!(build_log.contains("\x1b[32mgreen-output"), "{build_log}");
    assert!(
        build_log.contains("section_start:"),
        "the full trace: {build_log}"
    );
    let check_log = std::fs::read_to_string(run.join("check.log")).expect("check.log");
    assert!(check_log.contains("built"), "{check_log}");

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).expect("summary.json"))
            .expect("summary is JSON");
    assert_eq!(summary["status"], "passed", "{summary}");
    let job = |name: &str| {
        summary["jobs"]
            .as_array()
            .and_then(|a| a.iter().find(|j| j["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {summary}"))
    };
    assert_eq!(job("check")["status"], "failed");
    assert_eq!(job("check")["allowed_failure"], true);
    assert_eq!(job("check")["exit_code"], 3);
    assert_eq!(job("build")["status"], "success");
    assert_eq!(job("build")["log"], "build.log");
    let artifacts = job("build")["artifacts"].clone();
    let first = artifacts[0].as_str().unwrap_or_else(|| panic!("{summary}"));
    assert!(first.starts_with("artifacts/build/"), "{first}");
    let archive = std::fs::read(run.join(first)).expect("artifact copied");
    assert!(archive.starts_with(b"PK"), "a zip archive");

    let (out, stdout) = exec(&h, &dir, &["build"]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(state.join("2/summary.json").is_file(), "{stdout}");
    assert!(!state.join("2/check.log").exists(), "check did not run");
}

/// `--needs` with a JOB runs what it needs, transitively, and nothing else.
#[tokio::test]
async fn needs_adds_what_named_jobs_need() {
    let h = Harness::new().await;
    let dir = project(&h);
    let (out, stdout) = exec(&h, &dir, &["--needs", "report", "-j", "1"]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let build = pos(&stdout, "build says hello");
    let unit = pos(&stdout, "unit-output\n");
    let report = pos(&stdout, "report-output\n");
    assert!(build < unit && unit < report, "{stdout}");
    for absent in [
        "flaky-output",
        "broken-output",
        "deploy-output",
        "cleanup-output",
    ] {
        assert!(!stdout.contains(absent), "{absent}: {stdout}");
    }
    for job in ["build", "unit", "report"] {
        let row = summary_row(&stdout, job).unwrap_or_else(|| panic!("{job}: {stdout}"));
        assert_eq!(row[2], "success", "{row:?}");
    }
    assert!(summary_row(&stdout, "flaky").is_none(), "{stdout}");
}

/// `--manual JOB` plays that manual job in the full pipeline; other manual jobs stay manual.
#[tokio::test]
async fn manual_starts_a_manual_job_in_the_full_run() {
    let h = Harness::new().await;
    h.make_repo(
        "grp/manual",
        &[(
            ".gitlab-ci.yml",
            "build:\n  script: [echo build-output]\nrelease:\n  when: manual\n  script: [echo release-output]\npublish:\n  when: manual\n  script: [echo publish-output]\n",
        )],
    );
    let dir = h.path().join("src/grp/manual");
    let (out, stdout) = exec(&h, &dir, &["--manual", "release"]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("build-output\n"), "{stdout}");
    assert!(stdout.contains("release-output\n"), "{stdout}");
    assert!(!stdout.contains("publish-output"), "{stdout}");
    assert_eq!(
        summary_row(&stdout, "release").map(|r| r[2]),
        Some("success")
    );
    assert_eq!(
        summary_row(&stdout, "publish").map(|r| r[2]),
        Some("manual")
    );

    let (out, stdout) = exec(&h, &dir, &["--manual", "nope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stdout}");
    assert!(stderr.contains("no job named \"nope\""), "{stderr}");
}

/// A tag pipeline's jobs run on the tag: CI_COMMIT_TAG and CI_COMMIT_REF_NAME are the tag, there is no
/// CI_COMMIT_BRANCH, and the checkout has the tag (as GitLab's refspecs fetch it).
#[tokio::test]
async fn tag_pipelines_give_their_jobs_the_tag_as_ref() {
    let h = Harness::new().await;
    h.make_repo(
        "grp/tagged",
        &[(
            ".gitlab-ci.yml",
            "release:\n  rules:\n    - if: $CI_COMMIT_TAG\n  script:\n    - echo \"ref=$CI_COMMIT_REF_NAME tag=$CI_COMMIT_TAG branch=${CI_COMMIT_BRANCH:-none} protected=$CI_COMMIT_REF_PROTECTED\"\n    - git describe --tags --exact-match\n",
        )],
    );
    let dir = h.path().join("src/grp/tagged");
    h.git(&dir, &["tag", "v1.0"]);
    let (out, stdout) = exec(&h, &dir, &["--pipeline-source", "tag"]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("ref=v1.0 tag=v1.0 branch=none protected=false\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\nv1.0\n"), "{stdout}");
}

const MR_PIPELINE: &str = r#"
mr-job:
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
      changes: ["src/**/*"]
  script:
    - echo "ref=$CI_COMMIT_REF_NAME branch=${CI_COMMIT_BRANCH:-none} source=$CI_PIPELINE_SOURCE iid=$CI_MERGE_REQUEST_IID from=$CI_MERGE_REQUEST_SOURCE_BRANCH_NAME into=$CI_MERGE_REQUEST_TARGET_BRANCH_NAME path=$CI_MERGE_REQUEST_REF_PATH protected=$CI_COMMIT_REF_PROTECTED"
    - echo "base=$CI_MERGE_REQUEST_DIFF_BASE_SHA head=$(git rev-parse HEAD)"
    - git fetch -q origin "+$CI_MERGE_REQUEST_REF_PATH:$CI_MERGE_REQUEST_REF_PATH"
    - echo "mr-ref=$(git rev-parse $CI_MERGE_REQUEST_REF_PATH)"
docs-job:
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
      changes: ["docs/**/*"]
  script: [echo docs]
readme-since-main:
  rules:
    - changes:
        paths: [README.md]
        compare_to: refs/heads/main
  script: [echo readme]
"#;

/// A merge request pipeline's jobs get GitLab's merge request ref: CI_COMMIT_REF_NAME is the source branch,
/// there is no CI_COMMIT_BRANCH, `CI_MERGE_REQUEST_*` are set, the checkout says `ref is
/// refs/merge-requests/1/head` and that ref exists on the served repository. `rules:changes` compares with the
/// merge base of the target branch (src/ changed on the branch, docs/ only on main), `compare_to` too.
#[tokio::test]
async fn merge_request_pipelines_run_on_the_merge_request_ref_and_diff_against_the_target() {
    let h = Harness::new().await;
    h.make_repo(
        "grp/mr",
        &[
            (".gitlab-ci.yml", MR_PIPELINE),
            ("docs/a.md", "a\n"),
            ("README.md", "r\n"),
        ],
    );
    let dir = h.path().join("src/grp/mr");
    let base = h.git(&dir, &["rev-parse", "HEAD"]);
    h.git(&dir, &["checkout", "-q", "-b", "feature"]);
    h.commit("grp/mr", &[("src/app.txt", "app\n")], "feature work");
    // main moves on after the branch point: its docs change is not the merge request's.
    h.git(&dir, &["checkout", "-q", "main"]);
    h.commit("grp/mr", &[("docs/a.md", "changed on main\n")], "docs");
    h.git(&dir, &["checkout", "-q", "feature"]);
    let (out, stdout) = exec(
        &h,
        &dir,
        &["--pipeline-source", "merge_request_event", "--committed"],
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("ref=feature branch=none source=merge_request_event iid=1 from=feature into=main path=refs/merge-requests/1/head protected=false\n"),
        "{stdout}"
    );
    let head = h.git(&dir, &["rev-parse", "HEAD"]);
    assert!(
        stdout.contains(&format!("base={base} head={head}\n")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("mr-ref={head}\n")), "{stdout}");
    assert!(
        stdout.contains("as detached HEAD (ref is refs/merge-requests/1/head)"),
        "{stdout}"
    );
    assert!(!stdout.contains("=== docs-job"), "{stdout}");
    assert!(!stdout.contains("=== readme-since-main"), "{stdout}");

    // --list says the same without running.
    let (out, stdout) = exec(
        &h,
        &dir,
        &[
            "--pipeline-source",
            "merge_request_event",
            "--list",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let included = |name: &str| {
        doc["jobs"]
            .as_array()
            .and_then(|j| j.iter().find(|j| j["name"] == name))
            .map(|j| j["included"].clone())
    };
    assert_eq!(included("mr-job"), Some(true.into()), "{stdout}");
    assert_eq!(included("docs-job"), Some(false.into()), "{stdout}");

    // A README change in the working tree: changed since main's merge base.
    std::fs::write(dir.join("README.md"), "edited\n").expect("edit");
    let (_, stdout) = exec(&h, &dir, &["--list", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let readme = doc["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["name"] == "readme-since-main"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(readme["included"], true, "{stdout}");
}

/// `rules:changes` in a push pipeline compares with the previous push: what `origin` has of the branch (the
/// uncommitted working tree included), or, when that is the commit itself, its parent; a branch `origin` does
/// not have is a new branch, where `changes` is true. A `compare_to` that names nothing is GitLab's error and
/// runs nothing.
#[tokio::test]
async fn push_pipelines_diff_against_origins_branch() {
    let h = Harness::new().await;
    h.make_repo(
        "grp/push",
        &[
            (
                ".gitlab-ci.yml",
                "docs:\n  rules:\n    - changes: [\"docs/*\"]\n  script: [echo docs]\napi:\n  rules:\n    - changes: [\"api/*\"]\n  script: [echo api]\n",
            ),
            ("docs/a.md", "a\n"),
            ("api/b.txt", "b\n"),
        ],
    );
    let dir = h.path().join("src/grp/push");
    let list = |h: &Harness| {
        let (out, stdout) = exec(h, &dir, &["--list", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        doc["jobs"]
            .as_array()
            .map(|jobs| {
                jobs.iter()
                    .filter(|j| j["included"] == true)
                    .filter_map(|j| j["name"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    // No origin: a new branch, every `changes` is true.
    assert_eq!(list(&h), ["docs", "api"]);
    let bare = h.path().join("git/grp/push.git");
    h.git(&dir, &["remote", "add", "origin", &bare.to_string_lossy()]);
    h.git(&dir, &["fetch", "-q", "origin"]);
    // Pushed already: the pipeline of that push, what its commit changed (the first commit has no parent:
    // unknown, every `changes` true).
    assert_eq!(list(&h), ["docs", "api"]);
    h.commit("grp/push", &[("api/b.txt", "b2\n")], "api change");
    h.git(&dir, &["fetch", "-q", "origin"]);
    assert_eq!(list(&h), ["api"]);
    // Something to push: what it would change (the working tree's edit).
    std::fs::write(dir.join("docs/a.md"), "edited\n").expect("edit");
    assert_eq!(list(&h), ["docs"]);

    std::fs::write(
        dir.join(".gitlab-ci.yml"),
        "docs:\n  rules:\n    - changes:\n        paths: [\"docs/*\"]\n        compare_to: refs/heads/nope\n  script: [echo docs]\n",
    )
    .expect("ci file");
    let (out, stdout) = exec(&h, &dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert_eq!(
        stderr.trim(),
        "error: invalid CI configuration: .gitlab-ci.yml:3: docs.rules[0]: rules:changes:compare_to is not a valid ref",
        "{stdout}"
    );
    assert!(!stdout.contains("=== docs"), "{stdout}");
}

const PARENT_PIPELINE: &str = r#"
stages: [build, deploy, after]
variables:
  GLOBAL: g
build:
  stage: build
  script: [echo build-output > parent.txt]
  artifacts:
    paths: [parent.txt]
deploy-child:
  stage: deploy
  variables:
    TARGET: staging
    PARENT_ID: $CI_PIPELINE_ID
  trigger:
    include: ci/child.yml
    strategy: depend
notify:
  stage: deploy
  trigger:
    include:
      - local: ci/notify.yml
    forward:
      pipeline_variables: true
remote:
  stage: deploy
  trigger: other/project
after:
  stage: after
  script: [echo after-output]
"#;

const CHILD_PIPELINE: &str = r#"
workflow:
  rules:
    - if: $CI_PIPELINE_SOURCE == "parent_pipeline"
child-build:
  stage: build
  script:
    - echo "child source=$CI_PIPELINE_SOURCE id=$CI_PIPELINE_ID parent=$PARENT_ID target=$TARGET global=$GLOBAL who=${WHO:-unset} protected=$CI_COMMIT_REF_PROTECTED"
    - echo child-artifact > child.txt
  artifacts:
    paths: [child.txt]
child-test:
  stage: test
  script: [cat child.txt]
from-parent:
  stage: test
  needs:
    - pipeline: $PARENT_ID
      job: build
  script:
    - echo "from parent $(cat parent.txt)"
"#;

/// `trigger:include` runs a child pipeline (docs: ci/pipelines/downstream_pipelines): its own plan with
/// `CI_PIPELINE_SOURCE=parent_pipeline` and its own id, the trigger job's variables (and the global ones) passed
/// down, the parent's pipeline variables only with `forward:pipeline_variables`; artifacts flow inside it;
/// `strategy: depend` makes the trigger job wait and take its status, so the next stage waits too. Its jobs
/// are listed, summarised and logged under the trigger job's name. A multi-project trigger is noted.
#[tokio::test]
async fn trigger_include_runs_a_child_pipeline() {
    let h = Harness::new().await;
    h.make_repo(
        "grp/parent",
        &[
            (".gitlab-ci.yml", PARENT_PIPELINE),
            ("ci/child.yml", CHILD_PIPELINE),
            (
                "ci/notify.yml",
                "notify-job:\n  script: echo \"notify who=$WHO target=${TARGET:-none}\"\n",
            ),
        ],
    );
    let dir = h.path().join("src/grp/parent");
    let (out, stdout) = exec(&h, &dir, &["-e", "WHO=me", "-j", "1"]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "child source=parent_pipeline id=2 parent=1 target=staging global=g who=unset protected=true\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("notify who=me target=none\n"), "{stdout}");
    assert!(
        stdout.contains("=== deploy-child (deploy): created child pipeline 2 (ci/child.yml); strategy: depend, the trigger job takes its status\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("=== notify (deploy): created child pipeline 3 (ci/notify.yml)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--- remote (deploy): skipped — trigger: multi-project pipeline in `other/project` is not available offline"),
        "{stdout}"
    );
    // The child's artifact reached its next stage; `after` waited for the child (strategy: depend).
    // needs:pipeline:job brought the parent's artifact into the child.
    assert!(stdout.contains("from parent build-output\n"), "{stdout}");
    let artifact = pos(&stdout, "\nchild-artifact\n");
    let finished = pos(&stdout, "=== deploy-child (deploy): success in ");
    let after = pos(&stdout, "after-output\n");
    assert!(artifact < finished && finished < after, "{stdout}");
    let summary = &stdout[pos(&stdout, "\njob ")..];
    for (job, status) in [
        ("deploy-child", "success"),
        ("deploy-child > child-build", "success"),
        ("deploy-child > child-test", "success"),
        ("notify > notify-job", "success"),
        ("remote", "skipped"),
        ("after", "success"),
    ] {
        assert!(
            summary
                .lines()
                .any(|l| l.starts_with(&format!("{job} ")) && l.contains(status)),
            "no {job} {status} in:\n{summary}"
        );
    }
    let run_dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pipeline directory: "))
        .map(PathBuf::from)
        .expect("pipeline directory");
    let logs: Vec<String> = std::fs::read_dir(&run_dir)
        .expect("run dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let child_log = logs
        .iter()
        .find(|f| f.contains("child-build") && f.ends_with(".log"))
        .unwrap_or_else(|| panic!("no child-build log in {logs:?}"));
    let text = std::fs::read_to_string(run_dir.join(child_log)).expect("log");
    assert!(text.contains("child source=parent_pipeline"), "{text}");

    // --list shows the child pipelines' jobs under their trigger jobs.
    let (out, stdout) = exec(&h, &dir, &["--list"]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("5 jobs (0 left out by rules), and 4 in child pipelines"),
        "{stdout}"
    );
    let child_row = pos(&stdout, "deploy-child > child-build");
    assert!(pos(&stdout, "deploy-child ") < child_row, "{stdout}");
    assert!(
        stdout.contains("note: remote: trigger: multi-project pipeline in `other/project` is not available offline; the job is skipped\n"),
        "{stdout}"
    );
    let (_, stdout) = exec(&h, &dir, &["--list", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let row = doc["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["name"] == "deploy-child > child-test"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["trigger_job"], "deploy-child", "{stdout}");
    assert_eq!(row["depth"], 1, "{stdout}");
    assert_eq!(row["stage"], "test", "{stdout}");
}

/// With `strategy: depend`, a failed child pipeline fails its trigger job and so the parent; a child's trigger
/// job two levels down fails (GitLab nests child pipelines two levels deep).
#[tokio::test]
async fn a_failed_child_fails_a_depend_trigger_and_nesting_stops_at_two_levels() {
    let h = Harness::new().await;
    h.make_repo(
        "grp/nested",
        &[
            (
                ".gitlab-ci.yml",
                "child:\n  trigger:\n    include: ci/level1.yml\n    strategy: depend\nfree:\n  trigger:\n    include: ci/fails.yml\n",
            ),
            (
                "ci/level1.yml",
                "one:\n  script: [echo level-one]\ngrandchild:\n  trigger:\n    include: ci/level2.yml\n    strategy: depend\n",
            ),
            (
                "ci/level2.yml",
                "two:\n  script: [echo level-two]\ntoo-deep:\n  trigger:\n    include: ci/level1.yml\n",
            ),
            ("ci/fails.yml", "boom:\n  script: [exit 4]\n"),
        ],
    );
    let dir = h.path().join("src/grp/nested");
    let (out, stdout) = exec(&h, &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("level-one\n") && stdout.contains("level-two\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--- child > grandchild > too-deep (test): failed — reached maximum depth of child pipelines\n"),
        "{stdout}"
    );
    let (_, listed) = exec(&h, &dir, &["--list"]);
    assert!(
        listed.contains("note: child > grandchild > too-deep: reached maximum depth of child pipelines: the trigger job fails when it runs\n"),
        "{listed}"
    );
    let summary = &stdout[pos(&stdout, "\njob ")..];
    for (job, status) in [
        ("child", "failed"),
        ("child > grandchild", "failed"),
        ("child > grandchild > two", "success"),
        ("free", "success"),
        ("free > boom", "failed"),
    ] {
        assert!(
            summary
                .lines()
                .any(|l| l.starts_with(&format!("{job} ")) && l.contains(status)),
            "no {job} {status} in:\n{summary}"
        );
    }
    assert!(summary.contains("pipeline failed"), "{summary}");
}

/// A child pipeline that cannot be planned is an error naming the trigger job, and nothing runs.
#[tokio::test]
async fn a_missing_or_invalid_child_pipeline_runs_nothing() {
    let h = Harness::new().await;
    h.make_repo(
        "grp/badchild",
        &[
            (
                ".gitlab-ci.yml",
                "build:\n  script: [echo build-output]\ndeploy:\n  stage: deploy\n  trigger:\n    include: ci/child.yml\n",
            ),
            ("ci/other.yml", "job:\n  scirpt: [echo typo]\n"),
        ],
    );
    let dir = h.path().join("src/grp/badchild");
    let (out, stdout) = exec(&h, &dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert_eq!(
        stderr.trim(),
        "error: invalid CI configuration: .gitlab-ci.yml:6: deploy.trigger.include: Local file `ci/child.yml` does not exist!"
    );
    assert!(!stdout.contains("build-output"), "{stdout}");

    std::fs::write(
        dir.join(".gitlab-ci.yml"),
        "build:\n  script: [echo build-output]\ndeploy:\n  stage: deploy\n  trigger:\n    include: ci/other.yml\n",
    )
    .expect("ci file");
    let (out, stdout) = exec(&h, &dir, &["--list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert_eq!(
        stderr.trim(),
        "error: invalid CI configuration: trigger job `deploy`: child pipeline (ci/other.yml): ci/other.yml:1: job: jobs:job config contains unknown keys: scirpt"
    );
}

/// The jobs' repository borrows the checkout's Git LFS store: committed LFS files and ones edited in the working
/// tree reach the jobs with their content, not as pointer files.
#[tokio::test]
async fn git_lfs_files_reach_the_jobs_with_their_content() {
    let h = Harness::new().await;
    // Git LFS set up for the user, as on a developer's machine (`git lfs install`).
    h.git(h.path(), &["lfs", "install", "--skip-repo"]);
    h.make_repo(
        "grp/lfs",
        &[(
            ".gitlab-ci.yml",
            "job:\n  script:\n    - cat data.bin\n    - cat edited.bin\n",
        )],
    );
    h.lfs_track("grp/lfs", "*.bin");
    h.commit(
        "grp/lfs",
        &[
            ("data.bin", "committed lfs blob\n"),
            ("edited.bin", "old lfs blob\n"),
        ],
        "lfs",
    );
    let dir = h.path().join("src/grp/lfs");
    std::fs::write(dir.join("edited.bin"), "edited lfs blob\n").expect("edit");
    let (out, stdout) = exec(&h, &dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("\ncommitted lfs blob\n"), "{stdout}");
    assert!(stdout.contains("\nedited lfs blob\n"), "{stdout}");
    assert!(!stdout.contains("git-lfs.github.com/spec"), "{stdout}");
}

/// A job that ignores SIGTERM (so only a kill ends it) and one that waits for a slot (`-j 1`).
const STUBBORN: &str = r#"
stubborn:
  script:
    - trap '' TERM
    - echo started
    - sleep 613
waiting:
  script:
    - echo waiting-ran
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_run_with_a_pending_job_and_a_second_one_ends_a_job_that_ignores_it() {
    use crate::local_users::Exec;
    use std::time::Duration;
    let h = Harness::new().await;
    h.make_repo("grp/stubborn", &[(".gitlab-ci.yml", STUBBORN)]);
    let mut cmd = h.command();
    // The stubborn job would get ten minutes between SIGTERM and SIGKILL.
    cmd.env("RUNWRIGHT_KILL_GRACE_SECONDS", "600")
        .args(["exec", "--executor", "shell", "--view", "lines", "-j", "1"])
        .current_dir(h.path().join("src/grp/stubborn"));
    let mut exec = Exec::start(cmd);
    exec.wait_line("started");
    let pid = nix::unistd::Pid::from_raw(exec.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    // The running job gets its grace: the run waits for it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        exec.child.try_wait().expect("try_wait").is_none(),
        "{}",
        exec.text()
    );
    // A second signal stops waiting: what is left is killed, and the run ends with the summary.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let (status, took) = exec.wait_end(Duration::from_secs(30));
    let text = exec.text();
    assert_eq!(status.code(), Some(143), "{text}");
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{text}");
    assert!(
        text.contains(
            "runwright exec: SIGTERM: canceling the pending jobs and aborting the running ones"
        ),
        "{text}"
    );
    assert!(text.contains("pipeline canceled by SIGTERM"), "{text}");
    assert!(!text.contains("waiting-ran"), "{text}");
    for job in ["stubborn", "waiting"] {
        let row = summary_row(&text, job).unwrap_or_else(|| panic!("no row for {job}:\n{text}"));
        assert_eq!(row[2], "canceled", "{text}");
    }
    assert_eq!(
        processes_running(&["sleep", "613"]),
        0,
        "the stubborn job's sleep outlived the run"
    );
}

const CHATTY: &str = r#"
chatty:
  script:
    - echo started
    - while true; do echo tick; sleep 0.1; done
later:
  script:
    - echo later-ran
"#;

/// `runwright exec | head`: once nobody reads its output, the run ends as SIGPIPE would end it (the pending job
/// canceled, the running one aborted, exit 141, the summary kept) instead of panicking in `println!` with the
/// jobs left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_run_like_sigpipe_and_keeps_its_summary() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    let h = Harness::new().await;
    h.make_repo("grp/chatty", &[(".gitlab-ci.yml", CHATTY)]);
    let mut child = h
        .command()
        .args(["exec", "--executor", "shell", "--view", "lines", "-j", "1"])
        .current_dir(h.path().join("src/grp/chatty"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runwright exec starts");
    // Read until the job runs, then close the pipe as `head` does.
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while out.read_line(&mut line).expect("reading stdout") > 0 && !line.contains("tick") {
        line.clear();
    }
    drop(out);
    let closed = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            closed.elapsed() < Duration::from_secs(40),
            "runwright exec still running after its stdout closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("reading stderr");
    assert_eq!(status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("runwright exec: standard output closed: canceling the pending jobs"),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(h.path().join("state/1/summary.json")).expect("summary.json"),
    )
    .expect("summary is JSON");
    assert_eq!(summary["status"], "canceled", "{summary}");
    assert_eq!(summary["interrupted_by"], "SIGPIPE", "{summary}");
    let log = std::fs::read_to_string(h.path().join("state/1/later.log")).unwrap_or_default();
    assert!(!log.contains("later-ran"), "{log}");
}
