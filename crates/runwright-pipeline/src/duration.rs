//! GitLab's human durations (`timeout: 1h 30m`, `expire_in: 3 hours`, `start_in: 30 minutes`), parsed as
//! GitLab's ChronicDuration does: a sequence of numbers with optional units, `hh:mm:ss`, a bare number being
//! seconds; months are 30 days, years 365 days.

/// Parses a GitLab duration to seconds; `None` when it is not one.
pub fn parse_duration(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() {
        return None;
    }
    if t.contains(':') {
        let parts: Vec<&str> = t.split(':').collect();
        if parts.len() > 3 {
            return None;
        }
        let mut secs = 0u64;
        for p in parts {
            secs = secs
                .checked_mul(60)?
                .checked_add(p.trim().parse::<u64>().ok()?)?;
        }
        return Some(secs);
    }
    let cleaned = numerize(&t.replace(',', " ").replace(" and ", " "));
    let mut total = 0f64;
    let mut chars = cleaned.chars().peekable();
    let mut any = false;
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut num = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if num.is_empty() {
            return None;
        }
        let n: f64 = num.parse().ok()?;
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut unit = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphabetic() {
                unit.push(c);
                chars.next();
            } else {
                break;
            }
        }
        let mult = match unit.as_str() {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "wk" | "wks" | "week" | "weeks" => 604800.0,
            "mo" | "mos" | "month" | "months" => 30.0 * 86400.0,
            "y" | "yr" | "yrs" | "year" | "years" => 365.0 * 86400.0,
            _ => return None,
        };
        total += n * mult;
        any = true;
    }
    any.then_some(total.round() as u64)
}

/// Number words as digits (`one hour` → `1 hour`, `twenty five minutes` → `25 minutes`), as ChronicDuration's
/// numerizer does (docs: "timeout": "`3600 seconds`, `60 minutes`, `one hour`" are equivalent).
fn numerize(text: &str) -> String {
    const UNITS: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    let mut out: Vec<String> = Vec::new();
    let mut pending_tens: Option<u32> = None;
    for word in text.split_whitespace() {
        if let Some(t) = TENS.iter().position(|w| *w == word) {
            if let Some(p) = pending_tens.take() {
                out.push(p.to_string());
            }
            pending_tens = Some(20 + 10 * t as u32);
        } else if let Some(u) = UNITS.iter().position(|w| *w == word) {
            let n = pending_tens.take().map_or(u as u32, |t| t + u as u32);
            out.push(n.to_string());
        } else {
            if let Some(p) = pending_tens.take() {
                out.push(p.to_string());
            }
            out.push(word.to_string());
        }
    }
    if let Some(p) = pending_tens {
        out.push(p.to_string());
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_durations() {
        assert_eq!(parse_duration("1h 30m"), Some(5400));
        assert_eq!(parse_duration("3 hours"), Some(10800));
        assert_eq!(parse_duration("1 hour and 30 minutes"), Some(5400));
        assert_eq!(parse_duration("90 minutes"), Some(5400));
        assert_eq!(parse_duration("3600"), Some(3600));
        assert_eq!(parse_duration("1:30:00"), Some(5400));
        assert_eq!(parse_duration("2 days"), Some(172800));
        assert_eq!(parse_duration("1 week"), Some(604800));
        assert_eq!(parse_duration("1.5h"), Some(5400));
        assert_eq!(parse_duration("10 mins 30 sec"), Some(630));
        assert_eq!(parse_duration("one hour"), Some(3600));
        assert_eq!(parse_duration("twenty five minutes"), Some(1500));
        assert_eq!(parse_duration("thirty seconds"), Some(30));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration(""), None);
    }
}
