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
/// would show it), any other control character made visible (see [`escape_controls`]). `line` holds
/// no `\n`. For logs read where colours cannot be shown.
pub fn strip_line(line: &str) -> String {
    render_line(line, false)
}

/// One line of a job log for a terminal (issue 17 item 8): as [`strip_line`], but its colours (SGR
/// sequences, `ESC [ … m`) are kept, also those of text a carriage return overwrote, so the rest
/// keeps its colour. Nothing else that a terminal would act on reaches it: no cursor movement, screen
/// or line erasing, title or clipboard (OSC), device control strings, C1 controls — a job's output
/// cannot rewrite the operator's terminal.
pub fn terminal_line(line: &str) -> String {
    render_line(line, true)
}

fn render_line(line: &str, keep_sgr: bool) -> String {
    // Escape sequences first (an OSC's text goes with it), then the markers and carriage returns on
    // what is left, where an ESC only starts a kept SGR sequence.
    let mut kept = String::with_capacity(line.len());
    for piece in Pieces::new(line) {
        match piece {
            Piece::Text(t) => kept.push_str(t),
            // Tabs are text; carriage returns are dealt with below.
            Piece::Control(c @ ('\t' | '\r')) => kept.push(c),
            Piece::Control(c) => push_escaped(&mut kept, c),
            Piece::Sequence(seq) if keep_sgr && is_sgr(seq) => kept.push_str(seq),
            Piece::Sequence(_) => {}
        }
    }
    let mut l = kept.as_str();
    while let Some(rest) = l
        .strip_prefix("section_start:")
        .or_else(|| l.strip_prefix("section_end:"))
    {
        l = rest.split_once('\r').map_or("", |(_, after)| after);
    }
    let l = l.trim_end_matches('\r');
    let Some((overwritten, shown)) = l.rsplit_once('\r') else {
        return l.to_string();
    };
    let mut out = String::new();
    if keep_sgr {
        // The colours set in the overwritten text still apply to what is shown.
        let mut rest = overwritten;
        while let Some(at) = rest.find('\x1b') {
            let seq = &rest[at..];
            let len = seq.find('m').map_or(seq.len(), |m| m + 1);
            out.push_str(&seq[..len]);
            rest = &seq[len..];
        }
    }
    out.push_str(shown);
    out
}

