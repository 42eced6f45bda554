//! The `tarzstd` cache format (`CACHE_COMPRESSION_FORMAT=tarzstd`): a tar stream of the sorted selection,
//! compressed with zstd (runner `commands/helpers/archive/tarzstd/tarzstd_archiver.go`): directory names end in
//! `/`, symlinks carry their target, irregular files are skipped. zstd's own worker threads compress in
//! parallel, with memory bounded by zstd's window and job sizes, so no pool of ours is needed here.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use crate::error::{Error, IoContext, Result};
use crate::select::{EntryKind, Selection};
use crate::zipwrite::temp_output;
use crate::{ArchiveStats, WriteOptions};

pub(crate) fn write_tar_zstd(
    selection: &Selection,
    out: &std::path::Path,
    opts: &WriteOptions,
) -> Result<ArchiveStats> {
    let tmp = temp_output(out)?;
    let file = BufWriter::with_capacity(1 << 20, tmp.as_file().try_clone().at(tmp.path())?);
    let mut enc = zstd::Encoder::new(file, opts.level.zstd()).at(tmp.path())?;
    let workers = opts.effective_workers();
    if workers > 1 {
        // Ignored (an error we do not need) when libzstd is built without threads.
        let _ = enc.multithread(workers as u32);
    }
    let mut tb = tar::Builder::new(enc);
    tb.follow_symlinks(false);
    let mut stats = ArchiveStats::default();
    for e in selection.iter() {
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_mtime(e.mtime.max(0) as u64);
        h.set_uid(e.uid as u64);
        h.set_gid(e.gid as u64);
        let name_err = |err: io::Error| Error::Io {
            path: e.path.clone(),
            source: err,
        };
        match &e.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tb.append_data(&mut h, format!("{}/", e.name), io::empty())
                    .map_err(name_err)?;
            }
            EntryKind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tb.append_link(&mut h, &e.name, target).map_err(name_err)?;
            }
            EntryKind::File => {
                // No symlink followed below the root (see `Selection::open_file`).
                let src = selection.open_file(&e).at(&e.path)?;
                // The header needs the size up front: read exactly the size we stat now (a file growing
                // meanwhile is cut, one shrinking fails), as Go's tar writer does.
                let size = src.metadata().at(&e.path)?.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(size);
                tb.append_data(&mut h, &e.name, io::Read::take(src, size))
                    .map_err(name_err)?;
                stats.uncompressed_bytes += size;
            }
        }
        stats.entries += 1;
    }
    let enc = tb.into_inner().at(tmp.path())?;
    let mut file = enc.finish().at(tmp.path())?;
    file.flush().at(tmp.path())?;
    drop(file);
    stats.archive_bytes = tmp.as_file().metadata().at(tmp.path())?.len();
    let _: &File = tmp.as_file();
    tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
    Ok(stats)
}
