//! The short fault soak (issue 7 item 3) that CI runs: 12 jobs at 30% injected faults on every endpoint, a fixed
//! seed, the real binary. The long one is `bench/soak` (same code: `runwright-testsupport`'s `soak.rs`).

use runwright_testsupport::soak as driver;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_jobs_at_thirty_percent_faults_end_right_with_identical_traces() {
    let keep = tempfile::tempdir().expect("tempdir");
    let opts = driver::Options {
        runwright: env!("CARGO_BIN_EXE_runwright").into(),
        jobs: 12,
        concurrent: 4,
        faults: 0.3,
        seed: 11,
        max_streak: 2,
        api_timeout_secs: 1,
        max_lines: 20_000,
        fast_retries: true,
        deadline: Duration::from_secs(50),
    };
    let report = driver::run(&opts, Some(keep.path()))
        .await
        .expect("soak runs");
    // The figures, for `--nocapture`.
    eprintln!("{}\n{}", driver::Report::header(), report.row(opts.faults));
    let log = std::fs::read_to_string(keep.path().join("service.log")).unwrap_or_default();
    assert!(
        report.passed(),
        "{}\n{}\nproblems:\n{}\nservice log:\n{log}",
        driver::Report::header(),
        report.row(opts.faults),
        report.problems.join("\n")
    );
    assert_eq!(report.right_state, 12);
    assert_eq!(report.traces_identical, 12);
    // The faults were there, and the runner got through them by retrying.
    assert!(
        report.faults.values().sum::<u64>() >= 10,
        "{:?}",
        report.faults
    );
    assert!(report.retries >= 10, "{}", report.retries);
}
