//! File selection with GitLab's rules (runner `commands/helpers/file_archiver.go`).

use std::process::Command;

use runwright_archive::{select_files, ArchiveSpec, EntryKind};

use crate::util::*;

fn names(dir: &std::path::Path, spec: &ArchiveSpec) -> (Vec<String>, Vec<String>) {
    let sel = select_files(dir, spec).unwrap();
    (sel.iter().map(|e| e.name).collect(), sel.warnings)
}

fn spec(paths: &[&str], exclude: &[&str]) -> ArchiveSpec {
    ArchiveSpec {
        paths: paths.iter().map(|s| s.to_string()).collect(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        untracked: false,
        max_files: None,
    }
}

fn project() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    for f in [
        "build/a.o",
        "build/sub/b.o",
        "build/sub/c.txt",
        "dist/x.js",
        "docs/y.md",
        "top.o",
        ".hidden/h.o",
    ] {
        write(&p.join(f), f.as_bytes(), 0o644);
    }
    d
}

#[test]
fn doublestar_and_alternatives() {
    let d = project();
    let (n, w) = names(d.path(), &spec(&["**/*.o"], &[]));
    assert_eq!(n, [".hidden/h.o", "build/a.o", "build/sub/b.o", "top.o"]);
    assert!(w.is_empty(), "{w:?}");
    let (n, _) = names(d.path(), &spec(&["{dist,docs}/*"], &[]));
    assert_eq!(n, ["dist/x.js", "docs/y.md"]);
    let (n, _) = names(d.path(), &spec(&["build/*.o"], &[]));
    assert_eq!(n, ["build/a.o"]);
}

#[test]
fn directories_expand_recursively_and_exclude_applies() {
    let d = project();
    let (n, _) = names(d.path(), &spec(&["build"], &["build/**/*.txt"]));
    assert_eq!(n, ["build", "build/a.o", "build/sub", "build/sub/b.o"]);
    let sel = select_files(d.path(), &spec(&["build"], &["build/**/*.txt"])).unwrap();
    assert!(
        sel.infos
            .iter()
            .any(|i| i == "build/**/*.txt: excluded 1 files"),
        "{:?}",
        sel.infos
    );
}

#[test]
fn warnings_like_gitlab() {
    let d = project();
    let (n, w) = names(
        d.path(),
        &spec(&["nothing-here/*", "../outside", "", "/etc/passwd"], &[]),
    );
    assert!(n.is_empty());
    assert!(w.iter().any(|w| w.starts_with("nothing-here/*: no matching files. Ensure that the artifact path is relative to the working directory")), "{w:?}");
    assert!(
        w.iter()
            .any(|w| w
                == "processPath: artifact path is not a subpath of project directory: ../outside"),
        "{w:?}"
    );
    assert!(
        w.iter().any(|w| w
            == "processPath: artifact path is not a subpath of project directory: /etc/passwd"),
        "{w:?}"
    );
    assert!(
        w.iter().any(|w| w == "No matching files. Path is empty."),
        "{w:?}"
    );
}

#[test]
fn absolute_path_inside_project_is_accepted() {
    let d = project();
    let abs = d.path().join("dist").to_string_lossy().into_owned();
    let (n, _) = names(d.path(), &spec(&[&abs], &[]));
    assert_eq!(n, ["dist", "dist/x.js"]);
}

#[test]
fn symlinks_are_stored_never_followed() {
    let d = project();
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("secret"), b"s", 0o644);
    std::os::unix::fs::symlink(outside.path(), d.path().join("out-link")).unwrap();
    let sel = select_files(
        d.path(),
        &spec(&["out-link", "out-link/secret", "out-link/*"], &[]),
    )
    .unwrap();
    let n: Vec<String> = sel.iter().map(|e| e.name).collect();
    assert_eq!(n, ["out-link"]);
    assert!(matches!(sel.get(0).kind, EntryKind::Symlink(_)));
    assert!(
        sel.warnings
            .iter()
            .any(|w| w.contains("a parent directory is a symlink")),
        "{:?}",
        sel.warnings
    );
}

