//! Collapsible section markers in the job log.
//!
//! GitLab's log viewer folds the text between `section_start:<ts>:<name>` and
//! `section_end:<ts>:<name>` lines (runner `helpers/build_section.go`, `shells/bash.go`). Each
//! marker ends with `\r` + [`ansi::CLEAR`](crate::ansi::CLEAR) so a terminal shows nothing of it.
//! Options such as `[collapsed=true]` or `[hide_duration=true,collapsed=true]` follow the name.

use crate::ansi::CLEAR;

/// `section_start:<unix_ts>:<name><options>\r\x1b[0K`; `options` is `""` or `[k=v,…]`.
pub fn section_start(name: &str, options: &str, unix_ts: i64) -> String {
    format!("section_start:{unix_ts}:{name}{options}\r{CLEAR}")
}

/// `section_end:<unix_ts>:<name>\r\x1b[0K`.
pub fn section_end(name: &str, unix_ts: i64) -> String {
    format!("section_end:{unix_ts}:{name}\r{CLEAR}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_byte_exact() {
        assert_eq!(
            section_start("step_script", "", 1_700_000_000),
            "section_start:1700000000:step_script\r\x1b[0K"
        );
        assert_eq!(
            section_start("section_abc_0", "[hide_duration=true,collapsed=true]", 5),
            "section_start:5:section_abc_0[hide_duration=true,collapsed=true]\r\x1b[0K"
        );
        assert_eq!(
            section_end("step_script", 1_700_000_042),
            "section_end:1700000042:step_script\r\x1b[0K"
        );
    }
}
