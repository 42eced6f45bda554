//! A job's file count cannot take the service down (issue 17 item 3). The attacker is a job author whose job
//! runs as another local account and makes more files than the runner will list for one archive: GitLab's
//! runner lists them in its helper process (the job's memory), runwright did in the service, so 400,000 files
//! took the service to 351 MB before (since issue 19 runwright's helper lists them in the job's stage too, told
//! the bound in `RUNWRIGHT_MAX_ARCHIVE_FILES`). One archive holds at most `max_archive_files` entries: past it the
//! job's artifacts fail (exit code 1, as a failing artifact upload of GitLab's runner) and its cache is not
//! saved (a warning), with a message naming the limit; every other job of the service runs on.

use crate::attackers::LocalUser;
use crate::harness::*;
use runwright_api::types::{Artifact, Cache};
use runwright_coordinator::{JobSpec, RunnerOptions};

/// `n` empty files in `out/` (one `touch` per 1000, so the job itself is quick).
fn make_files(n: usize) -> String {
    format!("mkdir -p out && cd out && seq -f 'f%06g' 1 {n} | xargs touch && cd .. && echo made {n} files")
}

fn job(name: &str, script: &[&str]) -> JobSpec {
    JobSpec {
        name: name.into(),
        script: script.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
    .with_variable("GIT_STRATEGY", "none")
}

#[tokio::test]
async fn a_job_making_more_files_than_max_archive_files_fails_alone_with_the_limit_named() {
    let Some(user) = LocalUser::create_or_skip("rwfiles") else {
        return;
    };
    let mut h = Harness::new().await;
    let builds = h.builds_for_any_user();
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.write_config(&format!(
        "concurrent = 3\ncheck_interval = 1\nuser = \"{}\"\n{}",
        user.name,
        h.runner_toml(
            "attacked",
            TOKEN,
            &format!(
                "  builds_dir = \"{}\"\n  max_archive_files = 2000",
                builds.display()
            )
        )
    ));
    h.start();
    let artifacts = h.coordinator.enqueue(JobSpec {
        artifacts: vec![Artifact {
            paths: vec!["out/".into()],
            artifact_type: "archive".into(),
            artifact_format: "zip".into(),
            ..Artifact::default()
        }],
        ..job("many-artifacts", &[&make_files(5000)])
    });
    let cache = h.coordinator.enqueue(JobSpec {
        cache: vec![Cache {
            key: "many".into(),
            paths: vec!["out/".into()],
            ..Cache::default()
        }],
        ..job("many-cached", &[&make_files(5000)])
    });
    // Meanwhile, on the same service, a job within the bound.
    let fine = h.coordinator.enqueue(JobSpec {
        artifacts: vec![Artifact {
            paths: vec!["out/".into()],
            artifact_type: "archive".into(),
            artifact_format: "zip".into(),
            ..Artifact::default()
        }],
        ..job("few", &[&make_files(1999)])
    });

    let limit = "more than 2000 files, directories and symlinks match, over this runner's limit for one archive \
                 (max_archive_files in its [[runners]] entry of config.toml";
    let j = h.final_job(artifacts).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    assert_eq!(j.exit_code, Some(1), "{t}");
    assert_eq!(j.failure_reason.as_deref(), Some("script_failure"));
    assert!(t.contains(&format!("ERROR: artifacts: {limit}")), "{t}");
    assert!(t.contains("pack the directory into one tar file"), "{t}");
    assert!(j.artifacts.is_empty(), "nothing was uploaded");

    let j = h.final_job(cache).await;
    let t = j.trace_text();
    assert_eq!(
        j.state, "success",
        "a cache over the bound costs a warning only: {t}"
    );
    assert!(t.contains(&format!("WARNING: cache: {limit}")), "{t}");
    assert!(!t.contains("Created cache"), "{t}");

    let j = h.final_job(fine).await;
    assert_eq!(j.state, "success", "{}", j.trace_text());
    let stored = j.artifacts.first().expect("the artifact was uploaded");
    assert!(stored.size > 0);
    // 1999 files and their directory.
    assert!(
        j.trace_text()
            .contains("out/: found 2000 matching artifact files and directories"),
        "{}",
        j.trace_text()
    );
    assert!(crate::harness::alive(h.pid()), "the service is still up");
}

/// The other way in: an archive with more entries than the runner's bound, made elsewhere (another runner, or
/// uploaded with the job token through GitLab's API), that a dependent job would have the service read.
#[tokio::test]
async fn an_artifact_with_more_entries_than_max_archive_files_is_not_extracted() {
    let Some(user) = LocalUser::create_or_skip("rwfilesx") else {
        return;
    };
    let mut h = Harness::new().await;
    let builds = h.builds_for_any_user();
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.coordinator.add_runner(TOKEN2, RunnerOptions::default());
    let entry = |name: &str, token: &str, max: usize| {
        h.runner_toml(
            name,
            token,
            &format!(
                "  builds_dir = \"{}\"\n  max_archive_files = {max}",
                builds.display()
            ),
        )
    };
    h.write_config(&format!(
        "concurrent = 2\ncheck_interval = 1\nuser = \"{}\"\n{}{}",
        user.name,
        entry("uploads-much", TOKEN, 10_000),
        entry("extracts-little", TOKEN2, 2_000)
    ));
    h.start();
    let producer = h.coordinator.enqueue(
        JobSpec {
            artifacts: vec![Artifact {
                paths: vec!["out/".into()],
                artifact_type: "archive".into(),
                artifact_format: "zip".into(),
                ..Artifact::default()
            }],
            ..job("many", &[&make_files(3000)])
        }
        .for_runner(TOKEN),
    );
    let p = h.final_job(producer).await;
    assert_eq!(p.state, "success", "{}", p.trace_text());
    let consumer = h.coordinator.enqueue(
        JobSpec {
            artifact_dependencies: vec![producer],
            ..job("consume", &["ls out | wc -l"])
        }
        .for_runner(TOKEN2),
    );
    let c = h.final_job(consumer).await;
    let t = c.trace_text();
    assert_eq!(c.state, "failed", "{t}");
    assert_eq!(c.exit_code, Some(1), "{t}");
    assert!(
        t.contains("): the archive holds more than 2000 entries, over this runner's limit for one archive (max_archive_files"),
        "{t}"
    );
    assert!(crate::harness::alive(h.pid()), "the service is still up");
}