/// `s` with every control character made visible as Rust writes it in a string literal (`\u{1b}`,
/// `\n`, `\t`), also the C1 range (U+0080–U+009F, which some terminals obey even in UTF-8) and the
/// bidirectional formatting characters (which reorder what is shown). For one-line fields that
/// came from GitLab or a config file — job names, refs, project paths, runner names, error texts —
/// before they reach a terminal (issue 17 item 8): an escape sequence in a job name shows as text
/// instead of setting the window title or clearing the screen.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `s` with the lines it holds kept and anything else [`escape_controls`] escapes escaped: for
/// multi-line texts (an error and its causes).
pub fn escape_controls_keep_lines(s: &str) -> String {
    s.split('\n')
        .map(|l| escape_controls(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// JSON text (`serde_json`'s, whose strings already escape C0 controls) with the characters it
/// leaves raw but a terminal may act on (C1 controls, bidirectional formatting) written as `\uXXXX`
/// escapes: the same JSON value, safe to print on a terminal.
pub fn escape_json_controls(json: &str) -> std::borrow::Cow<'_, str> {
    // Raw tabs and newlines in JSON text are its own layout (strings hold them escaped).
    let unsafe_in_json = |c: char| is_unsafe(c) && !matches!(c, '\n' | '\t' | '\r');
    if !json.chars().any(unsafe_in_json) {
        return std::borrow::Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if unsafe_in_json(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// C0 and C1 controls, DEL, and the bidirectional embedding, override and isolate characters.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

/// `ESC [` parameters `m` with numeric parameters only: colours and attributes, nothing else.
fn is_sgr(seq: &str) -> bool {
    seq.strip_prefix("\x1b[")
        .and_then(|s| s.strip_suffix('m'))
        .is_some_and(|p| {
            p.bytes()
                .all(|b| b.is_ascii_digit() || b == b';' || b == b':')
        })
}

/// What a terminal reads in a text (ECMA-48): plain text, a control character, or a whole escape
/// sequence.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    /// A C0 or C1 control or DEL that does not start a sequence (tab and newline included).
    Control(char),
    /// An escape sequence, its text included: CSI, OSC/DCS/SOS/PM/APC strings up to their
    /// terminator (or the end of the text), or a two-character escape. An unfinished one runs to
    /// where a terminal would end it.
    Sequence(&'a str),
}

struct Pieces<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Pieces<'a> {
    fn new(s: &'a str) -> Self {
        Pieces { s, at: 0 }
    }

    /// The end of the sequence that starts at `start` with `first` (ESC or a C1 introducer).
    fn sequence_end(&self, start: usize, first: char) -> usize {
        let s = self.s;
        let mut i = start + first.len_utf8();
        // The 7-bit form: ESC and the introducer's second character.
        let kind = if first == '\x1b' {
            match s[i..].chars().next() {
                Some(c @ ('[' | ']' | 'P' | 'X' | '^' | '_')) => {
                    i += 1;
                    c
                }
                Some(c) if ('\x20'..='\x2f').contains(&c) => {
                    // nF escapes (character sets): intermediates, then one final byte.
                    let rest = &s[i..];
                    let n = rest
                        .bytes()
                        .take_while(|b| (0x20..=0x2f).contains(b))
                        .count();
                    return match rest.as_bytes().get(n) {
                        Some(b) if (0x30..=0x7e).contains(b) => i + n + 1,
                        _ => i + n,
                    };
                }
                Some(c) if ('\x30'..='\x7e').contains(&c) => return i + 1,
                _ => return i,
            }
        } else {
            match first {
                '\u{9b}' => '[',
                '\u{9d}' => ']',
                _ => 'P',
            }
        };
        let rest = &s[i..];
        if kind == '[' {
            // Parameters and intermediates (0x20–0x3f), then the final byte (0x40–0x7e); anything
            // else ends it (a terminal executes a control inside and drops the sequence).
            for (n, c) in rest.char_indices() {
                if ('\x40'..='\x7e').contains(&c) {
                    return i + n + 1;
                }
                if !('\x20'..='\x3f').contains(&c) {
                    return i + n;
                }
            }
            return s.len();
        }
        // A control string: up to BEL, ST (`ESC \\` or U+009C), or the end.
        let mut chars = rest.char_indices().peekable();
        while let Some((n, c)) = chars.next() {
            match c {
                '\x07' | '\u{9c}' => return i + n + c.len_utf8(),
                '\x1b' => {
                    return if chars.peek().map(|(_, c)| *c) == Some('\\') {
                        i + n + 2
                    } else {
                        i + n
                    }
                }
                _ => {}
            }
        }
        s.len()
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        let s = self.s;
        let start = self.at;
        let c = s[start..].chars().next()?;
        if c == '\x1b'
            || matches!(
                c,
                '\u{90}' | '\u{98}' | '\u{9b}' | '\u{9d}' | '\u{9e}' | '\u{9f}'
            )
        {
            let end = self.sequence_end(start, c).max(start + c.len_utf8());
            self.at = end;
            return Some(Piece::Sequence(&s[start..end]));
        }
        if c.is_control() {
            self.at = start + c.len_utf8();
            return Some(Piece::Control(c));
        }
        let len = s[start..]
            .find(|c: char| c.is_control())
            .unwrap_or(s.len() - start);
        self.at = start + len;
        Some(Piece::Text(&s[start..start + len]))
    }
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
        assert_eq!(strip_line("a\tb"), "a\tb", "tabs are text");
        assert_eq!(terminal_line("a\tb"), "a\tb");
    }

    /// What a hostile job prints to take over the terminal that reads its log.
    const HOSTILE: &str = "a\x1b]0;pwned-title\x07b\x1b[2Jc\x1b[31mred\x1b[0m\x1b]52;c;Y2xpcA==\x1b\\d\x1bPq#0\x1b\\e\u{9b}2Jf\u{9d}8;;http://x\u{9c}g\x08h\x1b(Bi\x1b7j\x1b[?1049hk";

    #[test]
    fn plain_lines_keep_no_escape_sequence_nor_control() {
        let plain = strip_line(HOSTILE);
        assert_eq!(plain, "abcreddefg\\u{8}hijk");
        assert!(!plain.chars().any(char::is_control), "{plain:?}");
    }

    #[test]
    fn terminal_lines_keep_colours_only() {
        assert_eq!(
            terminal_line(HOSTILE),
            "abc\x1b[31mred\x1b[0mdefg\\u{8}hijk"
        );
        // A colour set before a carriage return still colours what is shown; the overwritten text goes.
        assert_eq!(
            terminal_line("\x1b[32;1m10%\r\x1b[1m50%\r100%"),
            "\x1b[32;1m\x1b[1m100%"
        );
        assert_eq!(
            terminal_line("section_start:1:step\r\x1b[0K\x1b[32;1m$ echo hi\x1b[0;m"),
            "\x1b[32;1m$ echo hi\x1b[0;m"
        );
        // Not SGR: private parameters, other finals, a sequence cut by a control.
        assert_eq!(
            terminal_line("x\x1b[?25ly\x1b[5nz\x1b[3\x07w"),
            "xyz\\u{7}w"
        );
        // Cut at the end of the text.
        assert_eq!(terminal_line("x\x1b]0;title"), "x");
        assert_eq!(terminal_line("x\x1b["), "x");
        assert_eq!(terminal_line("x\x1b"), "x");
    }

    #[test]
    fn fields_show_their_controls_as_escapes() {
        assert_eq!(escape_controls("build"), "build");
        assert!(matches!(
            escape_controls("héllo"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("job\x1b]0;x\x07\x1b[2J\n\t\u{9b}\u{202e}"),
            "job\\u{1b}]0;x\\u{7}\\u{1b}[2J\\n\\t\\u{9b}\\u{202e}"
        );
        assert_eq!(
            escape_controls_keep_lines("one\x1b[2J\ntwo"),
            "one\\u{1b}[2J\ntwo"
        );
    }

    #[test]
    fn json_keeps_its_value_and_loses_raw_c1_controls() {
        let json = "[\n  \"a\u{9b}2J\u{202e}\"\n]";
        assert_eq!(escape_json_controls(json), "[\n  \"a\\u009b2J\\u202e\"\n]");
    }

    proptest::proptest! {
        #[test]
        fn no_control_but_sgr_survives(s in "(\\PC|[\\x00-\\x1f\\x7f-\\u{9f}\\[\\]m0-9;])*") {
            for out in [strip_line(&s), terminal_line(&s)] {
                let mut rest = out.as_str();
                while let Some(at) = rest.find(|c: char| c.is_control() && c != '\t') {
                    let seq = &rest[at..];
                    proptest::prop_assert!(seq.starts_with("\x1b["), "{:?} -> {:?}", s, out);
                    let end = seq.find('m');
                    proptest::prop_assert!(end.is_some_and(|e| is_sgr(&seq[..=e])), "{:?} -> {:?}", s, out);
                    rest = &seq[end.map_or(seq.len(), |e| e + 1)..];
                }
            }
            proptest::prop_assert!(!escape_controls(&s).chars().any(is_unsafe));
        }
    }
}
