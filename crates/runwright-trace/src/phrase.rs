//! The phrase masker: every occurrence of a masked variable's value becomes `[MASKED]`.
//!
//! GitLab's runner does this in `common/buildlogger/internal/masker/masker.go`: one writer per
//! phrase, stacked longest first, each holding back the bytes of a partial match so that a value
//! split over several `Write` calls is still caught. We keep that contract (streaming, split at
//! any byte, held-back bytes released on flush) with one Aho–Corasick automaton instead, and a
//! slightly stronger rule for overlaps, which is what "longest first" is after:
//!
//! * every byte that belongs to **any** occurrence of **any** phrase is hidden;
//! * each maximal run of *overlapping* occurrences becomes one `[MASKED]` (occurrences that only
//!   touch, like `secretsecret`, stay two: `[MASKED][MASKED]`, as in GitLab).
//!
//! For non-overlapping occurrences and for phrases that share a prefix (`pass` / `password`)
//! this is exactly GitLab's output. Where GitLab's stack leaks part of a phrase (phrases `xab`
//! and `abcd` in `xabcd` give `x[MASKED]`; `aa` in `aaa` gives `[MASKED]a`; `aab` in `aaab` is
//! not masked at all because its matcher never backtracks) we hide all of it.
//!
//! The output depends only on the concatenated input, never on how it was split into writes.
//!
//! State owned: the automaton, its current state, the raw bytes held back (at most the longest
//! phrase), and the not-yet-final masked intervals inside that held-back window.

use crate::automaton::Automaton;

/// The replacement text, as GitLab writes it (`masker.go`: `var mask = []byte("[MASKED]")`).
pub const MASK: &[u8] = b"[MASKED]";

/// Streaming phrase masker (see module docs).
#[derive(Debug, Clone, Default)]
pub(crate) struct PhraseMasker {
    /// Unique non-empty phrases, as given.
    phrases: Vec<Vec<u8>>,
    ac: Option<Automaton>,
    state: u32,
    /// Absolute number of input bytes consumed so far.
    pos: u64,
    /// Raw input bytes `[held_base, pos)`: neither emitted nor hidden yet.
    held: Vec<u8>,
    held_base: u64,
    /// End of the last `[MASKED]` already emitted: a later occurrence starting before it extends
    /// that mask (its bytes are swallowed) instead of producing a new one.
    mask_end: Option<u64>,
    /// Merged occurrences not yet emitted: sorted, disjoint, inside `[held_base, pos)`.
    intervals: Vec<(u64, u64)>,
}

impl PhraseMasker {
    pub(crate) fn new<S: AsRef<str>>(phrases: &[S]) -> Self {
        let mut m = Self::default();
        for p in phrases {
            m.push_phrase(p.as_ref());
        }
        m.ac = Automaton::new(&m.phrases);
        m
    }

    /// Adds `phrase` unless empty or already known; returns whether it was new.
    ///
    /// Like GitLab (`common/buildlogger/internal/unique.go`) the phrase is trimmed of surrounding
    /// whitespace (`strings.TrimSpace`: a file variable's trailing newline does not stop its
    /// contents from being masked), deduplicated, and dropped when empty (it would match
    /// everywhere). There is no minimum length: GitLab enforces 8 characters server-side only.
    fn push_phrase(&mut self, phrase: &str) -> bool {
        let phrase = phrase.trim();
        if phrase.is_empty() || self.phrases.iter().any(|p| p == phrase.as_bytes()) {
            return false;
        }
        self.phrases.push(phrase.as_bytes().to_vec());
        true
    }

    /// Learns a new secret mid-stream. Bytes not emitted yet are re-scanned with the new phrase
    /// set, so an occurrence that is still held back (or arrives later) is masked; bytes already
    /// emitted cannot be taken back.
    pub(crate) fn add_phrase(&mut self, phrase: &str, out: &mut Vec<u8>) {
        if !self.push_phrase(phrase) {
            return;
        }
        let held = std::mem::take(&mut self.held);
        // Pending intervals are recomputed by the replay; an emitted mask can no longer grow.
        self.intervals.clear();
        self.mask_end = None;
        self.ac = Automaton::new(&self.phrases);
        self.state = 0;
        self.pos = self.held_base;
        self.write(&held, out);
    }

    /// Number of distinct phrases.
    pub(crate) fn len(&self) -> usize {
        self.phrases.len()
    }

    /// Length of the longest phrase (0 without phrases): the bound on held-back bytes.
    pub(crate) fn max_len(&self) -> usize {
        self.ac.as_ref().map_or(0, Automaton::max_len)
    }

