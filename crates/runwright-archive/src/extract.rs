//! Safe extraction of zip, zipzstd and tar.zst archives (artifacts of dependencies, caches).
//!
//! GitLab's runner extracts in place with `os.MkdirAll` and `os.OpenFile`, following whatever symlinks it meets
//! (runner `helpers/archives/zip_extract.go`); this module does not trust the archive:
//!
//! * every name is checked: no absolute path, no `..`, no NUL, no path whose parent is a symlink or a file
//!   created earlier by the same archive, no duplicate;
//! * a symlink must point inside the target: relative, made of leading `..` followed only by normal
//!   components, and staying inside the target when resolved from the link's own directory (so chains of
//!   links cannot climb out either) — unless [`ExtractOptions::allow_external_symlinks`];
//! * each file is copied up to its declared size plus one byte: more data than declared, less, or a CRC
//!   mismatch fails the entry; the sum of declared sizes is checked against a limit and the free space first;
//! * mode bits are kept, without setuid/setgid unless [`ExtractOptions::keep_setid`]; mtimes are kept (the
//!   extended timestamp field when present, as `processZipTimestampField` does).
//!
//! **Nothing half-written is left behind.** Everything is extracted into a fresh staging directory created
//! *inside* the target (so it is on the same filesystem even when the target is a mount point, and every later
//! step is a `rename(2)`); on any error the staging directory is removed and the target is as it was (and is
//! removed again if we created it). Only when every entry has been written and checked are the staged entries
//! moved into the target, after a planning pass that finds conflicts (a file where a non-empty directory is)
//! before anything moves. The commit step never follows a symlink that already exists in the target: a
//! symlink standing where the archive has a directory is replaced, not entered.
//!
//! **Nothing is reached through a path another process can change.** Every entry is created, moved and
//! finished (mode, mtime, owner) through directory descriptors opened one component at a time with
//! `O_NOFOLLOW` (`beneath`), in the staging directory and in the target alike: a directory of either swapped
//! for a symlink while extraction runs (a job's background process, a service container on the shared
//! volume) makes the extraction fail instead of writing, moving or changing anything outside the target.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, FileTimes};
use std::io::{self, BufWriter, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use zip::ZipArchive;

use crate::beneath;
use crate::error::{Error, IoContext, Result};
use crate::Format;

/// How to extract.
#[derive(Clone, Debug, Default)]
pub struct ExtractOptions {
    /// The archive format; `None` sniffs it from the first bytes (zip or zstd).
    pub format: Option<Format>,
    /// Keep setuid and setgid bits (off by default: an artifact should not grant privileges).
    pub keep_setid: bool,
    /// Accept symlinks pointing outside the target (absolute, or climbing out). Off by default. Such links are
    /// never followed while extracting either way; turn this on for caches that hold, say, a Python virtualenv
    /// whose `bin/python` points at `/usr/bin/python3`.
    pub allow_external_symlinks: bool,
    /// Refuse archives declaring more than this many bytes in total.
    pub max_total_size: Option<u64>,
    /// Refuse archives of more than this many entries (issue 17): reading a zip's central directory costs the
    /// process memory for every entry, and an archive may come from anyone who could upload to the job's
    /// dependencies or cache. A zip is refused from its end record, before its central directory is read.
    pub max_entries: Option<usize>,
    /// Give every extracted entry this owner (uid, gid): a runner running as root restores caches and
    /// artifacts for jobs that run as another user (`run --user`), who must be able to change them.
    pub owner: Option<(u32, u32)>,
}

/// What extraction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtractStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes written to regular files.
    pub bytes: u64,
    /// Entries skipped (fifos, devices), with a warning.
    pub skipped: u64,
}

