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
/// Bold black (`ANSI_BOLD_BLACK`).
pub const BOLD_BLACK: &str = "\x1b[30;1m";
/// Bold blue (`ANSI_BOLD_BLUE`).
pub const BOLD_BLUE: &str = "\x1b[34;1m";
/// Bold magenta (`ANSI_BOLD_MAGENTA`).
pub const BOLD_MAGENTA: &str = "\x1b[35;1m";
/// Bold white (`ANSI_BOLD_WHITE`).
pub const BOLD_WHITE: &str = "\x1b[37;1m";
/// Grey (`ANSI_GREY`).
pub const GREY: &str = "\x1b[0;37m";
