//! The docker executor against the real dockerd that `scripts/install-test-deps` starts, with images built
//! locally by `scripts/test-images` (no registry: every image name points at a closed loopback port, so a pull
//! attempt fails at once and never leaves the machine).

use crate::harness::*;
use runwright_coordinator::types::Image;
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

/// Names of the containers, networks and volumes labelled with this job id.
pub fn leftovers(job_id: i64) -> Vec<String> {
    let label = format!("label=com.gitlab.gitlab-runner.job.id={job_id}");
    let mut out = Vec::new();
    for args in [
        vec![
            "ps",
            "-a",
            "--filter",
            &label,
            "--format",
            "container {{.Names}}",
        ],
        vec![
            "network",
            "ls",
            "--filter",
            &label,
            "--format",
            "network {{.Name}}",
        ],
    ] {
        let o = Command::new("docker").args(&args).output().expect("docker");
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    let o = Command::new("docker")
        .args([
            "volume",
            "ls",
            "--filter",
            &label,
            "--filter",
            "label=com.gitlab.gitlab-runner.type=temporary",
            "--format",
            "volume {{.Name}}",
        ])
        .output()
        .expect("docker");
    out.extend(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string),
    );
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

impl Harness {
    /// config.toml with one docker runner; `docker_extra` goes into `[runners.docker]`.
    pub fn docker_runner(&self, runner_extra: &str, docker_extra: &str) {
        self.coordinator
            .add_runner(TOKEN, runwright_coordinator::RunnerOptions::default());
        self.write_config(&format!(
            "concurrent = 4\ncheck_interval = 1\n[[runners]]\n  name = \"docker-runner\"\n  url = \"{}\"\n  token = \"{TOKEN}\"\n  executor = \"docker\"\n{runner_extra}\n  [runners.docker]\n    image = \"{BUSYBOX}\"\n    pull_policy = [\"if-not-present\"]\n{docker_extra}\n",
            self.coordinator.url()
        ));
    }
}

#[tokio::test]
async fn busybox_job_runs_with_sources_from_the_runner_and_leaves_nothing() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::new().await;
    h.docker_runner("", "");
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
            "exit 3",
        ],
    ));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    assert!(
        t.contains("Using Docker executor with image 127.0.0.1:5999/runwright-test/busybox:1"),
        "{t}"
    );
    assert!(t.contains("hello from git\n"), "{t}");
    assert!(t.contains("dir=/builds/grp/app\n"), "{t}");
    assert!(
        t.contains(&format!("net=runner-testrunne-7-0-{id}\n")),
        "{t}"
    );
    assert!(t.contains("plain-sh\n"), "{t}");
    assert!(t.contains("Running on runner-"), "{t}");
    assert!(
        t.contains("exit status 3") || t.contains("exit code 3"),
        "{t}"
    );
    assert_eq!(j.exit_code, Some(3), "{t}");
    assert_eq!(leftovers(id), Vec::<String>::new());
}
