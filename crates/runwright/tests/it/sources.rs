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
    spec.hooks = vec![runwright_api::types::Hook {
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

fn hook(name: &str, script: &[&str]) -> runwright_api::types::Hook {
    runwright_api::types::Hook {
        name: name.into(),
        script: script.iter().map(|s| s.to_string()).collect(),
    }
}

/// A variable GitLab passes without expanding it (`raw`), so `$(…)` and `${…}` reach the runner as written.
fn raw_variable(key: &str, value: &str) -> runwright_api::types::JobVariable {
    runwright_api::types::JobVariable {
        key: key.into(),
        value: value.into(),
        public: true,
        raw: true,
        ..Default::default()
    }
}

/// The value of `name=` on its own line in a trace.
fn traced(t: &str, name: &str) -> String {
    t.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name}= missing in {t}"))
        .trim()
        .to_string()
}

/// Adds `sub` (already served) as submodule `at` of the source repository `parent`, its URL in .gitmodules
/// set to `url`; returns the new commit of `parent`.
fn add_submodule(h: &Harness, parent: &str, sub: &str, at: &str, url: &str) -> String {
    let src = h.path().join("src").join(parent);
    let sub_path = h
        .path()
        .join(format!("git/{sub}.git"))
        .to_string_lossy()
        .to_string();
    h.git(
        &src,
        &[
            "-c",
            "protocol.allow=always",
            "submodule",
            "add",
            "-q",
            &sub_path,
            at,
        ],
    );
    h.git(
        &src,
        &[
            "config",
            "-f",
            ".gitmodules",
            &format!("submodule.{at}.url"),
            url,
        ],
    );
    h.commit(parent, &[], &format!("add {at}"))
}

#[tokio::test]
async fn the_job_token_stays_out_of_git_config_and_the_jobs_own_git_fetch_still_works() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    let sha = h.make_repo("grp/app", &[("README.md", "hello\n")]);
    h.start();
    let store = h.path().join("credential-store");
    let mut spec = git_job(
        "tokenless",
        "grp/app",
        &sha,
        &[
            // What a credential helper of the job's kept from get_sources (runner `writeClearGitCredentials`).
            &format!(
                "echo stored=$(grep -c gitlab-ci-token {} || true)",
                store.display()
            ),
            "git fetch origin && echo own-fetch=ok",
            "echo remote=$(git config --get remote.origin.url)",
            "echo dir=$CI_PROJECT_DIR",
            "echo tmp=$RUNNER_TEMP_PROJECT_DIR",
        ],
    );
    spec.hooks = vec![
        hook(
            "pre_get_sources_script",
            &[&format!(
                "git config --global credential.helper 'store --file={}'",
                store.display()
            )],
        ),
        hook(
            "post_get_sources_script",
            &["echo prompt=$GIT_TERMINAL_PROMPT gcm=$GCM_INTERACTIVE"],
        ),
    ];
    let job = h.final_job(h.coordinator.enqueue(spec)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("own-fetch=ok"), "{t}");
    assert!(t.contains("prompt=0 gcm=Never"), "{t}");
    assert_eq!(traced(&t, "stored"), "0", "{t}");
    let remote = traced(&t, "remote");
    assert!(
        remote.starts_with("http://127.0.0.1:")
            && remote.ends_with("/grp/app.git")
            && !remote.contains('@'),
        "{remote}"
    );
    let dir = std::path::PathBuf::from(traced(&t, "dir"));
    let config = std::fs::read_to_string(dir.join(".git/config")).expect(".git/config");
    assert!(
        !config.contains(&job.token),
        "token in .git/config: {config}"
    );
    assert!(!config.contains("gitlab-ci-token"), "{config}");
    assert!(config.contains(".gitlab-runner.ext.conf"), "{config}");
    // The credentials lived in the job's temporary dir, which is gone with the job.
    let tmp = std::path::PathBuf::from(traced(&t, "tmp"));
    assert!(!tmp.join(".gitlab-runner.ext.conf").exists());
    assert!(!t.contains(&job.token), "job token in trace");
    // The runner's fetch names itself (`http.userAgent`), the job's own fetch is plain git.
    let agents: Vec<String> = h
        .coordinator
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/git-upload-pack"))
        .filter_map(|r| r.request_headers.get("user-agent").cloned())
        .collect();
    assert!(
        agents.iter().any(|a| a.starts_with("runwright ")),
        "{agents:?}"
    );
}