/// The number of entries a zip's end record declares (the ZIP64 one's when the classic record defers to it);
/// `None` when there is no end record to read.
fn zip_declared_entries(f: &mut File) -> io::Result<Option<u64>> {
    use std::io::{Seek, SeekFrom};
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    const LOCATOR: [u8; 4] = [0x50, 0x4b, 0x06, 0x07];
    const ZIP64_EOCD: [u8; 4] = [0x50, 0x4b, 0x06, 0x06];
    let len = f.metadata()?.len();
    // The end record (22 bytes) and a comment of at most 65,535 bytes.
    let back = len.min(22 + 65_535);
    let mut tail = vec![0u8; back as usize];
    f.seek(SeekFrom::Start(len - back))?;
    f.read_exact(&mut tail)?;
    let Some(at) = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == EOCD)
    else {
        return Ok(None);
    };
    let le16 = |b: &[u8], i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let entries = le16(&tail, at + 10);
    let deferred = entries == 0xFFFF
        || tail[at + 12..at + 16].iter().all(|b| *b == 0xFF)
        || tail[at + 16..at + 20].iter().all(|b| *b == 0xFF);
    let eocd_offset = len - back + at as u64;
    if !deferred || eocd_offset < 20 {
        return Ok(Some(entries));
    }
    let mut locator = [0u8; 20];
    f.seek(SeekFrom::Start(eocd_offset - 20))?;
    f.read_exact(&mut locator)?;
    if locator[..4] != LOCATOR {
        return Ok(Some(entries));
    }
    let zip64_at = u64::from_le_bytes(locator[8..16].try_into().unwrap_or([0; 8]));
    let mut record = [0u8; 40];
    if zip64_at.saturating_add(40) > len {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(zip64_at))?;
    f.read_exact(&mut record)?;
    if record[..4] != ZIP64_EOCD {
        return Ok(None);
    }
    Ok(Some(u64::from_le_bytes(
        record[32..40].try_into().unwrap_or([0; 8]),
    )))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

/// Extracts `archive` into `target` (created if missing). On error nothing of the archive is left in `target`.
pub fn extract(archive: &Path, target: &Path, opts: &ExtractOptions) -> Result<ExtractStats> {
    let format = match opts.format {
        Some(f) => f,
        None => sniff(archive)?,
    };
    let created_target = std::fs::symlink_metadata(target).is_err();
    std::fs::create_dir_all(target).at(target)?;
    let result = extract_staged(archive, target, format, opts);
    if result.is_err() && created_target {
        // Only removes it if still empty, which it is: the staging directory is gone by now.
        let _ = std::fs::remove_dir(target);
    }
    result
}

fn extract_staged(
    archive: &Path,
    target: &Path,
    format: Format,
    opts: &ExtractOptions,
) -> Result<ExtractStats> {
    let staging = tempfile::Builder::new()
        .prefix(".runwright-extract-")
        .tempdir_in(target)
        .at(target)?;
    let target_fd = beneath::open_root(target).at(target)?;
    let staging_name = Path::new(staging.path().file_name().unwrap_or_default());
    let root_fd = beneath::open_dir(&target_fd, staging_name).at(staging.path())?;
    let mut x = Extractor {
        archive,
        root: staging.path().to_path_buf(),
        root_fd,
        opts,
        seen: HashMap::new(),
        dirs: Vec::new(),
        stats: ExtractStats::default(),
    };
    match format {
        Format::Zip | Format::ZipZstd => x.zip()?,
        Format::TarZstd => x.tar()?,
        Format::Gzip => {
            return Err(Error::Refused {
                archive: archive.to_path_buf(),
                reason: "gzip archives are upload-only (artifact reports); nothing extracts them"
                    .into(),
            })
        }
    }
    commit(archive, staging.path(), &x.root_fd, target, &target_fd)?;
    // Directory modes and mtimes last: adding children changes a directory's mtime, and a read-only directory
    // could not have received its children. Through a descriptor of the directory itself: a path swapped for
    // a symlink since is not followed (it is skipped, as anything that is not a directory is).
    x.dirs
        .sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
    for (rel, mode, mtime) in &x.dirs {
        let p = target.join(rel);
        if let Ok(fd) = beneath::open_dir(&target_fd, rel) {
            nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(*mode))
                .map_err(io::Error::from)
                .at(&p)?;
            let t = nix::sys::time::TimeSpec::new(*mtime, 0);
            nix::sys::stat::futimens(&fd, &nix::sys::time::TimeSpec::UTIME_OMIT, &t)
                .map_err(io::Error::from)
                .at(&p)?;
        }
    }
    staging.close().at(target)?;
    Ok(x.stats)
}

