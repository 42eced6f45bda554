//! `FF_TIMESTAMPS`: a timestamp header on every line of the job log, and reading such logs back.
//!
//! **Writing** follows gitlab-runner's `common/buildlogger/internal/timestamper/timestamper.go`
//! byte for byte. Each output stream (the runner's own messages, a stage's stdout, its stderr, …)
//! has its own [`Timestamper`] after its own masking chain (`build_logger.go` `wrap`); every line
//! it emits starts with a 32-byte header
//!
//! ```text
//! 2025-01-31T12:34:56.123456Z 01O <line>
//! └──── UTC, microseconds ──┘ │ │└ ' ' a new line, '+' continues the line before it
//!                             │ └─ O stdout, E stderr
//!                             └─── stream number, two hex digits (00 runner, 01 job script)
//! ```
//!
//! taken when the line was started. A line is emitted at its `\n`. A write that holds a `\r` but
//! no `\n` after its last line (a progress bar, a section marker) is emitted at once, whole, with
//! a `\n` appended, and the stream's next line is marked `+`; so is the next line after a partial
//! line that outgrew the 8 KiB buffer (emitted with a `\n` too). Closing a stream emits its
//! unfinished line with a `\n`. The output limit, the checksum and the UTF-8 fix-up come after the
//! timestamper (`helpers/trace/buffer.go`), so headers count towards `output_limit` and the limit
//! notice itself carries none.
//!
//! **Reading** follows GitLab's log viewer (`lib/gitlab/ci/ansi2json/converter.rb`,
//! `lib/gitlab/ci/trace/stream.rb`): the header of a line is dropped, and a line whose *next*
//! line is marked `+` loses its `\n`, the next line's text joining it. [`Stripper`] does that on
//! a stream (for `runwright logs`, `runwright exec` and tests); [`strip`] on a whole log.

use std::time::SystemTime;

/// Length of a line header: `YYYY-MM-DDTHH:MM:SS.uuuuuuZ ` (28) + stream (2) + type + flag.
pub const HEADER_LEN: usize = 32;

/// Length of the date and time in a header (`TIMESTAMP_HEADER_DATETIME_LENGTH`).
pub const HEADER_TIME_LEN: usize = 27;

/// The runner's own messages (`buildlogger.StreamExecutorLevel`).
pub const STREAM_EXECUTOR: u8 = 0;
/// The job's scripts (`buildlogger.StreamWorkLevel`).
pub const STREAM_WORK: u8 = 1;
/// Service containers' logs (`buildlogger.StreamStartingServiceLevel`).
pub const STREAM_SERVICES: u8 = 15;

/// Which output of a process a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamType {
    /// `O`.
    Stdout,
    /// `E`.
    Stderr,
}

impl StreamType {
    fn byte(self) -> u8 {
        match self {
            StreamType::Stdout => b'O',
            StreamType::Stderr => b'E',
        }
    }
}

/// The most a stream buffers of a line without `\n` (`bufSize`); longer lines are emitted in
/// pieces, each after the first marked `+`.
const BUF_SIZE: usize = 8 * 1024;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// One stream's timestamper (`timestamper.Logger` with timestamps on). See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Timestamper {
    /// The unfinished line, header included (`Logger.buf`).
    buf: Vec<u8>,
    /// The next header (`bufStream`): separators pre-filled, stream and flag at the end.
    header: [u8; HEADER_LEN],
    /// The second the date and time digits of `header` were last written for.
    cached_unix: i64,
}

impl Timestamper {
    pub(crate) fn new(stream_type: StreamType, stream_number: u8) -> Self {
        let mut header = *b"0000-00-00T00:00:00.000000Z 00O ";
        header[28] = HEX[usize::from(stream_number >> 4)];
        header[29] = HEX[usize::from(stream_number & 0x0f)];
        header[30] = stream_type.byte();
        Self {
            buf: Vec::new(),
            header,
            cached_unix: i64::MIN,
        }
    }

    /// `Logger.Write`: complete lines, then a carriage-return write, then the unfinished rest.
    pub(crate) fn write(&mut self, p: &[u8], out: &mut Vec<u8>, now: &dyn Fn() -> SystemTime) {
        let n = self.write_lines(p, out, now);
        let rest = &p[n..];
        if rest.is_empty() {
            return;
        }
        if memchr::memchr(b'\r', rest).is_some() {
            self.write_carriage_returns(rest, out, now);
        } else {
            self.buffer(rest, out, now);
        }
    }

