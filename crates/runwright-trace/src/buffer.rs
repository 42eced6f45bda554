//! The job log buffer: what the trace-patch loop sends to GitLab and checksums at the end.
//!
//! Mirrors GitLab's `helpers/trace/buffer.go` (`Buffer`, `limitWriter`) fed by the per-stream
//! chains of `common/buildlogger/build_logger.go` (`Logger.wrap`). The runner's own messages
//! ([`TraceBuffer::write`]) and each output stream of a stage ([`TraceBuffer::stream`]) have a
//! chain of their own; every write goes:
//!
//! 1. through its stream's [`Masker`] (phrases → URL parameters → token prefixes);
//! 2. with `FF_TIMESTAMPS`, through its stream's timestamper ([`crate::timestamp`]);
//! 3. through Go-compatible invalid-UTF-8 replacement ([`crate::utf8`]), shared by all streams;
//! 4. to the optional sink (the full masked log, for the journal);
//! 5. through the output limit: the prefix up to `output_limit` bytes is kept (cut on a UTF-8
//!    boundary), GitLab's bold-yellow notice is appended once, and later output is dropped
//!    while the job goes on;
//! 6. into the stored log, the CRC32 and the byte count, and followers are notified.
//!
//! State owned (behind one mutex, so writes from several threads never interleave inside a
//! write): the streams' maskers and timestampers, the stored bytes (bounded by the limit plus the
//! notice), the checksum, the finished flag and the sink. Large writes are processed in 64 KiB
//! slices so temporary memory stays bounded too.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::ansi::{BOLD_YELLOW, RESET};
use crate::masker::Masker;
use crate::timestamp::{StreamType, Timestamper, STREAM_EXECUTOR};
use crate::utf8::Utf8Sanitizer;

/// GitLab's default `output_limit` (4096 KiB), in bytes (`helpers/trace/buffer.go`:
/// `defaultBytesLimit`).
pub const DEFAULT_OUTPUT_LIMIT: usize = 4 * 1024 * 1024;

/// Slice size for processing large writes.
const SLICE: usize = 64 * 1024;

/// What a [`TraceBuffer`] is built with. `Debug` shows how many masked values there are, never
/// the values.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceOptions {
    /// Maximum stored bytes (GitLab `output_limit` KiB × 1024), not counting the notice.
    pub output_limit: usize,
    /// Values of masked variables.
    pub masked: Vec<String>,
    /// Extra token prefixes (`features.token_mask_prefixes`); GitLab's default ones are masked
    /// too (see `mask_all_default_tokens`).
    pub token_prefixes: Vec<String>,
    /// The job's `FF_MASK_ALL_DEFAULT_TOKENS` (default on): mask every default prefix of
    /// GitLab's (`glrt-`, `gldt-`, …), not only `glpat-`.
    pub mask_all_default_tokens: bool,
    /// The job's `FF_TIMESTAMPS`: a timestamp header on every line. Off by default here (bytes
    /// go in as they come out); the service turns it on with the flag's resolved value.
    pub timestamps: bool,
}

impl std::fmt::Debug for TraceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceOptions")
            .field("output_limit", &self.output_limit)
            .field("masked", &format_args!("[{} values]", self.masked.len()))
            .field("token_prefixes", &self.token_prefixes)
            .field("mask_all_default_tokens", &self.mask_all_default_tokens)
            .field("timestamps", &self.timestamps)
            .finish()
    }
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            output_limit: DEFAULT_OUTPUT_LIMIT,
            masked: Vec::new(),
            token_prefixes: Vec::new(),
            mask_all_default_tokens: true,
            timestamps: false,
        }
    }
}

/// The notice GitLab appends when the log reaches the limit (`limitWriter.
/// writeLimitExceededMessage` in `helpers/trace/buffer.go`).
pub fn limit_exceeded_notice(limit: usize) -> String {
    format!(
        "\n{BOLD_YELLOW}Job's log exceeded limit of {limit} bytes.\n\
         Job execution will continue but no more output will be collected.{RESET}\n"
    )
}

/// The job log on its way to GitLab. Cheap to clone (shared state), `Send + Sync`.
#[derive(Clone)]
pub struct TraceBuffer {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    len_tx: watch::Sender<u64>,
}

