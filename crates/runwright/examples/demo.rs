//! The README's former main command (now `scripts/demo`, i.e. `runwright exec`): the example project in
//! `examples/demo/` runs through the real `runwright run` service (shell executor) against the bundled
//! coordinator, which speaks GitLab's runner API on loopback and serves the project's git repository.
//!
//! Run with `cargo run --release -p runwright --example demo` (it builds and uses `target/release/runwright`).
// The workspace denies printing (libraries log or return errors); a demo: it shows what runs.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use runwright_testsupport as support;

use runwright_api::types::JobVariable;
use runwright_coordinator::{Coordinator, CoordinatorOptions, JobSpec, ProjectSpec, RunnerOptions};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "glrt-t1_demorunner0000000001";

fn git(dir: &Path, home: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", home.join("gitconfig"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin = support::build_release_binary()?;
    let tmp = tempfile::tempdir()?;
    let home = tmp.path();
    std::fs::write(
        home.join("gitconfig"),
        "[user]\n\temail = demo@runwright.invalid\n\tname = runwright demo\n[init]\n\tdefaultBranch = main\n",
    )?;

    // The example project becomes a git repository the coordinator serves.
    let src = home.join("src");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo/project"),
        &src,
    )?;
    git(&src, home, &["init", "-q", "-b", "main"])?;
    git(&src, home, &["add", "-A"])?;
    git(&src, home, &["commit", "-q", "-m", "example project"])?;
    let sha = git(&src, home, &["rev-parse", "HEAD"])?;
    let bare = home.join("git/demo/example.git");
    std::fs::create_dir_all(&bare)?;
    git(&bare, home, &["init", "-q", "--bare"])?;
    git(
        &src,
        home,
        &[
            "push",
            "-q",
            &bare.to_string_lossy(),
            "HEAD:refs/heads/main",
        ],
    )?;

    let coordinator = Coordinator::start(CoordinatorOptions {
        trace_update_interval: 1,
        git_root: Some(home.join("git")),
        ..Default::default()
    })
    .await?;
    coordinator.add_runner(TOKEN, RunnerOptions::default());
    let config = home.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 2\ncheck_interval = 1\n[[runners]]\n  name = \"demo\"\n  url = \"{}\"\n  token = \"{TOKEN}\"\n  executor = \"shell\"\n",
            coordinator.url()
        ),
    )?;
    std::fs::create_dir_all(home.join("work"))?;
    let mut service = Command::new(&bin)
        .args(["run", "-c"])
        .arg(&config)
        .arg("-d")
        .arg(home.join("work"))
        .env("GIT_CONFIG_GLOBAL", home.join("gitconfig"))
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(home.join("service.log"))?)
        .spawn()?;

    let project = ProjectSpec::new(1, "demo/example");
    let job = |name: &str, stage: &str, script: &[&str]| JobSpec {
        name: name.into(),
        stage: stage.into(),
        script: script.iter().map(|s| s.to_string()).collect(),
        project: project.clone(),
        sha: sha.clone(),
        ..Default::default()
    };
    let build = job("build", "build", &["./hello.sh", "ls -la"]);
    let mut test = job(
        "test",
        "test",
        &["./test.sh", "echo \"deploy key is $DEPLOY_KEY\""],
    );
    test.after_script = vec!["echo \"after_script: job status is $CI_JOB_STATUS\"".into()];
    test.variables.push(JobVariable {
        key: "DEPLOY_KEY".into(),
        value: "demo-secret-value-123".into(),
        masked: true,
        ..Default::default()
    });

    let started = Instant::now();
    let mut all_ok = true;
    for spec in [build, test] {
        let name = spec.name.clone();
        let id = coordinator.enqueue(spec);
        let rec = coordinator
            .wait_for_final(id, Duration::from_secs(120))
            .await?;
        println!(
            "==================== job {id} ({name}): {} ====================",
            rec.state
        );
        println!("{}", rec.trace_text());
        all_ok &= rec.state == "success";
    }
    println!(
        "pipeline {} in {:.1}s",
        if all_ok { "passed" } else { "failed" },
        started.elapsed().as_secs_f64()
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(service.id() as i32),
        nix::sys::signal::Signal::SIGQUIT,
    );
    let _ = service.wait();
    anyhow::ensure!(
        all_ok,
        "a job failed; service log: {}",
        home.join("service.log").display()
    );
    Ok(())
}