    /// `Logger.Close`: an unfinished line goes out with a `\n`.
    pub(crate) fn close(&mut self, out: &mut Vec<u8>) {
        if self.buf.is_empty() {
            return;
        }
        out.extend_from_slice(&self.buf);
        out.push(b'\n');
        self.buf.clear();
    }

    /// `writeLines`: every line up to the last `\n` of `p`; returns how many bytes that was.
    fn write_lines(&mut self, p: &[u8], out: &mut Vec<u8>, now: &dyn Fn() -> SystemTime) -> usize {
        let Some(first) = memchr::memchr(b'\n', p) else {
            return 0;
        };
        let mut n = 0;
        if !self.buf.is_empty() {
            // The buffered line (its header was taken when it started) ends here.
            out.extend_from_slice(&self.buf);
            self.buf.clear();
            out.extend_from_slice(&p[..=first]);
            n = first + 1;
        }
        while let Some(idx) = memchr::memchr(b'\n', &p[n..]) {
            self.write_header(out, now);
            out.extend_from_slice(&p[n..n + idx + 1]);
            n += idx + 1;
        }
        n
    }

    /// `writeCarriageReturns`: the whole rest goes out at once, ended with `\n`; the next line
    /// continues it.
    fn write_carriage_returns(
        &mut self,
        p: &[u8],
        out: &mut Vec<u8>,
        now: &dyn Fn() -> SystemTime,
    ) {
        if self.buf.is_empty() {
            self.write_header(out, now);
        } else {
            out.extend_from_slice(&self.buf);
            self.buf.clear();
        }
        out.extend_from_slice(p);
        out.push(b'\n');
        self.header[HEADER_LEN - 1] = b'+';
    }

    /// `buffer`: text without `\n` or `\r` waits for the rest of its line, up to [`BUF_SIZE`].
    fn buffer(&mut self, p: &[u8], out: &mut Vec<u8>, now: &dyn Fn() -> SystemTime) {
        if p.len() + self.buf.len() > BUF_SIZE {
            if self.buf.is_empty() {
                self.write_header(out, now);
            }
            out.extend_from_slice(&self.buf);
            self.buf.clear();
            self.header[HEADER_LEN - 1] = b'+';
            out.extend_from_slice(p);
            out.push(b'\n');
            return;
        }
        if self.buf.is_empty() {
            let mut buf = std::mem::take(&mut self.buf);
            self.write_header(&mut buf, now);
            self.buf = buf;
        }
        self.buf.extend_from_slice(p);
    }

    /// `writeHeader`: the current time into the header, the header out, the flag back to ' '.
    fn write_header(&mut self, out: &mut Vec<u8>, now: &dyn Fn() -> SystemTime) {
        let t = time::OffsetDateTime::from(now());
        let unix = t.unix_timestamp();
        let h = &mut self.header;
        if unix != self.cached_unix {
            let two = |h: &mut [u8; HEADER_LEN], at: usize, v: u8| {
                h[at] = b'0' + v / 10;
                h[at + 1] = b'0' + v % 10;
            };
            // Years past 9999 cannot occur on a real clock; clamp rather than corrupt the header.
            let year = t.year().clamp(0, 9999) as u32;
            h[0] = b'0' + (year / 1000) as u8;
            h[1] = b'0' + (year / 100 % 10) as u8;
            h[2] = b'0' + (year / 10 % 10) as u8;
            h[3] = b'0' + (year % 10) as u8;
            two(h, 5, u8::from(t.month()));
            two(h, 8, t.day());
            two(h, 11, t.hour());
            two(h, 14, t.minute());
            two(h, 17, t.second());
            self.cached_unix = unix;
        }
        let mut micros = t.microsecond();
        for at in (20..26).rev() {
            h[at] = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        out.extend_from_slice(h);
        h[HEADER_LEN - 1] = b' ';
    }
}

/// A line header, as [`header`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`.
    pub time: &'a str,
    pub stream: u8,
    pub stream_type: StreamType,
    /// The line continues the one before it (`+`).
    pub continues: bool,
}

