//! The whole masking chain as one streaming writer, usable on its own (journal, error messages).
//!
//! GitLab's runner wraps every stream written to the job log in the same chain
//! (`common/buildlogger/build_logger.go`, `wrap`): data goes through the **phrase masker** first,
//! then the **URL parameter sanitizer**, then the **token-prefix sanitizer** (then, only with
//! `FF_TIMESTAMPS`, the timestamper: [`crate::timestamp`], applied by the [`crate::TraceBuffer`]
//! per output stream). Masking phrases first matters: a masked value that itself starts with
//! `glpat-` becomes a plain `[MASKED]`.
//!
//! State owned: one of each stage plus two scratch buffers reused between writes. Held back at
//! any time: at most the longest phrase (phrase masker) plus 3 bytes (URL sanitizer).

use crate::phrase::PhraseMasker;
use crate::token::TokenSanitizer;
use crate::url::UrlSanitizer;

/// Streaming masker: masked phrases, sensitive URL parameters and prefixed tokens → `[MASKED]`.
///
/// Feed the stream with [`Masker::write`] in pieces of any size; call [`Masker::flush`] at the
/// end to release held-back bytes. The concatenated output does not depend on how the input was
/// split. Its `Debug` output never shows the phrases or held-back bytes.
#[derive(Clone)]
pub struct Masker {
    phrases: PhraseMasker,
    url: UrlSanitizer,
    token: TokenSanitizer,
    scratch_a: Vec<u8>,
    scratch_b: Vec<u8>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("phrases", &self.phrases.len())
            .field("max_phrase_len", &self.phrases.max_len())
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// `masked`: values of masked variables (empty and duplicate values ignored).
    /// `token_prefixes`: extra token prefixes (`features.token_mask_prefixes`); GitLab's default
    /// prefixes (`glpat-`, `glrt-`, `gldt-`, … as with `FF_MASK_ALL_DEFAULT_TOKENS` on) are
    /// always included.
    pub fn new(masked: &[String], token_prefixes: &[String]) -> Self {
        Self::with_default_tokens(masked, token_prefixes, true)
    }

    /// Like [`Masker::new`]; `mask_all_default_tokens` is the job's `FF_MASK_ALL_DEFAULT_TOKENS`
    /// (off: of GitLab's default prefixes only `glpat-`).
    pub fn with_default_tokens(
        masked: &[String],
        token_prefixes: &[String],
        mask_all_default_tokens: bool,
    ) -> Self {
        Self {
            phrases: PhraseMasker::new(masked),
            url: UrlSanitizer::default(),
            token: TokenSanitizer::new(token_prefixes, mask_all_default_tokens),
            scratch_a: Vec::new(),
            scratch_b: Vec::new(),
        }
    }

    /// Masks the next piece of the stream; returns the bytes that are final.
    pub fn write(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        self.write_into(input, &mut out);
        out
    }

    /// Like [`Masker::write`], appending to `out`.
    pub fn write_into(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.scratch_a.clear();
        self.phrases.write(input, &mut self.scratch_a);
        self.downstream(out);
    }

    /// End of stream: returns everything still held back (masked as needed).
    pub fn flush(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.flush_into(&mut out);
        out
    }

    /// Like [`Masker::flush`], appending to `out`.
    pub fn flush_into(&mut self, out: &mut Vec<u8>) {
        self.scratch_a.clear();
        self.phrases.flush(&mut self.scratch_a);
        self.scratch_b.clear();
        self.url.write(&self.scratch_a, &mut self.scratch_b);
        self.url.flush(&mut self.scratch_b);
        self.token.write(&self.scratch_b, out);
        self.token.flush(out);
    }

    /// Adds a secret learned mid-stream (e.g. a file variable's contents). Bytes still held back
    /// are re-examined; bytes already returned cannot be taken back. Returns bytes made final.
    pub fn add_masked(&mut self, value: &str) -> Vec<u8> {
        let mut out = Vec::new();
        self.add_masked_into(value, &mut out);
        out
    }

    /// Like [`Masker::add_masked`], appending to `out`.
    pub fn add_masked_into(&mut self, value: &str, out: &mut Vec<u8>) {
        self.scratch_a.clear();
        self.phrases.add_phrase(value, &mut self.scratch_a);
        self.downstream(out);
    }

    /// Length of the longest masked phrase: the bound on bytes held back by the phrase stage.
    pub fn max_phrase_len(&self) -> usize {
        self.phrases.max_len()
    }

    /// Runs `scratch_a` through the URL and token stages into `out`.
    fn downstream(&mut self, out: &mut Vec<u8>) {
        if self.scratch_a.is_empty() {
            return;
        }
        self.scratch_b.clear();
        self.url.write(&self.scratch_a, &mut self.scratch_b);
        self.token.write(&self.scratch_b, out);
    }
}

