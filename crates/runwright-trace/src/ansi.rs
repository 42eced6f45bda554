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

/// One line of a job log as plain text: escape sequences and GitLab's `section_start:…\r` /
/// `section_end:…\r` markers removed, what a carriage return overwrote dropped (as a terminal
/// would show it). `line` holds no `\n`. For logs read where colours cannot be shown.
pub fn strip_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // CSI: ESC [ parameters… final byte (0x40–0x7e); any other escape is two characters.
        if chars.peek() == Some(&'[') {
            chars.next();
            for n in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&n) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    let mut l = out.as_str();
    while let Some(rest) = l
        .strip_prefix("section_start:")
        .or_else(|| l.strip_prefix("section_end:"))
    {
        l = rest.split_once('\r').map_or("", |(_, after)| after);
    }
    let l = l.trim_end_matches('\r');
    l.rsplit('\r').next().unwrap_or(l).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_line_removes_colours_markers_and_overwritten_text() {
        assert_eq!(
            strip_line("section_start:1:step\r\x1b[0K\x1b[32;1m$ echo hi\x1b[0;m"),
            "$ echo hi"
        );
        assert_eq!(strip_line("section_end:1:step\r\x1b[0K"), "");
        assert_eq!(strip_line("10%\r50%\r100%\r"), "100%");
        assert_eq!(strip_line("plain"), "plain");
    }
}