/// The header at the start of `line`, if it has one (GitLab's `TIMESTAMP_HEADER_REGEX`:
/// `\d{4}-[01]\d-[0-3]\dT[0-2]\d:[0-5]\d:[0-5]\d\.\d{6}Z [0-9a-f]{2}[EO][+ ]`).
pub fn header(line: &[u8]) -> Option<Header<'_>> {
    let h = line.get(..HEADER_LEN)?;
    let digit = |i: usize, max: u8| h[i].is_ascii_digit() && h[i] <= max;
    let shape = (0..4).all(|i| digit(i, b'9'))
        && h[4] == b'-'
        && digit(5, b'1')
        && digit(6, b'9')
        && h[7] == b'-'
        && digit(8, b'3')
        && digit(9, b'9')
        && h[10] == b'T'
        && digit(11, b'2')
        && digit(12, b'9')
        && h[13] == b':'
        && digit(14, b'5')
        && digit(15, b'9')
        && h[16] == b':'
        && digit(17, b'5')
        && digit(18, b'9')
        && h[19] == b'.'
        && (20..26).all(|i| digit(i, b'9'))
        && h[26] == b'Z'
        && h[27] == b' '
        && matches!(h[28], b'0'..=b'9' | b'a'..=b'f')
        && matches!(h[29], b'0'..=b'9' | b'a'..=b'f');
    if !shape {
        return None;
    }
    let stream_type = match h[30] {
        b'O' => StreamType::Stdout,
        b'E' => StreamType::Stderr,
        _ => return None,
    };
    let continues = match h[31] {
        b'+' => true,
        b' ' => false,
        _ => return None,
    };
    let hex = |b: u8| {
        if b.is_ascii_digit() {
            b - b'0'
        } else {
            b - b'a' + 10
        }
    };
    Some(Header {
        // Checked above: ASCII digits and separators.
        time: std::str::from_utf8(&h[..HEADER_TIME_LEN]).ok()?,
        stream: hex(h[28]) << 4 | hex(h[29]),
        stream_type,
        continues,
    })
}

/// A timestamped log read back as GitLab's log viewer shows it (see the module docs): headers
/// dropped, continued lines joined. Lines without a header pass through unchanged, so a log
/// without timestamps comes out as it went in.
///
/// A line's `\n` is held until the next line shows whether it continues it; [`Stripper::finish`]
/// (the end of the log) or [`Stripper::release`] (a live view that has waited long enough) lets
/// it go.
#[derive(Debug, Default, Clone)]
pub struct Stripper {
    /// A `\n` not yet written: the next line may continue the line it ends.
    pending_newline: bool,
    /// Inside a line (its header, if any, already dropped).
    in_line: bool,
    /// The start of a line shorter than a header so far.
    head: Vec<u8>,
}

impl Stripper {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the log; appends what is final to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            if self.in_line {
                match memchr::memchr(b'\n', data) {
                    Some(i) => {
                        out.extend_from_slice(&data[..i]);
                        self.pending_newline = true;
                        self.in_line = false;
                        data = &data[i + 1..];
                    }
                    None => {
                        out.extend_from_slice(data);
                        return;
                    }
                }
                continue;
            }
            // At the start of a line: gather a header's worth, or the whole line if shorter.
            let want = HEADER_LEN - self.head.len();
            let take = data.len().min(want);
            if let Some(i) = memchr::memchr(b'\n', &data[..take]) {
                // A line too short to have a header.
                self.head.extend_from_slice(&data[..i]);
                self.line_starts(false, out);
                out.extend_from_slice(&self.head);
                self.head.clear();
                self.pending_newline = true;
                data = &data[i + 1..];
                continue;
            }
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.head.len() < HEADER_LEN {
                return;
            }
            let continues = header(&self.head).map(|h| h.continues);
            self.line_starts(continues == Some(true), out);
            if continues.is_none() {
                out.extend_from_slice(&self.head);
            }
            self.head.clear();
            self.in_line = true;
        }
    }

    /// A new line begins: the `\n` before it is written unless the line continues that one.
    fn line_starts(&mut self, continues: bool, out: &mut Vec<u8>) {
        if self.pending_newline && !continues {
            out.push(b'\n');
        }
        self.pending_newline = false;
    }

    /// Writes a held `\n` now, for a live view that should not wait for the next line. A
    /// continuation arriving later then starts a line of its own.
    pub fn release(&mut self, out: &mut Vec<u8>) {
        if self.pending_newline {
            out.push(b'\n');
            self.pending_newline = false;
        }
    }

    /// The end of the log: whatever is held goes out.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_newline {
            out.push(b'\n');
        }
        out.extend_from_slice(&self.head);
        *self = Self::default();
    }
}

