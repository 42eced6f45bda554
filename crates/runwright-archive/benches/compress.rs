//! Archive and extract a generated tree with 1..N workers against Info-ZIP `zip -r` / `unzip` and
//! `tar --zstd`, in the same run, printing medians and ratios. A plain timing binary, not a timed test:
//!
//! ```sh
//! cargo bench -p runwright-archive --bench compress
//! ARCHIVE_BENCH_MIB=1024 ARCHIVE_BENCH_FILES=50000 ARCHIVE_BENCH_RUNS=3 cargo bench -p runwright-archive
//! ```
//!
//! See bench/archive/README.md for figures.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use runwright_archive::{
    extract, select_files, write_archive, ArchiveSpec, ExtractOptions, Format, Level, WriteOptions,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Mixed compressibility: a third text-like, a third random, a third half-and-half; sizes skewed small with a
/// few big files, like a build tree.
fn generate(root: &Path, total_mib: usize, files: usize) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let total = (total_mib as u64) << 20;
    let big = files / 100 + 1;
    let big_share = total / 2 / big as u64;
    let small_share = (total / 2) / (files - big).max(1) as u64;
    let words: &[&[u8]] = &[
        b"fn ", b"let ", b"return ", b"struct ", b"0x1f ", b"{\n", b"}\n", b"value", b"; ",
    ];
    for i in 0..files {
        let dir = root.join(format!("d{:03}/s{:02}", i % 200, (i / 200) % 25));
        std::fs::create_dir_all(&dir).unwrap();
        let size = if i < big {
            big_share
        } else {
            (small_share / 2) + next() % small_share.max(1)
        } as usize;
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("f{i}.dat"))).unwrap());
        let mut written = 0usize;
        let kind = i % 3;
        while written < size {
            let r = next();
            let chunk: Vec<u8> = match (kind, r % 2) {
                (0, _) | (2, 0) => words[(r % words.len() as u64) as usize].to_vec(),
                _ => r.to_le_bytes().to_vec(),
            };
            let n = chunk.len().min(size - written);
            f.write_all(&chunk[..n]).unwrap();
            written += n;
        }
    }
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}

fn sh(cmd: &mut Command) {
    let s = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(s.success(), "{cmd:?} failed");
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn main() {
    let mib = env("ARCHIVE_BENCH_MIB", 256);
    let files = env("ARCHIVE_BENCH_FILES", 10_000);
    let runs = env("ARCHIVE_BENCH_RUNS", 3);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let max_workers = env("ARCHIVE_BENCH_WORKERS", cores);
    let base = std::env::var_os("ARCHIVE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();
    let tree = dir.path().join("tree");
    println!(
        "generating {mib} MiB in {files} files under {} ...",
        tree.display()
    );
    generate(&tree, mib, files);
    let sel = select_files(
        &tree,
        &ArchiveSpec {
            paths: vec![".".into()],
            ..Default::default()
        },
    )
    .unwrap();
    println!(
        "{} entries; {cores} cores; median of {runs} runs",
        sel.entries.len()
    );

    let have_zip = Command::new("zip").arg("-v").output().is_ok();
    let have_tar = Command::new("tar").arg("--version").output().is_ok()
        && Command::new("zstd").arg("--version").output().is_ok();

    // Info-ZIP at its default level (6).
    let infozip = dir.path().join("infozip.zip");
    let t_zip = have_zip.then(|| {
        time(runs, || {
            let _ = std::fs::remove_file(&infozip);
            sh(Command::new("zip")
                .current_dir(&tree)
                .args(["-q", "-r", "-y"])
                .arg(&infozip)
                .arg("."));
        })
    });
    if let Some(t) = t_zip {
        println!(
            "{:<34} {:>8.2} s   {:>6} MiB",
            "Info-ZIP zip -r (level 6)",
            t.as_secs_f64(),
            size(&infozip) >> 20
        );
    }
    let tarzst = dir.path().join("t.tar.zst");
    let t_tar = have_tar.then(|| {
        time(runs, || {
            sh(Command::new("tar")
                .current_dir(&tree)
                .args(["--zstd", "-cf"])
                .arg(&tarzst)
                .arg("."));
        })
    });
    if let Some(t) = t_tar {
        println!(
            "{:<34} {:>8.2} s   {:>6} MiB",
            "tar --zstd -c",
            t.as_secs_f64(),
            size(&tarzst) >> 20
        );
    }

    let ours = dir.path().join("ours.zip");
    for (format, level) in [
        (Format::Zip, Level::Default),
        (Format::Zip, Level::Fast),
        (Format::ZipZstd, Level::Default),
        (Format::TarZstd, Level::Default),
    ] {
        for workers in 1..=max_workers {
            let opts = WriteOptions {
                format,
                level,
                workers,
                ..Default::default()
            };
            let t = time(runs, || {
                write_archive(&sel, &ours, &opts).unwrap();
            });
            let vs = t_zip
                .map(|z| format!("  {:.2}x vs Info-ZIP", z.as_secs_f64() / t.as_secs_f64()))
                .unwrap_or_default();
            println!(
                "{:<34} {:>8.2} s   {:>6} MiB{vs}",
                format!("runwright {format:?} {level:?} w={workers}"),
                t.as_secs_f64(),
                size(&ours) >> 20
            );
        }
    }

    // Extraction of the same (deflate, default level) archive.
    let opts = WriteOptions::default();
    write_archive(&sel, &ours, &opts).unwrap();
    let out = dir.path().join("x");
    let t_ours = time(runs, || {
        let _ = std::fs::remove_dir_all(&out);
        extract(&ours, &out, &ExtractOptions::default()).unwrap();
    });
    println!(
        "{:<34} {:>8.2} s",
        "runwright extract (zip)",
        t_ours.as_secs_f64()
    );
    if have_zip {
        let t = time(runs, || {
            let _ = std::fs::remove_dir_all(&out);
            sh(Command::new("unzip")
                .arg("-q")
                .arg(&ours)
                .arg("-d")
                .arg(&out));
        });
        println!(
            "{:<34} {:>8.2} s   ours {:.2}x faster",
            "Info-ZIP unzip",
            t.as_secs_f64(),
            t.as_secs_f64() / t_ours.as_secs_f64()
        );
    }
    if have_tar {
        let t = time(runs, || {
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out).unwrap();
            sh(Command::new("tar")
                .current_dir(&out)
                .args(["--zstd", "-xf"])
                .arg(&tarzst));
        });
        println!(
            "{:<34} {:>8.2} s   ours/tar = {:.2}",
            "tar --zstd -x",
            t.as_secs_f64(),
            t_ours.as_secs_f64() / t.as_secs_f64()
        );
    }
}