/// Where a write goes in: one stream's masking chain and timestamper.
struct Stream {
    masker: Masker,
    stamper: Option<Timestamper>,
}

/// The clock of the timestamps (replaced in tests).
type Clock = fn() -> std::time::SystemTime;

struct Inner {
    /// The masker every new stream starts from: masked phrases learned so far, no state.
    template: Masker,
    /// Open streams by slot; slot 0 is the runner's own (`00O`), open until the end.
    streams: Vec<Option<Stream>>,
    timestamps: bool,
    clock: Clock,
    utf8: Utf8Sanitizer,
    limit: usize,
    /// The notice has been written (or the limit is 0): further output is dropped.
    limited: bool,
    log: Vec<u8>,
    crc: crc32fast::Hasher,
    finished: bool,
    sink: Option<Box<dyn Write + Send>>,
    masked_scratch: Vec<u8>,
    stamped_scratch: Vec<u8>,
    utf8_scratch: Vec<u8>,
}

impl std::fmt::Debug for TraceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("TraceBuffer")
            .field("len", &inner.log.len())
            .field("limit", &inner.limit)
            .field("limited", &inner.limited)
            .field("finished", &inner.finished)
            .field("sink", &inner.sink.is_some())
            .finish()
    }
}

impl TraceBuffer {
    pub fn new(opts: TraceOptions) -> Self {
        let (len_tx, _) = watch::channel(0u64);
        let template = Masker::with_default_tokens(
            &opts.masked,
            &opts.token_prefixes,
            opts.mask_all_default_tokens,
        );
        let mut inner = Inner {
            template,
            streams: Vec::new(),
            timestamps: opts.timestamps,
            clock: std::time::SystemTime::now,
            utf8: Utf8Sanitizer::default(),
            limit: opts.output_limit,
            limited: false,
            log: Vec::new(),
            crc: crc32fast::Hasher::new(),
            finished: false,
            sink: None,
            masked_scratch: Vec::new(),
            stamped_scratch: Vec::new(),
            utf8_scratch: Vec::new(),
        };
        inner.open(STREAM_EXECUTOR, StreamType::Stdout);
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
                len_tx,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state for a log: keep going.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends the runner's own output (stream `00`, stdout): masked, timestamped (with
    /// `FF_TIMESTAMPS`), UTF-8 fixed, teed to the sink, then limited and stored. Ignored after
    /// [`TraceBuffer::finish`].
    pub fn write(&self, data: &[u8]) {
        self.write_to(0, data);
    }

    /// Opens an output stream of its own (gitlab-runner's `Logger.Stream`): a fresh masking
    /// chain and, with timestamps, lines headed `<time> <number><O|E>`. What is left of an
    /// unfinished line or held back by the masker goes out when the stream is closed (or
    /// dropped), as when a stage's output ends.
    pub fn stream(&self, number: u8, stream_type: StreamType) -> TraceStream {
        let slot = self.lock().open(number, stream_type);
        TraceStream {
            buffer: self.clone(),
            slot,
        }
    }

    fn write_to(&self, slot: usize, data: &[u8]) {
        let mut inner = self.lock();
        if inner.finished || data.is_empty() {
            return;
        }
        let before = inner.log.len();
        for slice in data.chunks(SLICE) {
            if inner.limited && inner.sink.is_none() {
                // Nothing can be stored any more and nobody wants the rest.
                break;
            }
            inner.process(slot, slice);
        }
        self.notify_if_grown(&inner, before);
    }

    fn close_stream(&self, slot: usize) {
        let mut inner = self.lock();
        if inner.finished {
            return;
        }
        let before = inner.log.len();
        inner.close(slot);
        self.notify_if_grown(&inner, before);
    }

    /// Flushes bytes the masker held back, then marks the log finished (later writes are
    /// ignored). Followers are notified once more.
    pub fn finish(&self) {
        let mut inner = self.lock();
        if inner.finished {
            return;
        }
        let before = inner.log.len();
        inner.finish();
        self.notify_if_grown(&inner, before);
        self.shared.len_tx.send_replace(inner.log.len() as u64);
    }

    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// Bytes stored (after masking and the output limit): GitLab's `bytesize`.
    pub fn len(&self) -> u64 {
        self.lock().log.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.lock().log.is_empty()
    }

    /// Whether the output limit was reached (the notice is in the log).
    pub fn limit_exceeded(&self) -> bool {
        self.lock().limited
    }

    /// Stored bytes `[offset, offset + max)`, clamped to what is stored.
    pub fn read(&self, offset: u64, max: usize) -> Vec<u8> {
        let inner = self.lock();
        let len = inner.log.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(max).min(len);
        inner.log[start..end].to_vec()
    }

    /// `crc32:%08x` (IEEE) over all stored bytes, as GitLab checks it (`Buffer.Checksum`).
    pub fn checksum(&self) -> String {
        let crc = self.lock().crc.clone().finalize();
        format!("crc32:{crc:08x}")
    }

    /// Masks `value` from now on (e.g. a file variable's contents learned late). Output still
    /// held back by the masker is re-examined; output already stored cannot be changed.
    pub fn add_masked(&self, value: &str) {
        let mut inner = self.lock();
        if inner.finished {
            return;
        }
        let before = inner.log.len();
        inner.add_masked(value);
        self.notify_if_grown(&inner, before);
    }

    /// A receiver that sees [`TraceBuffer::len`] after every append (and once on finish).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.len_tx.subscribe()
    }

