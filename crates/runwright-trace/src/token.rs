//! The token-prefix sanitizer: `glpat-abc123` becomes `glpat-[MASKED]`.
//!
//! GitLab tokens carry a recognisable prefix, so the runner hides anything that looks like one
//! even when it is not a masked variable (`common/buildlogger/internal/tokensanitizer/
//! token_masker.go`). Rules taken from there:
//!
//! * prefixes: GitLab's default ones (`DefaultTokenPrefixes`: `glpat-` always, and with
//!   `FF_MASK_ALL_DEFAULT_TOKENS`, on by default, every prefix of
//!   <https://docs.gitlab.com/security/token_overview/#token-prefixes> it lists) together with
//!   the job's `features.token_mask_prefixes`, trimmed, deduplicated and ordered by (length,
//!   bytes) (`common/buildlogger/internal/unique.go`, `build_logger.go` `New`); GitLab uses the
//!   first 15 of them (`tokensanitizer.New`) and silently ignores the rest. We mask those 15 and,
//!   deliberately, every default prefix as well (GitLab drops its longest defaults when the
//!   server sends short prefixes of its own; we only ever mask more);
//! * after a prefix, the following run of token characters `[A-Za-z0-9._=-]` is replaced by one
//!   `[MASKED]`; the prefix itself stays; a prefix followed by no token character is left as is;
//! * a token running to the end of the stream is masked on flush.
//!
//! Nothing is ever held back: the prefix is written through as it arrives (it is kept anyway) and
//! token characters are dropped as they arrive; only the "inside a token" flag crosses writes.
//! Prefixes are found with one automaton (GitLab stacks one naive matcher per prefix).

use crate::automaton::Automaton;
use crate::phrase::MASK;

/// GitLab's personal access token prefix, always masked (`tokensanitizer.DefaultTokenPrefixes`).
pub const DEFAULT_TOKEN_PREFIX: &str = "glpat-";

/// The other prefixes GitLab's runner masks with `FF_MASK_ALL_DEFAULT_TOKENS` (default on), in the
/// order of `tokensanitizer.allTokenPrefixes` (gitlab-runner 19.4).
pub const ALL_DEFAULT_TOKEN_PREFIXES: &[&str] = &[
    "gloas-",
    "gldt-",
    "glrt-",
    "glcbt-",
    "glrtr-",
    "glptt-",
    "glft-",
    "glimt-",
    "glagent-",
    "glsoat-",
    "glffct-",
    "_gitlab_session=",
    "gltok-",
];

/// GitLab uses at most this many prefixes (`tokensanitizer.New`: `min(len(prefixes), 15)`).
pub const MAX_TOKEN_PREFIXES: usize = 15;

/// Token alphabet of `token_masker.go`: `0-9 a-z A-Z - . _ =`.
#[inline]
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'=')
}

/// GitLab's default prefixes (`DefaultTokenPrefixes`): `glpat-`, plus the others when
/// `mask_all_default_tokens` (`FF_MASK_ALL_DEFAULT_TOKENS`).
pub fn default_token_prefixes(mask_all_default_tokens: bool) -> Vec<&'static str> {
    let mut v = vec![DEFAULT_TOKEN_PREFIX];
    if mask_all_default_tokens {
        v.extend_from_slice(ALL_DEFAULT_TOKEN_PREFIXES);
    }
    v
}

