//! Artifacts and caches end to end: the real service, the coordinator's artifact endpoints, the local cache
//! layout and (in `s3_cache_*`) a real S3 server on loopback.

use crate::harness::*;
use runwright_client::types::{Artifact, Cache};
use runwright_coordinator::{Endpoint, JobSpec, ProjectSpec};
use std::process::Command;

fn job(name: &str, project: ProjectSpec, script: &[&str]) -> JobSpec {
    JobSpec {
        name: name.into(),
        script: script.iter().map(|s| s.to_string()).collect(),
        project,
        ..Default::default()
    }
    .with_variable("GIT_STRATEGY", "none")
}

fn archive(paths: &[&str]) -> Artifact {
    Artifact {
        paths: paths.iter().map(|s| s.to_string()).collect(),
        artifact_type: "archive".into(),
        artifact_format: "zip".into(),
        ..Artifact::default()
    }
}

fn cache(key: &str, paths: &[&str]) -> Cache {
    Cache {
        key: key.into(),
        paths: paths.iter().map(|s| s.to_string()).collect(),
        ..Cache::default()
    }
}

#[tokio::test]
async fn artifacts_flow_to_a_dependent_job_with_every_file_kind() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let producer = h.coordinator.enqueue(JobSpec {
        artifacts: vec![archive(&["out/"])],
        ..job(
            "build",
            ProjectSpec::new(7, "grp/app"),
            &[
                "mkdir -p out/sub out/empty",
                "echo hello > out/a.txt",
                "printf 'deep\\n' > out/sub/b.txt",
                "printf '#!/bin/sh\\necho ran\\n' > out/run.sh && chmod 755 out/run.sh",
                "ln -s a.txt out/link",
                "echo not-an-artifact > elsewhere.txt",
            ],
        )
    });
    let p = h.final_job(producer).await;
    let t = p.trace_text();
    assert_eq!(p.state, "success", "{t}");
    assert!(
        t.contains("out/: found 7 matching artifact files and directories"),
        "{t}"
    );
    assert!(
        t.contains("Uploading artifacts as \"archive\" to coordinator... 201 Created"),
        "{t}"
    );
    let stored = h
        .coordinator
        .artifact(producer, "archive")
        .expect("the archive was uploaded");
    assert_eq!(stored.artifact_format, "zip");
    assert_eq!(stored.filename, "default.zip");
    // Info-ZIP accepts what we wrote.
    let unzip = Command::new("unzip")
        .arg("-t")
        .arg(&stored.path)
        .output()
        .expect("unzip runs");
    assert!(
        unzip.status.success(),
        "{}",
        String::from_utf8_lossy(&unzip.stdout)
    );

    // Another project (so another project directory): the files arrive only through the artifacts.
    let consumer = h.coordinator.enqueue(JobSpec {
        artifact_dependencies: vec![producer],
        ..job(
            "test",
            ProjectSpec::new(8, "grp/other"),
            &[
                "cat out/a.txt out/sub/b.txt",
                "test \"$(readlink out/link)\" = a.txt && echo link-ok",
                "out/run.sh",
                "test -d out/empty && echo empty-dir-ok",
                "test ! -e elsewhere.txt && echo only-artifacts",
            ],
        )
    });
    let c = h.final_job(consumer).await;
    let t = c.trace_text();
    assert_eq!(c.state, "success", "{t}");
    assert!(
        t.contains(&format!("Downloading artifacts for build ({producer})...")),
        "{t}"
    );
    for needle in [
        "hello\ndeep\n",
        "link-ok",
        "ran\n",
        "empty-dir-ok",
        "only-artifacts",
    ] {
        assert!(t.contains(needle), "{needle:?} missing:\n{t}");
    }
    assert!(!t.contains(&c.token), "job token in the trace");
}

#[tokio::test]
async fn reports_upload_as_gzip_even_when_the_job_fails_and_on_success_artifacts_do_not() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let id = h.coordinator.enqueue(JobSpec {
        artifacts: vec![
            archive(&["out/"]),
            Artifact {
                name: "junit".into(),
                paths: vec!["report.xml".into()],
                when: "always".into(),
                artifact_type: "junit".into(),
                artifact_format: "gzip".into(),
                ..Artifact::default()
            },
            Artifact {
                when: "on_failure".into(),
                artifact_type: "archive".into(),
                ..archive(&["debug.log"])
            },
        ],
        ..job(
            "fails",
            ProjectSpec::new(7, "grp/app"),
            &[
                "mkdir -p out && echo x > out/x",
                "echo '<testsuite/>' > report.xml",
                "echo debug > debug.log",
                "exit 3",
            ],
        )
    });
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    assert_eq!(j.exit_code, Some(3), "{t}");
    assert!(t.contains("Uploading artifacts for failed job"), "{t}");
    assert!(
        t.contains("Uploading artifacts as \"junit\" to coordinator... 201"),
        "{t}"
    );
    let junit = h.coordinator.artifact(id, "junit").expect("junit uploaded");
    assert_eq!(junit.artifact_format, "gzip");
    assert_eq!(junit.filename, "junit.gz");
    let gz = std::fs::read(&junit.path).expect("read report");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
        .expect("gunzip");
    assert_eq!(text, "<testsuite/>\n");
    // The archive entry with `when: on_failure` was uploaded; the on_success one (out/) was not.
    let stored = h
        .coordinator
        .artifact(id, "archive")
        .expect("on_failure archive");
    let list = Command::new("unzip")
        .arg("-l")
        .arg(&stored.path)
        .output()
        .expect("unzip");
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains("debug.log") && !listing.contains("out/"),
        "{listing}"
    );
}

