//! Info-ZIP interoperability: `unzip -t` and `unzip` accept our archives with identical content and modes;
//! archives made by `zip -r` (symlinks followed) and `zip -r -y` (symlinks stored) extract with us. These tests
//! need the Debian packages `zip` and `unzip` (scripts/install-test-deps) and fail, not skip, without them.

use std::process::Command;

use runwright_archive::{
    extract, select_files, write_archive, ArchiveSpec, ExtractOptions, Format, Level, WriteOptions,
};

use crate::util::*;

fn all() -> ArchiveSpec {
    ArchiveSpec {
        paths: vec![".".into()],
        ..Default::default()
    }
}

#[test]
fn unzip_tests_and_extracts_our_archives() {
    require_tool("unzip");
    for (format, level) in [
        (Format::Zip, Level::Default),
        (Format::Zip, Level::Fastest),
        (Format::Zip, Level::Slowest),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let tree = every_kind_tree(dir.path(), 3 << 20);
        let sel = select_files(&tree, &all()).unwrap();
        let out = dir.path().join("ours.zip");
        let opts = WriteOptions {
            format,
            level,
            max_in_memory_entry: 1 << 20,
            ..Default::default()
        };
        write_archive(&sel, &out, &opts).unwrap();
        let t = run(Command::new("unzip").arg("-t").arg(&out));
        assert!(t.contains("No errors detected"), "{t}");
        let target = dir.path().join("by-unzip");
        run(Command::new("unzip")
            .arg("-q")
            .arg(&out)
            .arg("-d")
            .arg(&target));
        assert_eq!(snapshot(&tree, true), snapshot(&target, true), "{level:?}");
    }
}

#[test]
fn zipinfo_sees_gitlab_style_headers() {
    require_tool("unzip");
    let dir = tempfile::tempdir().unwrap();
    let tree = every_kind_tree(dir.path(), 1000);
    let sel = select_files(&tree, &all()).unwrap();
    let out = dir.path().join("ours.zip");
    write_archive(&sel, &out, &WriteOptions::default()).unwrap();
    let info = run(Command::new("zipinfo").arg(&out));
    // Unix modes as ls shows them, directories as `name/`, symlinks as `l`.
    assert!(
        info.lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("bin/run.sh")),
        "{info}"
    );
    assert!(
        info.lines()
            .any(|l| l.starts_with("drwx") && l.ends_with("empty-dir/")),
        "{info}"
    );
    assert!(
        info.lines()
            .any(|l| l.starts_with("lrwx") && l.ends_with("link-to-dir")),
        "{info}"
    );
    assert!(
        info.lines()
            .any(|l| l.starts_with("-r--r--r--") && l.ends_with("read-only.txt")),
        "{info}"
    );
    let v = run(Command::new("zipinfo")
        .arg("-v")
        .arg(&out)
        .arg("bin/run.sh"));
    assert!(
        v.contains("extended local time stamp") || v.contains("UT extra field"),
        "{v}"
    );
    assert!(v.contains("Unix UID/GID"), "{v}");
}

#[test]
fn we_extract_info_zip_archives_with_symlinks_stored() {
    require_tool("zip");
    let dir = tempfile::tempdir().unwrap();
    let tree = every_kind_tree(dir.path(), 2 << 20);
    let out = dir.path().join("infozip-y.zip");
    run(Command::new("zip")
        .current_dir(&tree)
        .args(["-q", "-r", "-y"])
        .arg(&out)
        .arg("."));
    let target = dir.path().join("x");
    extract(&out, &target, &ExtractOptions::default()).unwrap();
    assert_eq!(snapshot(&tree, true), snapshot(&target, true));
}

#[test]
fn we_extract_info_zip_archives_with_symlinks_followed() {
    require_tool("zip");
    let dir = tempfile::tempdir().unwrap();
    let tree = every_kind_tree(dir.path(), 2 << 20);
    let out = dir.path().join("infozip.zip");
    run(Command::new("zip")
        .current_dir(&tree)
        .args(["-q", "-r"])
        .arg(&out)
        .arg("."));
    let target = dir.path().join("x");
    extract(&out, &target, &ExtractOptions::default()).unwrap();
    // Without -y, zip stores what the links point at.
    let a = std::fs::read(tree.join("bin/run.sh")).unwrap();
    assert_eq!(std::fs::read(target.join("link-to-file")).unwrap(), a);
    assert!(std::fs::symlink_metadata(target.join("link-to-dir"))
        .unwrap()
        .is_dir());
    assert_eq!(
        std::fs::read(target.join("link-to-dir/日本語 ファイル.txt")).unwrap(),
        std::fs::read(tree.join("naïve/日本語 ファイル.txt")).unwrap()
    );
    let mut expect = snapshot(&tree, true);
    let mut got = snapshot(&target, true);
    for m in [&mut expect, &mut got] {
        m.retain(|k, _| !k.starts_with("link-to") && k != "bin/up-link");
    }
    assert_eq!(expect, got);
}