#[tokio::test]
async fn git_flags_are_arguments_and_never_shell_text() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    let sha = h.make_repo("grp/app", &[("f.txt", "f\n")]);
    h.start();
    let first = git_job("first", "grp/app", &sha, &["touch a.keep b.keep c.tmp"]);
    assert_eq!(
        h.final_job(h.coordinator.enqueue(first)).await.state,
        "success"
    );

    let marker = h.path().join("pwned");
    let mut second = git_job(
        "second",
        "grp/app",
        &sha,
        &["echo files=$(ls | tr '\\n' ' ')"],
    );
    second.variables.push(raw_variable(
        "GIT_CLEAN_FLAGS",
        &format!("-ffdx -e *.keep -e $(touch${{IFS}}{})", marker.display()),
    ));
    second.variables.push(raw_variable(
        "GIT_FETCH_EXTRA_FLAGS",
        &format!(
            "--prune --quiet --upload-pack=$(touch${{IFS}}{})",
            marker.display()
        ),
    ));
    let job = h.final_job(h.coordinator.enqueue(second)).await;
    let t = job.trace_text();
    assert!(!marker.exists(), "a flag ran as shell text: {t}");
    // `*.keep` is one pattern git sees, not a glob the shell expands into a file list.
    assert_eq!(traced(&t, "files"), "a.keep b.keep f.txt", "{t}");
    assert_eq!(job.state, "success", "{t}");
}

#[tokio::test]
async fn settings_the_runner_only_warns_about_do_not_fail_the_job() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    let sha = h.make_repo("grp/app", &[("f.txt", "content\n")]);
    h.start();
    let spec = git_job("warned", "grp/app", &sha, &["cat f.txt"])
        .with_variable("GIT_STRATEGY", "rsync")
        .with_variable("GET_SOURCES_ATTEMPTS", "20")
        .with_variable("RESTORE_CACHE_ATTEMPTS", "0")
        .with_variable("GIT_CHECKOUT", "maybe")
        .with_variable("RUNNER_SCRIPT_TIMEOUT", "ten minutes")
        .with_variable("RUNNER_AFTER_SCRIPT_TIMEOUT", "-5m");
    let job = h.final_job(h.coordinator.enqueue(spec)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("content\n"), "{t}");
    for w in [
        "WARNING: GIT_STRATEGY: expected either 'clone', 'fetch', 'none' or 'empty' got \"rsync\", using default value 'fetch'\n",
        "GIT_CHECKOUT: expected bool got \"maybe\", using default value: true\n",
        "GET_SOURCES_ATTEMPTS: number of attempts out of the range [1, 10], clamping to: 10\n",
        "RESTORE_CACHE_ATTEMPTS: number of attempts out of the range [1, 10], clamping to: 1",
        "WARNING: Ignoring malformed RUNNER_SCRIPT_TIMEOUT timeout: ten minutes",
        "WARNING: Ignoring relative RUNNER_AFTER_SCRIPT_TIMEOUT timeout: -5m",
    ] {
        assert!(t.contains(w), "{w:?} missing in {t}");
    }
    // The settings come in one warning before the executor is prepared.
    let settings = t.find("GIT_STRATEGY: expected").expect("warning");
    assert!(settings < t.find("Preparing the \"shell\" executor").expect("prepare"));

    // A script timeout longer than the job is the job timeout.
    let mut long = git_job("long", "grp/app", &sha, &["cat f.txt"])
        .with_variable("RUNNER_SCRIPT_TIMEOUT", "3h");
    long.timeout = 3600;
    let job = h.final_job(h.coordinator.enqueue(long)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(
        t.contains("WARNING: RUNNER_SCRIPT_TIMEOUT timeout: 3h is longer than job timeout. Setting to job timeout"),
        "{t}"
    );

    // An unknown submodule strategy warns, and the runner then fails get_sources with it.
    let bad = git_job("bad-submodules", "grp/app", &sha, &["true"])
        .with_variable("GIT_SUBMODULE_STRATEGY", "deep");
    let job = h.final_job(h.coordinator.enqueue(bad)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "failed", "{t}");
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    assert!(
        t.contains("WARNING: GIT_SUBMODULE_STRATEGY: expected either 'normal', 'recursive' or 'none' got \"deep\""),
        "{t}"
    );
    assert!(
        t.contains("ERROR: Job failed (system failure): unknown GIT_SUBMODULE_STRATEGY"),
        "{t}"
    );
}

