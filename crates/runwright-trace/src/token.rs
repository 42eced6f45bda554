//! The token-prefix sanitizer: `glpat-abc123` becomes `glpat-[MASKED]`.
//!
//! GitLab tokens carry a recognisable prefix, so the runner hides anything that looks like one
//! even when it is not a masked variable (`common/buildlogger/internal/tokensanitizer/
//! token_masker.go`). Rules taken from there:
//!
//! * prefixes: `glpat-` always, plus the job's `features.token_mask_prefixes`, trimmed and
//!   deduplicated (`common/buildlogger/internal/unique.go`); at most 15 are used, the shortest
//!   (GitLab sorts by length and silently ignores the rest; we always keep `glpat-` among them);
//! * after a prefix, the following run of token characters `[A-Za-z0-9._=-]` is replaced by one
//!   `[MASKED]`; the prefix itself stays; a prefix followed by no token character is left as is;
//! * a token running to the end of the stream is masked on flush.
//!
//! Nothing is ever held back: the prefix is written through as it arrives (it is kept anyway) and
//! token characters are dropped as they arrive; only the "inside a token" flag crosses writes.
//! Prefixes are found with one automaton (GitLab stacks one naive matcher per prefix).

use crate::automaton::Automaton;
use crate::phrase::MASK;

/// GitLab's personal access token prefix, always masked (`tokensanitizer.DefaultPATPrefix`).
pub const DEFAULT_TOKEN_PREFIX: &str = "glpat-";

/// GitLab uses at most this many prefixes (`tokensanitizer.New`: `if max > 15 { max = 15 }`).
pub const MAX_TOKEN_PREFIXES: usize = 15;

/// Token alphabet of `token_masker.go`: `0-9 a-z A-Z - . _ =`.
#[inline]
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'=')
}

/// See [`TokenSanitizer::new`].
pub(crate) fn prefix_set<S: AsRef<str>>(extra: &[S]) -> Vec<&str> {
    let mut others: Vec<&str> = extra
        .iter()
        .map(|p| p.as_ref().trim())
        .filter(|p| !p.is_empty() && *p != DEFAULT_TOKEN_PREFIX)
        .collect();
    others.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    others.dedup();
    others.truncate(MAX_TOKEN_PREFIXES - 1);
    let mut all = vec![DEFAULT_TOKEN_PREFIX];
    all.extend(others);
    all
}

/// Streaming token-prefix sanitizer (see module docs).
#[derive(Debug, Clone)]
pub(crate) struct TokenSanitizer {
    ac: Option<Automaton>,
    state: u32,
    /// A prefix was seen and we are dropping the token characters after it.
    in_token: bool,
    /// At least one token character was dropped (so a `[MASKED]` is owed).
    masked: bool,
}

impl TokenSanitizer {
    /// The prefix set of GitLab's `internal.Unique` + `tokensanitizer.New`: `glpat-` and
    /// `extra`, trimmed, empty ones dropped, deduplicated, ordered by (length, bytes) and cut to
    /// the first 15 — except that `glpat-` is always kept.
    pub(crate) fn new<S: AsRef<str>>(extra: &[S]) -> Self {
        Self {
            ac: Automaton::new(prefix_set(extra)),
            state: 0,
            in_token: false,
            masked: false,
        }
    }

