//! One job's `trace.log` on disk, capped (issue 17): a job cannot make the journal grow without end.
//!
//! A job's trace is written as it comes until it reaches the cap ([`trace_cap`]: `[journal] max_trace_mb`, by
//! default four times `output_limit`). Past the cap the journal keeps two things: the **head** GitLab got (the
//! first `output_limit` bytes, so a restarted service still sends GitLab the copy it had) and the **tail** (the
//! end of a failing job matters most). While the job runs, `trace.log` holds everything up to the cap and a note
//! saying what happens next; the rest goes to tail segments beside it (`trace.tail.<n>`, each of a fixed size,
//! the oldest removed once the newer ones hold a whole tail). When the job ends, `trace.log` is rebuilt as the
//! head, a note (how many bytes were dropped, and where) and the last bytes, starting at a line, and takes the
//! old one's place by `rename` — a reader that has it open keeps reading the old one whole.
//!
//! Disk use of one job: at most the cap once it ended; while it runs, at most the cap plus one and a half tails
//! (the segments), plus the rebuilt file for a moment at its end.
//!
//! The free-space floor (`space.rs`) is checked here too: below it, the job's trace stops with a note.
//!
//! State owned: the open `trace.log` and tail segment, their sizes, whether the floor stopped this trace.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::space::{SpaceGuard, CHECK_EVERY};
use crate::store::TRACE_FILE;

const MIB: u64 = 1024 * 1024;
/// The smallest cap when none is configured: below this, the journal would keep little more than GitLab has.
pub const MIN_DEFAULT_TRACE_CAP: u64 = 16 * MIB;
/// The least tail kept past the head, whatever `max_trace_mb` says.
pub const MIN_TAIL: u64 = MIB;
/// Room in the cap for the note between head and tail.
const NOTE_ROOM: u64 = 1024;
/// How far into the tail a line start is looked for (the tail starts at a line, not inside one).
const LINE_SEARCH: u64 = 64 * 1024;
/// Tail segments: `trace.tail.<n>`.
pub(crate) const SEGMENT_PREFIX: &str = "trace.tail.";
/// Where the rebuilt trace is written before it takes `trace.log`'s place.
const REBUILT: &str = ".trace.log.new";

const YELLOW: &str = "\x1b[33;1m";
const RESET: &str = "\x1b[0;m";

/// The cap on one job's trace when `[journal] max_trace_mb` is not set: four times `output_limit` (at least
/// [`MIN_DEFAULT_TRACE_CAP`]). Why: the journal exists for what GitLab does not keep — the output past
/// `output_limit` — so it keeps GitLab's head and three times as much of the end; at GitLab's default limit
/// (4 MiB) that is 16 MiB, ~150,000 lines of the end of a failing job. A runaway job then costs the disk at most
/// that (while it runs, ~1.6 times that), and the default retention (5 GiB) holds 320 of them: one job wrote
/// 1 GB in 5 s before this cap, and retention never touches a running job.
pub fn default_trace_cap(output_limit: u64) -> u64 {
    output_limit.saturating_mul(4).max(MIN_DEFAULT_TRACE_CAP)
}

/// The cap in force for a job: `max_trace` (bytes) or the default, never below the head GitLab got plus
/// [`MIN_TAIL`] (a restarted service reads the head back to finalise the job towards GitLab).
pub fn trace_cap(max_trace: Option<u64>, output_limit: u64) -> u64 {
    let least = output_limit
        .saturating_add(MIN_TAIL)
        .saturating_add(NOTE_ROOM);
    max_trace
        .unwrap_or_else(|| default_trace_cap(output_limit))
        .max(least)
}

/// A cap and the head it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cap {
    /// Most bytes of the trace once the job ended.
    pub(crate) total: u64,
    /// Bytes kept from the start: GitLab's copy (`output_limit`).
    pub(crate) head: u64,
}

impl Cap {
    /// `total` as [`trace_cap`] gave it (a smaller one, from an edited record, is raised the same way).
    pub(crate) fn new(total: u64, output_limit: u64) -> Cap {
        Cap {
            total: total.max(trace_cap(Some(0), output_limit)),
            head: output_limit,
        }
    }

