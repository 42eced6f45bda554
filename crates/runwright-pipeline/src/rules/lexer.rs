//! Tokens of GitLab's CI expression language (`rules:if`, `only:variables`), as GitLab's
//! `Gitlab::Ci::Pipeline::Expression::Lexer` knows them: `$VAR`, `"…"`/`'…'` (no escapes), `null`,
//! `/regex/flags`, `==`, `!=`, `=~`, `!~`, `&&`, `||`, `(`, `)`. Each token keeps its column for errors.

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// `$NAME`.
    Variable(String),
    /// `"text"` or `'text'`.
    String(String),
    /// `/pattern/flags`.
    Pattern {
        /// The pattern between the slashes (`\/` kept as written).
        source: String,
        /// Flags after the closing slash.
        flags: String,
    },
    /// `null`.
    Null,
    /// `==`.
    Equals,
    /// `!=`.
    NotEquals,
    /// `=~`.
    Matches,
    /// `!~`.
    NotMatches,
    /// `&&`.
    And,
    /// `||`.
    Or,
    /// `(`.
    LParen,
    /// `)`.
    RParen,
}

/// A token and its 1-based column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned {
    /// The token.
    pub token: Token,
    /// 1-based column.
    pub column: usize,
}

/// A lexing error: what and where (1-based column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    /// What is wrong.
    pub message: String,
    /// 1-based column.
    pub column: usize,
}

/// Splits an expression into tokens.
pub fn lex(input: &str) -> Result<Vec<Spanned>, LexError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let token = match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '$' => {
                let len = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_alphanumeric() || **c == '_')
                    .count();
                if len == 0 {
                    return Err(LexError {
                        message: "`$` is not followed by a variable name".into(),
                        column,
                    });
                }
                let name: String = chars[i + 1..i + 1 + len].iter().collect();
                i += 1 + len;
                Token::Variable(name)
            }
            '"' | '\'' => {
                let Some(end) = chars[i + 1..].iter().position(|x| *x == c) else {
                    return Err(LexError {
                        message: "unterminated string".into(),
                        column,
                    });
                };
                let s: String = chars[i + 1..i + 1 + end].iter().collect();
                i += end + 2;
                Token::String(s)
            }
            '/' => {
                // GitLab: %r{^/([^/]|\\/)+[^\\]/[ismU]*}: a non-empty pattern; `\/` does not close it.
                let mut j = i + 1;
                let mut closed = None;
                while j < chars.len() {
                    if chars[j] == '\\' {
                        j += 2;
                        continue;
                    }
                    if chars[j] == '/' {
                        closed = Some(j);
                        break;
                    }
                    j += 1;
                }
                let Some(end) = closed else {
                    return Err(LexError {
                        message: "unterminated regular expression".into(),
                        column,
                    });
                };
                if end == i + 1 {
                    return Err(LexError {
                        message: "empty regular expression".into(),
                        column,
                    });
                }
                // GitLab's pattern lexeme (`%r{^/([^/]|\\/)+[^\\]/[ismU]*}`) needs two characters or more
                // (docs: jobs/job_rules, "Single-character regular expressions, like `/./`, are not supported").
                if end == i + 2 {
                    return Err(LexError {
                        message: "single-character regular expressions are not supported".into(),
                        column,
                    });
                }
                let source: String = chars[i + 1..end].iter().collect();
                let flen = chars[end + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .count();
                let flags: String = chars[end + 1..end + 1 + flen].iter().collect();
                if let Some(bad) = flags.chars().find(|f| !"ismU".contains(*f)) {
                    return Err(LexError {
                        message: format!(
                            "unknown regular expression flag `{bad}` (allowed: i, m, s, U)"
                        ),
                        column: end + 2 + flags.find(bad).unwrap_or(0),
                    });
                }
                i = end + 1 + flen;
                Token::Pattern { source, flags }
            }
            '(' => {
                i += 1;
                Token::LParen
            }
            ')' => {
                i += 1;
                Token::RParen
            }
            _ => {
                let t = match two.as_str() {
                    "==" => Some(Token::Equals),
                    "!=" => Some(Token::NotEquals),
                    "=~" => Some(Token::Matches),
                    "!~" => Some(Token::NotMatches),
                    "&&" => Some(Token::And),
                    "||" => Some(Token::Or),
                    _ => None,
                };
                if let Some(t) = t {
                    i += 2;
                    t
                } else {
                    let word_len = chars[i..]
                        .iter()
                        .take_while(|c| c.is_alphanumeric() || **c == '_')
                        .count();
                    let word: String = chars[i..i + word_len].iter().collect();
                    if word == "null" {
                        i += 4;
                        Token::Null
                    } else {
                        let shown = if word.is_empty() { c.to_string() } else { word };
                        return Err(LexError {
                            message: format!("unexpected `{shown}`"),
                            column,
                        });
                    }
                }
            }
        };
        out.push(Spanned { token, column });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = lex(r#"$A == "x" && ($B =~ /a\/b/i || 'y' != null)"#).expect("lex");
        let kinds: Vec<Token> = t.into_iter().map(|s| s.token).collect();
        assert_eq!(
            kinds,
            vec![
                Token::Variable("A".into()),
                Token::Equals,
                Token::String("x".into()),
                Token::And,
                Token::LParen,
                Token::Variable("B".into()),
                Token::Matches,
                Token::Pattern {
                    source: "a\\/b".into(),
                    flags: "i".into()
                },
                Token::Or,
                Token::String("y".into()),
                Token::NotEquals,
                Token::Null,
                Token::RParen,
            ]
        );
    }

    #[test]
    fn errors_have_columns() {
        assert_eq!(lex("$A == 1").expect_err("err").column, 7);
        assert_eq!(lex("$A == \"x").expect_err("err").column, 7);
        assert_eq!(lex("$A =~ /xy/g").expect_err("err").column, 11);
        assert_eq!(lex("$A =~ /./").expect_err("err").column, 7);
    }
}
