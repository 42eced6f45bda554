//! Issue 19: the docker executor's helper container. Every predefined stage runs in one helper container per
//! job (GitLab's `predefined` container), on the job's volumes and network; nothing of a job runs on the host,
//! and a remote daemon serves jobs like the local one.

use crate::docker::*;
use crate::harness::*;
use runwright_api::types::{Artifact, Cache, Hook};
use std::process::Command;

fn cache(key: &str, paths: &[&str]) -> Cache {
    Cache {
        key: key.into(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        policy: "pull-push".into(),
        when: "on_success".into(),
        ..Default::default()
    }
}

fn artifact(paths: &[&str]) -> Artifact {
    Artifact {
        paths: paths.iter().map(|p| p.to_string()).collect(),
        when: "on_success".into(),
        artifact_type: "archive".into(),
        artifact_format: "zip".into(),
        ..Default::default()
    }
}

/// The containers of `runner`'s jobs labelled as GitLab's predefined container, on the host's daemon.
fn predefined_containers(token: &str) -> String {
    let o = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!(
                "label=com.gitlab.gitlab-runner.runner.id={}",
                runwright_config::short_token(token)
            ),
            "--filter",
            "label=com.gitlab.gitlab-runner.type=predefined",
            "--format",
            "{{.Names}}",
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One helper container per job, created with GitLab's name and label, the build container's binds, network and
/// environment, never privileged; removed with the job. A job without predefined work gets none.
#[tokio::test]
async fn the_helper_container_is_made_once_per_job_removed_after_and_skipped_without_predefined_work(
) {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let proxy = RecordingProxy::start(h.path());
    let token = h.docker_runner(
        "",
        &format!(
            "    host = \"unix://{}\"\n    privileged = true\n    allowed_privileged_images = [\"none-of-these\"]",
            proxy.socket.display()
        ),
    );
    let sha = h.make_repo("grp/app", &[("README.md", "hello from git\n")]);
    h.start();
    let mut spec = job("with-sources", (7, "grp/app"), &sha, &["cat README.md"]);
    spec.artifacts = vec![artifact(&["README.md"])];
    spec.cache = vec![cache("k", &["README.md"])];
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("hello from git\n"), "{t}");
    let creates = proxy.creates();
    let helpers: Vec<_> = creates
        .iter()
        .filter(|(n, _)| n.ends_with("-predefined"))
        .collect();
    assert_eq!(helpers.len(), 1, "one helper per job: {creates:?}");
    let (name, helper) = helpers[0];
    let short = runwright_config::short_token(&token);
    assert!(
        name.starts_with(&format!("runner-{short}-project-7-concurrent-0-")),
        "{name}"
    );
    assert_eq!(
        helper["Labels"]["com.gitlab.gitlab-runner.type"], "predefined",
        "{helper}"
    );
    assert_eq!(
        helper["Labels"]["com.gitlab.gitlab-runner.job.id"],
        id.to_string(),
        "{helper}"
    );
    assert!(
        helper["Image"]
            .as_str()
            .is_some_and(|i| i.starts_with("runwright/gitlab-runner-helper:")),
        "{helper}"
    );
    let (_, build) = creates
        .iter()
        .find(|(n, _)| n.ends_with("-build"))
        .expect("build container");
    assert_eq!(
        helper["HostConfig"]["Binds"], build["HostConfig"]["Binds"],
        "{helper}"
    );
    assert_eq!(
        helper["HostConfig"]["NetworkMode"], build["HostConfig"]["NetworkMode"],
        "{helper}"
    );
    assert_ne!(helper["HostConfig"]["Privileged"], true, "{helper}");
    assert!(
        helper["Env"]
            .to_string()
            .contains(&format!("CI_JOB_ID={id}")),
        "{helper}"
    );
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
    assert_eq!(predefined_containers(&token), "");

    // GIT_STRATEGY none, no cache, no artifacts: no helper at all.
    let before = proxy.creates().len();
    let id = h
        .coordinator
        .enqueue(sourceless("no-predefined-work", &["echo bare"]));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("bare\n"), "{t}");
    let creates = proxy.creates();
    assert!(
        !creates[before..]
            .iter()
            .any(|(n, _)| n.ends_with("-predefined")),
        "{creates:?}"
    );
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

/// The job's `pre_get_sources_script` and `post_get_sources_script` run in the helper container: a marker they
/// make outside the volumes is not on the host, and neither hook nor script can read the runner's config.toml.
#[tokio::test]
async fn get_sources_hooks_leave_no_trace_on_the_host() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "");
    let sha = h.make_repo("grp/app", &[("README.md", "hello from git\n")]);
    h.start();
    let marker = std::env::temp_dir().join(format!("rw-hook-marker-{:016x}", rand_u64()));
    let m = marker.display().to_string();
    let config = h.config_path.display().to_string();
    let read_config = format!(
        "if cat {config} 2>/dev/null | grep -q token; then echo CONFIG-READ; else echo config-unreadable; fi"
    );
    let mut spec = job(
        "hooks",
        (7, "grp/app"),
        &sha,
        &[
            &read_config,
            &format!("test -e {m} || echo no-marker-in-build"),
        ],
    );
    spec.hooks = vec![
        Hook {
            name: "pre_get_sources_script".into(),
            script: vec![format!("touch {m}"), "echo pre-hook-ran".into()],
        },
        Hook {
            name: "post_get_sources_script".into(),
            script: vec![
                format!("test -e {m} && echo marker-made-in-the-helper"),
                read_config.clone(),
                "id -u".into(),
            ],
        },
    ];
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("pre-hook-ran\n"), "{t}");
    assert!(t.contains("marker-made-in-the-helper\n"), "{t}");
    assert!(!t.contains("\nCONFIG-READ\n"), "{t}");
    assert_eq!(t.matches("config-unreadable\n").count(), 2, "{t}");
    assert!(t.contains("no-marker-in-build\n"), "{t}");
    assert!(
        !marker.exists(),
        "the hook made {} on the host",
        marker.display()
    );
    assert!(!t.contains(&token), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

/// GitLab's helper contract: a helper image with only `/usr/bin/gitlab-runner-helper` (runwright's binary under
/// that name), git and a shell, at GitLab's paths, serves a job with sources, a cache and an artifact.
#[tokio::test]
async fn a_helper_image_with_only_gitlabs_contract_serves_a_job() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let tag = format!(
        "127.0.0.1:5999/runwright-test/helper-contract:{:08x}",
        rand_u64() as u32
    );
    struct RemoveImage(String);
    impl Drop for RemoveImage {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
        }
    }
    let _image = RemoveImage(tag.clone());
    let out = h
        .command()
        .args(["helper-image", "build", "--contract-only", "--tag", &tag])
        .output()
        .expect("runwright helper-image build");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tag);
    // Nothing runwright-specific in it.
    let ls = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            &tag,
            "sh",
            "-c",
            "test -x /usr/bin/gitlab-runner-helper && ! test -e /usr/bin/runwright && git --version >/dev/null && echo contract-ok",
        ])
        .output()
        .expect("docker run");
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "contract-ok\n");

    let token = h.docker_runner(
        "",
        &format!("    helper_image = \"{tag}\"\n    volumes = [\"/cache\"]"),
    );
    let sha = h.make_repo("grp/app", &[("README.md", "hello from git\n")]);
    h.start();
    let script = [
        "cat README.md",
        "test -f cached/seen && echo cache-was-restored || echo first-run",
        "mkdir -p cached && touch cached/seen",
        "echo built > out.txt",
    ];
    for round in 0..2 {
        let mut spec = job("contract", (7, "grp/app"), &sha, &script);
        spec.cache = vec![cache("contract", &["cached/"])];
        spec.artifacts = vec![artifact(&["out.txt"])];
        let id = h.coordinator.enqueue(spec);
        let j = h.final_job(id).await;
        let t = j.trace_text();
        assert_eq!(j.state, "success", "{t}");
        assert!(t.contains(&format!(" for {tag} ...")), "{t}");
        // gitlab-runner-helper's own lines, from the contract image's helper.
        assert!(t.contains("Created cache"), "{t}");
        assert!(
            t.contains("Uploading artifacts as \"archive\" to coordinator... 201 Created"),
            "{t}"
        );
        assert!(t.contains("hello from git\n"), "{t}");
        if round == 1 {
            assert!(t.contains("cache-was-restored\n"), "{t}");
        }
        assert!(h.coordinator.artifact(id, "archive").is_some(), "{t}");
        assert_eq!(leftovers(&token, id), Vec::<String>::new());
    }
}

