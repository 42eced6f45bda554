//! Resource bounds (issue 7 item 5): the service's peak memory in heavy cases, and whether it keeps serving
//! another runner meanwhile. One real `runwright run` per case (fresh temp dir, journal on) with two shell
//! runner entries in one config: `heavy` gets the heavy job(s); once those are under way, a small job is queued
//! for `light`, and its queue-to-final time is reported.
//!
//! Cases: `print` (a job printing 1 GiB), `files` (a job writing 100,000 files into its artifacts), `queue` (500
//! jobs queued at once), `answer` (the coordinator answers the job request, an update and a trace patch with a
//! 100 MiB body each). Peak RSS is the service's `VmHWM` (its jobs are child processes, not counted).
//!
//! `bench/bounds [--case print --case files ...]` builds and runs it; it is an example, never run by `cargo test`.
// The workspace denies printing (libraries log or return errors); a bench: its output is its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use runwright_testsupport as support;

use runwright_api::types::Artifact;
use runwright_coordinator::{
    Coordinator, CoordinatorOptions, Endpoint, Fault, FaultKind, JobSpec, RunnerOptions,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HEAVY: &str = "glrt-t1_boundsheavy0000001";
const LIGHT: &str = "glrt-t1_boundslight0000001";
const HUNDRED_MIB: u64 = 100 * 1024 * 1024;

/// The resource-bound cases (`bench/bounds` passes these).
#[derive(clap::Parser)]
struct Args {
    /// The runwright binary to measure.
    #[arg(long, default_value = "target/release/runwright")]
    runwright: PathBuf,
    /// Cases to run (print, files, queue, answer); default all.
    #[arg(long)]
    case: Vec<String>,
    /// MiB the `print` job prints.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Files the `files` job writes into its artifacts.
    #[arg(long, default_value_t = 100_000)]
    files: u64,
    /// Jobs queued in the `queue` case.
    #[arg(long, default_value_t = 500)]
    queued: usize,
    /// `concurrent` of the service.
    #[arg(long, default_value_t = 8)]
    concurrent: usize,
    /// Keep each case's service log in this directory (`<dir>/<case>.log`).
    #[arg(long)]
    keep: Option<PathBuf>,
}

struct Outcome {
    case: String,
    peak_kib: u64,
    secs: f64,
    heavy: String,
    light_secs: Option<f64>,
    note: String,
}

struct Run {
    tmp: tempfile::TempDir,
    coordinator: Coordinator,
    child: Child,
    pid: u32,
    started: Instant,
}

impl Run {
    async fn start(a: &Args, case: &str) -> anyhow::Result<Run> {
        let tmp = tempfile::tempdir()?;
        let coordinator = Coordinator::start(CoordinatorOptions {
            trace_update_interval: 1,
            ..CoordinatorOptions::default()
        })
        .await?;
        coordinator.add_runner(HEAVY, RunnerOptions::default());
        coordinator.add_runner(LIGHT, RunnerOptions::default());
        let entry = |name: &str, token: &str| {
            format!(
                "[[runners]]\n  name = \"{name}\"\n  url = \"{}\"\n  token = \"{token}\"\n  executor = \"shell\"\n",
                coordinator.url()
            )
        };
        std::fs::write(
            tmp.path().join("config.toml"),
            format!(
                "concurrent = {}\ncheck_interval = 1\n[journal]\n  enabled = true\n{}{}",
                a.concurrent,
                entry("heavy", HEAVY),
                entry("light", LIGHT)
            ),
        )?;
        for d in ["work", "home"] {
            std::fs::create_dir_all(tmp.path().join(d))?;
        }
        let log = match &a.keep {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                Stdio::from(std::fs::File::create(dir.join(format!("{case}.log")))?)
            }
            None => Stdio::null(),
        };
        let child = Command::new(&a.runwright)
            .args(["run", "-c"])
            .arg(tmp.path().join("config.toml"))
            .arg("-d")
            .arg(tmp.path().join("work"))
            .env("HOME", tmp.path().join("home"))
            .env_remove("RUNWRIGHT_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        Ok(Run {
            tmp,
            coordinator,
            child,
            pid,
            started: Instant::now(),
        })
    }

    fn peak_kib(&self) -> u64 {
        support::proc_status_kib(self.pid, "VmHWM").unwrap_or(0)
    }

    /// Waits until `id` is final (or `limit` passes); returns its state.
    async fn wait(&self, id: i64, limit: Duration) -> String {
        let t = Instant::now();
        loop {
            if let Some(j) = self.coordinator.job(id) {
                if j.is_final() {
                    return j.state;
                }
            }
            if t.elapsed() > limit {
                return format!(
                    "{} after {limit:?}",
                    self.coordinator
                        .job(id)
                        .map(|j| j.state)
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Queues a small job for the other runner entry and times it from queue to final state.
    async fn light(&self) -> Option<f64> {
        let t = Instant::now();
        let id = self
            .coordinator
            .enqueue(JobSpec::shell("light", &["echo light-ok"]).for_runner(LIGHT));
        let state = self.wait(id, Duration::from_secs(120)).await;
        (state == "success").then(|| t.elapsed().as_secs_f64())
    }

    /// Waits until the job has started printing (so the light job runs *during* the heavy one).
    async fn until_running(&self, id: i64) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if self
                .coordinator
                .job(id)
                .is_some_and(|j| j.is_final() || !j.trace.is_empty())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(mut self) -> anyhow::Result<tempfile::TempDir> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        self.child.wait()?;
        Ok(self.tmp)
    }
}

/// Size of job `id`'s `trace.log` in the journal beside `config.toml` in `dir` (0 when not found).
fn journal_trace_bytes(dir: &std::path::Path, id: i64) -> u64 {
    std::fs::read_dir(dir.join("journal/jobs"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.split('-').nth(1) == Some(&id.to_string()))
        })
        .and_then(|e| std::fs::metadata(e.path().join("trace.log")).ok())
        .map_or(0, |m| m.len())
}

fn heavy(name: &str, script: &[&str]) -> JobSpec {
    JobSpec::shell(name, script).for_runner(HEAVY)
}

async fn print(a: &Args) -> anyhow::Result<Outcome> {
    let run = Run::start(a, "print").await?;
    // ~100-byte lines; `yes` dies of SIGPIPE when `head` is done, which `pipefail` would count as a failure.
    let line = "runwright bounds bench: a line of build output about one hundred bytes long ...................";
    let id = run.coordinator.enqueue(heavy(
        "print",
        &[&format!(
            "(yes '{line}' || true) | head -c {}",
            a.mib * 1024 * 1024
        )],
    ));
    run.until_running(id).await;
    let light = run.light().await;
    let state = run.wait(id, Duration::from_secs(1800)).await;
    let secs = run.started.elapsed().as_secs_f64();
    let peak = run.peak_kib();
    let stored = run.coordinator.job(id).map_or(0, |j| j.trace.len());
    let journal = journal_trace_bytes(run.tmp.path(), id);
    run.stop()?;
    Ok(Outcome {
        case: format!("job printing {} MiB", a.mib),
        peak_kib: peak,
        secs,
        heavy: state,
        light_secs: light,
        note: format!(
            "GitLab copy {:.1} MiB (output_limit 4 MiB), journal's trace {:.1} MiB",
            stored as f64 / 1048576.0,
            journal as f64 / 1048576.0
        ),
    })
}

async fn files(a: &Args) -> anyhow::Result<Outcome> {
    let run = Run::start(a, "files").await?;
    // 100 directories of 1,000 small files; awk closes each file so it never holds many open.
    let make = format!(
        "awk 'BEGIN {{ for (i = 0; i < {n}; i++) {{ d = sprintf(\"out/d%03d\", i % 100); if (i < 100) system(\"mkdir -p \" d); f = sprintf(\"%s/f%06d.txt\", d, i); print \"file \" i > f; close(f) }} }}'",
        n = a.files
    );
    let id = run.coordinator.enqueue(JobSpec {
        artifacts: vec![Artifact {
            paths: vec!["out/".into()],
            artifact_type: "archive".into(),
            artifact_format: "zip".into(),
            ..Artifact::default()
        }],
        ..heavy("files", &[&make])
    });
    run.until_running(id).await;
    let light = run.light().await;
    let state = run.wait(id, Duration::from_secs(1800)).await;
    let secs = run.started.elapsed().as_secs_f64();
    let peak = run.peak_kib();
    let size = run
        .coordinator
        .artifact(id, "archive")
        .map_or(0, |s| s.size);
    run.stop()?;
    Ok(Outcome {
        case: format!("{} files into artifacts", a.files),
        peak_kib: peak,
        secs,
        heavy: state,
        light_secs: light,
        note: format!("archive {:.1} MiB stored", size as f64 / 1048576.0),
    })
}

async fn queue(a: &Args) -> anyhow::Result<Outcome> {
    let run = Run::start(a, "queue").await?;
    let ids: Vec<i64> = (0..a.queued)
        .map(|i| {
            run.coordinator
                .enqueue(heavy(&format!("q{i}"), &["echo queued-ok"]))
        })
        .collect();
    // The light job once a tenth of the queue is done: the queue is still long.
    let t = Instant::now();
    while ids
        .iter()
        .filter(|id| run.coordinator.job(**id).is_some_and(|j| j.is_final()))
        .count()
        < a.queued / 10
        && t.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let light = run.light().await;
    let mut ok = 0;
    for id in &ids {
        if run.wait(*id, Duration::from_secs(1800)).await == "success" {
            ok += 1;
        }
    }
    let secs = run.started.elapsed().as_secs_f64();
    let peak = run.peak_kib();
    run.stop()?;
    Ok(Outcome {
        case: format!("{} jobs queued at once", a.queued),
        peak_kib: peak,
        secs,
        heavy: format!("{ok}/{} success", a.queued),
        light_secs: light,
        note: format!("{:.1} jobs/s", a.queued as f64 / secs),
    })
}

async fn answer(a: &Args) -> anyhow::Result<Outcome> {
    let run = Run::start(a, "answer").await?;
    let big = Fault::OversizedAnswer { bytes: HUNDRED_MIB };
    let f = run.coordinator.faults();
    // The first job handed out (the heavy runner's: the light one has none queued) comes with 100 MiB.
    f.push(Endpoint::RequestJob, big.clone());
    let refused = run.coordinator.enqueue(heavy("refused", &["echo never"]));
    let t = Instant::now();
    while f.injected(FaultKind::OversizedAnswer) == 0 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Then every update and patch of the next job gets 100 MiB back.
    f.push_n(Endpoint::UpdateJob, big.clone(), 3);
    f.push_n(Endpoint::PatchTrace, big, 3);
    let id = run.coordinator.enqueue(heavy(
        "answered",
        &["for i in 1 2 3 4; do echo tick-$i; sleep 1; done"],
    ));
    run.until_running(id).await;
    let light = run.light().await;
    let state = run.wait(id, Duration::from_secs(300)).await;
    let secs = run.started.elapsed().as_secs_f64();
    let peak = run.peak_kib();
    let injected = f.injected(FaultKind::OversizedAnswer);
    let refused_state = run
        .coordinator
        .job(refused)
        .map(|j| j.state)
        .unwrap_or_default();
    let tmp = run.stop()?;
    let _ = tmp;
    Ok(Outcome {
        case: "100 MiB answers (job request, updates, patches)".into(),
        peak_kib: peak,
        secs,
        heavy: state,
        light_secs: light,
        note: format!(
            "{injected} oversized answers; the 100 MiB job payload refused (that job left {refused_state} on GitLab)"
        ),
    })
}

fn keep_log_hint(a: &Args) -> String {
    a.keep
        .as_deref()
        .map(Path::display)
        .map(|d| format!(" (service logs in {d})"))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = <Args as clap::Parser>::parse();
    support::require_binary(&a.runwright)?;
    let cases = if a.case.is_empty() {
        vec![
            "print".into(),
            "files".into(),
            "queue".into(),
            "answer".into(),
        ]
    } else {
        a.case.clone()
    };
    let mut rows = Vec::new();
    for case in &cases {
        eprintln!("bounds: {case}...");
        let o = match case.as_str() {
            "print" => print(&a).await?,
            "files" => files(&a).await?,
            "queue" => queue(&a).await?,
            "answer" => answer(&a).await?,
            other => anyhow::bail!("unknown case {other:?} (print, files, queue, answer)"),
        };
        let row = format!(
            "| {} | {:.1} | {:.1} | {} | {} | {} |",
            o.case,
            o.peak_kib as f64 / 1024.0,
            o.secs,
            o.heavy,
            o.light_secs
                .map_or("not served".to_string(), |s| format!("{s:.1} s")),
            o.note
        );
        eprintln!("{row}");
        rows.push(row);
    }
    println!("| case | peak RSS MiB (VmHWM) | wall s | heavy job(s) | other runner's job, queue to done | note |");
    println!("|---|---:|---:|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    eprintln!("done{}", keep_log_hint(&a));
    Ok(())
}