#[tokio::test]
async fn lfs_files_are_checked_out_with_their_content_in_the_repository_and_its_submodules() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    // A build host with Git LFS set up for its user (`git lfs install`), as GitLab's helper image has it.
    h.git(h.path(), &["lfs", "install", "--skip-repo"]);
    h.make_repo("grp/lib", &[("lib.txt", "lib\n")]);
    h.lfs_track("grp/lib", "*.bin");
    h.commit("grp/lib", &[("lib.bin", "large library blob\n")], "lfs");
    h.make_repo("grp/app", &[("app.txt", "app\n")]);
    h.lfs_track("grp/app", "*.bin");
    h.commit("grp/app", &[("data.bin", "large app blob\n")], "lfs");
    let sha = add_submodule(&h, "grp/app", "grp/lib", "lib", "../lib.git");
    // The objects went to the served repositories' LFS stores, as a push to GitLab uploads them.
    assert!(h.path().join("git/grp/app.git/lfs/objects").is_dir());
    h.start();
    let mut project = ProjectSpec::new(7, "grp/app");
    project.token_access = vec!["grp/lib".into()];
    let mut spec = git_job("lfs", "grp/app", &sha, &["cat data.bin", "cat lib/lib.bin"])
        .with_variable("GIT_SUBMODULE_STRATEGY", "normal");
    spec.project = project.clone();
    let job = h.final_job(h.coordinator.enqueue(spec)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("large app blob\n"), "{t}");
    assert!(t.contains("large library blob\n"), "{t}");
    assert!(t.contains("Pulling LFS files..."), "{t}");
    assert!(!t.contains(&job.token), "job token in trace");
    let lfs_downloads = h
        .coordinator
        .requests()
        .iter()
        .filter(|r| r.path.contains("/gitlab-lfs/objects/"))
        .count();
    assert_eq!(lfs_downloads, 2, "one object of each repository");

    // A job's own GIT_LFS_SKIP_SMUDGE keeps the pointer files.
    let mut skip = git_job("skip", "grp/app", &sha, &["head -c 40 data.bin; echo"])
        .with_variable("GIT_LFS_SKIP_SMUDGE", "1")
        .with_variable("GIT_STRATEGY", "clone");
    skip.project = project;
    let job = h.final_job(h.coordinator.enqueue(skip)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("version https://git-lfs.github.com/spec"), "{t}");
}

#[tokio::test]
async fn git_clone_path_needs_custom_build_dir_and_stays_in_the_builds_dir() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    let sha = h.make_repo("grp/app", &[("f.txt", "custom\n")]);
    h.start();
    // The shell executor refuses it unless [runners.custom_build_dir] is enabled.
    let spec = git_job("refused", "grp/app", &sha, &["pwd"])
        .with_variable("GIT_CLONE_PATH", "$CI_BUILDS_DIR/elsewhere/app");
    let job = h.final_job(h.coordinator.enqueue(spec)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "failed", "{t}");
    assert_eq!(
        job.failure_reason.as_deref(),
        Some("runner_configuration_error")
    );
    assert!(
        t.contains("ERROR: Job failed: setting GIT_CLONE_PATH is not allowed, enable `custom_build_dir` feature"),
        "{t}"
    );
    drop(h);

    let mut h = Harness::new().await;
    h.single_runner("", "  [runners.custom_build_dir]\n    enabled = true");
    let sha = h.make_repo("grp/app", &[("f.txt", "custom\n")]);
    h.start();
    let spec = git_job(
        "custom",
        "grp/app",
        &sha,
        &["echo pwd=$(pwd)", "echo dir=$CI_PROJECT_DIR", "cat f.txt"],
    )
    .with_variable("GIT_CLONE_PATH", "$CI_BUILDS_DIR/elsewhere/app");
    let job = h.final_job(h.coordinator.enqueue(spec)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    let want = h.work_dir().join("builds/elsewhere/app");
    assert_eq!(traced(&t, "pwd"), want.to_string_lossy(), "{t}");
    assert_eq!(traced(&t, "dir"), want.to_string_lossy(), "{t}");
    assert!(t.contains("custom\n"));

    let outside = git_job("outside", "grp/app", &sha, &["pwd"])
        .with_variable("GIT_CLONE_PATH", "$CI_BUILDS_DIR/../escape");
    let job = h.final_job(h.coordinator.enqueue(outside)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "failed", "{t}");
    assert_eq!(
        job.failure_reason.as_deref(),
        Some("runner_configuration_error")
    );
    assert!(t.contains("has to be within"), "{t}");
}

