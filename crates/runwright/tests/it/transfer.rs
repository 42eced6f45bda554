//! Artifacts and caches end to end: the real service, the coordinator's artifact endpoints, the local cache
//! layout and (in `s3_cache_*`) a real S3 server on loopback.

use crate::harness::*;
use runwright_api::types::{Artifact, Cache};
use runwright_cache::testing::MotoServer;
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
    // No `artifacts:name`: gitlab-runner's script passes no `--name`, and its uploader's default is
    // `artifacts` (commands/helpers/artifacts_uploader.go `Name: "artifacts"`).
    assert_eq!(stored.filename, "artifacts.zip");
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
async fn failed_artifact_transfers_fail_the_job_with_exit_code_1_as_gitlab_runners_helper_does() {
    // gitlab-runner uploads and downloads artifacts with its helper binary in the job's shell; a failing helper
    // exits 1, which GitLab receives as the job's exit code (`allow_failure: exit_codes: [1]` counts on it).
    let mut h = Harness::with_options(|o| o.max_artifact_size = Some(1024)).await;
    h.single_runner("", "");
    h.start();
    let upload = h.coordinator.enqueue(JobSpec {
        artifacts: vec![archive(&["big.bin"])],
        ..job(
            "too-big",
            ProjectSpec::new(7, "grp/app"),
            &["head -c 200000 /dev/urandom > big.bin"],
        )
    });
    let download = h.coordinator.enqueue(JobSpec {
        dependencies: vec![runwright_api::types::Dependency {
            id: 999_999,
            name: "vanished".into(),
            token: String::new(),
            artifacts_file: Some(runwright_api::types::DependencyArtifactsFile {
                filename: "artifacts.zip".into(),
                size: 10,
            }),
        }],
        ..job("needs-gone", ProjectSpec::new(7, "grp/app"), &["true"])
    });
    for id in [upload, download] {
        let j = h.final_job(id).await;
        let t = j.trace_text();
        assert_eq!(j.state, "failed", "{t}");
        assert_eq!(j.failure_reason.as_deref(), Some("script_failure"), "{t}");
        assert_eq!(j.exit_code, Some(1), "{t}");
        let last = j.updates.last().expect("a final update");
        assert_eq!((last.state.as_str(), last.exit_code), ("failed", Some(1)));
    }
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
    let addr = format!("127.0.0.1:{}", free_port());
    h.single_runner(&format!("listen_address = \"{addr}\""), "");
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

    // The primary key this time.
    let third = h.coordinator.enqueue(git_job(
        "third",
        Cache {
            policy: "pull".into(),
            ..cache("deps-non_protected", &["vendor/"])
        },
        &["cat vendor/lib.txt"],
    ));
    assert_eq!(h.final_job(third).await.state, "success");
    // Restores by result: the first job missed, the second found its fallback key, the third its own.
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    for result in ["miss", "fallback_hit", "hit"] {
        let line = format!(
            "runwright_cache_restores_total{{project=\"grp/app\",result=\"{result}\",runner=\"test-runner\"}} 1\n"
        );
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
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
    // gitlab-runner's cache-archiver (commands/helpers/cache_archiver.go), now that the helper archives.
    assert!(t.contains("No files to cache."), "{t}");
}

/// Every object name in `bucket`, through the S3 API.
async fn objects(moto: &MotoServer, bucket: &str) -> Vec<String> {
    let s3 = runwright_cache::S3Cache::new(&moto.cache_config(bucket), "lister")
        .expect("S3 config")
        .expect("an S3 cache");
    let mut names: Vec<String> = s3
        .list("")
        .await
        .expect("list objects")
        .into_iter()
        .map(|o| o.name)
        .collect();
    names.sort();
    names
}

/// `[runners.cache]` for an S3 server on loopback (moto), as config.toml spells it.
fn s3_runner_extra(moto: &MotoServer, bucket: &str, extra: &str) -> String {
    format!(
        "  [runners.cache]\n    Type = \"s3\"\n{extra}    [runners.cache.s3]\n      ServerAddress = \"{}\"\n      AccessKey = \"{}\"\n      SecretKey = \"{}\"\n      BucketName = \"{bucket}\"\n      Insecure = true\n      PathStyle = true\n",
        moto.address(),
        runwright_cache::testing::ACCESS_KEY,
        runwright_cache::testing::SECRET_KEY,
    )
}

#[tokio::test]
async fn s3_cache_round_trips_through_presigned_urls_with_gitlabs_object_names() {
    let moto = MotoServer::start();
    moto.create_bucket("runner-cache");
    let mut h = Harness::new().await;
    h.single_runner(
        "",
        &s3_runner_extra(&moto, "runner-cache", "    Path = \"ci\"\n"),
    );
    h.start();
    let first = h.coordinator.enqueue(JobSpec {
        cache: vec![cache("shared-deps", &["vendor/"])],
        ..job(
            "save",
            ProjectSpec::new(7, "grp/app"),
            &["mkdir -p vendor && echo from-s3 > vendor/lib.txt"],
        )
    });
    let j = h.final_job(first).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    // GitLab's object name: <Path>/runner/<short token>/project/<id>/<key>, no cache.zip suffix.
    let short = runwright_config::short_token(TOKEN);
    let object = format!("ci/runner/{short}/project/7/shared-deps");
    assert!(
        t.contains(&format!(
            "Uploading cache.zip to {}/runner-cache/{object}",
            moto.endpoint()
        )),
        "{t}"
    );
    assert!(
        !t.contains("X-Amz-Signature"),
        "a presigned URL's signature in the trace:\n{t}"
    );
    assert_eq!(
        objects(&moto, "runner-cache").await,
        vec![object.clone()],
        "{t}"
    );

    // Without the local copy, the next job gets the cache from the bucket.
    std::fs::remove_dir_all(h.work_dir().join("cache")).expect("drop the local cache");
    let second = h.coordinator.enqueue(JobSpec {
        cache: vec![Cache {
            policy: "pull".into(),
            ..cache("shared-deps", &["vendor/"])
        }],
        ..job(
            "restore",
            ProjectSpec::new(7, "grp/other-dir"),
            &["cat vendor/lib.txt"],
        )
    });
    let j = h.final_job(second).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("Downloading cache from"), "{t}");
    assert!(t.contains("Successfully extracted cache"), "{t}");
    assert!(t.contains("from-s3"), "{t}");

    // A third job of that project finds its local copy current and does not download it again.
    let third = h.coordinator.enqueue(JobSpec {
        cache: vec![Cache {
            policy: "pull".into(),
            ..cache("shared-deps", &["vendor/"])
        }],
        ..job(
            "again",
            ProjectSpec::new(7, "grp/other-dir"),
            &["cat vendor/lib.txt"],
        )
    });
    let j = h.final_job(third).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    // gitlab-runner's cache-extractor says so (`<file> is up to date`), now that the helper downloads.
    assert!(t.contains("cache.zip is up to date"), "{t}");
}