    pub(crate) fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(ac) = self.ac.as_ref() else {
            out.extend_from_slice(input);
            return;
        };
        let n = input.len();
        let mut i = 0usize;
        // Start of the bytes to copy through.
        let mut copy_from = 0usize;
        while i < n {
            if self.in_token {
                let run = input[i..]
                    .iter()
                    .position(|&b| !is_token_char(b))
                    .unwrap_or(n - i);
                if run > 0 {
                    self.masked = true;
                }
                i += run;
                copy_from = i;
                if i == n {
                    break;
                }
                // The token ended: owe the mask, then look at this byte afresh.
                if self.masked {
                    out.extend_from_slice(MASK);
                }
                self.in_token = false;
                self.masked = false;
                self.state = ac.start();
                continue;
            }
            if self.state == ac.start() {
                match ac.find_start(&input[i..]) {
                    Some(off) => i += off,
                    None => {
                        i = n;
                        break;
                    }
                }
            }
            self.state = ac.next(self.state, input[i]);
            i += 1;
            if ac.match_len(self.state) > 0 {
                out.extend_from_slice(&input[copy_from..i]);
                copy_from = i;
                self.in_token = true;
                self.masked = false;
                self.state = ac.start();
            }
        }
        if !self.in_token {
            out.extend_from_slice(&input[copy_from..i]);
        }
    }

    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) {
        if self.in_token && self.masked {
            out.extend_from_slice(MASK);
        }
        self.in_token = false;
        self.masked = false;
        self.state = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sanitize(extra: &[&str], chunks: &[&[u8]]) -> String {
        let mut t = TokenSanitizer::new(extra);
        let mut out = Vec::new();
        for c in chunks {
            t.write(c, &mut out);
        }
        t.flush(&mut out);
        String::from_utf8(out).expect("utf8")
    }

    /// GitLab's own table (`common/buildlogger/internal/tokensanitizer/token_masker_test.go`);
    /// `|` separates writes. (Its "ignored eleventh prefix" case dates from a cap of 10; the
    /// cap is 15 now, see `prefix_cap_keeps_glpat`.)
    #[test]
    fn gitlab_token_masker_test_table() {
        let cases: &[(&[&str], &str, &str)] = &[
            (&[], "Lorem ipsum, ex ea commodo glpat-imperdiet in voluptate", "Lorem ipsum, ex ea commodo glpat-[MASKED] in voluptate"),
            (&[], "velit esseglpat-imperdiet", "velit esseglpat-[MASKED]"),
            (&[], "glpat-imperdiet Lorem", "glpat-[MASKED] Lorem"),
            (&[], "esseglpat-imperdiet=_-. end Lorem", "esseglpat-[MASKED] end Lorem"),
            (&[], "glpat-impglpat-erdiet Lorem", "glpat-[MASKED] Lorem"),
            (
                &[],
                "glpat|-imperdiet Lorem ipsum commodo gl|pat-imperdiet in",
                "glpat-[MASKED] Lorem ipsum commodo glpat-[MASKED] in",
            ),
            (&[], "glpat| -imperdiet Lorem", "glpat -imperdiet Lorem"),
            (
                &[],
                "Lorglpat-ipsu dolor sit amglp|at-t, consglpat-ctg|lpat-tur adipiscing glpat-lit, sglpat-|d do glpat-iusmod t|glpat-mpor incididunt ut |laborglpat-=_ glpat-t dolorglpat-=_ magna aliqua.",
                "Lorglpat-[MASKED] dolor sit amglpat-[MASKED], consglpat-[MASKED] adipiscing glpat-[MASKED], sglpat-[MASKED] do glpat-[MASKED] tglpat-[MASKED] incididunt ut laborglpat-[MASKED] glpat-[MASKED] dolorglpat-[MASKED] magna aliqua.",
            ),
            (
                &[],
                "Lorglpat- ipsu dolor sit amglpat-t, consglpat-ctglpat-tur",
                "Lorglpat- ipsu dolor sit amglpat-[MASKED], consglpat-[MASKED]",
            ),
            (&["token-"], "token-imperdiet Lorem", "token-[MASKED] Lorem"),
            (
                &["tok-"],
                "Lortok-ipsu dolor sit amt|ok-t, cons-ctg|lpat-tur adipiscing tok-lit, stok-|d do tok-iusmod t|tok-mpor incididunt ut |labortok-=_ tok-t dolortok-=_ magna aliqua. Tglpat-llus orci ac auctor auguglpat-eee mauris auguglpat-wEr_ lorem",
                "Lortok-[MASKED] dolor sit amtok-[MASKED], cons-ctglpat-[MASKED] adipiscing tok-[MASKED], stok-[MASKED] do tok-[MASKED] ttok-[MASKED] incididunt ut labortok-[MASKED] tok-[MASKED] dolortok-[MASKED] magna aliqua. Tglpat-[MASKED] orci ac auctor auguglpat-[MASKED] mauris auguglpat-[MASKED] lorem",
            ),
        ];
        for (prefixes, input, want) in cases {
            let chunks: Vec<&[u8]> = input.split('|').map(str::as_bytes).collect();
            assert_eq!(sanitize(prefixes, &chunks), *want, "input {input:?}");
        }
    }

    #[test]
    fn masks_pat_and_keeps_prefix() {
        assert_eq!(
            sanitize(&[], &[b"token: glpat-abc_DEF.1=2-3 end"]),
            "token: glpat-[MASKED] end"
        );
        assert_eq!(sanitize(&[], &[b"xglpat-abc"]), "xglpat-[MASKED]");
        assert_eq!(sanitize(&[], &[b"glpat- alone"]), "glpat- alone");
        assert_eq!(sanitize(&[], &[b"glpat"]), "glpat");
        assert_eq!(sanitize(&[], &[b"gglpat-x"]), "gglpat-[MASKED]");
        assert_eq!(
            sanitize(&[], &[b"glpat-a glpat-b\nglpat-c"]),
            "glpat-[MASKED] glpat-[MASKED]\nglpat-[MASKED]"
        );
    }

    #[test]
    fn extra_prefixes() {
        assert_eq!(
            sanitize(
                &["glrt-", "_gitlab_session="],
                &[b"glrt-abc _gitlab_session=xyz;"]
            ),
            "glrt-[MASKED] _gitlab_session=[MASKED];"
        );
    }

    #[test]
    fn split_across_writes_everywhere() {
        let input = b"a glpat-secretTOKEN b glpat-X";
        let want = "a glpat-[MASKED] b glpat-[MASKED]";
        for i in 0..=input.len() {
            for j in i..=input.len() {
                assert_eq!(
                    sanitize(&[], &[&input[..i], &input[i..j], &input[j..]]),
                    want,
                    "split at {i},{j}"
                );
            }
        }
    }

    #[test]
    fn prefix_cap_keeps_glpat() {
        let many: Vec<String> = (0..40).map(|i| format!("p{i}x-")).collect();
        assert_eq!(
            sanitize(
                &many.iter().map(String::as_str).collect::<Vec<_>>(),
                &[b"glpat-1 p0x-2 p13x-3 p14x-4"]
            ),
            "glpat-[MASKED] p0x-[MASKED] p13x-[MASKED] p14x-4"
        );
    }
}