    /// Bytes of the end kept.
    pub(crate) fn tail(&self) -> u64 {
        self.total - self.head - NOTE_ROOM
    }

    /// Size of a tail segment: half a tail, so that removing the oldest segment still leaves a whole tail.
    fn segment(&self) -> u64 {
        (self.tail() / 2).max(1)
    }
}

struct Segment {
    seq: u64,
    len: u64,
}

/// Past the cap: the segments on disk (oldest first, all but the last full) and the last one, open.
struct Tail {
    segments: VecDeque<Segment>,
    current: File,
}

/// What a write changed that the job's metadata should say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The floor stopped the trace: the note.
    Stopped(String),
}

pub(crate) struct TraceWriter {
    dir: PathBuf,
    file: File,
    /// Bytes in `trace.log`.
    len: u64,
    /// Whether the last byte written to `trace.log` ends a line.
    at_line_start: bool,
    cap: Option<Cap>,
    tail: Option<Tail>,
    space: Arc<SpaceGuard>,
    since_check: u64,
    stopped: bool,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{seq}"))
}

/// The tail segments in `dir`, oldest first.
fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SEGMENT_PREFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(Segment {
            seq,
            len: e.metadata()?.len(),
        });
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

fn last_byte_is_newline(file: &File, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let mut b = [0u8; 1];
    matches!(file.read_at(&mut b, len - 1), Ok(1)) && b[0] == b'\n'
}

impl TraceWriter {
    /// A new, empty `trace.log` in `dir` under `cap` (`None`: no cap).
    pub(crate) fn create(
        dir: &Path,
        cap: Option<Cap>,
        space: Arc<SpaceGuard>,
    ) -> io::Result<TraceWriter> {
        let file = open_append(&dir.join(TRACE_FILE))?;
        Ok(TraceWriter {
            dir: dir.to_path_buf(),
            file,
            len: 0,
            at_line_start: true,
            cap,
            tail: None,
            space,
            // The first write looks at the free space.
            since_check: CHECK_EVERY,
            stopped: false,
        })
    }

    /// The trace of a job a previous service left (recovery): appending goes on where it stopped, past the cap
    /// into its tail segments; a rebuild the previous service did not finish is undone or completed.
    pub(crate) fn reopen(
        dir: &Path,
        cap: Option<Cap>,
        space: Arc<SpaceGuard>,
    ) -> io::Result<TraceWriter> {
        let _ = std::fs::remove_file(dir.join(REBUILT));
        let file = open_append(&dir.join(TRACE_FILE))?;
        let len = file.metadata()?.len();
        let mut w = TraceWriter {
            dir: dir.to_path_buf(),
            at_line_start: last_byte_is_newline(&file, len),
            file,
            len,
            cap,
            tail: None,
            space,
            since_check: CHECK_EVERY,
            stopped: false,
        };
        let segments = list_segments(dir)?;
        match cap {
            // Past the cap (its note written): go on in the tail.
            Some(c) if len > c.total => {
                let next = segments.last().map(|s| s.seq).unwrap_or(0);
                let current = open_append(&segment_path(dir, next))?;
                let mut segments: VecDeque<Segment> = segments.into();
                if segments.is_empty() {
                    segments.push_back(Segment { seq: 0, len: 0 });
                }
                w.tail = Some(Tail { segments, current });
            }
            // Rebuilt already; the segments outlived a crash.
            _ => {
                for s in segments {
                    let _ = std::fs::remove_file(segment_path(dir, s.seq));
                }
            }
        }
        Ok(w)
    }

    /// Writes `buf` (or drops it past the floor). `Ok(Some(event))` when the metadata should change.
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<Option<Event>> {
        if self.stopped || buf.is_empty() {
            return Ok(None);
        }
        self.since_check = self.since_check.saturating_add(buf.len() as u64);
        if self.since_check >= CHECK_EVERY || self.space.is_low() {
            self.since_check = 0;
            if let Some(note) = self.space.check() {
                self.stopped = true;
                // The one line that says why the trace ends here.
                let line = format!(
                    "{}{YELLOW}runwright journal: {note}{RESET}\n",
                    if self.at_line_start { "" } else { "\n" }
                );
                self.append(line.as_bytes())?;
                return Ok(Some(Event::Stopped(note)));
            }
        }
        self.append(buf)?;
        Ok(None)
    }