#[tokio::test]
async fn an_artifact_over_the_servers_limit_fails_the_job_with_the_size() {
    let mut h = Harness::with_options(|o| o.max_artifact_size = Some(1024)).await;
    h.single_runner("", "");
    h.start();
    let id = h.coordinator.enqueue(JobSpec {
        artifacts: vec![Artifact {
            artifact_format: "zip".into(),
            ..archive(&["big.bin"])
        }],
        ..job(
            "big",
            ProjectSpec::new(7, "grp/app"),
            &["head -c 200000 /dev/urandom > big.bin"],
        )
    });
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    assert!(t.to_lowercase().contains("too large"), "{t}");
    let uploads = h
        .coordinator
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::ArtifactUpload)
        .count();
    assert_eq!(uploads, 1, "413 is final, not retried");
}

#[tokio::test]
async fn direct_download_follows_the_redirect_without_the_job_token() {
    let mut h = Harness::with_options(|o| o.object_storage_redirect = true).await;
    h.single_runner("", "");
    h.start();
    let a = h.coordinator.enqueue(JobSpec {
        artifacts: vec![archive(&["f.txt"])],
        ..job(
            "a",
            ProjectSpec::new(7, "grp/app"),
            &["echo via-object-storage > f.txt"],
        )
    });
    assert_eq!(h.final_job(a).await.state, "success");
    let b = h.coordinator.enqueue(JobSpec {
        artifact_dependencies: vec![a],
        ..job("b", ProjectSpec::new(8, "grp/other"), &["cat f.txt"])
    });
    let j = h.final_job(b).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("via-object-storage"), "{t}");
    let storage: Vec<_> = h
        .coordinator
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::ObjectStorage)
        .collect();
    assert_eq!(storage.len(), 1, "one download from object storage");
    assert!(
        storage[0].request_header("job-token").is_none(),
        "the job token must not follow a redirect to storage"
    );
}

#[tokio::test]
async fn a_cache_is_reused_by_the_next_job_from_gitlabs_local_layout() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    let sha = h.make_repo("grp/app", &[("README.md", "x\n")]);
    h.start();
    let git_job = |name: &str, c: Cache, script: &[&str]| JobSpec {
        name: name.into(),
        script: script.iter().map(|s| s.to_string()).collect(),
        project: ProjectSpec::new(7, "grp/app"),
        sha: sha.clone(),
        cache: vec![c],
        ..Default::default()
    };
    let first = h.coordinator.enqueue(git_job(
        "first",
        cache("deps-non_protected", &["vendor/"]),
        &["mkdir -p vendor && echo cached-content > vendor/lib.txt"],
    ));
    let j = h.final_job(first).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("Creating cache deps-non_protected..."), "{t}");
    assert!(t.contains("Created cache"), "{t}");
    // GitLab's layout: <cache_dir>/<project path>/<key>/cache.zip with metadata.json.
    let dir = h.work_dir().join("cache/grp/app/deps-non_protected");
    assert!(dir.join("cache.zip").is_file(), "{}", dir.display());
    let meta = std::fs::read_to_string(dir.join("metadata.json")).expect("metadata.json");
    assert!(
        meta.contains("\"cachekey\":\"deps-non_protected\""),
        "{meta}"
    );

    // The fetch cleans vendor/ (untracked) away; only the cache brings it back. A fallback key finds it.
    let second = h.coordinator.enqueue(git_job(
        "second",
        Cache {
            fallback_keys: vec!["deps-non_protected".into()],
            policy: "pull".into(),
            ..cache("missing-key", &["vendor/"])
        },
        &["cat vendor/lib.txt"],
    ));
    let j = h.final_job(second).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("Checking cache for missing-key..."), "{t}");
    assert!(
        t.contains("Checking cache for deps-non_protected..."),
        "{t}"
    );
    assert!(t.contains("Successfully extracted cache"), "{t}");
    assert!(t.contains("cached-content"), "{t}");
    // policy: pull saves nothing.
    assert!(!t.contains("Saving cache"), "{t}");
    assert!(!h.work_dir().join("cache/grp/app/missing-key").exists());
}

#[tokio::test]
async fn cache_failures_warn_and_never_fail_the_job() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    // A key that sanitises to nothing, and a restore of a key that was never saved.
    let id = h.coordinator.enqueue(JobSpec {
        cache: vec![cache("../..", &["x/"]), cache("never-saved", &["y/"])],
        ..job("c", ProjectSpec::new(7, "grp/app"), &["echo ran"])
    });
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("WARNING:"), "{t}");
    assert!(t.contains("Checking cache for never-saved..."), "{t}");
    assert!(t.contains("No files to archive"), "{t}");
}