/// Issue 19 item 5: the suite's TLS Docker-in-Docker daemon as the runner's `host`. A job with sources, a
/// service, a cache and an artifact runs there (runwright's helper image built into that daemon through the API),
/// the cache is restored by the next job, and nothing of either job is left on the daemon.
#[tokio::test]
async fn a_remote_daemon_runs_a_job_with_sources_service_cache_and_artifact_and_keeps_nothing() {
    if !docker_ready(&[DIND, BUSYBOX, EXPOSED]) {
        return;
    }
    let dind = TlsDind::start();
    dind.load(BUSYBOX);
    dind.load(EXPOSED);
    let mut h = Harness::docker().await;
    let token = h.docker_runner(
        "",
        &format!(
            "{}\n    volumes = [\"/cache\"]\n    wait_for_services_timeout = 30",
            dind.runner_config()
        ),
    );
    let sha = h.make_repo("grp/app", &[("README.md", "hello from git\n")]);
    h.start();
    let script = [
        "cat README.md",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc web 8080 | tail -n 1",
        "test -f cached/seen && echo cache-was-restored || echo first-run",
        "mkdir -p cached && touch cached/seen",
        "echo made-remotely > out.txt",
    ];
    let short = runwright_config::short_token(&token);
    for round in 0..2 {
        let mut spec = job("remote", (7, "grp/app"), &sha, &script);
        spec.services = vec![service(EXPOSED, "web")];
        spec.cache = vec![cache("remote", &["cached/"])];
        spec.artifacts = vec![artifact(&["out.txt"])];
        let id = h.coordinator.enqueue(spec);
        let j = h.final_job(id).await;
        let t = j.trace_text();
        assert_eq!(j.state, "success", "{t}");
        assert!(t.contains("hello from git\n"), "{t}");
        assert!(t.contains("hello from service"), "{t}");
        assert!(
            t.contains(if round == 0 {
                "first-run\n"
            } else {
                "cache-was-restored\n"
            }),
            "{t}"
        );
        assert!(h.coordinator.artifact(id, "archive").is_some(), "{t}");
        // Nothing of the job on the remote daemon: containers, network, temporary volumes.
        for (what, extra) in [
            ("container", vec!["-a"]),
            ("network", vec![]),
            (
                "volume",
                vec!["--filter", "label=com.gitlab.gitlab-runner.type=temporary"],
            ),
        ] {
            let runner = format!("label=com.gitlab.gitlab-runner.runner.id={short}");
            let job_label = format!("label=com.gitlab.gitlab-runner.job.id={id}");
            let mut args = vec![
                what, "ls", "-q", "--filter", &runner, "--filter", &job_label,
            ];
            args.extend(extra);
            let o = dind.cli(&args);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert_eq!(String::from_utf8_lossy(&o.stdout), "", "{what}s left");
        }
    }
    // The helper image reached the remote daemon through the build API.
    let o = dind.cli(&[
        "images",
        "-q",
        "--filter",
        "reference=runwright/gitlab-runner-helper",
    ]);
    assert!(!String::from_utf8_lossy(&o.stdout).trim().is_empty());
}

