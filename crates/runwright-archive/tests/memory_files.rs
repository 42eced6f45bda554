//! What a file costs the process that archives it (issue 17 item 3), in its own test binary so that no other
//! test's allocations move the peak RSS (`VmHWM`) measured here.
// The workspace denies printing (libraries log or return errors); prints its figures for `--nocapture`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use runwright_archive::{
    extract, select_files, write_archive, ArchiveSpec, ExtractOptions, Level, WriteOptions,
};

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// What one more file may cost while its archive is selected and written: its name in the selection's arena
/// plus a fixed record (~100 bytes with these names), and nothing in the zip writer, whose central directory
/// goes to a temporary file. Before issue 17 a file cost ~800 bytes (307 MiB for 400,000 files in the service):
/// a `String` and a `PathBuf` in a `BTreeMap`, then a `SelectedEntry` each, then `zip`'s record of each entry.
const BOUND_BYTES_PER_FILE: u64 = 250;

#[test]
fn selecting_and_zipping_a_file_costs_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("out");
    let n = 100_000u64;
    for d in 0..100 {
        std::fs::create_dir_all(tree.join(format!("d{d:03}"))).unwrap();
    }
    for i in 0..n {
        std::fs::File::create(tree.join(format!("d{:03}/f{i:06}.txt", i % 100))).unwrap();
    }
    let base = vm_hwm_kib();
    let sel = select_files(
        dir.path(),
        &ArchiveSpec {
            paths: vec!["out/".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let selected = vm_hwm_kib();
    let out = dir.path().join("a.zip");
    // Stored: what is measured is the per-entry cost, not the compressors'.
    let opts = WriteOptions {
        workers: 2,
        level: Level::Fastest,
        ..Default::default()
    };
    write_archive(&sel, &out, &opts).unwrap();
    let written = vm_hwm_kib();
    let per = |kib: u64| kib * 1024 / n;
    let (selection, total) = (
        per(selected.saturating_sub(base)),
        per(written.saturating_sub(base)),
    );
    eprintln!("selection: {selection} B/file, selection + zip: {total} B/file");
    assert_eq!(sel.len() as u64, n + 101);
    assert!(
        total <= BOUND_BYTES_PER_FILE,
        "a file cost {total} bytes (selection alone {selection}), over {BOUND_BYTES_PER_FILE}"
    );
    // Extracting reads the whole index (`zip`'s own records, and ours of what was staged): reported, not bounded
    // per entry here; `max_archive_files` bounds the count.
    drop(sel);
    extract(&out, &dir.path().join("x"), &ExtractOptions::default()).unwrap();
    eprintln!(
        "extraction: {} B/entry over the peak so far",
        per(vm_hwm_kib().saturating_sub(written))
    );
}
