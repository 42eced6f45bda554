//! Shared by the examples: building the release binary they drive.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the examples live two levels below it).
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