#[tokio::test]
async fn a_sha256_repository_is_fetched_into_a_sha256_checkout() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    let sha = h.make_repo_with_format("grp/app", "sha256", &[("f.txt", "sha256 content\n")]);
    assert_eq!(sha.len(), 64);
    h.start();
    let spec = git_job(
        "sha256",
        "grp/app",
        &sha,
        &[
            "cat f.txt",
            "echo format=$(git rev-parse --show-object-format)",
            "echo head=$(git rev-parse HEAD)",
        ],
    );
    let job = h.final_job(h.coordinator.enqueue(spec)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert_eq!(traced(&t, "format"), "sha256");
    assert_eq!(traced(&t, "head"), sha);
    assert!(t.contains("sha256 content\n"), "{t}");
}

#[tokio::test]
async fn submodules_update_is_retried_once_and_ssh_urls_are_forced_to_https() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.make_repo("grp/lib", &[("lib.txt", "over https\n")]);
    h.make_repo("grp/app", &[("app.txt", "app\n")]);
    // An SSH URL (GitLab's scp-like form) that only GIT_SUBMODULE_FORCE_HTTPS makes reachable.
    let sha = add_submodule(&h, "grp/app", "grp/lib", "lib", "git@127.0.0.1:grp/lib.git");
    h.start();
    let mut project = ProjectSpec::new(7, "grp/app");
    project.token_access = vec!["grp/lib".into()];
    let flag = h.path().join("first-update-failed");
    let mut spec = git_job("submodules", "grp/app", &sha, &["cat lib/lib.txt"])
        .with_variable("GIT_SUBMODULE_STRATEGY", "normal")
        .with_variable("GIT_SUBMODULE_FORCE_HTTPS", "true")
        .with_variable("GIT_SUBMODULE_PATHS", "lib");
    spec.project = project.clone();
    // The first `git submodule update` of the script fails, as a flaky network would make it.
    spec.hooks = vec![hook(
        "pre_get_sources_script",
        &[&format!(
            "git() {{ case \" $* \" in *\" submodule update \"*) if [ ! -e {f} ]; then : > {f}; return 1; fi;; esac; command git \"$@\"; }}",
            f = flag.display()
        )],
    )];
    let job = h.final_job(h.coordinator.enqueue(spec)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(flag.exists(), "the first update did not run: {t}");
    assert!(t.contains("Updating submodules failed. Retrying..."), "{t}");
    assert!(t.contains("over https\n"), "{t}");
    assert!(!t.contains(&job.token), "job token in trace");

    // Submodules are cleaned even when the job turns `git clean` off for the repository itself.
    let mut plant = git_job(
        "plant",
        "grp/app",
        &sha,
        &["touch top-untracked lib/sub-untracked"],
    )
    .with_variable("GIT_SUBMODULE_STRATEGY", "normal")
    .with_variable("GIT_SUBMODULE_FORCE_HTTPS", "true");
    plant.project = project.clone();
    assert_eq!(
        h.final_job(h.coordinator.enqueue(plant)).await.state,
        "success"
    );
    let mut again = git_job(
        "again",
        "grp/app",
        &sha,
        &[
            "test -e top-untracked && echo top=kept",
            "test -e lib/sub-untracked || echo sub=cleaned",
        ],
    )
    .with_variable("GIT_SUBMODULE_STRATEGY", "normal")
    .with_variable("GIT_SUBMODULE_FORCE_HTTPS", "true")
    .with_variable("GIT_CLEAN_FLAGS", "none");
    again.project = project;
    let job = h.final_job(h.coordinator.enqueue(again)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(
        t.contains("top=kept\n") && t.contains("sub=cleaned\n"),
        "{t}"
    );
}

#[tokio::test]
async fn clean_git_config_removes_hooks_and_configs_a_previous_job_planted() {
    let mut h = Harness::new().await;
    h.single_runner("", "  clean_git_config = true");
    let sha = h.make_repo("grp/app", &[("f.txt", "f\n")]);
    h.start();
    let marker = h.path().join("hook-ran");
    let plant = git_job(
        "plant",
        "grp/app",
        &sha,
        &[
            "mkdir -p .git/hooks",
            &format!(
                "printf '#!/bin/sh\\ntouch {}\\n' > .git/hooks/reference-transaction",
                marker.display()
            ),
            "chmod +x .git/hooks/reference-transaction",
            "git config alias.planted '!true'",
            "echo dir=$CI_PROJECT_DIR",
        ],
    );
    let job = h.final_job(h.coordinator.enqueue(plant)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    let dir = std::path::PathBuf::from(traced(&t, "dir"));
    // The runner's cleanup removes them when the job ends.
    assert!(!dir.join(".git/hooks/reference-transaction").exists());
    assert!(!dir.join(".git/config").exists());

    // Planted again behind the runner's back: the next get_sources removes them before git runs.
    std::fs::create_dir_all(dir.join(".git/hooks")).expect("hooks");
    std::fs::write(
        dir.join(".git/hooks/reference-transaction"),
        format!("#!/bin/sh\ntouch {}\n", marker.display()),
    )
    .expect("hook");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join(".git/hooks/reference-transaction"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
    }
    let sha2 = h.commit("grp/app", &[("f.txt", "second\n")], "second");
    let next = git_job(
        "next",
        "grp/app",
        &sha2,
        &["cat f.txt", "git config alias.planted || echo no-alias"],
    );
    let job = h.final_job(h.coordinator.enqueue(next)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("second\n") && t.contains("no-alias\n"), "{t}");
    assert!(!marker.exists(), "a planted hook ran: {t}");
}

#[tokio::test]
async fn safe_directory_checkout_lets_git_use_a_checkout_owned_by_another_user() {
    if !can_run_as_nobody() {
        return;
    }
    let mut h = Harness::new().await;
    h.single_runner("", "  safe_directory_checkout = true");
    let sha = h.make_repo("grp/app", &[("f.txt", "one\n")]);
    h.start();
    let first = git_job("first", "grp/app", &sha, &["echo dir=$CI_PROJECT_DIR"]);
    let job = h.final_job(h.coordinator.enqueue(first)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    let dir = traced(&t, "dir");
    let global = std::fs::read_to_string(h.path().join("gitconfig")).expect("global config");
    assert!(global.contains(&format!("directory = {dir}")), "{global}");

    // The checkout now belongs to someone else (a rootless image's user, in GitLab's docker case): git
    // refuses such a repository unless it is a safe.directory.
    let out = std::process::Command::new("chown")
        .args(["-R", "nobody", &dir])
        .status()
        .expect("chown");
    assert!(out.success());
    let sha2 = h.commit("grp/app", &[("f.txt", "two\n")], "second");
    let second = git_job("second", "grp/app", &sha2, &["cat f.txt"]);
    let job = h.final_job(h.coordinator.enqueue(second)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("two\n"), "{t}");
    let global = std::fs::read_to_string(h.path().join("gitconfig")).expect("global config");
    assert_eq!(
        global.matches(&format!("directory = {dir}")).count(),
        1,
        "one entry, not one per job: {global}"
    );
}

#[tokio::test]
async fn get_sources_timeout_ends_a_slow_fetch_as_a_timeout() {
    let mut h = Harness::new().await;
    h.single_runner("", "  get_sources_timeout = \"1s\"");
    let sha = h.make_repo("grp/app", &[("f.txt", "f\n")]);
    h.start();
    let mut spec = git_job("slow", "grp/app", &sha, &["echo never"])
        .with_variable("GET_SOURCES_ATTEMPTS", "3");
    spec.hooks = vec![hook("pre_get_sources_script", &["sleep 30"])];
    let started = std::time::Instant::now();
    let job = h.final_job(h.coordinator.enqueue(spec)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "failed", "{t}");
    assert_eq!(job.failure_reason.as_deref(), Some("job_execution_timeout"));
    assert!(
        t.contains("ERROR: Job failed: get sources timeout: exceeded timeout of 1s"),
        "{t}"
    );
    assert!(
        t.contains(
            "WARNING: get_sources could not run to completion because the timeout was exceeded."
        ),
        "{t}"
    );
    assert!(!t.contains("never\n"));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}
