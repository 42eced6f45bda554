//! The docker executor against the real dockerd that `scripts/install-test-deps` starts, with images built
//! locally by `scripts/test-images` (no registry: every image name points at a closed loopback port, so a pull
//! attempt fails at once and never leaves the machine).

use crate::harness::*;
use base64::Engine as _;
use runwright_api::types::Image;
use runwright_coordinator::{JobSpec, ProjectSpec};
use std::process::Command;

pub const BUSYBOX: &str = "127.0.0.1:5999/runwright-test/busybox:1";
pub const EXPOSED: &str = "127.0.0.1:5999/runwright-test/busybox-exposed:1";
pub const NOSHELL: &str = "127.0.0.1:5999/runwright-test/noshell:1";
pub const DEBIAN: &str = "127.0.0.1:5999/runwright-test/debian:12";
pub const DIND: &str = "127.0.0.1:5999/runwright-test/dind:1";

/// `false` (with a visible message) only where Docker is not installed at all; where it is, the daemon and the
/// test images must be there, so CI, which installs both, can never skip these tests silently.
pub fn docker_ready(images: &[&str]) -> bool {
    if Command::new("docker").arg("--version").output().is_err() {
        eprintln!(
            "SKIPPED: docker is not installed (scripts/install-test-deps installs and starts it)"
        );
        return false;
    }
    let info = Command::new("docker")
        .arg("info")
        .output()
        .expect("docker info");
    assert!(
        info.status.success(),
        "dockerd is not running (scripts/install-test-deps starts it): {}",
        String::from_utf8_lossy(&info.stderr)
    );
    for image in images {
        let found = Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .expect("docker image inspect");
        assert!(
            found.status.success(),
            "test image {image} is missing: run scripts/test-images"
        );
    }
    true
}

/// Names of the containers, networks and temporary volumes of this runner's job (job ids repeat across
/// tests, runner tokens do not).
pub fn leftovers(token: &str, job_id: i64) -> Vec<String> {
    let runner = format!(
        "label=com.gitlab.gitlab-runner.runner.id={}",
        runwright_config::short_token(token)
    );
    let job = format!("label=com.gitlab.gitlab-runner.job.id={job_id}");
    let mut out = Vec::new();
    for (what, format) in [
        ("container", "{{.Names}}"),
        ("network", "{{.Name}}"),
        ("volume", "{{.Name}}"),
    ] {
        let mut args = vec![what, "ls", "--filter", &runner, "--filter", &job];
        if what == "container" {
            args.push("-a");
        }
        if what == "volume" {
            args.extend(["--filter", "label=com.gitlab.gitlab-runner.type=temporary"]);
        }
        args.extend(["--format", format]);
        let o = Command::new("docker").args(&args).output().expect("docker");
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| format!("{what} {l}")),
        );
    }
    out
}

pub fn image(name: &str) -> Option<Image> {
    Some(Image {
        name: name.into(),
        ..Default::default()
    })
}

pub fn service(name: &str, alias: &str) -> Image {
    Image {
        name: name.into(),
        alias: alias.into(),
        ..Default::default()
    }
}

pub fn job(name: &str, project: (i64, &str), sha: &str, script: &[&str]) -> JobSpec {
    JobSpec {
        name: name.into(),
        script: script.iter().map(|s| s.to_string()).collect(),
        project: ProjectSpec::new(project.0, project.1),
        sha: sha.into(),
        ..Default::default()
    }
}

/// A job of project 7 `grp/app` that needs no sources (`GIT_STRATEGY=none`).
pub fn sourceless(name: &str, script: &[&str]) -> JobSpec {
    job(
        name,
        (7, "grp/app"),
        runwright_coordinator::DUMMY_SHA,
        script,
    )
    .with_variable("GIT_STRATEGY", "none")
}

impl Harness {
    /// config.toml with one docker runner; `docker_extra` goes into `[runners.docker]`.
    /// The runner's token is new for every test: the networks and volumes of tests running side by side on
    /// one dockerd (with the same job ids) then never share a name.
    pub fn docker_runner(&self, runner_extra: &str, docker_extra: &str) -> String {
        let token = format!("glrt-t1_{:016x}", rand_u64());
        self.coordinator
            .add_runner(&token, runwright_coordinator::RunnerOptions::default());
        self.write_config(&format!(
            "concurrent = 4\ncheck_interval = 1\n[[runners]]\n  name = \"docker-runner\"\n  url = \"{}\"\n  token = \"{token}\"\n  executor = \"docker\"\n{runner_extra}\n  [runners.docker]\n    image = \"{BUSYBOX}\"\n    pull_policy = [\"if-not-present\"]\n{docker_extra}\n",
            self.coordinator.url()
        ));
        token
    }
}