    fn append(&mut self, mut buf: &[u8]) -> io::Result<()> {
        let Some(cap) = self.cap else {
            return self.append_log(buf);
        };
        if self.tail.is_none() {
            let room = usize::try_from(cap.total.saturating_sub(self.len)).unwrap_or(usize::MAX);
            if buf.len() <= room {
                return self.append_log(buf);
            }
            let (fits, rest) = buf.split_at(room);
            self.append_log(fits)?;
            self.start_tail(cap)?;
            buf = rest;
        }
        self.append_tail(cap, buf)
    }

    fn append_log(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        if let Some(last) = buf.last() {
            self.at_line_start = *last == b'\n';
        }
        Ok(())
    }

    /// The trace reached the cap: the note for whoever reads it while the job runs, and the first segment.
    fn start_tail(&mut self, cap: Cap) -> io::Result<()> {
        let note = format!(
            "{}{YELLOW}runwright journal: this job's output passed {} bytes, the journal's limit for one job's trace \
             ([journal] max_trace_mb). When the job ends the journal keeps the first {} bytes (what GitLab got), a \
             note of what was dropped, and the last {} bytes; until then the rest is not shown here.{RESET}\n",
            if self.at_line_start { "" } else { "\n" },
            cap.total,
            cap.head,
            cap.tail()
        );
        self.append_log(note.as_bytes())?;
        let current = open_append(&segment_path(&self.dir, 0))?;
        self.tail = Some(Tail {
            segments: VecDeque::from([Segment { seq: 0, len: 0 }]),
            current,
        });
        Ok(())
    }

