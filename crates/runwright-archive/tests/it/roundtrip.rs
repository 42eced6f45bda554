//! Round trips of a tree with every file kind through each format, and determinism of the parallel writer.

use runwright_archive::{
    extract, select_files, write_archive, ArchiveSpec, ExtractOptions, Format, Level, WriteOptions,
};

use crate::util::*;

fn spec(paths: &[&str]) -> ArchiveSpec {
    ArchiveSpec {
        paths: paths.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn round_trip(format: Format, level: Level, workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let tree = every_kind_tree(dir.path(), 3 << 20);
    let sel = select_files(&tree, &spec(&["."])).unwrap();
    assert!(sel.warnings.is_empty(), "{:?}", sel.warnings);
    let out = dir.path().join(format!("out{}", format.extension()));
    // A small in-memory cap so the big file goes through a spill file and the rest through memory.
    let opts = WriteOptions {
        format,
        level,
        workers,
        max_in_memory_entry: 1 << 20,
        ..Default::default()
    };
    let stats = write_archive(&sel, &out, &opts).unwrap();
    assert_eq!(stats.entries as usize, sel.len());
    if matches!(format, Format::Zip | Format::ZipZstd) {
        assert!(stats.spilled_entries >= 1, "{stats:?}");
    }
    let target = dir.path().join("extracted");
    let x = extract(&out, &target, &ExtractOptions::default()).unwrap();
    assert!(x.files > 40 && x.symlinks == 3, "{x:?}");
    assert_eq!(snapshot(&tree, true), snapshot(&target, true));
    // Directory mtimes too.
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(tree.join("empty-dir")).unwrap().mtime();
    let b = std::fs::metadata(target.join("empty-dir")).unwrap().mtime();
    assert_eq!(a, b);
}

#[test]
fn zip_round_trip_every_kind() {
    round_trip(Format::Zip, Level::Default, 3);
}

#[test]
fn zip_round_trip_stored_fastest() {
    round_trip(Format::Zip, Level::Fastest, 2);
}

#[test]
fn zipzstd_round_trip_every_kind() {
    round_trip(Format::ZipZstd, Level::Default, 2);
}

#[test]
fn tarzstd_round_trip_every_kind() {
    round_trip(Format::TarZstd, Level::Fast, 2);
}

#[test]
fn parallel_output_is_identical_to_sequential() {
    let dir = tempfile::tempdir().unwrap();
    let tree = every_kind_tree(dir.path(), 2 << 20);
    let sel = select_files(&tree, &spec(&["."])).unwrap();
    let mut outputs = Vec::new();
    for (workers, max_mem, budget) in [
        (1, 8 << 20, 64 << 20),
        (4, 8 << 20, 64 << 20),
        (3, 4096, 64 << 20),
        (2, 8 << 20, 10_000),
    ] {
        for format in [Format::Zip, Format::ZipZstd] {
            let out = dir
                .path()
                .join(format!("w{workers}-{max_mem}-{budget}-{format:?}.zip"));
            let opts = WriteOptions {
                format,
                workers,
                max_in_memory_entry: max_mem,
                memory_budget: budget,
                ..Default::default()
            };
            write_archive(&sel, &out, &opts).unwrap();
            outputs.push((format, std::fs::read(&out).unwrap()));
        }
    }
    for (format, bytes) in &outputs[2..] {
        let first = &outputs.iter().find(|(f, _)| f == format).unwrap().1;
        assert!(
            first == bytes,
            "{format:?}: output differs between worker counts / spill settings"
        );
    }
}

#[test]
fn gzip_writes_one_member_per_file_with_names() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("reports/junit.xml"),
        b"<testsuite/>",
        0o644,
    );
    write(&dir.path().join("reports/b.xml"), b"<b/>", 0o644);
    let sel = select_files(dir.path(), &spec(&["reports/*.xml"])).unwrap();
    let out = dir.path().join("junit.gz");
    write_archive(
        &sel,
        &out,
        &WriteOptions {
            format: Format::Gzip,
            ..Default::default()
        },
    )
    .unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let mut d = flate2::read::MultiGzDecoder::new(&bytes[..]);
    let mut all = String::new();
    std::io::Read::read_to_string(&mut d, &mut all).unwrap();
    assert_eq!(all, "<b/><testsuite/>");
    let first = flate2::read::GzDecoder::new(&bytes[..]);
    let h = first.header().unwrap();
    assert_eq!(h.filename(), Some(&b"b.xml"[..]));
    assert_eq!(h.comment(), Some(&b"reports/b.xml"[..]));
    // `gunzip` agrees (Debian always has gzip).
    let text = run(std::process::Command::new("gzip").arg("-dc").arg(&out));
    assert_eq!(text, "<b/><testsuite/>");
}

