//! The pipeline directory every `runwright exec` run leaves behind:
//! `$XDG_STATE_HOME/runwright/pipelines/<project>-<hash>/<run number>/` with `plan.json`, each job's full log
//! (`<job>.log`, ANSI kept), its uploaded artifacts (`artifacts/<job>/`) and `summary.json`.
//!
//! A run is one user's (issue 17): its logs hold whatever the jobs printed of their variables, its plan the
//! jobs' variables, `runner.toml` (`--serve`) the run's runner token. So the directories are this user's and
//! 0700, existing ones tightened and a directory owned by anyone else refused ([`private_dir`]); every file is
//! created new (never through a link someone planted) with mode 0600 ([`private_file`]).

use anyhow::{bail, Context};
use runwright_coordinator::StoredArtifact;
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Overrides `$XDG_STATE_HOME/runwright/pipelines/<project>-<hash>`: the runs of this checkout go to numbered
/// directories right under it. Read by `runwright exec` at the start of each run. Unset: the XDG location
/// (`~/.local/state/...` without `XDG_STATE_HOME`).
pub(super) use runwright_static::env_vars::RUNWRIGHT_EXEC_STATE_DIR;

/// Where the runs of a checkout go; `key` is `<project slug>-<hash of the checkout path>`.
pub(super) fn pipelines_dir(key: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(RUNWRIGHT_EXEC_STATE_DIR).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // XDG: a relative XDG_STATE_HOME is invalid and ignored.
    let base = std::env::var_os(runwright_static::env_vars::XDG_STATE_HOME)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os(runwright_static::env_vars::HOME)
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("runwright").join("pipelines").join(key)
}

/// One run's directory.
pub(super) struct RunDir {
    pub path: PathBuf,
    pub number: u64,
}

/// Makes `dir` (and its missing parents) a directory of this user's that only this user can enter: created
/// with mode 0700, an existing one tightened to 0700, and refused when it belongs to another user (who could
/// read what goes in, or swap it).
pub(super) fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "{} belongs to uid {}, not to you (uid {me}): another user could read or replace what runwright exec keeps there; remove it, or choose another directory",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {} to its owner", dir.display()))?;
    }
    Ok(())
}

/// Creates the file `path`, which must not exist yet (so no planted link is followed), readable and writable
/// by this user only.
pub(super) fn private_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Creates `<dir>/<n>` for the next free run number. `create_dir` claims a number atomically, so two runs
/// started at once get different directories.
pub(super) fn create_run(dir: &Path) -> anyhow::Result<RunDir> {
    let hint =
        format!("set {RUNWRIGHT_EXEC_STATE_DIR} to a writable directory to keep runs elsewhere");
    private_dir(dir)
        .with_context(|| format!("the pipeline directory {} ({hint})", dir.display()))?;
    let last = std::fs::read_dir(dir)
        .with_context(|| format!("reading {} ({hint})", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let mut number = last + 1;
    loop {
        let path = dir.join(number.to_string());
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(RunDir { path, number }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && number < last + 1000 => {
                number += 1;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "creating the pipeline directory {} ({hint})",
                        path.display()
                    )
                })
            }
        }
    }
}

/// File names for the jobs' logs and artifact directories, in the order of `names`: the job name with
/// anything but `[A-Za-z0-9._-]` as `_` (`test 1/3` → `test_1_3`), made unique with `-2`, `-3`, ….
pub(super) fn file_stems<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut taken = HashSet::new();
    // The run's own files must not be shadowed by a job named `plan` or `summary`.
    taken.insert("plan".to_string());
    taken.insert("summary".to_string());
    taken.insert("artifacts".to_string());
    names
        .into_iter()
        .map(|name| {
            let base: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let base = match base.trim_start_matches('.') {
                "" => "job".to_string(),
                b => b.to_string(),
            };
            let mut stem = base.clone();
            let mut n = 2;
            while !taken.insert(stem.clone()) {
                stem = format!("{base}-{n}");
                n += 1;
            }
            stem
        })
        .collect()
}

