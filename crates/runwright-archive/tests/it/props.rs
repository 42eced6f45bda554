//! Round trips of random file trees: whatever the tree (nesting, modes, contents, symlinks to files, to
//! directories and dangling, mtimes), writing it in each format and extracting it gives the same tree.

use std::path::Path;

use proptest::prelude::*;
use runwright_archive::{
    extract, select_files, write_archive, ArchiveSpec, ExtractOptions, Format, WriteOptions,
};

use crate::util::*;

#[derive(Debug, Clone)]
enum Kind {
    File {
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    /// A relative link to the entry with this index (modulo the tree size), or to a missing name.
    Link {
        to: usize,
        dangling: bool,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    path: Vec<String>,
    kind: Kind,
    mtime: i64,
}

fn entry() -> impl Strategy<Value = Entry> {
    let name = prop_oneof!["[a-c]{1,2}", "[a-z0-9._-]{1,12}", "[é日 x]{1,4}"]
        .prop_filter("`.` and `..` are not names", |n| n != "." && n != "..");
    let kind = prop_oneof![
        4 => (
            prop::collection::vec(any::<u8>(), 0..3000),
            prop::sample::select(vec![0o644u32, 0o755, 0o600, 0o444, 0o1755]),
        )
            .prop_map(|(data, mode)| Kind::File { data, mode }),
        1 => prop::sample::select(vec![0o755u32, 0o700, 0o750]).prop_map(|mode| Kind::Dir { mode }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(to, dangling)| Kind::Link { to, dangling }),
    ];
    (
        prop::collection::vec(name, 1..4),
        kind,
        1_000_000_000i64..2_000_000_000,
    )
        .prop_map(|(path, kind, mtime)| Entry { path, kind, mtime })
}

/// Creates the entries under `root`, skipping those that clash with an earlier one (a name below a file or a
/// link, a name taken). Returns the tree root.
fn build(root: &Path, entries: &[Entry]) -> std::path::PathBuf {
    let t = root.join("tree");
    std::fs::create_dir_all(&t).unwrap();
    let mut made: Vec<(Vec<String>, bool)> = Vec::new(); // (path, is_dir)
    let mut links = Vec::new();
    for e in entries {
        let p = t.join(e.path.join("/"));
        let blocked = (1..e.path.len()).any(|n| {
            let anc = t.join(e.path[..n].join("/"));
            std::fs::symlink_metadata(&anc).is_ok_and(|m| !m.is_dir())
        });
        if blocked || std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        match &e.kind {
            Kind::File { data, mode } => write(&p, data, *mode),
            Kind::Dir { .. } => std::fs::create_dir_all(&p).unwrap(),
            Kind::Link { .. } => {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                links.push(e.clone());
                continue;
            }
        }
        made.push((e.path.clone(), matches!(e.kind, Kind::Dir { .. })));
    }
    for e in &links {
        let Kind::Link { to, dangling } = e.kind else {
            continue;
        };
        let p = t.join(e.path.join("/"));
        if std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        // Relative to the link's directory, climbing with leading `..` only (what extraction accepts).
        let up = "../".repeat(e.path.len() - 1);
        let target = match made.get(to % made.len().max(1)) {
            Some((path, _)) if !dangling => format!("{up}{}", path.join("/")),
            _ => format!("{up}missing-{to}"),
        };
        std::os::unix::fs::symlink(target, &p).unwrap();
    }
    // Modes and mtimes last (deepest first), so creating children changes neither.
    for e in entries.iter().rev() {
        let p = t.join(e.path.join("/"));
        if let (Kind::Dir { mode }, Ok(m)) = (&e.kind, std::fs::symlink_metadata(&p)) {
            if m.is_dir() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
            }
        }
    }
    let mut all: Vec<_> = walkdir::WalkDir::new(&t)
        .min_depth(1)
        .contents_first(true)
        .into_iter()
        .map(|e| e.unwrap())
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.depth()));
    for (i, e) in all.iter().enumerate() {
        let mtime = entries
            .get(i % entries.len().max(1))
            .map_or(1_600_000_000, |e| e.mtime);
        set_mtime(e.path(), mtime);
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_survive_write_then_extract(
        entries in prop::collection::vec(entry(), 0..24),
        format in prop::sample::select(vec![Format::Zip, Format::ZipZstd, Format::TarZstd]),
        workers in 1usize..3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let tree = build(dir.path(), &entries);
        let spec = ArchiveSpec { paths: vec![".".into()], ..Default::default() };
        let sel = select_files(&tree, &spec).unwrap();
        let out = dir.path().join(format!("out{}", format.extension()));
        let opts = WriteOptions { format, workers, max_in_memory_entry: 1024, ..Default::default() };
        write_archive(&sel, &out, &opts).unwrap();
        let target = dir.path().join("extracted");
        let stats = extract(&out, &target, &ExtractOptions::default()).unwrap();
        let want = snapshot(&tree, true);
        prop_assert_eq!(&want, &snapshot(&target, true));
        let links = want.values().filter(|n| matches!(n, Node::Link { .. })).count() as u64;
        let files = want.values().filter(|n| matches!(n, Node::File { .. })).count() as u64;
        prop_assert_eq!((stats.files, stats.symlinks), (files, links));
    }
}
