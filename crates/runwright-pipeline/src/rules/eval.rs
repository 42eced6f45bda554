//! Evaluation of CI expressions with Ruby's semantics, as GitLab's lexemes implement them:
//! - `$VAR` is its value, or `nil` when undefined;
//! - `==`/`!=` compare values (`nil` only equals `null`/undefined, `""` is not `null`);
//! - `=~`/`!~` match the left side (`nil` as `""`) against a pattern, unanchored; the pattern is a
//!   `/re/flags` literal or a variable holding one; flags `i`, `m`, `s`, `U` are RE2's inline flags (GitLab
//!   compiles with RE2), which Rust's `regex` shares; like RE2, no look-around and no back-references; a
//!   right side that is no valid pattern is a string, and the match is true when the left side is a
//!   substring of it (GitLab's `String#scan`);
//! - `&&`/`||` return one of their operands as Ruby does (`nil`/`false` falsy, `""` truthy);
//! - the statement is true when the result is `present?`: not `nil`, not `false`, not an empty string.
use regex::Regex;

use super::parser::{CompareOp, Expr};

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Null,
    Bool(bool),
    Str(String),
    Pattern(String, String),
}

impl Val {
    fn truthy(&self) -> bool {
        !matches!(self, Val::Null | Val::Bool(false))
    }
    fn present(&self) -> bool {
        match self {
            Val::Null | Val::Bool(false) => false,
            Val::Str(s) => !s.is_empty(),
            _ => true,
        }
    }
}

/// An evaluation error (an invalid regular expression).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    /// What is wrong.
    pub message: String,
}

/// Evaluates a parsed expression to GitLab's boolean outcome.
pub fn evaluate(expr: &Expr, lookup: &dyn Fn(&str) -> Option<String>) -> Result<bool, EvalError> {
    Ok(eval(expr, lookup)?.present())
}

fn eval(expr: &Expr, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Val, EvalError> {
    Ok(match expr {
        Expr::Variable(n) => lookup(n).map(Val::Str).unwrap_or(Val::Null),
        Expr::String(s) => Val::Str(s.clone()),
        Expr::Null => Val::Null,
        Expr::Pattern { source, flags } => Val::Pattern(source.clone(), flags.clone()),
        Expr::And(l, r) => {
            let l = eval(l, lookup)?;
            if l.truthy() {
                eval(r, lookup)?
            } else {
                l
            }
        }
        Expr::Or(l, r) => {
            let l = eval(l, lookup)?;
            if l.truthy() {
                l
            } else {
                eval(r, lookup)?
            }
        }
        Expr::Compare(op, l, r) => {
            let l = eval(l, lookup)?;
            let r = eval(r, lookup)?;
            match op {
                CompareOp::Equals => Val::Bool(l == r),
                CompareOp::NotEquals => Val::Bool(l != r),
                CompareOp::Matches => Val::Bool(matches(&l, &r)?),
                CompareOp::NotMatches => Val::Bool(!matches(&l, &r)?),
            }
        }
    })
}

fn matches(text: &Val, pattern: &Val) -> Result<bool, EvalError> {
    let text = match text {
        Val::Str(s) => s.as_str(),
        Val::Bool(true) => "true",
        Val::Bool(false) => "false",
        _ => "",
    };
    let re = match pattern {
        Val::Pattern(source, flags) => compile(source, flags)?,
        // A value that is a valid `/re/flags` is a pattern; any other value stays a string, and GitLab then
        // runs `string.scan(left)`: true when the left side is a substring of the right side (docs:
        // jobs/job_rules, "Unexpected behavior from regular expression matching with `=~`").
        Val::Str(s) => match split_pattern(s).and_then(|(src, flags)| compile(src, flags).ok()) {
            Some(re) => re,
            None => return Ok(s.contains(text)),
        },
        // GitLab: `return false unless regexp`.
        _ => return Ok(false),
    };
    Ok(re.is_match(text))
}

/// `/source/flags` from a variable's value.
fn split_pattern(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix('/')?;
    let end = rest.rfind('/')?;
    let (source, flags) = (&rest[..end], &rest[end + 1..]);
    (!source.is_empty() && flags.chars().all(|c| "ismU".contains(c))).then_some((source, flags))
}

/// Compiles a GitLab pattern: `\/` stands for `/`, flags become RE2 inline flags.
pub(crate) fn compile(source: &str, flags: &str) -> Result<Regex, EvalError> {
    let source = source.replace("\\/", "/");
    let full = if flags.is_empty() {
        source
    } else {
        format!("(?{flags}){source}")
    };
    Regex::new(&full).map_err(|e| EvalError {
        message: format!("invalid regular expression /{full}/: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::super::parser::parse;
    use super::*;

    #[test]
    fn present_semantics() {
        let look = |n: &str| match n {
            "EMPTY" => Some(String::new()),
            "X" => Some("x".into()),
            _ => None,
        };
        let ev = |s: &str| evaluate(&parse(s).expect("parse"), &look).expect("eval");
        assert!(!ev("$EMPTY"));
        assert!(
            ev("$EMPTY && $X"),
            "\"\" is truthy in Ruby, so && returns $X"
        );
        assert!(!ev("$X && $EMPTY"));
        assert!(ev("$UNDEFINED == null"));
        assert!(!ev("$EMPTY == null"));
    }
}
