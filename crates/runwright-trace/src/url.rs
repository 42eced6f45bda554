//! The URL parameter sanitizer: `?private_token=abc&x=1` becomes `?private_token=[MASKED]&x=1`.
//!
//! Tokens often leak through URLs printed by tools (`git`, `curl`, presigned S3 links), so the
//! runner hides the value of a few well-known query parameters
//! (`common/buildlogger/internal/urlsanitizer/urlsanitizer.go`). Rules taken from there:
//!
//! * a key is the text after `?` or `&` up to `=`, compared case-insensitively with
//!   `private_token, authenticity_token, rss_token, x-amz-signature, x-amz-credential,
//!   x-amz-security-token`; a key longer than the longest of them is given up on, and a `?` or `&`
//!   inside a key starts a new key;
//! * the value (possibly empty) is dropped up to the parameter end, a `?`, `&`, whitespace or
//!   control character (Unicode, as Go's `unicode.IsSpace`/`IsControl`), where one `[MASKED]` is
//!   written; the end character itself is kept and may start the next key;
//! * a value running to the end of the stream is masked on flush.
//!
//! Key bytes are written through as they arrive; value bytes are dropped as they arrive. Only a
//! multi-byte character cut by a write boundary inside a value is held back (at most 3 bytes),
//! so that a Unicode space there ends the value whatever the chunking (GitLab decodes each write
//! on its own and would not see it).

use crate::phrase::MASK;

/// The sensitive keys (`urlsanitizer.go`: `tokenParamKeys`).
pub const SENSITIVE_URL_PARAMS: [&str; 6] = [
    "private_token",
    "authenticity_token",
    "rss_token",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
];

/// Longest key we still try to match (bytes after the `?`/`&`).
const MAX_KEY_LEN: usize = 20;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum State {
    /// Looking for `?` or `&`.
    #[default]
    Idle,
    /// Reading a key (bytes after `?`/`&`, not yet `=`).
    Key(KeyBuf),
    /// Dropping a sensitive value; holds the start of a split multi-byte character.
    Value(Vec<u8>),
}

/// The key read so far (never longer than [`MAX_KEY_LEN`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KeyBuf {
    bytes: [u8; MAX_KEY_LEN],
    len: usize,
}

