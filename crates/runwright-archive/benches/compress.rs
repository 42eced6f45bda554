//! Archive and extract a generated tree with 1..N workers against Info-ZIP `zip -r` / `unzip` and
//! `tar --zstd`, in the same run, printing median time, median peak RSS and ratios. A plain timing binary, not a
//! timed test:
//!
//! ```sh
//! cargo bench -p runwright-archive --bench compress
//! ARCHIVE_BENCH_MIB=1024 ARCHIVE_BENCH_FILES=50000 ARCHIVE_BENCH_RUNS=3 cargo bench -p runwright-archive --bench compress
//! ```
//!
//! Every measurement, ours and the external tools', is one child process: the time is the wall clock from spawn
//! to `wait4(2)`, the peak memory is that child's `rusage.ru_maxrss` from the same `wait4`. runwright's own
//! archiving and extraction run in this binary re-executed in worker mode (`ARCHIVE_BENCH_WORKER`), one
//! operation per process. See bench/archive/README.md for the method and figures.
// The workspace denies printing (libraries log or return errors); a bench: its output is its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::libc;
use runwright_archive::{
    extract, select_files, write_archive, ArchiveSpec, ExtractOptions, Format, Level, WriteOptions,
};

/// `<op>:<workers>:<source>:<output>`, where `<op>` is `extract` or `<format>-<level>` (`zip-default`,
/// `zip-fast`, `zipzstd-default`, `tarzstd-default`, ...). Archiving selects `.` under `<source>` and writes
/// `<output>`; extraction unpacks the archive `<source>` into `<output>`.
const WORKER_ENV: &str = runwright_static::env_vars::ARCHIVE_BENCH_WORKER;

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
            let bytes = r.to_le_bytes();
            let chunk: &[u8] = match (kind, r % 2) {
                (0, _) | (2, 0) => words[(r % words.len() as u64) as usize],
                _ => &bytes,
            };
            let n = chunk.len().min(size - written);
            f.write_all(&chunk[..n]).unwrap();
            written += n;
        }
    }
}

/// Worker mode: exactly one archiving or extraction, then exit.
fn worker(spec: &str) {
    let mut parts = spec.splitn(4, ':');
    let (Some(op), Some(workers), Some(src), Some(out)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("{WORKER_ENV}={spec}: want <op>:<workers>:<source>:<output>");
    };
    let workers: usize = workers.parse().expect("worker count");
    let (src, out) = (Path::new(src), Path::new(out));
    if op == "extract" {
        extract(src, out, &ExtractOptions::default()).unwrap();
        return;
    }
    let (format, level) = op.split_once('-').expect("<format>-<level>");
    let opts = WriteOptions {
        format: Format::parse(format).expect("format"),
        level: Level::parse(level),
        workers,
        ..Default::default()
    };
    let sel = select_files(
        src,
        &ArchiveSpec {
            paths: vec![".".into()],
            ..Default::default()
        },
    )
    .unwrap();
    write_archive(&sel, out, &opts).unwrap();
}

#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    /// `ru_maxrss` of the child, KiB on Linux.
    rss_kib: u64,
}

