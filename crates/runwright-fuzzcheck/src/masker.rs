//! The trace masker (runwright-trace's `Masker`): what the job prints, cut into writes by pipe reads.
use runwright_trace::{Masker, MASK};

/// Input: a first line of masked values separated by tabs, a second line of write boundaries (decimal byte
/// offsets separated by commas), then the job's output. Properties: the output does not depend on the
/// boundaries (one write gives the same bytes); no masked value survives in the output.
///
/// Masked values made of bytes of the mask text (`[MASKED]`) are left out of the second property: `x[` is in
/// `xx[` masked to `x[MASKED]` whatever a masker does.
pub fn masker(data: &[u8]) {
    let mut lines = data.splitn(3, |b| *b == b'\n');
    let secrets: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(|b| *b == b'\t')
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let cuts: Vec<usize> = String::from_utf8_lossy(lines.next().unwrap_or_default())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let input = lines.next().unwrap_or_default();
    let prefixes = ["tok_".to_string()];

    let whole = run(&secrets, &prefixes, input, &[]);
    let chunked = run(&secrets, &prefixes, input, &cuts);
    assert!(
        whole == chunked,
        "write boundaries {cuts:?} change the output:\n{:?}\n{:?}",
        String::from_utf8_lossy(&whole),
        String::from_utf8_lossy(&chunked)
    );
    for s in &secrets {
        // The masker masks trimmed values (GitLab's masked variables cannot start or end with spaces anyway).
        let s = s.trim().as_bytes();
        if s.is_empty() || s.iter().any(|b| MASK.contains(b)) {
            continue;
        }
        assert!(
            !whole.windows(s.len()).any(|w| w == s),
            "masked value {:?} in output {:?}",
            String::from_utf8_lossy(s),
            String::from_utf8_lossy(&whole)
        );
    }
}

fn run(secrets: &[String], prefixes: &[String], input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut m = Masker::new(secrets, prefixes);
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain(std::iter::once(input.len())) {
        m.write_into(&input[at..c], &mut out);
        at = c;
    }
    m.flush_into(&mut out);
    out
}
