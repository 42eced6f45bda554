//! GitLab's CI expression language (`rules:if`): a table of expressions with their expected outcome (from
//! docs.gitlab.com/ci/jobs/job_rules, "CI/CD variable expressions", and GitLab's lexeme semantics), the
//! columns of syntax errors, and a property test that the parser never panics.
use runwright_pipeline::rules::Expression;

fn lookup(name: &str) -> Option<String> {
    Some(
        match name {
            "BRANCH" => "main",
            "FEATURE" => "feature/login",
            "EMPTY" => "",
            "SOURCE" => "merge_request_event",
            "TITLE" => "Fix: CRASH on start\nsecond line",
            "RE_VAR" => "/^feat/",
            "RE_VAR_I" => "/^FEAT/i",
            "PLAIN_RE" => "lo.in",
            "ONE" => "1",
            "SLASHED" => "a/b",
            "DOLLAR" => "$BRANCH",
            _ => return None,
        }
        .to_string(),
    )
}

#[test]
fn expression_table() {
    let table: &[(&str, bool)] = &[
        // presence
        ("$BRANCH", true),
        ("$EMPTY", false),
        ("$UNDEFINED", false),
        // equality with strings, both quote styles
        ("$BRANCH == \"main\"", true),
        ("$BRANCH == 'main'", true),
        ("$BRANCH != \"main\"", false),
        ("\"main\" == $BRANCH", true),
        ("$BRANCH == \"Main\"", false),
        ("$BRANCH == $BRANCH", true),
        ("$BRANCH == $FEATURE", false),
        ("$DOLLAR == \"$BRANCH\"", true),
        // null and undefined
        ("$UNDEFINED == null", true),
        ("$UNDEFINED != null", false),
        ("$EMPTY == null", false),
        ("$EMPTY == \"\"", true),
        ("$UNDEFINED == \"\"", false),
        ("null == null", true),
        ("$BRANCH != null", true),
        ("$UNDEFINED == $ALSO_UNDEFINED", true),
        // regex
        ("$FEATURE =~ /^feature\\//", true),
        ("$FEATURE =~ /^feature/", true),
        ("$FEATURE =~ /login$/", true),
        ("$FEATURE =~ /^FEATURE/", false),
        ("$FEATURE =~ /^FEATURE/i", true),
        ("$FEATURE !~ /^feature/", false),
        ("$BRANCH !~ /^feature/", true),
        ("$UNDEFINED =~ /.*/", true),
        ("$UNDEFINED =~ /.+/", false),
        ("$UNDEFINED !~ /.+/", true),
        ("$TITLE =~ /^second line$/", false),
        ("$TITLE =~ /^second line$/m", true),
        ("$TITLE =~ /start.second/", false),
        ("$TITLE =~ /start.second/s", true),
        ("$TITLE =~ /crash/i", true),
        ("$SLASHED =~ /a\\/b/", true),
        // regex from a variable
        ("$FEATURE =~ $RE_VAR", true),
        ("$BRANCH =~ $RE_VAR", false),
        ("$FEATURE =~ $RE_VAR_I", true),
        // A right side that is no `/pattern/`: true when the left side is a substring of it (docs:
        // jobs/job_rules, "`\"23\" =~ \"1234\"` evaluates to true").
        ("$FEATURE =~ $PLAIN_RE", false),
        ("$ONE =~ $FEATURE", false),
        ("\"23\" =~ \"1234\"", true),
        ("\"login\" =~ $FEATURE", true),
        ("\"login\" !~ $FEATURE", false),
        ("$FEATURE =~ $UNDEFINED", false),
        // && binds tighter than ||
        ("$BRANCH == \"main\" && $SOURCE == \"push\"", false),
        ("$BRANCH == \"main\" || $SOURCE == \"push\"", true),
        ("$UNDEFINED || $BRANCH == \"main\" && $EMPTY", false),
        ("$BRANCH == \"x\" && $EMPTY || $ONE", true),
        ("$ONE || $BRANCH == \"x\" && $UNDEFINED", true),
        ("($ONE || $BRANCH == \"x\") && $UNDEFINED", false),
        (
            "($BRANCH == \"main\" || $BRANCH == \"dev\") && $SOURCE =~ /merge/",
            true,
        ),
        ("(($BRANCH))", true),
        // Ruby truthiness: "" is truthy inside &&/||, the statement is false only when the result is blank
        ("$EMPTY && $ONE", true),
        ("$ONE && $EMPTY", false),
        ("$EMPTY || $UNDEFINED", false),
        ("$UNDEFINED || $EMPTY", false),
        ("$UNDEFINED && $ONE", false),
    ];
    assert!(table.len() >= 40);
    let mut failures = Vec::new();
    for (text, want) in table {
        let e = Expression::parse(text).unwrap_or_else(|err| panic!("{text}: {err:?}"));
        match e.evaluate(&lookup) {
            Ok(got) if got == *want => {}
            Ok(got) => failures.push(format!("{text}: want {want}, got {got}")),
            Err(err) => failures.push(format!("{text}: {err:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn syntax_errors_point_at_the_column() {
    let table: &[(&str, usize, &str)] = &[
        ("$A == main", 7, "unexpected `main`"),
        ("$A ==", 6, "unexpected end"),
        ("$A == \"x", 7, "unterminated string"),
        ("($A == \"x\"", 11, "missing `)`"),
        ("$A = \"x\"", 4, "unexpected `=`"),
        ("$A == \"x\" &&", 13, "unexpected end"),
        ("$A =~ /xy/g", 11, "unknown regular expression flag"),
        (
            "$A =~ /./",
            7,
            "single-character regular expressions are not supported",
        ),
        ("$A == \"x\" \"y\"", 11, "unexpected string"),
        ("$ == \"x\"", 1, "not followed by a variable name"),
        ("&& $A", 1, "unexpected `&&`"),
        ("$A == $B == $C", 10, "cannot be chained"),
        ("", 1, "empty expression"),
        ("$A =~ //", 7, "empty regular expression"),
        ("${A} == \"x\"", 1, "not followed by a variable name"),
    ];
    for (text, column, message) in table {
        let err = Expression::parse(text).expect_err(text);
        assert_eq!(err.column, *column, "{text}: {err:?}");
        assert!(err.message.contains(message), "{text}: {err:?}");
    }
}

#[test]
fn invalid_regex_is_an_evaluation_error() {
    let e = Expression::parse("$BRANCH =~ /(unclosed/").expect("parses");
    assert!(e.evaluate(&lookup).is_err());
    // RE2 has no look-around; neither has Rust's regex.
    let e = Expression::parse("$BRANCH =~ /ma(?=in)/").expect("parses");
    assert!(e.evaluate(&lookup).is_err());
}

mod prop {
    use proptest::prelude::*;
    use runwright_pipeline::rules::Expression;

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,80}") {
            if let Ok(e) = Expression::parse(&s) {
                let _ = e.evaluate(&|_| Some("x".to_string()));
            }
        }

        #[test]
        fn parser_never_panics_on_expression_like_input(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("$A"), Just("$B"), Just("\"x\""), Just("'y'"), Just("null"), Just("=="), Just("!="),
                    Just("=~"), Just("!~"), Just("&&"), Just("||"), Just("("), Just(")"), Just("/a.*/i"),
                    Just("/"), Just("\""), Just("$"), Just(" "),
                ],
                0..30,
            )
        ) {
            let s = parts.join(" ");
            if let Ok(e) = Expression::parse(&s) {
                let _ = e.evaluate(&|n| (n == "A").then(|| "/a/".to_string()));
            }
        }
    }
}
