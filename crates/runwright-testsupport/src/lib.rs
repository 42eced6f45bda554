//! What runwright's examples, benches and tests share (instead of `#[path]` includes of each other's files):
//! building the release binary the examples drive, the benches' statistics and memory figures, and the
//! fault-injection soak ([`soak`]) that both `bench/soak` and the test suite run.

pub mod soak;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (this crate, like the examples' crate, lives two levels below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds `target/release/runwright` and returns its path.
pub fn build_release_binary() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "runwright",
            "--bin",
            "runwright",
        ])
        .current_dir(&root)
        .status()?;
    anyhow::ensure!(status.success(), "building runwright failed");
    Ok(root.join("target/release/runwright"))
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`): the benches' memory figures.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The median of `sorted` (ascending); NaN when empty.
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The nearest-rank percentile `p` (0–100) of `sorted` (ascending); NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Fails with what to do when the runwright binary a bench drives is not there.
pub fn require_binary(path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        path.exists(),
        "{} does not exist: build it (cargo build --release -p runwright) or pass --runwright",
        path.display()
    );
    Ok(())
}
