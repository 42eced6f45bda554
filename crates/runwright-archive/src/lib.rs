//! The archive engine behind artifacts and caches (issue 4): which files go in, how they are written, and how
//! an archive is unpacked without touching anything outside its target.
//!
//! Three steps, each a small function with no CLI or network in it:
//!
//! * [`select_files`] turns `paths`, `exclude` and `untracked` into a sorted [`Selection`], with the warnings
//!   GitLab's runner prints (its `commands/helpers/file_archiver.go`).
//! * [`write_archive`] (or [`write_zip`]) writes a selection as `zip`, `zipzstd`, `tarzstd` or `gzip`. Zip
//!   entries are compressed by a pool of workers, each into a bounded in-memory buffer or a spill file, and
//!   appended in order with a raw copy, so the result is byte-for-byte the same whatever the worker count.
//! * [`extract`] unpacks into a staging directory and only moves the result into place once every entry has
//!   been checked and written.

mod beneath;
mod error;
mod extract;
mod gzip;
mod select;
mod spill;
mod tarzstd;
mod time;
mod zipwrite;

use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use extract::{extract, ExtractOptions, ExtractStats};
pub use select::{select_files, ArchiveSpec, EntryKind, SelectedEntry, Selection};
pub use zipwrite::write_zip;

/// The archive formats GitLab's runner knows (runner `commands/helpers/archive/archive.go`, `Format`).
///
/// `Zip` is the default for artifacts and caches; `ZipZstd` and `TarZstd` come from `CACHE_COMPRESSION_FORMAT`;
/// `Gzip` is the format of artifact reports (one gzip member per file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Zip with deflate (stored at level `fastest`).
    Zip,
    /// Zip whose entries use zstd, method 93 (what GitLab's fastzip writes for `zipzstd`).
    ZipZstd,
    /// A tar stream compressed with zstd.
    TarZstd,
    /// Concatenated gzip members, one per regular file, the file name in each header.
    Gzip,
}

impl Format {
    /// Parses GitLab's names: `zip`, `zipzstd`, `tarzstd`, `gzip`.
    pub fn parse(name: &str) -> Option<Format> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "zip" => Some(Format::Zip),
            "zipzstd" => Some(Format::ZipZstd),
            "tarzstd" => Some(Format::TarZstd),
            "gzip" => Some(Format::Gzip),
            _ => None,
        }
    }

    /// The file name suffix GitLab's uploader gives this format (protocol.md §5.1).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Zip | Format::ZipZstd => ".zip",
            Format::TarZstd => ".tar.zst",
            Format::Gzip => ".gz",
        }
    }
}

/// `ARTIFACT_COMPRESSION_LEVEL` / `CACHE_COMPRESSION_LEVEL` (runner `commands/helpers/archive/archive.go`,
/// `CompressionLevel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Level {
    Fastest,
    Fast,
    #[default]
    Default,
    Slow,
    Slowest,
}

impl Level {
    /// Parses `fastest|fast|default|slow|slowest`; anything else (including empty) is `default`, as in
    /// GitLab's runner (`commands/helpers/artifacts_uploader.go`, `getCompressionLevel`).
    pub fn parse(name: &str) -> Level {
        match name.trim().to_ascii_lowercase().as_str() {
            "fastest" => Level::Fastest,
            "fast" => Level::Fast,
            "slow" => Level::Slow,
            "slowest" => Level::Slowest,
            _ => Level::Default,
        }
    }

    /// The deflate level, or `None` for "store" — GitLab's fastzip table
    /// (`commands/helpers/archive/fastzip/zip_fastzip_archiver.go`, `flateLevels`; `fastest` uses `zip.Store`).
    pub fn deflate(self) -> Option<u32> {
        match self {
            Level::Fastest => None,
            Level::Fast => Some(1),
            Level::Default => Some(5),
            Level::Slow => Some(7),
            Level::Slowest => Some(9),
        }
    }

    /// The zstd level. GitLab uses klauspost's encoder speeds (`SpeedFastest`, `SpeedDefault`,
    /// `SpeedBetterCompression`, `SpeedBestCompression`), which correspond roughly to zstd levels 1, 3, 7 and 11
    /// (`commands/helpers/archive/tarzstd/tarzstd_archiver.go`, `levels`).
    pub fn zstd(self) -> i32 {
        match self {
            Level::Fastest | Level::Fast => 1,
            Level::Default => 3,
            Level::Slow => 7,
            Level::Slowest => 11,
        }
    }
}

/// How to write an archive.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub format: Format,
    pub level: Level,
    /// Compression workers for zip formats; `0` means the number of available cores.
    pub workers: usize,
    /// The most compressed bytes held in memory at once, summed over all entries waiting to be appended.
    /// Entries that do not fit go to spill files.
    pub memory_budget: usize,
    /// The largest single entry kept in memory; larger files always go to a spill file.
    pub max_in_memory_entry: usize,
    /// Where spill files go; `None` means beside the output archive (same filesystem, and GitLab's
    /// `ARCHIVER_STAGING_DIR` plays this role for fastzip).
    pub spill_dir: Option<PathBuf>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            format: Format::Zip,
            level: Level::Default,
            workers: 0,
            memory_budget: 64 << 20,
            max_in_memory_entry: 8 << 20,
            spill_dir: None,
        }
    }
}

impl WriteOptions {
    /// The worker count in force.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// What writing an archive did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Entries written (files, directories, symlinks).
    pub entries: u64,
    /// Bytes read from regular files.
    pub uncompressed_bytes: u64,
    /// Size of the archive written.
    pub archive_bytes: u64,
    /// Entries that went through a spill file rather than memory.
    pub spilled_entries: u64,
}

/// Writes `selection` to `out` in the format `opts.format` asks for. The archive is written to a temporary
/// file beside `out` and renamed over it at the end, so a failed write leaves no partial archive.
pub fn write_archive(
    selection: &Selection,
    out: &Path,
    opts: &WriteOptions,
) -> Result<ArchiveStats> {
    match opts.format {
        Format::Zip | Format::ZipZstd => write_zip(selection, out, opts),
        Format::TarZstd => tarzstd::write_tar_zstd(selection, out, opts),
        Format::Gzip => gzip::write_gzip(selection, out, opts),
    }
}
