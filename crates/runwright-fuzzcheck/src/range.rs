//! The trace ranges: the `Range: 0-<n>` header the client reads from GitLab's answers (202 and 416) and the
//! `Content-Range: <start>-<end>` header the coordinator reads from trace patches.
use runwright_client::range_end;
use runwright_coordinator::content_range_start;

/// The input is a header value. Properties: no panic; the client reads back the length a well-formed `Range`
/// carries; the coordinator reads back the start a well-formed `Content-Range` carries.
pub fn range(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let end = range_end(&text);
    let start = content_range_start(data);
    // Numbers taken from the input, formatted the way GitLab and the runner write them.
    let digits: String = text.chars().filter(char::is_ascii_digit).take(19).collect();
    if let Ok(n) = digits.parse::<u64>() {
        assert_eq!(range_end(&format!("0-{n}")), n);
        assert_eq!(range_end(&format!("0-{n}\r")), n);
        if let Ok(signed) = i64::try_from(n) {
            assert_eq!(
                content_range_start(format!("{n}-{}", end).as_bytes()),
                signed
            );
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        // What the coordinator parses it to, as its own answer reads back on the client.
        if start >= 0 {
            assert_eq!(range_end(&format!("0-{start}")), start as u64, "{s:?}");
        }
    }
}
