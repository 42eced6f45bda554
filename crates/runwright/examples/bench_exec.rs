//! Local pipelines against gitlab-ci-local (issue 3): wall time of a whole `.gitlab-ci.yml` run on this machine,
//! `runwright exec` (embedded coordinator, shell executor, each job in its own directory) against
//! `gitlab-ci-local --shell-isolation` (each job in its own rsynced copy), on the same files, interleaved in the
//! same invocation. Two pipelines: the README's example (`examples/demo/project`) and a generated 20-job DAG
//! (needs and artifacts, five stages).
//!
//! `bench/exec [--rounds 7]` installs the peer, builds and runs this; it is an example, never run by `cargo test`.
// The workspace denies printing (libraries log or return errors); a bench: its output is its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use runwright_testsupport as support;

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Local pipeline wall time, runwright exec vs gitlab-ci-local (`bench/exec` passes these).
#[derive(clap::Parser)]
struct Args {
    /// The runwright binary to measure.
    #[arg(long, default_value = "target/release/runwright")]
    runwright: PathBuf,
    /// The gitlab-ci-local entry point (`node_modules/.bin/gitlab-ci-local`).
    #[arg(long)]
    gcl: PathBuf,
    /// A directory holding the `node` (22) that gitlab-ci-local runs on; put first on its PATH.
    #[arg(long)]
    node_bin: PathBuf,
    /// Measured rounds per pipeline and tool (after one unmeasured warm-up run each).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Jobs at once, for both tools (default: the number of cores, runwright's default).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Keep the temporary directory (and print its path).
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Runwright,
    Gcl,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Runwright => "runwright exec",
            Tool::Gcl => "gitlab-ci-local",
        }
    }
}

/// The 20-job DAG: prep → 6 builds → 8 tests (each needs two builds) → 4 packs (each needs two tests) → report.
fn dag_pipeline() -> String {
    let mut y = String::from("stages: [prep, build, test, pack, report]\n\n");
    y.push_str(
        "prep:\n  stage: prep\n  script:\n    - mkdir -p out\n    - echo prep > out/prep.txt\n  artifacts:\n    paths: [out/prep.txt]\n\n",
    );
    for b in 1..=6 {
        y.push_str(&format!(
            "build-{b}:\n  stage: build\n  needs: [prep]\n  script:\n    - mkdir -p out\n    - cat out/prep.txt\n    - seq 1 2000 | sed 's/^/build {b} line /' > out/build-{b}.txt\n    - wc -l out/build-{b}.txt\n  artifacts:\n    paths: [out/build-{b}.txt]\n\n"
        ));
    }
    for t in 1..=8 {
        let (a, b) = ((t - 1) % 6 + 1, t % 6 + 1);
        y.push_str(&format!(
            "test-{t}:\n  stage: test\n  needs: [build-{a}, build-{b}]\n  script:\n    - mkdir -p out\n    - cat out/build-{a}.txt out/build-{b}.txt | grep -c line > out/test-{t}.txt\n    - test \"$(cat out/test-{t}.txt)\" = 4000\n  artifacts:\n    paths: [out/test-{t}.txt]\n\n"
        ));
    }
    for p in 1..=4 {
        let (a, b) = (2 * p - 1, 2 * p);
        y.push_str(&format!(
            "pack-{p}:\n  stage: pack\n  needs: [test-{a}, test-{b}]\n  script:\n    - mkdir -p out\n    - tar -czf out/pack-{p}.tar.gz out/test-{a}.txt out/test-{b}.txt\n  artifacts:\n    paths: [out/pack-{p}.tar.gz]\n\n"
        ));
    }
    y.push_str("report:\n  stage: report\n  needs: [pack-1, pack-2, pack-3, pack-4]\n  script:\n    - ls -l out/\n    - for f in out/pack-*.tar.gz; do tar -tzf \"$f\"; done\n");
    y
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)?;
        }
    }
    Ok(())
}

/// A git repository on `main` with an `origin` remote (both tools derive `CI_PROJECT_*` from it).
fn make_repo(dir: &Path, env: &[(String, String)]) -> anyhow::Result<()> {
    for args in [
        &["init", "-q", "-b", "main"][..],
        &[
            "remote",
            "add",
            "origin",
            "https://gitlab.example.com/bench/project.git",
        ],
        &["add", "-A"],
        &["commit", "-q", "-m", "bench"],
    ] {
        run(
            Command::new("git")
                .args(args)
                .current_dir(dir)
                .envs(env.iter().map(|(k, v)| (k, v))),
            &format!("git {}", args.join(" ")),
        )?;
    }
    Ok(())
}

struct Bench<'a> {
    args: &'a Args,
    tmp: PathBuf,
    env: Vec<(String, String)>,
    concurrency: usize,
}