#[test]
fn extract_into_existing_target_overwrites_and_keeps_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write(&src.join("a/new.txt"), b"new", 0o644);
    write(&src.join("same.txt"), b"from archive", 0o644);
    let sel = select_files(&src, &spec(&["a", "same.txt"])).unwrap();
    let out = dir.path().join("c.zip");
    write_archive(&sel, &out, &WriteOptions::default()).unwrap();
    let target = dir.path().join("project");
    write(&target.join("same.txt"), b"old", 0o644);
    write(&target.join("a/keep.txt"), b"keep", 0o644);
    write(&target.join("untouched"), b"u", 0o644);
    extract(&out, &target, &ExtractOptions::default()).unwrap();
    assert_eq!(
        std::fs::read(target.join("same.txt")).unwrap(),
        b"from archive"
    );
    assert_eq!(std::fs::read(target.join("a/keep.txt")).unwrap(), b"keep");
    assert_eq!(std::fs::read(target.join("a/new.txt")).unwrap(), b"new");
    assert_eq!(
        listing(&target),
        ["a", "a/keep.txt", "a/new.txt", "same.txt", "untouched"]
    );
}

#[test]
fn setuid_bits_dropped_unless_asked() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("suid"), b"x", 0o4755);
    let sel = select_files(dir.path(), &spec(&["suid"])).unwrap();
    let out = dir.path().join("s.zip");
    write_archive(&sel, &out, &WriteOptions::default()).unwrap();
    extract(&out, &dir.path().join("t1"), &ExtractOptions::default()).unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("t1/suid"))
            .unwrap()
            .mode()
            & 0o7777,
        0o755
    );
    let keep = ExtractOptions {
        keep_setid: true,
        ..Default::default()
    };
    extract(&out, &dir.path().join("t2"), &keep).unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("t2/suid"))
            .unwrap()
            .mode()
            & 0o7777,
        0o4755
    );
}

#[test]
fn more_than_65535_entries_use_zip64() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    for d in 0..66 {
        let sub = tree.join(format!("d{d:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..1000 {
            std::fs::File::create(sub.join(format!("{f:03}"))).unwrap();
        }
    }
    let sel = select_files(
        &tree,
        &ArchiveSpec {
            paths: vec![".".into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(sel.len(), 66_066);
    let out = dir.path().join("many.zip");
    write_archive(&sel, &out, &WriteOptions::default()).unwrap();
    let x = extract(&out, &dir.path().join("x"), &ExtractOptions::default()).unwrap();
    assert_eq!(x.files, 66_000);
    let out = {
        require_tool("unzip");
        std::process::Command::new("unzip")
    }
    .arg("-tqq")
    .arg(&out)
    .output();
    let out = out.expect("this test needs Info-ZIP `unzip`: run scripts/install-test-deps");
    assert!(
        out.status.success(),
        "unzip -t: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn extracted_entries_get_the_owner_asked_for_and_existing_ones_keep_theirs() {
    use std::os::unix::fs::MetadataExt;
    // As root (CI) hand everything to nobody; otherwise only our own ids are allowed, which still runs the code.
    let (uid, gid) = if nix::unistd::Uid::effective().is_root() {
        (65534, 65534)
    } else {
        (
            nix::unistd::Uid::effective().as_raw(),
            nix::unistd::Gid::effective().as_raw(),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let tree = every_kind_tree(dir.path(), 1 << 16);
    let sel = select_files(&tree, &spec(&["."])).unwrap();
    let out = dir.path().join("out.zip");
    write_archive(&sel, &out, &WriteOptions::default()).unwrap();
    let target = dir.path().join("extracted");
    std::fs::create_dir_all(&target).unwrap();
    let before = std::fs::metadata(&target).unwrap();
    let opts = ExtractOptions {
        owner: Some((uid, gid)),
        ..Default::default()
    };
    extract(&out, &target, &opts).unwrap();
    let mut checked = 0;
    for e in walkdir::WalkDir::new(&target).min_depth(1) {
        let e = e.unwrap();
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        assert_eq!((md.uid(), md.gid()), (uid, gid), "{}", e.path().display());
        checked += 1;
    }
    assert!(checked > 40, "{checked}");
    // The target itself existed before: it is not ours to give away.
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
}