/// Masks a whole string at once with `masked` phrases, sensitive URL parameters and GitLab's
/// prefixed tokens (for error messages and other one-off text).
pub fn mask_str(s: &str, masked: &[String]) -> String {
    let mut m = Masker::new(masked, &[]);
    let mut out = m.write(s.as_bytes());
    m.flush_into(&mut out);
    // Masking replaces whole phrases/characters with ASCII, so valid UTF-8 stays valid.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn chain_order_matches_gitlab() {
        // The phrase is masked first, so the token sanitizer sees no `glpat-` left.
        assert_eq!(
            mask_str("x glpat-SECRETVALUE y", &strings(&["glpat-SECRETVALUE"])),
            "x [MASKED] y"
        );
        assert_eq!(
            mask_str(
                "clone https://h/r.git?private_token=abc and glpat-zzz and hunter22",
                &strings(&["hunter22"])
            ),
            "clone https://h/r.git?private_token=[MASKED] and glpat-[MASKED] and [MASKED]"
        );
    }

    #[test]
    fn debug_does_not_leak_secrets() {
        let mut m = Masker::new(&strings(&["hunter22"]), &[]);
        m.write(b"hunter2");
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("hunter"), "{dbg}");
        assert!(!dbg.contains("104, 117"), "{dbg}");
    }

    #[test]
    fn no_minimum_length_but_never_empty() {
        // The runner masks whatever it is given (common/spec/variables.go `Masked()`), even short.
        assert_eq!(
            mask_str("a-b-a", &strings(&["a", ""])),
            "[MASKED]-b-[MASKED]"
        );
    }

    #[test]
    fn flush_releases_held_back_bytes() {
        let mut m = Masker::new(&strings(&["secret"]), &[]);
        assert_eq!(m.write(b"abc sec"), b"abc ");
        assert_eq!(m.flush(), b"sec");
        let mut m = Masker::new(&strings(&["secret"]), &[]);
        let mut out = m.write(b"abc glpat-12");
        out.extend(m.write(b"34 secr"));
        out.extend(m.write(b"et"));
        out.extend(m.flush());
        assert_eq!(out, b"abc glpat-[MASKED] [MASKED]");
    }

    #[test]
    fn add_masked_mid_stream() {
        let mut m = Masker::new(&[], &[]);
        let mut out = m.write(b"before filecontent ");
        out.extend(m.add_masked("filecontent"));
        out.extend(m.write(b"after filecont"));
        out.extend(m.write(b"ent"));
        out.extend(m.flush());
        assert_eq!(out, b"before filecontent after [MASKED]");
    }
}

#[cfg(test)]
mod props {
    //! The whole chain under random chunking: same bytes as one shot, no secret ever visible.
    use super::*;
    use proptest::prelude::*;

    fn run(masked: &[String], prefixes: &[String], input: &[u8], cuts: &[usize]) -> Vec<u8> {
        // `glpat-` only: the reference of the first property knows phrases, not tokens.
        let mut m = Masker::with_default_tokens(masked, prefixes, false);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain(std::iter::once(input.len())) {
            out.extend(m.write(&input[at..c]));
            at = c;
        }
        out.extend(m.flush());
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn case() -> impl Strategy<Value = (Vec<String>, Vec<u8>)> {
        // Secrets use lowercase letters and digits only, so no secret can be spelled by the
        // `[MASKED]` text or the kept prefixes/keys around it.
        prop::collection::vec("[a-z0-9]{1,10}", 1..5).prop_flat_map(|secrets| {
            let noise = prop_oneof![
                "[a-zA-Z0-9 \n\t=&?._-]{0,10}",
                Just("glpat-".to_string()),
                Just("?private_token=".to_string()),
                Just("&X-Amz-Signature=".to_string()),
                Just("é€\u{3000}".to_string()),
            ];
            let piece = prop_oneof![
                noise.prop_map(String::into_bytes),
                prop::sample::select(secrets.clone()).prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 0..4),
            ];
            prop::collection::vec(piece, 0..30).prop_map(move |v| (secrets.clone(), v.concat()))
        })
    }

    /// Any secrets (any characters but those of `[MASKED]`, which a mask itself can spell, and `?`, `&`, `-`,
    /// which would bring in the URL and token stages), and text made of the same characters, pieces of
    /// secrets and whole secrets.
    fn any_secret_case() -> impl Strategy<Value = (Vec<String>, Vec<u8>)> {
        let plain = "[^\\[\\]MASKED?&-]{1,12}";
        prop::collection::vec(plain, 1..5).prop_flat_map(move |secrets| {
            let piece = prop_oneof![
                plain.prop_map(String::into_bytes),
                prop::sample::select(secrets.clone()).prop_map(String::into_bytes),
                (
                    prop::sample::select(secrets.clone()),
                    any::<prop::sample::Index>()
                )
                    .prop_map(|(s, i)| {
                        let b = s.into_bytes();
                        b[..i.index(b.len() + 1)].to_vec()
                    }),
            ];
            prop::collection::vec(piece, 0..24).prop_map(move |v| (secrets.clone(), v.concat()))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_secret_any_chunking_gives_the_input_with_secrets_replaced(
            (secrets, input) in any_secret_case(),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
        ) {
            let got = run(&secrets, &[], &input, &cuts);
            prop_assert_eq!(&got, &crate::phrase::props::reference(&secrets, &input));
            for s in secrets.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
                prop_assert!(!contains(&got, s.as_bytes()), "secret {:?} in {:?}", s, String::from_utf8_lossy(&got));
            }
        }

        #[test]
        fn chunking_never_matters_and_secrets_never_show(
            (secrets, input) in case(),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
        ) {
            let prefixes = vec!["tok_".to_string()];
            let whole = run(&secrets, &prefixes, &input, &[]);
            let got = run(&secrets, &prefixes, &input, &cuts);
            prop_assert_eq!(&got, &whole);
            for s in &secrets {
                prop_assert!(!contains(&got, s.as_bytes()), "secret {:?} in {:?}", s, String::from_utf8_lossy(&got));
            }
        }

        #[test]
        fn byte_at_a_time_equals_one_shot((secrets, input) in case()) {
            let cuts: Vec<usize> = (0..=input.len()).collect();
            prop_assert_eq!(run(&secrets, &[], &input, &cuts), run(&secrets, &[], &input, &[]));
        }
    }
}
