//! The parallel zip writer. GitLab's runner compresses on one thread (legacy `archive/zip`) or with fastzip's
//! worker pool (`commands/helpers/archive/fastzip/zip_fastzip_archiver.go`); the `zip` crate has no pool, so we
//! build one: workers each compress one whole regular file into a single-entry zip held in a [`SpillBuffer`]
//! (memory up to a shared budget, else a temporary file), and the writer thread appends the entries strictly
//! in selection order with `raw_copy_file`, which copies compressed bytes without recompressing them.
//! Directories and symlinks cost nothing to "compress" and are written by the writer thread directly.
//!
//! Memory stays bounded by (a) the [`MemoryBudget`] cap on all waiting buffers, (b) a window: a worker does not
//! start entry `i` until the writer has appended entry `i - window`, which also bounds open spill files, and
//! (c) streaming reads (`io::copy`), never a whole file in RAM.
//!
//! Every entry is compressed independently with the same options whatever the worker count, so the output is
//! byte-for-byte identical for 1 or N workers.
//!
//! Entries are written as GitLab's runner writes them (`helpers/archives/zip_create.go`, `zip_extra.go`,
//! `zip_extra_unix.go`): directories as `name/`, regular files deflated with the Unix mode in the high 16 bits
//! of the external attributes (plus the MS-DOS directory and read-only bits Go's `FileInfoHeader` sets), symlinks
//! stored with the link target as content and `S_IFLNK` in the mode, the extended timestamp (`0x5455`) and the
//! Info-ZIP Unix UID/GID field (`0x7875`) in each header, UTF-8 names flagged as such.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use zip::write::{ExtendedFileOptions, FileOptions};
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::error::{Error, IoContext, Result};
use crate::select::{EntryKind, SelectedEntry, Selection};
use crate::spill::{MemoryBudget, SpillBuffer};
use crate::{ArchiveStats, Format, WriteOptions};

const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const MSDOS_DIR: u32 = 0x10;
const MSDOS_READONLY: u32 = 0x01;
/// Entries at or above this size get a ZIP64 local header (compressed data may be a little larger than the
/// input for stored or incompressible entries, hence the margin below 4 GiB).
const ZIP64_ENTRY: u64 = 0xFFFF_0000;
/// Room for the local header, name and extra fields of a single-entry zip, on top of the data.
const HEADER_ROOM: usize = 1024;

type Options = FileOptions<'static, 'static, ExtendedFileOptions>;

/// Writes `selection` as a zip archive (`Format::Zip`, or `Format::ZipZstd` for zstd entries) to `out`.
///
/// The archive goes to a temporary file beside `out`, renamed over `out` once complete.
pub fn write_zip(selection: &Selection, out: &Path, opts: &WriteOptions) -> Result<ArchiveStats> {
    let zstd = match opts.format {
        Format::Zip => false,
        Format::ZipZstd => true,
        other => return Err(Error::Invalid(format!("write_zip cannot write {other:?}"))),
    };
    let (method, level) = match (zstd, opts.level.deflate()) {
        // fastzip stores at `fastest`, for deflate and zstd alike.
        (_, None) => (CompressionMethod::Stored, None),
        (false, Some(l)) => (CompressionMethod::Deflated, Some(l as i64)),
        (true, Some(_)) => (CompressionMethod::Zstd, Some(opts.level.zstd() as i64)),
    };
    let tmp = temp_output(out)?;
    let spill_dir = opts.spill_dir.clone().unwrap_or_else(|| out_dir(out));
    let file = tmp.as_file().try_clone().at(tmp.path())?;
    let mut zw = ZipWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut stats = ArchiveStats::default();

    let entries = &selection.entries;
    let workers = opts.effective_workers().max(1);
    let budget = MemoryBudget::new(opts.memory_budget);
    let shared = Shared {
        next: AtomicUsize::new(0),
        written: Mutex::new(0),
        progress: Condvar::new(),
        results: Mutex::new(BTreeMap::new()),
        ready: Condvar::new(),
        abort: AtomicBool::new(false),
        window: workers * 4 + 16,
    };
    let job = Job {
        entries,
        method,
        level,
        max_in_memory: opts.max_in_memory_entry,
        spill_dir: &spill_dir,
        budget,
    };

    let result = std::thread::scope(|s| -> Result<()> {
        for _ in 0..workers {
            s.spawn(|| worker(&shared, &job));
        }
        let r = append_all(&mut zw, &shared, &job, out, &mut stats);
        if r.is_err() {
            // Under the lock, so a worker between its abort check and its wait cannot miss the wake-up.
            let guard = shared.written.lock().unwrap_or_else(|e| e.into_inner());
            shared.abort.store(true, Ordering::SeqCst);
            drop(guard);
            shared.progress.notify_all();
        }
        r
    });
    result?;
    let mut w = zw
        .finish()
        .map_err(|e| zip_err(out, "(central directory)", e))?;
    w.flush().at(tmp.path())?;
    stats.archive_bytes = w.stream_position().at(tmp.path())?;
    drop(w);
    tmp.as_file().sync_all().at(tmp.path())?;
    tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
    Ok(stats)
}

