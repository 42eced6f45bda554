//! Where a compressed entry waits between its worker and the writer: memory while the shared budget allows,
//! a temporary spill file otherwise. This is what keeps parallel compression bounded in memory: the sum of all
//! in-memory buffers never exceeds [`MemoryBudget`]'s cap, and a buffer that outgrows its reservation moves
//! itself to disk instead of growing.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A shared cap on bytes held in memory by [`SpillBuffer`]s.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    cap: usize,
    used: Mutex<usize>,
}

impl MemoryBudget {
    pub(crate) fn new(cap: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            cap,
            used: Mutex::new(0),
        })
    }

    /// Reserves `n` bytes if they fit; never blocks (an entry that does not fit is spilled instead).
    pub(crate) fn try_reserve(self: &Arc<Self>, n: usize) -> Option<Reservation> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if *used + n > self.cap {
            return None;
        }
        *used += n;
        Some(Reservation {
            budget: Arc::clone(self),
            bytes: n,
        })
    }

    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Bytes reserved from a [`MemoryBudget`], given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(self.bytes);
    }
}

/// A `Write + Seek + Read` sink that lives in memory up to its reservation and then moves to a temporary
/// file in `dir`.
#[derive(Debug)]
pub(crate) struct SpillBuffer {
    inner: Inner,
    dir: PathBuf,
}

#[derive(Debug)]
enum Inner {
    Memory {
        cursor: Cursor<Vec<u8>>,
        reservation: Reservation,
    },
    File(File),
    /// Transitional state, only seen if creating the spill file failed.
    Broken,
}

impl SpillBuffer {
    /// In memory with `reservation` as the limit.
    pub(crate) fn memory(reservation: Reservation, dir: &Path) -> SpillBuffer {
        let cap = reservation.bytes;
        SpillBuffer {
            inner: Inner::Memory {
                cursor: Cursor::new(Vec::with_capacity(cap.min(1 << 16))),
                reservation,
            },
            dir: dir.to_path_buf(),
        }
    }

    /// Straight to a spill file.
    pub(crate) fn file(dir: &Path) -> io::Result<SpillBuffer> {
        Ok(SpillBuffer {
            inner: Inner::File(tempfile::tempfile_in(dir)?),
            dir: dir.to_path_buf(),
        })
    }

    pub(crate) fn is_spilled(&self) -> bool {
        matches!(self.inner, Inner::File(_))
    }

    fn spill(&mut self) -> io::Result<()> {
        let old = std::mem::replace(&mut self.inner, Inner::Broken);
        if let Inner::Memory {
            cursor,
            reservation,
        } = old
        {
            let pos = cursor.position();
            let mut file = tempfile::tempfile_in(&self.dir)?;
            file.write_all(cursor.get_ref())?;
            file.seek(SeekFrom::Start(pos))?;
            drop(cursor);
            drop(reservation);
            self.inner = Inner::File(file);
        } else {
            self.inner = old;
        }
        Ok(())
    }
}

fn broken() -> io::Error {
    io::Error::other("spill buffer unusable after a failed spill")
}

impl Write for SpillBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Inner::Memory {
            cursor,
            reservation,
        } = &self.inner
        {
            let end = cursor.position() as usize + buf.len();
            if end > reservation.bytes {
                self.spill()?;
            }
        }
        match &mut self.inner {
            Inner::Memory { cursor, .. } => cursor.write(buf),
            Inner::File(f) => f.write(buf),
            Inner::Broken => Err(broken()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Memory { .. } => Ok(()),
            Inner::File(f) => f.flush(),
            Inner::Broken => Err(broken()),
        }
    }
}

impl Seek for SpillBuffer {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match &mut self.inner {
            Inner::Memory { cursor, .. } => cursor.seek(pos),
            Inner::File(f) => f.seek(pos),
            Inner::Broken => Err(broken()),
        }
    }
}

impl Read for SpillBuffer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Memory { cursor, .. } => cursor.read(buf),
            Inner::File(f) => f.read(buf),
            Inner::Broken => Err(broken()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_past_reservation_and_releases_budget() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(100);
        let r = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(60).is_none());
        let mut b = SpillBuffer::memory(r, dir.path());
        b.write_all(&[1u8; 50]).unwrap();
        assert!(!b.is_spilled());
        assert_eq!(budget.used(), 60);
        b.write_all(&[2u8; 50]).unwrap();
        assert!(b.is_spilled());
        assert_eq!(budget.used(), 0);
        b.seek(SeekFrom::Start(0)).unwrap();
        let mut all = Vec::new();
        b.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(all[49], 1);
        assert_eq!(all[50], 2);
    }
}