/// The prefixes masked (see the module docs): GitLab's selection — defaults and `extra` trimmed,
/// empty ones dropped, deduplicated, ordered by (length, bytes), the first 15 — plus every default
/// prefix GitLab's cut left out.
pub(crate) fn prefix_set<S: AsRef<str>>(extra: &[S], mask_all_default_tokens: bool) -> Vec<&str> {
    let defaults = default_token_prefixes(mask_all_default_tokens);
    let mut all: Vec<&str> = extra
        .iter()
        .map(|p| p.as_ref().trim())
        .chain(defaults.iter().copied())
        .filter(|p| !p.is_empty())
        .collect();
    all.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    all.dedup();
    all.truncate(MAX_TOKEN_PREFIXES);
    for d in defaults {
        if !all.contains(&d) {
            all.push(d);
        }
    }
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
    /// Masks the prefixes of [`prefix_set`]: GitLab's defaults (all of them with
    /// `mask_all_default_tokens`, else `glpat-`) and `extra` (the server's).
    pub(crate) fn new<S: AsRef<str>>(extra: &[S], mask_all_default_tokens: bool) -> Self {
        Self {
            ac: Automaton::new(prefix_set(extra, mask_all_default_tokens)),
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

    /// With `FF_MASK_ALL_DEFAULT_TOKENS` off: `glpat-` and `extra` (what GitLab's own tests use).
    fn sanitize(extra: &[&str], chunks: &[&[u8]]) -> String {
        sanitize_with(extra, false, chunks)
    }

    fn sanitize_with(extra: &[&str], all_defaults: bool, chunks: &[&[u8]]) -> String {
        let mut t = TokenSanitizer::new(extra, all_defaults);
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
    fn prefix_cap_keeps_gitlabs_fifteen_and_glpat() {
        // GitLab sorts the defaults and the server's prefixes together and keeps the 15 shortest:
        // here `p0x-`…`p9x-` and `p10x-`…`p14x-`, which would push `glpat-` out; we keep it too.
        let many: Vec<String> = (0..40).map(|i| format!("p{i}x-")).collect();
        assert_eq!(
            sanitize(
                &many.iter().map(String::as_str).collect::<Vec<_>>(),
                &[b"glpat-1 p0x-2 p14x-3 p15x-4"]
            ),
            "glpat-[MASKED] p0x-[MASKED] p14x-[MASKED] p15x-4"
        );
    }

    /// Every prefix of `tokensanitizer.DefaultTokenPrefixes(true)`, the runner's default.
    #[test]
    fn all_default_prefixes_are_masked_by_default_flag() {
        let input = "glpat-a gloas-b gldt-c glrt-d glcbt-e glrtr-f glptt-g glft-h glimt-i \
                     glagent-j glsoat-k glffct-l _gitlab_session=m gltok-n";
        let want = "glpat-[MASKED] gloas-[MASKED] gldt-[MASKED] glrt-[MASKED] glcbt-[MASKED] \
                    glrtr-[MASKED] glptt-[MASKED] glft-[MASKED] glimt-[MASKED] glagent-[MASKED] \
                    glsoat-[MASKED] glffct-[MASKED] _gitlab_session=[MASKED] gltok-[MASKED]";
        assert_eq!(sanitize_with(&[], true, &[input.as_bytes()]), want);
        // Split at every point: the automaton carries partial prefixes across writes.
        let b = input.as_bytes();
        for i in 0..=b.len() {
            assert_eq!(
                sanitize_with(&[], true, &[&b[..i], &b[i..]]),
                want,
                "split {i}"
            );
        }
    }

    /// `FF_MASK_ALL_DEFAULT_TOKENS=false`: `glpat-` and the server's prefixes only.
    #[test]
    fn flag_off_masks_glpat_and_server_prefixes_only() {
        assert_eq!(
            sanitize_with(
                &["glrt-"],
                false,
                &[b"glpat-a glrt-b gldt-c glptt-d _gitlab_session=e"]
            ),
            "glpat-[MASKED] glrt-[MASKED] gldt-c glptt-d _gitlab_session=e"
        );
    }

    #[test]
    fn server_prefixes_join_the_defaults() {
        assert_eq!(
            sanitize_with(&[" ghp_ ", "glrt-"], true, &[b"ghp_x glrt-y gldt-z"]),
            "ghp_[MASKED] glrt-[MASKED] gldt-[MASKED]"
        );
        // Two short server prefixes: GitLab's 15 drop `glagent-` and `_gitlab_session=`; we keep them.
        let set = prefix_set(&["ab-", "cd-"], true);
        assert_eq!(set.len(), 16);
        assert_eq!(&set[..2], &["ab-", "cd-"]);
        assert!(set.contains(&"_gitlab_session=") && set.contains(&"glagent-"));
        assert_eq!(
            sanitize_with(
                &["ab-", "cd-"],
                true,
                &[b"ab-1 cd-2 glagent-3 _gitlab_session=4"]
            ),
            "ab-[MASKED] cd-[MASKED] glagent-[MASKED] _gitlab_session=[MASKED]"
        );
    }
}