    /// Tees every byte from now on, after masking but **before** the output limit (the full
    /// log, for the journal). A failing sink is dropped with a warning.
    pub fn set_sink(&self, sink: Box<dyn Write + Send>) {
        self.lock().sink = Some(sink);
    }

    /// Timestamps from `clock` instead of the system's (tests).
    #[cfg(test)]
    fn set_clock(&self, clock: Clock) {
        self.lock().clock = clock;
    }

    fn notify_if_grown(&self, inner: &Inner, before: usize) {
        if inner.log.len() != before {
            self.shared.len_tx.send_replace(inner.log.len() as u64);
        }
    }
}

/// One output stream of a [`TraceBuffer`] (see [`TraceBuffer::stream`]). Closed when dropped.
pub struct TraceStream {
    buffer: TraceBuffer,
    slot: usize,
}

impl std::fmt::Debug for TraceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceStream")
            .field("slot", &self.slot)
            .finish()
    }
}

impl TraceStream {
    /// Appends output of this stream (see [`TraceBuffer::write`]).
    pub fn write(&self, data: &[u8]) {
        self.buffer.write_to(self.slot, data);
    }

    /// Ends the stream: its unfinished line and masked remainder go out.
    pub fn close(self) {}
}

impl Drop for TraceStream {
    fn drop(&mut self) {
        self.buffer.close_stream(self.slot);
    }
}

impl Inner {
    /// A new stream in a free slot; returns the slot.
    fn open(&mut self, number: u8, stream_type: StreamType) -> usize {
        let stream = Stream {
            masker: self.template.clone(),
            stamper: self
                .timestamps
                .then(|| Timestamper::new(stream_type, number)),
        };
        match self.streams.iter().skip(1).position(Option::is_none) {
            Some(free) => {
                self.streams[free + 1] = Some(stream);
                free + 1
            }
            None => {
                self.streams.push(Some(stream));
                self.streams.len() - 1
            }
        }
    }

    fn process(&mut self, slot: usize, slice: &[u8]) {
        let Some(stream) = self.streams.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        self.masked_scratch.clear();
        stream.masker.write_into(slice, &mut self.masked_scratch);
        self.after_masking(slot, false);
    }

    fn add_masked(&mut self, value: &str) {
        self.template.add_masked(value);
        for slot in 0..self.streams.len() {
            let Some(stream) = self.streams[slot].as_mut() else {
                continue;
            };
            self.masked_scratch.clear();
            stream
                .masker
                .add_masked_into(value, &mut self.masked_scratch);
            self.after_masking(slot, false);
        }
    }

    /// Closes a stream (`Close` of its chain): held-back bytes, then its unfinished line.
    fn close(&mut self, slot: usize) {
        let Some(mut stream) = self.streams.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.masked_scratch.clear();
        stream.masker.flush_into(&mut self.masked_scratch);
        self.stamped_scratch.clear();
        if let Some(stamper) = stream.stamper.as_mut() {
            stamper.write(&self.masked_scratch, &mut self.stamped_scratch, &self.clock);
            stamper.close(&mut self.stamped_scratch);
        } else {
            self.stamped_scratch.extend_from_slice(&self.masked_scratch);
        }
        self.after_stamping(false);
    }

