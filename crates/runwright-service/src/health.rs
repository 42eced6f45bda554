//! GitLab's unhealthy-runner back-off: after `unhealthy_requests_limit` consecutive failed requests (only 403
//! counts) a runner entry is skipped for `unhealthy_interval`, then tried once more (runner
//! commands/health_helper.go; reference `protocol.md` §2.2).

use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Health {
    failures: u32,
    skip_until: Option<Instant>,
}

impl Health {
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.skip_until = None;
    }

    pub fn failed(&mut self, limit: u32, interval: Duration) {
        self.failures += 1;
        if self.failures >= limit.max(1) {
            self.skip_until = Some(Instant::now() + interval);
        }
    }

    /// How long to keep skipping this entry; `None` when a request may go out.
    pub fn skip_for(&self) -> Option<Duration> {
        let until = self.skip_until?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_after_limit_and_recovers() {
        let mut h = Health::default();
        h.failed(3, Duration::from_secs(60));
        h.failed(3, Duration::from_secs(60));
        assert!(h.skip_for().is_none());
        h.failed(3, Duration::from_secs(60));
        assert!(h.skip_for().is_some());
        h.succeeded();
        assert!(h.skip_for().is_none());
        h.failed(3, Duration::ZERO);
        h.failed(3, Duration::ZERO);
        h.failed(3, Duration::ZERO);
        assert!(h.skip_for().is_none(), "interval over: forced request");
    }
}
