//! A small Aho–Corasick automaton over byte strings, fed one byte at a time.
//!
//! It exists because both the phrase masker and the token-prefix sanitizer must find many
//! needles in a stream that arrives in arbitrary pieces: the automaton's state *is* the
//! carry-over between pieces, so nothing is missed at a write boundary and every input byte is
//! looked at once (amortised O(1) per byte thanks to failure links).
//!
//! GitLab's runner instead stacks one naive matcher per phrase
//! (`common/buildlogger/internal/masker/masker.go`), which is O(bytes × phrases) and, when a
//! partial match fails, only retries at the phrase's first byte (so `aab` is missed in `aaab`).
//! The automaton finds every occurrence.
//!
//! Besides the usual transitions it records, per state, the **hold** (length of the longest
//! suffix of the input that is a proper prefix of some needle: the bytes that must be held back
//! because they might still become part of a match) and the **longest needle ending here**
//! (0 if none).

/// Root state id.
const ROOT: u32 = 0;

/// Aho–Corasick automaton with compact (CSR) sparse transitions and a dense root row.
#[derive(Debug, Clone)]
pub(crate) struct Automaton {
    /// `edges[edge_start[s]..edge_start[s + 1]]`: goto edges of state `s`, sorted by byte.
    edge_start: Vec<u32>,
    edges: Vec<(u8, u32)>,
    /// Failure link of every state (root's is root).
    fail: Vec<u32>,
    /// Length of the longest suffix of the state's string that is a *proper* prefix of a needle
    /// (a trie node with children): how many trailing bytes a future match could still use.
    hold: Vec<u32>,
    /// Length of the longest needle that is a suffix of the state's string; 0 when none.
    out_len: Vec<u32>,
    /// Dense transitions out of the root (the common case: not inside any partial match).
    root_next: [u32; 256],
    /// Length of the longest needle.
    max_len: usize,
    /// How to find the next byte that leaves the root.
    first: FirstBytes,
}

/// The bytes that can begin a needle, searched with SIMD (`memchr`) when there are few.
#[derive(Debug, Clone)]
enum FirstBytes {
    One(u8),
    Two(u8, u8),
    Three(u8, u8, u8),
    Many,
}

impl Automaton {
    /// Builds the automaton; empty needles are ignored. Returns `None` when no needle is left.
    pub(crate) fn new<I, B>(needles: I) -> Option<Self>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        // Build the trie with per-node sparse children.
        let mut children: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        let mut depth: Vec<u32> = vec![0];
        let mut terminal: Vec<bool> = vec![false];
        let mut max_len = 0usize;
        for needle in needles {
            let needle = needle.as_ref();
            if needle.is_empty() {
                continue;
            }
            max_len = max_len.max(needle.len());
            let mut s = ROOT as usize;
            for &b in needle {
                let next = match children[s].binary_search_by_key(&b, |&(c, _)| c) {
                    Ok(i) => children[s][i].1,
                    Err(i) => {
                        let id = children.len() as u32;
                        children[s].insert(i, (b, id));
                        children.push(Vec::new());
                        depth.push(depth[s] + 1);
                        terminal.push(false);
                        id
                    }
                };
                s = next as usize;
            }
            terminal[s] = true;
        }
        if max_len == 0 {
            return None;
        }

        let n = children.len();
        let mut fail = vec![ROOT; n];
        let mut out_len = vec![0u32; n];
        let mut hold = vec![0u32; n];
        let mut root_next = [ROOT; 256];
        for &(b, t) in &children[ROOT as usize] {
            root_next[b as usize] = t;
        }

        // Breadth-first: a state's failure target is always shallower, hence already final.
        let mut queue = std::collections::VecDeque::new();
        for &(_, t) in &children[ROOT as usize] {
            fail[t as usize] = ROOT;
            queue.push_back(t);
        }
        while let Some(s) = queue.pop_front() {
            let su = s as usize;
            out_len[su] = if terminal[su] {
                depth[su]
            } else {
                out_len[fail[su] as usize]
            };
            hold[su] = if children[su].is_empty() {
                hold[fail[su] as usize]
            } else {
                depth[su]
            };
            for &(b, t) in &children[su] {
                // fail(t) = goto(fail(s) …, b), following failure links.
                let mut f = fail[su];
                let target = loop {
                    if f == ROOT {
                        break root_next[b as usize];
                    }
                    let fc = &children[f as usize];
                    if let Ok(i) = fc.binary_search_by_key(&b, |&(c, _)| c) {
                        break fc[i].1;
                    }
                    f = fail[f as usize];
                };
                fail[t as usize] = if target == t { ROOT } else { target };
                queue.push_back(t);
            }
        }

        let mut edge_start = Vec::with_capacity(n + 1);
        let mut edges = Vec::with_capacity(n.saturating_sub(1));
        for c in &children {
            edge_start.push(edges.len() as u32);
            edges.extend_from_slice(c);
        }
        edge_start.push(edges.len() as u32);

        let starts: Vec<u8> = children[ROOT as usize].iter().map(|&(b, _)| b).collect();
        let first = match starts[..] {
            [a] => FirstBytes::One(a),
            [a, b] => FirstBytes::Two(a, b),
            [a, b, c] => FirstBytes::Three(a, b, c),
            _ => FirstBytes::Many,
        };

