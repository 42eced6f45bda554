//! A corpus of hostile archives, each refused with its own message and leaving nothing behind: neither in
//! the target (which already holds a file of its own) nor beside it.

use std::path::Path;

use runwright_archive::{extract, ExtractOptions, Format};

use crate::util::*;

/// Extracts `bytes` (as `name`) into a target holding `keep.txt`; asserts failure with `expect` in the message
/// and that the target and its parent are as before.
fn refused(bytes: &[u8], expect: &str) {
    refused_with(bytes, expect, &ExtractOptions::default());
}

fn refused_with(bytes: &[u8], expect: &str, opts: &ExtractOptions) {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let archive = outside.join("evil.archive");
    std::fs::write(&archive, bytes).unwrap();
    let target = outside.join("project");
    write(&target.join("keep.txt"), b"keep", 0o644);
    let before_parent = listing(dir.path());
    let err = extract(&archive, &target, opts).expect_err("hostile archive accepted");
    let msg = err.to_string();
    assert!(msg.contains(expect), "message {msg:?} lacks {expect:?}");
    assert!(
        msg.contains("evil.archive"),
        "message {msg:?} does not name the archive"
    );
    assert_eq!(listing(&target), ["keep.txt"], "target changed");
    assert_eq!(std::fs::read(target.join("keep.txt")).unwrap(), b"keep");
    assert_eq!(
        listing(dir.path()),
        before_parent,
        "something written beside the target"
    );
    assert!(!Path::new("/tmp/runwright-zip-slip").exists());
}

#[test]
fn zip_slip_dotdot() {
    let z = raw_zip(&[
        RawEntry::file("ok.txt", b"fine"),
        RawEntry::file("../escaped.txt", b"evil"),
    ]);
    refused(&z, "path contains '..'");
    let z = raw_zip(&[RawEntry::file("a/../../escaped.txt", b"evil")]);
    refused(&z, "path contains '..'");
}

#[test]
fn absolute_path() {
    let z = raw_zip(&[RawEntry::file("/tmp/runwright-zip-slip", b"evil")]);
    refused(&z, "absolute path");
}

#[test]
fn symlink_then_file_through_it() {
    let z = raw_zip(&[
        RawEntry::symlink("link", "."),
        RawEntry::file("link/x.txt", b"evil"),
    ]);
    refused(&z, "is a symlink from this archive");
    // Even when the link itself would be allowed to point out.
    let z = raw_zip(&[
        RawEntry::symlink("link", "/tmp"),
        RawEntry::file("link/runwright-zip-slip", b"evil"),
    ]);
    refused_with(
        &z,
        "is a symlink from this archive",
        &ExtractOptions {
            allow_external_symlinks: true,
            ..Default::default()
        },
    );
}

#[test]
fn symlink_pointing_out() {
    refused(
        &raw_zip(&[RawEntry::symlink("up", "../..")]),
        "symlink points outside the target",
    );
    refused(
        &raw_zip(&[RawEntry::symlink("a/b/up", "../../../x")]),
        "symlink points outside the target",
    );
    refused(
        &raw_zip(&[RawEntry::symlink("abs", "/etc/passwd")]),
        "symlink points outside the target",
    );
    // Lexically inside, but `x/..` climbs from wherever x points: not accepted.
    refused(
        &raw_zip(&[
            RawEntry::symlink("x", "."),
            RawEntry::symlink("y", "x/../.."),
        ]),
        "not normalised",
    );
}

#[test]
fn size_lies() {
    let mut more = RawEntry::file("more.txt", b"0123456789");
    more.declared = 4;
    refused(&raw_zip(&[more]), "declared");
    let mut less = RawEntry::file("less.txt", b"0123");
    less.declared = 10;
    refused(&raw_zip(&[less]), "declared");
}

#[test]
fn crc_mismatch() {
    let mut e = RawEntry::file("bad-crc.txt", b"0123456789");
    e.crc = Some(0xdead_beef);
    refused(
        &raw_zip(&[RawEntry::file("first.txt", b"ok"), e]),
        "bad-crc.txt",
    );
}

#[test]
fn duplicate_entries() {
    let z = raw_zip(&[
        RawEntry::file("dup.txt", b"one"),
        RawEntry::file("dup.txt", b"two"),
    ]);
    refused(&z, "duplicate entry");
    let z = raw_zip(&[
        RawEntry::file("a/b", b"one"),
        RawEntry::file("a/./b", b"two"),
    ]);
    refused(&z, "duplicate entry");
}