#[tokio::test]
async fn busybox_job_runs_with_sources_from_the_runner_and_leaves_nothing() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "");
    let sha = h.make_repo("grp/app", &[("README.md", "hello from git\n")]);
    h.start();
    let id = h.coordinator.enqueue(job(
        "busybox",
        (7, "grp/app"),
        &sha,
        &[
            "cat README.md",
            "echo dir=$CI_PROJECT_DIR",
            "echo net=$CI_BUILD_NETWORK_NAME",
            "hostname",
            "test -z \"$BASH_VERSION\" && echo plain-sh",
            "echo to-stderr >&2",
            "exit 3",
        ],
    ));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    // The container's stdout and stderr are the job's two work streams (FF_TIMESTAMPS headers `01O`, `01E`).
    let raw = j.raw_trace_text();
    assert!(
        raw.contains(" 01O plain-sh\n") && raw.contains(" 01E to-stderr\n"),
        "{raw}"
    );
    assert!(
        t.contains("Using Docker executor with image 127.0.0.1:5999/runwright-test/busybox:1"),
        "{t}"
    );
    assert!(t.contains("hello from git\n"), "{t}");
    assert!(t.contains("dir=/builds/grp/app\n"), "{t}");
    // No network of the job's own without FF_NETWORK_PER_BUILD (runner common/build.go `GetAllVariables`,
    // networks/manager.go `Create`): the default bridge, as gitlab-runner.
    assert!(t.contains("net=\n"), "{t}");
    assert!(t.contains("plain-sh\n"), "{t}");
    assert!(t.contains("Running on runner-"), "{t}");
    assert!(
        t.contains("exit status 3") || t.contains("exit code 3"),
        "{t}"
    );
    assert_eq!(j.exit_code, Some(3), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

#[tokio::test]
async fn services_are_reached_by_alias_and_reach_each_other() {
    if !docker_ready(&[BUSYBOX, EXPOSED]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "    wait_for_services_timeout = 20");
    let short = runwright_config::short_token(&token);
    h.start();
    // "relay" fetches from "web" (another service, by alias) and serves what it got on its own port.
    let relay = Image {
        name: BUSYBOX.into(),
        alias: "relay".into(),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p /www; until wget -qO /www/index.html http://web:8080/; do sleep 0.2; done; exec httpd -f -p 8081 -h /www".into(),
        ]),
        ports: vec![runwright_api::types::Port {
            number: 8081,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut spec = sourceless(
        "services",
        &[
            "wget -qO- http://web:8080/",
            "wget -qO- http://relay:8081/ | sed 's/^/via relay: /'",
            "cat /etc/hosts | grep -c . >/dev/null",
            "echo net=$CI_BUILD_NETWORK_NAME",
        ],
    )
    // Services reach each other on a network of the job's own, which GitLab makes with this flag only.
    .with_variable("FF_NETWORK_PER_BUILD", "true");
    spec.services = vec![service(EXPOSED, "web"), relay];
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(
        t.contains("Starting service 127.0.0.1:5999/runwright-test/busybox-exposed:1"),
        "{t}"
    );
    assert!(t.contains("\nhello from service\n"), "{t}");
    assert!(t.contains("via relay: hello from service\n"), "{t}");
    assert!(t.contains(&format!("net=runner-{short}-7-0-{id}\n")), "{t}");
    assert!(!t.contains("probably didn't start properly"), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

/// Issue 16: GitLab sends `services: [image]` with `"alias": null`, `"command": null`, `"variables": null` (its
/// entities; the coordinator writes the same, `payload_has_every_entity_attribute_with_gitlabs_nulls`). The job runs and reaches the service by the names derived from
/// its image (runner executors/docker/services.go).
#[tokio::test]
async fn a_service_without_alias_as_gitlab_sends_it_is_reached_by_its_image_name() {
    if !docker_ready(&[BUSYBOX, EXPOSED]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "    wait_for_services_timeout = 20");
    h.start();
    let mut spec = sourceless(
        "alias-less",
        &[
            "wget -qO- http://127.0.0.1__runwright-test__busybox-exposed:8080/",
            "wget -qO- http://127.0.0.1-runwright-test-busybox-exposed:8080/ | sed 's/^/dashed: /'",
        ],
    );
    spec.services = vec![service(EXPOSED, "")];
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("\nhello from service\n"), "{t}");
    assert!(t.contains("dashed: hello from service\n"), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

#[tokio::test]
async fn a_service_that_never_listens_gets_the_warning_block_with_its_log() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "    wait_for_services_timeout = 2");
    h.start();
    let mute = Image {
        name: BUSYBOX.into(),
        alias: "mute".into(),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo service says hi; sleep 600".into(),
        ]),
        ports: vec![runwright_api::types::Port {
            number: 9999,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut spec = sourceless("mute", &["echo job ran"]);
    spec.services = vec![mute];
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("probably didn't start properly"), "{t}");
    assert!(t.contains("service says hi"), "{t}");
    assert!(t.contains("job ran\n"), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

#[tokio::test]
async fn a_service_that_exits_gets_the_warning_block_at_once() {
    if !docker_ready(&[EXPOSED]) {
        return;
    }
    let mut h = Harness::docker().await;
    // A timeout the test would notice: the warning must come from the exit, not from the timeout.
    let token = h.docker_runner("", "    wait_for_services_timeout = 300");
    h.start();
    let dying = Image {
        name: EXPOSED.into(),
        alias: "dying".into(),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo service gives up; exit 3".into(),
        ]),
        ..Default::default()
    };
    let mut spec = sourceless("dying", &["echo job ran"]);
    spec.services = vec![dying];
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("probably didn't start properly"), "{t}");
    assert!(
        t.contains("service container exited with code 3 before its port answered"),
        "{t}"
    );
    assert!(t.contains("service gives up"), "{t}");
    assert!(t.contains("job ran\n"), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

/// The build host's main runner (`../shared/examples/config.toml`, entry `wb31-mdis-docker`) with local image
/// names: privileged dind is replaced by the least-privilege service options, as `--privileged` cannot start a
/// container on the test machines.
#[tokio::test]
async fn dind_service_builds_and_runs_an_image_with_tls_certs_from_the_shared_volume() {
    if !docker_ready(&[DIND]) {
        return;
    }
    let mut h = Harness::docker().await;
    let www = h.path().join("www");
    let token = h.docker_runner(
        "",
        &format!(
            "    tls_verify = false\n    disable_entrypoint_overwrite = false\n    oom_kill_disable = false\n    disable_cache = false\n    volumes = [\"/cache\", \"/certs/client\", \"{}:/builds/icdp-osg/mdis:rw\", \"/sys/fs/cgroup:/sys/fs/cgroup:rw\"]\n    shm_size = 0\n    wait_for_services_timeout = 90\n    services_cap_add = [\"ALL\"]\n    services_cap_drop = [\"SYS_RESOURCE\"]\n    services_security_opt = [\"seccomp=unconfined\", \"apparmor=unconfined\", \"systempaths=unconfined\"]",
            www.display()
        ),
    );
    let sha = h.make_repo("icdp-osg/mdis", &[("README.md", "mdis\n")]);
    h.start();
    let mut spec = job(
        "dind",
        (15, "icdp-osg/mdis"),
        &sha,
        &[
            "docker info --format '{{.ServerVersion}} {{.Driver}}'",
            "mkdir -p /tmp/ctx && cp /inner/busybox /tmp/ctx/busybox",
            "printf 'FROM scratch\\nCOPY busybox /bin/busybox\\nCMD [\"/bin/busybox\",\"echo\",\"hello from the inner daemon\"]\\n' > /tmp/ctx/Dockerfile",
            "docker build -q -t inner:1 /tmp/ctx",
            "docker run --rm inner:1 | tee results.txt",
        ],
    )
    .with_variable("DOCKER_HOST", "tcp://docker:2376")
    .with_variable("DOCKER_TLS_CERTDIR", "/certs")
    .with_variable("DOCKER_TLS_VERIFY", "1")
    .with_variable("DOCKER_CERT_PATH", "/certs/client");
    // The build host's `image = "docker:24"`: the job's image here, as the test runner's default is busybox.
    spec.image = image(DIND);
    spec.services = vec![service(DIND, "docker")];
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("hello from the inner daemon\n"), "{t}");
    // The bind-mounted project dir keeps the checkout and what the job wrote.
    assert_eq!(
        std::fs::read_to_string(www.join("README.md")).unwrap(),
        "mdis\n"
    );
    assert_eq!(
        std::fs::read_to_string(www.join("results.txt")).unwrap(),
        "hello from the inner daemon\n"
    );
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

#[tokio::test]
async fn bind_mounted_builds_dir_keeps_the_checkout_and_results() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let www = h.path().join("www");
    let token = h.docker_runner(
        "",
        &format!(
            "    volumes = [\"/cache\", \"{}:/builds/icdp-osg/mdis:rw\"]",
            www.display()
        ),
    );
    let sha = h.make_repo("icdp-osg/mdis", &[("README.md", "kept\n")]);
    h.start();
    let id = h.coordinator.enqueue(job(
        "results",
        (15, "icdp-osg/mdis"),
        &sha,
        &[
            "echo dir=$CI_PROJECT_DIR",
            "mkdir -p report && echo 'all green' > report/index.html",
        ],
    ));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("dir=/builds/icdp-osg/mdis\n"), "{t}");
    assert_eq!(
        std::fs::read_to_string(www.join("README.md")).unwrap(),
        "kept\n"
    );
    assert_eq!(
        std::fs::read_to_string(www.join("report/index.html")).unwrap(),
        "all green\n"
    );
    assert!(www.join(".git").is_dir());
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

fn volumes_json(h: &Harness, args: &[&str]) -> Vec<serde_json::Value> {
    let out = h
        .command()
        .arg("volumes")
        .args(args)
        .arg("--json")
        .arg("-c")
        .arg(&h.config_path)
        .output()
        .expect("runwright volumes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test]
async fn cache_volumes_are_reused_within_a_project_only_and_can_be_listed_and_pruned() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    // A token of this test's own, so its volumes are told apart from other tests' on the same dockerd.
    let token = format!("glrt-vol{:016x}", rand_u64());
    h.coordinator
        .add_runner(&token, runwright_coordinator::RunnerOptions::default());
    h.write_config(&format!(
        "concurrent = 2\ncheck_interval = 1\n[[runners]]\n  name = \"vol-runner\"\n  url = \"{}\"\n  token = \"{token}\"\n  executor = \"docker\"\n  [runners.docker]\n    image = \"{BUSYBOX}\"\n    pull_policy = \"if-not-present\"\n    volumes = [\"/cache\"]\n",
        h.coordinator.url()
    ));
    h.start();
    let run = |project: (i64, &'static str), script: &[&str]| {
        let mut spec = job("cache", project, runwright_coordinator::DUMMY_SHA, script)
            .with_variable("GIT_STRATEGY", "none");
        spec.runner_token = Some(token.clone());
        h.coordinator.enqueue(spec)
    };
    // One after the other: the second job must see what the first left in the volume.
    for (project, script, needle) in [
        (
            (31, "grp/one"),
            &["echo from-first > /cache/marker"][..],
            "",
        ),
        ((31, "grp/one"), &["cat /cache/marker"][..], "from-first\n"),
        (
            (32, "grp/two"),
            &["test ! -e /cache/marker && echo not-shared"][..],
            "not-shared\n",
        ),
    ] {
        let j = h.final_job(run(project, script)).await;
        let t = j.trace_text();
        assert_eq!(j.state, "success", "{t}");
        assert!(t.contains(needle), "{t}");
    }
    let listed = volumes_json(&h, &["list", "--runner", "vol-runner"]);
    let projects: Vec<i64> = listed
        .iter()
        .filter(|v| v["destination"] == "/cache")
        .map(|v| v["project"].as_i64().unwrap())
        .collect();
    assert!(
        projects.contains(&31) && projects.contains(&32),
        "{listed:?}"
    );
    assert!(
        listed
            .iter()
            .all(|v| v["name"].as_str().unwrap().starts_with("runner-")),
        "{listed:?}"
    );

    // A dry run deletes nothing; pruning project 32 leaves project 31's volume.
    let dry = volumes_json(
        &h,
        &[
            "prune",
            "--runner",
            "vol-runner",
            "--project",
            "32",
            "--dry-run",
        ],
    );
    assert!(!dry.is_empty());
    assert_eq!(
        volumes_json(&h, &["list", "--runner", "vol-runner"]).len(),
        listed.len()
    );
    let pruned = volumes_json(&h, &["prune", "--runner", "vol-runner", "--project", "32"]);
    assert!(pruned.iter().all(|v| v["project"] == 32), "{pruned:?}");
    let left = volumes_json(&h, &["list", "--runner", "vol-runner"]);
    assert!(
        left.iter().all(|v| v["project"] == 31) && !left.is_empty(),
        "{left:?}"
    );
    volumes_json(&h, &["prune", "--runner", "vol-runner", "--all"]);
    assert!(volumes_json(&h, &["list", "--runner", "vol-runner"]).is_empty());
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

#[tokio::test]
async fn cancel_and_timeout_leave_no_container_or_network() {
    if !docker_ready(&[BUSYBOX, EXPOSED]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner(
        "  [runners.feature_flags]\n    FF_NETWORK_PER_BUILD = true",
        "",
    );
    h.start();
    let mut canceled = sourceless("cancel-me", &["echo started", "sleep 300"]);
    canceled.services = vec![service(EXPOSED, "web")];
    let cancel_id = h.coordinator.enqueue(canceled);
    let mut timed = job(
        "time-me-out",
        (8, "grp/other"),
        runwright_coordinator::DUMMY_SHA,
        &["echo started", "sleep 300"],
    )
    .with_variable("GIT_STRATEGY", "none");
    timed.timeout = 4;
    let timeout_id = h.coordinator.enqueue(timed);
    h.wait_trace(cancel_id, "started").await;
    assert!(
        !leftovers(&token, cancel_id).is_empty(),
        "the running job should have containers"
    );
    h.coordinator.cancel(cancel_id);
    let j = h.final_job(cancel_id).await;
    assert_eq!(j.state, "canceled", "{}", j.trace_text());
    let j = h.final_job(timeout_id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    assert_eq!(
        j.failure_reason.as_deref(),
        Some("job_execution_timeout"),
        "{t}"
    );
    assert_eq!(leftovers(&token, cancel_id), Vec::<String>::new());
    assert_eq!(leftovers(&token, timeout_id), Vec::<String>::new());
}

#[tokio::test]
async fn runner_shutdown_mid_job_leaves_no_container_network_or_volume() {
    if !docker_ready(&[BUSYBOX, EXPOSED]) {
        return;
    }
    let mut h = Harness::docker().await;
    // disable_cache gives the job temporary volumes too: they must go as well.
    let token = h.docker_runner(
        "  [runners.feature_flags]\n    FF_NETWORK_PER_BUILD = true",
        "    disable_cache = true\n    volumes = [\"/cache\"]",
    );
    h.start();
    let mut spec = sourceless("interrupted", &["echo started", "sleep 300"]);
    spec.services = vec![service(EXPOSED, "web")];
    let id = h.coordinator.enqueue(spec);
    h.wait_trace(id, "started").await;
    assert!(
        leftovers(&token, id)
            .iter()
            .any(|l| l.starts_with("volume ")),
        "the running job should have temporary volumes: {:?}",
        leftovers(&token, id)
    );
    h.signal(nix::sys::signal::Signal::SIGTERM);
    let status = h.wait_exit(std::time::Duration::from_secs(60)).await;
    assert!(status.code().is_some(), "{}", h.log());
    let j = h.coordinator.job(id).expect("job");
    assert_eq!(j.state, "failed", "{}", h.log());
    assert_eq!(j.failure_reason.as_deref(), Some("runner_interrupted"));
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

#[tokio::test]
async fn pull_policies_never_if_not_present_and_always_then_if_not_present() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner(
        "",
        "    allowed_pull_policies = [\"always\", \"if-not-present\", \"never\"]",
    );
    h.start();
    let with_policy = |name: &str, image_name: &str, policies: &[&str]| {
        let mut spec = sourceless(name, &["echo ran"]);
        spec.image = Some(Image {
            name: image_name.into(),
            pull_policy: Some(policies.iter().map(|p| p.to_string()).collect()),
            ..Default::default()
        });
        spec
    };
    let missing = "127.0.0.1:5999/runwright-test/not-built:1";
    let never_missing = h
        .coordinator
        .enqueue(with_policy("never-missing", missing, &["never"]));
    let never_present = h
        .coordinator
        .enqueue(with_policy("never-present", BUSYBOX, &["never"]));
    let fallback = h.coordinator.enqueue(with_policy(
        "fallback",
        BUSYBOX,
        &["always", "if-not-present"],
    ));
    let always = h
        .coordinator
        .enqueue(with_policy("always", BUSYBOX, &["always"]));

    let j = h.final_job(never_missing).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    assert_eq!(
        j.failure_reason.as_deref(),
        // GitLab's enum of failure reasons has no image_pull_failure: the runner sends it as GitLab's runner
        // does, mapped to runner_system_failure (protocol.md §3).
        Some("runner_system_failure"),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "failed to pull image \"{missing}\" with specified policies [never]"
        )),
        "{t}"
    );
    assert!(t.contains("not present locally"), "{t}");

    let j = h.final_job(never_present).await;
    assert_eq!(j.state, "success", "{}", j.trace_text());

    let j = h.final_job(fallback).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(
        t.contains("Pulling docker image 127.0.0.1:5999/runwright-test/busybox:1"),
        "{t}"
    );
    assert!(
        t.contains("Failed to pull image with policy \"always\""),
        "{t}"
    );
    assert!(
        t.contains("Using locally found image version due to \"if-not-present\" pull policy"),
        "{t}"
    );

    let j = h.final_job(always).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    assert_eq!(
        j.failure_reason.as_deref(),
        // GitLab's enum of failure reasons has no image_pull_failure: the runner sends it as GitLab's runner
        // does, mapped to runner_system_failure (protocol.md §3).
        Some("runner_system_failure"),
        "{t}"
    );
    assert!(t.contains("127.0.0.1:5999"), "{t}");
    for id in [never_missing, never_present, fallback, always] {
        assert_eq!(leftovers(&token, id), Vec::<String>::new());
    }
}

#[tokio::test]
async fn disallowed_policies_and_images_are_configuration_errors() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner(
        "",
        "    allowed_images = [\"127.0.0.1:5999/runwright-test/busy*:*\"]",
    );
    h.start();
    let mut policy = sourceless("policy", &["echo ran"]);
    policy.image = Some(Image {
        name: BUSYBOX.into(),
        pull_policy: Some(vec!["always".into()]),
        ..Default::default()
    });
    let policy_id = h.coordinator.enqueue(policy);
    let mut img = sourceless("image", &["echo ran"]);
    img.image = image(NOSHELL);
    let image_id = h.coordinator.enqueue(img);
    let j = h.final_job(policy_id).await;
    let t = j.trace_text();
    assert_eq!(
        j.failure_reason.as_deref(),
        Some("runner_configuration_error"),
        "{t}"
    );
    assert!(
        t.contains("pull_policy [always] is not one of the allowed_pull_policies [if-not-present]"),
        "{t}"
    );
    let j = h.final_job(image_id).await;
    let t = j.trace_text();
    assert_eq!(
        j.failure_reason.as_deref(),
        Some("runner_configuration_error"),
        "{t}"
    );
    assert!(
        t.contains("not present on the list of allowed images"),
        "{t}"
    );
    assert_eq!(leftovers(&token, policy_id), Vec::<String>::new());
    assert_eq!(leftovers(&token, image_id), Vec::<String>::new());
}

#[tokio::test]
async fn a_job_image_without_a_shell_gets_a_clear_error() {
    if !docker_ready(&[NOSHELL]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "");
    let sha = h.make_repo("grp/app", &[("README.md", "x\n")]);
    h.start();
    let mut spec = job("noshell", (7, "grp/app"), &sha, &["echo never"]);
    spec.image = image(NOSHELL);
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    // Sources came from the runner: the image needs no git and no shell for them.
    assert!(t.contains("Checking out"), "{t}");
    assert!(t.contains("the job image has no shell"), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

#[tokio::test]
async fn a_debian_image_runs_bash_and_its_entrypoint_can_be_overridden() {
    if !docker_ready(&[DEBIAN]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "");
    h.start();
    let mut spec = sourceless(
        "bash",
        &[
            "echo shell=${BASH_VERSION:+bash}",
            "echo entry=$ENTRY",
            "git --version | cut -d' ' -f1-2",
        ],
    );
    spec.image = Some(Image {
        name: DEBIAN.into(),
        // An entrypoint receives the shell command and must exec it, as with GitLab's runner.
        entrypoint: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "export ENTRY=custom; exec \"$@\"".into(),
            "--".into(),
        ]),
        ..Default::default()
    });
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("shell=bash\n"), "{t}");
    assert!(t.contains("entry=custom\n"), "{t}");
    assert!(t.contains("git version\n"), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

fn credentials(host: &str, user: &str, password: &str) -> runwright_api::types::Credentials {
    runwright_api::types::Credentials {
        kind: "registry".into(),
        url: host.into(),
        username: user.into(),
        password: password.into(),
    }
}

#[tokio::test]
async fn private_registry_pulls_use_docker_auth_config_then_job_credentials() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let registry =
        crate::registry::Registry::start(BUSYBOX, "private/busybox", "1", "alice", "alice-s3cret")
            .await;
    let private = format!("{}/private/busybox:1", registry.host);
    let mut h = Harness::docker().await;
    let token = h.docker_runner(
        "",
        "    allowed_users = [\"1000\"]\n    allowed_pull_policies = [\"always\", \"if-not-present\"]",
    );
    h.start();
    let pulled = |name: &str| {
        let mut spec = sourceless(name, &["id -u"]);
        spec.image = Some(Image {
            name: private.clone(),
            pull_policy: Some(vec!["always".into()]),
            ..Default::default()
        });
        spec
    };
    // GitLab sends the project registry's credentials with every job; here they are the right ones.
    let mut from_job = pulled("from-job");
    from_job.credentials = vec![credentials(&registry.host, "alice", "alice-s3cret")];
    // DOCKER_AUTH_CONFIG wins over the job's (wrong) credentials; the job runs as its docker:user.
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:alice-s3cret");
    let mut from_variable = pulled("from-variable").with_variable(
        "DOCKER_AUTH_CONFIG",
        &format!(
            "{{\"auths\":{{\"http://{}\":{{\"auth\":\"{auth}\"}}}}}}",
            registry.host
        ),
    );
    from_variable.credentials = vec![credentials(&registry.host, "gitlab-ci-token", "job-token")];
    if let Some(image) = from_variable.image.as_mut() {
        image.executor_opts = Some(serde_json::json!({"docker": {"user": "1000"}}));
    }
    // Wrong credentials: a pull failure that names the image and shows no secret.
    let mut wrong = pulled("wrong");
    wrong.credentials = vec![credentials(
        &registry.host,
        "gitlab-ci-token",
        "wrong-token",
    )];
    // A user outside allowed_users: a configuration error before anything is pulled.
    let mut root = pulled("root");
    if let Some(image) = root.image.as_mut() {
        image.executor_opts = Some(serde_json::json!({"docker": {"user": "0"}}));
    }

    let from_job = h.coordinator.enqueue(from_job);
    let j = h.final_job(from_job).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(
        t.contains("Authenticating with credentials from job payload (GitLab Registry)"),
        "{t}"
    );
    assert!(
        t.contains(&format!("Pulling docker image {private}")),
        "{t}"
    );
    assert!(t.contains("\n0\n"), "root by default: {t}");

    let from_variable = h.coordinator.enqueue(from_variable);
    let j = h.final_job(from_variable).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(
        t.contains("Authenticating with credentials from $DOCKER_AUTH_CONFIG"),
        "{t}"
    );
    assert!(t.contains("\n1000\n"), "docker:user 1000: {t}");

    let wrong = h.coordinator.enqueue(wrong);
    let j = h.final_job(wrong).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    assert!(
        t.contains(&format!("failed to pull image \"{private}\"")),
        "{t}"
    );
    assert!(
        !t.contains("wrong-token") && !t.contains("alice-s3cret"),
        "{t}"
    );

    let root = h.coordinator.enqueue(root);
    let j = h.final_job(root).await;
    let t = j.trace_text();
    assert_eq!(
        j.failure_reason.as_deref(),
        Some("runner_configuration_error"),
        "{t}"
    );
    assert!(t.contains("user \"0\" is not an allowed user"), "{t}");

    let users = registry.users.lock().expect("users").clone();
    assert!(users.contains(&"alice".to_string()), "{users:?}");
    assert!(users.contains(&"gitlab-ci-token".to_string()), "{users:?}");
    for id in [from_job, from_variable, wrong, root] {
        assert_eq!(leftovers(&token, id), Vec::<String>::new());
    }
    let _ = Command::new("docker").args(["rmi", &private]).output();
}

const EXEC_PIPELINE: &str = r#"
stages: [build, test]
build-in-container:
  stage: build
  image: 127.0.0.1:5999/runwright-test/busybox:1
  services:
    - name: 127.0.0.1:5999/runwright-test/busybox-exposed:1
      alias: web
  cache:
    key: shared
    paths: [cache-dir/]
  script:
    - echo "container hostname $(hostname)"
    - wget -qO- http://web:8080/
    - mkdir -p out cache-dir && echo built-in-container > out/result.txt
    - test -f cache-dir/seen && echo cache-was-restored || echo first-run
    - touch cache-dir/seen
  artifacts:
    paths: [out/]
check-on-host:
  stage: test
  script:
    - cat out/result.txt
    - test -f /.dockerenv && echo in-docker || echo on-the-host
"#;

#[tokio::test]
async fn exec_runs_image_jobs_in_containers_and_the_others_on_the_host() {
    if !docker_ready(&[BUSYBOX, EXPOSED]) {
        return;
    }
    let h = Harness::docker().await;
    h.make_repo("grp/pipe", &[(".gitlab-ci.yml", EXEC_PIPELINE)]);
    let dir = h.path().join("src/grp/pipe");
    let cache = h.path().join("exec-cache");
    let run = || {
        let out = h
            .command()
            .args(["exec", "-j", "1", "--cache-dir"])
            .arg(&cache)
            .current_dir(&dir)
            .output()
            .expect("runwright exec runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("note: jobs with image: or services: run on the docker executor"),
        "{stdout}"
    );
    assert!(stdout.contains("container hostname runner-"), "{stdout}");
    assert!(stdout.contains("hello from service"), "{stdout}");
    assert!(stdout.contains("first-run"), "{stdout}");
    // The artifact made in the container reached the shell job on the host.
    assert!(stdout.contains("built-in-container\n"), "{stdout}");
    assert!(stdout.contains("on-the-host\n"), "{stdout}");
    // The cache lives in --cache-dir, shared by both executors, and is restored in the next run.
    let (code, stdout, stderr) = run();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("cache-was-restored"), "{stdout}");
    // Nothing of exec's docker runner is left on the daemon (its runner token is random per run; every exec
    // runs as system ID s_000000e8ec00).
    for what in ["container", "network", "volume"] {
        let mut args = vec![what, "ls", "-q", "--filter"];
        let label = "label=com.gitlab.gitlab-runner.runner.system_id=s_000000e8ec00".to_string();
        args.push(&label);
        if what == "container" {
            args.push("-a");
        }
        let o = Command::new("docker").args(&args).output().expect("docker");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "", "{what}s left");
    }

    // --executor docker without an image for a job that names none: a clear error before anything runs.
    let out = h
        .command()
        .args(["exec", "--executor", "docker", "check-on-host"])
        .current_dir(&dir)
        .output()
        .expect("runwright exec runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("--docker-image"), "{stderr}");
}

/// A TLS Docker-in-Docker daemon the test started (the suite's dind image, on a network of its own), removed with
/// its network when dropped. Its inner daemon masquerades its containers' traffic (`--iptables=true`), so they
/// reach the coordinator on the suite's network gateway (`Harness::docker`) as the host's containers do.
pub struct TlsDind {
    pub name: String,
    /// Its address on its network; the daemon listens on port 2376.
    pub ip: String,
    /// The client certificates (ca.pem, cert.pem, key.pem) it generated.
    pub client: std::path::PathBuf,
    _certs: tempfile::TempDir,
}

impl Drop for TlsDind {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

impl TlsDind {
    pub fn start() -> Self {
        let name = format!("rw-tls-{:08x}", rand_u64() as u32);
        let certs = tempfile::tempdir().expect("tempdir");
        let docker = |args: &[&str]| {
            let o = Command::new("docker").args(args).output().expect("docker");
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).trim().to_string(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        };
        let (ok, _, err) = docker(&[
            "network",
            "create",
            "--label",
            "org.runwright.test=tls",
            &name,
        ]);
        assert!(ok, "{err}");
        let certs_bind = format!("{}:/certs", certs.path().display());
        let (ok, _, err) = docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &name,
            "--label",
            "org.runwright.test=tls",
            "--cap-add",
            "ALL",
            "--cap-drop",
            "SYS_RESOURCE",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--security-opt",
            "systempaths=unconfined",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "-v",
            &certs_bind,
            DIND,
            "--iptables=true",
        ]);
        let mut dind = TlsDind {
            name: name.clone(),
            ip: String::new(),
            client: certs.path().join("client"),
            _certs: certs,
        };
        assert!(ok, "{err}");
        let (_, ip, _) = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &name,
        ]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !(dind.client.join("key.pem").is_file()
            && std::net::TcpStream::connect((ip.as_str(), 2376)).is_ok())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "dind did not come up: {}",
                docker(&["logs", &name]).2
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        dind.ip = ip;
        dind
    }

    /// `[runners.docker]` lines that make it the runner's daemon.
    pub fn runner_config(&self) -> String {
        format!(
            "    host = \"tcp://{}:2376\"\n    tls_verify = true\n    tls_cert_path = \"{}\"",
            self.ip,
            self.client.display()
        )
    }

    /// The docker CLI talking to it.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .env("DOCKER_HOST", format!("tcp://{}:2376", self.ip))
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", &self.client)
            .args(args)
            .output()
            .expect("docker")
    }

    /// Copies a test image of the host's daemon into it (a job image; the helper image comes by the runner's
    /// build through the API).
    pub fn load(&self, image: &str) {
        let saved = Command::new("docker")
            .args(["save", image])
            .output()
            .expect("docker save");
        assert!(saved.status.success(), "docker save {image}");
        let mut load = Command::new("docker")
            .env("DOCKER_HOST", format!("tcp://{}:2376", self.ip))
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", &self.client)
            .args(["load", "-q"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("docker load");
        use std::io::Write as _;
        load.stdin
            .take()
            .expect("stdin")
            .write_all(&saved.stdout)
            .expect("docker load input");
        assert!(
            load.wait().expect("docker load").success(),
            "docker load {image}"
        );
    }
}

/// `host`, `tls_verify` and `tls_cert_path` reach a TLS-protected daemon: a dind container started by the test,
/// whose generated client certificates the runner uses. The runner talks to the daemon only, so a daemon that is
/// not the runner's host serves jobs (formerly the job stopped at its first volume, "is not reachable from the
/// runner"; the full remote job with sources, a service, a cache and an artifact is
/// `docker_helper::a_remote_daemon_runs_a_job_with_sources_service_cache_and_artifact_and_keeps_nothing`).
#[tokio::test]
async fn a_tls_daemon_is_reached_with_the_configured_certificates() {
    if !docker_ready(&[DIND, BUSYBOX]) {
        return;
    }
    let dind = TlsDind::start();
    dind.load(BUSYBOX);
    let ip = dind.ip.clone();
    let mut h = Harness::docker().await;
    h.docker_runner("", &dind.runner_config());
    h.start();
    let id = h
        .coordinator
        .enqueue(sourceless("remote", &["echo on-the-remote-daemon"]));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("on-the-remote-daemon\n"), "{t}");

    // Without the client certificates the daemon refuses the connection: a clear error, not a hang.
    let mut h = Harness::docker().await;
    h.docker_runner(
        "",
        &format!("    host = \"tcp://{ip}:2376\"\n    tls_verify = false"),
    );
    h.start();
    let id = h.coordinator.enqueue(sourceless("plain", &["echo never"]));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    assert!(t.contains(&format!("{ip}:2376")), "{t}");
}

/// A unix-socket proxy in front of the real dockerd that keeps every request the runner sends: `privileged`
/// cannot start a container on the test machines, so what the runner asks for is checked on the wire.
pub struct RecordingProxy {
    pub socket: std::path::PathBuf,
    requests: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl RecordingProxy {
    pub fn start(dir: &std::path::Path) -> Self {
        let socket = dir.join("docker-proxy.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind proxy socket");
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(daemon) = tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    else {
                        return;
                    };
                    let (mut from_daemon, mut to_daemon) = daemon.into_split();
                    let (mut from_client, mut to_client) = client.split();
                    let upstream = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from_client.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            seen.lock().expect("requests").extend_from_slice(&buf[..n]);
                            if to_daemon.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_daemon.shutdown().await;
                    };
                    let downstream = tokio::io::copy(&mut from_daemon, &mut to_client);
                    let _ = tokio::join!(upstream, downstream);
                });
            }
        });
        RecordingProxy { socket, requests }
    }

    /// The JSON bodies of `POST /containers/create?name=…` requests, by container name.
    pub fn creates(&self) -> Vec<(String, serde_json::Value)> {
        let bytes = self.requests.lock().expect("requests").clone();
        let text = String::from_utf8_lossy(&bytes);
        let mut out = Vec::new();
        for part in text.split("POST ").skip(1) {
            let Some(line) = part.lines().next() else {
                continue;
            };
            if !line.contains("/containers/create") {
                continue;
            }
            let name = line
                .split("name=")
                .nth(1)
                .and_then(|n| n.split(['&', ' ']).next())
                .unwrap_or_default()
                .to_string();
            let Some(body) = part.split("\r\n\r\n").nth(1) else {
                continue;
            };
            let mut de = serde_json::Deserializer::from_str(body).into_iter::<serde_json::Value>();
            if let Some(Ok(json)) = de.next() {
                out.push((name, json));
            }
        }
        out
    }
}

