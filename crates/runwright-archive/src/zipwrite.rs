//! The parallel zip writer. GitLab's runner compresses on one thread (legacy `archive/zip`) or with fastzip's
//! worker pool (`commands/helpers/archive/fastzip/zip_fastzip_archiver.go`); the `zip` crate has no pool, so we
//! build one: workers each compress one whole regular file into a single-entry zip held in a [`SpillBuffer`]
//! (memory up to a shared budget, else a temporary file), and the writer thread appends the entries strictly
//! in selection order with `raw_copy_file`, which copies compressed bytes without recompressing them.
//! Directories and symlinks cost nothing to "compress": the writer thread makes their single-entry zips itself.
//!
//! The output archive is assembled here, not by `zip`'s writer (issue 17): that keeps every entry's header
//! data in memory until the central directory is written at the end (~0.5 KiB an entry). Here each entry's
//! local header and data are copied from its single-entry zip as they are, and its central directory record
//! (offset moved to where the entry landed, with a ZIP64 offset past 4 GiB) goes to a temporary file beside
//! the spill files; at the end that file is copied after the entries and the end records follow, ZIP64 ones
//! when `zip` would write them (more than 65,535 entries or offsets past 4 GiB). Memory no longer grows with
//! the number of entries.
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
use std::io::{self, BufWriter, Cursor, Read, Seek, SeekFrom, Write};
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
    let central = tempfile::tempfile_in(&spill_dir).at(&spill_dir)?;
    let mut zw = Assembler::new(file, central);
    let mut stats = ArchiveStats::default();

    let entries = selection;
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
    stats.archive_bytes = zw.finish().at(tmp.path())?;
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
    entries: &'a Selection,
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
        if !job.entries.is_file(i) {
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
        let r = compress_file(&job.entries.get(i), job);
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
    // No symlink followed anywhere below the root: a file or directory replaced by a symlink since it was
    // selected is refused rather than followed out of the tree.
    let mut src = job.entries.open_file(e).at(&e.path)?;
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
    zw: &mut Assembler,
    shared: &Shared,
    job: &Job<'_>,
    out: &Path,
    stats: &mut ArchiveStats,
) -> Result<()> {
    for i in 0..job.entries.len() {
        let e = job.entries.get(i);
        let mut single = match &e.kind {
            // A directory or symlink is small: its single-entry zip is made here, in memory.
            EntryKind::Dir | EntryKind::Symlink(_) => {
                let mut zd = ZipWriter::new(Cursor::new(Vec::with_capacity(256)));
                let o = entry_options(&e, CompressionMethod::Stored, None)?;
                match &e.kind {
                    EntryKind::Symlink(target) => {
                        zd.add_symlink(e.name.as_str(), target.to_string_lossy(), o)
                    }
                    _ => zd.add_directory(format!("{}/", e.name), o),
                }
                .map_err(|err| zip_err(out, &e.name, err))?;
                let c = zd.finish().map_err(|err| zip_err(out, &e.name, err))?;
                Single::Memory(c)
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
                Single::Spill(buf)
            }
        };
        stats.uncompressed_bytes += zw.append(&mut single, out, &e.name)?;
        stats.entries += 1;
        *shared.written.lock().unwrap_or_else(|e| e.into_inner()) = i + 1;
        shared.progress.notify_all();
    }
    Ok(())
}

/// A single-entry zip: a worker's spill buffer or a small one made by the writer thread.
enum Single {
    Spill(SpillBuffer),
    Memory(Cursor<Vec<u8>>),
}

impl Read for Single {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Single::Spill(s) => s.read(buf),
            Single::Memory(c) => c.read(buf),
        }
    }
}

impl Seek for Single {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match self {
            Single::Spill(s) => s.seek(pos),
            Single::Memory(c) => c.seek(pos),
        }
    }
}

const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EXTRA: u16 = 0x0001;
/// `zip`'s thresholds (its `format` module): past these the end records are ZIP64 ones.
const ZIP64_ENTRIES: u64 = 0xFFFF;
const ZIP64_BYTES: u64 = 0xFFFF_FFFF;
/// The central directory's fixed part, signature included.
const CENTRAL_FIXED: usize = 46;