/// A stage in the helper container honours cancel and the job timeout: the hook's `sleep` is stopped (the helper
/// gets SIGTERM, then SIGKILL after the grace period), the job ends as canceled or timed out at once, and the
/// helper is removed with the rest.
#[tokio::test]
async fn a_stage_in_the_helper_is_stopped_by_cancel_and_by_the_job_timeout() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "");
    let sha = h.make_repo("grp/app", &[("README.md", "x\n")]);
    h.start();
    let hook = Hook {
        name: "pre_get_sources_script".into(),
        script: vec!["echo hook-started".into(), "sleep 300".into()],
    };
    let mut canceled = job("cancel-me", (7, "grp/app"), &sha, &["echo never"]);
    canceled.hooks = vec![hook.clone()];
    let cancel_id = h.coordinator.enqueue(canceled);
    let mut timed = job("time-me-out", (7, "grp/app"), &sha, &["echo never"]);
    timed.hooks = vec![hook];
    timed.timeout = 6;
    let timeout_id = h.coordinator.enqueue(timed);
    h.wait_trace(cancel_id, "hook-started").await;
    assert!(
        predefined_containers(&token).contains("-predefined"),
        "the helper runs the hook"
    );
    // Force-cancel (a graceful cancel stops only the user's script, as GitLab's runner does): the job context
    // ends, and with it the hook in the helper; the runner learns it at its next update.
    h.coordinator.force_cancel(cancel_id);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !leftovers(&token, cancel_id).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the canceled job's containers are still there: {:?}\n{}",
            leftovers(&token, cancel_id),
            h.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let j = h.final_job(cancel_id).await;
    assert_eq!(j.state, "canceled", "{}", j.trace_text());
    assert!(
        h.log().contains("GitLab requests to stop the job job=1"),
        "{}",
        h.log()
    );
    let j = h.final_job(timeout_id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    assert_eq!(
        j.failure_reason.as_deref(),
        Some("job_execution_timeout"),
        "{t}"
    );
    assert!(!t.contains("\nnever\n"), "{t}");
    assert_eq!(leftovers(&token, cancel_id), Vec::<String>::new());
    assert_eq!(leftovers(&token, timeout_id), Vec::<String>::new());
    assert_eq!(predefined_containers(&token), "");
}