fn sniff(archive: &Path) -> Result<Format> {
    let mut magic = [0u8; 4];
    let mut f = File::open(archive).at(archive)?;
    let n = f.read(&mut magic).at(archive)?;
    match &magic[..n] {
        [b'P', b'K', 3, 4] | [b'P', b'K', 5, 6] => Ok(Format::Zip),
        [0x28, 0xb5, 0x2f, 0xfd] => Ok(Format::TarZstd),
        [0x1f, 0x8b, ..] => Ok(Format::Gzip),
        _ => Err(Error::BadArchive {
            archive: archive.to_path_buf(),
            reason: "neither zip nor zstd".into(),
        }),
    }
}

struct Extractor<'a> {
    archive: &'a Path,
    /// The staging directory (for messages and the free-space check) and its descriptor (for every change).
    root: PathBuf,
    root_fd: OwnedFd,
    opts: &'a ExtractOptions,
    /// Every path created so far (relative), with its kind.
    seen: HashMap<PathBuf, Kind>,
    /// Directories with their mode and mtime, applied after the commit.
    dirs: Vec<(PathBuf, u32, i64)>,
    stats: ExtractStats,
}

impl Extractor<'_> {
    fn err(&self, entry: &[u8], reason: impl Into<String>) -> Error {
        Error::entry(self.archive, String::from_utf8_lossy(entry), reason)
    }

    fn check_total(&self, total: u64) -> Result<()> {
        if let Some(max) = self.opts.max_total_size {
            if total > max {
                return Err(Error::Refused {
                    archive: self.archive.to_path_buf(),
                    reason: format!(
                        "declares {total} bytes in total, more than the limit of {max} bytes"
                    ),
                });
            }
        }
        if let Ok(vfs) = nix::sys::statvfs::statvfs(&self.root) {
            #[allow(clippy::unnecessary_cast)] // the field types differ between targets
            let free = (vfs.blocks_available() as u64).saturating_mul(vfs.fragment_size() as u64);
            if total > free {
                return Err(Error::Refused {
                    archive: self.archive.to_path_buf(),
                    reason: format!("declares {total} bytes in total, more than the {free} bytes free on the target"),
                });
            }
        }
        Ok(())
    }

    /// Validates a name and returns it relative to the target, or `None` for an entry naming the root itself.
    fn check_name(&self, raw: &[u8], kind: Kind) -> Result<Option<PathBuf>> {
        if raw.contains(&0) {
            return Err(self.err(raw, "name contains a NUL byte"));
        }
        if raw.first() == Some(&b'/') {
            return Err(self.err(raw, "absolute path: entries must stay inside the target"));
        }
        let mut rel = PathBuf::new();
        for c in raw.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    return Err(self.err(
                        raw,
                        "path contains '..': entries must stay inside the target",
                    ))
                }
                c => rel.push(OsStr::from_bytes(c)),
            }
        }
        if rel.as_os_str().is_empty() {
            return if kind == Kind::Dir {
                Ok(None)
            } else {
                Err(self.err(raw, "empty name"))
            };
        }
        let mut anc = rel.parent();
        while let Some(a) = anc {
            if a.as_os_str().is_empty() {
                break;
            }
            match self.seen.get(a) {
                Some(Kind::Symlink) => {
                    return Err(self.err(
                        raw,
                        format!(
                        "parent {} is a symlink from this archive: refusing to write through it",
                        a.display()
                    ),
                    ))
                }
                Some(Kind::File) => {
                    return Err(self.err(
                        raw,
                        format!("parent {} is a file from this archive", a.display()),
                    ))
                }
                _ => {}
            }
            anc = a.parent();
        }
        match self.seen.get(&rel) {
            Some(Kind::Dir) if kind == Kind::Dir => {}
            Some(_) => {
                return Err(self.err(raw, "duplicate entry: the archive names this path twice"))
            }
            None => {}
        }
        Ok(Some(rel))
    }

    /// A symlink target is accepted if it is relative, normalised (leading `..` only) and stays inside the
    /// target when resolved from the link's directory.
    fn check_link(&self, raw: &[u8], rel: &Path, link: &[u8]) -> Result<()> {
        if link.is_empty() || link.contains(&0) {
            return Err(self.err(raw, "symlink with an empty or NUL-containing target"));
        }
        if self.opts.allow_external_symlinks {
            return Ok(());
        }
        let shown = String::from_utf8_lossy(link);
        if link.first() == Some(&b'/') {
            return Err(self.err(
                raw,
                format!("symlink points outside the target (absolute: {shown})"),
            ));
        }
        let mut depth = rel.components().count() as i64 - 1;
        let mut seen_normal = false;
        for c in link.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    if seen_normal {
                        return Err(self.err(
                            raw,
                            format!("symlink target {shown} is not normalised ('..' after a name)"),
                        ));
                    }
                    depth -= 1;
                    if depth < 0 {
                        return Err(
                            self.err(raw, format!("symlink points outside the target ({shown})"))
                        );
                    }
                }
                _ => seen_normal = true,
            }
        }
        Ok(())
    }

    fn mode(&self, mode: u32) -> u32 {
        let keep = if self.opts.keep_setid { 0o7777 } else { 0o1777 };
        mode & keep
    }

    fn make_parents(&mut self, rel: &Path) -> Result<()> {
        if let Some(parent) = rel.parent() {
            if !parent.as_os_str().is_empty() {
                let p = self.root.join(parent);
                let owner = self.opts.owner;
                beneath::mkdir_all(&self.root_fd, parent, 0o777, |dir, name| {
                    chown_at(dir, name, owner)
                })
                .at(&p)?;
                let mut a = Some(parent);
                while let Some(d) = a {
                    if d.as_os_str().is_empty() {
                        break;
                    }
                    self.seen.entry(d.to_path_buf()).or_insert(Kind::Dir);
                    a = d.parent();
                }
            }
        }
        Ok(())
    }

    fn make_dir(&mut self, raw: &[u8], mode: u32, mtime: i64) -> Result<()> {
        let Some(rel) = self.check_name(raw, Kind::Dir)? else {
            return Ok(());
        };
        self.make_parents(&rel)?;
        let (dir, name) =
            beneath::open_parent(&self.root_fd, &rel).map_err(|e| self.err(raw, e.to_string()))?;
        match nix::sys::stat::mkdirat(&dir, name, nix::sys::stat::Mode::from_bits_truncate(0o777)) {
            Ok(()) => {
                chown_at(&dir, name, self.opts.owner).map_err(|e| self.err(raw, e.to_string()))?
            }
            Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(self.err(raw, e.to_string())),
        }
        self.seen.insert(rel.clone(), Kind::Dir);
        self.dirs.push((rel, self.mode(mode), mtime));
        self.stats.dirs += 1;
        Ok(())
    }

    fn make_file(
        &mut self,
        raw: &[u8],
        data: &mut dyn Read,
        declared: u64,
        mode: u32,
        mtime: i64,
    ) -> Result<()> {
        let Some(rel) = self.check_name(raw, Kind::File)? else {
            return Ok(());
        };
        self.make_parents(&rel)?;
        let (dir, name) =
            beneath::open_parent(&self.root_fd, &rel).map_err(|e| self.err(raw, e.to_string()))?;
        use nix::fcntl::OFlag;
        let file = nix::fcntl::openat(
            &dir,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .map(File::from)
        .map_err(|e| self.err(raw, e.to_string()))?;
        self.seen.insert(rel, Kind::File);
        if let Some((uid, gid)) = self.opts.owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(|e| self.err(raw, e.to_string()))?;
        }
        let mut w = BufWriter::with_capacity(256 << 10, file);
        // Stop one byte past the declared size: enough to tell a lie from the truth without writing a bomb.
        let n = io::copy(&mut data.take(declared.saturating_add(1)), &mut w)
            .map_err(|e| self.err(raw, format!("reading entry data: {e}")))?;
        if n > declared {
            return Err(self.err(
                raw,
                format!("size mismatch: more data than the {declared} bytes declared"),
            ));
        }
        if n < declared {
            return Err(self.err(
                raw,
                format!("size mismatch: {n} bytes of data, {declared} declared (truncated?)"),
            ));
        }
        let file = w
            .into_inner()
            .map_err(|e| self.err(raw, e.error().to_string()))?;
        file.set_permissions(std::fs::Permissions::from_mode(self.mode(mode)))
            .map_err(|e| self.err(raw, e.to_string()))?;
        file.set_times(FileTimes::new().set_modified(system_time(mtime)))
            .map_err(|e| self.err(raw, e.to_string()))?;
        self.stats.files += 1;
        self.stats.bytes += n;
        Ok(())
    }

    fn make_symlink(&mut self, raw: &[u8], link: &[u8], mtime: i64) -> Result<()> {
        let Some(rel) = self.check_name(raw, Kind::Symlink)? else {
            return Ok(());
        };
        self.check_link(raw, &rel, link)?;
        self.make_parents(&rel)?;
        let (dir, name) =
            beneath::open_parent(&self.root_fd, &rel).map_err(|e| self.err(raw, e.to_string()))?;
        nix::unistd::symlinkat(OsStr::from_bytes(link), &dir, name)
            .map_err(|e| self.err(raw, e.to_string()))?;
        chown_at(&dir, name, self.opts.owner).map_err(|e| self.err(raw, e.to_string()))?;
        let _ = set_mtime_nofollow_at(&dir, name, mtime);
        self.seen.insert(rel, Kind::Symlink);
        self.stats.symlinks += 1;
        Ok(())
    }

    fn too_many(&self, limit: usize) -> Error {
        Error::TooManyEntries {
            archive: self.archive.to_path_buf(),
            limit,
        }
    }

    fn zip(&mut self) -> Result<()> {
        let mut f = File::open(self.archive).at(self.archive)?;
        if let Some(max) = self.opts.max_entries {
            // An end record that cannot be read is left to the zip reader to refuse.
            if zip_declared_entries(&mut f)
                .at(self.archive)?
                .is_some_and(|n| n > max as u64)
            {
                return Err(self.too_many(max));
            }
        }
        let mut za = ZipArchive::new(f).map_err(|e| Error::BadArchive {
            archive: self.archive.to_path_buf(),
            reason: e.to_string(),
        })?;
        if za.has_duplicate_names() {
            // The zip crate keeps one of them; we refuse the archive, as the two could differ in kind or content.
            return Err(Error::Refused {
                archive: self.archive.to_path_buf(),
                reason: "duplicate entry: the central directory names the same path twice".into(),
            });
        }
        let mut total = 0u64;
        for i in 0..za.len() {
            let e = za.by_index_raw(i).map_err(|e| self.bad(e))?;
            total = total.saturating_add(e.size());
        }
        self.check_total(total)?;
        for i in 0..za.len() {
            let mut e = za.by_index(i).map_err(|e| self.bad(e))?;
            let raw = e.name_raw().to_vec();
            // The zip crate's `unix_mode()` clears setuid/setgid/sticky; read them from the raw attributes of
            // Unix-made entries so `keep_setid` can keep them.
            let unix = match e.system() {
                zip::System::Unix if e.external_attributes() >> 16 != 0 => {
                    Some(e.external_attributes() >> 16)
                }
                _ => e.unix_mode(),
            };
            let mtime = e
                .extra_data_fields()
                .find_map(|f| match f {
                    zip::extra_fields::ExtraField::ExtendedTimestamp(t) => t.mod_time(),
                    _ => None,
                })
                .map(i64::from)
                .or_else(|| e.last_modified().map(|d| crate::time::unix_from_dos(&d)))
                .unwrap_or(0);
            let ftype = unix.map(|m| m & 0o170_000).unwrap_or(0);
            let declared = e.size();
            if e.is_symlink() {
                if declared > 4096 {
                    return Err(self.err(&raw, format!("symlink target of {declared} bytes")));
                }
                let mut link = Vec::new();
                let n = (&mut e)
                    .take(4097)
                    .read_to_end(&mut link)
                    .map_err(|err| self.err(&raw, err.to_string()))?;
                if n as u64 != declared {
                    return Err(self.err(
                        &raw,
                        format!("size mismatch: {n} bytes of data, {declared} declared"),
                    ));
                }
                self.make_symlink(&raw, &link, mtime)?;
            } else if e.is_dir() || ftype == 0o040_000 {
                self.make_dir(&raw, unix.unwrap_or(0o755) & 0o7777, mtime)?;
            } else if ftype == 0 || ftype == 0o100_000 {
                // Archives from hosts without Unix modes (MS-DOS attributes) get 0o644.
                let mode = unix
                    .filter(|_| ftype != 0)
                    .map(|m| m & 0o7777)
                    .unwrap_or(0o644);
                self.make_file(&raw, &mut e, declared, mode, mtime)?;
            } else {
                tracing::warn!(archive = %self.archive.display(), entry = %String::from_utf8_lossy(&raw), "File ignored: not a regular file, directory or symlink");
                self.stats.skipped += 1;
            }
        }
        Ok(())
    }

    fn bad(&self, e: zip::result::ZipError) -> Error {
        Error::BadArchive {
            archive: self.archive.to_path_buf(),
            reason: e.to_string(),
        }
    }

    fn tar(&mut self) -> Result<()> {
        // A tar stream has no index, so the total cannot be checked up front: each entry is still capped at its
        // declared size, and the free space is checked per entry.
        let f = File::open(self.archive).at(self.archive)?;
        let dec = zstd::Decoder::new(f).at(self.archive)?;
        let mut ar = tar::Archive::new(dec);
        let entries = ar.entries().map_err(|e| self.bad_tar(e))?;
        let mut total = 0u64;
        for (seen, entry) in entries.enumerate() {
            if let Some(max) = self.opts.max_entries.filter(|m| seen >= *m) {
                return Err(self.too_many(max));
            }
            let mut entry = entry.map_err(|e| self.bad_tar(e))?;
            let raw = entry.path_bytes().into_owned();
            let h = entry.header();
            let mode = h.mode().unwrap_or(0o644) & 0o7777;
            let mtime = h.mtime().unwrap_or(0) as i64;
            let declared = h.size().map_err(|e| self.err(&raw, e.to_string()))?;
            let et = h.entry_type();
            if et.is_dir() {
                self.make_dir(&raw, mode, mtime)?;
            } else if et.is_symlink() {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                self.make_symlink(&raw, &link, mtime)?;
            } else if et.is_hard_link() {
                return Err(self.err(&raw, "hard links are not supported"));
            } else if et.is_file() || et == tar::EntryType::Continuous {
                total = total.saturating_add(declared);
                self.check_total(total)?;
                self.make_file(&raw, &mut entry, declared, mode, mtime)?;
            } else {
                tracing::warn!(archive = %self.archive.display(), entry = %String::from_utf8_lossy(&raw), "File ignored: not a regular file, directory or symlink");
                self.stats.skipped += 1;
            }
        }
        Ok(())
    }

    fn bad_tar(&self, e: io::Error) -> Error {
        Error::BadArchive {
            archive: self.archive.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

/// `lchown` of one new entry (never following a symlink), when an owner is asked for.
fn chown_at(dir: &OwnedFd, name: &OsStr, owner: Option<(u32, u32)>) -> io::Result<()> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    nix::unistd::fchownat(
        dir,
        name,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

fn system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

fn set_mtime_nofollow_at(dir: &OwnedFd, name: &OsStr, mtime: i64) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(mtime, 0);
    utimensat(
        dir,
        name,
        &TimeSpec::UTIME_OMIT,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// One move of the commit, by path relative to the staging directory and the target.
enum Step {
    /// Remove what is at the destination (a file or symlink where a directory goes), then rename.
    Replace(PathBuf),
    Rename(PathBuf),
}

/// Moves the staged tree into the target: plan every move first (so a conflict fails before anything moved),
/// then rename. Existing symlinks in the target are never entered: every move goes between directory
/// descriptors opened without following a symlink (`renameat(2)`), so a directory of the target swapped for
/// a symlink after the plan makes the move fail instead of landing outside.
fn commit(
    archive: &Path,
    staging: &Path,
    staging_fd: &OwnedFd,
    target: &Path,
    target_fd: &OwnedFd,
) -> Result<()> {
    let mut steps = Vec::new();
    plan(archive, staging, target, Path::new(""), &mut steps)?;
    for step in steps {
        let (rel, replace) = match &step {
            Step::Replace(r) => (r, true),
            Step::Rename(r) => (r, false),
        };
        let d = target.join(rel);
        let (sdir, name) = beneath::open_parent(staging_fd, rel).at(staging.join(rel))?;
        let (ddir, _) = beneath::open_parent(target_fd, rel).at(&d)?;
        if replace {
            use nix::sys::stat::{fstatat, SFlag};
            match fstatat(&ddir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    let flag = if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                        == SFlag::S_IFDIR
                    {
                        nix::unistd::UnlinkatFlags::RemoveDir
                    } else {
                        nix::unistd::UnlinkatFlags::NoRemoveDir
                    };
                    nix::unistd::unlinkat(&ddir, name, flag)
                        .map_err(io::Error::from)
                        .at(&d)?;
                }
                Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(Error::io(&d, e.into())),
            }
        }
        // rename(2) replaces a file or symlink atomically.
        nix::fcntl::renameat(&sdir, name, &ddir, name)
            .map_err(io::Error::from)
            .at(&d)?;
    }
    Ok(())
}

fn plan(
    archive: &Path,
    staging: &Path,
    target: &Path,
    rel: &Path,
    steps: &mut Vec<Step>,
) -> Result<()> {
    let dir = staging.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .at(&dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .at(&dir)?;
    names.sort();
    for name in names {
        let r = rel.join(&name);
        let s = staging.join(&r);
        let d = target.join(&r);
        let s_dir = std::fs::symlink_metadata(&s).at(&s)?.is_dir();
        match std::fs::symlink_metadata(&d) {
            Err(_) => steps.push(Step::Rename(r)),
            Ok(dm) if dm.is_dir() => {
                if s_dir {
                    plan(archive, staging, target, &r, steps)?;
                } else if std::fs::read_dir(&d).at(&d)?.next().is_none() {
                    // An empty directory where the archive has a file: rmdir then rename.
                    steps.push(Step::Replace(r));
                } else {
                    return Err(Error::entry(
                        archive,
                        r.to_string_lossy(),
                        "the target has a non-empty directory where the archive has a file",
                    ));
                }
            }
            Ok(_) if s_dir => steps.push(Step::Replace(r)),
            Ok(_) => steps.push(Step::Rename(r)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::{select_files, ArchiveSpec};
    use crate::{write_archive, WriteOptions};

    /// An archive of `dirs` made-up directories plus the few entries of a small tree, in `format`.
    fn archive(dir: &Path, format: Format, dirs: usize) -> (PathBuf, usize) {
        let tree = dir.join("t");
        std::fs::create_dir_all(tree.join("a")).unwrap();
        std::fs::write(tree.join("a/f"), "x").unwrap();
        let mut sel = select_files(
            &tree,
            &ArchiveSpec {
                paths: vec![".".into()],
                ..Default::default()
            },
        )
        .unwrap();
        sel.add_made_up_dirs(dirs);
        let out = dir.join(format!("a{}", format.extension()));
        let opts = WriteOptions {
            format,
            ..Default::default()
        };
        write_archive(&sel, &out, &opts).unwrap();
        (out, sel.len())
    }

    fn refused_at(archive: &Path, max: usize) -> Option<usize> {
        let target = archive.with_extension("x");
        let opts = ExtractOptions {
            max_entries: Some(max),
            ..Default::default()
        };
        match extract(archive, &target, &opts) {
            Err(Error::TooManyEntries { limit, .. }) => Some(limit),
            Err(e) => panic!("{e}"),
            Ok(_) => {
                std::fs::remove_dir_all(&target).unwrap();
                None
            }
        }
    }

    #[test]
    fn an_archive_over_max_entries_is_refused_before_its_index_is_read() {
        let d = tempfile::tempdir().unwrap();
        for format in [Format::Zip, Format::TarZstd] {
            let (a, n) = archive(d.path(), format, 300);
            assert_eq!(refused_at(&a, n - 1), Some(n - 1), "{format:?}");
            assert_eq!(refused_at(&a, n), None, "{format:?}");
        }
    }

    #[test]
    fn a_zip64_end_record_gives_the_count_past_65535() {
        let d = tempfile::tempdir().unwrap();
        let (a, n) = archive(d.path(), Format::Zip, 70_000);
        let mut f = File::open(&a).unwrap();
        assert_eq!(zip_declared_entries(&mut f).unwrap(), Some(n as u64));
        // Not a zip: no count, the reader decides.
        let junk = d.path().join("junk");
        std::fs::write(&junk, vec![7u8; 100]).unwrap();
        assert_eq!(
            zip_declared_entries(&mut File::open(&junk).unwrap()).unwrap(),
            None
        );
    }
}