    fn finish(&mut self) {
        // The stages' streams first, the runner's own last (its logger is closed last).
        for slot in (1..self.streams.len()).chain(std::iter::once(0)) {
            self.close(slot);
        }
        self.utf8_scratch.clear();
        self.utf8.flush(&mut self.utf8_scratch);
        self.store_utf8_scratch();
        if let Some(sink) = self.sink.as_mut() {
            if let Err(err) = sink.flush() {
                tracing::warn!(%err, "trace sink failed to flush; dropping it");
                self.sink = None;
            }
        }
        self.finished = true;
    }

    /// Timestamp `masked_scratch` (if the stream does), then UTF-8 fix, tee and store it.
    fn after_masking(&mut self, slot: usize, at_eof: bool) {
        let stamper = self
            .streams
            .get_mut(slot)
            .and_then(Option::as_mut)
            .and_then(|s| s.stamper.as_mut());
        self.stamped_scratch.clear();
        match stamper {
            Some(stamper) => {
                stamper.write(&self.masked_scratch, &mut self.stamped_scratch, &self.clock)
            }
            None => self.stamped_scratch.extend_from_slice(&self.masked_scratch),
        }
        self.after_stamping(at_eof);
    }

    /// UTF-8 fix `stamped_scratch`, then tee and store it.
    fn after_stamping(&mut self, at_eof: bool) {
        self.utf8_scratch.clear();
        self.utf8
            .write(&self.stamped_scratch, &mut self.utf8_scratch);
        if at_eof {
            self.utf8.flush(&mut self.utf8_scratch);
        }
        self.store_utf8_scratch();
    }

    fn store_utf8_scratch(&mut self) {
        if self.utf8_scratch.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.utf8_scratch);
        self.tee(&bytes);
        self.store(&bytes);
        self.utf8_scratch = bytes;
    }

    fn tee(&mut self, bytes: &[u8]) {
        if let Some(sink) = self.sink.as_mut() {
            if let Err(err) = sink.write_all(bytes) {
                tracing::warn!(%err, "trace sink failed; dropping it");
                self.sink = None;
            }
        }
    }

    /// `limitWriter.Write` of `helpers/trace/buffer.go`.
    fn store(&mut self, bytes: &[u8]) {
        if self.limited {
            return;
        }
        let written = self.log.len();
        if written >= self.limit {
            // Go: `capacity <= 0` → dropped silently (only reachable with a limit of 0).
            self.limited = true;
            return;
        }
        let capacity = self.limit - written;
        if bytes.len() >= capacity {
            // Go triggers the notice when a write reaches the limit exactly, too.
            let cut = truncate_safe_utf8(bytes, capacity);
            self.append(&bytes[..cut]);
            let notice = limit_exceeded_notice(self.limit);
            self.append(notice.as_bytes());
            self.limited = true;
        } else {
            self.append(bytes);
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        self.log.extend_from_slice(bytes);
        self.crc.update(bytes);
    }
}