    fn append_tail(&mut self, cap: Cap, mut buf: &[u8]) -> io::Result<()> {
        let seg_size = cap.segment();
        let keep = cap.tail();
        let dir = self.dir.clone();
        let Some(tail) = self.tail.as_mut() else {
            return Ok(());
        };
        while !buf.is_empty() {
            let Some(&Segment { seq, len }) = tail.segments.back() else {
                return Ok(());
            };
            if len >= seg_size {
                tail.current = open_append(&segment_path(&dir, seq + 1))?;
                tail.segments.push_back(Segment {
                    seq: seq + 1,
                    len: 0,
                });
                continue;
            }
            let n = usize::try_from(seg_size - len)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            tail.current.write_all(&buf[..n])?;
            if let Some(last) = tail.segments.back_mut() {
                last.len += n as u64;
            }
            buf = &buf[n..];
            // The oldest segment goes once the newer ones hold a whole tail.
            loop {
                let total: u64 = tail.segments.iter().map(|s| s.len).sum();
                match tail.segments.front() {
                    Some(first) if tail.segments.len() > 1 && total - first.len >= keep => {
                        let seq = first.seq;
                        std::fs::remove_file(segment_path(&dir, seq))?;
                        tail.segments.pop_front();
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// The job ended: a trace past its cap is rebuilt as head + note + tail. Returns the bytes dropped.
    /// `sync` flushes the trace to disk (a GitLab job: its record must survive a crash of the machine).
    pub(crate) fn finish(&mut self, sync: bool) -> io::Result<u64> {
        let dropped = match (self.cap, self.tail.take()) {
            (Some(cap), Some(tail)) => {
                let r = self.rebuild(cap, &tail, sync);
                drop(tail);
                for s in list_segments(&self.dir).unwrap_or_default() {
                    let _ = std::fs::remove_file(segment_path(&self.dir, s.seq));
                }
                if r.is_err() {
                    let _ = std::fs::remove_file(self.dir.join(REBUILT));
                }
                r?
            }
            _ => {
                if sync {
                    self.file.sync_data()?;
                }
                0
            }
        };
        Ok(dropped)
    }

    fn rebuild(&mut self, cap: Cap, tail: &Tail, sync: bool) -> io::Result<u64> {
        let seg_size = cap.segment();
        let first_seq = tail.segments.front().map_or(0, |s| s.seq);
        // Everything after the head, in order: trace.log past the head (only while the first segment is still
        // there, else a gap lies between them), then the segments.
        let log = self.dir.join(TRACE_FILE);
        let mut pieces: Vec<(PathBuf, u64, u64)> = Vec::new();
        if first_seq == 0 {
            pieces.push((log.clone(), cap.head, cap.total - cap.head));
        }
        for s in &tail.segments {
            pieces.push((segment_path(&self.dir, s.seq), 0, s.len));
        }
        let available: u64 = pieces.iter().map(|p| p.2).sum();
        // All the output past the head: trace.log up to the cap, the segments removed, the ones left.
        let past_head = (cap.total - cap.head)
            + first_seq.saturating_mul(seg_size)
            + tail.segments.iter().map(|s| s.len).sum::<u64>();
        let mut skip = available.saturating_sub(cap.tail());
        skip += line_start(&pieces, skip)?;
        let kept = available - skip;
        let dropped = past_head - kept;

        let mut head = File::open(&log)?;
        let mut head_end = [0u8; 1];
        let head_ends_line = cap.head == 0
            || (head.read_at(&mut head_end, cap.head - 1)? == 1 && head_end[0] == b'\n');
        let rebuilt_path = self.dir.join(REBUILT);
        let mut out = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&rebuilt_path)?;
        io::copy(&mut (&mut head).take(cap.head), &mut out)?;
        let note = format!(
            "{}{YELLOW}runwright journal: {dropped} bytes of this job's output were dropped here (bytes {} to {} of \
             its trace) to keep the journal's copy within {} bytes ([journal] max_trace_mb); the last {kept} bytes \
             follow.{RESET}\n",
            if head_ends_line { "" } else { "\n" },
            cap.head,
            cap.head + dropped,
            cap.total
        );
        out.write_all(note.as_bytes())?;
        let mut to_skip = skip;
        for (path, start, len) in &pieces {
            if to_skip >= *len {
                to_skip -= len;
                continue;
            }
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(start + to_skip))?;
            io::copy(&mut f.take(len - to_skip), &mut out)?;
            to_skip = 0;
        }
        if sync {
            out.sync_data()?;
        }
        let len = out.stream_position()?;
        drop(out);
        std::fs::rename(&rebuilt_path, &log)?;
        self.file = open_append(&log)?;
        self.len = len;
        Ok(dropped)
    }
}

/// How many bytes past `at` (in the concatenation of `pieces`) the next line starts, looking at most
/// [`LINE_SEARCH`] bytes ahead; 0 when `at` is already at a line start or no line starts near it.
fn line_start(pieces: &[(PathBuf, u64, u64)], at: u64) -> io::Result<u64> {
    if at == 0 {
        return Ok(0);
    }
    // From the byte before `at`: a `\n` there means `at` starts a line.
    let window = read_span(pieces, at - 1, LINE_SEARCH + 1)?;
    match window.split_first() {
        Some((b'\n', _)) | None => Ok(0),
        Some((_, rest)) => Ok(rest
            .iter()
            .position(|c| *c == b'\n')
            .map_or(0, |i| i as u64 + 1)),
    }
}

/// Up to `len` bytes from `offset` of the concatenation of `pieces` (path, start, length).
fn read_span(pieces: &[(PathBuf, u64, u64)], offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for (path, start, plen) in pieces {
        let end = pos + plen;
        let want_from = offset + out.len() as u64;
        if (out.len() as u64) < len && want_from < end && want_from >= pos {
            let from = want_from - pos;
            let n = (len - out.len() as u64).min(plen - from);
            let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
            let got = read_full_at(&File::open(path)?, &mut buf, start + from)?;
            out.extend_from_slice(&buf[..got]);
            if got < buf.len() {
                break;
            }
        }
        pos = end;
    }
    Ok(out)
}

fn read_full_at(f: &File, buf: &mut [u8], mut offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset)? {
            0 => break,
            k => {
                n += k;
                offset += k as u64;
            }
        }
    }
    Ok(n)
}
