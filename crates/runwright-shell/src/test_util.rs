//! What the unit tests of this crate share: whether a process still runs, unique marks, skips.

use std::time::{Duration, Instant};

/// Whether `pid` runs (a zombie does not: it waits only for its parent to reap it).
pub(crate) fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// Waits up to 3 s for `pid` to end; whether it did.
pub(crate) fn wait_dead(pid: i32) -> bool {
    let start = Instant::now();
    while alive(pid) && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(5));
    }
    !alive(pid)
}

/// A process mark no other test (or service) uses.
pub(crate) fn unique_mark(what: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "unit-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `program` when it is on PATH, else a visible skip.
#[allow(clippy::print_stderr)]
pub(crate) fn needs(program: &str) -> bool {
    let found = crate::which(program);
    if !found {
        eprintln!("skipped: needs {program} on PATH");
    }
    found
}