#[test]
fn untracked_uses_git_ls_files_others() {
    let d = project();
    let p = d.path();
    let git = |args: &[&str]| {
        run(Command::new("git")
            .current_dir(p)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .args(args))
    };
    git(&["init", "-q"]);
    write(&p.join(".gitignore"), b"*.o\n", 0o644);
    git(&["add", "docs", ".gitignore"]);
    git(&["commit", "-q", "-m", "init"]);
    let spec = ArchiveSpec {
        untracked: true,
        ..Default::default()
    };
    let (n, w) = names(p, &spec);
    assert!(w.is_empty(), "{w:?}");
    // GitLab runs `git ls-files -o` without --exclude-standard: ignored files count as untracked.
    assert_eq!(
        n,
        [
            ".hidden/h.o",
            "build/a.o",
            "build/sub/b.o",
            "build/sub/c.txt",
            "dist/x.js",
            "top.o"
        ]
    );
}

// The bound on one archive's entries (issue 17): a job's file count must not exhaust the service's memory.

fn bounded(paths: &[&str], max: usize) -> ArchiveSpec {
    ArchiveSpec {
        max_files: Some(max),
        ..spec(paths, &[])
    }
}

fn too_many(dir: &std::path::Path, spec: &ArchiveSpec) -> Option<usize> {
    match select_files(dir, spec) {
        Err(runwright_archive::Error::TooManyFiles { limit }) => Some(limit),
        Err(e) => panic!("{e}"),
        Ok(_) => None,
    }
}

#[test]
fn a_selection_at_the_bound_succeeds_and_one_past_it_fails_naming_the_bound() {
    let d = project();
    // build, build/a.o, build/sub, build/sub/b.o, build/sub/c.txt: five entries.
    assert_eq!(too_many(d.path(), &bounded(&["build"], 5)), None);
    assert_eq!(too_many(d.path(), &bounded(&["build"], 4)), Some(4));
    let e = select_files(d.path(), &bounded(&["build"], 4)).expect_err("over the bound");
    assert_eq!(
        e.to_string(),
        "more than 4 files, directories and symlinks match"
    );
}

#[test]
fn overlapping_patterns_count_an_entry_once_against_the_bound() {
    let d = project();
    let spec = bounded(&["build", "build/sub", "build/*.o", "build/**"], 5);
    let (n, _) = names(d.path(), &spec);
    assert_eq!(
        n,
        [
            "build",
            "build/a.o",
            "build/sub",
            "build/sub/b.o",
            "build/sub/c.txt"
        ]
    );
    // Past twice the bound the names found so far are sorted and deduplicated, and the count goes on from there.
    let d = tempfile::tempdir().unwrap();
    for i in 0..500 {
        write(&d.path().join(format!("gen/f{i:03}")), b"", 0o644);
    }
    let spec = bounded(&["gen", "gen/*", "gen/**"], 600);
    let (n, _) = names(d.path(), &spec);
    assert_eq!(n.len(), 501);
    assert_eq!(
        too_many(d.path(), &bounded(&["gen", "gen/*", "gen/**"], 500)),
        Some(500)
    );
}

#[test]
fn a_glob_or_untracked_files_past_the_bound_fail_too() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..3000 {
        write(&d.path().join(format!("gen/f{i:04}.o")), b"x", 0o644);
    }
    assert_eq!(too_many(d.path(), &bounded(&["**/*.o"], 2500)), Some(2500));
    assert_eq!(too_many(d.path(), &bounded(&["**/*.o"], 3000)), None);
    run(Command::new("git")
        .current_dir(d.path())
        .args(["init", "-q"]));
    let untracked = ArchiveSpec {
        untracked: true,
        max_files: Some(2999),
        ..Default::default()
    };
    assert_eq!(too_many(d.path(), &untracked), Some(2999));
    let untracked = ArchiveSpec {
        max_files: Some(3000),
        ..untracked
    };
    assert_eq!(too_many(d.path(), &untracked), None);
}

/// The walk stops once the bound is passed: a tree far larger than the bound costs little time.
#[test]
fn selection_stops_early_in_a_tree_far_past_the_bound() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..20_000 {
        write(
            &d.path().join(format!("big/d{:02}/f{i:05}", i % 50)),
            b"",
            0o644,
        );
    }
    let t = std::time::Instant::now();
    assert_eq!(too_many(d.path(), &bounded(&["big"], 100)), Some(100));
    let early = t.elapsed();
    let t = std::time::Instant::now();
    assert_eq!(too_many(d.path(), &bounded(&["big"], 1_000_000)), None);
    let whole = t.elapsed();
    assert!(
        early * 5 < whole,
        "stopped after {early:?}; the whole tree takes {whole:?}"
    );
}