/// `clone_url` is what git in the helper container fetches from: here the coordinator listens on loopback only
/// (its `repo_url` names 127.0.0.1, which a container cannot reach) and a forwarder on the suite network's
/// gateway is the `clone_url`; the job gets its sources only through it.
#[tokio::test]
async fn clone_url_is_where_the_helper_fetches_from() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let Some(gateway) = reach_address().await else {
        panic!("no address containers reach");
    };
    let mut h = Harness::new().await;
    let upstream = h
        .coordinator
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let listener = tokio::net::TcpListener::bind((gateway, 0))
        .await
        .expect("bind forwarder");
    let forwarder = listener.local_addr().expect("addr");
    let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = forwarded.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream.as_str()).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    let token = h.docker_runner(&format!("  clone_url = \"http://{forwarder}\""), "");
    let sha = h.make_repo("grp/app", &[("README.md", "through clone_url\n")]);
    h.start();
    let id = h
        .coordinator
        .enqueue(job("clone-url", (7, "grp/app"), &sha, &["cat README.md"]));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    task.abort();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("through clone_url\n"), "{t}");
    assert!(forwarded.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert!(!t.contains(&token), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

/// The helper writes with umask 0000 (GitLab's default), so a build container user who is not root can change
/// the checkout; with `FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR` the files keep git's usual modes and the helper gives
/// the project and temp dirs to that user instead (GitLab's `changeFilesOwnership`).
#[tokio::test]
async fn the_helper_writes_with_umask_0000_unless_the_feature_flag_disables_it() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "    user = \"1000\"");
    let sha = h.make_repo("grp/app", &[("README.md", "x\n")]);
    h.start();
    let script = [
        "id -u",
        "stat -c 'mode %a' README.md",
        "echo more >> README.md && touch new-file && echo writable-by-1000",
    ];
    let id = h
        .coordinator
        .enqueue(job("umask", (7, "grp/app"), &sha, &script));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("\n1000\n"), "{t}");
    assert!(t.contains("mode 666\n"), "{t}");
    assert!(t.contains("writable-by-1000\n"), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());

    let id = h.coordinator.enqueue(
        job("no-umask", (7, "grp/app"), &sha, &script)
            .with_variable("FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR", "true"),
    );
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("mode 644\n"), "{t}");
    assert!(
        t.contains("Changing ownership of files at \"/builds/grp/app\" to 1000\n"),
        "{t}"
    );
    assert!(t.contains("writable-by-1000\n"), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}
