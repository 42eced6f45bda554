//! get_sources with real git over loopback HTTP (git http-backend behind the coordinator, job-token auth).

use crate::harness::*;
use runwright_coordinator::{JobSpec, ProjectSpec};

fn git_job(name: &str, path: &str, sha: &str, script: &[&str]) -> JobSpec {
    JobSpec {
        name: name.into(),
        script: script.iter().map(|s| s.to_string()).collect(),
        project: ProjectSpec::new(7, path),
        sha: sha.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn clone_checks_out_the_commit_with_job_token_credentials() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    let sha = h.make_repo("grp/app", &[("README.md", "hello repo\n")]);
    h.start();
    let id = h.coordinator.enqueue(
        git_job(
            "clone",
            "grp/app",
            &sha,
            &["cat README.md", "git rev-parse HEAD"],
        )
        .with_variable("GIT_STRATEGY", "clone"),
    );
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("hello repo\n"), "{t}");
    assert!(t.contains(&format!("{sha}\n")), "{t}");
    assert!(
        t.contains(&format!("Checking out {} as detached HEAD", &sha[..8])),
        "{t}"
    );
    assert!(!t.contains(&job.token), "job token in trace");
}

#[tokio::test]
async fn fetch_reuses_the_existing_checkout_and_cleans_it() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    let sha1 = h.make_repo("grp/app", &[("a.txt", "one\n")]);
    h.start();
    let first = h.coordinator.enqueue(git_job(
        "first",
        "grp/app",
        &sha1,
        &["touch untracked-file", "echo made > .git/reuse-marker"],
    ));
    assert_eq!(h.final_job(first).await.state, "success");
    let sha2 = h.commit("grp/app", &[("a.txt", "two\n")], "second");
    let second = h.coordinator.enqueue(git_job(
        "second",
        "grp/app",
        &sha2,
        &[
            "cat a.txt",
            "test -f .git/reuse-marker && echo reused",
            "test ! -e untracked-file && echo cleaned",
        ],
    ));
    let job = h.final_job(second).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(
        t.contains("two\n") && t.contains("reused\n") && t.contains("cleaned\n"),
        "{t}"
    );
    assert!(
        !t.contains("Created fresh repository"),
        "fetch should reuse: {t}"
    );
}

#[tokio::test]
async fn submodules_normal_and_recursive() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.make_repo("grp/inner", &[("inner.txt", "deep\n")]);
    h.make_repo("grp/lib", &[("lib.txt", "library\n")]);
    // lib has inner as a submodule; app has lib. Relative URLs resolve against the job's remote URL.
    let lib_src = h.path().join("src/grp/lib");
    // Added from the bare repositories on disk (a blocking git call must not need the coordinator, which runs
    // on this test's runtime), then pointed at the relative URL the job resolves against its remote.
    let inner_url = h
        .path()
        .join("git/grp/inner.git")
        .to_string_lossy()
        .to_string();
    h.git(
        &lib_src,
        &[
            "-c",
            "protocol.allow=always",
            "submodule",
            "add",
            "-q",
            &inner_url,
            "inner",
        ],
    );
    h.git(
        &lib_src,
        &[
            "config",
            "-f",
            ".gitmodules",
            "submodule.inner.url",
            "../inner.git",
        ],
    );
    h.commit("grp/lib", &[], "add inner");
    let sha = h.make_repo("grp/app", &[("app.txt", "app\n")]);
    let app_src = h.path().join("src/grp/app");
    let lib_url = h
        .path()
        .join("git/grp/lib.git")
        .to_string_lossy()
        .to_string();
    let _ = sha;
    h.git(
        &app_src,
        &[
            "-c",
            "protocol.allow=always",
            "submodule",
            "add",
            "-q",
            &lib_url,
            "lib",
        ],
    );
    h.git(
        &app_src,
        &[
            "config",
            "-f",
            ".gitmodules",
            "submodule.lib.url",
            "../lib.git",
        ],
    );
    let sha = h.commit("grp/app", &[], "add lib");
    h.start();
    let mut project = ProjectSpec::new(7, "grp/app");
    project.token_access = vec!["grp/lib".into(), "grp/inner".into()];
    let mut normal = git_job(
        "normal",
        "grp/app",
        &sha,
        &[
            "cat lib/lib.txt",
            "test ! -e lib/inner/inner.txt && echo inner-absent",
        ],
    )
    .with_variable("GIT_SUBMODULE_STRATEGY", "normal");
    normal.project = project.clone();
    let job = h.final_job(h.coordinator.enqueue(normal)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(
        t.contains("library\n") && t.contains("inner-absent\n"),
        "{t}"
    );

    // A second job reuses the checkout (fetch) with a new job token: stale credentials must not linger.
    let mut again = git_job("again", "grp/app", &sha, &["cat lib/lib.txt"])
        .with_variable("GIT_SUBMODULE_STRATEGY", "normal");
    again.project = project.clone();
    let job = h.final_job(h.coordinator.enqueue(again)).await;
    assert_eq!(job.state, "success", "{}", job.trace_text());

    let mut recursive = git_job("recursive", "grp/app", &sha, &["cat lib/inner/inner.txt"])
        .with_variable("GIT_SUBMODULE_STRATEGY", "recursive")
        .with_variable("GIT_STRATEGY", "clone");
    recursive.project = project;
    let job = h.final_job(h.coordinator.enqueue(recursive)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("deep\n"), "{t}");
    assert!(!t.contains(&job.token));
}