impl Bench<'_> {
    /// One whole pipeline run in `repo`; its wall time in seconds.
    fn once(&self, tool: Tool, repo: &Path) -> anyhow::Result<f64> {
        let mut cmd = match tool {
            Tool::Runwright => {
                let mut c = Command::new(&self.args.runwright);
                c.args(["exec", "-j", &self.concurrency.to_string()]);
                c
            }
            Tool::Gcl => {
                let mut c = Command::new(&self.args.gcl);
                c.args([
                    "--shell-isolation",
                    "--concurrency",
                    &self.concurrency.to_string(),
                    "--no-color",
                ]);
                let path = std::env::var(runwright_static::env_vars::PATH).unwrap_or_default();
                c.env("PATH", format!("{}:{path}", self.args.node_bin.display()));
                c
            }
        };
        cmd.current_dir(repo)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        let t0 = Instant::now();
        run(&mut cmd, tool.label())?;
        Ok(t0.elapsed().as_secs_f64())
    }
}

fn main() -> anyhow::Result<()> {
    let mut args: Args = clap::Parser::parse();
    // The tools run in the pipelines' directories: relative paths would no longer point at them.
    for p in [&mut args.runwright, &mut args.gcl, &mut args.node_bin] {
        *p = std::path::absolute(&*p)?;
    }
    let tmp = tempfile::Builder::new()
        .prefix("runwright-bench-exec-")
        .tempdir()?;
    let root = tmp.path().to_path_buf();
    let home = root.join("home");
    std::fs::create_dir_all(&home)?;
    let gitconfig = root.join("gitconfig");
    std::fs::write(
        &gitconfig,
        "[user]\n\tname = bench\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n",
    )?;
    let env: Vec<(String, String)> = [
        ("HOME", home.display().to_string()),
        ("GIT_CONFIG_GLOBAL", gitconfig.display().to_string()),
        ("GIT_CONFIG_NOSYSTEM", "1".into()),
        ("GIT_TERMINAL_PROMPT", "0".into()),
        ("XDG_STATE_HOME", root.join("state").display().to_string()),
        ("XDG_CACHE_HOME", root.join("cache").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let concurrency = args.concurrency.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let bench = Bench {
        args: &args,
        tmp: root.clone(),
        env,
        concurrency,
    };

    // Each tool gets its own copy of each pipeline, so neither sees the other's state directories.
    let example_src = support::workspace_root().join("examples/demo/project");
    let mut cases: Vec<(&str, [PathBuf; 2])> = Vec::new();
    for (name, make) in [("example", 0), ("20-job DAG", 1)] {
        let mut dirs = Vec::new();
        for tool in ["rw", "gcl"] {
            let d = bench.tmp.join(format!("{}-{tool}", name.replace(' ', "_")));
            if make == 0 {
                copy_dir(&example_src, &d)?;
            } else {
                std::fs::create_dir_all(&d)?;
                std::fs::write(d.join(".gitlab-ci.yml"), dag_pipeline())?;
            }
            make_repo(&d, &bench.env)?;
            dirs.push(d);
        }
        let [a, b]: [PathBuf; 2] = dirs.try_into().map_err(|_| anyhow::anyhow!("two dirs"))?;
        cases.push((name, [a, b]));
    }

    let tools = [Tool::Runwright, Tool::Gcl];
    let mut secs = vec![[Vec::new(), Vec::new()]; cases.len()];
    for (c, (_, dirs)) in cases.iter().enumerate() {
        for (t, tool) in tools.iter().enumerate() {
            bench.once(*tool, &dirs[t]).context("warm-up run")?;
        }
        eprintln!("bench: {} warmed up", cases[c].0);
    }
    for round in 0..args.rounds {
        for (c, (_, dirs)) in cases.iter().enumerate() {
            // Alternate which tool goes first, so neither always runs on a just-warmed cache.
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for t in order {
                let s = bench.once(tools[t], &dirs[t])?;
                secs[c][t].push(s);
            }
        }
        eprintln!("bench: round {} of {} done", round + 1, args.rounds);
    }

    println!(
        "\n{:<12} {:<16} {:>6} {:>9} {:>9} {:>9}",
        "pipeline", "tool", "runs", "median s", "min s", "max s"
    );
    for (c, (name, _)) in cases.iter().enumerate() {
        let mut medians = [0.0; 2];
        for (t, tool) in tools.iter().enumerate() {
            let mut v = secs[c][t].clone();
            v.sort_by(f64::total_cmp);
            medians[t] = support::median(&v);
            println!(
                "{:<12} {:<16} {:>6} {:>9.3} {:>9.3} {:>9.3}",
                name,
                tool.label(),
                v.len(),
                medians[t],
                v.first().copied().unwrap_or(f64::NAN),
                v.last().copied().unwrap_or(f64::NAN)
            );
        }
        println!(
            "{:<12} ratio runwright/gitlab-ci-local: {:.3} ({:.1}× faster)",
            name,
            medians[0] / medians[1],
            medians[1] / medians[0]
        );
    }
    println!(
        "concurrency {concurrency} for both; {} measured rounds",
        args.rounds
    );
    if args.keep {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}