/// A whole log as GitLab's viewer shows it: see [`Stripper`].
pub fn strip(log: &[u8]) -> Vec<u8> {
    let mut s = Stripper::new();
    let mut out = Vec::with_capacity(log.len());
    s.push(log, &mut out);
    s.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::{Duration, UNIX_EPOCH};

    /// gitlab-runner's test clock: 2021-01-01T00:00:00.020010Z, one hour later on each call.
    fn hourly() -> impl Fn() -> SystemTime {
        let start = UNIX_EPOCH + Duration::from_secs(1_609_459_200) + Duration::from_micros(20_010);
        let calls = Cell::new(0u64);
        move || {
            calls.set(calls.get() + 1);
            start + Duration::from_secs(3600 * calls.get())
        }
    }

    fn run(ts: &mut Timestamper, writes: &[&[u8]], now: &dyn Fn() -> SystemTime) -> String {
        let mut out = Vec::new();
        for w in writes {
            ts.write(w, &mut out, now);
        }
        ts.close(&mut out);
        String::from_utf8(out).expect("utf8")
    }

    /// `timestamper_test.go` `writeLines` and `TestWithTimestamps`.
    #[test]
    fn gitlab_runner_with_timestamps_table() {
        let dots: Vec<&[u8]> = (0..10).map(|_| b".\r".as_slice()).collect();
        let mut writes: Vec<&[u8]> = vec![
            b"PREFIX This is the beginning of a new line\n",
            b"PREFIX This is a split ",
            b"up ",
            b"line\n",
            b"PREFIX Progress bar: ",
        ];
        writes.extend(dots);
        writes.extend([
            b"Done.\r\n".as_slice(),
            b"PREFIX Another windows new-line\r\n",
            b"PREFIX multiple\nnew\nlines\nin\none\n",
            b"\nstart",
            b"\nend\n",
            b"PREFIX Eat carriages\r\r\r\r\r\r\r\n",
            b"PREFIX This is across\ntwo lines\n",
            b"PREFIX The end",
        ]);
        let now = hourly();
        let got = run(
            &mut Timestamper::new(StreamType::Stderr, 255),
            &writes,
            &now,
        );
        let want = [
            "2021-01-01T01:00:00.020010Z ffE PREFIX This is the beginning of a new line\n",
            "2021-01-01T02:00:00.020010Z ffE PREFIX This is a split up line\n",
            "2021-01-01T03:00:00.020010Z ffE PREFIX Progress bar: .\r\n",
            "2021-01-01T04:00:00.020010Z ffE+.\r\n",
            "2021-01-01T05:00:00.020010Z ffE+.\r\n",
            "2021-01-01T06:00:00.020010Z ffE+.\r\n",
            "2021-01-01T07:00:00.020010Z ffE+.\r\n",
            "2021-01-01T08:00:00.020010Z ffE+.\r\n",
            "2021-01-01T09:00:00.020010Z ffE+.\r\n",
            "2021-01-01T10:00:00.020010Z ffE+.\r\n",
            "2021-01-01T11:00:00.020010Z ffE+.\r\n",
            "2021-01-01T12:00:00.020010Z ffE+.\r\n",
            "2021-01-01T13:00:00.020010Z ffE+Done.\r\n",
            "2021-01-01T14:00:00.020010Z ffE PREFIX Another windows new-line\r\n",
            "2021-01-01T15:00:00.020010Z ffE PREFIX multiple\n",
            "2021-01-01T16:00:00.020010Z ffE new\n",
            "2021-01-01T17:00:00.020010Z ffE lines\n",
            "2021-01-01T18:00:00.020010Z ffE in\n",
            "2021-01-01T19:00:00.020010Z ffE one\n",
            "2021-01-01T20:00:00.020010Z ffE \n",
            "2021-01-01T21:00:00.020010Z ffE start\n",
            "2021-01-01T22:00:00.020010Z ffE end\n",
            "2021-01-01T23:00:00.020010Z ffE PREFIX Eat carriages\r\r\r\r\r\r\r\n",
            "2021-01-02T00:00:00.020010Z ffE PREFIX This is across\n",
            "2021-01-02T01:00:00.020010Z ffE two lines\n",
            "2021-01-02T02:00:00.020010Z ffE PREFIX The end\n",
        ]
        .concat();
        assert_eq!(got, want);
    }

    /// `TestForcedFlush`: a partial line past 8 KiB goes out, the next piece marked `+`.
    #[test]
    fn gitlab_runner_forced_flush() {
        let big = vec![b'.'; BUF_SIZE];
        let bigger = vec![b'.'; BUF_SIZE + 1];
        let writes: Vec<&[u8]> = vec![
            b"PREFIX This is the beginning of a new line\n",
            b"We have no new line character in this write",
            b"... The line is now flushed.\n",
            b"large continuous write incoming",
            &big,
            &bigger,
            b"ended\n",
        ];
        let now = hourly();
        let got = run(
            &mut Timestamper::new(StreamType::Stderr, 255),
            &writes,
            &now,
        );
        let want = [
            "2021-01-01T01:00:00.020010Z ffE PREFIX This is the beginning of a new line\n".to_string(),
            "2021-01-01T02:00:00.020010Z ffE We have no new line character in this write... The line is now flushed.\n".into(),
            format!("2021-01-01T03:00:00.020010Z ffE large continuous write incoming{}\n", ".".repeat(BUF_SIZE)),
            format!("2021-01-01T04:00:00.020010Z ffE+{}\n", ".".repeat(BUF_SIZE + 1)),
            "2021-01-01T05:00:00.020010Z ffE+ended\n".into(),
        ]
        .concat();
        assert_eq!(got, want);
    }

    /// `TestCarriageReturnDoesNotSplitWrite`: section markers stay whole, with their `\x1b[0K`.
    #[test]
    fn gitlab_runner_carriage_return_keeps_the_write_whole() {
        let now = hourly();
        let got = run(
            &mut Timestamper::new(StreamType::Stdout, 1),
            &[
                b"section_start:123:foo\r\x1b[0K",
                b"section_end:123:foo\r\x1b[0K",
            ],
            &now,
        );
        assert_eq!(
            got,
            "2021-01-01T01:00:00.020010Z 01O section_start:123:foo\r\x1b[0K\n\
             2021-01-01T02:00:00.020010Z 01O+section_end:123:foo\r\x1b[0K\n"
        );
    }

    /// `TestTimestampSecondsCache` and `TestCloseIdempotent`.
    #[test]
    fn same_second_refreshes_only_the_microseconds_and_close_is_idempotent() {
        let base = UNIX_EPOCH + Duration::from_secs(1_623_760_496); // 2021-06-15T12:34:56Z
        let offsets = [0u64, 1, 123, 1_000_000, 1_000_007];
        let i = Cell::new(0usize);
        let now = || {
            let at = base + Duration::from_micros(offsets[i.get()]);
            i.set(i.get() + 1);
            at
        };
        let mut ts = Timestamper::new(StreamType::Stderr, 1);
        let mut out = Vec::new();
        for _ in offsets {
            ts.write(b"line\n", &mut out, &now);
        }
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "2021-06-15T12:34:56.000000Z 01E line\n\
             2021-06-15T12:34:56.000001Z 01E line\n\
             2021-06-15T12:34:56.000123Z 01E line\n\
             2021-06-15T12:34:57.000000Z 01E line\n\
             2021-06-15T12:34:57.000007Z 01E line\n"
        );
        let mut out = Vec::new();
        let now = hourly();
        ts.write(b"no trailing newline", &mut out, &now);
        ts.close(&mut out);
        let once = out.clone();
        ts.close(&mut out);
        assert_eq!(out, once);
    }

    #[test]
    fn headers_are_read_back() {
        let h = header(b"2021-01-01T01:00:00.020010Z ffE+x").expect("header");
        assert_eq!(h.time, "2021-01-01T01:00:00.020010Z");
        assert_eq!(
            (h.stream, h.stream_type, h.continues),
            (255, StreamType::Stderr, true)
        );
        assert!(header(b"2021-01-01T01:00:00.020010Z 00O ").is_some());
        assert!(
            header(b"2021-01-01T01:00:00.020010Z 00O").is_none(),
            "too short"
        );
        assert!(
            header(b"2021-21-01T01:00:00.020010Z 00O x").is_none(),
            "month"
        );
        assert!(
            header(b"2021-01-01T01:00:00.020010Z 0gO x").is_none(),
            "stream"
        );
        assert!(
            header(b"2021-01-01T01:00:00.020010Z 00X x").is_none(),
            "type"
        );
        assert!(
            header(b"2021-01-01T01:00:00.020010Z 00O-x").is_none(),
            "flag"
        );
        assert!(header(b"plain text that is long enough to be one").is_none());
    }

    /// What GitLab's viewer shows of runner output: continuations joined, headers gone.
    #[test]
    fn stripping_joins_continuations_like_gitlabs_viewer() {
        let now = hourly();
        let mut ts = Timestamper::new(StreamType::Stdout, 0);
        let mut log = Vec::new();
        for w in [
            "section_start:1:prepare\r\x1b[0K".as_bytes(),
            b"\x1b[0K\x1b[36;1mPreparing\x1b[0;m\n",
            b"Progress 1\r",
            b"Progress 2\r",
            b"done\n",
            b"partial",
        ] {
            ts.write(w, &mut log, &now);
        }
        ts.close(&mut log);
        let want = "section_start:1:prepare\r\x1b[0K\x1b[0K\x1b[36;1mPreparing\x1b[0;m\n\
                    Progress 1\rProgress 2\rdone\npartial\n";
        assert_eq!(String::from_utf8_lossy(&strip(&log)), want);
        // Any split of the log gives the same text.
        for i in 0..=log.len() {
            let mut s = Stripper::new();
            let mut out = Vec::new();
            s.push(&log[..i], &mut out);
            s.push(&log[i..], &mut out);
            s.finish(&mut out);
            assert_eq!(String::from_utf8_lossy(&out), want, "split at {i}");
        }
        // Text without headers passes through as it is.
        let plain = "a\n\nshort\nno header but a line longer than thirty-two bytes\nend";
        assert_eq!(strip(plain.as_bytes()), plain.as_bytes());
    }

    #[test]
    fn release_lets_a_held_newline_go_and_a_late_continuation_starts_its_own_line() {
        let mut s = Stripper::new();
        let mut out = Vec::new();
        s.push(b"2021-01-01T01:00:00.020010Z 01O $ sleep 60\n", &mut out);
        assert_eq!(out, b"$ sleep 60");
        s.release(&mut out);
        assert_eq!(out, b"$ sleep 60\n");
        s.push(b"2021-01-01T01:01:00.020010Z 01O+rest\n", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"$ sleep 60\nrest\n");
    }
}