/// The build host's main runner as it is (`privileged = true`, dind as a service, `/certs/client` and `/cache`
/// volumes, the builds dir bound to the web server's directory): what the runner asks dockerd for is checked
/// on the wire, because this machine's kernel refuses privileged containers — the job then fails with dockerd's
/// reason, and leaves nothing behind.
#[tokio::test]
async fn the_build_hosts_privileged_runner_asks_dockerd_for_privileged_containers() {
    if !docker_ready(&[DIND, BUSYBOX]) {
        return;
    }
    // Where the kernel allows privileged containers (a real build host), the jobs get further; the wire checks
    // hold everywhere.
    let refused = !Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--privileged",
            BUSYBOX,
            "true",
        ])
        .output()
        .expect("docker run")
        .status
        .success();
    let mut h = Harness::docker().await;
    let proxy = RecordingProxy::start(h.path());
    let www = h.path().join("www");
    let token = h.docker_runner(
        "",
        &format!(
            "    host = \"unix://{}\"\n    tls_verify = false\n    privileged = true\n    disable_entrypoint_overwrite = false\n    oom_kill_disable = false\n    disable_cache = false\n    volumes = [\"/cache\", \"/certs/client\", \"{}:/builds/icdp-osg/mdis:rw\"]\n    shm_size = 0",
            proxy.socket.display(),
            www.display()
        ),
    );
    h.start();
    let mut spec = job(
        "privileged",
        (15, "icdp-osg/mdis"),
        runwright_coordinator::DUMMY_SHA,
        &["docker info"],
    )
    .with_variable("GIT_STRATEGY", "none")
    .with_variable("DOCKER_TLS_CERTDIR", "/certs");
    spec.image = image(BUSYBOX);
    spec.services = vec![service(DIND, "docker")];
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    if refused {
        assert_eq!(j.state, "failed", "{t}");
        // The kernel's refusal reaches the trace as dockerd says it.
        assert!(t.contains("operation not permitted"), "{t}");
    }
    let creates = proxy.creates();
    let service = creates
        .iter()
        .find(|(name, _)| name.contains("-dind-") || name.contains("runwright-test__dind"))
        .unwrap_or_else(|| panic!("no service create in {creates:?}"));
    assert_eq!(service.1["HostConfig"]["Privileged"], true, "{service:?}");
    let binds = service.1["HostConfig"]["Binds"].to_string();
    assert!(binds.contains(":/certs/client"), "{binds}");
    assert!(binds.contains(":/cache"), "{binds}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());

    // Without the service, the build container is created (privileged, the builds dir bound) and fails to start.
    let mut spec = job(
        "privileged-build",
        (15, "icdp-osg/mdis"),
        runwright_coordinator::DUMMY_SHA,
        &["echo never"],
    )
    .with_variable("GIT_STRATEGY", "none");
    spec.image = image(BUSYBOX);
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    if refused {
        assert_eq!(j.state, "failed", "{t}");
        assert!(t.contains("operation not permitted"), "{t}");
    } else {
        assert_eq!(j.state, "success", "{t}");
    }
    let creates = proxy.creates();
    let build = creates
        .iter()
        .find(|(name, _)| name.ends_with("-build"))
        .unwrap_or_else(|| panic!("no build container create in {creates:?}"));
    assert_eq!(build.1["HostConfig"]["Privileged"], true, "{build:?}");
    assert!(
        build.1["HostConfig"]["Binds"]
            .to_string()
            .contains(&format!("{}:/builds/icdp-osg/mdis:rw", www.display())),
        "{build:?}"
    );
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

/// Docker allows `GIT_CLONE_PATH` by default (runner `newDockerOptions`); the checkout the runner made on the
/// volume's host path holds no token, and git in the build container still finds the credentials config the
/// checkout includes (at its path in the container, besides the one on the host the runner's git used).
#[tokio::test]
async fn a_docker_job_may_choose_its_clone_path_and_git_in_the_container_sees_the_credentials_config(
) {
    if !docker_ready(&[DEBIAN]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "");
    let sha = h.make_repo("grp/app", &[("README.md", "custom path\n")]);
    h.start();
    let mut spec = job(
        "clone-path",
        (7, "grp/app"),
        &sha,
        &[
            "echo dir=$CI_PROJECT_DIR",
            "cat README.md",
            "echo tokens=$(grep -c gitlab-ci-token .git/config || true)",
            "echo rewrites=$(git config --get-regexp '^url\\..*\\.insteadof$' | cut -d' ' -f2 | sort | tr '\\n' ' ')",
        ],
    )
    .with_variable("GIT_CLONE_PATH", "$CI_BUILDS_DIR/custom/app");
    spec.image = Some(Image {
        name: DEBIAN.into(),
        ..Default::default()
    });
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("dir=/builds/custom/app\n"), "{t}");
    assert!(t.contains("custom path\n"), "{t}");
    assert!(t.contains("tokens=0\n"), "{t}");
    let server = h.coordinator.url().trim_end_matches('/').to_string();
    assert!(
        t.contains(&format!("rewrites={server} {server}/grp/app.git\n")),
        "{t}"
    );
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
}