#[test]
fn file_then_file_below_it() {
    let z = raw_zip(&[RawEntry::file("f", b"one"), RawEntry::file("f/g", b"two")]);
    refused(&z, "is a file from this archive");
}

#[test]
fn huge_declared_size() {
    let mut e = RawEntry::file("huge.bin", b"tiny");
    e.declared = u32::MAX as u64;
    let z = raw_zip(&[e]);
    refused_with(
        &z,
        "declares 4294967295 bytes",
        &ExtractOptions {
            max_total_size: Some(1 << 30),
            ..Default::default()
        },
    );
}

#[test]
fn truncated_zip() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("t/a.bin"), &data(200_000, 3), 0o644);
    let sel = runwright_archive::select_files(
        &dir.path().join("t"),
        &runwright_archive::ArchiveSpec {
            paths: vec![".".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let out = dir.path().join("good.zip");
    runwright_archive::write_zip(&sel, &out, &Default::default()).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    refused(&bytes[..bytes.len() / 2], "not a readable archive");
    // Also a truncated tar.zst.
    let out = dir.path().join("good.tar.zst");
    let opts = runwright_archive::WriteOptions {
        format: Format::TarZstd,
        ..Default::default()
    };
    runwright_archive::write_archive(&sel, &out, &opts).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    refused(&bytes[..bytes.len() / 2], "evil.archive");
}

#[test]
fn not_an_archive() {
    refused(b"hello, world", "neither zip nor zstd");
}

#[test]
fn nul_in_name() {
    refused(&raw_zip(&[RawEntry::file("a\0b", b"x")]), "NUL");
}

#[test]
fn missing_target_is_not_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("evil.zip");
    std::fs::write(
        &archive,
        raw_zip(&[RawEntry::file("ok", b"1"), RawEntry::file("../x", b"2")]),
    )
    .unwrap();
    let target = dir.path().join("new-target");
    assert!(extract(&archive, &target, &ExtractOptions::default()).is_err());
    assert!(!target.exists());
    assert_eq!(listing(dir.path()), ["evil.zip"]);
}

#[test]
fn existing_symlink_in_target_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let target = dir.path().join("project");
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("sub")).unwrap();
    let archive = dir.path().join("a.zip");
    std::fs::write(
        &archive,
        raw_zip(&[RawEntry::dir("sub/"), RawEntry::file("sub/file", b"x")]),
    )
    .unwrap();
    extract(&archive, &target, &ExtractOptions::default()).unwrap();
    assert!(std::fs::symlink_metadata(target.join("sub"))
        .unwrap()
        .is_dir());
    assert_eq!(listing(&outside), Vec::<String>::new());
    assert_eq!(std::fs::read(target.join("sub/file")).unwrap(), b"x");
}

/// A directory of the project swapped for a symlink after the selection (a job's process racing the
/// archiver): writing fails instead of reading the file of the same name outside the project, in every
/// format.
#[test]
fn a_directory_swapped_for_a_symlink_after_selection_is_not_read_through() {
    use runwright_archive::{select_files, write_archive, ArchiveSpec, WriteOptions};
    for format in [Format::Zip, Format::TarZstd, Format::Gzip] {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        let outside = dir.path().join("outside");
        write(&project.join("d/f.txt"), b"inside", 0o644);
        write(&outside.join("f.txt"), b"OUTSIDE-SECRET", 0o644);
        let spec = ArchiveSpec {
            paths: vec![if format == Format::Gzip {
                "d/f.txt"
            } else {
                "d/"
            }
            .into()],
            ..Default::default()
        };
        let selection = select_files(&project, &spec).unwrap();
        std::fs::rename(project.join("d"), project.join("d.real")).unwrap();
        std::os::unix::fs::symlink(&outside, project.join("d")).unwrap();
        let out = dir.path().join("out.archive");
        let opts = WriteOptions {
            format,
            ..Default::default()
        };
        let err = write_archive(&selection, &out, &opts).expect_err("read through the symlink");
        assert!(err.to_string().contains("f.txt"), "{format:?}: {err}");
        assert!(!out.exists(), "{format:?}: no archive left");
    }
}