#[cfg(test)]
mod props {
    //! Writing then reading back gives the stream's text: GitLab's viewer undoes every `\n` the
    //! timestamper adds, but the one that ends an unfinished last line.
    use super::*;
    use proptest::prelude::*;

    fn write_all(writes: &[Vec<u8>]) -> Vec<u8> {
        let mut ts = Timestamper::new(StreamType::Stdout, 1);
        let mut out = Vec::new();
        for w in writes {
            ts.write(w, &mut out, &SystemTime::now);
        }
        ts.close(&mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn stripping_the_stamped_stream_gives_its_text_back(
            writes in prop::collection::vec(
                prop_oneof![
                    4 => "[a-z \r\n]{0,24}".prop_map(String::into_bytes),
                    1 => (0usize..3, 1usize..2).prop_map(|(k, _)| vec![b'x'; 4000 * k + 1]),
                ],
                0..24,
            ),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let input = writes.concat();
            let stamped = write_all(&writes);
            let mut want = input.clone();
            if !want.is_empty() && want.last() != Some(&b'\n') {
                want.push(b'\n');
            }
            prop_assert_eq!(&strip(&stamped), &want);
            // Every line the timestamper emits has a header.
            for line in stamped.split_inclusive(|b| *b == b'\n') {
                prop_assert!(header(line).is_some(), "{:?}", String::from_utf8_lossy(line));
            }
            // The stripper does not care how the log is cut.
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stamped.len() + 1)).collect();
            at.sort_unstable();
            let mut s = Stripper::new();
            let mut out = Vec::new();
            let mut from = 0;
            for c in at.into_iter().chain(std::iter::once(stamped.len())) {
                s.push(&stamped[from..c], &mut out);
                from = c;
            }
            s.finish(&mut out);
            prop_assert_eq!(out, want);
        }
    }
}
