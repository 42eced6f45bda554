//! The `gzip` artifact format, used for reports: one gzip member per regular file, concatenated, each with
//! the file's base name in the header's name field, its project-relative path in the comment field and its
//! mtime (runner `helpers/archives/gzip_create.go`, `writeGzipFile`). Anything but a regular file is an error
//! there, and here.

use std::io::{self, BufWriter, Write};

use flate2::{Compression, GzBuilder};

use crate::error::{Error, IoContext, Result};
use crate::select::{EntryKind, Selection};
use crate::zipwrite::temp_output;
use crate::{ArchiveStats, WriteOptions};

pub(crate) fn write_gzip(
    selection: &Selection,
    out: &std::path::Path,
    opts: &WriteOptions,
) -> Result<ArchiveStats> {
    let tmp = temp_output(out)?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file().try_clone().at(tmp.path())?);
    let mut stats = ArchiveStats::default();
    // Go's gzip levels: GitLab passes none, so gzip.DefaultCompression (6) whatever the level setting;
    // we honour the level (fastest = 1, there is no "store" in gzip).
    let level = Compression::new(opts.level.deflate().unwrap_or(1));
    for e in selection.iter() {
        if e.kind != EntryKind::File {
            return Err(Error::Invalid(format!(
                "the {:?} is not a regular file",
                e.name
            )));
        }
        let base = e.name.rsplit('/').next().unwrap_or(&e.name);
        // No symlink followed below the root (see `Selection::open_file`).
        let mut src = selection.open_file(&e).at(&e.path)?;
        let mut gz = GzBuilder::new()
            .filename(base.as_bytes())
            .comment(e.name.as_bytes())
            .mtime(u32::try_from(e.mtime.max(0)).unwrap_or(u32::MAX))
            .write(&mut w, level);
        stats.uncompressed_bytes += io::copy(&mut src, &mut gz).at(&e.path)?;
        gz.finish().at(tmp.path())?;
        stats.entries += 1;
    }
    w.flush().at(tmp.path())?;
    drop(w);
    stats.archive_bytes = tmp.as_file().metadata().at(tmp.path())?.len();
    tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
    Ok(stats)
}
