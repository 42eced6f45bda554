//! Invalid UTF-8 replaced by U+FFFD, the way GitLab's trace buffer does it.
//!
//! GitLab stores the job log as UTF-8: `helpers/trace/buffer.go` writes through
//! `transform.NewWriter(…, encoding.Replacement.NewEncoder())` (golang.org/x/text). That encoder
//! decodes with Go's `utf8.DecodeRune`, which reports **one** error per bad byte, so every byte
//! of an invalid sequence becomes its own `\u{FFFD}` (Rust's `from_utf8_lossy` would write one
//! per maximal invalid subpart: different bytes, different checksum). A sequence cut by a write
//! boundary that could still become valid is held back (at most 3 bytes) until the next write;
//! at the end of the stream it is invalid and replaced byte by byte.

/// U+FFFD REPLACEMENT CHARACTER, UTF-8 encoded.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Streaming Go-compatible UTF-8 sanitizer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Utf8Sanitizer {
    /// Start of a character cut by the last write boundary.
    partial: Vec<u8>,
}

impl Utf8Sanitizer {
    pub(crate) fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.partial.is_empty() {
            self.scan(input, out);
        } else {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(input);
            self.scan(&joined, out);
        }
    }

    fn scan(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        loop {
            match std::str::from_utf8(input) {
                Ok(_) => {
                    out.extend_from_slice(input);
                    return;
                }
                Err(e) => {
                    let (valid, rest) = input.split_at(e.valid_up_to());
                    out.extend_from_slice(valid);
                    match e.error_len() {
                        None => {
                            // Could still become a valid character: wait for more bytes.
                            self.partial.extend_from_slice(rest);
                            return;
                        }
                        Some(bad) => {
                            // Go: one U+FFFD per byte of the invalid sequence.
                            for _ in 0..bad {
                                out.extend_from_slice(REPLACEMENT);
                            }
                            input = &rest[bad..];
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) {
        for _ in 0..self.partial.len() {
            out.extend_from_slice(REPLACEMENT);
        }
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(chunks: &[&[u8]]) -> Vec<u8> {
        let mut u = Utf8Sanitizer::default();
        let mut out = Vec::new();
        for c in chunks {
            u.write(c, &mut out);
        }
        u.flush(&mut out);
        out
    }

    #[test]
    fn valid_passes_through() {
        assert_eq!(fix(&["héllo €𝄞".as_bytes()]), "héllo €𝄞".as_bytes());
    }

    #[test]
    fn one_replacement_per_bad_byte_like_go() {
        // E2 82 is a cut "€" followed by 'A': Go's DecodeRune gives two errors.
        assert_eq!(fix(&[b"\xE2\x82A"]), "\u{FFFD}\u{FFFD}A".as_bytes());
        assert_eq!(fix(&[b"a\xFFb"]), "a\u{FFFD}b".as_bytes());
        // Surrogate half: three bad bytes.
        assert_eq!(
            fix(&[b"\xED\xA0\x80"]),
            "\u{FFFD}\u{FFFD}\u{FFFD}".as_bytes()
        );
        // Cut at the end of the stream.
        assert_eq!(
            fix(&[b"x\xF0\x9F\x98"]),
            "x\u{FFFD}\u{FFFD}\u{FFFD}".as_bytes()
        );
    }

    #[test]
    fn character_split_across_writes_is_kept() {
        let s = "a€b𝄞c".as_bytes();
        for i in 0..=s.len() {
            for j in i..=s.len() {
                assert_eq!(fix(&[&s[..i], &s[i..j], &s[j..]]), s, "split {i},{j}");
            }
        }
    }
}