#[tokio::test]
async fn pre_and_post_get_sources_scripts_from_config_and_hooks_run() {
    let mut h = Harness::new().await;
    h.single_runner(
        "",
        "  pre_get_sources_script = \"echo cfg-pre\"\n  post_get_sources_script = \"echo cfg-post\"\n  pre_build_script = \"echo cfg-pre-build\"\n  post_build_script = \"echo cfg-post-build\"",
    );
    let sha = h.make_repo("grp/app", &[("x", "x")]);
    h.start();
    let mut spec = git_job("hooks", "grp/app", &sha, &["echo the-script"]);
    spec.hooks = vec![runwright_client::types::Hook {
        name: "pre_get_sources_script".into(),
        script: vec!["echo job-pre".into()],
    }];
    let job = h.final_job(h.coordinator.enqueue(spec)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    let order = [
        "cfg-pre\n",
        "job-pre\n",
        "cfg-post\n",
        "cfg-pre-build\n",
        "the-script\n",
        "cfg-post-build\n",
    ];
    let mut last = 0;
    for o in order {
        let pos = t[last..]
            .find(o)
            .unwrap_or_else(|| panic!("{o:?} missing or out of order in {t}"));
        last += pos;
    }
}

#[tokio::test]
async fn get_sources_attempts_retries_a_failed_fetch() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    let sha = h.make_repo("grp/app", &[("f.txt", "content\n")]);
    // The first git request fails at the server: the first attempt fails, the second succeeds.
    h.coordinator.faults().push(
        runwright_coordinator::Endpoint::Git,
        runwright_coordinator::Fault::Status(500),
    );
    h.start();
    let id = h.coordinator.enqueue(
        git_job("retry", "grp/app", &sha, &["cat f.txt"])
            .with_variable("GET_SOURCES_ATTEMPTS", "2"),
    );
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("WARNING: Retrying..."), "{t}");
    assert!(
        t.contains("Deleting all tracked and untracked files due to source fetch failure"),
        "{t}"
    );
    assert!(t.contains("content\n"));

    // Without attempts to spare, the same failure fails the job as a script failure.
    h.coordinator.faults().push(
        runwright_coordinator::Endpoint::Git,
        runwright_coordinator::Fault::Status(500),
    );
    let id = h.coordinator.enqueue(
        git_job("no-retry", "grp/app", &sha, &["true"]).with_variable("GIT_STRATEGY", "clone"),
    );
    let job = h.final_job(id).await;
    assert_eq!(job.state, "failed", "{}", job.trace_text());
    assert_eq!(job.failure_reason.as_deref(), Some("script_failure"));
}