/// The output archive: entries appended as they come, their central records in a spill file.
struct Assembler {
    out: BufWriter<File>,
    /// Bytes of `out` so far: where the next entry's local header goes.
    pos: u64,
    central: BufWriter<File>,
    central_len: u64,
    entries: u64,
    /// The highest "version needed to extract" of the entries (`zip` writes it in the ZIP64 end record).
    version_needed: u16,
}

impl Assembler {
    fn new(out: File, central: File) -> Assembler {
        Assembler {
            out: BufWriter::with_capacity(1 << 20, out),
            pos: 0,
            central: BufWriter::with_capacity(1 << 16, central),
            central_len: 0,
            entries: 0,
            // zip's MIN_VERSION.
            version_needed: 10,
        }
    }

    /// Appends the one entry of `single`; returns its uncompressed size.
    fn append(&mut self, single: &mut Single, archive: &Path, name: &str) -> Result<u64> {
        let bad = |reason: String| Error::entry(archive, name, reason);
        let (local_start, central_start, size) = {
            let mut za = ZipArchive::new(&mut *single).map_err(|e| zip_err(archive, name, e))?;
            let f = za.by_index_raw(0).map_err(|e| zip_err(archive, name, e))?;
            (f.header_start(), f.central_header_start(), f.size())
        };
        let local_len = central_start.checked_sub(local_start).ok_or_else(|| {
            bad("single-entry zip with its central directory before the entry".into())
        })?;
        single.seek(SeekFrom::Start(local_start)).at(archive)?;
        let copied = io::copy(&mut (&mut *single).take(local_len), &mut self.out).at(archive)?;
        if copied != local_len {
            return Err(bad("single-entry zip shorter than it says".into()));
        }
        let mut record = vec![0u8; CENTRAL_FIXED];
        single.read_exact(&mut record).at(archive)?;
        if le32(&record, 0) != CENTRAL_SIG {
            return Err(bad(
                "no central directory record in its single-entry zip".into()
            ));
        }
        let var = usize::from(le16(&record, 28))
            + usize::from(le16(&record, 30))
            + usize::from(le16(&record, 32));
        record.resize(CENTRAL_FIXED + var, 0);
        single
            .read_exact(&mut record[CENTRAL_FIXED..])
            .at(archive)?;
        relocate(&mut record, self.pos).map_err(bad)?;
        self.version_needed = self.version_needed.max(le16(&record, 6));
        self.central.write_all(&record).at(archive)?;
        self.central_len += record.len() as u64;
        self.pos += local_len;
        self.entries += 1;
        Ok(size)
    }