/// Runs `cmd` as a child, waits for it with `wait4(2)` and returns its wall time and peak RSS.
fn measure(cmd: &mut Command) -> Sample {
    cmd.stdin(Stdio::null());
    let start = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain integers, for which all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: plain syscall on our own child, writing into locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4 {cmd:?}: {e}"
        );
    }
    let secs = start.elapsed().as_secs_f64();
    // Reaped above: the `Child` must not be waited for again.
    drop(child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed (wait status {status:#x})"
    );
    Sample {
        secs,
        rss_kib: ru.ru_maxrss as u64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// This process's own peak RSS (KiB). A child's `ru_maxrss` starts from the high-water mark of the memory it was
/// forked from, so the parent stays small (it never holds the selection) and reports this floor.
fn own_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[derive(Clone, Copy, PartialEq)]
enum Ratio {
    /// Archiving: the baseline's time over this line's ("× faster than Info-ZIP").
    VsZip,
    /// Extraction: this line's time over tar's ("time / tar").
    VsTar,
    None,
}

/// One line of the table: a command run once per round, measured the same way whatever it is.
struct Line {
    label: String,
    /// Run before each measurement, untimed: removes the previous output.
    prep: Box<dyn Fn()>,
    cmd: Box<dyn Fn() -> Command>,
    /// The archive written (for its size), if any.
    output: Option<PathBuf>,
    ratio: Ratio,
    samples: Vec<Sample>,
}

/// Measures every line `runs` times, round-robin (each round starting one line later), so that a change in
/// the machine's load hits all lines alike. Every measurement is preceded by its `prep` and a `sync(2)`, so no
/// line pays for writing back another's output.
fn run_rounds(lines: &mut [Line], runs: usize, loads: &mut Vec<f64>) {
    let n = lines.len();
    for round in 0..runs {
        for k in 0..n {
            let line = &mut lines[(k + round) % n];
            (line.prep)();
            // SAFETY: no arguments, no memory touched.
            unsafe { libc::sync() };
            loads.push(load1());
            let s = measure(&mut (line.cmd)());
            eprintln!(
                "  [{}/{runs}] {:<36} {:>8.2} s {:>8.1} MiB",
                round + 1,
                line.label,
                s.secs,
                s.rss_kib as f64 / 1024.0
            );
            line.samples.push(s);
        }
    }
}

fn print_table(lines: &[Line]) {
    let zip = lines
        .iter()
        .find(|l| l.label.starts_with("Info-ZIP zip"))
        .map(|l| median(l.samples.iter().map(|s| s.secs).collect()));
    let tar = lines
        .iter()
        .find(|l| l.label.starts_with("tar --zstd -x"))
        .map(|l| median(l.samples.iter().map(|s| s.secs).collect()));
    println!("| what | median time | runs (s) | median peak RSS | size | ratio |");
    println!("|---|--:|---|--:|--:|---|");
    for l in lines {
        let t = median(l.samples.iter().map(|s| s.secs).collect());
        let rss = median(l.samples.iter().map(|s| s.rss_kib as f64).collect()) / 1024.0;
        let runs: Vec<String> = l.samples.iter().map(|s| format!("{:.1}", s.secs)).collect();
        let size = l
            .output
            .as_deref()
            .map(|p| format!("{:.0} MiB", size(p) as f64 / f64::from(1 << 20)))
            .unwrap_or_default();
        let baseline = l.label.starts_with("Info-ZIP zip") || l.label.starts_with("tar --zstd -x");
        let ratio = match (l.ratio, zip, tar) {
            _ if baseline => "baseline".to_string(),
            (Ratio::VsZip, Some(z), _) => format!("{:.2}× faster than zip", z / t),
            (Ratio::VsTar, _, Some(x)) => format!("time/tar {:.2}", t / x),
            _ => String::new(),
        };
        println!(
            "| {} | {t:.2} s | {} | {rss:.1} MiB | {size} | {ratio} |",
            l.label,
            runs.join(" / ")
        );
    }
}

fn main() {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        worker(&spec);
        return;
    }
    let mib = env(runwright_static::env_vars::ARCHIVE_BENCH_MIB, 256);
    let files = env(runwright_static::env_vars::ARCHIVE_BENCH_FILES, 10_000);
    let runs = env(runwright_static::env_vars::ARCHIVE_BENCH_RUNS, 3).max(1);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let max_workers = env(runwright_static::env_vars::ARCHIVE_BENCH_WORKERS, cores);
    let base = std::env::var_os(runwright_static::env_vars::ARCHIVE_BENCH_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();
    let tree = dir.path().join("tree");
    let outs = dir.path().join("out");
    std::fs::create_dir_all(&outs).unwrap();
    println!(
        "generating {mib} MiB in {files} files under {} ...",
        tree.display()
    );
    generate(&tree, mib, files);
    // SAFETY: no arguments.
    unsafe { libc::sync() };
    let entries = walkdir::WalkDir::new(&tree)
        .min_depth(1)
        .into_iter()
        .count();
    println!(
        "{entries} entries; {cores} cores; median of {runs} runs; load average at start {:.2}",
        load1()
    );

    let have_zip = have("zip", "-v");
    let have_unzip = have("unzip", "-v");
    let have_tar = have("tar", "--version") && have("zstd", "--version");
    let exe = std::env::current_exe().unwrap();
    let ours = |op: String, workers: usize, src: PathBuf, out: PathBuf| {
        let exe = exe.clone();
        move || {
            let mut c = Command::new(&exe);
            c.env(
                WORKER_ENV,
                format!("{op}:{workers}:{}:{}", src.display(), out.display()),
            );
            c
        }
    };
    let rm_file = |p: &Path| {
        let p = p.to_path_buf();
        Box::new(move || {
            let _ = std::fs::remove_file(&p);
        }) as Box<dyn Fn()>
    };
    let mut loads = Vec::new();

    // Archiving.
    let mut lines = Vec::new();
    lines.push(Line {
        label: "true (floor: spawn + wait4)".into(),
        prep: Box::new(|| {}),
        cmd: Box::new(|| Command::new("true")),
        output: None,
        ratio: Ratio::None,
        samples: Vec::new(),
    });
    let infozip = outs.join("infozip.zip");
    if have_zip {
        let (tree, out) = (tree.clone(), infozip.clone());
        lines.push(Line {
            label: "Info-ZIP zip -r (level 6)".into(),
            // zip adds to an existing archive: always start from none.
            prep: rm_file(&infozip),
            cmd: Box::new(move || {
                let mut c = Command::new("zip");
                c.current_dir(&tree)
                    .args(["-q", "-r", "-y"])
                    .arg(&out)
                    .arg(".");
                c
            }),
            output: Some(infozip.clone()),
            ratio: Ratio::VsZip,
            samples: Vec::new(),
        });
    }
    let tarzst = outs.join("tar.tar.zst");
    if have_tar {
        let (tree, out) = (tree.clone(), tarzst.clone());
        lines.push(Line {
            label: "tar --zstd -c".into(),
            prep: rm_file(&tarzst),
            cmd: Box::new(move || {
                let mut c = Command::new("tar");
                c.current_dir(&tree)
                    .args(["--zstd", "-cf"])
                    .arg(&out)
                    .arg(".");
                c
            }),
            output: Some(tarzst.clone()),
            ratio: Ratio::VsZip,
            samples: Vec::new(),
        });
    }
    for (op, format) in [
        ("zip-default", Format::Zip),
        ("zip-fast", Format::Zip),
        ("zipzstd-default", Format::ZipZstd),
        ("tarzstd-default", Format::TarZstd),
    ] {
        for workers in 1..=max_workers {
            let out = outs.join(format!("ours-{op}-w{workers}{}", format.extension()));
            lines.push(Line {
                label: format!(
                    "runwright {}, {workers} worker{}",
                    op.replace('-', " "),
                    if workers == 1 { "" } else { "s" }
                ),
                prep: rm_file(&out),
                cmd: Box::new(ours(op.into(), workers, tree.clone(), out.clone())),
                output: Some(out),
                ratio: Ratio::VsZip,
                samples: Vec::new(),
            });
        }
    }
    println!("archiving (parent VmHWM {} KiB):", own_hwm_kib());
    run_rounds(&mut lines, runs, &mut loads);
    print_table(&lines);

    // Extraction, of the archives just written: runwright's zip (default level) by runwright and by Info-ZIP
    // unzip, runwright's tar.zst by runwright, tar's tar.zst by tar.
    //
    // Every extraction goes to a new directory and none is deleted before the end. On ext4 without a journal
    // (this bench's machine) the inode allocator skips inodes freed in the last 5 s, or 300 s while their
    // inode-table block is dirty (`recently_deleted` in fs/ext4/ialloc.c), scanning past each one: creating
    // 50,000 files right after deleting 50,000 others took 20-85 s instead of 5-10 s, whichever tool did it.
    // The archiving outputs not extracted are removed now (a few inodes); the tree stays for the same reason.
    let our_zip = outs.join("ours-zip-default-w1.zip");
    let our_tarzst = outs.join("ours-tarzstd-default-w1.tar.zst");
    for l in &lines {
        match &l.output {
            Some(p) if *p != our_zip && *p != our_tarzst && *p != tarzst => {
                let _ = std::fs::remove_file(p);
            }
            _ => {}
        }
    }
    let x = dir.path().join("x");
    let seq = std::rc::Rc::new(std::cell::Cell::new(0u32));
    // The current measurement's target; `prep` moves on to a new, empty one.
    let target = {
        let (x, seq) = (x.clone(), seq.clone());
        move || x.join(seq.get().to_string())
    };
    let fresh = || {
        let (seq, target) = (seq.clone(), target.clone());
        Box::new(move || {
            seq.set(seq.get() + 1);
            std::fs::create_dir_all(target()).unwrap();
        }) as Box<dyn Fn()>
    };
    let ours_x = |src: PathBuf| {
        let (exe, target) = (exe.clone(), target.clone());
        Box::new(move || {
            let mut c = Command::new(&exe);
            c.env(
                WORKER_ENV,
                format!("extract:1:{}:{}", src.display(), target().display()),
            );
            c
        }) as Box<dyn Fn() -> Command>
    };
    let mut xlines = vec![
        Line {
            label: "runwright extract (zip default)".into(),
            prep: fresh(),
            cmd: ours_x(our_zip.clone()),
            output: None,
            ratio: Ratio::VsTar,
            samples: Vec::new(),
        },
        Line {
            label: "runwright extract (tarzstd default)".into(),
            prep: fresh(),
            cmd: ours_x(our_tarzst.clone()),
            output: None,
            ratio: Ratio::VsTar,
            samples: Vec::new(),
        },
    ];
    if have_unzip {
        let (src, target) = (our_zip.clone(), target.clone());
        xlines.push(Line {
            label: "Info-ZIP unzip (runwright's zip)".into(),
            prep: fresh(),
            cmd: Box::new(move || {
                let mut c = Command::new("unzip");
                c.arg("-q").arg(&src).arg("-d").arg(target());
                c
            }),
            output: None,
            ratio: Ratio::VsTar,
            samples: Vec::new(),
        });
    }
    if have_tar {
        let (src, target) = (tarzst.clone(), target.clone());
        xlines.push(Line {
            label: "tar --zstd -x (tar's tar.zst)".into(),
            prep: fresh(),
            cmd: Box::new(move || {
                let mut c = Command::new("tar");
                c.current_dir(target()).args(["--zstd", "-xf"]).arg(&src);
                c
            }),
            output: None,
            ratio: Ratio::VsTar,
            samples: Vec::new(),
        });
    }
    println!(
        "extraction ({} extractions kept until the end: about {} MiB of disk):",
        xlines.len() * runs,
        xlines.len() * runs * mib * 6 / 5
    );
    run_rounds(&mut xlines, runs, &mut loads);
    print_table(&xlines);

    let mut l = loads.clone();
    l.sort_by(f64::total_cmp);
    println!(
        "load average (1 min) before each measurement: min {:.2}, median {:.2}, max {:.2}; parent VmHWM {} KiB",
        l.first().copied().unwrap_or(f64::NAN),
        median(loads),
        l.last().copied().unwrap_or(f64::NAN),
        own_hwm_kib()
    );
}