    /// Number of bytes currently held back.
    #[cfg(test)]
    pub(crate) fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Masks `input`, appending whatever is final to `out`.
    pub(crate) fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(ac) = self.ac.as_ref() else {
            out.extend_from_slice(input);
            self.pos += input.len() as u64;
            self.held_base = self.pos;
            return;
        };
        if input.is_empty() {
            return;
        }

        let base = self.pos;
        let mut state = self.state;
        let mut i = 0usize;
        let n = input.len();
        while i < n {
            if state == ac.start() {
                // Fast path: skip bytes that cannot begin a phrase.
                match ac.find_start(&input[i..]) {
                    Some(off) => i += off,
                    None => break,
                }
            }
            state = ac.next(state, input[i]);
            i += 1;
            let len = ac.match_len(state);
            if len > 0 {
                let end = base + i as u64;
                Self::on_match(
                    &mut self.mask_end,
                    &mut self.intervals,
                    end - len as u64,
                    end,
                );
            }
        }
        self.state = state;
        self.pos = base + n as u64;
        let safe = self.pos - ac.hold(state) as u64;
        self.settle(safe, input, out);
    }

    /// Records the occurrence `[start, end)` (occurrences arrive in increasing `end` order).
    fn on_match(mask_end: &mut Option<u64>, intervals: &mut Vec<(u64, u64)>, start: u64, end: u64) {
        if let Some(e) = mask_end {
            if start < *e {
                // Overlaps the mask already emitted: it, and every pending interval (all of
                // which lie in [e, end)), are swallowed by that same mask.
                *e = end;
                intervals.clear();
                return;
            }
        }
        let mut start = start;
        while let Some(&(s, e)) = intervals.last() {
            if e > start {
                start = start.min(s);
                intervals.pop();
            } else {
                break;
            }
        }
        intervals.push((start, end));
    }

    /// Emits everything before `safe` (no future occurrence can start before it). The
    /// unemitted stream is `held` (from `held_base`) followed by `input` (up to `pos`).
    fn settle(&mut self, safe: u64, input: &[u8], out: &mut Vec<u8>) {
        let input_base = self.pos - input.len() as u64;
        let mut cursor = self.held_base;
        if let Some(e) = self.mask_end {
            cursor = cursor.max(e);
        }
        let mut committed = 0;
        for &(s, e) in &self.intervals {
            if s >= safe {
                break;
            }
            // s >= cursor: intervals never start inside an emitted mask (they would have merged).
            self.copy(input, input_base, cursor, s, out);
            out.extend_from_slice(MASK);
            cursor = e;
            self.mask_end = Some(e);
            committed += 1;
        }
        self.intervals.drain(..committed);
        let mut emit_to = safe;
        if let Some(&(s, _)) = self.intervals.first() {
            emit_to = emit_to.min(s);
        }
        if emit_to > cursor {
            self.copy(input, input_base, cursor, emit_to, out);
            cursor = emit_to;
        }
        // Keep [cursor, pos) for later.
        if cursor >= input_base {
            self.held.clear();
            self.held
                .extend_from_slice(&input[(cursor - input_base) as usize..]);
        } else {
            self.held.drain(..(cursor - self.held_base) as usize);
            self.held.extend_from_slice(input);
        }
        self.held_base = cursor;
    }

    /// Appends stream bytes `[from, to)` to `out`, taking them from `held` and/or `input`.
    fn copy(&self, input: &[u8], input_base: u64, from: u64, to: u64, out: &mut Vec<u8>) {
        if from < input_base {
            let a = (from - self.held_base) as usize;
            let b = (to.min(input_base) - self.held_base) as usize;
            out.extend_from_slice(&self.held[a..b]);
        }
        if to > input_base {
            let a = (from.max(input_base) - input_base) as usize;
            let b = (to - input_base) as usize;
            out.extend_from_slice(&input[a..b]);
        }
    }

    /// End of stream: everything held back is final.
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) {
        if self.ac.is_some() {
            self.settle(self.pos, &[], out);
        }
        self.state = 0;
        self.mask_end = None;
        self.intervals.clear();
        self.held.clear();
        self.held_base = self.pos;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_once(phrases: &[&str], input: &str) -> String {
        let mut m = PhraseMasker::new(phrases);
        let mut out = Vec::new();
        m.write(input.as_bytes(), &mut out);
        m.flush(&mut out);
        String::from_utf8(out).expect("utf8")
    }

    fn mask_chunks(phrases: &[&str], chunks: &[&[u8]]) -> String {
        let mut m = PhraseMasker::new(phrases);
        let mut out = Vec::new();
        for c in chunks {
            m.write(c, &mut out);
        }
        m.flush(&mut out);
        String::from_utf8(out).expect("utf8")
    }

    /// GitLab's own table (`common/buildlogger/internal/masker/masker_test.go`); `|` separates
    /// writes.
    #[test]
    fn gitlab_masker_test_table() {
        let big = "_".repeat(8000);
        let big_input = format!("large secret: {big}|{big}");
        let big_phrase = "_".repeat(16000);
        let cases: Vec<(&str, Vec<&str>, &str)> = vec![
            ("empty secrets have no affect", vec![""], "empty secrets have no affect"),
            ("no escaping at all", vec![], "no escaping at all"),
            ("secrets", vec!["secrets"], "[MASKED]"),
            ("secret|s", vec!["secrets"], "[MASKED]"),
            ("s|ecrets", vec!["secrets"], "[MASKED]"),
            ("secretssecrets", vec!["secrets"], "[MASKED][MASKED]"),
            ("ssecrets", vec!["secrets"], "s[MASKED]"),
            ("s|secrets", vec!["secrets"], "s[MASKED]"),
            ("at the start of the buffer", vec!["at"], "[MASKED] the start of the buffer"),
            ("in the middle of the buffer", vec!["middle"], "in the [MASKED] of the buffer"),
            ("at the end of the buffer", vec!["buffer"], "at the end of the [MASKED]"),
            (
                "all values are masked",
                vec!["all", "values", "are", "masked"],
                "[MASKED] [MASKED] [MASKED] [MASKED]",
            ),
            (
                "prefixed and suffixed: xfoox ybary ffoo barr ffooo bbarr",
                vec!["foo", "bar"],
                "prefixed and suffixed: x[MASKED]x y[MASKED]y f[MASKED] [MASKED]r f[MASKED]o b[MASKED]r",
            ),
            (
                "prefix|ed, su|ffi|xed |and split|:| xfo|ox y|bary ffo|o ba|rr ffooo b|barr",
                vec!["foo", "bar"],
                "prefixed, suffixed and split: x[MASKED]x y[MASKED]y f[MASKED] [MASKED]r f[MASKED]o b[MASKED]r",
            ),
            (
                "sp|lit al|l val|ues ar|e |mask|ed",
                vec!["split", "all", "values", "are", "masked"],
                "[MASKED] [MASKED] [MASKED] [MASKED] [MASKED]",
            ),
            (
                "prefix_mask mask prefix_|mask prefix_ma|sk mas|k",
                vec!["mask", "prefix_mask"],
                "[MASKED] [MASKED] [MASKED] [MASKED] [MASKED]",
            ),
            (&big_input, vec![&big_phrase], "large secret: [MASKED]"),
            (
                "overlap: this is the en| foobar",
                vec!["this is the end", "en foobar", "en"],
                "overlap: this is the [MASKED]",
            ),
        ];
        for (input, phrases, want) in cases {
            let chunks: Vec<&[u8]> = input.split('|').map(str::as_bytes).collect();
            assert_eq!(mask_chunks(&phrases, &chunks), want, "input {input:?}");
        }
    }

    #[test]
    fn simple_occurrences() {
        assert_eq!(
            mask_once(&["secret"], "a secret here, secret"),
            "a [MASKED] here, [MASKED]"
        );
        assert_eq!(mask_once(&["secret"], "secretsecret"), "[MASKED][MASKED]");
        assert_eq!(mask_once(&["secret"], "secre"), "secre");
        assert_eq!(mask_once(&[], "secret"), "secret");
        assert_eq!(mask_once(&[""], "secret"), "secret");
    }

    #[test]
    fn overlapping_and_prefix_sharing_phrases() {
        assert_eq!(mask_once(&["pass", "password"], "password"), "[MASKED]");
        assert_eq!(mask_once(&["pass", "password"], "passwor"), "[MASKED]wor");
        assert_eq!(mask_once(&["xab", "abcd"], "xabcd"), "[MASKED]");
        assert_eq!(mask_once(&["aa"], "aaa"), "[MASKED]");
        assert_eq!(mask_once(&["aab"], "aaab"), "a[MASKED]");
        assert_eq!(mask_once(&["b", "c", "abcd"], "abcd"), "[MASKED]");
        assert_eq!(mask_once(&["b", "c", "abcd"], "abc"), "a[MASKED][MASKED]");
    }

    #[test]
    fn split_at_every_boundary() {
        let input = b"xx secretsecret yy sec secret";
        let want = mask_once(&["secret"], std::str::from_utf8(input).expect("utf8"));
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let got = mask_chunks(&["secret"], &[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(got, want, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn held_back_only_a_possible_prefix() {
        let mut m = PhraseMasker::new(&["secret"]);
        let mut out = Vec::new();
        m.write(b"hello sec", &mut out);
        assert_eq!(out, b"hello ");
        assert_eq!(m.held_len(), 3);
        m.write(b"ond", &mut out);
        assert_eq!(out, b"hello second");
        m.write(b" secr", &mut out);
        m.flush(&mut out);
        assert_eq!(out, b"hello second secr");
    }

    #[test]
    fn long_overlapping_run_does_not_grow_memory() {
        let mut m = PhraseMasker::new(&["aa"]);
        let mut out = Vec::new();
        for _ in 0..10_000 {
            m.write(b"aaaaaaaaaa", &mut out);
            assert!(m.held_len() <= 2, "held {}", m.held_len());
        }
        m.flush(&mut out);
        assert_eq!(out, b"[MASKED]");
    }

    #[test]
    fn add_phrase_rescans_held_back_bytes() {
        let mut m = PhraseMasker::new(&["secretive"]);
        let mut out = Vec::new();
        m.write(b"a secre", &mut out);
        assert_eq!(out, b"a ");
        m.add_phrase("secret", &mut out);
        m.write(b"t!", &mut out);
        m.flush(&mut out);
        assert_eq!(out, b"a [MASKED]!");
    }

    #[test]
    fn add_phrase_after_emitted_mask() {
        let mut m = PhraseMasker::new(&["abc"]);
        let mut out = Vec::new();
        m.write(b"abc", &mut out);
        m.add_phrase("zz", &mut out);
        m.write(b"-zz-abc", &mut out);
        m.flush(&mut out);
        assert_eq!(out, b"[MASKED]-[MASKED]-[MASKED]");
    }
}

#[cfg(test)]
pub(crate) mod props {
    //! The streaming masker against a brute-force reference, under random chunking.
    use super::*;
    use proptest::prelude::*;

    /// Reference: hide the union of all occurrences; overlapping ones merge, touching ones don't.
    pub(crate) fn reference(phrases: &[String], input: &[u8]) -> Vec<u8> {
        let mut iv: Vec<(usize, usize)> = Vec::new();
        for p in phrases
            .iter()
            .map(|p| p.trim().as_bytes())
            .filter(|p| !p.is_empty())
        {
            for s in 0..input.len() {
                if input[s..].starts_with(p) {
                    iv.push((s, s + p.len()));
                }
            }
        }
        iv.sort();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (s, e) in iv {
            match merged.last_mut() {
                Some(last) if s < last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let mut out = Vec::new();
        let mut at = 0;
        for (s, e) in merged {
            out.extend_from_slice(&input[at..s]);
            out.extend_from_slice(MASK);
            at = e;
        }
        out.extend_from_slice(&input[at..]);
        out
    }

    fn chunked(phrases: &[String], input: &[u8], cuts: &[usize]) -> (Vec<u8>, usize) {
        let mut m = PhraseMasker::new(phrases);
        let mut out = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut at = 0;
        let mut max_held = 0;
        for c in cuts.into_iter().chain(std::iter::once(input.len())) {
            m.write(&input[at..c], &mut out);
            max_held = max_held.max(m.held_len());
            at = c;
        }
        m.flush(&mut out);
        (out, max_held)
    }

    fn phrases() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec("[ab]{1,5}|[a-d]{1,12}", 1..5)
    }

    fn text(phrases: Vec<String>) -> impl Strategy<Value = (Vec<String>, Vec<u8>)> {
        let pieces = phrases.clone();
        let piece = prop_oneof![
            "[a-e \n]{0,8}".prop_map(String::into_bytes),
            prop::sample::select(pieces.clone()).prop_map(String::into_bytes),
            (prop::sample::select(pieces), any::<prop::sample::Index>()).prop_map(|(p, i)| {
                let b = p.into_bytes();
                b[..i.index(b.len() + 1)].to_vec()
            }),
        ];
        prop::collection::vec(piece, 0..24).prop_map(move |v| (phrases.clone(), v.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn streaming_equals_reference(
            (phrases, input) in phrases().prop_flat_map(text),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let want = reference(&phrases, &input);
            let (got, max_held) = chunked(&phrases, &input, &cuts);
            prop_assert_eq!(&got, &want);
            let longest = phrases.iter().map(|p| p.len()).max().unwrap_or(0);
            prop_assert!(max_held <= longest, "held {} > longest {}", max_held, longest);
        }
    }
}
