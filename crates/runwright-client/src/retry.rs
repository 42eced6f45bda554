//! GitLab's retry rules for one HTTP request, and the back-off arithmetic shared with the trace loops.
//!
//! Mirrors runner network/retry_requester.go: statuses 408, 429, 500, 502, 503, 504 and anything ≥ 512 are
//! retried, at most 5 attempts in total; the wait is `RateLimit-ResetTime` (RFC 1123 date) if present and in
//! the future, else `Retry-After` (seconds) if positive, else exponential back-off 100 ms … 60 s, factor 2,
//! with jitter (github.com/jpillora/backoff semantics). `RUNWRIGHT_FAST_RETRIES=1` caps each wait at 50 ms.

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::HeaderMap;

use runwright_static::env_vars::FAST_RETRY_CAP;

/// Attempts in total, first one included (runner network/retry_requester.go `defaultRateLimitMaxAttempts`).
pub(crate) const MAX_ATTEMPTS: u32 = 5;
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Whether GitLab's runner retries an answer with this status (runner network/retry_requester.go
/// `shouldRetryRequest`).
pub(crate) fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504) || status >= 512
}

/// Exponential back-off as github.com/jpillora/backoff computes it: `min * factor^n`, capped at `max`;
/// with jitter a uniform pick in `[min, that)`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    factor: f64,
    jitter: bool,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            factor: 2.0,
            jitter: true,
            attempt: 0,
        }
    }

    /// The next wait; each call doubles the base.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let n = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        let min = self.min.as_secs_f64();
        let max = self.max.as_secs_f64();
        let mut secs = min * self.factor.powi(n.min(1000) as i32);
        if self.jitter && secs > min {
            secs = rand::rng().random_range(min..secs);
        }
        if !secs.is_finite() || secs > max {
            return self.max;
        }
        if secs < min {
            return self.min;
        }
        Duration::from_secs_f64(secs)
    }
}

/// The wait the server asks for, if any (runner network/retry_requester.go `calculateWaitTime`).
pub(crate) fn wait_from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(reset) = headers
        .get("RateLimit-ResetTime")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        match httpdate::parse_http_date(reset) {
            Ok(at) => {
                if let Ok(wait) = at.duration_since(now) {
                    if !wait.is_zero() {
                        return Some(wait);
                    }
                }
            }
            Err(_) => tracing::warn!(
                header = "RateLimit-ResetTime",
                value = reset,
                "Couldn't parse rate limit header"
            ),
        }
    }
    if let Some(after) = headers
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        match after.trim().parse::<i64>() {
            Ok(secs) if secs > 0 => return Some(Duration::from_secs(secs.unsigned_abs())),
            Ok(_) => {}
            Err(_) => tracing::warn!(
                header = "Retry-After",
                value = after,
                "Couldn't parse retry after header"
            ),
        }
    }
    None
}

/// Applies the `RUNWRIGHT_FAST_RETRIES` cap.
pub(crate) fn capped(wait: Duration, fast: bool) -> Duration {
    if fast {
        wait.min(FAST_RETRY_CAP)
    } else {
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retryable_statuses_match_gitlab() {
        for s in [408, 429, 500, 502, 503, 504, 512, 599] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [
            200, 201, 204, 400, 403, 404, 409, 412, 416, 422, 501, 505, 511,
        ] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        assert_eq!(b.next_wait(), BACKOFF_MIN, "first wait is exactly min");
        let second = b.next_wait();
        assert!(
            second >= BACKOFF_MIN && second < Duration::from_millis(200),
            "{second:?}"
        );
        for _ in 0..20 {
            b.next_wait();
        }
        assert!(b.next_wait() <= BACKOFF_MAX);
    }

    #[test]
    fn server_waits_take_precedence_in_gitlab_order() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_400); // Wed, 21 Oct 2015 07:26:40 GMT
        let mut h = HeaderMap::new();
        assert_eq!(wait_from_headers(&h, now), None);
        h.insert("Retry-After", HeaderValue::from_static("7"));
        assert_eq!(wait_from_headers(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            "RateLimit-ResetTime",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(wait_from_headers(&h, now), Some(Duration::from_secs(80)));
        // A reset time in the past falls through to Retry-After.
        h.insert(
            "RateLimit-ResetTime",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:00:00 GMT"),
        );
        assert_eq!(wait_from_headers(&h, now), Some(Duration::from_secs(7)));
        h.insert("Retry-After", HeaderValue::from_static("soon"));
        assert_eq!(wait_from_headers(&h, now), None);
        h.insert("Retry-After", HeaderValue::from_static("0"));
        assert_eq!(wait_from_headers(&h, now), None);
    }

    #[test]
    fn fast_mode_caps_every_wait() {
        assert_eq!(capped(Duration::from_secs(60), true), FAST_RETRY_CAP);
        assert_eq!(
            capped(Duration::from_millis(10), true),
            Duration::from_millis(10)
        );
        assert_eq!(
            capped(Duration::from_secs(60), false),
            Duration::from_secs(60)
        );
    }
}