/// Longest prefix of `p` of at most `capacity` bytes that does not split a character
/// (`truncateSafeUTF8` in `helpers/trace/buffer.go`; `p` is valid UTF-8 here).
fn truncate_safe_utf8(p: &[u8], capacity: usize) -> usize {
    let mut cut = capacity.min(p.len());
    // At most 3 continuation bytes precede a character boundary.
    for _ in 0..3 {
        if cut == 0 || cut == p.len() || (p[cut] & 0xC0) != 0x80 {
            break;
        }
        cut -= 1;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn opts(limit: usize, masked: &[&str]) -> TraceOptions {
        TraceOptions {
            output_limit: limit,
            masked: masked.iter().map(|s| s.to_string()).collect(),
            ..TraceOptions::default()
        }
    }

    fn all(t: &TraceBuffer) -> Vec<u8> {
        t.read(0, usize::MAX)
    }

    /// A sink that can be inspected after being handed over (also used by the property tests).
    #[derive(Clone, Default)]
    pub(super) struct SharedSink(pub(super) Arc<Mutex<Vec<u8>>>);
    impl Write for SharedSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl SharedSink {
        fn bytes(&self) -> Vec<u8> {
            self.0.lock().map(|v| v.clone()).unwrap_or_default()
        }
    }

    struct FailingSink;
    impl Write for FailingSink {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn options_debug_redacts_masked_values() {
        let dbg = format!("{:?}", opts(1, &["hunter22"]));
        assert!(!dbg.contains("hunter22"), "{dbg}");
        assert!(dbg.contains("[1 values]"), "{dbg}");
    }

    #[test]
    fn is_clone_send_sync() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<TraceBuffer>();
    }

    #[test]
    fn secret_split_at_every_two_points() {
        let input = b"$ echo $TOKEN\nS3cr3tV4lue and S3cr3tV4lue!";
        let want = b"$ echo $TOKEN\n[MASKED] and [MASKED]!";
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let t = TraceBuffer::new(opts(DEFAULT_OUTPUT_LIMIT, &["S3cr3tV4lue"]));
                t.write(&input[..i]);
                t.write(&input[i..j]);
                t.write(&input[j..]);
                t.finish();
                assert_eq!(all(&t), want, "split {i},{j}");
            }
        }
    }

    #[test]
    fn held_back_bytes_released_on_finish() {
        let t = TraceBuffer::new(opts(DEFAULT_OUTPUT_LIMIT, &["password"]));
        t.write(b"log: pass");
        assert_eq!(all(&t), b"log: ");
        assert!(!t.is_finished());
        t.finish();
        assert_eq!(all(&t), b"log: pass");
        assert!(t.is_finished());
        // Ignored once finished.
        t.write(b"more");
        t.add_masked("log");
        t.finish();
        assert_eq!(all(&t), b"log: pass");
    }

    #[test]
    fn token_and_url_params_across_writes() {
        let t = TraceBuffer::new(TraceOptions {
            token_prefixes: vec!["glcbt-".into()],
            ..TraceOptions::default()
        });
        for piece in [
            "curl https://gl/api?priv",
            "ate_token=abc",
            "def&x=1 glp",
            "at-AAA",
            "BBB glcbt-",
            "xyz",
        ] {
            t.write(piece.as_bytes());
        }
        t.finish();
        assert_eq!(
            String::from_utf8(all(&t)).expect("utf8"),
            "curl https://gl/api?private_token=[MASKED]&x=1 glpat-[MASKED] glcbt-[MASKED]"
        );
    }

    #[test]
    fn output_limit_keeps_prefix_and_appends_notice_once() {
        let t = TraceBuffer::new(opts(10, &[]));
        t.write(b"01234");
        t.write(b"56789abc");
        t.write(b"dropped");
        let notice = "\n\x1b[33;1mJob's log exceeded limit of 10 bytes.\n\
                      Job execution will continue but no more output will be collected.\x1b[0;m\n";
        let want = [b"0123456789".as_slice(), notice.as_bytes()].concat();
        assert_eq!(all(&t), want);
        assert_eq!(t.len(), want.len() as u64);
        assert!(t.limit_exceeded());
        t.finish();
        assert_eq!(all(&t), want);
    }

    #[test]
    fn reaching_the_limit_exactly_writes_the_notice_like_go() {
        let t = TraceBuffer::new(opts(4, &[]));
        t.write(b"abcd");
        assert_eq!(
            all(&t),
            [b"abcd".as_slice(), limit_exceeded_notice(4).as_bytes()].concat()
        );
        let t = TraceBuffer::new(opts(5, &[]));
        t.write(b"abcd");
        t.finish();
        assert_eq!(all(&t), b"abcd");
        assert!(!t.limit_exceeded());
    }

    #[test]
    fn output_limit_cuts_on_a_character_boundary() {
        // "€" is 3 bytes: a cut after 5 bytes would split it.
        let t = TraceBuffer::new(opts(5, &[]));
        t.write("abcd€xyz".as_bytes());
        assert_eq!(
            all(&t),
            [b"abcd".as_slice(), limit_exceeded_notice(5).as_bytes()].concat()
        );
        let t = TraceBuffer::new(opts(7, &[]));
        t.write("abcd€xyz".as_bytes());
        assert_eq!(
            all(&t),
            ["abcd€".as_bytes(), limit_exceeded_notice(7).as_bytes()].concat()
        );
    }

    #[test]
    fn zero_limit_drops_everything_silently_like_go() {
        let t = TraceBuffer::new(opts(0, &[]));
        t.write(b"abc");
        t.finish();
        assert!(t.is_empty());
    }

    #[test]
    fn invalid_utf8_replaced_go_style() {
        let t = TraceBuffer::new(TraceOptions::default());
        t.write(b"a\xE2\x82");
        t.write(b"\xACb\xE2\x82X\xFF");
        t.finish();
        assert_eq!(all(&t), "a€b\u{FFFD}\u{FFFD}X\u{FFFD}".as_bytes());
    }

    #[test]
    fn checksum_of_known_bytes() {
        let t = TraceBuffer::new(TraceOptions::default());
        assert_eq!(t.checksum(), "crc32:00000000");
        t.write(b"12345");
        t.write(b"6789");
        // The IEEE CRC32 check value.
        assert_eq!(t.checksum(), "crc32:cbf43926");
        let t = TraceBuffer::new(TraceOptions::default());
        t.write(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(t.checksum(), "crc32:414fa339");
    }

    #[test]
    fn checksum_covers_exactly_the_stored_bytes() {
        let t = TraceBuffer::new(opts(16, &["hunter2"]));
        t.write(b"pw=hunter2; and a long tail that is cut");
        t.finish();
        let mut h = crc32fast::Hasher::new();
        h.update(&all(&t));
        assert_eq!(t.checksum(), format!("crc32:{:08x}", h.finalize()));
    }

    #[test]
    fn read_ranges() {
        let t = TraceBuffer::new(TraceOptions::default());
        t.write(b"0123456789");
        assert_eq!(t.read(0, 4), b"0123");
        assert_eq!(t.read(4, 4), b"4567");
        assert_eq!(t.read(8, 100), b"89");
        assert_eq!(t.read(10, 5), b"");
        assert_eq!(t.read(u64::MAX, usize::MAX), b"");
        assert_eq!(t.read(3, 0), b"");
        assert_eq!(t.len(), 10);
    }

    #[test]
    fn subscribe_sees_every_append() {
        let t = TraceBuffer::new(opts(DEFAULT_OUTPUT_LIMIT, &["secret"]));
        let mut rx = t.subscribe();
        assert_eq!(*rx.borrow_and_update(), 0);
        t.write(b"hello ");
        assert!(rx.has_changed().unwrap_or(false));
        assert_eq!(*rx.borrow_and_update(), 6);
        // Fully held back: nothing appended, no notification.
        t.write(b"sec");
        assert!(!rx.has_changed().unwrap_or(true));
        t.finish();
        assert!(rx.has_changed().unwrap_or(false));
        assert_eq!(*rx.borrow_and_update(), 9);
    }

    #[test]
    fn subscribe_wakes_an_async_follower() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let t = TraceBuffer::new(TraceOptions::default());
            let mut rx = t.subscribe();
            let writer = t.clone();
            let follower = tokio::spawn(async move {
                let mut seen = Vec::new();
                while rx.changed().await.is_ok() {
                    seen.push(*rx.borrow_and_update());
                    if seen.last() == Some(&5) {
                        break;
                    }
                }
                seen
            });
            tokio::task::yield_now().await;
            writer.write(b"hello");
            let seen = tokio::time::timeout(std::time::Duration::from_secs(5), follower)
                .await
                .expect("follower timed out")
                .expect("follower panicked");
            assert_eq!(seen.last(), Some(&5));
        });
    }

    #[test]
    fn sink_gets_the_full_masked_log_past_the_limit() {
        let sink = SharedSink::default();
        let t = TraceBuffer::new(opts(8, &["topsecret"]));
        t.set_sink(Box::new(sink.clone()));
        t.write(b"aaaa topsec");
        t.write(b"ret bbbb glpat-xyz tail");
        t.finish();
        assert_eq!(sink.bytes(), b"aaaa [MASKED] bbbb glpat-[MASKED] tail");
        assert_eq!(
            all(&t),
            [b"aaaa [MA".as_slice(), limit_exceeded_notice(8).as_bytes()].concat()
        );
    }

    #[test]
    fn failing_sink_is_dropped_and_log_goes_on() {
        let t = TraceBuffer::new(TraceOptions::default());
        t.set_sink(Box::new(FailingSink));
        t.write(b"abc");
        t.write(b"def");
        assert_eq!(all(&t), b"abcdef");
        assert!(!format!("{t:?}").contains("sink: true"));
    }

    #[test]
    fn add_masked_later() {
        let t = TraceBuffer::new(TraceOptions::default());
        t.write(b"early contents\n");
        t.add_masked("contents\n");
        t.write(b"late contents\n");
        t.finish();
        // Trimmed like GitLab's `Unique`: the trailing newline is not part of the phrase.
        assert_eq!(all(&t), b"early contents\nlate [MASKED]\n");
    }

    /// 2021-01-01T00:00:00.000010Z: every header of these tests.
    fn fixed_clock() -> std::time::SystemTime {
        std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(1_609_459_200)
            + std::time::Duration::from_micros(10)
    }

    const T: &str = "2021-01-01T00:00:00.000010Z";

    fn stamped(limit: usize, masked: &[&str]) -> TraceBuffer {
        let t = TraceBuffer::new(TraceOptions {
            timestamps: true,
            ..opts(limit, masked)
        });
        t.set_clock(fixed_clock);
        t
    }

    #[test]
    fn timestamps_head_every_line_with_its_stream() {
        let t = stamped(DEFAULT_OUTPUT_LIMIT, &[]);
        t.write(b"Running with runwright\n");
        t.write(crate::section_start("step_script", "", 5).as_bytes());
        t.write(b"\x1b[0K\x1b[36;1mExecuting\x1b[0;m\n");
        let out = t.stream(crate::timestamp::STREAM_WORK, StreamType::Stdout);
        let err = t.stream(crate::timestamp::STREAM_WORK, StreamType::Stderr);
        out.write(b"$ echo hi\nhi\nno newline");
        err.write(b"warn\n");
        out.close();
        drop(err);
        t.write(b"Job succeeded\n");
        t.finish();
        let want = format!(
            "{T} 00O Running with runwright\n\
             {T} 00O section_start:5:step_script\r\x1b[0K\n\
             {T} 00O+\x1b[0K\x1b[36;1mExecuting\x1b[0;m\n\
             {T} 01O $ echo hi\n\
             {T} 01O hi\n\
             {T} 01E warn\n\
             {T} 01O no newline\n\
             {T} 00O Job succeeded\n"
        );
        assert_eq!(String::from_utf8_lossy(&all(&t)), want);
        assert_eq!(
            String::from_utf8_lossy(&crate::timestamp::strip(&all(&t))),
            "Running with runwright\nsection_start:5:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting\x1b[0;m\n\
             $ echo hi\nhi\nwarn\nno newline\nJob succeeded\n"
        );
    }

    #[test]
    fn masking_comes_before_timestamps_even_across_lines() {
        // A masked value spanning a line break (a file variable's contents) is masked before the
        // timestamper could split it with a header; a token is masked on its own line.
        let t = stamped(DEFAULT_OUTPUT_LIMIT, &["line one\nline two"]);
        let out = t.stream(1, StreamType::Stdout);
        out.write(b"a line one\nline ");
        out.write(b"two b glrt-SECRET\n");
        drop(out);
        t.finish();
        assert_eq!(
            String::from_utf8_lossy(&all(&t)),
            format!("{T} 01O a [MASKED] b glrt-[MASKED]\n")
        );
    }

    #[test]
    fn closing_a_stream_releases_held_back_bytes_and_its_partial_line() {
        let t = stamped(DEFAULT_OUTPUT_LIMIT, &["secret"]);
        let out = t.stream(1, StreamType::Stdout);
        out.write(b"ends with sec");
        assert!(
            t.is_empty(),
            "the partial line and the held-back bytes wait"
        );
        drop(out);
        assert_eq!(
            String::from_utf8_lossy(&all(&t)),
            format!("{T} 01O ends with sec\n")
        );
        // A stream opened later reuses the slot and knows phrases learned meanwhile.
        t.add_masked("later");
        let again = t.stream(1, StreamType::Stdout);
        again.write(b"later\n");
        drop(again);
        assert!(String::from_utf8_lossy(&all(&t)).ends_with(&format!("{T} 01O [MASKED]\n")));
    }

    #[test]
    fn headers_count_towards_the_output_limit_and_the_notice_has_none() {
        let t = stamped(50, &[]);
        t.write(b"0123456789\n");
        t.write(b"abc\n");
        // 43 bytes of the first line, then 7 of the second (its header cut), then the notice.
        let want = format!("{T} 00O 0123456789\n2021-01{}", limit_exceeded_notice(50));
        assert_eq!(String::from_utf8_lossy(&all(&t)), want);
    }

    #[test]
    fn without_timestamps_streams_only_get_chains_of_their_own() {
        let t = TraceBuffer::new(opts(DEFAULT_OUTPUT_LIMIT, &["secret"]));
        let out = t.stream(1, StreamType::Stdout);
        out.write(b"a sec");
        t.write(b"ret\n");
        drop(out);
        t.finish();
        // Each chain masks what it sees: the runner's "ret" is not the stage's "sec"+"ret".
        assert_eq!(all(&t), b"a ret\nsec");
    }

    #[test]
    fn large_stream_keeps_memory_bounded() {
        let limit = 64 * 1024;
        let t = TraceBuffer::new(opts(limit, &["needle-in-the-haystack"]));
        let sink = SharedSink::default();
        let line = b"some output line with a needle-in-the-hay and more text\n";
        let block: Vec<u8> = line.iter().copied().cycle().take(1 << 20).collect();
        for _ in 0..8 {
            t.write(&block);
        }
        {
            let inner = t.lock();
            assert!(inner.log.len() <= limit + limit_exceeded_notice(limit).len());
            assert!(
                inner.log.capacity() <= 2 * (limit + 256),
                "cap {}",
                inner.log.capacity()
            );
            assert!(inner.masked_scratch.capacity() <= 2 * SLICE + 1024);
            assert!(inner.utf8_scratch.capacity() <= 2 * SLICE + 1024);
        }
        // With a sink, everything flows through it.
        t.set_sink(Box::new(sink.clone()));
        t.write(&block);
        t.finish();
        // Plus whatever the masker still held back from before the sink was set.
        let teed = sink.bytes().len();
        assert!(
            teed >= block.len() && teed < block.len() + 22,
            "teed {teed}"
        );
    }
}

