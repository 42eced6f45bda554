//! ANSI escape sequences the runner writes into the job log.
//!
//! GitLab's log viewer understands a small set of SGR codes; the runner uses exactly these
//! (`helpers/ansi_colors.go`). Keeping them in one place keeps our output byte-identical.

/// Erase to end of line (`ANSI_CLEAR`): follows every section marker.
pub const CLEAR: &str = "\x1b[0K";
/// Reset attributes (`ANSI_RESET`).
pub const RESET: &str = "\x1b[0;m";
/// Bold cyan (`ANSI_BOLD_CYAN`): stage titles.
pub const BOLD_CYAN: &str = "\x1b[36;1m";
/// Bold green (`ANSI_BOLD_GREEN`): `$ command` lines.
pub const BOLD_GREEN: &str = "\x1b[32;1m";
/// Yellow (`ANSI_YELLOW`): warnings.
pub const YELLOW: &str = "\x1b[0;33m";
/// Bold red (`ANSI_BOLD_RED`): errors.
pub const BOLD_RED: &str = "\x1b[31;1m";
/// Bold yellow (`ANSI_BOLD_YELLOW`): the output-limit notice.
pub const BOLD_YELLOW: &str = "\x1b[33;1m";
