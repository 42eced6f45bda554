//! A recursive-descent parser for the CI expression language. Precedence, loosest first: `||`, `&&`, then the
//! comparisons (`==`, `!=`, `=~`, `!~`, non-associative), then operands and parentheses — as GitLab's
//! `Expression::Parser` (where `&&` binds tighter than `||`).
use super::lexer::{lex, LexError, Spanned, Token};

/// An operand or operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `$NAME`.
    Variable(String),
    /// A string literal.
    String(String),
    /// `/pattern/flags`.
    Pattern {
        /// Pattern text.
        source: String,
        /// Flags.
        flags: String,
    },
    /// `null`.
    Null,
    /// A comparison.
    Compare(CompareOp, Box<Expr>, Box<Expr>),
    /// `&&`.
    And(Box<Expr>, Box<Expr>),
    /// `||`.
    Or(Box<Expr>, Box<Expr>),
}

/// The comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`.
    Equals,
    /// `!=`.
    NotEquals,
    /// `=~`.
    Matches,
    /// `!~`.
    NotMatches,
}

/// A parse error with its 1-based column.
pub type ParseError = LexError;

/// Parses an expression.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let tokens = lex(input)?;
    if tokens.is_empty() {
        return Err(LexError {
            message: "empty expression".into(),
            column: 1,
        });
    }
    let end_column = input.chars().count() + 1;
    let mut p = Parser {
        tokens,
        pos: 0,
        end_column,
        depth: 0,
    };
    let e = p.or()?;
    if let Some(t) = p.tokens.get(p.pos) {
        return Err(LexError {
            message: format!("unexpected {}", describe(&t.token)),
            column: t.column,
        });
    }
    Ok(e)
}

struct Parser {
    tokens: Vec<Spanned>,
    pos: usize,
    end_column: usize,
    depth: usize,
}

fn describe(t: &Token) -> String {
    match t {
        Token::Variable(n) => format!("variable `${n}`"),
        Token::String(s) => format!("string \"{s}\""),
        Token::Pattern { source, flags } => format!("pattern `/{source}/{flags}`"),
        Token::Null => "`null`".into(),
        Token::Equals => "`==`".into(),
        Token::NotEquals => "`!=`".into(),
        Token::Matches => "`=~`".into(),
        Token::NotMatches => "`!~`".into(),
        Token::And => "`&&`".into(),
        Token::Or => "`||`".into(),
        Token::LParen => "`(`".into(),
        Token::RParen => "`)`".into(),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|t| &t.token)
    }

    fn column(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map(|t| t.column)
            .unwrap_or(self.end_column)
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.comparison()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            let right = self.comparison()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let left = self.operand()?;
        let op = match self.peek() {
            Some(Token::Equals) => CompareOp::Equals,
            Some(Token::NotEquals) => CompareOp::NotEquals,
            Some(Token::Matches) => CompareOp::Matches,
            Some(Token::NotMatches) => CompareOp::NotMatches,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.operand()?;
        if let Some(t @ (Token::Equals | Token::NotEquals | Token::Matches | Token::NotMatches)) =
            self.peek()
        {
            return Err(LexError {
                message: format!(
                    "unexpected {}: comparisons cannot be chained, use parentheses",
                    describe(t)
                ),
                column: self.column(),
            });
        }
        Ok(Expr::Compare(op, Box::new(left), Box::new(right)))
    }

    fn operand(&mut self) -> Result<Expr, ParseError> {
        let column = self.column();
        let Some(tok) = self.peek().cloned() else {
            return Err(LexError {
                message: "unexpected end of expression".into(),
                column,
            });
        };
        self.pos += 1;
        match tok {
            Token::Variable(n) => Ok(Expr::Variable(n)),
            Token::String(s) => Ok(Expr::String(s)),
            Token::Pattern { source, flags } => Ok(Expr::Pattern { source, flags }),
            Token::Null => Ok(Expr::Null),
            Token::LParen => {
                self.depth += 1;
                if self.depth > 64 {
                    return Err(LexError {
                        message: "too many nested parentheses".into(),
                        column,
                    });
                }
                let e = self.or()?;
                self.depth -= 1;
                if self.peek() != Some(&Token::RParen) {
                    return Err(LexError {
                        message: "missing `)`".into(),
                        column: self.column(),
                    });
                }
                self.pos += 1;
                Ok(e)
            }
            other => Err(LexError {
                message: format!("unexpected {}", describe(&other)),
                column,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn and_binds_tighter() {
        let e = parse("$A || $B && $C").expect("parse");
        assert!(matches!(e, Expr::Or(_, ref r) if matches!(**r, Expr::And(_, _))));
    }

    #[test]
    fn error_columns() {
        assert_eq!(parse("$A ==").expect_err("e").column, 6);
        assert_eq!(parse("($A").expect_err("e").column, 4);
        assert_eq!(parse("$A $B").expect_err("e").column, 4);
        assert_eq!(parse("$A == $B == $C").expect_err("e").column, 10);
        assert_eq!(parse("").expect_err("e").column, 1);
    }
}