        Some(Self {
            first,
            edge_start,
            edges,
            fail,
            hold,
            out_len,
            root_next,
            max_len,
        })
    }

    /// The start state.
    #[inline]
    pub(crate) fn start(&self) -> u32 {
        ROOT
    }

    /// Offset of the first byte in `hay` that may begin a needle (leaves the root state).
    #[inline]
    pub(crate) fn find_start(&self, hay: &[u8]) -> Option<usize> {
        match self.first {
            FirstBytes::One(a) => memchr::memchr(a, hay),
            FirstBytes::Two(a, b) => memchr::memchr2(a, b, hay),
            FirstBytes::Three(a, b, c) => memchr::memchr3(a, b, c, hay),
            FirstBytes::Many => hay.iter().position(|&b| self.root_next[b as usize] != ROOT),
        }
    }

    /// The state after reading `b` in state `s`.
    #[inline]
    pub(crate) fn next(&self, mut s: u32, b: u8) -> u32 {
        loop {
            if s == ROOT {
                return self.root_next[b as usize];
            }
            let su = s as usize;
            let lo = self.edge_start[su] as usize;
            let hi = self.edge_start[su + 1] as usize;
            let row = &self.edges[lo..hi];
            // Most states have one child: a linear scan beats a binary search there.
            if let Some(&(_, t)) = row.iter().find(|&&(c, _)| c == b) {
                return t;
            }
            s = self.fail[su];
        }
    }

    /// Number of trailing input bytes that could still be the start of a needle (they must be
    /// held back): no later match can start before `position - hold(state)`.
    #[inline]
    pub(crate) fn hold(&self, s: u32) -> usize {
        self.hold[s as usize] as usize
    }

    /// Length of the longest needle ending at the byte that led into `s` (0: none).
    #[inline]
    pub(crate) fn match_len(&self, s: u32) -> usize {
        self.out_len[s as usize] as usize
    }

    /// Length of the longest needle.
    pub(crate) fn max_len(&self) -> usize {
        self.max_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All (start, end) of every needle occurrence, found by brute force.
    fn brute(needles: &[&str], hay: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for end in 1..=hay.len() {
            let mut best = 0;
            for n in needles {
                let n = n.as_bytes();
                if !n.is_empty() && n.len() <= end && &hay[end - n.len()..end] == n {
                    best = best.max(n.len());
                }
            }
            if best > 0 {
                out.push((end - best, end));
            }
        }
        out
    }

    fn run(ac: &Automaton, hay: &[u8]) -> Vec<(usize, usize)> {
        let mut s = ac.start();
        let mut out = Vec::new();
        for (i, &b) in hay.iter().enumerate() {
            s = ac.next(s, b);
            let l = ac.match_len(s);
            if l > 0 {
                out.push((i + 1 - l, i + 1));
            }
        }
        out
    }

    #[test]
    fn finds_longest_needle_ending_at_each_position() {
        let needles = ["aab", "ab", "b", "abcab", "he", "she", "hers", "his"];
        let ac = Automaton::new(needles).expect("needles");
        for hay in [
            &b"aaab"[..],
            b"ushers",
            b"abcabcab",
            b"aabaabab",
            b"hishershe",
            b"",
        ] {
            assert_eq!(run(&ac, hay), brute(&needles, hay), "{:?}", hay);
        }
    }

    #[test]
    fn naive_restart_case_that_gitlab_misses() {
        // GitLab's per-phrase matcher misses "aab" inside "aaab"; the automaton must not.
        let ac = Automaton::new(["aab"]).expect("needle");
        assert_eq!(run(&ac, b"aaab"), vec![(1, 4)]);
    }

    #[test]
    fn hold_tracks_possible_needle_prefix() {
        let ac = Automaton::new(["secret"]).expect("needle");
        let mut s = ac.start();
        for &b in b"xxsec" {
            s = ac.next(s, b);
        }
        assert_eq!(ac.hold(s), 3);
        s = ac.next(s, b'x');
        assert_eq!(ac.hold(s), 0);
        // A complete needle that nothing extends needs no holding back.
        for &b in b"secret" {
            s = ac.next(s, b);
        }
        assert_eq!(ac.match_len(s), 6);
        assert_eq!(ac.hold(s), 0);
    }

    #[test]
    fn find_start_with_few_and_many_first_bytes() {
        let one = Automaton::new(["xy"]).expect("needle");
        assert_eq!(one.find_start(b"abcxy"), Some(3));
        assert_eq!(one.find_start(b"abc"), None);
        let three = Automaton::new(["a1", "b2", "c3"]).expect("needles");
        assert_eq!(three.find_start(b"zzzc"), Some(3));
        let many = Automaton::new(["a", "b", "c", "d", "e"]).expect("needles");
        assert_eq!(many.find_start(b"zzzzd"), Some(4));
        assert_eq!(many.find_start(b"zzzz"), None);
        let mut hay = vec![b'z'; 100];
        hay.push(0xff);
        let high = Automaton::new([[0xffu8], [0x80u8], [0x81u8], [0x82u8]]).expect("needles");
        assert_eq!(high.find_start(&hay), Some(100));
    }

    #[test]
    fn empty_needles_only_is_none() {
        assert!(Automaton::new([""]).is_none());
        assert!(Automaton::new(Vec::<String>::new()).is_none());
    }
}
