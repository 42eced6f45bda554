//! Test helpers: a tree with every file kind, a tree comparer, a hand-made zip builder for hostile archives,
//! and the check for Info-ZIP tools (which fails loudly, never skips, when they are missing).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fails with a clear message when an external tool the test needs is absent.
pub fn require_tool(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success());
    assert!(
        matches!(ok, Ok(true)),
        "this test needs Info-ZIP `{tool}`, which is not installed: run scripts/install-test-deps \
         (it installs the Debian packages `zip` and `unzip`)"
    );
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn write(p: &Path, data: &[u8], mode: u32) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::File::create(p).unwrap().write_all(data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Deterministic pseudo-random bytes (xorshift), compressible in parts.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (x >> 60) < 8 {
            v.extend_from_slice(&x.to_le_bytes());
        } else {
            v.extend_from_slice(b"compressible text ");
        }
    }
    v.truncate(len);
    v
}

/// A tree with every kind: empty dir, empty file, a file bigger than `big` bytes, executable bits, symlinks to
/// a file and to a directory, UTF-8 names, deep nesting. Returns the tree root (`<dir>/tree`).
pub fn every_kind_tree(dir: &Path, big: usize) -> PathBuf {
    let t = dir.join("tree");
    fs::create_dir_all(t.join("empty-dir")).unwrap();
    write(&t.join("empty-file"), b"", 0o644);
    write(&t.join("big.bin"), &data(big, 7), 0o644);
    write(&t.join("bin/run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    write(&t.join("bin/private"), b"secret", 0o600);
    write(&t.join("read-only.txt"), b"ro", 0o444);
    write(
        &t.join("naïve/日本語 ファイル.txt"),
        "ünïcödé".as_bytes(),
        0o644,
    );
    let mut deep = t.join("deep");
    for i in 0..24 {
        deep = deep.join(format!("level{i}"));
    }
    write(&deep.join("leaf.txt"), b"deep leaf", 0o644);
    for i in 0..40 {
        write(
            &t.join(format!("many/f{i:02}.txt")),
            &data(1000 + i * 97, i as u64),
            0o644,
        );
    }
    std::os::unix::fs::symlink("bin/run.sh", t.join("link-to-file")).unwrap();
    std::os::unix::fs::symlink("naïve", t.join("link-to-dir")).unwrap();
    std::os::unix::fs::symlink("../empty-file", t.join("bin/up-link")).unwrap();
    // Fixed mtimes so comparisons are exact.
    for e in walkdir::WalkDir::new(&t).contents_first(true) {
        let e = e.unwrap();
        set_mtime(e.path(), 1_600_000_000 + (e.depth() as i64) * 3600);
    }
    t
}

pub fn set_mtime(p: &Path, t: i64) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let ts = TimeSpec::new(t, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &ts,
        &ts,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        len: u64,
        hash: u64,
        mtime: i64,
    },
    Link {
        target: PathBuf,
    },
}

fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a: enough to compare contents in tests.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Everything under `root` (relative paths), for comparison. `mtimes` includes file mtimes.
pub fn snapshot(root: &Path, mtimes: bool) -> BTreeMap<String, Node> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let node = if md.file_type().is_symlink() {
            Node::Link {
                target: fs::read_link(e.path()).unwrap(),
            }
        } else if md.is_dir() {
            Node::Dir {
                mode: md.mode() & 0o7777,
            }
        } else {
            let bytes = fs::read(e.path()).unwrap();
            Node::File {
                mode: md.mode() & 0o7777,
                len: bytes.len() as u64,
                hash: hash(&bytes),
                mtime: if mtimes { md.mtime() } else { 0 },
            }
        };
        m.insert(rel, node);
    }
    m
}

/// Names in `dir` (sorted), to check nothing is left behind.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// A hand-made zip entry: every header field under the test's control.
pub struct RawEntry {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    /// Uncompressed size written in the headers (a lie if it differs from `data.len()`).
    pub declared: u64,
    pub crc: Option<u32>,
    /// Unix mode including the type bits (`0o100644`, `0o120777`, `0o040755`).
    pub mode: u32,
}

impl RawEntry {
    pub fn file(name: &str, data: &[u8]) -> RawEntry {
        RawEntry {
            name: name.into(),
            data: data.to_vec(),
            declared: data.len() as u64,
            crc: None,
            mode: 0o100_644,
        }
    }
    pub fn dir(name: &str) -> RawEntry {
        RawEntry {
            name: name.into(),
            data: Vec::new(),
            declared: 0,
            crc: None,
            mode: 0o040_755,
        }
    }
    pub fn symlink(name: &str, target: &str) -> RawEntry {
        RawEntry {
            name: name.into(),
            data: target.as_bytes().to_vec(),
            declared: target.len() as u64,
            crc: None,
            mode: 0o120_777,
        }
    }
}

/// Builds a stored-only zip from raw entries (local headers, central directory, end record).
pub fn raw_zip(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let crc = e.crc.unwrap_or_else(|| crc32fast::hash(&e.data));
        let csize = e.data.len() as u32;
        let usize_ = e.declared.min(u32::MAX as u64) as u32;
        // Local header.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes()); // version needed
        out.extend_from_slice(&0x0800u16.to_le_bytes()); // UTF-8 names
        out.extend_from_slice(&0u16.to_le_bytes()); // stored
        out.extend_from_slice(&0u16.to_le_bytes()); // time
        out.extend_from_slice(&0x5021u16.to_le_bytes()); // date 2020-01-01
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&csize.to_le_bytes());
        out.extend_from_slice(&usize_.to_le_bytes());
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&e.name);
        out.extend_from_slice(&e.data);
        // Central directory record.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes()); // made by Unix
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&0x0800u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0x5021u16.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&csize.to_le_bytes());
        central.extend_from_slice(&usize_.to_le_bytes());
        central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes()); // extra
        central.extend_from_slice(&0u16.to_le_bytes()); // comment
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attrs
        central.extend_from_slice(&(e.mode << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&e.name);
    }
    let cd_offset = out.len() as u32;
    let cd_len = central.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}
