//! The checks behind the fuzz targets of `fuzz/`: one function per parser of outside input, taking the raw
//! fuzz input and panicking when a property fails (a parser panicking on its own is a failure too).
//!
//! `tests/seeds.rs` runs every check over the committed seeds in `fuzz/seeds/<target>/`, so the normal test
//! suite replays them (and every crash the fuzzer found, which is added there as a seed) without nightly.
//! `fuzz/run` runs the same checks under libFuzzer.
//!
//! Properties beyond "does not panic" are stated on each check.

mod archive;
mod config;
mod masker;
mod payload;
mod pipeline;
mod range;

pub use archive::archive;
pub use config::config;
pub use masker::masker;
pub use payload::job_payload;
pub use pipeline::{pipeline, rules_expression};
pub use range::range;

/// A check: panics when a property fails for this input.
pub type Check = fn(&[u8]);

/// Every fuzz target: its name (the directory of its seeds, the name of its `fuzz/fuzz_targets/` file) and
/// its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("config", config),
    ("job_payload", job_payload),
    ("pipeline", pipeline),
    ("rules_expression", rules_expression),
    ("masker", masker),
    ("archive", archive),
    ("range", range),
];

/// Strings of `text` that look like secrets a test can look for without false alarms: at least 12 ASCII
/// letters and digits with at least one digit (so no field name or fixed message word can equal one), that occur
/// exactly once in `input` (so the value is not also written somewhere non-secret).
pub(crate) fn distinctive(text: &str, input: &str) -> bool {
    text.len() >= 12
        && text.bytes().all(|b| b.is_ascii_alphanumeric())
        && text.bytes().any(|b| b.is_ascii_digit())
        && input.matches(text).count() == 1
}