/// The temp file an archive is written to before it is renamed over `out` (same directory, so the rename is
/// atomic); every format writer starts here.
pub(crate) fn temp_output(out: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = out_dir(out);
    tempfile::Builder::new()
        .prefix(".archive_")
        .tempfile_in(&dir)
        .at(&dir)
}

fn out_dir(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn zip_err(archive: &Path, entry: &str, source: zip::result::ZipError) -> Error {
    Error::ZipWrite {
        archive: archive.to_path_buf(),
        entry: entry.to_string(),
        source,
    }
}

struct Shared {
    next: AtomicUsize,
    /// Entries appended so far (the writer's position), for the window.
    written: Mutex<usize>,
    progress: Condvar,
    results: Mutex<BTreeMap<usize, Result<SpillBuffer>>>,
    ready: Condvar,
    abort: AtomicBool,
    window: usize,
}

struct Job<'a> {
    entries: &'a [SelectedEntry],
    method: CompressionMethod,
    level: Option<i64>,
    max_in_memory: usize,
    spill_dir: &'a Path,
    budget: Arc<MemoryBudget>,
}

fn worker(shared: &Shared, job: &Job<'_>) {
    loop {
        let i = shared.next.fetch_add(1, Ordering::SeqCst);
        if i >= job.entries.len() || shared.abort.load(Ordering::SeqCst) {
            return;
        }
        if job.entries[i].kind != EntryKind::File {
            continue;
        }
        {
            let mut written = shared.written.lock().unwrap_or_else(|e| e.into_inner());
            while i >= *written + shared.window && !shared.abort.load(Ordering::SeqCst) {
                written = shared
                    .progress
                    .wait(written)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        if shared.abort.load(Ordering::SeqCst) {
            return;
        }
        let r = compress_file(&job.entries[i], job);
        shared
            .results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(i, r);
        shared.ready.notify_all();
    }
}

/// The options for one entry: method, mode bits in the external attributes, DOS time, extended timestamp and
/// the UID/GID field, as GitLab's `createZipExtra` writes them.
fn entry_options(
    e: &SelectedEntry,
    method: CompressionMethod,
    level: Option<i64>,
) -> Result<Options> {
    let (type_bits, dos) = match e.kind {
        EntryKind::Dir => (S_IFDIR, MSDOS_DIR),
        EntryKind::File => (S_IFREG, 0),
        EntryKind::Symlink(_) => (S_IFLNK, 0),
    };
    let readonly = if e.mode & 0o200 == 0 {
        MSDOS_READONLY
    } else {
        0
    };
    let mut o: Options = FileOptions::default()
        .compression_method(method)
        .compression_level(level)
        .external_attributes(((e.mode | type_bits) << 16) | dos | readonly)
        .last_modified_time(crate::time::dos_datetime(e.mtime))
        .large_file(e.size >= ZIP64_ENTRY);
    // Info-ZIP "ux" (0x7875): version 1, 4-byte UID, 4-byte GID (runner helpers/archives/zip_extra_unix.go).
    let mut ux = Vec::with_capacity(11);
    ux.push(1u8);
    ux.push(4);
    ux.extend_from_slice(&e.uid.to_le_bytes());
    ux.push(4);
    ux.extend_from_slice(&e.gid.to_le_bytes());
    o.add_extra_field(0x7875, ux, false)
        .map_err(|err| zip_err(&e.path, &e.name, err))?;
    let mtime = u32::try_from(e.mtime.max(0)).unwrap_or(u32::MAX);
    o.with_extended_timestamp(Some(mtime), None, None)
        .map_err(|err| zip_err(&e.path, &e.name, err))
}

/// Compresses one regular file into a single-entry zip in a spill buffer.
fn compress_file(e: &SelectedEntry, job: &Job<'_>) -> Result<SpillBuffer> {
    // O_NOFOLLOW: if the file was replaced by a symlink since it was selected, refuse rather than follow.
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&e.path)
        .at(&e.path)?;
    let size = src.metadata().at(&e.path)?.len();
    let mut entry = e.clone();
    entry.size = entry.size.max(size);
    let sink = usize::try_from(size)
        .ok()
        .filter(|s| *s <= job.max_in_memory)
        .and_then(|s| {
            job.budget
                .try_reserve(s + s / 64 + HEADER_ROOM + e.name.len() * 2)
        })
        .map(|r| SpillBuffer::memory(r, job.spill_dir));
    let sink = match sink {
        Some(s) => s,
        None => SpillBuffer::file(job.spill_dir).at(job.spill_dir)?,
    };
    let mut zw = ZipWriter::new(sink);
    let options = entry_options(&entry, job.method, job.level)?;
    zw.start_file(e.name.as_str(), options)
        .map_err(|err| zip_err(&e.path, &e.name, err))?;
    io::copy(&mut src, &mut zw).at(&e.path)?;
    zw.finish().map_err(|err| zip_err(&e.path, &e.name, err))
}

fn append_all(
    zw: &mut ZipWriter<BufWriter<File>>,
    shared: &Shared,
    job: &Job<'_>,
    out: &Path,
    stats: &mut ArchiveStats,
) -> Result<()> {
    for (i, e) in job.entries.iter().enumerate() {
        match &e.kind {
            EntryKind::Dir => {
                let o = entry_options(e, CompressionMethod::Stored, None)?;
                zw.add_directory(format!("{}/", e.name), o)
                    .map_err(|err| zip_err(out, &e.name, err))?;
            }
            EntryKind::Symlink(target) => {
                let o = entry_options(e, CompressionMethod::Stored, None)?;
                zw.add_symlink(e.name.as_str(), target.to_string_lossy(), o)
                    .map_err(|err| zip_err(out, &e.name, err))?;
            }
            EntryKind::File => {
                let buf = {
                    let mut results = shared.results.lock().unwrap_or_else(|e| e.into_inner());
                    loop {
                        if let Some(r) = results.remove(&i) {
                            break r;
                        }
                        results = shared
                            .ready
                            .wait(results)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                }?;
                if buf.is_spilled() {
                    stats.spilled_entries += 1;
                }
                let mut single = ZipArchive::new(buf).map_err(|err| zip_err(out, &e.name, err))?;
                let f = single
                    .by_index_raw(0)
                    .map_err(|err| zip_err(out, &e.name, err))?;
                stats.uncompressed_bytes += f.size();
                zw.raw_copy_file(f)
                    .map_err(|err| zip_err(out, &e.name, err))?;
            }
        }
        stats.entries += 1;
        *shared.written.lock().unwrap_or_else(|e| e.into_inner()) = i + 1;
        shared.progress.notify_all();
    }
    Ok(())
}