#[tokio::test]
async fn an_unreachable_s3_server_warns_and_the_job_still_succeeds() {
    let mut h = Harness::new().await;
    // Nothing listens on port 9 of loopback.
    h.single_runner(
        "",
        "  [runners.cache]\n    Type = \"s3\"\n    [runners.cache.s3]\n      ServerAddress = \"127.0.0.1:9\"\n      AccessKey = \"k\"\n      SecretKey = \"s3-secret-value\"\n      BucketName = \"b\"\n      Insecure = true\n",
    );
    h.start();
    let id = h.coordinator.enqueue(JobSpec {
        cache: vec![cache("k", &["vendor/"])],
        ..job(
            "c",
            ProjectSpec::new(7, "grp/app"),
            &["mkdir -p vendor && echo x > vendor/x"],
        )
    });
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("WARNING:"), "{t}");
    assert!(!t.contains("s3-secret-value"), "{t}");
    // The archive is still kept locally.
    assert!(
        h.work_dir().join("cache/grp/app/k/cache.zip").is_file(),
        "{t}"
    );
}

#[tokio::test]
async fn cache_list_and_clear_see_and_delete_local_and_s3_archives() {
    let moto = MotoServer::start();
    moto.create_bucket("runner-cache");
    let mut h = Harness::new().await;
    h.single_runner("", &s3_runner_extra(&moto, "runner-cache", ""));
    h.start();
    for (name, key) in [("a", "old-key"), ("b", "keep-key"), ("c", "old-other")] {
        let id = h.coordinator.enqueue(JobSpec {
            cache: vec![cache(key, &["d/"])],
            ..job(
                name,
                ProjectSpec::new(7, "grp/app"),
                &["mkdir -p d && echo x > d/x"],
            )
        });
        assert_eq!(h.final_job(id).await.state, "success");
    }
    let cli = |args: &[&str]| {
        let out = h
            .command()
            .arg("cache")
            .args(args)
            .arg("-c")
            .arg(&h.config_path)
            .arg("-d")
            .arg(h.work_dir())
            .output()
            .expect("runwright cache runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = cli(&["list", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let listed = listed.as_array().expect("array");
    // Three keys, each locally and on S3.
    assert_eq!(listed.len(), 6, "{stdout}");
    assert!(
        listed.iter().all(|e| e["runner"] == "test-runner"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(runwright_cache::testing::SECRET_KEY),
        "{stdout}"
    );

    let (code, stdout, _) = cli(&["list"]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("RUNNER"), "{stdout}");
    assert!(
        stdout.contains("grp/app") && stdout.contains("keep-key"),
        "{stdout}"
    );

    // A filter is required.
    let (code, _, stderr) = cli(&["clear"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("needs a filter"), "{stderr}");

    let (code, stdout, stderr) = cli(&["clear", "--key-prefix", "old-", "--dry-run"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("would delete 4 cache archive(s)"),
        "{stdout}"
    );
    assert!(h
        .work_dir()
        .join("cache/grp/app/old-key/cache.zip")
        .is_file());

    let (code, stdout, stderr) = cli(&["clear", "--key-prefix", "old-"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("deleted 4 cache archive(s)"), "{stdout}");
    assert!(!h.work_dir().join("cache/grp/app/old-key").exists());
    assert!(h
        .work_dir()
        .join("cache/grp/app/keep-key/cache.zip")
        .is_file());
    let short = runwright_config::short_token(TOKEN);
    assert_eq!(
        objects(&moto, "runner-cache").await,
        [format!("runner/{short}/project/7/keep-key")],
        "the others are really deleted on S3"
    );

    let (_, stdout, _) = cli(&["list", "--json"]);
    let left: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(left.as_array().map(Vec::len), Some(2), "{stdout}");
}

/// With `user = "nobody"` the runner (root) restores caches and artifacts into a project directory that
/// belongs to the job's user: what it extracts must belong to that user too, or the job cannot change it.
#[tokio::test]
async fn restored_files_belong_to_the_jobs_user() {
    if !can_run_as_nobody() {
        return;
    }
    let mut h = Harness::new().await;
    let builds = h.single_runner_as_nobody();
    h.start();
    let a = h.coordinator.enqueue(JobSpec {
        cache: vec![cache("owned", &["vendor/"])],
        artifacts: vec![archive(&["out/"])],
        ..job(
            "a",
            ProjectSpec::new(7, "grp/app"),
            &["mkdir -p vendor/sub out/sub && echo v > vendor/sub/f && echo o > out/sub/f"],
        )
    });
    assert_eq!(h.final_job(a).await.state, "success");
    // The same project directory, emptied: what the next job finds comes from the cache and the artifacts.
    let project = builds
        .join(runwright_config::short_token(TOKEN))
        .join("0/grp/app");
    for d in ["vendor", "out"] {
        std::fs::remove_dir_all(project.join(d)).expect("remove what job a left");
    }
    let b = h.coordinator.enqueue(JobSpec {
        cache: vec![cache("owned", &["vendor/"])],
        artifact_dependencies: vec![a],
        ..job(
            "b",
            ProjectSpec::new(7, "grp/app"),
            &[
                "echo owner=$(stat -c %U vendor/sub/f out/sub out/sub/f | sort -u)",
                "echo changed >> vendor/sub/f && rm -rf out && echo removed",
            ],
        )
    });
    let j = h.final_job(b).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("owner=nobody\n"), "{t}");
    assert!(t.contains("removed\n"), "{t}");
}

/// A job that uploads one small archive, on a runner with `[runners.artifact] artifact_toml`, while GitLab holds
/// its answer to the first upload for 20 s. Returns the stalls GitLab injected, the uploads it answered (an
/// attempt the runner gives up on is dropped with its connection, unanswered and unlogged), how long the job
/// took and the job's log (the helper uploads in the job's stage and says there why it tried again).
async fn upload_against_a_stalling_gitlab(
    artifact_toml: &str,
) -> (u64, usize, std::time::Duration, String) {
    let mut h = Harness::new().await;
    h.single_runner("", &format!("  [runners.artifact]\n{artifact_toml}"));
    h.start();
    h.coordinator.faults().push(
        Endpoint::ArtifactUpload,
        runwright_coordinator::Fault::Stall(std::time::Duration::from_secs(20)),
    );
    let started = std::time::Instant::now();
    let id = h.coordinator.enqueue(JobSpec {
        artifacts: vec![archive(&["out.txt"])],
        ..job(
            "upload",
            ProjectSpec::new(7, "grp/app"),
            &["echo payload > out.txt"],
        )
    });
    let j = h.final_job(id).await;
    let took = started.elapsed();
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(h.coordinator.artifact(id, "archive").is_some(), "{t}");
    let stalls = h.coordinator.faults().injected_on(
        Endpoint::ArtifactUpload,
        runwright_coordinator::FaultKind::Stall,
    );
    let answered = h
        .coordinator
        .requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::ArtifactUpload && r.status == Some(201))
        .count();
    (stalls, answered, took, t)
}

#[tokio::test]
async fn response_header_timeout_gives_up_on_a_stalled_answer_and_tries_again() {
    let (stalls, answered, took, log) =
        upload_against_a_stalling_gitlab("    response_header_timeout = \"1s\"\n").await;
    assert_eq!((stalls, answered), (1, 1));
    // Not the 20 s GitLab held the first answer (nor the 10 min default).
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");
    assert!(
        log.contains("no answer from") && log.contains("response_header_timeout"),
        "{log}"
    );
}

#[tokio::test]
async fn upload_timeout_bounds_a_whole_attempt_and_it_is_tried_again() {
    // No limit on the answer itself: only the attempt's total time cuts it.
    let (stalls, answered, took, log) = upload_against_a_stalling_gitlab(
        "    upload_timeout = \"2s\"\n    response_header_timeout = \"0s\"\n",
    )
    .await;
    assert_eq!((stalls, answered), (1, 1));
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");
    assert!(
        log.contains("took longer than 2s") && log.contains("upload_timeout"),
        "{log}"
    );
}

#[tokio::test]
async fn s3_cache_with_hashed_keys_uses_gitlab_runner_19s_sharded_object_names() {
    let moto = MotoServer::start();
    moto.create_bucket("runner-cache");
    let mut h = Harness::new().await;
    h.single_runner("", &s3_runner_extra(&moto, "runner-cache", ""));
    h.start();
    let save = h.coordinator.enqueue(JobSpec {
        cache: vec![cache("deps", &["vendor/"])],
        ..job(
            "save",
            ProjectSpec::new(7, "grp/app"),
            &["mkdir -p vendor && echo sharded-content-7 > vendor/lib.txt"],
        )
        .with_variable("FF_HASH_CACHE_KEYS", "true")
    });
    let j = h.final_job(save).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    // runner cache/cache.go `GetAdapter`: `<base>/<hash[0:2]>/<hash>`, so both runners share the bucket.
    let hash = runwright_cache::hashed("deps");
    let short = runwright_config::short_token(TOKEN);
    let object = format!("runner/{short}/project/7/{}/{hash}", &hash[..2]);
    assert_eq!(objects(&moto, "runner-cache").await, vec![object], "{t}");

    // Restored from the bucket by the next job.
    std::fs::remove_dir_all(h.work_dir().join("cache")).expect("drop the local cache");
    let restore = h.coordinator.enqueue(JobSpec {
        cache: vec![Cache {
            policy: "pull".into(),
            ..cache("deps", &["vendor/"])
        }],
        ..job(
            "restore",
            ProjectSpec::new(7, "grp/app"),
            &["cat vendor/lib.txt"],
        )
        .with_variable("FF_HASH_CACHE_KEYS", "true")
    });
    let j = h.final_job(restore).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("Downloading cache from"), "{t}");
    assert!(t.contains("sharded-content-7"), "{t}");
}
