//! Stage timings from the trace itself: GitLab's collapsible-section markers
//! (`section_start:<ts>:<name>[opts]\r\x1b[0K`, `section_end:<ts>:<name>\r\x1b[0K`) delimit every stage, so the
//! journal learns the timings from the bytes it stores anyway, without a hook in the engine. A marker may be
//! split across writes: the scanner carries an unfinished one (bounded) into the next write.

use memchr::memmem;

const PREFIX: &[u8] = b"section_";
/// Longest unfinished marker carried over; a longer "marker" is not one.
const MAX_MARKER: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionEvent {
    Start(String),
    End(String),
}

#[derive(Debug, Default)]
pub struct SectionScanner {
    carry: Vec<u8>,
}

impl SectionScanner {
    /// Feeds the next trace bytes; returns the markers completed by them, in order.
    pub fn feed(&mut self, data: &[u8]) -> Vec<SectionEvent> {
        let mut events = Vec::new();
        if self.carry.is_empty() {
            let rest = scan(data, &mut events);
            self.carry = rest.to_vec();
        } else {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(data);
            let rest = scan(&joined, &mut events).to_vec();
            self.carry = rest;
        }
        events
    }
}

/// Scans `s`, pushing complete markers; returns the tail that may start a marker finished by later bytes.
fn scan<'a>(s: &'a [u8], events: &mut Vec<SectionEvent>) -> &'a [u8] {
    let finder = memmem::Finder::new(PREFIX);
    let mut pos = 0;
    while let Some(found) = finder.find(&s[pos..]) {
        let at = pos + found;
        let rest = &s[at + PREFIX.len()..];
        match parse(rest) {
            Parsed::Event(ev, used) => {
                events.push(ev);
                pos = at + PREFIX.len() + used;
            }
            Parsed::Incomplete if s.len() - at <= MAX_MARKER => return &s[at..],
            Parsed::Incomplete | Parsed::No => pos = at + PREFIX.len(),
        }
    }
    // A tail like `…sect` may be the start of a marker.
    for k in (1..PREFIX.len()).rev() {
        if s.len() >= k && s[s.len() - k..] == PREFIX[..k] {
            return &s[s.len() - k..];
        }
    }
    &[]
}

enum Parsed {
    Event(SectionEvent, usize),
    Incomplete,
    No,
}

/// `start:<digits>:<name>[opts]\r` or `end:<digits>:<name>\r` (after `section_`).
fn parse(rest: &[u8]) -> Parsed {
    let (start, after_kind) = if rest.starts_with(b"start:") {
        (true, 6)
    } else if rest.starts_with(b"end:") {
        (false, 4)
    } else if b"start:".starts_with(rest) || b"end:".starts_with(rest) {
        return Parsed::Incomplete;
    } else {
        return Parsed::No;
    };
    let body = &rest[after_kind..];
    let digits = body.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == body.len() {
        return Parsed::Incomplete;
    }
    if digits == 0 || body[digits] != b':' {
        return Parsed::No;
    }
    let name_part = &body[digits + 1..];
    let Some(cr) = memchr::memchr(b'\r', name_part) else {
        return Parsed::Incomplete;
    };
    let raw = &name_part[..cr];
    let name_end = memchr::memchr(b'[', raw).unwrap_or(raw.len());
    let name = &raw[..name_end];
    if name.is_empty()
        || !name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Parsed::No;
    }
    let name = String::from_utf8_lossy(name).into_owned();
    let used = after_kind + digits + 1 + cr + 1;
    let ev = if start {
        SectionEvent::Start(name)
    } else {
        SectionEvent::End(name)
    };
    Parsed::Event(ev, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "Running with runwright\nsection_start:1700000000:get_sources\r\x1b[0K\x1b[36;1mGetting source\x1b[0;m\nok\nsection_end:1700000002:get_sources\r\x1b[0K\nsection_start:1700000002:step_script[collapsed=true]\r\x1b[0K$ echo section_ hi\nsection_end:1700000009:step_script\r\x1b[0K";

    fn all(pieces: &[&[u8]]) -> Vec<SectionEvent> {
        let mut s = SectionScanner::default();
        pieces.iter().flat_map(|p| s.feed(p)).collect()
    }

    fn want() -> Vec<SectionEvent> {
        vec![
            SectionEvent::Start("get_sources".into()),
            SectionEvent::End("get_sources".into()),
            SectionEvent::Start("step_script".into()),
            SectionEvent::End("step_script".into()),
        ]
    }

    #[test]
    fn whole_log() {
        assert_eq!(all(&[LOG.as_bytes()]), want());
    }

    #[test]
    fn split_at_every_point() {
        let b = LOG.as_bytes();
        for i in 0..=b.len() {
            assert_eq!(all(&[&b[..i], &b[i..]]), want(), "split at {i}");
        }
    }

    /// With `FF_TIMESTAMPS` each marker is on a line of its own after a header
    /// (`<time> 00O section_start:…\r\x1b[0K\n`, the title on a `+` line): the markers are found the same.
    #[test]
    fn timestamped_log() {
        let h = "2025-01-31T12:34:56.123456Z 00O ";
        let c = "2025-01-31T12:34:56.123456Z 00O+";
        let w = "2025-01-31T12:34:57.000001Z 01O ";
        let log = format!(
            "{h}Running with runwright\n{h}section_start:1700000000:get_sources\r\x1b[0K\n\
             {c}\x1b[36;1mGetting source\x1b[0;m\n{w}ok\n{h}section_end:1700000002:get_sources\r\x1b[0K\n\
             {c}section_start:1700000002:step_script[collapsed=true]\r\x1b[0K\n{w}$ echo section_ hi\n\
             {h}section_end:1700000009:step_script\r\x1b[0K\n"
        );
        let b = log.as_bytes();
        assert_eq!(all(&[b]), want());
        for i in 0..=b.len() {
            assert_eq!(all(&[&b[..i], &b[i..]]), want(), "split at {i}");
        }
    }

    #[test]
    fn byte_by_byte() {
        let pieces: Vec<&[u8]> = LOG.as_bytes().chunks(1).collect();
        assert_eq!(all(&pieces), want());
    }

    #[test]
    fn carry_stays_bounded_on_lookalikes() {
        let mut s = SectionScanner::default();
        let junk = format!("section_start:{}", "1".repeat(10_000));
        assert!(s.feed(junk.as_bytes()).is_empty());
        assert!(s.carry.len() <= MAX_MARKER);
        assert!(s.feed(b"section_end:x:y\r").is_empty());
    }
}
