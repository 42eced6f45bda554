//! Journal overhead on the trace path (issue 6): one shell job printing N MiB (default 1024) through a real
//! `runwright run`, with `[journal]` on and off, interleaved in the same invocation; wall time from the service's
//! start to GitLab's final state, throughput, and the service's peak RSS (`VmHWM`) and sampled `VmRSS`.
//!
//! `bench/journal [--mib 1024] [--rounds 2]` builds and runs it; it is an example, never run by `cargo test`.
// The workspace denies printing (libraries log or return errors); a bench: its output is its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use runwright_testsupport as support;

use runwright_coordinator::{Coordinator, CoordinatorOptions, JobSpec, RunnerOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "glrt-t1_journalbench00000001";

/// Journal overhead: one job printing `--mib` MiB, with the journal on and off (`bench/journal` passes these).
#[derive(clap::Parser)]
struct Args {
    /// The runwright binary to measure.
    #[arg(long, default_value = "target/release/runwright")]
    runwright: PathBuf,
    /// MiB the job prints.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Rounds of (journal on, journal off), interleaved.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// `output_limit` of the runner entry (KiB); unset: GitLab's 4096.
    #[arg(long)]
    output_limit_kib: Option<u64>,
}

struct Run {
    secs: f64,
    peak_kib: u64,
    journal_bytes: u64,
}

fn dir_bytes(dir: &Path) -> u64 {
    walk(dir)
}

fn walk(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

async fn one(a: &Args, journal: bool) -> anyhow::Result<Run> {
    let tmp = tempfile::tempdir()?;
    let coordinator = Coordinator::start(CoordinatorOptions::default()).await?;
    coordinator.add_runner(TOKEN, RunnerOptions::default());
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\n[journal]\n  enabled = {journal}\n[[runners]]\n  name = \"bench\"\n  url = \"{}\"\n  token = \"{TOKEN}\"\n  executor = \"shell\"\n{}",
            coordinator.url(),
            a.output_limit_kib
                .map(|k| format!("  output_limit = {k}\n"))
                .unwrap_or_default()
        ),
    )?;
    std::fs::create_dir_all(tmp.path().join("work"))?;
    // ~100-byte lines, as a build log has them; `yes` is far faster than the trace path. It dies of SIGPIPE when
    // `head` is done, which GitLab's `pipefail` would count as a failure.
    let line = "runwright journal bench: a line of build output about one hundred bytes long ..................";
    let id = coordinator.enqueue(JobSpec::shell(
        "print",
        &[&format!(
            "(yes '{line}' || true) | head -c {}",
            a.mib * 1024 * 1024
        )],
    ));
    let start = Instant::now();
    let mut child = Command::new(&a.runwright)
        .args(["run", "-c"])
        .arg(&config)
        .arg("-d")
        .arg(tmp.path().join("work"))
        .env("HOME", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let mut peak = 0;
    let rec = loop {
        peak = peak.max(support::proc_status_kib(pid, "VmRSS").unwrap_or(0));
        if let Some(j) = coordinator.job(id) {
            if j.state == "success" || j.state == "failed" {
                break j;
            }
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(3600),
            "job {id} took over an hour"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        rec.state == "success",
        "the bench job failed: {}",
        rec.trace_text()
    );
    let hwm = support::proc_status_kib(pid, "VmHWM").unwrap_or(0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGQUIT,
    )?;
    child.wait()?;
    Ok(Run {
        secs,
        peak_kib: peak.max(hwm),
        journal_bytes: dir_bytes(&tmp.path().join("journal")),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = <Args as clap::Parser>::parse();
    support::require_binary(&a.runwright)?;
    println!(
        "{:<8} {:>5} {:>9} {:>9} {:>13} {:>13}",
        "journal", "round", "seconds", "MiB/s", "peak RSS MiB", "journal MiB"
    );
    let mut on = Vec::new();
    let mut off = Vec::new();
    for round in 1..=a.rounds {
        // Alternate which goes first, so drift (page cache, thermal) does not favour one.
        let order = if round % 2 == 1 {
            [true, false]
        } else {
            [false, true]
        };
        for journal in order {
            let r = one(&a, journal).await?;
            println!(
                "{:<8} {:>5} {:>9.2} {:>9.1} {:>13.1} {:>13.1}",
                if journal { "on" } else { "off" },
                round,
                r.secs,
                a.mib as f64 / r.secs,
                r.peak_kib as f64 / 1024.0,
                r.journal_bytes as f64 / 1048576.0
            );
            if journal { &mut on } else { &mut off }.push(r);
        }
    }
    let median = |v: &mut Vec<Run>| {
        v.sort_by(|x, y| x.secs.total_cmp(&y.secs));
        v.get(v.len() / 2).map(|r| (r.secs, r.peak_kib))
    };
    if let (Some((s_on, rss_on)), Some((s_off, rss_off))) = (median(&mut on), median(&mut off)) {
        println!(
            "median: on {:.1} MiB/s, off {:.1} MiB/s ({:+.1}% time with the journal); peak RSS on {:.1} MiB, off {:.1} MiB",
            a.mib as f64 / s_on,
            a.mib as f64 / s_off,
            (s_on / s_off - 1.0) * 100.0,
            rss_on as f64 / 1024.0,
            rss_off as f64 / 1024.0
        );
    }
    Ok(())
}
