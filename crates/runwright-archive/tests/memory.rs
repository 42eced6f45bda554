//! Bounded memory, in its own test binary so that no other test's allocations pollute the
//! process-wide peak RSS (`VmHWM`) this measures.
// The workspace denies printing (libraries log or return errors); prints its figures for `--nocapture`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;

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

/// 1 MiB blocks: mostly zeros, every eighth pseudo-random ("sparse-ish").
fn write_sparse_ish(path: &std::path::Path, mib: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for i in 0..mib {
        if i % 8 == 0 {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
        } else {
            block.fill(0);
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

/// The bound stated in the crate docs: the 64 MiB budget for waiting in-memory entries, plus per-worker
/// compressor state and buffers. A 300 MiB file and 40 MiB of smaller files must not move the peak RSS by more.
const BOUND_MIB: u64 = 96;

#[test]
fn peak_rss_growth_stays_bounded_while_compressing_300_mib() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    write_sparse_ish(&tree.join("big.bin"), 300);
    for i in 0..10 {
        write_sparse_ish(&tree.join(format!("mid{i}.bin")), 4);
    }
    let sel = select_files(
        &tree,
        &ArchiveSpec {
            paths: vec![".".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let before = vm_hwm_kib();
    let out = dir.path().join("big.zip");
    let opts = WriteOptions {
        level: Level::Fast,
        workers: 4,
        ..Default::default()
    };
    let stats = write_archive(&sel, &out, &opts).unwrap();
    let after = vm_hwm_kib();
    let growth_mib = after.saturating_sub(before) / 1024;
    assert_eq!(stats.uncompressed_bytes, 340 << 20);
    assert!(stats.spilled_entries >= 1, "{stats:?}");
    eprintln!("write: peak RSS growth {growth_mib} MiB, {stats:?}");
    assert!(
        growth_mib < BOUND_MIB,
        "peak RSS grew by {growth_mib} MiB (before {before} KiB, after {after} KiB), bound {BOUND_MIB} MiB"
    );
    // And extraction streams too.
    let before = vm_hwm_kib();
    let x = extract(&out, &dir.path().join("x"), &ExtractOptions::default()).unwrap();
    let growth_mib = vm_hwm_kib().saturating_sub(before) / 1024;
    assert_eq!(x.bytes, 340 << 20);
    eprintln!("extract: peak RSS growth {growth_mib} MiB");
    assert!(
        growth_mib < BOUND_MIB,
        "extraction grew peak RSS by {growth_mib} MiB"
    );
}