impl KeyBuf {
    /// Appends `more`; false when the key would be longer than any sensitive key.
    fn push(&mut self, more: &[u8]) -> bool {
        let end = self.len + more.len();
        if end > MAX_KEY_LEN {
            return false;
        }
        self.bytes[self.len..end].copy_from_slice(more);
        self.len = end;
        true
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Streaming URL parameter sanitizer (see module docs).
#[derive(Debug, Clone, Default)]
pub(crate) struct UrlSanitizer {
    state: State,
}

/// `isParamEnd` of `urlsanitizer.go`, for one character.
fn is_param_end(c: char) -> bool {
    c == '?' || c == '&' || c.is_whitespace() || c.is_control()
}

/// What the value scanner found at the start of `bytes`.
enum ValueByte {
    /// The value ends here (an end character starts at this byte).
    End,
    /// Part of the value; drop this many bytes.
    Skip(usize),
    /// A valid character may be cut by the write boundary: wait for more bytes.
    Incomplete,
}

fn classify(bytes: &[u8], at_eof: bool) -> ValueByte {
    let b = bytes[0];
    if b.is_ascii() {
        return if is_param_end(b as char) {
            ValueByte::End
        } else {
            ValueByte::Skip(1)
        };
    }
    let take = bytes.len().min(4);
    match std::str::from_utf8(&bytes[..take]) {
        Ok(s) => first_char(s),
        Err(e) if e.valid_up_to() > 0 => {
            first_char(std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default())
        }
        Err(e) if e.error_len().is_none() && !at_eof => ValueByte::Incomplete,
        // Invalid (or cut at the very end): Go decodes U+FFFD, which is no end character.
        Err(_) => ValueByte::Skip(1),
    }
}

fn first_char(s: &str) -> ValueByte {
    match s.chars().next() {
        Some(c) if is_param_end(c) => ValueByte::End,
        Some(c) => ValueByte::Skip(c.len_utf8()),
        None => ValueByte::Skip(1),
    }
}

fn is_sensitive_key(key: &[u8]) -> bool {
    if key.is_ascii() {
        return SENSITIVE_URL_PARAMS
            .iter()
            .any(|k| k.as_bytes().eq_ignore_ascii_case(key));
    }
    // Go lowercases with `strings.ToLower` (Unicode: the Kelvin sign becomes `k`): so does
    // `to_lowercase`.
    let lower = String::from_utf8_lossy(key).to_lowercase();
    SENSITIVE_URL_PARAMS.contains(&lower.as_str())
}

impl UrlSanitizer {
    pub(crate) fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if let State::Value(partial) = &mut self.state {
            if !partial.is_empty() {
                // A character was cut at the last boundary: scan it again, whole.
                let mut joined = std::mem::take(partial);
                joined.extend_from_slice(input);
                self.scan(&joined, out);
                return;
            }
        }
        self.scan(input, out);
    }

    fn scan(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let n = input.len();
        let mut i = 0usize;
        // Start of the bytes to write through (value bytes are never written).
        let mut copy_from = 0usize;
        while i < n {
            match &mut self.state {
                State::Idle => match memchr::memchr2(b'?', b'&', &input[i..]) {
                    Some(off) => {
                        i += off + 1;
                        self.state = State::Key(KeyBuf::default());
                    }
                    None => i = n,
                },
                State::Key(key) => {
                    let Some(off) = memchr::memchr3(b'=', b'?', b'&', &input[i..]) else {
                        // The key goes on past this write.
                        if !key.push(&input[i..]) {
                            self.state = State::Idle;
                        }
                        i = n;
                        continue;
                    };
                    let fits = key.push(&input[i..i + off]);
                    let delim = input[i + off];
                    i += off + 1;
                    match delim {
                        _ if !fits => {
                            // Longer than any sensitive key: give up, but a `?`/`&` that ends
                            // it still starts the next key.
                            self.state = State::Idle;
                            if delim != b'=' {
                                i -= 1;
                            }
                        }
                        b'=' => {
                            if is_sensitive_key(key.as_bytes()) {
                                out.extend_from_slice(&input[copy_from..i]);
                                self.state = State::Value(Vec::new());
                            } else {
                                self.state = State::Idle;
                            }
                        }
                        _ => *key = KeyBuf::default(),
                    }
                }
                State::Value(partial) => match classify(&input[i..], false) {
                    ValueByte::Skip(k) => i += k,
                    ValueByte::End => {
                        out.extend_from_slice(MASK);
                        copy_from = i;
                        self.state = State::Idle;
                    }
                    ValueByte::Incomplete => {
                        partial.extend_from_slice(&input[i..]);
                        i = n;
                    }
                },
            }
        }
        if !matches!(self.state, State::Value(_)) {
            out.extend_from_slice(&input[copy_from..n]);
        }
    }

    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) {
        if let State::Value(_) = self.state {
            // Held bytes of a cut character are part of the value: dropped.
            out.extend_from_slice(MASK);
        }
        self.state = State::Idle;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sanitize(chunks: &[&[u8]]) -> String {
        let mut u = UrlSanitizer::default();
        let mut out = Vec::new();
        for c in chunks {
            u.write(c, &mut out);
        }
        u.flush(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// GitLab's own table (`common/buildlogger/internal/urlsanitizer/urlsanitizer_test.go`);
    /// `|` separates writes.
    #[test]
    fn gitlab_urlsanitizer_test_table() {
        let long = format!(
            "a really long sensitive URL http://example.com/?x-amz-credential={} that is still scrubbed",
            "0".repeat(8 * 1024)
        );
        let cases: &[(&str, &str)] = &[
            ("no escaping at all http://example.org/?test=foobar", "no escaping at all http://example.org/?test=foobar"),
            (
                "multiple: &private_token=hello &?x-amz-security-token=hello &?x-amz-security-token=hello ?x-amz-security?x-amz-security-token=hello",
                "multiple: &private_token=[MASKED] &?x-amz-security-token=[MASKED] &?x-amz-security-token=[MASKED] ?x-amz-security?x-amz-security-token=[MASKED]",
            ),
            (
                "above known key size: http://example.org/?this-is-a-really-really-long-key-name=foobar",
                "above known key size: http://example.org/?this-is-a-really-really-long-key-name=foobar",
            ),
            ("http://example.com/?private_token=deadbeef sensitive URL at the start", "http://example.com/?private_token=[MASKED] sensitive URL at the start"),
            ("a sensitive URL at the end http://example.com/?authenticity_token=deadbeef", "a sensitive URL at the end http://example.com/?authenticity_token=[MASKED]"),
            ("a sensitive URL http://example.com/?rss_token=deadbeef in the middle", "a sensitive URL http://example.com/?rss_token=[MASKED] in the middle"),
            ("a sensitive URL http://example.com/?X-AMZ-sigNATure=deadbeef with mixed case", "a sensitive URL http://example.com/?X-AMZ-sigNATure=[MASKED] with mixed case"),
            ("http://example.com/?param=second&x-amz-credential=deadbeef second param", "http://example.com/?param=second&x-amz-credential=[MASKED] second param"),
            ("http://example.com/?rss_token=hide&x-amz-credential=deadbeef both params", "http://example.com/?rss_token=[MASKED]&x-amz-credential=[MASKED] both params"),
            (&long, "a really long sensitive URL http://example.com/?x-amz-credential=[MASKED] that is still scrubbed"),
            (
                "spl|it sensit|ive UR|L http://example.com/?x-amz-cred|ential=abcdefghij|klmnopqrstuvwxyz01234567",
                "split sensitive URL http://example.com/?x-amz-credential=[MASKED]",
            ),
            (
                "newline: http://example.com/?x-amz-credential=abc\nhttp://example.com/?x-amz-credential=abc",
                "newline: http://example.com/?x-amz-credential=[MASKED]\nhttp://example.com/?x-amz-credential=[MASKED]",
            ),
            (
                "control character: http://example.com/?x-amz-credential=abc\x08http://example.com/?x-amz-credential=abc",
                "control character: http://example.com/?x-amz-credential=[MASKED]\x08http://example.com/?x-amz-credential=[MASKED]",
            ),
            (
                "rss_token=notmasked http://example.com/?rss_token=!@#$A&x-amz-credential=abc&test=test",
                "rss_token=notmasked http://example.com/?rss_token=[MASKED]&x-amz-credential=[MASKED]&test=test",
            ),
            ("no value: http://example.com/?x-amz-credential=&private_token=gitlab", "no value: http://example.com/?x-amz-credential=[MASKED]&private_token=[MASKED]"),
            ("double &: http://example.com/?x-amz-credential=abc&&private_token=gitlab", "double &: http://example.com/?x-amz-credential=[MASKED]&&private_token=[MASKED]"),
            ("double ?: http://example.com/?x-amz-credential=abc??private_token=gitlab", "double ?: http://example.com/?x-amz-credential=[MASKED]??private_token=[MASKED]"),
            ("split on &: http://example.com/|&|x-amz-cre|dential=abc", "split on &: http://example.com/&x-amz-credential=[MASKED]"),
            ("split on ?: http://example.com/|?|x-amz-cre|dential=abc", "split on ?: http://example.com/?x-amz-credential=[MASKED]"),
            ("split after ?: http://example.com/|?||x-amz-cre|dential=abc", "split after ?: http://example.com/?x-amz-credential=[MASKED]"),
            (
                "interweaved tokens: ?|one ?x-amz-credential=abc two=three ?|one=two &token &x-amz-credential=abc =token ?=",
                "interweaved tokens: ?one ?x-amz-credential=[MASKED] two=three ?one=two &token &x-amz-credential=[MASKED] =token ?=",
            ),
            ("terminated before mask: ?x", "terminated before mask: ?x"),
            ("terminated before mask: ?x|-", "terminated before mask: ?x-"),
            ("terminated before mask: ?x-|", "terminated before mask: ?x-"),
            ("terminated before mask: ?x-amz-credential=", "terminated before mask: ?x-amz-credential=[MASKED]"),
            ("terminated before mask: ?x-amz-credential=|", "terminated before mask: ?x-amz-credential=[MASKED]"),
        ];
        for (input, want) in cases {
            let chunks: Vec<&[u8]> = input.split('|').map(str::as_bytes).collect();
            assert_eq!(sanitize(&chunks), *want, "input {input:?}");
        }
    }

    #[test]
    fn masks_known_params() {
        assert_eq!(
            sanitize(&[b"GET https://x/api?private_token=abc123&page=2 HTTP"]),
            "GET https://x/api?private_token=[MASKED]&page=2 HTTP"
        );
        assert_eq!(
            sanitize(&[b"s3?X-Amz-Credential=AK/2024/us/s3/aws4_request&X-Amz-Signature=ff00\n"]),
            "s3?X-Amz-Credential=[MASKED]&X-Amz-Signature=[MASKED]\n"
        );
        assert_eq!(
            sanitize(&[b"u?a=1&x-amz-security-token=tok"]),
            "u?a=1&x-amz-security-token=[MASKED]"
        );
        assert_eq!(
            sanitize(&[b"?rss_token=&authenticity_token=q?z"]),
            "?rss_token=[MASKED]&authenticity_token=[MASKED]?z"
        );
        assert_eq!(
            sanitize(&[b"?page=private_token=1"]),
            "?page=private_token=1"
        );
        assert_eq!(sanitize(&[b"private_token=1"]), "private_token=1");
        assert_eq!(
            sanitize(&[b"?x?private_token=1"]),
            "?x?private_token=[MASKED]"
        );
    }

    #[test]
    fn value_ends_at_unicode_space_and_control() {
        assert_eq!(
            sanitize(&["?private_token=ab\u{a0}cd".as_bytes()]),
            "?private_token=[MASKED]\u{a0}cd"
        );
        assert_eq!(
            sanitize(&["?private_token=ab\u{3000}cd".as_bytes()]),
            "?private_token=[MASKED]\u{3000}cd"
        );
        assert_eq!(
            sanitize(&["?private_token=abé€cd\tz".as_bytes()]),
            "?private_token=[MASKED]\tz"
        );
        assert_eq!(
            sanitize(&[b"?private_token=ab\x1bcd"]),
            "?private_token=[MASKED]\x1bcd"
        );
    }

    #[test]
    fn split_everywhere_matches_one_shot() {
        let input =
            "pre ?private_token=tok\u{3000}en&PRIVATE_TOKEN=x€y more&rss_token=z".as_bytes();
        let want = sanitize(&[input]);
        assert_eq!(
            want,
            "pre ?private_token=[MASKED]\u{3000}en&PRIVATE_TOKEN=[MASKED] more&rss_token=[MASKED]"
        );
        for i in 0..=input.len() {
            for j in i..=input.len() {
                assert_eq!(
                    sanitize(&[&input[..i], &input[i..j], &input[j..]]),
                    want,
                    "split at {i},{j}"
                );
            }
        }
    }

    #[test]
    fn overlong_key_is_given_up() {
        assert_eq!(
            sanitize(&[b"?aaaaaaaaaaaaaaaaaaaaaprivate_token=1"]),
            "?aaaaaaaaaaaaaaaaaaaaaprivate_token=1"
        );
        assert_eq!(
            sanitize(&[b"?x-amz-security-token=1"]),
            "?x-amz-security-token=[MASKED]"
        );
    }
}
