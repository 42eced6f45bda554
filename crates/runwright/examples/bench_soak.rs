//! Fault-injection soak (issue 7 item 3): `--jobs` jobs of varied size through a real `runwright run` with
//! `concurrent = --concurrent` while the coordinator fails `--faults` of the calls on every endpoint; checks every
//! job's final state and stored trace and prints a markdown table row per fault share (see
//! `runwright-testsupport`'s `soak.rs` for what is run and checked).
//!
//! `bench/soak [--faults 0.1] [--faults 0.3] [--jobs 100] [--concurrent 8] [--seed N]` builds and runs it; it is an
//! example, never run by `cargo test`. Exits non-zero when a check failed.
// The workspace denies printing (libraries log or return errors); a bench: its output is its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use runwright_testsupport as support;
use runwright_testsupport::soak;
use std::path::PathBuf;
use std::time::Duration;

/// The fault-injection soak (`bench/soak` passes these).
#[derive(clap::Parser)]
struct Args {
    /// The runwright binary to run.
    #[arg(long, default_value = "target/release/runwright")]
    runwright: PathBuf,
    /// Share of calls failed on every endpoint; repeat for several rounds (default: 0.1 and 0.3).
    #[arg(long)]
    faults: Vec<f64>,
    /// Jobs per round.
    #[arg(long, default_value_t = 100)]
    jobs: usize,
    /// `concurrent` of the service.
    #[arg(long, default_value_t = 8)]
    concurrent: usize,
    /// Seeds the job mix and the faults.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// At most this many faults in a row on one resource (GitLab's runner tries an artifact transfer 3 times).
    #[arg(long, default_value_t = 2)]
    max_streak: u32,
    /// The client's answer timeout in seconds (stalled answers last one second more).
    #[arg(long, default_value_t = 3)]
    api_timeout_secs: u64,
    /// Lines of the largest trace (~55 bytes a line).
    #[arg(long, default_value_t = 100_000)]
    max_lines: usize,
    /// Cap every retry wait at 50 ms (`RUNWRIGHT_FAST_RETRIES=1`) instead of GitLab's waits.
    #[arg(long)]
    fast_retries: bool,
    /// Keep each round's service log in this directory (`<dir>/<share>/service.log`).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Give up on a round after this many seconds.
    #[arg(long, default_value_t = 1800)]
    deadline_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = <Args as clap::Parser>::parse();
    support::require_binary(&a.runwright)?;
    let shares = if a.faults.is_empty() {
        vec![0.1, 0.3]
    } else {
        a.faults.clone()
    };
    let mut rows = Vec::new();
    let mut failed = false;
    for share in shares {
        let opts = soak::Options {
            runwright: a.runwright.clone(),
            jobs: a.jobs,
            concurrent: a.concurrent,
            faults: share,
            seed: a.seed,
            max_streak: a.max_streak,
            api_timeout_secs: a.api_timeout_secs,
            max_lines: a.max_lines,
            fast_retries: a.fast_retries,
            deadline: Duration::from_secs(a.deadline_secs),
        };
        let keep = a.keep.as_ref().map(|k| k.join(format!("{share}")));
        eprintln!("soak: {} jobs at {:.0}% faults...", a.jobs, share * 100.0);
        let report = soak::run(&opts, keep.as_deref()).await?;
        println!("{}\n{}", soak::Report::header(), report.row(share));
        println!("faults by endpoint: {}", report.by_endpoint());
        if report.passed() {
            println!("PASS\n");
        } else {
            failed = true;
            println!("FAIL:");
            for p in &report.problems {
                println!("  {p}");
            }
            println!();
        }
        rows.push(report.row(share));
    }
    println!("{}", soak::Report::header());
    for r in rows {
        println!("{r}");
    }
    anyhow::ensure!(!failed, "the soak found problems (listed above)");
    Ok(())
}