    /// The central directory and the end records (as `zip`'s `write_central_and_footer`); returns the
    /// archive's size.
    fn finish(mut self) -> io::Result<u64> {
        let mut central = self.central.into_inner().map_err(|e| e.into_error())?;
        central.seek(SeekFrom::Start(0))?;
        let copied = io::copy(&mut central, &mut self.out)?;
        if copied != self.central_len {
            return Err(io::Error::other(
                "the central directory spill file is short",
            ));
        }
        let (start, size, n) = (self.pos, self.central_len, self.entries);
        let zip64 = n > ZIP64_ENTRIES || size.max(start) > ZIP64_BYTES;
        let mut end = Vec::with_capacity(98);
        if zip64 {
            end.extend_from_slice(&ZIP64_EOCD_SIG.to_le_bytes());
            end.extend_from_slice(&44u64.to_le_bytes());
            end.extend_from_slice(&self.version_needed.to_le_bytes());
            end.extend_from_slice(&self.version_needed.to_le_bytes());
            end.extend_from_slice(&0u32.to_le_bytes());
            end.extend_from_slice(&0u32.to_le_bytes());
            end.extend_from_slice(&n.to_le_bytes());
            end.extend_from_slice(&n.to_le_bytes());
            end.extend_from_slice(&size.to_le_bytes());
            end.extend_from_slice(&start.to_le_bytes());
            end.extend_from_slice(&ZIP64_LOCATOR_SIG.to_le_bytes());
            end.extend_from_slice(&0u32.to_le_bytes());
            end.extend_from_slice(&(start + size).to_le_bytes());
            end.extend_from_slice(&1u32.to_le_bytes());
        }
        let count = n.min(ZIP64_ENTRIES) as u16;
        end.extend_from_slice(&EOCD_SIG.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&count.to_le_bytes());
        end.extend_from_slice(&count.to_le_bytes());
        let cd_size = if zip64 { ZIP64_BYTES } else { size };
        end.extend_from_slice(&(cd_size as u32).to_le_bytes());
        end.extend_from_slice(&(start.min(ZIP64_BYTES) as u32).to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.out.write_all(&end)?;
        self.out.flush()?;
        Ok(start + size + end.len() as u64)
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Moves a central directory record written for offset 0 to `offset`. Past 4 GiB the offset goes into the
/// ZIP64 extra field (after the sizes it may already carry, APPNOTE 4.5.3), as `zip` writes it.
fn relocate(record: &mut Vec<u8>, offset: u64) -> std::result::Result<(), String> {
    if offset < ZIP64_BYTES {
        record[42..46].copy_from_slice(&(offset as u32).to_le_bytes());
        return Ok(());
    }
    if le32(record, 42) != 0 {
        return Err("central directory record not written for offset 0".into());
    }
    record[42..46].copy_from_slice(&(ZIP64_BYTES as u32).to_le_bytes());
    let name_len = usize::from(le16(record, 28));
    let extra_len = usize::from(le16(record, 30));
    let extra_at = CENTRAL_FIXED + name_len;
    // Find the ZIP64 field among the extra fields.
    let mut at = extra_at;
    let mut zip64 = None;
    while at + 4 <= extra_at + extra_len {
        let (id, len) = (le16(record, at), usize::from(le16(record, at + 2)));
        if id == ZIP64_EXTRA {
            zip64 = Some((at, len));
            break;
        }
        at += 4 + len;
    }
    let (insert_at, header_at) = match zip64 {
        Some((at, len)) => (at + 4 + len, at),
        None => {
            // A new ZIP64 field first among the extra fields, as `zip` puts it.
            record.splice(
                extra_at..extra_at,
                ZIP64_EXTRA.to_le_bytes().into_iter().chain([0, 0]),
            );
            (extra_at + 4, extra_at)
        }
    };
    record.splice(insert_at..insert_at, offset.to_le_bytes());
    let field_len = le16(record, header_at + 2) + 8;
    record[header_at + 2..header_at + 4].copy_from_slice(&field_len.to_le_bytes());
    let added = if zip64.is_some() { 8 } else { 12 };
    let new_extra = u16::try_from(extra_len + added)
        .map_err(|_| "central directory record's extra fields past 64 KiB".to_string())?;
    record[30..32].copy_from_slice(&new_extra.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::{select_files, ArchiveSpec};

    /// The archive as `zip`'s own writer assembles it from the same single-entry zips (what this module did
    /// before it assembled archives itself): the reference the assembler must match byte for byte.
    fn reference_zip(sel: &Selection, out: &Path) -> Vec<u8> {
        let mut zw = ZipWriter::new(Cursor::new(Vec::new()));
        let job = Job {
            entries: sel,
            method: CompressionMethod::Deflated,
            level: Some(5),
            max_in_memory: 8 << 20,
            spill_dir: out.parent().unwrap(),
            budget: MemoryBudget::new(64 << 20),
        };
        for e in sel.iter() {
            match &e.kind {
                EntryKind::Dir => {
                    let o = entry_options(&e, CompressionMethod::Stored, None).unwrap();
                    zw.add_directory(format!("{}/", e.name), o).unwrap();
                }
                EntryKind::Symlink(target) => {
                    let o = entry_options(&e, CompressionMethod::Stored, None).unwrap();
                    zw.add_symlink(e.name.as_str(), target.to_string_lossy(), o)
                        .unwrap();
                }
                EntryKind::File => {
                    let buf = compress_file(&e, &job).unwrap();
                    let mut single = ZipArchive::new(buf).unwrap();
                    zw.raw_copy_file(single.by_index_raw(0).unwrap()).unwrap();
                }
            }
        }
        zw.finish().unwrap().into_inner()
    }

    /// Every kind of entry, plus `files` small files.
    fn tree(root: &Path, files: usize) {
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("a/b/big.txt"), "lorem ipsum ".repeat(200_000)).unwrap();
        std::fs::write(root.join("a/zero"), "").unwrap();
        std::os::unix::fs::symlink("b/big.txt", root.join("a/link")).unwrap();
        for i in 0..files {
            std::fs::write(root.join(format!("a/f{i:06}")), format!("{i}\n")).unwrap();
        }
    }

    fn assembled_like_zip_writes_it(files: usize, dirs: usize) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        tree(&root, files);
        let mut sel = select_files(
            &root,
            &ArchiveSpec {
                paths: vec![".".into()],
                ..Default::default()
            },
        )
        .unwrap();
        // Directories cost the writer no file access: made up, they spare the test a slow tree on disk.
        sel.add_made_up_dirs(dirs);
        let out = dir.path().join("ours.zip");
        let stats = write_zip(
            &sel,
            &out,
            &WriteOptions {
                workers: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let ours = std::fs::read(&out).unwrap();
        let reference = reference_zip(&sel, &out);
        assert_eq!(stats.entries as usize, sel.len());
        assert_eq!(stats.archive_bytes, ours.len() as u64);
        assert_eq!(ours.len(), reference.len());
        assert!(
            ours == reference,
            "the assembled archive differs from zip's"
        );
    }

    #[test]
    fn the_assembled_archive_is_byte_for_byte_what_zips_writer_makes() {
        assembled_like_zip_writes_it(20, 3);
    }

    #[test]
    fn past_65535_entries_the_end_records_are_zip64_ones_as_zip_writes_them() {
        // Directories: as many entries as files, without compressing each twice.
        assembled_like_zip_writes_it(10, 66_000);
    }

    /// A writer whose positions start at `base`: `zip` then writes headers as if the archive were that large.
    struct At {
        inner: Cursor<Vec<u8>>,
        base: u64,
    }

    impl Write for At {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Seek for At {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            let pos = match pos {
                SeekFrom::Start(p) => SeekFrom::Start(p.saturating_sub(self.base)),
                other => other,
            };
            Ok(self.inner.seek(pos)? + self.base)
        }
    }

    /// The central record `zip` writes for one entry with its local header at `base`.
    fn central_record_at(base: u64, large: bool) -> Vec<u8> {
        let mut zw = ZipWriter::new(At {
            inner: Cursor::new(Vec::new()),
            base,
        });
        let e = SelectedEntry {
            name: "dir/file.bin".into(),
            path: PathBuf::from("/nonexistent"),
            kind: EntryKind::File,
            mode: 0o644,
            mtime: 1_700_000_000,
            size: if large { ZIP64_ENTRY } else { 3 },
            uid: 1000,
            gid: 1000,
        };
        let o = entry_options(&e, CompressionMethod::Stored, None).unwrap();
        zw.start_file(e.name.as_str(), o).unwrap();
        zw.write_all(b"abc").unwrap();
        let bytes = zw.finish().unwrap().inner.into_inner();
        let at = bytes
            .windows(4)
            .position(|w| w == CENTRAL_SIG.to_le_bytes())
            .unwrap();
        let len = CENTRAL_FIXED
            + usize::from(le16(&bytes, at + 28))
            + usize::from(le16(&bytes, at + 30))
            + usize::from(le16(&bytes, at + 32));
        bytes[at..at + len].to_vec()
    }

    #[test]
    fn an_entry_past_4_gib_gets_its_offset_in_a_zip64_field_as_zip_writes_it() {
        for large in [false, true] {
            for offset in [0u64, 123_456, 0xFFFF_FFFE, 0xFFFF_FFFF, 5 << 30] {
                let mut moved = central_record_at(0, large);
                relocate(&mut moved, offset).unwrap();
                assert_eq!(
                    moved,
                    central_record_at(offset, large),
                    "offset {offset}, large {large}"
                );
            }
        }
    }
}