#[cfg(test)]
mod props {
    //! The buffer under random chunking: stored bytes are exactly "mask everything, then cut".
    use super::*;
    use proptest::prelude::*;

    use super::tests::SharedSink;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn chunked_writes_store_the_cut_of_the_masked_whole(
            secrets in prop::collection::vec("[a-z]{1,6}", 0..3),
            pieces in prop::collection::vec(
                prop_oneof![
                    "[a-z €\n]{0,12}".prop_map(String::into_bytes),
                    prop::collection::vec(any::<u8>(), 0..3),
                ],
                0..20,
            ),
            limit in 0usize..80,
        ) {
            let input = pieces.concat();
            let o = TraceOptions { output_limit: limit, masked: secrets.clone(), ..TraceOptions::default() };

            // The whole stream, masked and UTF-8 fixed, without any limit.
            let whole = TraceBuffer::new(TraceOptions { output_limit: usize::MAX, ..o.clone() });
            whole.write(&input);
            whole.finish();
            let full = whole.read(0, usize::MAX);

            let sink = SharedSink::default();
            let t = TraceBuffer::new(o);
            t.set_sink(Box::new(sink.clone()));
            for p in &pieces {
                t.write(p);
            }
            t.finish();

            let want = if limit > 0 && full.len() >= limit {
                let cut = truncate_safe_utf8(&full, limit);
                prop_assert!(std::str::from_utf8(&full[..cut]).is_ok());
                prop_assert!(limit - cut < 4);
                [&full[..cut], limit_exceeded_notice(limit).as_bytes()].concat()
            } else if limit == 0 {
                Vec::new()
            } else {
                full.clone()
            };
            let stored = t.read(0, usize::MAX);
            prop_assert_eq!(&stored, &want);
            prop_assert_eq!(t.len(), want.len() as u64);
            let teed = sink.0.lock().map(|v| v.clone()).unwrap_or_default();
            prop_assert_eq!(&teed, &full);
            prop_assert!(std::str::from_utf8(&full).is_ok());
            let mut h = crc32fast::Hasher::new();
            h.update(&want);
            prop_assert_eq!(t.checksum(), format!("crc32:{:08x}", h.finalize()));
        }
    }
}