#[tokio::test]
async fn gpus_and_service_gpus_reach_dockerd_as_device_requests() {
    if !docker_ready(&[BUSYBOX, EXPOSED]) {
        return;
    }
    // This machine has no GPU: dockerd refuses to start such a container ("could not select device driver"),
    // which shows the request reached it; the create bodies show what was asked for.
    let mut h = Harness::docker().await;
    let proxy = RecordingProxy::start(h.path());
    let token = h.docker_runner(
        "",
        &format!(
            "    host = \"unix://{}\"\n    gpus = \"all\"\n    service_gpus = '\"device=0,1\"'",
            proxy.socket.display()
        ),
    );
    h.start();
    let mut spec = sourceless("gpu-build", &["nvidia-smi"]);
    spec.image = image(BUSYBOX);
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    assert!(t.contains("could not select device driver"), "{t}");
    let creates = proxy.creates();
    let build = creates
        .iter()
        .find(|(name, _)| name.ends_with("-build"))
        .unwrap_or_else(|| panic!("no build container create in {creates:?}"));
    assert_eq!(
        build.1["HostConfig"]["DeviceRequests"],
        serde_json::json!([{"Driver": "", "Count": -1, "Capabilities": [["gpu"]], "Options": {}}]),
        "{build:?}"
    );
    assert_eq!(leftovers(&token, id), Vec::<String>::new());

    // A service gets `service_gpus`.
    let mut spec = sourceless("gpu-service", &["true"]);
    spec.image = image(BUSYBOX);
    spec.services = vec![service(EXPOSED, "model")];
    let id = h.coordinator.enqueue(spec);
    let j = h.final_job(id).await;
    let creates = proxy.creates();
    let svc = creates
        .iter()
        .find(|(name, _)| name.contains("busybox-exposed"))
        .unwrap_or_else(|| panic!("no service create in {creates:?}\n{}", j.trace_text()));
    assert_eq!(
        svc.1["HostConfig"]["DeviceRequests"],
        serde_json::json!([{"Driver": "", "Count": 0, "DeviceIDs": ["0", "1"], "Capabilities": [["gpu"]], "Options": {}}]),
        "{svc:?}"
    );
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
    // And GitLab is told of the build container's GPUs (runner executors/docker/config_updater.go).
    let info = h.coordinator.runner_info(&token).expect("info");
    assert_eq!(info["config"]["gpus"], "all", "{info}");
}
