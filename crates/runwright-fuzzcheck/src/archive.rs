//! Archive extraction (runwright-archive): artifacts of dependencies and caches, downloaded from GitLab or S3.
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use runwright_archive::{extract, ExtractOptions, Format};

const SENTINEL: &[u8] = b"outside the target: never written";
/// Links already in the target before extraction, pointing out of it: an archive must not write through them.
const TRAPS: &[(&str, &str)] = &[
    ("escape", "../../outside"),
    ("file_link", "../../outside/sentinel"),
];

/// Input: one byte choosing the format (even: zip, as is; odd: a tar, compressed here to tar.zst), then the
/// archive. It is extracted into a target holding two symlinks that point out of it, next to a directory
/// outside the target. Properties: nothing is written outside the target (the outside directory holds exactly
/// its sentinel, unchanged; no other path appears); on error the target is as it was; on success no staging
/// directory is left, every new symlink stays inside the target, no file is setuid/setgid and the counts match
/// what is on disk.
pub fn archive(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Ok(tmp) = tempfile::tempdir() else {
        return;
    };
    let root = tmp.path();
    let (format, bytes) = if selector % 2 == 0 {
        (Format::Zip, body.to_vec())
    } else {
        match zstd::encode_all(body, 1) {
            Ok(b) => (Format::TarZstd, b),
            Err(_) => return,
        }
    };
    let archive = root.join("in.archive");
    let outside = root.join("outside");
    let target = root.join("work/target");
    let prepared = (|| -> std::io::Result<()> {
        std::fs::File::create(&archive)?.write_all(&bytes)?;
        std::fs::create_dir(&outside)?;
        std::fs::write(outside.join("sentinel"), SENTINEL)?;
        std::fs::create_dir_all(&target)?;
        for (name, to) in TRAPS {
            symlink(to, target.join(name))?;
        }
        Ok(())
    })();
    if prepared.is_err() {
        return;
    }
    let opts = ExtractOptions {
        format: Some(format),
        max_total_size: Some(8 << 20),
        ..Default::default()
    };
    let result = extract(&archive, &target, &opts);

    // Nothing outside the target.
    let mut outside_entries: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.path().to_path_buf())
        .filter(|p| !p.starts_with(&target))
        .collect();
    outside_entries.sort();
    let expected: Vec<PathBuf> = ["", "in.archive", "outside", "outside/sentinel", "work"]
        .iter()
        .map(|p| {
            if p.is_empty() {
                root.to_path_buf()
            } else {
                root.join(p)
            }
        })
        .collect();
    assert_eq!(
        outside_entries, expected,
        "paths appeared outside the target"
    );
    let sentinel = std::fs::symlink_metadata(outside.join("sentinel"));
    assert!(
        sentinel.is_ok_and(|m| m.is_file()),
        "the sentinel outside the target was replaced"
    );
    assert_eq!(
        std::fs::read(outside.join("sentinel")).ok().as_deref(),
        Some(SENTINEL),
        "the file outside the target was written through a symlink"
    );

    let inside = listing(&target);
    match result {
        Err(e) => {
            let _ = e.to_string();
            let before: Vec<String> = TRAPS.iter().map(|(n, to)| format!("{n} -> {to}")).collect();
            assert_eq!(inside, before, "a failed extraction changed the target");
        }
        Ok(stats) => {
            let mut files = 0;
            let mut links = 0;
            for entry in walkdir::WalkDir::new(&target).min_depth(1) {
                let Ok(entry) = entry else { continue };
                let rel = entry.path().strip_prefix(&target).unwrap_or(entry.path());
                assert!(
                    !rel.to_string_lossy().starts_with(".runwright-extract-"),
                    "staging directory left behind: {}",
                    rel.display()
                );
                let ft = entry.file_type();
                if ft.is_file() {
                    files += 1;
                    let mode = entry
                        .metadata()
                        .map(|m| m.permissions().mode())
                        .unwrap_or(0);
                    assert_eq!(mode & 0o6000, 0, "{} is setuid/setgid", rel.display());
                } else if ft.is_symlink() {
                    let to = std::fs::read_link(entry.path()).unwrap_or_default();
                    let trap = TRAPS
                        .iter()
                        .any(|(n, t)| rel == Path::new(n) && to == Path::new(t));
                    if !trap {
                        links += 1;
                        assert!(
                            stays_inside(rel, &to),
                            "symlink {} -> {} points out of the target",
                            rel.display(),
                            to.display()
                        );
                    }
                }
            }
            assert_eq!(stats.files, files, "files counted vs on disk: {inside:?}");
            assert_eq!(
                stats.symlinks, links,
                "symlinks counted vs on disk: {inside:?}"
            );
        }
    }
}

/// Whether `to`, the target of the link at `rel` (relative to the extraction target), resolves lexically to a
/// path inside the extraction target.
fn stays_inside(rel: &Path, to: &Path) -> bool {
    let mut depth = rel.components().count() as i64 - 1;
    for c in to.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// `name` for files and directories, `name -> target` for symlinks, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| {
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap_or(e.path())
                .display()
                .to_string();
            match std::fs::read_link(e.path()) {
                Ok(to) => format!("{rel} -> {}", to.display()),
                Err(_) => rel,
            }
        })
        .collect();
    out.sort();
    out
}