/// Copies a job's uploaded artifacts (from the coordinator's store, which goes away with it) into
/// `<run>/artifacts/<stem>/`; returns the copied files' paths relative to the run directory.
pub(super) fn copy_artifacts(
    run: &Path,
    stem: &str,
    artifacts: &[StoredArtifact],
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    if artifacts.is_empty() {
        return Ok(out);
    }
    let dir = run.join("artifacts").join(stem);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut used = HashSet::new();
    for a in artifacts {
        // The upload's file name, as GitLab's UI offers it for download; the type keeps two reports with one
        // file name apart.
        let base = Path::new(&a.filename)
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .filter(|f| !f.is_empty() && f != "." && f != "..")
            .unwrap_or_else(|| format!("{}.{}", a.artifact_type, a.artifact_format));
        let name = if used.insert(base.clone()) {
            base
        } else {
            format!("{}-{base}", a.artifact_type)
        };
        let target = dir.join(&name);
        // The coordinator's copy is never written again and goes with the run's temporary directory: a hard
        // link keeps it without copying; a copy where the two are on different file systems. Either way the
        // file keeps the coordinator's mode, 0600.
        if std::fs::hard_link(&a.path, &target).is_ok() {
            out.push(format!("artifacts/{stem}/{name}"));
            continue;
        }
        std::fs::copy(&a.path, &target).with_context(|| {
            format!(
                "copying the {} artifact to {}",
                a.artifact_type,
                target.display()
            )
        })?;
        out.push(format!("artifacts/{stem}/{name}"));
    }
    Ok(out)
}

/// Writes `value` as pretty JSON to the new file `<run>/<name>` (mode 0600).
pub(super) fn write_json(
    run: &Path,
    name: &str,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    // Through a `Value`, whose objects sort their keys: the files have always listed them in that order.
    let mut bytes = serde_json::to_vec_pretty(&serde_json::to_value(value)?)?;
    bytes.push(b'\n');
    write_private(&run.join(name), &bytes)
}

/// Writes `bytes` to the new file `path` (mode 0600).
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    private_file(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_are_safe_and_unique() {
        assert_eq!(
            file_stems([
                "test 1/3",
                "test_1_3",
                "build: [linux, amd64]",
                "plan",
                "..",
                "a.b"
            ]),
            [
                "test_1_3",
                "test_1_3-2",
                "build___linux__amd64_",
                "plan-2",
                "job",
                "a.b"
            ]
        );
    }

    #[test]
    fn pipeline_directories_and_files_are_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("p");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let run = create_run(&dir).expect("run");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "an existing directory is tightened");
        assert_eq!(mode(&run.path), 0o700);
        write_json(&run.path, "plan.json", &serde_json::json!({})).expect("plan");
        assert_eq!(mode(&run.path.join("plan.json")), 0o600);
        // Never through a planted link: the file must be new.
        let victim = tmp.path().join("victim");
        std::os::unix::fs::symlink(&victim, run.path.join("summary.json")).expect("symlink");
        assert!(write_json(&run.path, "summary.json", &serde_json::json!({})).is_err());
        assert!(!victim.exists());
        if nix::unistd::geteuid().is_root() {
            let foreign = tmp.path().join("foreign");
            std::fs::create_dir(&foreign).expect("mkdir");
            nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(65534)), None)
                .expect("chown");
            let err = format!("{:#}", create_run(&foreign).err().expect("refused"));
            assert!(err.contains("belongs to uid 65534"), "{err}");
        }
    }

    #[test]
    fn run_numbers_count_up() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("p");
        assert_eq!(create_run(&dir).expect("first").number, 1);
        std::fs::create_dir(dir.join("7")).expect("mkdir");
        std::fs::create_dir(dir.join("notes")).expect("mkdir");
        let r = create_run(&dir).expect("next");
        assert_eq!(r.number, 8);
        assert!(r.path.ends_with("p/8"));
    }
}
