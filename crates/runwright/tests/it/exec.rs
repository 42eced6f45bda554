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

fn exec(h: &Harness, dir: &std::path::Path, args: &[&str]) -> (Output, String) {
    let out = h
        .command()
        .arg("exec")
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
    let (out, stdout) = exec(&h, &dir, &["--variable", "WHO=world"]);
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
        stdout.contains("docker executor is not available yet"),
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
async fn named_jobs_run_manual_ones_and_uncommitted_changes_stay_out() {
    let h = Harness::new().await;
    let dir = project(&h);
    std::fs::write(dir.join("committed.txt"), "uncommitted-edit\n").expect("edit");
    let (out, stdout) = exec(&h, &dir, &["build", "release"]);
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
async fn invalid_yaml_is_reported_with_the_file_and_exits_1() {
    let h = Harness::new().await;
    h.make_repo(
        "grp/bad",
        &[(".gitlab-ci.yml", "build:\n  script: [echo hi\n  stage: x\n")],
    );
    let (out, stdout) = exec(&h, &h.path().join("src/grp/bad"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains(".gitlab-ci.yml"), "{stderr}");
    assert!(!stdout.contains("==="), "nothing runs: {stdout}");
}

/// The README's main command (`scripts/demo`): the example pipeline passes.
#[tokio::test]
async fn example_pipeline_passes() {
    let h = Harness::new().await;
    let dir = h.path().join("example");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo/project");
    std::fs::create_dir_all(&dir).expect("dir");
    for e in std::fs::read_dir(&src).expect("example") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), dir.join(e.file_name())).expect("copy");
    }
    h.git(&dir, &["init", "-q", "-b", "main"]);
    h.git(&dir, &["add", "-A"]);
    h.git(&dir, &["commit", "-q", "-m", "example"]);
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
